"""Who may call the business's endpoints: a model permission each."""

from rest_framework import permissions
from rest_framework.exceptions import PermissionDenied


class HasModelPermission(permissions.BasePermission):
    """An authenticated user who holds `permission` (app_label.codename)."""

    permission = ""

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(self.permission))


class CanRecordConsent(HasModelPermission):
    permission = "conversations.record_consent"
    message = "This user may not record consent (conversations.record_consent)."


class CanSendNotifications(HasModelPermission):
    permission = "conversations.send_notification"
    message = "This user may not send notifications (conversations.send_notification)."


def require_permission(request, permission: str, action: str) -> None:
    """Refuse with 403 unless the user holds `permission` (for one method of
    an endpoint whose reads are open to the same users)."""
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"This user may not {action} ({permission}).")
