"""Business hours: which hours a conversation follows, whether they are
open, and who may receive automatic messages.

A conversation follows its team's hours, else its number's; without either
it is always open.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import (
    AutomaticMessage,
    BusinessHours,
    ConsentRecord,
    Conversation,
    Holiday,
    Message,
    OpeningHours,
)
from ..rules import business_hours as rules
from ..selectors.consent import latest_consents
from . import business_clock, errors

logger = logging.getLogger(__name__)


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
        shift=business_clock.shift(),
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


# --- The sandbox's business clock (business_clock.py, docs/sandbox.md) -------------


@dataclass(frozen=True)
class ClockReading:
    """The business clock as a number's hours see it; moments in business
    time (real time + shift), in the hours' zone (UTC without hours)."""

    shift: timedelta
    hours: BusinessHours | None
    now: datetime
    open: bool | None
    closed_since: datetime | None
    next_opening: datetime | None
    next_closing: datetime | None


def hours_of_number(number) -> BusinessHours | None:
    """The hours the sandbox's clock shows for a number: its own, else the
    first (by name) of its teams' (a conversation follows its team's)."""
    found = (
        BusinessHours.objects.filter(Q(number=number) | Q(team__numbers=number))
        .prefetch_related("opening_hours", "holidays")
        .order_by("team__name", "id")
    )
    found = list(found)
    return next((h for h in found if h.number_id), None) or next(iter(found), None)


def read_business_clock(*, number, now: datetime | None = None) -> ClockReading:
    now = now or timezone.now()
    shift = business_clock.shift()
    hours = hours_of_number(number)
    zone = rules.ZoneInfo(hours.time_zone) if hours else UTC

    def business(moment):
        return None if moment is None else (moment + shift).astimezone(zone)

    if hours is None:
        return ClockReading(shift, None, business(now), None, None, None, None)
    schedule = schedule_of(hours)
    since = rules.closed_since(schedule, now)
    return ClockReading(
        shift=shift,
        hours=hours,
        now=business(now),
        open=since is None,
        closed_since=None if since in (None, rules.NEVER_OPEN) else business(since),
        next_opening=business(rules.next_opening(schedule, now)),
        next_closing=business(rules.next_closing(schedule, now)),
    )


def move_business_clock(
    *,
    number,
    to: datetime | None = None,
    jump: str = "",
    now: datetime | None = None,
) -> ClockReading:
    """Move the sandbox's business clock: to a moment (`to`, business time),
    to the start of the next closed period (`jump="closed"`) or the next
    opening (`jump="open"`) of the number's hours, or, with neither, back
    to real time. Refused when the clock is off."""
    if not business_clock.enabled():
        raise errors.WorkspaceError("clock_off", "The business clock is off.")
    now = now or timezone.now()
    if to is not None:
        shift = to - now
    elif jump:
        # The jump lands on the whole second: Meta's timestamps are whole
        # seconds, and a customer writing in the second of the jump writes
        # in the period it began.
        anchor = now.replace(microsecond=0)
        shift = business_clock.shift() + (_jump_target(number, jump, now) - anchor)
    else:
        shift = timedelta(0)
    if abs(shift) > business_clock.MAX_SHIFT:
        raise errors.WorkspaceError(
            "invalid_clock", "The clock moves at most 400 days from now."
        )
    business_clock.store_shift(shift)
    return read_business_clock(number=number, now=now)


def _jump_target(number, jump: str, now: datetime) -> datetime:
    """The real moment at which the number's hours (as shifted now) next
    close, or next open after being closed."""
    if jump not in {"closed", "open"}:
        raise errors.WorkspaceError("invalid_clock", "Jump to 'closed' or 'open'.")
    hours = hours_of_number(number)
    if hours is None:
        raise errors.WorkspaceError(
            "no_business_hours",
            "This number follows no business hours: set them in the admin "
            "(Business hours).",
        )
    schedule = schedule_of(hours)
    target = rules.next_closing(schedule, now)
    if jump == "open":
        closed = not rules.is_open(schedule, now)
        target = rules.next_opening(schedule, now if closed else target or now)
    if target is None:
        raise errors.WorkspaceError(
            "no_business_hours", "These business hours are never open."
        )
    return target
