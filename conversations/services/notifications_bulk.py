"""Notifications to many recipients at once (a JSON list or an admin's CSV):
the same checks and rows as one send per recipient, in a few set-based
statements per chunk.
"""

import csv
import io
import json
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from accounts.models import Team, User

from .. import realtime
from ..delivery import doorbells
from ..models import (
    ConsentRecord,
    Conversation,
    Customer,
    Message,
    MessageTemplate,
    Notification,
    NotificationBatch,
    WhatsAppNumber,
)
from ..rules import windows
from ..selectors import consent as consent_selectors
from ..whatsapp import templates as meta_templates
from . import errors, notifications, outbound

# Recipients written per round of set-based statements in a bulk send.
BULK_CHUNK = 1000


@dataclass
class _Chunk:
    """One round of a bulk send: its recipients and what became of each."""

    order: notifications.NotificationOrder
    recipients: list[dict]
    offset: int
    batch: NotificationBatch
    # position -> the recipient's row, saved in one INSERT at the end
    results: dict[int, Notification] = field(default_factory=dict)
    # positions the set-based path leaves to send_notification()
    later: list[int] = field(default_factory=list)

    def item(self, position: int) -> dict:
        return self.recipients[position - self.offset]

    def row(self, position: int, **fields) -> Notification:
        item = self.item(position)
        return notifications.notification_row(
            self.order,
            to=item.get("to", ""),
            user_id=item.get("user_id", ""),
            position=position,
            batch=self.batch,
            parameters=item.get("parameters"),
            reference=item.get("reference"),
            **fields,
        )


def _send_notification_chunk(
    *,
    order: notifications.NotificationOrder,
    recipients: list[dict],
    offset: int,
    batch: NotificationBatch,
) -> list[Notification]:
    """send_notification() for many recipients in a few statements.

    Same checks, refusals and rows as one call per recipient (the helpers of
    notifications.py and outbound.py): customers are looked up and created in
    bulk, consent read once, and conversations, messages, notifications and
    live events inserted with bulk_create; the number's doorbell rings once
    after commit. A recipient the bulk path cannot settle alone (the same
    customer twice, an unresolved conversation that another team holds or
    that may open a free entry point, a conversation another request created
    meanwhile) goes through send_notification().
    """
    outbound.check_template(order.template, order.number)
    chunk = _Chunk(order=order, recipients=recipients, offset=offset, batch=batch)
    wanted = _screen_recipients(chunk)
    customers = _customers(set(wanted.values()))
    consents = consent_selectors.latest_consents(c.pk for c in customers.values())
    ready = _consented(chunk, wanted, customers, consents)
    conversations, fresh = _conversations(chunk, ready)
    _queue_messages(chunk, ready, conversations, fresh)
    Notification.objects.bulk_create(
        [chunk.results[position] for position in sorted(chunk.results)]
    )
    known = {**consents, "_known": {c.pk for c in customers.values()}}
    for position in sorted(chunk.later):
        item = chunk.item(position)
        chunk.results[position] = notifications.send_notification(
            order=order,
            to=item.get("to", ""),
            user_id=item.get("user_id", ""),
            position=position,
            batch=batch,
            consents=known,
            parameters=item.get("parameters"),
            reference=item.get("reference"),
        )
    return [chunk.results[position] for position in sorted(chunk.results)]


def _screen_recipients(chunk: _Chunk) -> dict[int, tuple[str, str]]:
    """Refuse what was refused already or names no customer (no E.164
    number, no BSUID); position -> ("wa_id" or "user_id", value) of the
    others."""
    wanted: dict[int, tuple[str, str]] = {}
    for index, item in enumerate(chunk.recipients):
        position = chunk.offset + index
        if item.get("refusal") is not None:
            code, detail = item["refusal"]["code"], item["refusal"]["detail"]
            chunk.results[position] = chunk.row(
                position, **notifications.refusal(code, detail)
            )
            continue
        ids, refused = notifications.recipient_ids(
            to=item.get("to", ""), user_id=item.get("user_id", "")
        )
        if refused is not None:
            chunk.results[position] = chunk.row(position, **refused)
            continue
        wanted[position] = (
            ("user_id", ids["user_id"]) if ids["user_id"] else ("wa_id", ids["wa_id"])
        )
    return wanted


def _customers(keys: set[tuple[str, str]]) -> dict[tuple[str, str], Customer]:
    """The customer per ("wa_id" or "user_id", value): the known ones in one
    query, the others in one INSERT (a row another request inserted
    meanwhile is read back)."""
    found = _known_customers(keys)
    missing = keys - found.keys()
    if missing:
        Customer.objects.bulk_create(
            [
                Customer(wa_id=value, phone=f"+{value}")
                if field == "wa_id"
                else Customer(user_id=value)
                for field, value in sorted(missing)
            ],
            ignore_conflicts=True,
        )
        found.update(_known_customers(missing))
    return found


