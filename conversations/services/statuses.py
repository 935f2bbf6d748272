"""Status webhooks move outbound messages forward (never back), parked until
their wamid is known, and what a status means for the business: cost,
opt-out, callbacks.
"""

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from .. import metrics, realtime
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
            [_parked(number, status, at=at, error=error, pricing=pricing)],
            ignore_conflicts=True,
        )
        return None
    _apply_status(message, status=status.status, at=at, error=error, pricing=pricing)
    if status.contact is not None and status.recipient_type != "group":
        # Sent, delivered and read name the customer as Meta knows them now.
        customers.learn_from_contact(message.conversation.customer_id, status.contact)
    return message


def _parked(
    number: WhatsAppNumber,
    status: payloads.StatusUpdate,
    *,
    at: datetime,
    error: dict | None,
    pricing: dict | None,
) -> ParkedStatus:
    return ParkedStatus(
        wamid=status.wamid,
        status=status.status,
        timestamp=at,
        error=error,
        pricing=pricing,
        raw=dict(status.raw),
        number=number,
    )


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
    changed = _move_forward(message, status=status, at=at, error=error, pricing=pricing)
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


# A message in these is not known to be sent; a status to one of the
# others says it was.
_NOT_KNOWN_SENT = (Message.Status.SENDING, Message.Status.UNKNOWN)
_SENT_OR_LATER = (Message.Status.SENT, Message.Status.DELIVERED, Message.Status.READ)


def _move_forward(
    message: Message,
    *,
    status: str,
    at: datetime,
    error: dict | None,
    pricing: dict | None,
) -> list[str]:
    """Set what one status report changes on a message (in memory, never
    backwards); return the names of the fields it changed."""
    changed: list[str] = []
    for field_name in _IMPLIED_TIMES.get(status, ()):
        current = getattr(message, field_name)
        # Implied times are upper bounds: the earliest report wins.
        if current is None or at < current:
            setattr(message, field_name, at)
            changed.append(field_name)
    if message.can_move_to(status):
        if message.status in _NOT_KNOWN_SENT and status in _SENT_OR_LATER:
            # Meta tells of a send its worker never wrote back (it died
            # after Meta accepted): counted here, as the write-back would.
            transaction.on_commit(metrics.count_sent_by_status)
        message.status = status
        changed.append("status")
    if status == Message.Status.FAILED and error and message.error != error:
        message.error = error
        changed.append("error")
    if pricing and message.pricing != pricing:
        message.pricing = pricing
        changed.append("pricing")
    return changed


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
    _record_opt_out_from_meta(message, status=status, changed=changed)
    business_callbacks.notify_business(message, status)


def _record_opt_out_from_meta(message: Message, *, status: str, changed) -> None:
    """A marketing message failed with 131050: the customer stopped them."""
    if (
        status == Message.Status.FAILED
        and "status" in changed
        and (message.error or {}).get("code") == consent.MARKETING_OPTED_OUT_CODE
    ):
        consent.record_marketing_opt_out_from_meta(
            customer_id=message.conversation.customer_id
        )


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


# --- Sets: a batch of stored webhook events' statuses at once -------------------

