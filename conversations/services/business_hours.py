"""Business hours: which hours a conversation follows, and the away reply a
customer who writes while the business is closed gets.

A conversation follows its team's hours, else its number's; without either
it is always open. The away reply goes out once per conversation per closed
period (a unique row per period holds that even for concurrent sweeps), only
to a customer who wrote in that period and whose service window is open, and
never to a customer who opted out (a customer who wrote STOP opted out of
every purpose). It is an ordinary text send with no agent, recorded as an
automatic message, so the thread shows it as one.
"""

import logging
from datetime import date, datetime, time

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import (
    AutomaticMessage,
    AwayReply,
    BusinessHours,
    ConsentRecord,
    Conversation,
    Holiday,
    Message,
    OpeningHours,
)
from ..rules import business_hours as rules
from ..rules import windows
from ..selectors.consent import latest_consents
from . import customers, errors, outbound

logger = logging.getLogger(__name__)

# Conversations one sweep answers per schedule at most; the next sweep takes
# the rest.
AWAY_BATCH = 500


def schedule_of(hours: BusinessHours) -> rules.Schedule:
    """The rule's view of stored hours (opening hours and holidays are read
    from their prefetch when there is one)."""
    week: dict[int, list] = {}
    for interval in hours.opening_hours.all():
        week.setdefault(interval.weekday, []).append((interval.opens, interval.closes))
    return rules.Schedule(
        zone=rules.ZoneInfo(hours.time_zone),
        week=week,
        holidays=frozenset(holiday.date for holiday in hours.holidays.all()),
    )


def hours_for(conversation: Conversation) -> BusinessHours | None:
    """The hours a conversation follows: its team's, else its number's."""
    owners = Q(number_id=conversation.number_id)
    if conversation.team_id:
        owners |= Q(team_id=conversation.team_id)
    found = list(
        BusinessHours.objects.filter(owners).prefetch_related(
            "opening_hours", "holidays"
        )
    )
    return next((hours for hours in found if hours.team_id), None) or next(
        iter(found), None
    )


def is_open_now(hours: BusinessHours) -> bool:
    return rules.is_open(schedule_of(hours), timezone.now())


def opted_out(customer_ids) -> set[int]:
    """The customers whose utility consent is withdrawn: no automatic
    message goes to them."""
    state = latest_consents(customer_ids)
    return {
        customer_id
        for (customer_id, purpose), status in state.items()
        if purpose == ConsentRecord.Purpose.UTILITY
        and status == ConsentRecord.Status.OPT_OUT
    }


def send_away_replies(*, now: datetime | None = None) -> int:
    """Answer customers who wrote while their conversation's hours are
    closed, once per closed period; return how many replies were queued."""
    now = now or timezone.now()
    sent = 0
    schedules = BusinessHours.objects.exclude(away_message="").prefetch_related(
        "opening_hours", "holidays"
    )
    for hours in schedules:
        since = rules.closed_since(schedule_of(hours), now)
        if since is None:
            continue
        for conversation in _awaiting_away_reply(hours, since, now):
            sent += _send_away_reply(conversation, hours, since=since, now=now)
    return sent


def _awaiting_away_reply(hours: BusinessHours, since: datetime, now: datetime):
    conversations = Conversation.objects.exclude(
        status=Conversation.Status.RESOLVED
    ).filter(
        last_inbound_at__gte=since,
        last_inbound_at__lte=now,
    )
    if hours.team_id:
        conversations = conversations.filter(team_id=hours.team_id)
    else:
        conversations = conversations.filter(number_id=hours.number_id).filter(
            Q(team__isnull=True) | Q(team__business_hours__isnull=True)
        )
    candidates = list(
        conversations.exclude(away_replies__closed_since=since)
        .select_related("number")
        .order_by("last_inbound_at", "id")[:AWAY_BATCH]
    )
    unwilling = opted_out({c.customer_id for c in candidates})
    return [
        conversation
        for conversation in candidates
        if conversation.customer_id not in unwilling
        and windows.service_window_open(conversation, now)
    ]


def _send_away_reply(
    conversation: Conversation, hours: BusinessHours, *, since: datetime, now: datetime
) -> int:
    with transaction.atomic():
        reply = AwayReply(conversation=conversation, closed_since=since)
        if not customers.insert_or_ignore(reply):
            return 0
        try:
            message = outbound.send_reply(
                conversation=conversation,
                kind="text",
                content={"body": hours.away_message},
                at=now,
            )
        except errors.ServiceError as refusal:
            # The period stays claimed: a refused reply is not retried into
            # a later moment of the same period.
            logger.info(
                "Away reply to conversation %s not sent: %s", conversation.pk, refusal
            )
            return 0
        record_automatic(message, AutomaticMessage.Kind.AWAY)
        AwayReply.objects.filter(pk=reply.pk).update(message=message)
    return 1


def record_automatic(message: Message, kind: str) -> AutomaticMessage:
    """Mark a message the helpdesk sent on its own, for the thread to say so."""
    return AutomaticMessage.objects.create(message=message, kind=kind)


@transaction.atomic
def save_business_hours(
    *,
    hours: BusinessHours,
    name: str,
    time_zone: str,
    away_message: str,
    opening_hours: list[tuple[int, time, time]],
    holidays: list[tuple[date, str]],
) -> BusinessHours:
    """Create or replace a team's or number's hours, holidays and away reply
    in one go (nothing half-written)."""
    problem = rules.interval_problem(opening_hours)
    if problem:
        raise errors.WorkspaceError("invalid_opening_hours", problem)
    if len({day for day, _ in holidays}) != len(holidays):
        raise errors.WorkspaceError("invalid_holidays", "A day is listed twice.")
    hours.name = name
    hours.time_zone = time_zone
    hours.away_message = away_message
    hours.save()
    hours.opening_hours.all().delete()
    OpeningHours.objects.bulk_create(
        OpeningHours(schedule=hours, weekday=weekday, opens=opens, closes=closes)
        for weekday, opens, closes in opening_hours
    )
    hours.holidays.all().delete()
    Holiday.objects.bulk_create(
        Holiday(schedule=hours, date=day, name=holiday_name)
        for day, holiday_name in holidays
    )
    return hours
