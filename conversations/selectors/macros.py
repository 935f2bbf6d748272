"""The macros a conversation offers: its team's and everyone's."""

from django.db.models import Q

from ..models import Conversation, Macro


def macros_for(conversation: Conversation) -> list[Macro]:
    team = Q(team_id=conversation.team_id) if conversation.team_id else Q(pk__in=[])
    return list(Macro.objects.filter(Q(team__isnull=True) | team).order_by("name"))
