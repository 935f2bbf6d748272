"""Receivers that turn access changes (admin, shell, API) into services calls.

Removing an agent from a team, a team from a number, deleting a team, or
taking away an agent's permissions (view_all_numbers: directly, through a
group, or a group's), superuser status or account must close that agent's
live stream for those conversations at once: the service tells the agent's
open tabs to re-check what they may see.
"""

from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_save, pre_delete
from django.dispatch import receiver

from accounts.models import Team, User

from . import services
from .models import WhatsAppNumber

_CHANGES = {"post_add", "post_remove", "post_clear", "pre_clear"}
# The fields of a user that decide what they may see.
_ACCESS_FIELDS = {"is_active", "is_superuser"}


def _users_changed(instance, action, reverse, pk_set, users_of) -> None:
    """A many-to-many between users and something (teams, groups, permissions)
    changed: the users it touched re-check what they may see."""
    if action not in _CHANGES:
        return
    if not reverse:
        user_ids = [instance.pk]
    elif action == "pre_clear":
        # The members are still there to be told.
        user_ids = list(users_of(instance).values_list("pk", flat=True))
    else:
        user_ids = pk_set or []
    services.memberships_changed(user_ids=user_ids)


@receiver(m2m_changed, sender=User.teams.through)
def agent_teams_changed(sender, instance, action, reverse, pk_set, **kwargs):
    _users_changed(instance, action, reverse, pk_set, lambda team: team.members)


@receiver(m2m_changed, sender=WhatsAppNumber.teams.through)
def number_teams_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action not in _CHANGES:
        return
    if not reverse:
        if action == "pre_clear":
            pk_set = set(instance.teams.values_list("pk", flat=True))
        services.number_teams_changed(team_ids=pk_set or [])
    else:
        services.number_teams_changed(team_ids=[instance.pk])


@receiver(post_save, sender=User)
def agent_saved(sender, instance, created, update_fields, **kwargs):
    # Logins and availability save only their own fields: nothing to re-check.
    if created or (update_fields is not None and not _ACCESS_FIELDS & update_fields):
        return
    services.memberships_changed(user_ids=[instance.pk])


@receiver(pre_delete, sender=User)
def agent_deleted(sender, instance, **kwargs):
    services.memberships_changed(user_ids=[instance.pk])


@receiver(pre_delete, sender=Team)
def team_deleted(sender, instance, **kwargs):
    # The cascade removes the memberships without m2m_changed; the members
    # are still there to be told.
    services.memberships_changed(
        user_ids=list(instance.members.values_list("pk", flat=True))
    )


def _members(groups) -> list[int]:
    return list(User.objects.filter(groups__in=groups).values_list("pk", flat=True))


@receiver(m2m_changed, sender=User.user_permissions.through)
def agent_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs):
    _users_changed(instance, action, reverse, pk_set, lambda perm: perm.user_set)


@receiver(m2m_changed, sender=User.groups.through)
def agent_groups_changed(sender, instance, action, reverse, pk_set, **kwargs):
    _users_changed(instance, action, reverse, pk_set, lambda group: group.user_set)


@receiver(m2m_changed, sender=Group.permissions.through)
def group_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action not in _CHANGES:
        return
    if not reverse:
        services.memberships_changed(user_ids=_members([instance.pk]))
    elif action == "pre_clear":
        groups = list(instance.group_set.values_list("pk", flat=True))
        services.memberships_changed(user_ids=_members(groups))
    else:
        services.memberships_changed(user_ids=_members(pk_set or []))


@receiver(pre_delete, sender=Group)
def group_deleted(sender, instance, **kwargs):
    # The cascade removes the memberships without m2m_changed.
    services.memberships_changed(user_ids=_members([instance.pk]))
