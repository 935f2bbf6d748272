from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from conversations.models import mask_secret

from .models import Team, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = (
        "username",
        "display_name",
        "email",
        "availability",
        "connected",
        "team_names",
        "is_staff",
        "is_active",
    )
    list_filter = ("availability", "connected", "is_staff", "is_active", "teams")
    search_fields = ("username", "display_name", "first_name", "last_name", "email")
    filter_horizontal = ("teams", "groups", "user_permissions")
    fieldsets = DjangoUserAdmin.fieldsets + (
        (
            "Helpdesk",
            {
                "fields": (
                    "display_name",
                    "availability",
                    "connected",
                    "time_zone",
                    "teams",
                )
            },
        ),
    )
    # Kept by the workspace's sockets, not by hand.
    readonly_fields = ("connected",)
    add_fieldsets = DjangoUserAdmin.add_fieldsets + (
        ("Helpdesk", {"fields": ("display_name", "teams")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("teams")

    @admin.display(description="Teams")
    def team_names(self, user):
        return ", ".join(team.name for team in user.teams.all())


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "member_count", "description")
    search_fields = ("name",)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(member_count=Count("members", distinct=True))
        )

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, team):
        return team.member_count


admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    """REST API tokens, masked. A key is shown once, to whoever adds it here
    (or runs drf_create_token). There is no page per token: Django's admin
    would show the key in its title, links and breadcrumbs, and in the
    question before a delete. Revoke a token by deactivating its user, or
    replace it with `drf_create_token -r USERNAME`."""

    list_display = ("masked_key", "user", "created")
    list_display_links = None

    @admin.display(description="Key")
    def masked_key(self, token):
        return mask_secret(token.key)

    def log_addition(self, request, obj, message):
        # The log's text for a token would be its key (a token's str()), kept
        # for good and listed under the admin's "Recent actions".
        entry = super().log_addition(request, obj, message)
        entry.object_repr = f"Token of {obj.user}"[:200]
        entry.save(update_fields=["object_repr"])
        return entry

    def has_view_permission(self, request, obj=None):
        return obj is None and super().has_view_permission(request)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# django-axes' failed logins (who is locked out; deleting one unlocks it).
admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class LoginAttemptAdmin(AccessAttemptAdmin):
    """axes' page, with its one action kept for admins who may delete
    attempts: axes offers it to anyone who may view them."""

    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request, queryset):
        return super().cleanup_expired_attempts(request, queryset)
