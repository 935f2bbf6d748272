"""Service levels: each conversation's standing against its policy, kept on
its ServiceLevel row for the inbox (due chip, sort by due) and reports.

A conversation's policy is that of its first label (by name) that has one,
else its team's. The standing is recomputed from the conversation's facts
(conversations/rules/service_levels.py) when an agent replies, when its
status, labels or team change, and by beat's sweep for the rest (a customer
writing again starts the next-response clock; the sweep picks it up within
SERVICE_LEVEL_SWEEP_SECONDS). Next responses are counted met or missed at
the reply that answers them.
"""

import functools
import logging
from datetime import datetime

from django.db import connection
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from helpdesk.rows import Columns

from .. import realtime
from ..models import Conversation, Label, Message, ServiceLevel, ServicePolicy
from ..rules import service_levels as rules
from ..rules import windows
from . import business_hours, errors

logger = logging.getLogger(__name__)

# Conversations one sweep refreshes at most, the longest unrefreshed first.
SWEEP_BATCH = 1000


@functools.cache
def _policy_read() -> tuple[str, Columns]:
    policy = Columns(ServicePolicy, "p")
    labels = Conversation.labels.field
    sql = (
        f"SELECT {policy.sql} FROM {ServicePolicy._meta.db_table} p"  # noqa: S608
        f" LEFT JOIN {Label._meta.db_table} l ON l.id = p.label_id"
        f" WHERE p.label_id IN (SELECT {labels.m2m_reverse_name()}"
        f" FROM {labels.m2m_db_table()} WHERE {labels.m2m_column_name()} = %s)"
        " OR p.team_id = %s"
        " ORDER BY l.name ASC NULLS LAST, p.name, p.id LIMIT 1"
    )
    return sql, policy


def policy_for(conversation: Conversation) -> ServicePolicy | None:
    """A label's policy (the first by name), else the team's.

    Asked at every agent's reply: one hand-written statement (the ORM's
    compilation of this OR over a join cost more than the reply's INSERT).
    """
    sql, columns = _policy_read()
    with connection.cursor() as cursor:
        cursor.execute(sql, [conversation.pk, conversation.team_id])
        row = cursor.fetchone()
    return None if row is None else columns.build(row)


def _schedule(conversation: Conversation, policy: ServicePolicy):
    if not policy.business_hours_only:
        return None
    hours = business_hours.hours_for(conversation)
    return business_hours.schedule_of(hours) if hours else None


def _last_reply_at(conversation: Conversation, before: datetime | None = None):
    replies = Message.objects.filter(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        sender__isnull=False,
    )
    if before is not None:
        replies = replies.filter(timestamp__lt=before)
    return replies.aggregate(last=Max("timestamp"))["last"]


def _awaiting_since(conversation: Conversation, after: datetime | None, until=None):
    """The customer's oldest message after `after` (up to `until`)."""
    if after is None:
        return None
    messages = Message.objects.filter(
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        timestamp__gt=after,
    )
    if until is not None:
        messages = messages.filter(timestamp__lte=until)
    return messages.aggregate(first=Min("timestamp"))["first"]


def refresh_service_level(
    *, conversation: Conversation, now: datetime | None = None
) -> ServiceLevel | None:
    """Recompute a conversation's standing; publish a change the inbox shows."""
    now = now or timezone.now()
    policy = policy_for(conversation)
    if policy is None:
        # Without a policy (most helpdesks): one statement, nothing shown.
        removed, _ = ServiceLevel.objects.filter(conversation=conversation).delete()
        if removed:
            _publish(conversation)
        return None
    # Fresh facts: the caller's copy may predate its own UPDATEs.
    conversation = Conversation.objects.get(pk=conversation.pk)
    current = ServiceLevel.objects.filter(conversation=conversation).first()
    first_response_at = conversation.first_response_at
    facts = rules.Facts(
        started_at=conversation.created_at,
        first_response_at=first_response_at,
        awaiting_since=_awaiting_since(
            conversation,
            _last_reply_at(conversation) if first_response_at else None,
        ),
        resolved_at=(
            conversation.resolved_at
            if conversation.status == Conversation.Status.RESOLVED
            else None
        ),
        window_closes_at=windows.service_window_expires_at(conversation),
    )
    standing = rules.standing(
        _targets(policy), facts, now=now, schedule=_schedule(conversation, policy)
    )
    level = current or ServiceLevel(conversation=conversation)
    shown_before = _shown(level, now)
    level.policy = policy
    level.first_response_due_at = standing.first_response_due_at
    level.first_response_met = standing.first_response_met
    level.next_response_due_at = standing.next_response_due_at
    level.resolution_due_at = standing.resolution_due_at
    level.resolution_met = standing.resolution_met
    level.due_at = standing.due_at
    level.window_closes_at = facts.window_closes_at
    level.escalated = standing.escalated
    level.attention_at = standing.attention_at
    level.save()
    if _shown(level, now) != shown_before:
        _publish(conversation)
    return level


