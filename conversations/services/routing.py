"""Auto-assignment: waiting conversations reach the team's free online agents,
and go back to the team when their agent has been offline too long.

A conversation waits when it is open, the customer has written, it has no
assignee and no person has assigned or unassigned it by hand (manual
assignment always wins). Its team is its own, or else the first team (by
name) of its number whose routing is on. Agents
qualify when they are active members of that team, not excluded, online and
with the workspace open in a tab (the presence colleagues see), and below
their capacity of open and pending conversations.

Concurrency: a run locks the waiting conversations it takes (others skip
them) and then the routing rows of every agent it may choose, in one
statement ordered by agent, before it counts their load. Two runs that could
give the same agent a conversation therefore count one after the other, and
no agent is pushed past capacity however many workers run at once.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from accounts.models import Team, User

from .. import realtime
from ..delivery import doorbells
from ..models import (
    AgentRouting,
    Conversation,
    ConversationRouting,
    Message,
    TeamRouting,
)
from ..rules import assignment
from . import errors

logger = logging.getLogger(__name__)

# Conversations one run assigns at most; a run that fills its batch rings
# again for the rest.
ROUTING_BATCH = 500
# Bounds of what admins and the API may set (the models' validators too).
MAX_CAPACITY = 10_000
MAX_GRACE_MINUTES = 24 * 60
# The statuses that count against an agent's capacity.
LOAD_STATUSES = (Conversation.Status.OPEN, Conversation.Status.PENDING)


def conversation_waiting(conversation: Conversation) -> None:
    """A conversation was opened or reopened: route it once this commits.

    A no-op for one already assigned or on a number no routing team works
    (one indexed query, per new conversation rather than per message). The
    run is per number and rung at most once at a time, so a burst of new
    conversations costs one run.
    """
    conversations_waiting([conversation])


def conversations_waiting(conversations: Iterable[Conversation]) -> None:
    """conversation_waiting for a set (the webhook engine's batches): one
    query for all of them, one doorbell per number that routing works."""
    number_ids = {c.number_id for c in conversations if c.assignee_id is None}
    if not number_ids:
        return
    routed = set(
        TeamRouting.objects.filter(
            team__numbers__in=number_ids, mode__in=_ROUTING_MODES
        ).values_list("team__numbers", flat=True)
    )
    for number_id in sorted(number_ids & routed):
        doorbells.ring_routing_after_commit(number_id)


def agent_may_take_more(user: User) -> None:
    """An agent came online or freed capacity: route their numbers' waiting
    conversations once this commits."""
    number_ids = set(
        Team.objects.filter(members=user, routing__mode__in=_ROUTING_MODES).values_list(
            "numbers", flat=True
        )
    )
    for number_id in sorted(number_id for number_id in number_ids if number_id):
        doorbells.ring_routing_after_commit(number_id)


def record_manual_assignment(*, conversation: Conversation) -> None:
    """A person assigned or unassigned the conversation: auto-assignment
    leaves it alone from now on."""
    ConversationRouting.objects.update_or_create(
        conversation=conversation, defaults={"manual": True}
    )


_ROUTING_MODES = (TeamRouting.Mode.ROUND_ROBIN, TeamRouting.Mode.LEAST_BUSY)


def _online_agents():
    return User.objects.filter(
        is_active=True,
        connected=True,
        availability=User.Availability.ONLINE,
    ).exclude(routing__excluded=True)


def _routing_teams(number_id: int) -> list[TeamRouting]:
    """The teams of the number whose routing is on, first by name."""
    return list(
        TeamRouting.objects.filter(team__numbers=number_id, mode__in=_ROUTING_MODES)
        .select_related("team")
        .order_by("team__name", "team_id")
    )


def _lock_waiting(number_id: int, limit: int) -> list[Conversation]:
    skip_locked = connection.features.has_select_for_update_skip_locked
    return list(
        Conversation.objects.select_for_update(skip_locked=skip_locked, of=("self",))
        .filter(
            number_id=number_id,
            status=Conversation.Status.OPEN,
            assignee__isnull=True,
            # The customer wrote: a notification nobody answered yet is no
            # agent's work.
            last_inbound_at__isnull=False,
        )
        .exclude(routing__manual=True)
        .order_by("created_at", "id")[:limit]
    )


def _seats(teams: list[TeamRouting]) -> dict[int, list[assignment.Seat]]:
    """Each team's seats, with every candidate agent's routing row locked
    (one statement, ordered by agent: runs lock in the same order) before
    their load is counted."""
    team_ids = [routing.team_id for routing in teams]
    members = defaultdict(set)
    for agent_id, team_id in (
        _online_agents().filter(teams__in=team_ids).values_list("pk", "teams")
    ):
        members[team_id].add(agent_id)
    agent_ids = sorted(set().union(*members.values())) if members else []
    if not agent_ids:
        return {}
    AgentRouting.objects.bulk_create(
        [AgentRouting(agent_id=agent_id) for agent_id in agent_ids],
        ignore_conflicts=True,
    )
    rows = {
        row.agent_id: row
        for row in AgentRouting.objects.select_for_update()
        .filter(agent_id__in=agent_ids)
        .order_by("agent_id")
    }
    loads = dict(
        Conversation.objects.filter(assignee_id__in=agent_ids, status__in=LOAD_STATUSES)
        .values("assignee_id")
        .annotate(count=Count("id"))
        .values_list("assignee_id", "count")
    )
    # One Seat per agent, shared by all their teams, so an agent in two
    # teams is counted once; without a capacity of their own, an agent has
    # the smallest of those teams'.
    team_capacity = {}
    for routing in teams:
        for agent_id in members[routing.team_id]:
            team_capacity[agent_id] = min(
                team_capacity.get(agent_id, routing.capacity), routing.capacity
            )
    shared = {
        agent_id: assignment.Seat(
            agent_id=agent_id,
            load=loads.get(agent_id, 0),
            capacity=rows[agent_id].capacity or team_capacity[agent_id],
            last_turn=rows[agent_id].last_turn,
        )
        for agent_id in agent_ids
        if not rows[agent_id].excluded
    }
    return {
        routing.team_id: [
            shared[agent_id]
            for agent_id in sorted(members[routing.team_id])
            if agent_id in shared
        ]
        for routing in teams
    }


def assign_waiting_conversations(*, number_id: int, now: datetime | None = None) -> int:
    """Give a number's waiting conversations to free online agents of their
    team, oldest first; return how many were assigned."""
    now = now or timezone.now()
    # Cleared before the claim: a conversation committed from now on rings
    # a run of its own.
    doorbells.clear_routing(number_id)
    with transaction.atomic(), realtime.batched():
        teams = _routing_teams(number_id)
        if not teams:
            return 0
        waiting = _lock_waiting(number_id, ROUTING_BATCH)
        if not waiting:
            return 0
        by_team = {routing.team_id: routing for routing in teams}
        seats = _seats(teams)
        turn = max(
            [seat.last_turn for team_seats in seats.values() for seat in team_seats],
            default=0,
        )
        decided: list[tuple[Conversation, int, int]] = []
        for conversation in waiting:
            routing = by_team.get(conversation.team_id or teams[0].team_id)
            if routing is None:
                # Its team does not route: agents of that team pick it.
                continue
            seat = assignment.pick(seats.get(routing.team_id, []), routing.mode)
            if seat is None:
                continue
            turn += 1
            assignment.take(seat, turn)
            decided.append((conversation, seat.agent_id, routing.team_id))
        _write_assignments(decided, seats, now=now)
    if len(waiting) == ROUTING_BATCH and decided:
        doorbells.ring_routing_after_commit(number_id)
    return len(decided)


def _write_assignments(
    decided: list[tuple[Conversation, int, int]],
    seats: dict[int, list[assignment.Seat]],
    *,
    now: datetime,
) -> None:
    if not decided:
        return
    groups = defaultdict(list)
    for conversation, agent_id, team_id in decided:
        groups[(agent_id, team_id)].append(conversation.pk)
    for (agent_id, team_id), pks in groups.items():
        Conversation.objects.filter(pk__in=pks).update(
            assignee_id=agent_id, team_id=team_id, updated_at=now
        )
    ConversationRouting.objects.bulk_create(
        [
            ConversationRouting(
                conversation=conversation, assigned_to_id=agent_id, assigned_at=now
            )
            for conversation, agent_id, _ in decided
        ],
        update_conflicts=True,
        unique_fields=["conversation"],
        update_fields=["assigned_to", "assigned_at"],
    )
    taken = {seat.agent_id: seat for team in seats.values() for seat in team}
    for agent_id in {agent_id for _, agent_id, _ in decided}:
        AgentRouting.objects.filter(agent_id=agent_id).update(
            last_turn=taken[agent_id].last_turn, last_assigned_at=now
        )
    for conversation, agent_id, team_id in decided:
        conversation.assignee_id = agent_id
        conversation.team_id = team_id
        _publish_assignment(conversation, auto=True)


def _publish_assignment(conversation: Conversation, **extra) -> None:
    """The assignment change agents see live, as a person's would be, with
    what routing did (`auto`, `given_back_by`) for the history."""
    realtime.publish(
        realtime.CONVERSATION_UPDATED,
        conversation=conversation,
        data={
            "change": "assignment",
            "assignee": conversation.assignee_id,
            "team": conversation.team_id,
            "by": None,
            **extra,
        },
    )


def route_conversations(*, now: datetime | None = None) -> int:
    """The sweep: give back offline agents' conversations, then assign every
    number's waiting conversations (covers a lost doorbell, an agent who came
    online, capacity freed). Return how many were assigned."""
    now = now or timezone.now()
    give_back_conversations(now=now)
    number_ids = (
        Conversation.objects.filter(
            status=Conversation.Status.OPEN,
            assignee__isnull=True,
            last_inbound_at__isnull=False,
            number__teams__routing__mode__in=_ROUTING_MODES,
        )
        .exclude(routing__manual=True)
        .values_list("number_id", flat=True)
        .distinct()
    )
    return sum(
        assign_waiting_conversations(number_id=number_id, now=now)
        for number_id in sorted(set(number_ids))
    )


def give_back_conversations(*, now: datetime | None = None) -> int:
    """Agents offline (no tab, or away) past their team's grace period give
    the auto-assigned conversations that still wait for their answer (the
    customer wrote last) back to the team, which routes them again. Return
    how many went back.

    An agent's offline time starts when this sweep first sees them offline
    while holding such conversations, so it is exact to the sweep's interval.
    """
    now = now or timezone.now()
    online = set(_online_agents().values_list("pk", flat=True))
    AgentRouting.objects.filter(
        agent_id__in=online, offline_since__isnull=False
    ).update(offline_since=None)
    held = Conversation.objects.filter(
        routing__manual=False,
        routing__assigned_to=F("assignee"),
        status__in=LOAD_STATUSES,
        last_message__direction=Message.Direction.INBOUND,
        team__routing__mode__in=_ROUTING_MODES,
    ).exclude(assignee_id__in=online)
    held = list(
        held.values_list("pk", "assignee_id", "team__routing__offline_grace_minutes")
    )
    if not held:
        return 0
    holders = {agent_id for _, agent_id, _ in held}
    AgentRouting.objects.filter(
        agent_id__in=holders, offline_since__isnull=True
    ).update(offline_since=now)
    since = dict(
        AgentRouting.objects.filter(agent_id__in=holders).values_list(
            "agent_id", "offline_since"
        )
    )
    due = [
        pk
        for pk, agent_id, grace in held
        if since[agent_id] <= now - timedelta(minutes=grace)
    ]
    return _give_back(due, now=now) if due else 0


def _give_back(pks: list[int], *, now: datetime) -> int:
    skip_locked = connection.features.has_select_for_update_skip_locked
    with transaction.atomic(), realtime.batched():
        # Re-checked under the lock: a person may have taken one meanwhile.
        conversations = list(
            Conversation.objects.select_for_update(
                skip_locked=skip_locked, of=("self",)
            ).filter(
                pk__in=pks,
                routing__manual=False,
                routing__assigned_to=F("assignee"),
                status__in=LOAD_STATUSES,
            )
        )
        if not conversations:
            return 0
        taken = [conversation.pk for conversation in conversations]
        Conversation.objects.filter(pk__in=taken).update(assignee=None, updated_at=now)
        ConversationRouting.objects.filter(pk__in=taken).update(
            assigned_to=None, given_back_at=now
        )
        for conversation in conversations:
            agent_id = conversation.assignee_id
            conversation.assignee_id = None
            _publish_assignment(conversation, given_back_by=agent_id)
        for number_id in sorted({c.number_id for c in conversations}):
            doorbells.ring_routing_after_commit(number_id)
    return len(conversations)


@transaction.atomic
def configure_team_routing(
    *, team: Team, mode: str, capacity: int, offline_grace_minutes: int
) -> TeamRouting:
    """Set how a team's conversations are auto-assigned; waiting ones are
    routed at once under the new settings."""
    if mode not in TeamRouting.Mode.values:
        raise errors.WorkspaceError("invalid_routing_mode", f"Unknown mode {mode!r}.")
    if not 1 <= capacity <= MAX_CAPACITY:
        raise errors.WorkspaceError(
            "invalid_capacity", f"Capacity must be between 1 and {MAX_CAPACITY}."
        )
    if not 0 <= offline_grace_minutes <= MAX_GRACE_MINUTES:
        raise errors.WorkspaceError(
            "invalid_grace",
            f"The offline grace must be between 0 and {MAX_GRACE_MINUTES} minutes.",
        )
    routing, _ = TeamRouting.objects.update_or_create(
        team=team,
        defaults={
            "mode": mode,
            "capacity": capacity,
            "offline_grace_minutes": offline_grace_minutes,
        },
    )
    if mode in _ROUTING_MODES:
        for number_id in sorted(team.numbers.values_list("pk", flat=True)):
            doorbells.ring_routing_after_commit(number_id)
    return routing


@transaction.atomic
def configure_agent_routing(
    *, agent: User, capacity: int | None, excluded: bool
) -> AgentRouting:
    """Give an agent a capacity of their own (None: their team's) or exclude
    them from auto-assignment (they still take conversations by hand)."""
    if capacity is not None and not 1 <= capacity <= MAX_CAPACITY:
        raise errors.WorkspaceError(
            "invalid_capacity", f"Capacity must be between 1 and {MAX_CAPACITY}."
        )
    routing, _ = AgentRouting.objects.update_or_create(
        agent=agent, defaults={"capacity": capacity, "excluded": excluded}
    )
    if not excluded:
        agent_may_take_more(agent)
    return routing