def _known_customers(keys: set[tuple[str, str]]) -> dict[tuple[str, str], Customer]:
    wa_ids = {value for field, value in keys if field == "wa_id"}
    user_ids = {value for field, value in keys if field == "user_id"}
    found: dict[tuple[str, str], Customer] = {}
    for customer in Customer.objects.filter(
        Q(wa_id__in=wa_ids) | Q(user_id__in=user_ids)
    ).only("pk", "wa_id", "user_id"):
        if customer.wa_id in wa_ids:
            found["wa_id", customer.wa_id] = customer
        if customer.user_id in user_ids:
            found["user_id", customer.user_id] = customer
    return found


def _consented(
    chunk: _Chunk, wanted: dict[int, tuple], customers: dict, consents: dict
) -> dict[int, int]:
    """Refuse recipients without an opt-in, and authentication templates to
    customers without a phone; position -> customer id of the others (a
    customer's second position goes the single way)."""
    purpose, template = chunk.order.purpose, chunk.order.template
    ready: dict[int, int] = {}
    for position, key in wanted.items():
        customer = customers.get(key)
        if customer is None or customer.pk in ready.values():
            chunk.later.append(position)
            continue
        refused = None
        if consents.get((customer.pk, purpose)) != ConsentRecord.Status.OPT_IN:
            item = chunk.item(position)
            named = item.get("to") or item.get("user_id", "")
            refused = notifications.no_consent_refusal(named, purpose)
        if refused is None:
            refused = notifications.phone_required_refusal(customer, template)
        if refused is None:
            ready[position] = customer.pk
        else:
            chunk.results[position] = chunk.row(
                position, customer_id=customer.pk, **refused
            )
    return ready


def _conversations(
    chunk: _Chunk, ready: dict[int, int]
) -> tuple[dict[int, Conversation], list[Conversation]]:
    """Each ready customer's conversation: the unresolved one, else a new one
    (inserted together). Positions that need the single path move there and
    leave `ready`. Return conversations by customer id and the new ones."""
    order = chunk.order
    current = {
        conversation.customer_id: conversation
        for conversation in Conversation.objects.filter(
            number=order.number, customer_id__in=set(ready.values()), group_id=""
        ).unresolved()
    }
    conversations: dict[int, Conversation] = {}
    for position, customer_id in list(ready.items()):
        conversation = current.get(customer_id)
        if conversation is None:
            continue
        moves_team = (
            order.team is not None
            and conversation.team_id != order.team.pk
            and order.created_by is not None
        )
        if moves_team or windows.opens_free_entry_point(conversation):
            chunk.later.append(position)
            del ready[position]
        else:
            conversations[customer_id] = conversation
    fresh = [
        Conversation(customer_id=customer_id, number=order.number, team=order.team)
        for customer_id in ready.values()
        if customer_id not in conversations
    ]
    if fresh and not _insert_conversations(fresh):
        # Left to the single path: another request opened one meanwhile, or
        # the database cannot return the new ids.
        for position, customer_id in list(ready.items()):
            if customer_id not in conversations:
                chunk.later.append(position)
                del ready[position]
        fresh = []
    conversations.update((c.customer_id, c) for c in fresh)
    return conversations, fresh


def _insert_conversations(fresh: list[Conversation]) -> bool:
    if not connection.features.can_return_rows_from_bulk_insert:
        return False
    try:
        with transaction.atomic():
            Conversation.objects.bulk_create(fresh)
    except IntegrityError:
        return False
    return True


def _queue_messages(
    chunk: _Chunk,
    ready: dict[int, int],
    conversations: dict[int, Conversation],
    fresh: list[Conversation],
) -> None:
    """One queued template message per ready recipient, rendered once per
    distinct set of parameters, with its live events and one doorbell."""
    if not ready:
        return
    order, template, now = chunk.order, chunk.order.template, timezone.now()
    rendered: dict[str, tuple[dict, str]] = {}
    messages: dict[int, Message] = {}
    for position, customer_id in ready.items():
        parameters = chunk.item(position).get("parameters")
        parameters = order.parameters if parameters is None else parameters
        key = json.dumps(parameters, sort_keys=True, default=str)
        if key not in rendered:
            rendered[key] = outbound.template_message(template, parameters or {})
        payload, text = rendered[key]
        messages[position] = Message(
            conversation=conversations[customer_id],
            direction=Message.Direction.OUTBOUND,
            type="template",
            text=text,
            payload=payload,
            status=Message.Status.QUEUED,
            timestamp=now,
            template=template,
        )
    Message.objects.bulk_create(messages.values())
    _touch_conversations({m.conversation_id for m in messages.values()}, now)
    for position, message in messages.items():
        chunk.results[position] = chunk.row(
            position,
            state=Notification.State.QUEUED,
            customer_id=ready[position],
            message=message,
            conversation=message.conversation,
        )
    realtime.publish_many(realtime.MESSAGE_CREATED, messages=list(messages.values()))
    with realtime.batched():  # one INSERT, one announcement hop
        for conversation in fresh:
            realtime.publish(realtime.CONVERSATION_CREATED, conversation=conversation)
    doorbells.ring_delivery_after_commit(order.number.pk)


