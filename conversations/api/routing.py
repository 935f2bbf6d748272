"""Auto-assignment settings over the API: a team's routing and an agent's
capacity and exclusion.

Anyone may read the settings of the teams they belong to (all of them with
view_all_numbers) and of the agents of those teams; changing them needs the
model permission (conversations.change_teamrouting or
change_agentrouting), as in the admin.
"""

from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Team, User
from conversations import services
from conversations.models import (
    AgentRouting,
    TeamRouting,
    sees_every_number,
)

from .permissions import require_permission


def visible_teams(user):
    if sees_every_number(user):
        return Team.objects.all()
    return Team.objects.filter(members=user)


def visible_agents(user):
    if sees_every_number(user):
        return User.objects.all()
    return User.objects.filter(
        Q(pk=user.pk) | Q(teams__in=visible_teams(user))
    ).distinct()


class TeamRoutingSerializer(serializers.Serializer):
    team = serializers.IntegerField(read_only=True)
    mode = serializers.ChoiceField(choices=TeamRouting.Mode.choices)
    capacity = serializers.IntegerField(min_value=1, max_value=services.MAX_CAPACITY)
    offline_grace_minutes = serializers.IntegerField(
        min_value=0, max_value=services.MAX_GRACE_MINUTES
    )


class AgentRoutingSerializer(serializers.Serializer):
    agent = serializers.IntegerField(read_only=True)
    capacity = serializers.IntegerField(
        min_value=1,
        max_value=services.MAX_CAPACITY,
        allow_null=True,
        help_text="Open and pending conversations at most; null: the team's.",
    )
    excluded = serializers.BooleanField()
    presence = serializers.CharField(read_only=True)
    last_assigned_at = serializers.DateTimeField(read_only=True, allow_null=True)


def _team_routing_data(team: Team) -> dict:
    routing = TeamRouting.objects.filter(team=team).first() or TeamRouting(team=team)
    return {
        "team": team.pk,
        "mode": routing.mode,
        "capacity": routing.capacity,
        "offline_grace_minutes": routing.offline_grace_minutes,
    }


def _agent_routing_data(agent: User) -> dict:
    routing = AgentRouting.objects.filter(agent=agent).first() or AgentRouting()
    return {
        "agent": agent.pk,
        "capacity": routing.capacity,
        "excluded": routing.excluded,
        "presence": agent.presence,
        "last_assigned_at": routing.last_assigned_at,
    }


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ValidationError("Send a JSON object.", code="invalid")
    return dict(request.data.items())


class TeamRoutingDetail(APIView):
    """How a team's conversations are auto-assigned (round robin, least
    busy or off), each agent's default capacity and the offline grace."""

    serializer_class = TeamRoutingSerializer

    @extend_schema(responses=TeamRoutingSerializer)
    def get(self, request, pk: int):
        team = get_object_or_404(visible_teams(request.user), pk=pk)
        return Response(TeamRoutingSerializer(_team_routing_data(team)).data)

    @extend_schema(request=TeamRoutingSerializer, responses=TeamRoutingSerializer)
    def patch(self, request, pk: int):
        team = get_object_or_404(visible_teams(request.user), pk=pk)
        require_permission(
            request, "conversations.change_teamrouting", "change routing"
        )
        serializer = TeamRoutingSerializer(
            data={**_team_routing_data(team), **_body(request)}
        )
        serializer.is_valid(raise_exception=True)
        services.configure_team_routing(team=team, **serializer.validated_data)
        return Response(TeamRoutingSerializer(_team_routing_data(team)).data)


class AgentRoutingDetail(APIView):
    """An agent's own capacity (null: the team's) and whether they are
    excluded from auto-assignment, with their presence."""

    serializer_class = AgentRoutingSerializer

    @extend_schema(responses=AgentRoutingSerializer)
    def get(self, request, pk: int):
        agent = get_object_or_404(visible_agents(request.user), pk=pk)
        return Response(AgentRoutingSerializer(_agent_routing_data(agent)).data)

    @extend_schema(request=AgentRoutingSerializer, responses=AgentRoutingSerializer)
    def patch(self, request, pk: int):
        agent = get_object_or_404(visible_agents(request.user), pk=pk)
        require_permission(
            request, "conversations.change_agentrouting", "change routing"
        )
        current = _agent_routing_data(agent)
        serializer = AgentRoutingSerializer(
            data={
                "capacity": current["capacity"],
                "excluded": current["excluded"],
                **_body(request),
            }
        )
        serializer.is_valid(raise_exception=True)
        services.configure_agent_routing(agent=agent, **serializer.validated_data)
        return Response(AgentRoutingSerializer(_agent_routing_data(agent)).data)