def _shown(level: ServiceLevel, now: datetime) -> tuple:
    """What the inbox shows of a standing: a change is published."""
    overdue = level.due_at is not None and level.due_at <= now
    return (level.due_at, level.attention_at, level.escalated, overdue)


def _targets(policy: ServicePolicy) -> rules.Targets:
    return rules.Targets(
        first_response_minutes=policy.first_response_minutes,
        next_response_minutes=policy.next_response_minutes,
        resolution_minutes=policy.resolution_minutes,
    )


def _publish(conversation: Conversation) -> None:
    realtime.publish(
        realtime.CONVERSATION_UPDATED,
        conversation=conversation,
        data={"change": "service_level"},
    )


def record_reply(*, conversation: Conversation, at: datetime) -> None:
    """An agent replied at `at`: count the next response it gave met or
    missed, then refresh the standing."""
    policy = policy_for(conversation)
    if policy is None:
        return
    previous = _last_reply_at(conversation, before=at)
    awaiting = _awaiting_since(conversation, previous, until=at)
    if previous is not None and awaiting is not None and policy.next_response_minutes:
        due_at = rules.due(
            awaiting, policy.next_response_minutes, _schedule(conversation, policy)
        )
        met = due_at is not None and at <= due_at
        counter = "next_responses_met" if met else "next_responses_missed"
        ServiceLevel.objects.get_or_create(conversation=conversation)
        ServiceLevel.objects.filter(conversation=conversation).update(
            **{counter: F(counter) + 1}
        )
    refresh_service_level(conversation=conversation, now=at)


def refresh_service_levels(*, now: datetime | None = None) -> int:
    """The sweep: refresh unresolved conversations that have a policy (and
    those whose standing still owes something); return how many."""
    now = now or timezone.now()
    with_policy = Q(team__service_policies__isnull=False) | Q(
        labels__service_policies__isnull=False
    )
    owing = Q(service_level__due_at__isnull=False)
    pks = (
        Conversation.objects.filter(
            (Q(with_policy) & ~Q(status=Conversation.Status.RESOLVED)) | owing
        )
        .order_by(F("service_level__updated_at").asc(nulls_first=True), "id")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    count = 0
    # The joins through labels and teams may repeat a conversation.
    for conversation in Conversation.objects.filter(pk__in=set(pks)):
        refresh_service_level(conversation=conversation, now=now)
        count += 1
    return count


def save_service_policy(
    *,
    policy: ServicePolicy,
    name: str,
    team,
    label,
    first_response_minutes: int | None,
    next_response_minutes: int | None,
    resolution_minutes: int | None,
    business_hours_only: bool,
) -> ServicePolicy:
    """Create or change a policy; conversations follow it at the next sweep."""
    if (team is None) == (label is None):
        raise errors.WorkspaceError(
            "invalid_policy", "Give the policy to a team or to a label, not both."
        )
    targets = (first_response_minutes, next_response_minutes, resolution_minutes)
    if any(minutes is not None and minutes < 1 for minutes in targets):
        raise errors.WorkspaceError("invalid_policy", "Targets are at least a minute.")
    policy.name = name
    policy.team = team
    policy.label = label
    policy.first_response_minutes = first_response_minutes
    policy.next_response_minutes = next_response_minutes
    policy.resolution_minutes = resolution_minutes
    policy.business_hours_only = business_hours_only
    policy.save()
    return policy
