from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count
from django.template.response import TemplateResponse
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from .models import ApiToken, Team, User


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


# DRF's own token admin lists every key; this one replaces it.
admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class ApiTokenAdmin(TokenAdmin):
    """API tokens by agent. A key is shown once, to the admin who makes the
    token; to replace a lost one, delete the token and add a new one."""

    list_display = ("user", "created")

    def response_add(self, request, obj, post_url_continue=None):
        response = TemplateResponse(
            request,
            "admin/accounts/apitoken/created.html",
            {
                **self.admin_site.each_context(request),
                "title": "API token added",
                "opts": self.opts,
                "token": obj,
                "key": obj.key,
            },
        )
        # The key must not stay in a cache or the browser's history.
        response["Cache-Control"] = "no-store"
        return response