def _touch_conversations(conversation_ids: set[int], now) -> None:
    """Each conversation's newest message is the one just queued, never
    moving backwards."""
    newest = (
        Message.objects.filter(
            conversation_id=OuterRef("pk"),
            direction=Message.Direction.OUTBOUND,
            timestamp=now,
        )
        .order_by("-id")
        .values("id")[:1]
    )
    Conversation.objects.filter(pk__in=conversation_ids).filter(
        Q(last_message_at__isnull=True) | Q(last_message_at__lte=now)
    ).update(last_message=Subquery(newest), last_message_at=now, updated_at=now)


def send_notifications(
    *,
    order: notifications.NotificationOrder,
    recipients: list[dict],
    source: str = NotificationBatch.Source.API,
    name: str = "",
) -> tuple[NotificationBatch, list[Notification]]:
    """Queue one notification per recipient.

    recipients: [{"to" or "user_id", "parameters"?, "reference"?,
    "refusal"?}]: a phone in E.164 form or a business-scoped user id, exactly
    one (screened as one send screens it).

    Each recipient gets a row (refusals included); the batch counts them.
    Sends go out through the number's rate limiter like every other message.
    """
    batch = NotificationBatch.objects.create(
        name=name,
        source=source,
        template=order.template,
        total=len(recipients),
        created_by=order.created_by,
    )
    notifications: list[Notification] = []
    for start in range(0, len(recipients), BULK_CHUNK):
        notifications.extend(
            _send_notification_chunk(
                order=order,
                recipients=recipients[start : start + BULK_CHUNK],
                offset=start,
                batch=batch,
            )
        )
    refused = sum(1 for n in notifications if n.state == Notification.State.REFUSED)
    NotificationBatch.objects.filter(pk=batch.pk).update(
        queued=len(notifications) - refused, refused=refused
    )
    batch.queued, batch.refused = len(notifications) - refused, refused
    return batch, notifications


def notifications_from_csv(
    *,
    text: str,
    number: WhatsAppNumber,
    template: MessageTemplate,
    purpose: str,
    team: Team | None,
    created_by: User,
    name: str = "",
) -> tuple[NotificationBatch, list[Notification]]:
    """Send a notification per CSV row (an admin's upload).

    Columns: phone (E.164) or user_id (a business-scoped user id, for a
    customer known by username), one of the two per row; reference, body_1,
    body_2, ... (positional) or body_<name> (named), header (a text header's
    value), header_link (a media header) and document_filename. A row that
    names no customer, or whose parameters the template refuses, is recorded
    as refused with the reason; the others are sent.
    """
    template = notifications.notification_template(
        number=number, name=template.name, language=template.language, purpose=purpose
    )
    reader = csv.DictReader(io.StringIO(text))
    columns = {(name or "").strip() for name in reader.fieldnames or ()}
    if not columns & {"phone", "user_id"}:
        raise errors.OutboundError(
            "The CSV needs a header row with a phone or a user_id column."
        )
    header = meta_templates.components_by_type(template).get("HEADER") or {}
    header_kind = str(header.get("format", "")).lower()
    named = meta_templates.parameter_format(template) == "NAMED"
    recipients = []
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        recipients.append(_csv_recipient(row, template, header_kind, named))
    if not recipients:
        raise errors.OutboundError("The CSV has no rows.")
    order = notifications.NotificationOrder(
        number=number,
        template=template,
        purpose=purpose,
        parameters={},
        team=team,
        created_by=created_by,
    )
    with transaction.atomic():
        return send_notifications(
            order=order,
            recipients=recipients,
            source=NotificationBatch.Source.CSV,
            name=name,
        )


def _csv_recipient(
    row: dict, template: MessageTemplate, header_kind: str, named: bool
) -> dict:
    """A CSV row as a recipient: its customer, parameters and reference, or
    why it is refused."""
    body_columns = sorted(
        (k for k in row if k.startswith("body_") and row[k]),
        key=lambda k: (len(k), k),
    )
    parameters: dict = {}
    if named:
        parameters["body"] = {k[5:]: row[k] for k in body_columns}
    elif body_columns:
        parameters["body"] = [row[k] for k in body_columns]
    if row.get("header_link") and header_kind in {"image", "video", "document"}:
        media = {"link": row["header_link"]}
        if header_kind == "document" and row.get("document_filename"):
            media["filename"] = row["document_filename"]
        parameters["header"] = {header_kind: media}
    elif row.get("header"):
        parameters["header"] = row["header"]
    item = {
        "to": row.get("phone", ""),
        "user_id": row.get("user_id", ""),
        "reference": row.get("reference", ""),
    }
    if bool(item["to"]) == bool(item["user_id"]):
        item["parameters"] = parameters
        item["refusal"] = {
            "code": errors.InvalidRecipient.code,
            "detail": "Give exactly one of phone and user_id in each row.",
        }
        return item
    try:
        item["parameters"] = notifications.notification_parameters(
            template, parameters, None
        )
    except errors.OutboundError as error:
        item["parameters"] = parameters
        item["refusal"] = {"code": error.code, "detail": error.detail}
    return item
