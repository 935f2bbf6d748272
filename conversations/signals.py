"""Receivers that turn membership changes (admin, shell, API) into services calls.

Removing an agent from a team, or a team from a number, must close that
agent's live stream for those conversations at once: the service tells the
agent's open tabs to re-check what they may see.
"""

from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from accounts.models import User

from . import services
from .models import WhatsAppNumber

_CHANGES = {"post_add", "post_remove", "post_clear", "pre_clear"}


@receiver(m2m_changed, sender=User.teams.through)
def agent_teams_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action not in _CHANGES:
        return
    if not reverse:
        services.memberships_changed(user_ids=[instance.pk])
    elif action == "pre_clear":
        # The members are still there to be told.
        services.memberships_changed(
            user_ids=list(instance.members.values_list("pk", flat=True))
        )
    else:
        services.memberships_changed(user_ids=pk_set or [])


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
