"""Business hours: which hours a conversation follows, whether they are
open, and who may receive automatic messages.

A conversation follows its team's hours, else its number's; without either
it is always open.
"""

import logging
from datetime import date, time

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
from . import errors

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