# The columns a status report writes, in the order of the set UPDATE's VALUES.
_STATUS_COLUMNS = (
    ("status", "text"),
    ("sent_at", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("read_at", "timestamptz"),
    ("failed_at", "timestamptz"),
    ("error", "jsonb"),
    ("pricing", "jsonb"),
    ("wamid", "text"),
)


def apply_statuses(
    *, reports: Sequence[tuple[WhatsAppNumber, payloads.StatusUpdate]]
) -> int:
    """update_message_status for many reports with a fixed number of statements.

    The messages are read and locked in one SELECT (in id order, so two
    workers lock in the same order), each report is applied in memory by
    the same rules as one by one (_move_forward: never backwards, the
    earliest implied time wins, failed is final), and every changed message
    is written by one UPDATE … FROM (VALUES …). Reports for wamids not
    stored are parked in one INSERT; live events, charges and callbacks go
    out in bulk too. Return how many messages changed.
    """
    known = [(number, status) for number, status in reports if status.is_known_status]
    for _, status in reports:
        if not status.is_known_status:
            logger.info("Ignoring status %r for %s", status.status, status.wamid)
    if not known:
        return 0
    messages = _locked_messages(known)
    parked: list[ParkedStatus] = []
    changes: dict[int, set[str]] = {}
    steps: list[tuple[Message, str, list[str]]] = []
    for number, status in known:
        at = status.timestamp or timezone.now()
        error = status.error.as_dict() if status.error else None
        pricing = dict(status.pricing.raw) if status.pricing else None
        message = messages.get(status.wamid)
        if message is None:
            parked.append(_parked(number, status, at=at, error=error, pricing=pricing))
            continue
        changed = _move_forward(
            message, status=status.status, at=at, error=error, pricing=pricing
        )
        if changed:
            changes.setdefault(message.pk, set()).update(changed)
            steps.append((message, status.status, changed))
    if parked:
        ParkedStatus.objects.bulk_create(parked, ignore_conflicts=True)
    # Sent, delivered and read name the customer as Meta knows them now (as
    # update_message_status): one read, and writes only for what is new.
    customers.learn_from_contacts(
        [
            (messages[status.wamid].conversation.customer_id, status.contact)
            for _, status in known
            if status.wamid in messages
            and status.contact is not None
            and status.recipient_type != "group"
        ]
    )
    changed_messages = {message.pk: message for message, _, _ in steps}
    # A wamid learnt from the callback data is kept even if its status
    # changed nothing (as update_message_status saves it at once).
    rekeyed = {
        message.pk: message
        for message in messages.values()
        if getattr(message, "wamid_from_callback", False)
    }
    _write_statuses(list({**rekeyed, **changed_messages}.values()))
    for message in changed_messages.values():
        realtime.publish(
            realtime.MESSAGE_UPDATED,
            conversation=message.conversation,
            message=message,
            data={"status": message.status},
        )
    _after_statuses(steps, changes)
    return len(changed_messages)


def _locked_messages(
    reports: list[tuple[WhatsAppNumber, payloads.StatusUpdate]],
) -> dict[str, Message]:
    """The reports' messages by wamid, locked: by wamid in one SELECT, then
    (only when some are missing) by the id the send put in
    biz_opaque_callback_data, for sends whose wamid was never stored."""
    wamids = {status.wamid for _, status in reports}
    locked = (
        Message.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .order_by("pk")
    )
    found = {message.wamid: message for message in locked.filter(wamid__in=wamids)}
    wanted: dict[int, tuple[WhatsAppNumber, str]] = {}
    for number, status in reports:
        if status.wamid in found or not status.biz_opaque_callback_data:
            continue
        message_id = _callback_message_id(status.biz_opaque_callback_data)
        if message_id is not None:
            wanted.setdefault(message_id, (number, status.wamid))
    if wanted:
        for message in locked.filter(
            pk__in=wanted,
            direction=Message.Direction.OUTBOUND,
            wamid__isnull=True,
        ):
            number, wamid = wanted[message.pk]
            if message.conversation.number_id == number.pk and wamid not in found:
                message.wamid = wamid
                message.wamid_from_callback = True
                found[wamid] = message
    return found


def _write_statuses(messages: list[Message]) -> None:
    """One UPDATE … FROM (VALUES …) for every changed message."""
    if not messages:
        return
    ops = connection.ops
    row = "(%s::bigint, " + ", ".join(f"%s::{kind}" for _, kind in _STATUS_COLUMNS)
    params: list = [ops.adapt_datetimefield_value(timezone.now())]
    for message in messages:
        params.append(message.pk)
        for name, kind in _STATUS_COLUMNS:
            value = getattr(message, name)
            if kind == "jsonb":
                value = None if value is None else json.dumps(value)
            elif kind == "timestamptz":
                value = ops.adapt_datetimefield_value(value)
            params.append(value)
    names = ", ".join(name for name, _ in _STATUS_COLUMNS)
    sets = ", ".join(f"{name} = v.{name}" for name, _ in _STATUS_COLUMNS)
    table = Message._meta.db_table
    sql = (
        f"UPDATE {table} AS m SET {sets}, updated_at = %s"  # noqa: S608
        f" FROM (VALUES {', '.join([row + ')'] * len(messages))})"
        f" AS v(id, {names}) WHERE m.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _after_statuses(
    steps: list[tuple[Message, str, list[str]]], changes: dict[int, set[str]]
) -> None:
    """_after_status for a set: charges and callbacks in bulk; 131050 (rare)
    one by one."""
    priced = {
        message.pk: message
        for message, _, _ in steps
        if message.pricing
        and {"pricing", "delivered_at", "read_at"} & changes[message.pk]
    }
    charges.record_charges(list(priced.values()))
    for message, status, changed in steps:
        _record_opt_out_from_meta(message, status=status, changed=changed)
    business_callbacks.notify_business_many(
        [(message, status) for message, status, _ in steps]
    )
