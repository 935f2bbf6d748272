"""What messages cost: rate-card lookups and the sums agents see.

Meta prices delivered template messages per category and the recipient's
country calling code (per-message pricing since July 2025); its status
webhooks say how each message was priced (category, type, billable) but
not the amount, so the amount comes from the rate card admins keep.
Writes (pricing a message) live in services.record_charge.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from django.db.models import Count, Q, Sum
from django.utils import timezone

from ..models import MessageCharge, MessageTemplate, RateCard
from ..rules import windows


def rate_for(wa_id: str, category: str, day: date) -> RateCard | None:
    """The rate of the longest calling-code prefix of wa_id valid on `day`."""
    prefixes = [wa_id[:length] for length in range(1, 5) if len(wa_id) >= length]
    rates = list(
        RateCard.objects.filter(
            market__in=[*prefixes, "*"], category=category, valid_from__lte=day
        )
    )
    if not rates:
        return None
    return max(
        rates,
        key=lambda rate: (
            0 if rate.market == "*" else len(rate.market),
            rate.valid_from,
        ),
    )


def rates_for(
    wanted: Sequence[tuple[str, str, date]],
) -> list[RateCard | None]:
    """rate_for for many (wa_id, category, day) at once, in one query."""
    if not wanted:
        return []
    prefixes = {wa_id[:length] for wa_id, _, _ in wanted for length in range(1, 5)} | {
        "*"
    }
    rates = list(
        RateCard.objects.filter(
            market__in=prefixes,
            category__in={category for _, category, _ in wanted},
            valid_from__lte=max(day for _, _, day in wanted),
        )
    )
    found: list[RateCard | None] = []
    for wa_id, category, day in wanted:
        markets = {wa_id[:length] for length in range(1, 5) if len(wa_id) >= length}
        fitting = [
            rate
            for rate in rates
            if rate.category == category
            and rate.valid_from <= day
            and (rate.market == "*" or rate.market in markets)
        ]
        found.append(
            max(
                fitting,
                key=lambda rate: (
                    0 if rate.market == "*" else len(rate.market),
                    rate.valid_from,
                ),
            )
            if fitting
            else None
        )
    return found


def estimate(
    conversation, template: MessageTemplate, at: datetime | None = None
) -> RateCard | None:
    """What sending this template now will cost (None: free or no rate known).

    Free inside the ad's free entry point, and utility templates inside the
    customer service window.
    """
    at = at or timezone.now()
    if windows.free_entry_point_open(conversation, at):
        return None
    category = template.category.lower()
    if category == "utility" and windows.service_window_open(conversation, at):
        return None
    return rate_for(conversation.customer.wa_id, category, timezone.localdate(at))


def billed():
    """Charges Meta bills: regular pricing, delivered."""
    return MessageCharge.objects.filter(billable=True, billed_at__isnull=False)


def conversation_cost(conversation_id: int) -> list[dict]:
    """Billed totals of a conversation per currency, e.g. [{currency, total, count}]."""
    return list(
        billed()
        .filter(conversation_id=conversation_id)
        .values("currency")
        .annotate(total=Sum("price"), count=Count("id"))
        .order_by("currency")
    )


BILLED = Q(charge__billable=True, charge__billed_at__isnull=False)
