"""What each message costs: Meta's pricing object priced with the rate card."""

from decimal import Decimal

from django.utils import timezone

from ..models import (
    Customer,
    Message,
    MessageCharge,
)
from ..selectors import billing


def record_charge(message: Message) -> MessageCharge | None:
    """Price a message from its pricing object; billed once it is delivered.

    One upsert per priced status; the rate card is read only for billable
    messages (free ones cost 0).
    """
    pricing = message.pricing or {}
    category = str(pricing.get("category") or "")
    if not category:
        return None
    pricing_type = str(pricing.get("type") or "")
    billable = (
        pricing_type == "regular" if pricing_type else bool(pricing.get("billable"))
    )
    rate = None
    if billable:
        wa_id = (
            Customer.objects.filter(conversations=message.conversation_id)
            .values_list("wa_id", flat=True)
            .first()
            or ""
        )
        day = timezone.localdate(message.sent_at or message.timestamp)
        rate = billing.rate_for(wa_id, category, day)
    delivered = message.delivered_at or message.read_at
    charge = MessageCharge(
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
    MessageCharge.objects.bulk_create(
        [charge],
        update_conflicts=True,
        unique_fields=["message"],
        update_fields=[
            "category",
            "pricing_type",
            "billable",
            "market",
            "price",
            "currency",
            "billed_at",
            "priced_at",
        ],
    )
    return charge
