"""What each message costs: Meta's pricing object priced with the rate card."""

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from django.utils import timezone

from ..models import (
    Customer,
    Message,
    MessageCharge,
    RateCard,
)
from ..selectors import billing

_CHARGE_FIELDS = [
    "category",
    "pricing_type",
    "billable",
    "market",
    "price",
    "currency",
    "billed_at",
    "priced_at",
]


def record_charge(message: Message) -> MessageCharge | None:
    """Price a message from its pricing object; billed once it is delivered.

    One upsert per priced status; the rate card is read only for billable
    messages (free ones cost 0).
    """
    category, pricing_type, billable = _pricing(message)
    if not category:
        return None
    rate = None
    if billable:
        wa_id = (
            Customer.objects.filter(conversations=message.conversation_id)
            .values_list("wa_id", flat=True)
            .first()
            or ""
        )
        rate = billing.rate_for(wa_id, category, _pricing_day(message))
    charge = _charge(message, rate)
    MessageCharge.objects.bulk_create(
        [charge],
        update_conflicts=True,
        unique_fields=["message"],
        update_fields=_CHARGE_FIELDS,
    )
    return charge


def record_charges(messages: Sequence[Message]) -> int:
    """record_charge for many messages in three statements at most: the
    customers' wa_ids, the rate cards, one upsert. Return how many were priced."""
    priced = [message for message in messages if _pricing(message)[0]]
    if not priced:
        return 0
    billable = [message for message in priced if _pricing(message)[2]]
    rates: dict[int, RateCard | None] = {}
    if billable:
        wa_ids = dict(
            Customer.objects.filter(
                conversations__in={message.conversation_id for message in billable}
            ).values_list("conversations", "wa_id")
        )
        found = billing.rates_for(
            [
                (
                    wa_ids.get(message.conversation_id) or "",
                    _pricing(message)[0],
                    _pricing_day(message),
                )
                for message in billable
            ]
        )
        rates = {
            message.pk: rate for message, rate in zip(billable, found, strict=True)
        }
    MessageCharge.objects.bulk_create(
        [_charge(message, rates.get(message.pk)) for message in priced],
        update_conflicts=True,
        unique_fields=["message"],
        update_fields=_CHARGE_FIELDS,
    )
    return len(priced)


def _pricing(message: Message) -> tuple[str, str, bool]:
    """The category, pricing type and whether Meta bills it."""
    pricing = message.pricing or {}
    category = str(pricing.get("category") or "")
    pricing_type = str(pricing.get("type") or "")
    billable = (
        pricing_type == "regular" if pricing_type else bool(pricing.get("billable"))
    )
    return category, pricing_type, billable


def _pricing_day(message: Message) -> date:
    return timezone.localdate(message.sent_at or message.timestamp)


def _charge(message: Message, rate: RateCard | None) -> MessageCharge:
    category, pricing_type, billable = _pricing(message)
    delivered = message.delivered_at or message.read_at
    return MessageCharge(
        message=message,
        conversation_id=message.conversation_id,
        category=category,
        pricing_type=pricing_type,
        billable=billable,
        market=rate.market if rate else "",
        price=rate.price if rate else (None if billable else Decimal("0")),
        currency=rate.currency if rate else "",
        billed_at=delivered if billable else None,
        priced_at=timezone.now(),
    )
