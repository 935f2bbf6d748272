"""Django's ModelBackend, with a user's permissions read in one statement.

Every API request asks ``has_perm`` at least once (whether the user sees
every number); the stock backend reads the user's own permissions and their
groups' in two queries. Here both come in one, cached on the user for the
request as the stock backend caches them.
"""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.db.models import Q


class OneReadModelBackend(ModelBackend):
    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            if user_obj.is_superuser:
                permissions = Permission.objects.all()
            else:
                own = user_obj.user_permissions.through.objects.filter(
                    **{user_obj.user_permissions.source_field_name: user_obj}
                ).values("permission_id")
                of_groups = Group.permissions.through.objects.filter(
                    group__in=user_obj.groups.values("pk")
                ).values("permission_id")
                permissions = Permission.objects.filter(
                    Q(pk__in=own) | Q(pk__in=of_groups)
                )
            user_obj._perm_cache = {
                f"{app_label}.{codename}"
                for app_label, codename in permissions.values_list(
                    "content_type__app_label", "codename"
                ).order_by()
            }
        return user_obj._perm_cache
