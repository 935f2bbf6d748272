"""Status webhooks move outbound messages forward (never back), parked until
their wamid is known, and what a status means for the business: cost,
opt-out, callbacks.
"""

import logging
import re
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .. import realtime
from ..models import (
    Message,
    MessageTemplate,
    ParkedStatus,
    WhatsAppNumber,
)
from ..whatsapp import client, payloads
from . import business_callbacks, charges, consent, customers

logger = logging.getLogger(__name__)


_CALLBACK_ID = re.compile(r"^(?:message:)?(\d{1,18})$")


def _callback_message_id(value: str) -> int | None:
    """Read our message id back from biz_opaque_callback_data ("43" or "message:43")."""
    match = _CALLBACK_ID.match(value.strip())
    return int(match.group(1)) if match else None


def update_message_status(
    *, number: WhatsAppNumber, status: payloads.StatusUpdate
) -> Message | None:
    """Move an outbound message forward by a status report; park it if unknown.

    The message is found by wamid, or by the id the send put in
    biz_opaque_callback_data when its wamid was never stored (a send whose
    answer was lost). Statuses Meta does not document are logged and
    ignored. Return the message, or None when the status was parked or
    ignored.
    """
    if not status.is_known_status:
        logger.info("Ignoring status %r for %s", status.status, status.wamid)
        return None
    at = status.timestamp or timezone.now()
    error = status.error.as_dict() if status.error else None
    pricing = dict(status.pricing.raw) if status.pricing else None
    message = (
        Message.objects.select_for_update()
        .select_related("conversation")
        .filter(wamid=status.wamid)
        .first()
    )
    if message is None and status.biz_opaque_callback_data:
        message_id = _callback_message_id(status.biz_opaque_callback_data)
        if message_id is not None:
            message = (
                Message.objects.select_for_update()
                .select_related("conversation")
                .filter(
                    pk=message_id,
                    direction=Message.Direction.OUTBOUND,
                    wamid__isnull=True,
                    conversation__number=number,
                )
                .first()
            )
            if message is not None:
                message.wamid = status.wamid
                message.save(update_fields=["wamid", "updated_at"])
    if message is None:
        ParkedStatus.objects.bulk_create(
            [
                ParkedStatus(
                    wamid=status.wamid,
                    status=status.status,
                    timestamp=at,
                    error=error,
                    pricing=pricing,
                    raw=dict(status.raw),
                    number=number,
                )
            ],
            ignore_conflicts=True,
        )
        return None
    _apply_status(message, status=status.status, at=at, error=error, pricing=pricing)
    if status.contact is not None and status.recipient_type != "group":
        # Sent, delivered and read name the customer as Meta knows them now.
        customers.learn_from_contact(message.conversation.customer_id, status.contact)
    return message


# What each status implies happened before it (a read was delivered, ...).
_IMPLIED_TIMES = {
    "sent": ("sent_at",),
    "delivered": ("sent_at", "delivered_at"),
    "read": ("sent_at", "delivered_at", "read_at"),
    "played": ("sent_at", "delivered_at", "read_at"),
    "failed": ("failed_at",),
}


def _apply_status(
    message: Message,
    *,
    status: str,
    at: datetime,
    error: dict | None,
    pricing: dict | None,
) -> bool:
    """Apply one status to a locked message; return whether anything changed."""
    changed: list[str] = []
    for field_name in _IMPLIED_TIMES.get(status, ()):
        current = getattr(message, field_name)
        # Implied times are upper bounds: the earliest report wins.
        if current is None or at < current:
            setattr(message, field_name, at)
            changed.append(field_name)
    if message.can_move_to(status):
        message.status = status
        changed.append("status")
    if status == Message.Status.FAILED and error and message.error != error:
        message.error = error
        changed.append("error")
    if pricing and message.pricing != pricing:
        message.pricing = pricing
        changed.append("pricing")
    if not changed:
        return False
    message.save(update_fields=[*changed, "updated_at"])
    realtime.publish(
        realtime.MESSAGE_UPDATED,
        conversation=message.conversation,
        message=message,
        data={"status": message.status},
    )
    # Cost, 131050 and the business's callbacks (business section below).
    _after_status(message, status=status, changed=changed)
    return True


def apply_parked_statuses(message: Message) -> int:
    """Apply the statuses parked for a message's wamid; return how many.

    Call right after storing a wamid on an outbound message (inside the same
    transaction is fine). Parked rows are deleted once applied.
    """
    if not message.wamid:
        return 0
    with transaction.atomic():
        parked = list(
            ParkedStatus.objects.select_for_update()
            .filter(wamid=message.wamid)
            .order_by("timestamp", "id")
        )
        if not parked:
            return 0
        locked = (
            Message.objects.select_for_update()
            .select_related("conversation")
            .get(pk=message.pk)
        )
        for status in parked:
            _apply_status(
                locked,
                status=status.status,
                at=status.timestamp,
                error=status.error,
                pricing=status.pricing,
            )
        ParkedStatus.objects.filter(pk__in=[status.pk for status in parked]).delete()
    for field_name in (
        "status",
        "sent_at",
        "delivered_at",
        "read_at",
        "failed_at",
        "error",
        "pricing",
    ):
        setattr(message, field_name, getattr(locked, field_name))
    return len(parked)


def settle_parked_statuses(*, limit: int = 500) -> int:
    """Apply parked statuses whose wamid has since been stored; return how many.

    Covers a status parked in a transaction that committed just after the
    send recorded its wamid and looked for parked statuses.
    """
    wamids = list(
        ParkedStatus.objects.filter(
            wamid__in=Message.objects.filter(wamid__isnull=False).values("wamid")
        )
        .values_list("wamid", flat=True)
        .distinct()[:limit]
    )
    applied = 0
    for message in Message.objects.filter(wamid__in=wamids):
        applied += apply_parked_statuses(message)
    return applied


def _after_status(message: Message, *, status: str, changed: list[str]) -> None:
    """What a status webhook means for the business: cost, opt-out, callbacks."""
    if message.pricing and {"pricing", "delivered_at", "read_at"} & set(changed):
        charges.record_charge(message)
    if (
        status == Message.Status.FAILED
        and "status" in changed
        and (message.error or {}).get("code") == consent.MARKETING_OPTED_OUT_CODE
    ):
        consent.record_marketing_opt_out_from_meta(
            customer_id=message.conversation.customer_id
        )
    business_callbacks.notify_business(message, status)


# Error codes after which Meta's own state changed for a template.
TEMPLATE_STATUS_BY_CODE = {
    client.TEMPLATE_PAUSED_CODE: MessageTemplate.Status.PAUSED,
    client.TEMPLATE_DISABLED_CODE: MessageTemplate.Status.DISABLED,
}


def record_send_failure(*, message_id: int, code: int | None) -> None:
    """Mirror what a permanent send error says about a template or a contact,
    and tell the business its notification failed."""
    message = Message.objects.select_related("template", "conversation").get(
        pk=message_id
    )
    if code in TEMPLATE_STATUS_BY_CODE and message.template_id:
        MessageTemplate.objects.filter(pk=message.template_id).update(
            status=TEMPLATE_STATUS_BY_CODE[code],
            status_reason=f"Meta answered {code} to a send",
        )
    elif code == consent.MARKETING_OPTED_OUT_CODE:
        consent.record_marketing_opt_out_from_meta(
            customer_id=message.conversation.customer_id
        )
    business_callbacks.notify_business(message, Message.Status.FAILED)
