"""Every business action of the helpdesk, one verb function each.

Views, consumers, tasks, admin actions, management commands and the API all
call these; they receive valid domain values and raise domain errors.
"""

import base64
import csv
import functools
import hashlib
import hmac
import io
import json
import logging
import mimetypes
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, Value, When
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django.utils import timezone

from accounts.models import LiveTab, Team, User

from . import billing, callbacks, delivery, realtime, tasks, windows
from .models import (
    AccountNotice,
    CallbackDelivery,
    CallbackEndpoint,
    ConsentRecord,
    Conversation,
    Customer,
    Label,
    Message,
    MessageCharge,
    MessageTemplate,
    MetaApp,
    Note,
    Notification,
    NotificationBatch,
    ParkedStatus,
    Reaction,
    WebhookEvent,
    WhatsAppNumber,
)
from .whatsapp import client, payloads


@transaction.atomic
def add_whatsapp_number(
    *,
    phone_number_id: str,
    display_phone_number: str,
    waba_id: str,
    access_token: str,
    app_secret: str,
    verify_token: str,
    name: str = "",
    throughput: int = 80,
    app_id: str = "",
) -> tuple[WhatsAppNumber, bool]:
    """Add a number, or update the one with this phone-number id.

    Numbers given the same app id share that Meta app's secret and verify
    token, the latest call's values winning. Without an app id a new number
    gets an app of its own, and an existing number keeps its app.
    Return the number and whether it was created.
    """
    number = (
        WhatsAppNumber.objects.select_for_update()
        .select_related("app")
        .filter(phone_number_id=phone_number_id)
        .first()
    )
    if app_id:
        app, _ = MetaApp.objects.select_for_update().get_or_create(
            app_id=app_id, defaults={"name": f"Meta app {app_id}"}
        )
    elif number is not None:
        app = number.app
    else:
        app = MetaApp(name=name or display_phone_number)
    app.app_secret = app_secret
    app.verify_token = verify_token
    app.full_clean()
    app.save()

    created = number is None
    if created:
        number = WhatsAppNumber(phone_number_id=phone_number_id)
    number.app = app
    number.name = name or number.name or display_phone_number
    number.display_phone_number = display_phone_number
    number.waba_id = waba_id
    number.access_token = access_token
    number.throughput = throughput
    number.full_clean()
    number.save()
    return number, created


# --- Inbound: webhook events become customers, conversations and messages -----
#
# Meta redelivers, batches and reorders (doc §2.3, §2.4), so every function
# here is idempotent: messages are inserted against the unique wamid (never
# checked first), customers and conversations lean on their unique
# constraints, statuses only move forward, and a whole event is processed in
# one transaction with its row locked, so two workers handed the same event
# process it once.

logger = logging.getLogger(__name__)

# Attempts after which the sweeper leaves a failed event to an admin.
WEBHOOK_MAX_ATTEMPTS = 8
# Biggest file Meta delivers per kind (doc §3.5); stickers by animation.
MEDIA_MAX_BYTES = {
    "audio": 16 * 1024 * 1024,
    "document": 100 * 1024 * 1024,
    "image": 5 * 1024 * 1024,
    "video": 16 * 1024 * 1024,
    "sticker": 500 * 1024,
}
STATIC_STICKER_MAX_BYTES = 100 * 1024
_E164_DIGITS = re.compile(r"^[1-9]\d{6,14}$")
_CALLBACK_ID = re.compile(r"^(?:message:)?(\d{1,18})$")


class DuplicateMessage(Exception):
    """The wamid is stored already: Meta redelivered the message."""


def webhook_retry_delay(attempts: int) -> timedelta:
    """Return how long a failed event waits before its next attempt."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def process_webhook_event(*, event_id: int, force: bool = False) -> WebhookEvent:
    """Process one stored webhook POST: every item in it, in Meta's order.

    The event ends processed, malformed (not Meta's JSON: kept, never
    retried), unroutable (some items name a number or field the helpdesk does
    not handle: what could be processed was, the rest is listed in
    last_error) or, when an exception escapes, failed with attempts counted
    and the exception re-raised for the task's retry policy. Events already
    processed or malformed are left alone unless ``force`` is set.
    """
    try:
        with transaction.atomic():
            # The row lock makes a second worker handed the same event wait,
            # then find it processed.
            event = WebhookEvent.objects.select_for_update().get(pk=event_id)
            done = {WebhookEvent.State.PROCESSED, WebhookEvent.State.MALFORMED}
            if event.state in done and not force:
                return event
            try:
                batch = payloads.parse(bytes(event.body))
            except payloads.MalformedPayload as exc:
                _finish_event(event, WebhookEvent.State.MALFORMED, str(exc))
                return event
            # The batch's live events go out in one INSERT.
            with realtime.batched():
                problems = _process_batch(batch, received_at=event.received_at)
            state = (
                WebhookEvent.State.UNROUTABLE
                if problems
                else WebhookEvent.State.PROCESSED
            )
            _finish_event(event, state, "\n".join(problems))
            return event
    except WebhookEvent.DoesNotExist:
        raise
    except Exception as exc:
        _record_event_failure(event_id, exc)
        raise


def _finish_event(event: WebhookEvent, state: str, error: str) -> None:
    event.state = state
    event.last_error = error
    event.processed_at = timezone.now()
    event.next_attempt_at = None
    event.save(update_fields=["state", "last_error", "processed_at", "next_attempt_at"])


def _record_event_failure(event_id: int, exc: Exception) -> None:
    """Count a failed attempt on the event in a transaction of its own."""
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.select_for_update().get(pk=event_id)
            event.attempts += 1
            event.state = WebhookEvent.State.FAILED
            event.last_error = f"{type(exc).__name__}: {exc}"[:4000]
            event.next_attempt_at = timezone.now() + webhook_retry_delay(event.attempts)
            event.save(
                update_fields=["attempts", "state", "last_error", "next_attempt_at"]
            )
    except Exception:
        # The database itself may be what failed; the sweeper retries pending
        # and failed rows alike.
        logger.warning("Could not record failure of event %s", event_id, exc_info=True)


def _process_batch(batch: payloads.WebhookBatch, *, received_at: datetime) -> list[str]:
    """Hand every item to its service; return what could not be handled."""
    # Every number the batch names, by phone-number id or by WABA, in one query.
    phone_number_ids = set(batch.phone_number_ids)
    waba_ids = {item.waba_id for item in batch.items if getattr(item, "waba_id", "")}
    by_id: dict[str, WhatsAppNumber] = {}
    by_waba: dict[str, list[WhatsAppNumber]] = {}
    if phone_number_ids or waba_ids:
        for number in WhatsAppNumber.objects.filter(
            Q(phone_number_id__in=phone_number_ids) | Q(waba_id__in=waba_ids)
        ):
            if number.phone_number_id in phone_number_ids:
                by_id[number.phone_number_id] = number
            if number.waba_id in waba_ids:
                by_waba.setdefault(number.waba_id, []).append(number)

    problems: list[str] = []
    for item in batch.items:
        if isinstance(item, payloads.UnparsableItem):
            problems.append(f"Unreadable {item.kind}: {item.error}")
            continue
        if isinstance(item, payloads.UnhandledChange):
            problems.append(f"Unhandled change field {item.field!r}")
            continue
        phone_number_id = getattr(item, "phone_number_id", None)
        if phone_number_id is not None:
            number = by_id.get(phone_number_id)
            if number is None:
                problems.append(
                    f"Unknown phone_number_id {phone_number_id!r} "
                    f"({type(item).__name__})"
                )
                continue
        elif item.waba_id in by_waba:
            number = None
        else:
            problems.append(f"Unknown WABA {item.waba_id!r} ({type(item).__name__})")
            continue

        if isinstance(item, payloads.InboundMessage):
            receive_message(number=number, message=item, received_at=received_at)
        elif isinstance(item, payloads.StatusUpdate):
            update_message_status(number=number, status=item)
        elif isinstance(item, payloads.AccountError):
            record_account_error(number=number, error=item, received_at=received_at)
        elif isinstance(item, payloads.UserPreferenceUpdate):
            record_user_preference(number=number, update=item)
        elif isinstance(item, payloads.TemplateStatusUpdate):
            record_template_status(update=item)
        elif isinstance(item, payloads.TemplateCategoryUpdate):
            record_template_category(update=item)
        elif isinstance(item, payloads.TemplateQualityUpdate):
            record_template_quality(update=item, received_at=received_at)
        elif isinstance(item, payloads.PhoneNumberQualityUpdate):
            record_phone_number_quality(
                numbers=by_waba[item.waba_id], update=item, received_at=received_at
            )
        elif isinstance(item, payloads.AccountUpdate):
            record_account_update(
                numbers=by_waba[item.waba_id], update=item, received_at=received_at
            )
        else:  # a new item class in payloads.py: keep it visible
            problems.append(f"No handler for {type(item).__name__}")
    return problems


# --- Customers and conversations ------------------------------------------------


def find_or_create_customer(
    *,
    wa_id: str,
    user_id: str,
    profile_name: str = "",
    username: str = "",
    country_code: str = "",
) -> Customer:
    """Return the customer with this wa_id or BSUID, creating one if neither matches.

    Either id may be empty. When both match different customers the wa_id's
    wins. Missing ids are filled in, and the profile name is refreshed; the
    agent-set ``name`` is never touched. Safe under concurrency: the unique
    constraints decide, and a lost race reads the winner's row.
    """
    if not (wa_id or user_id):
        raise ValueError("A customer needs a wa_id or a user id.")
    for _ in range(5):
        by_wa = Customer.objects.filter(wa_id=wa_id).first() if wa_id else None
        by_user = Customer.objects.filter(user_id=user_id).first() if user_id else None
        customer = by_wa or by_user
        try:
            with transaction.atomic():
                if customer is None:
                    return Customer.objects.create(
                        wa_id=wa_id,
                        user_id=user_id,
                        phone=f"+{wa_id}" if _E164_DIGITS.match(wa_id) else "",
                        profile_name=profile_name,
                        username=username,
                        country_code=country_code,
                    )
                changed = []
                if wa_id and not customer.wa_id:
                    customer.wa_id = wa_id
                    changed.append("wa_id")
                    if not customer.phone and _E164_DIGITS.match(wa_id):
                        customer.phone = f"+{wa_id}"
                        changed.append("phone")
                # The BSUID may belong to another row (both matched): leave it.
                if user_id and not customer.user_id and by_user is None:
                    customer.user_id = user_id
                    changed.append("user_id")
                for field_name, value in (
                    ("profile_name", profile_name),
                    ("username", username),
                    ("country_code", country_code),
                ):
                    if value and getattr(customer, field_name) != value:
                        setattr(customer, field_name, value)
                        changed.append(field_name)
                if changed:
                    customer.save(update_fields=[*changed, "updated_at"])
                return customer
        except IntegrityError:
            # Another worker created or re-keyed the row first: read it.
            continue
    raise IntegrityError(
        f"Could not settle customer wa_id={wa_id!r} user_id={user_id!r}"
    )


def _upsert_customer(
    *, wa_id: str, profile_name: str, username: str, country_code: str
) -> tuple[Customer, bool]:
    """find_or_create_customer for a message that names a wa_id and no BSUID,
    in one statement; return the customer and whether it was created.

    The wa_id's unique index decides (so concurrent messages from a new
    customer make one row), and the profile fields are refreshed the same
    way: non-empty values win, ``updated_at`` moves only when one changed.
    """
    now = timezone.now()
    table = Customer._meta.db_table
    columns = [field.column for field in Customer._meta.concrete_fields]
    refreshed = ("profile_name", "username", "country_code")
    changed = " OR ".join(
        f"(excluded.{name} <> '' AND excluded.{name} <> {table}.{name})"
        for name in refreshed
    )
    sets = [
        f"{name} = CASE WHEN excluded.{name} <> '' THEN excluded.{name}"
        f" ELSE {table}.{name} END"
        for name in refreshed
    ]
    sets.append(
        f"updated_at = CASE WHEN {changed} THEN excluded.updated_at"
        f" ELSE {table}.updated_at END"
    )
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    sql = (
        f"INSERT INTO {table} (wa_id, user_id, phone, profile_name, name,"  # noqa: S608
        " username, country_code, created_at, updated_at)"
        " VALUES (%s, '', %s, %s, '', %s, %s, %s, %s)"
        " ON CONFLICT (wa_id) WHERE NOT (wa_id = '') DO UPDATE SET "
        + ", ".join(sets)
        + " RETURNING "
        + ", ".join(columns)
    )
    phone = f"+{wa_id}" if _E164_DIGITS.match(wa_id) else ""
    params = [wa_id, phone, profile_name, username, country_code, stamp, stamp]
    customer = next(iter(Customer.objects.raw(sql, params)))
    return customer, customer.created_at == now


def _customer_for(message: payloads.InboundMessage) -> tuple[Customer, bool]:
    """The message's customer and whether this call created it (as far as known)."""
    contact = message.contact
    username = contact.username if contact else ""
    country_code = contact.country_code if contact else ""
    if message.wa_id and not message.user_id:
        return _upsert_customer(
            wa_id=message.wa_id,
            profile_name=message.profile_name,
            username=username,
            country_code=country_code,
        )
    # Two ids that may match two rows: the general, multi-statement path.
    customer = find_or_create_customer(
        wa_id=message.wa_id,
        user_id=message.user_id,
        profile_name=message.profile_name,
        username=username,
        country_code=country_code,
    )
    return customer, False


def _insert_or_ignore(obj) -> bool:
    """INSERT a new model instance unless a unique constraint already holds
    its values; set its pk and return True if it was inserted.

    One statement (ON CONFLICT DO NOTHING / INSERT OR IGNORE ... RETURNING),
    so a conflict needs no savepoint and leaves the transaction usable.
    """
    opts = obj._meta
    fields = [
        field
        for field in opts.local_concrete_fields
        if not field.generated and field is not opts.auto_field
    ]
    query = InsertQuery(type(obj), on_conflict=OnConflict.IGNORE)
    query.insert_values(fields, [obj])
    compiler = query.get_compiler(using=obj._state.db or "default")
    compiler.returning_fields = [opts.pk]
    [(sql, params)] = compiler.as_sql()
    with compiler.connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = compiler.using
    return True


# Unresolved conversations first (at most one), then the latest resolved.
_CONVERSATION_TO_JOIN = (
    Case(When(status=Conversation.Status.RESOLVED, then=Value(1)), default=Value(0)),
    F("resolved_at").desc(nulls_last=True),
    "-id",
)


def _conversation_for(
    *, customer: Customer, number: WhatsAppNumber, at: datetime, new_customer: bool
):
    """Return the conversation a customer's message joins, what happened, and
    how to undo it.

    The unresolved one on that number; else the latest resolved one, reopened,
    if it was resolved within CONVERSATION_REOPEN_HOURS of the message; else a
    new one. The second value is the live event to publish (None, created or
    updated); the third undoes a creation or reopening (for a message that
    turns out to be stored already), or is None. A customer created just now
    has no conversation, so that lookup is skipped.
    """
    window = timedelta(hours=settings.CONVERSATION_REOPEN_HOURS)
    for _ in range(5):
        latest = None
        if not new_customer:
            latest = (
                Conversation.objects.select_for_update()
                .filter(customer=customer, number=number)
                .order_by(*_CONVERSATION_TO_JOIN)
                .first()
            )
        if latest is not None and latest.status != Conversation.Status.RESOLVED:
            return latest, None, None
        if (
            latest is not None
            and latest.resolved_at is not None
            and at <= latest.resolved_at + window
        ):
            resolved_at = latest.resolved_at
            try:
                with transaction.atomic():
                    latest.status = Conversation.Status.OPEN
                    latest.resolved_at = None
                    latest.save(update_fields=["status", "resolved_at", "updated_at"])
            except IntegrityError:
                # A concurrent message opened one first; join it.
                new_customer = False
                continue

            def reopen_undo(conversation=latest, resolved_at=resolved_at):
                Conversation.objects.filter(pk=conversation.pk).update(
                    status=Conversation.Status.RESOLVED, resolved_at=resolved_at
                )

            return latest, realtime.CONVERSATION_UPDATED, reopen_undo
        conversation = Conversation(customer=customer, number=number)
        if _insert_or_ignore(conversation):

            def create_undo(conversation=conversation):
                Conversation.objects.filter(pk=conversation.pk).delete()

            return conversation, realtime.CONVERSATION_CREATED, create_undo
        # A concurrent message opened one first (it waited for that commit).
        new_customer = False
    raise IntegrityError(f"Could not settle a conversation for customer {customer.pk}")


def _touch_conversation(
    conversation: Conversation, message: Message, *, inbound: bool
) -> None:
    """Move the denormalised last-message fields forward in Meta's time.

    One conditional UPDATE, so concurrent or out-of-order messages converge
    on the newest; never backwards.
    """
    now = timezone.now()
    at = message.timestamp
    if not inbound:
        Conversation.objects.filter(pk=conversation.pk).filter(
            Q(last_message_at__isnull=True) | Q(last_message_at__lte=at)
        ).update(last_message=message, last_message_at=at, updated_at=now)
        return
    # Hand-written: the ORM spends longer compiling this statement as
    # Case/When expressions than the database takes to run it.
    adapt = connection.ops.adapt_datetimefield_value
    newer = "(last_message_at IS NULL OR last_message_at <= %s)"
    sql = (
        f"UPDATE {Conversation._meta.db_table} SET"  # noqa: S608
        f" last_message_id = CASE WHEN {newer} THEN %s ELSE last_message_id END,"
        f" last_message_at = CASE WHEN {newer} THEN %s ELSE last_message_at END,"
        f" updated_at = CASE WHEN {newer} THEN %s ELSE updated_at END,"
        " last_inbound_at = CASE WHEN last_inbound_at IS NULL OR last_inbound_at < %s"
        " THEN %s ELSE last_inbound_at END,"
        " unread_count = unread_count + 1"
        " WHERE id = %s"
    )
    at, now = adapt(at), adapt(now)
    params = [at, message.pk, at, at, at, now, at, at, conversation.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# --- Inbound messages ---------------------------------------------------------------


def receive_message(
    *,
    number: WhatsAppNumber,
    message: payloads.InboundMessage,
    received_at: datetime | None = None,
) -> Message | None:
    """Store a customer's message; return it, or None if it was known already.

    Finds or creates the customer and the conversation, links replies,
    records a click-to-WhatsApp referral on the conversation, queues media
    downloads and publishes the live events. Reactions land on the message
    they react to; system messages re-key the customer as well. A redelivered
    wamid is ignored by the insert, and the conversation or customer this
    call opened for it is removed again (a refreshed profile name stays).
    """
    at = message.timestamp or received_at or timezone.now()
    if message.type == "reaction" and message.reaction is not None:
        if _receive_reaction(number=number, message=message, at=at):
            return None
    try:
        return _store_inbound(number=number, message=message, at=at)
    except DuplicateMessage:
        return None


def _store_inbound(
    *, number: WhatsAppNumber, message: payloads.InboundMessage, at: datetime
) -> Message:
    # For a known customer writing into an open conversation this is four
    # statements (customer, conversation, message, conversation's fields),
    # plus the live events that the batch writes together; a new customer
    # costs the same. No savepoints: conflicts are absorbed by the inserts.
    customer, new_customer = _customer_for(message)
    conversation, conversation_event, undo = _conversation_for(
        customer=customer, number=number, at=at, new_customer=new_customer
    )
    context = message.context
    reply_to = None
    if context and context.message_id:
        reply_to = (
            Message.objects.filter(
                wamid=context.message_id, conversation__number=number
            )
            .only("pk")
            .first()
        )
    media = message.media
    if message.is_supported:
        payload = dict(message.payload)
    else:
        # Unknown and unsupported types keep the whole message for later.
        payload = dict(message.raw)
    row = Message(
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        type=message.type or "unknown",
        text=message.text,
        payload=payload,
        wamid=message.wamid,
        status=Message.Status.RECEIVED,
        timestamp=at,
        error=message.error.as_dict() if message.error else None,
        reply_to=reply_to,
        context_wamid=context.message_id if context else "",
        forwarded=bool(context and context.forwarded),
        frequently_forwarded=bool(context and context.frequently_forwarded),
        referral=dict(message.referral.raw) if message.referral else None,
    )
    if media is not None and media.id:
        row.media_id = media.id
        row.media_mime_type = media.mime_type
        row.media_filename = media.filename
        row.media_state = Message.MediaState.PENDING
    if not _insert_or_ignore(row):
        if not Message.objects.filter(wamid=message.wamid).exists():
            raise IntegrityError(f"Message {message.wamid!r} could not be stored")
        # Stored already (a redelivery): leave no trace of this call.
        if undo is not None:
            undo()
        if new_customer:
            Customer.objects.filter(pk=customer.pk).delete()
        raise DuplicateMessage(message.wamid)

    if message.referral is not None:
        referral = message.referral
        conversation.referral = dict(referral.raw)
        conversation.referral_source_id = referral.source_id[:128]
        conversation.referral_ctwa_clid = referral.ctwa_clid[:512]
        conversation.save(
            update_fields=[
                "referral",
                "referral_source_id",
                "referral_ctwa_clid",
                "updated_at",
            ]
        )
        if conversation_event is None:
            conversation_event = realtime.CONVERSATION_UPDATED
    if message.system is not None:
        _apply_system_change(customer, message.system)

    _touch_conversation(conversation, row, inbound=True)
    # STOP and the marketing opt-out button (business section below).
    _opt_out_by_message(customer, row)
    if conversation_event is not None:
        realtime.publish(conversation_event, conversation=conversation)
    realtime.publish(realtime.MESSAGE_CREATED, conversation=conversation, message=row)
    if row.media_state == Message.MediaState.PENDING:
        transaction.on_commit(lambda: _queue_media_download(row.pk))
    return row


def _queue_media_download(message_id: int) -> None:
    try:
        tasks.download_media.delay(message_id)
    except Exception:
        # The media sweeper (pending rows) tries again later.
        logger.warning("Media download for message %s not queued", message_id)


def _apply_system_change(customer: Customer, change: payloads.SystemChange) -> None:
    """Re-key the customer after a number or user-id change; history stays."""
    if change.type == "user_changed_number" and change.new_wa_id:
        if customer.wa_id == change.new_wa_id:
            return
        if Customer.objects.filter(wa_id=change.new_wa_id).exists():
            logger.warning(
                "Customer %s changed number to one another customer has",
                customer.pk,
            )
            return
        customer.wa_id = change.new_wa_id
        fields = ["wa_id", "updated_at"]
        if _E164_DIGITS.match(change.new_wa_id):
            customer.phone = f"+{change.new_wa_id}"
            fields.append("phone")
        customer.save(update_fields=fields)
    elif change.type == "user_changed_user_id" and change.new_user_id:
        if customer.user_id == change.new_user_id:
            return
        if Customer.objects.filter(user_id=change.new_user_id).exists():
            logger.warning(
                "Customer %s changed user id to one another customer has",
                customer.pk,
            )
            return
        customer.user_id = change.new_user_id
        customer.save(update_fields=["user_id", "updated_at"])


def _receive_reaction(
    *, number: WhatsAppNumber, message: payloads.InboundMessage, at: datetime
) -> bool:
    """Put a customer's reaction on its message; False if that message is unknown.

    A missing or empty emoji removes the reaction. A reaction older than the
    one stored (a late redelivery) changes nothing.
    """
    reaction = message.reaction
    target = (
        Message.objects.select_for_update()
        .filter(wamid=reaction.message_id, conversation__number=number)
        .select_related("conversation")
        .first()
    )
    if target is None:
        return False
    current = Reaction.objects.filter(
        message=target, direction=Message.Direction.INBOUND
    ).first()
    if current is not None and current.reacted_at > at:
        return True
    if current is not None and (
        current.emoji == reaction.emoji and current.wamid == message.wamid
    ):
        return True
    if current is None:
        current = Reaction(message=target, direction=Message.Direction.INBOUND)
    current.emoji = reaction.emoji
    current.wamid = message.wamid
    current.reacted_at = at
    # The target's row lock serialises reactions on one message.
    current.save()
    realtime.publish(
        realtime.MESSAGE_UPDATED,
        conversation=target.conversation,
        message=target,
        data={"reaction": reaction.emoji},
    )
    return True


# --- Status updates ---------------------------------------------------------------


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


# --- Templates, numbers and accounts -----------------------------------------------


@transaction.atomic
def record_template_status(*, update: payloads.TemplateStatusUpdate) -> MessageTemplate:
    """Mirror Meta's template review result; create the template if unknown."""
    reason = " ".join(
        part
        for part in (
            update.reason if update.reason not in ("", "NONE") else "",
            update.rejection_reason,
            update.rejection_recommendation,
            update.other_info_title,
            update.other_info_description,
        )
        if part
    )
    template = _template_for(update)
    template.status = update.event[:20]
    template.status_reason = reason
    if update.message_template_category and not template.category:
        template.category = update.message_template_category[:20]
    if update.message_template_id:
        template.template_id = update.message_template_id
    template.save()
    return template


def _template_for(update) -> MessageTemplate:
    template = None
    if update.message_template_id:
        template = MessageTemplate.objects.filter(
            waba_id=update.waba_id, template_id=update.message_template_id
        ).first()
    if template is None:
        template, _ = MessageTemplate.objects.get_or_create(
            waba_id=update.waba_id,
            name=update.message_template_name,
            language=update.message_template_language,
            defaults={
                "template_id": update.message_template_id,
                "category": getattr(update, "message_template_category", "")[:20],
                "status": MessageTemplate.Status.PENDING,
            },
        )
    return template


@transaction.atomic
def record_template_category(
    *, update: payloads.TemplateCategoryUpdate
) -> MessageTemplate:
    """Follow Meta's re-categorisation of a template."""
    template = _template_for(update)
    if update.new_category:
        template.category = update.new_category[:20]
        template.save(update_fields=["category", "updated_at"])
    return template


def record_template_quality(
    *, update: payloads.TemplateQualityUpdate, received_at: datetime
) -> AccountNotice:
    """Record a template's quality score change for admins."""
    return AccountNotice.objects.create(
        kind="message_template_quality_update",
        event=update.new_quality_score[:60],
        waba_id=update.waba_id,
        summary=(
            f"Template {update.message_template_name} "
            f"({update.message_template_language}): quality "
            f"{update.previous_quality_score or '?'} → {update.new_quality_score}"
        ),
        raw=dict(update.raw),
        occurred_at=update.time or received_at,
    )


def record_phone_number_quality(
    *,
    numbers: list[WhatsAppNumber],
    update: payloads.PhoneNumberQualityUpdate,
    received_at: datetime,
) -> AccountNotice:
    """Store a number's messaging limit and quality event; note it for admins.

    The webhook names the number by its display number within the WABA.
    """
    digits = re.sub(r"\D", "", update.display_phone_number)
    matching = [
        number
        for number in numbers
        if re.sub(r"\D", "", number.display_phone_number) == digits
    ]
    at = update.time or received_at
    limit = update.current_limit or update.max_daily_conversations_per_business
    rating = str(update.raw.get("quality_rating") or "")
    for number in matching:
        if number.quality_updated_at and number.quality_updated_at > at:
            continue
        number.quality_event = update.event[:40]
        if limit:
            number.messaging_limit = limit[:40]
        if rating:
            number.quality_rating = rating[:20]
        number.quality_updated_at = at
        number.save(
            update_fields=[
                "quality_event",
                "messaging_limit",
                "quality_rating",
                "quality_updated_at",
                "updated_at",
            ]
        )
    return AccountNotice.objects.create(
        kind="phone_number_quality_update",
        event=update.event[:60],
        waba_id=update.waba_id,
        number=matching[0] if matching else None,
        summary=(
            f"{update.display_phone_number}: {update.event}"
            + (f", limit {update.old_limit or '?'} → {limit}" if limit else "")
        ),
        raw=dict(update.raw),
        occurred_at=at,
    )


def record_account_update(
    *,
    numbers: list[WhatsAppNumber],
    update: payloads.AccountUpdate,
    received_at: datetime,
) -> AccountNotice:
    """Record a violation, ban, restriction or other account event for admins."""
    details = [
        detail
        for detail in (
            update.ban_state and f"ban {update.ban_state} {update.ban_date}".strip(),
            update.violation_type and f"violation {update.violation_type}",
            *(
                f"restriction {item.get('restriction_type', '')} "
                f"until {item.get('expiration', '?')}"
                for item in update.restrictions
            ),
        )
        if detail
    ]
    digits = re.sub(r"\D", "", update.phone_number)
    number = next(
        (
            number
            for number in numbers
            if digits and re.sub(r"\D", "", number.display_phone_number) == digits
        ),
        None,
    )
    return AccountNotice.objects.create(
        kind="account_update",
        event=update.event[:60],
        waba_id=update.waba_id,
        number=number,
        summary=f"{update.event}: {'; '.join(details)}" if details else update.event,
        raw=dict(update.raw),
        occurred_at=update.time or received_at,
    )


def record_account_error(
    *, number: WhatsAppNumber, error: payloads.AccountError, received_at: datetime
) -> AccountNotice:
    """Record a system or account error Meta reported outside any message."""
    meta_error = error.error
    return AccountNotice.objects.create(
        kind="errors",
        event=str(meta_error.code or "")[:60],
        waba_id=error.waba_id,
        number=number,
        summary=" — ".join(
            part for part in (meta_error.title, meta_error.details) if part
        ),
        raw=dict(error.raw),
        occurred_at=received_at,
    )


def record_user_preference(
    *, number: WhatsAppNumber, update: payloads.UserPreferenceUpdate
) -> ConsentRecord | None:
    """Record a customer stopping or resuming marketing messages in WhatsApp."""
    if update.value not in ("stop", "resume"):
        logger.info("Ignoring user preference %r", update.value)
        return None
    customer = find_or_create_customer(wa_id=update.wa_id, user_id=update.user_id)
    return ConsentRecord.objects.create(
        customer=customer,
        purpose=ConsentRecord.Purpose.MARKETING,
        status=(
            ConsentRecord.Status.OPT_OUT
            if update.value == "stop"
            else ConsentRecord.Status.OPT_IN
        ),
        source=ConsentRecord.Source.WHATSAPP,
        wording=update.detail or f"Marketing messages: {update.value} (in WhatsApp)",
    )


# --- Inbound media ---------------------------------------------------------------


class MediaTemporarilyUnavailable(Exception):
    """Meta could not be reached or asked to try later; the task retries."""


def _media_limit(message: Message) -> int:
    if message.type == "sticker" and not message.payload.get("animated"):
        return STATIC_STICKER_MAX_BYTES
    return MEDIA_MAX_BYTES.get(message.type, MEDIA_MAX_BYTES["document"])


def _sha256_matches(data: bytes, expected: str) -> bool:
    """Compare Meta's sha256 as hex or as base64 (the encoding is unstated, §3.5)."""
    digest = hashlib.sha256(data).digest()
    expected = expected.strip()
    return expected.lower() == digest.hex() or expected == base64.b64encode(
        digest
    ).decode("ascii")


def _fetch_media(
    number: WhatsAppNumber, media_id: str, limit: int
) -> tuple[bytes, client.MediaInfo]:
    """Look the media id up and download it; once more with a fresh URL on 404."""
    for attempt in range(2):
        info = client.retrieve_media(number, media_id)
        if info.file_size is not None and info.file_size > limit:
            raise client.MediaTooLarge(
                f"The file is {info.file_size} bytes, over the {limit} allowed"
            )
        try:
            return client.download_media(number, info.url, max_bytes=limit), info
        except client.MediaTooLarge:
            raise
        except client.GraphAPIError as error:
            # Media URLs expire after 5 minutes; a 404 asks for a fresh one.
            if error.http_status == 404 and attempt == 0:
                continue
            raise
    raise AssertionError("unreachable")


def download_media(*, message_id: int) -> Message | None:
    """Download an inbound message's media from Meta and store it.

    Checks the size allowed for its kind and the SHA-256 the webhook gave;
    a refusal marks the message's media failed with the reason. Raise
    MediaTemporarilyUnavailable when trying again later may help.
    """
    message = (
        Message.objects.select_related("conversation__number")
        .filter(pk=message_id)
        .first()
    )
    if message is None or message.media_state != Message.MediaState.PENDING:
        return message
    number = message.conversation.number
    try:
        data, info = _fetch_media(number, message.media_id, _media_limit(message))
    except client.MediaTooLarge as error:
        return fail_media(message_id=message_id, reason=f"Too large: {error}")
    except client.AcceptedButUnknown as error:
        raise MediaTemporarilyUnavailable(error.message) from error
    except client.GraphAPIError as error:
        if error.retryable or error.is_transient:
            raise MediaTemporarilyUnavailable(str(error)) from error
        return fail_media(
            message_id=message_id, reason=f"Meta refused the download: {error}"
        )
    expected = str(message.payload.get("sha256") or "") or info.sha256
    if expected and not _sha256_matches(data, expected):
        return fail_media(
            message_id=message_id,
            reason="The downloaded file does not match the SHA-256 Meta sent",
        )
    mime_type = message.media_mime_type or info.mime_type
    with transaction.atomic():
        locked = (
            Message.objects.select_for_update()
            .select_related("conversation")
            .get(pk=message_id)
        )
        if locked.media_state != Message.MediaState.PENDING:
            return locked  # another worker stored it meanwhile
        _keep_media(locked, data, mime_type)
        locked.save(
            update_fields=[
                "media_file",
                "media_size",
                "media_sha256",
                "media_mime_type",
                "media_state",
                "updated_at",
            ]
        )
        realtime.publish(
            realtime.MESSAGE_UPDATED,
            conversation=locked.conversation,
            message=locked,
            data={"media": "stored"},
        )
    return locked


def _keep_media(message: Message, data: bytes, mime_type: str) -> None:
    """Store a message's media file and what is known of it (not saved yet)."""
    extension = mimetypes.guess_extension(mime_type.split(";")[0].strip()) or ""
    # A random name: the sender's file name lives only in the database.
    message.media_file.save(
        f"{uuid.uuid4().hex}{extension}", ContentFile(data), save=False
    )
    message.media_size = len(data)
    message.media_sha256 = hashlib.sha256(data).hexdigest()
    message.media_mime_type = mime_type
    message.media_state = Message.MediaState.STORED


def fail_media(*, message_id: int, reason: str) -> Message | None:
    """Mark a message's media as not downloadable, saying why."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .select_related("conversation")
            .filter(pk=message_id)
            .first()
        )
        if message is None or message.media_state != Message.MediaState.PENDING:
            return message
        message.media_state = Message.MediaState.FAILED
        message.error = {
            **(message.error or {}),
            "media": reason[:1000],
        }
        message.save(update_fields=["media_state", "error", "updated_at"])
        realtime.publish(
            realtime.MESSAGE_UPDATED,
            conversation=message.conversation,
            message=message,
            data={"media": "failed"},
        )
    return message


# --- Agent workspace: assignment, status, labels, notes, availability ------------


class WorkspaceError(Exception):
    """An agent's action the rules refuse; `code` is stable, the text readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_UNCHANGED = object()


def agent_may_see_number(user: User, number_id: int) -> bool:
    """Whether an agent may see (and act on) a number's conversations."""
    return WhatsAppNumber.objects.visible_to(user).filter(pk=number_id).exists()


def visible_number_ids(user: User) -> set[int]:
    """The inboxes an agent may see, as ids: all for admins, else their teams'."""
    return set(WhatsAppNumber.objects.visible_to(user).values_list("pk", flat=True))


@transaction.atomic
def assign_conversation(
    *,
    conversation: Conversation,
    by: User,
    assignee: User | None | object = _UNCHANGED,
    team: Team | None | object = _UNCHANGED,
) -> Conversation:
    """Give a conversation to an agent and/or a team (None takes it away).

    The agent must be able to see the conversation's number, and the team
    must be one the number is open to.
    """
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    fields = []
    if assignee is not _UNCHANGED:
        if assignee is not None and not (
            assignee.is_active
            and agent_may_see_number(assignee, conversation.number_id)
        ):
            raise WorkspaceError(
                "assignee_not_allowed",
                f"{assignee.name} cannot see this conversation's number.",
            )
        if conversation.assignee_id != (assignee.pk if assignee else None):
            conversation.assignee = assignee
            fields.append("assignee")
    if team is not _UNCHANGED:
        if (
            team is not None
            and not conversation.number.teams.filter(pk=team.pk).exists()
        ):
            raise WorkspaceError(
                "team_not_allowed", f"{team.name} does not work on this number."
            )
        if conversation.team_id != (team.pk if team else None):
            conversation.team = team
            fields.append("team")
    if fields:
        conversation.save(update_fields=[*fields, "updated_at"])
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={
                "change": "assignment",
                "assignee": conversation.assignee_id,
                "team": conversation.team_id,
                "by": by.pk,
            },
        )
    return conversation


@transaction.atomic
def change_status(
    *,
    conversation: Conversation,
    status: str,
    by: User | None,
    snoozed_until: datetime | None = None,
) -> Conversation:
    """Move a conversation to open, pending, snoozed (until a time) or resolved."""
    if status not in Conversation.Status.values:
        raise WorkspaceError("invalid_status", f"Unknown status {status!r}.")
    now = timezone.now()
    if status == Conversation.Status.SNOOZED:
        if snoozed_until is None or snoozed_until <= now:
            raise WorkspaceError("snooze_time", "Snoozing needs a time in the future.")
    else:
        snoozed_until = None
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if conversation.status == status and conversation.snoozed_until == snoozed_until:
        return conversation
    conversation.status = status
    conversation.snoozed_until = snoozed_until
    if status == Conversation.Status.RESOLVED:
        conversation.resolved_at = now
    try:
        with transaction.atomic():
            conversation.save(
                update_fields=["status", "snoozed_until", "resolved_at", "updated_at"]
            )
    except IntegrityError:
        raise WorkspaceError(
            "conversation_already_open",
            "The customer has another open conversation on this number.",
        ) from None
    realtime.publish(
        realtime.CONVERSATION_UPDATED,
        conversation=conversation,
        data={"change": "status", "status": status, "by": by.pk if by else None},
    )
    return conversation


def wake_snoozed_conversations(*, now: datetime | None = None) -> int:
    """Reopen snoozed conversations whose time has come; return how many."""
    now = now or timezone.now()
    woken = 0
    due = Conversation.objects.filter(
        status=Conversation.Status.SNOOZED, snoozed_until__lte=now
    ).values_list("pk", flat=True)[:500]
    for pk in list(due):
        with transaction.atomic():
            conversation = (
                Conversation.objects.select_for_update()
                .filter(pk=pk, status=Conversation.Status.SNOOZED)
                .first()
            )
            if conversation is not None:
                change_status(
                    conversation=conversation, status=Conversation.Status.OPEN, by=None
                )
                woken += 1
    return woken


@transaction.atomic
def add_note(*, conversation: Conversation, author: User, body: str) -> Note:
    """Leave a private note for colleagues; it never goes to WhatsApp."""
    body = body.strip()
    if not body:
        raise WorkspaceError("empty_note", "A note needs some text.")
    note = Note.objects.create(conversation=conversation, author=author, body=body)
    realtime.publish(
        realtime.NOTE_CREATED, conversation=conversation, data={"note": note.pk}
    )
    return note


@transaction.atomic
def set_labels(
    *, conversation: Conversation, labels: list[Label], by: User
) -> Conversation:
    """Replace a conversation's labels."""
    current = set(conversation.labels.values_list("pk", flat=True))
    wanted = {label.pk for label in labels}
    if current != wanted:
        conversation.labels.set(labels)
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=timezone.now()
        )
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={"change": "labels", "labels": sorted(wanted), "by": by.pk},
        )
    return conversation


@transaction.atomic
def rename_customer(*, customer: Customer, name: str, by: User) -> Customer:
    """Give a customer a name agents chose (webhooks never overwrite it)."""
    name = " ".join(name.split())[:256]
    if customer.name == name:
        return customer
    customer.name = name
    customer.save(update_fields=["name", "updated_at"])
    # Every recent conversation shows the name in its row and header.
    for conversation in customer.conversations.order_by("-created_at")[:20]:
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={"change": "customer", "customer": customer.pk, "by": by.pk},
        )
    return customer


def set_time_zone(*, user: User, time_zone: str) -> User:
    """Set the time zone (an IANA name the server knows) that an agent's
    pages show times in and read the times the agent types in."""
    if user.time_zone != time_zone:
        user.time_zone = time_zone
        user.save(update_fields=["time_zone"])
    return user


@transaction.atomic
def set_availability(*, user: User, availability: str) -> User:
    """Set an agent's availability (online, away, offline) for colleagues to see."""
    if availability not in User.Availability.values:
        raise WorkspaceError(
            "invalid_availability", f"Unknown availability {availability!r}."
        )
    if user.availability == availability:
        return user
    user.availability = availability
    user.availability_changed_at = timezone.now()
    user.save(update_fields=["availability", "availability_changed_at"])
    realtime.publish_agent(
        realtime.AGENT_UPDATED,
        number_ids=visible_number_ids(user),
        data={"agent": user.pk, "availability": availability},
    )
    return user


def open_tab(*, user: User, tab: str) -> None:
    """An agent opened the workspace in a tab (its socket, named `tab`)."""
    with transaction.atomic():
        LiveTab.objects.update_or_create(
            channel_name=tab,
            defaults={"user": user, "seen_at": timezone.now(), "closed_at": None},
        )
        settle_connection(user_id=user.pk)


def close_tab(*, user: User, tab: str) -> None:
    """A tab's socket closed. The agent goes offline with their last tab, but
    only once LIVE_TAB_GRACE_SECONDS have passed without a new one: opening
    a conversation loads a new page, whose tab replaces this one at once."""
    LiveTab.objects.filter(channel_name=tab).update(closed_at=timezone.now())
    transaction.on_commit(lambda: _queue_settle_connection(user.pk))


def _queue_settle_connection(user_id: int) -> None:
    try:
        tasks.settle_agent_connection.apply_async(
            (user_id,), countdown=settings.LIVE_TAB_GRACE_SECONDS + 1
        )
    except Exception:
        # The stale-tab sweep settles it a little later.
        logger.warning("Settling agent %s's connection not queued", user_id)


def keep_tabs_open(*, tabs) -> None:
    """A server process says these tabs of its are still connected."""
    LiveTab.objects.filter(channel_name__in=list(tabs)).update(seen_at=timezone.now())


def close_stale_tabs(*, now: datetime | None = None) -> int:
    """Close the tabs whose server stopped saying they are alive (it died
    without closing them), forget tabs closed past the grace period, and
    settle every agent shown as connected who no longer has a tab (their
    delayed settle was lost). Return how many tabs were forgotten."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LIVE_TAB_STALE_SECONDS)
    grace = now - timedelta(seconds=settings.LIVE_TAB_GRACE_SECONDS)
    gone = LiveTab.objects.filter(
        Q(closed_at__isnull=True, seen_at__lt=stale) | Q(closed_at__lt=grace)
    )
    user_ids = set(gone.values_list("user_id", flat=True))
    forgotten, _ = gone.delete()
    user_ids |= set(
        User.objects.filter(connected=True, live_tabs__isnull=True).values_list(
            "pk", flat=True
        )
    )
    for user_id in sorted(user_ids):
        settle_connection(user_id=user_id, now=now)
    return forgotten


@transaction.atomic
def settle_connection(*, user_id: int, now: datetime | None = None) -> None:
    """Make the agent's `connected` say whether they have a tab open (or
    closed one within the grace period); colleagues see a change live. Locks
    the agent's row so tabs opening and closing at once settle right."""
    user = User.objects.select_for_update().filter(pk=user_id).first()
    if user is None:
        return
    grace = (now or timezone.now()) - timedelta(seconds=settings.LIVE_TAB_GRACE_SECONDS)
    connected = LiveTab.objects.filter(
        Q(closed_at__isnull=True) | Q(closed_at__gte=grace), user_id=user_id
    ).exists()
    if user.connected == connected:
        return
    user.connected = connected
    user.save(update_fields=["connected"])
    realtime.publish_agent(
        realtime.AGENT_UPDATED,
        number_ids=visible_number_ids(user),
        data={"agent": user.pk, "connected": connected},
    )


def open_conversation(*, conversation: Conversation, agent: User) -> bool:
    """An agent is looking at a conversation: reset unread, mark it read at Meta.

    Only the first of several tabs doing so at once changes anything. Return
    whether there was something unread.
    """
    with transaction.atomic():
        changed = Conversation.objects.filter(
            pk=conversation.pk, unread_count__gt=0
        ).update(unread_count=0)
        if not changed:
            return False
        conversation.unread_count = 0
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={"change": "read", "by": agent.pk},
        )
    try:
        # Blue ticks for the customer's newest message (sent once per message).
        mark_read(conversation=conversation)
    except Exception:
        # A courtesy to the customer; the agent's view never fails on it.
        logger.warning("Marking conversation %s read failed", conversation.pk)
    return True


def memberships_changed(*, user_ids) -> None:
    """Agents' teams changed: their open tabs re-check what they may see."""
    realtime.announce_access_changed(user_ids)


def number_teams_changed(*, team_ids) -> None:
    """Teams gained or lost a number: their agents' tabs re-check access."""
    user_ids = User.objects.filter(teams__in=list(team_ids)).values_list(
        "pk", flat=True
    )
    realtime.announce_access_changed(set(user_ids))


# === Outbound: replies, templates, reactions and their delivery ==================
# Every send is a `queued` Message row written here, in the caller's
# transaction; after commit conversations.delivery rings the number's
# doorbell and a delivery run sends it (see delivery.py for the state
# machine). Refusals happen here, before any request to Meta.


class OutboundError(Exception):
    """A send refused before any request; `code` is stable for the API."""

    code = "invalid_message"
    status = 400

    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class WindowClosed(OutboundError):
    code = "window_closed"
    status = 409


class TemplateNotApproved(OutboundError):
    code = "template_not_approved"
    status = 422


class TemplateParametersInvalid(OutboundError):
    code = "template_parameters"
    status = 422


class MediaRefused(OutboundError):
    code = "media_refused"
    status = 422


class NothingToMark(OutboundError):
    code = "nothing_to_mark"
    status = 409


class SendingPaused(OutboundError):
    code = "sending_paused"
    status = 409


class UploadFailed(OutboundError):
    code = "upload_failed"
    status = 502


def check_can_send(*, conversation: Conversation, free_form: bool = False) -> None:
    """Refuse at once what could not go out now (the REST API asks first).

    Sends already queued on a paused number wait for resume_sending; a new
    one from an API client is refused with the reason instead, so the client
    is not left with a message that sits `queued`. `free_form`: also check
    the customer service window (before an upload, say).
    """
    number = conversation.number
    if number.sending_paused:
        raise SendingPaused(
            f"Sending from {number} is paused until an admin resumes it: "
            f"{number.sending_paused_reason or 'no reason recorded'}",
            reason=number.sending_paused_reason,
            since=number.sending_paused_since,
        )
    if not number.is_active:
        raise SendingPaused(f"{number} is not active.", reason="inactive", since=None)
    if free_form:
        _check_window(conversation, timezone.now())


# Meta's limits, checked before the request (Cloud API checklist item 39).
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
FREE_FORM_TYPES = frozenset(
    {
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "interactive",
        "reaction",
        "location",
        "contacts",
    }
)
MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
# Error codes after which Meta's own state changed for a template or contact.
_TEMPLATE_STATUS_BY_CODE = {
    client.TEMPLATE_PAUSED_CODE: MessageTemplate.Status.PAUSED,
    client.TEMPLATE_DISABLED_CODE: MessageTemplate.Status.DISABLED,
}
MARKETING_OPTED_OUT_CODE = 131050
READ_KEY = "outbound:read:{}"
TYPING_KEY = "outbound:typing:{}"


def approved_templates(number: WhatsAppNumber) -> list[dict]:
    """What an agent may still send when the window is closed."""
    return [
        {"id": t.pk, "name": t.name, "language": t.language, "category": t.category}
        for t in MessageTemplate.objects.filter(
            waba_id=number.waba_id, status=MessageTemplate.Status.APPROVED
        )
    ]


def _check_window(conversation: Conversation, at: datetime) -> None:
    if not windows.service_window_open(conversation, at):
        raise WindowClosed(
            "More than 24 hours have passed since the customer's last message: "
            "only an approved template can be sent.",
            templates=approved_templates(conversation.number),
        )


def _check_content(kind: str, content) -> str:
    """Check a free-form type's object against Meta's limits; its summary text."""
    if kind not in FREE_FORM_TYPES:
        raise OutboundError(f"Unknown message type {kind!r}.")
    if kind == "contacts":
        if not isinstance(content, list) or not content:
            raise OutboundError("contacts needs a list of at least one contact.")
        return ", ".join(
            str((c.get("name") or {}).get("formatted_name", "")) for c in content
        )
    if not isinstance(content, dict):
        raise OutboundError(f"{kind} needs an object.")
    if kind == "text":
        body = content.get("body", "")
        if not isinstance(body, str) or not body.strip():
            raise OutboundError("A text message needs a body.")
        if len(body) > TEXT_LIMIT:
            raise OutboundError(f"Text is limited to {TEXT_LIMIT} characters.")
        return body
    if kind in MEDIA_TYPES:
        if bool(content.get("id")) == bool(content.get("link")):
            raise MediaRefused("Media needs exactly one of an uploaded id or a link.")
        link = content.get("link", "")
        if link and not str(link).startswith("https://"):
            raise MediaRefused("Media links must be HTTPS URLs.")
        caption = content.get("caption", "")
        if caption and kind not in {"image", "video", "document"}:
            raise MediaRefused(f"{kind} messages cannot have a caption.")
        if len(caption) > CAPTION_LIMIT:
            raise MediaRefused(f"Captions are limited to {CAPTION_LIMIT} characters.")
        return caption or content.get("filename", "") or kind
    if kind == "interactive":
        return _check_interactive(content)
    if kind == "location":
        try:
            float(content["latitude"])
            float(content["longitude"])
        except (KeyError, TypeError, ValueError):
            raise OutboundError("A location needs a latitude and longitude.") from None
        return content.get("name", "") or "Location"
    if kind == "reaction":
        return content.get("emoji", "")
    return kind


def _check_interactive(content: dict) -> str:
    body = (content.get("body") or {}).get("text", "")
    action = content.get("action") or {}
    if content.get("type") == "button":
        buttons = action.get("buttons") or []
        if not 1 <= len(buttons) <= 3:
            raise OutboundError("Reply buttons: between 1 and 3 buttons.")
        titles = [(b.get("reply") or {}).get("title", "") for b in buttons]
        if any(not t or len(t) > 20 for t in titles) or len(set(titles)) != len(titles):
            raise OutboundError("Button titles: unique, 1 to 20 characters.")
        if not body or len(body) > 1024:
            raise OutboundError("Reply buttons need a body of up to 1024 characters.")
    elif content.get("type") == "list":
        rows = [
            row for s in action.get("sections") or [] for row in s.get("rows") or []
        ]
        if not 1 <= len(rows) <= 10:
            raise OutboundError("A list has between 1 and 10 rows in total.")
        if len(action.get("sections") or []) > 10:
            raise OutboundError("A list has at most 10 sections.")
        if any(len(row.get("title", "")) > 24 or not row.get("id") for row in rows):
            raise OutboundError("List rows need an id and a title of up to 24 chars.")
        if not action.get("button") or len(action["button"]) > 20:
            raise OutboundError("A list needs a button label of up to 20 chars.")
        if not body or len(body) > TEXT_LIMIT:
            raise OutboundError("A list needs a body of up to 4096 characters.")
    elif content.get("type") not in {"cta_url", "flow", "location_request_message"}:
        raise OutboundError("Unknown interactive type.")
    return body


@dataclass(frozen=True)
class Attachment:
    """A file an agent sends, kept on its message as a customer's media is."""

    data: bytes
    filename: str
    mime_type: str


# What a stored media file is on a message (a resend shows the same file).
MEDIA_FIELDS = (
    "media_id",
    "media_mime_type",
    "media_filename",
    "media_size",
    "media_sha256",
    "media_file",
    "media_state",
)


def _queue_message(
    *,
    conversation: Conversation,
    kind: str,
    payload,
    text: str,
    sender=None,
    reply_to: Message | None = None,
    template: MessageTemplate | None = None,
    attachment: Attachment | None = None,
    media_of: Message | None = None,
) -> Message:
    now = timezone.now()
    opens_free_entry_point = windows.opens_free_entry_point(conversation, now)
    message = Message(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type=kind,
        text=text,
        payload=payload,
        status=Message.Status.QUEUED,
        timestamp=now,
        reply_to=reply_to,
        context_wamid=(reply_to.wamid or "") if reply_to else "",
        sender=sender,
        template=template,
    )
    if attachment is not None:
        message.media_id = str(payload.get("id", ""))
        message.media_filename = attachment.filename[:255]
        _keep_media(message, attachment.data, attachment.mime_type)
    elif media_of is not None:
        for name in MEDIA_FIELDS:
            setattr(message, name, getattr(media_of, name))
    message.save(force_insert=True)
    _touch_conversation(conversation, message, inbound=False)
    rows = Conversation.objects.filter(pk=conversation.pk)
    if sender is not None:
        rows.filter(first_response_at__isnull=True).update(first_response_at=now)
    if opens_free_entry_point:
        expires = windows.free_entry_point_expiry(now)
        rows.filter(free_entry_point_expires_at__isnull=True).update(
            free_entry_point_expires_at=expires
        )
        conversation.free_entry_point_expires_at = expires
    realtime.publish(
        realtime.MESSAGE_CREATED,
        conversation=conversation,
        message=message,
        data={"status": message.status},
    )
    transaction.on_commit(
        functools.partial(delivery.ring, conversation.number_id), robust=True
    )
    return message


@transaction.atomic
def send_reply(
    *,
    conversation: Conversation,
    kind: str,
    content,
    sender=None,
    reply_to: Message | None = None,
    at: datetime | None = None,
    attachment: Attachment | None = None,
) -> Message:
    """Queue a free-form reply (text, media, interactive, location, contacts).

    `content` is the type's object in Meta's shape ({"body": ...} for text).
    Refused with WindowClosed outside the customer service window.
    `attachment`: the file uploaded as content's media id, kept on the message.
    """
    if kind == "reaction":
        raise OutboundError("Use react() for reactions.")
    text = _check_content(kind, content)
    _check_window(conversation, at or timezone.now())
    if reply_to is not None and reply_to.conversation_id != conversation.pk:
        raise OutboundError("reply_to must be a message of this conversation.")
    return _queue_message(
        conversation=conversation,
        kind=kind,
        payload=content,
        text=text,
        sender=sender,
        reply_to=reply_to,
        attachment=attachment,
    )


def send_attachment(
    *,
    conversation: Conversation,
    kind: str,
    attachment: Attachment,
    caption: str = "",
    sender=None,
    reply_to: Message | None = None,
) -> Message:
    """Upload an agent's file to Meta and queue it as a media reply.

    Whatever would refuse the send is checked before the upload, so nothing
    goes to Meta for a message that would not be queued; an upload Meta
    does not take queues nothing (UploadFailed). The file is kept on the
    message, so its bubble shows it as a customer's would.
    """
    content = {}
    if caption and kind in {"image", "video", "document"}:
        content["caption"] = caption
    if kind == "document":
        content["filename"] = attachment.filename[:240]
    check_can_send(conversation=conversation, free_form=True)
    # The media id is Meta's answer to the upload; a stand-in checks the rest.
    _check_content(kind, {**content, "id": "upload"})
    try:
        media_id = upload_media(
            number=conversation.number,
            kind=kind,
            data=attachment.data,
            mime_type=attachment.mime_type,
            filename=attachment.filename,
        )
    except (client.GraphAPIError, client.AcceptedButUnknown) as error:
        logger.warning("Upload for conversation %s failed: %s", conversation.pk, error)
        raise UploadFailed("Meta did not take the upload; try again.") from error
    return send_reply(
        conversation=conversation,
        kind=kind,
        content={**content, "id": media_id},
        sender=sender,
        reply_to=reply_to,
        attachment=attachment,
    )


@transaction.atomic
def react(
    *, message: Message, emoji: str, sender=None, at: datetime | None = None
) -> Message:
    """React to a message with an emoji; an empty emoji removes the reaction."""
    conversation = message.conversation
    if not message.wamid:
        raise OutboundError("Only a message WhatsApp knows can get a reaction.")
    if message.type == "reaction":
        raise OutboundError("A reaction cannot be reacted to.")
    _check_window(conversation, at or timezone.now())
    Reaction.objects.update_or_create(
        message=message,
        direction=Message.Direction.OUTBOUND,
        defaults={"emoji": emoji, "reacted_at": timezone.now(), "agent": sender},
    )
    return _queue_message(
        conversation=conversation,
        kind="reaction",
        payload={"message_id": message.wamid, "emoji": emoji},
        text=emoji,
        sender=sender,
        # Tabs show it on the message it reacts to (RenderedEvent.message_html)
        # and the API names that message; the send never quotes it
        # (client.build_message leaves reactions without context).
        reply_to=message,
    )


def _template_components(template: MessageTemplate) -> dict[str, dict]:
    return {
        str(component.get("type", "")).upper(): component
        for component in template.components or []
    }


def _placeholders(text: str) -> list[str]:
    return re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", text or "")


def template_components(template: MessageTemplate, parameters: dict) -> list[dict]:
    """Check a template send's parameters; Meta's components[] for it.

    parameters: {"header": "text" | {"image"|"video"|"document": {"link"|"id",
    "filename"}} | {"location": {...}}, "body": [positional...] |
    {name: value}, "buttons": [{"index": 0, "type": "url", "text": "..."} |
    {"index": 1, "type": "quick_reply", "payload": "..."}]}.
    """
    stored = _template_components(template)
    components: list[dict] = []
    header = stored.get("HEADER")
    given_header = parameters.get("header")
    if header is not None:
        kind = str(header.get("format", "TEXT")).lower()
        if kind == "text":
            names = _placeholders(header.get("text", ""))
            if names:
                if not isinstance(given_header, str) or not given_header:
                    raise TemplateParametersInvalid("header: needs 1 text parameter")
                components.append(
                    {
                        "type": "header",
                        "parameters": [
                            _text_parameter(given_header, names[0], template)
                        ],
                    }
                )
            elif given_header:
                raise TemplateParametersInvalid("header: takes no parameter")
        else:
            media = (
                (given_header or {}).get(kind)
                if isinstance(given_header, dict)
                else None
            )
            if not isinstance(media, dict):
                raise TemplateParametersInvalid(f"header: needs a {kind} parameter")
            if kind in {"image", "video", "document"}:
                if bool(media.get("id")) == bool(media.get("link")):
                    raise TemplateParametersInvalid(
                        f"header: the {kind} needs exactly one of an id or a link"
                    )
                media = {
                    k: v for k, v in media.items() if k in {"id", "link", "filename"}
                }
                if kind == "document":
                    name = (
                        media.get("filename")
                        or str(media.get("link", "")).split("?")[0]
                    )
                    if media.get("link") and not name.lower().endswith(".pdf"):
                        raise TemplateParametersInvalid(
                            "header: template documents must be PDFs"
                        )
                else:
                    media.pop("filename", None)
            components.append(
                {"type": "header", "parameters": [{"type": kind, kind: media}]}
            )
    elif given_header:
        raise TemplateParametersInvalid("header: this template has no header")
    body = stored.get("BODY")
    names = _placeholders((body or {}).get("text", ""))
    given_body = parameters.get("body") or []
    named = str(template.components and parameter_format(template)) == "NAMED"
    if named:
        if not isinstance(given_body, dict):
            raise TemplateParametersInvalid("body: named parameters are needed")
        missing = sorted(set(names) - set(given_body))
        extra = sorted(set(given_body) - set(names))
        if missing or extra:
            raise TemplateParametersInvalid(
                f"body: missing {', '.join(missing) or 'none'}; "
                f"unknown {', '.join(extra) or 'none'}"
            )
        values = [(name, given_body[name]) for name in names]
    else:
        if not isinstance(given_body, list):
            raise TemplateParametersInvalid("body: a list of positional parameters")
        if len(given_body) != len(names):
            raise TemplateParametersInvalid(
                f"body: {len(names)} parameters expected, {len(given_body)} given"
            )
        values = list(zip(names, given_body, strict=True))
    if any(value in (None, "") for _, value in values):
        raise TemplateParametersInvalid("body: parameters may not be empty")
    if values:
        components.append(
            {
                "type": "body",
                "parameters": [
                    _text_parameter(str(value), name, template)
                    for name, value in values
                ],
            }
        )
    buttons = (stored.get("BUTTONS") or {}).get("buttons") or []
    given_buttons = {
        int(b.get("index", -1)): b for b in parameters.get("buttons") or []
    }
    for index in given_buttons:
        if not 0 <= index < len(buttons):
            raise TemplateParametersInvalid(f"buttons: there is no button {index}")
    for index, button in enumerate(buttons):
        kind = str(button.get("type", "")).upper()
        given = given_buttons.get(index)
        if kind == "URL" and _placeholders(button.get("url", "")):
            if not given or not given.get("text"):
                raise TemplateParametersInvalid(
                    f"buttons: button {index} needs its URL suffix"
                )
            components.append(
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": str(index),
                    "parameters": [{"type": "text", "text": str(given["text"])}],
                }
            )
        elif kind == "QUICK_REPLY" and given and given.get("payload"):
            components.append(
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": str(index),
                    "parameters": [
                        {"type": "payload", "payload": str(given["payload"])}
                    ],
                }
            )
        elif given and kind not in {"URL", "QUICK_REPLY"}:
            raise TemplateParametersInvalid(f"buttons: button {index} takes no value")
    return components


def parameter_format(template: MessageTemplate) -> str:
    # Meta lists parameter_format next to components; sync_templates keeps it
    # as a pseudo-component so the model needs no new column.
    for component in template.components or []:
        if component.get("type") == "PARAMETER_FORMAT":
            return str(component.get("value", "POSITIONAL")).upper()
    return "POSITIONAL"


def _text_parameter(value: str, name: str, template: MessageTemplate) -> dict:
    parameter = {"type": "text", "text": value}
    if parameter_format(template) == "NAMED":
        parameter["parameter_name"] = name
    return parameter


@transaction.atomic
def send_template(
    *,
    conversation: Conversation,
    template: MessageTemplate,
    parameters: dict | None = None,
    sender=None,
) -> Message:
    """Queue an approved template with every parameter it defines filled in."""
    if template.status != MessageTemplate.Status.APPROVED:
        raise TemplateNotApproved(
            f"Template {template.name} ({template.language}) is {template.status}, "
            "not approved."
        )
    if template.waba_id != conversation.number.waba_id:
        raise TemplateNotApproved("That template belongs to another account.")
    _check_template_consent(conversation.customer, template)
    components = template_components(template, parameters or {})
    payload = {
        "name": template.name,
        "language": {"code": template.language, "policy": "deterministic"},
        "components": components,
    }
    body = _template_components(template).get("BODY") or {}
    return _queue_message(
        conversation=conversation,
        kind="template",
        payload=payload,
        text=_render_template_text(body.get("text", ""), components),
        sender=sender,
        template=template,
    )


def _render_template_text(text: str, components: list[dict]) -> str:
    values = [
        p.get("text", "")
        for c in components
        if c["type"] == "body"
        for p in c.get("parameters", [])
    ]
    names = _placeholders(text)
    for name, value in zip(names, values, strict=False):
        text = re.sub(r"\{\{\s*" + re.escape(name) + r"\s*\}\}", value, text)
    return text


@transaction.atomic
def resend_message(*, message: Message, sender=None) -> Message:
    """An agent's explicit resend of an `unknown` or `failed` send, as a new message.

    The old row stays as it is: a late status may still settle it, and the
    timeline shows both.
    """
    if message.direction != Message.Direction.OUTBOUND or message.status not in {
        Message.Status.UNKNOWN,
        Message.Status.FAILED,
    }:
        raise OutboundError("Only an unknown or failed send can be resent.")
    conversation = message.conversation
    if message.type != "template":
        _check_window(conversation, timezone.now())
    return _queue_message(
        conversation=conversation,
        kind=message.type,
        payload=message.payload,
        text=message.text,
        sender=sender,
        reply_to=message.reply_to,
        template=message.template,
        media_of=message if message.media_state == Message.MediaState.STORED else None,
    )


def upload_media(
    *, number: WhatsAppNumber, kind: str, data: bytes, mime_type: str, filename: str
) -> str:
    """Upload a file to Meta for this number after Meta's checks; its media id."""
    try:
        client.check_media(kind, mime_type, len(data))
    except ValueError as error:
        raise MediaRefused(str(error)) from None
    return client.upload_media(number, data, mime_type, filename, kind=kind)


def mark_read(*, conversation: Conversation) -> Message | None:
    """Mark the customer's newest message read (once per batch, not per message)."""
    newest = (
        conversation.messages.filter(
            direction=Message.Direction.INBOUND, wamid__isnull=False
        )
        .order_by("-timestamp", "-id")
        .first()
    )
    Conversation.objects.filter(pk=conversation.pk).update(unread_count=0)
    if newest is None:
        return None
    try:
        fresh = delivery.ratelimit.connection().set(
            READ_KEY.format(conversation.pk), newest.wamid, get=True, ex=86400 * 30
        )
    except Exception:
        logger.warning("Read marker for conversation %s unknown", conversation.pk)
        fresh = None
    if fresh is not None and fresh.decode() == newest.wamid:
        return None
    transaction.on_commit(
        functools.partial(tasks.send_read_receipt.delay, newest.pk), robust=True
    )
    return newest


def send_read_receipt(*, message_id: int) -> bool:
    message = Message.objects.select_related("conversation__number").get(pk=message_id)
    return client.mark_read(message.conversation.number, message.wamid)


def send_typing_indicator(*, conversation: Conversation) -> bool:
    """Show "typing…" to the customer, at most once per 20 s per conversation."""
    newest = (
        conversation.messages.filter(
            direction=Message.Direction.INBOUND, wamid__isnull=False
        )
        .order_by("-timestamp", "-id")
        .first()
    )
    if newest is None or not windows.service_window_open(conversation):
        return False
    try:
        first = delivery.ratelimit.connection().set(
            TYPING_KEY.format(conversation.pk),
            "1",
            nx=True,
            px=int(settings.WHATSAPP_TYPING_INTERVAL * 1000),
        )
    except Exception:
        logger.warning("Typing indicator for conversation %s skipped", conversation.pk)
        return False
    if not first:
        return False
    transaction.on_commit(
        functools.partial(tasks.send_typing.delay, newest.pk), robust=True
    )
    return True


def send_typing(*, message_id: int) -> bool:
    message = Message.objects.select_related("conversation__number").get(pk=message_id)
    return client.send_typing_indicator(message.conversation.number, message.wamid)


def deliver_messages(*, number_id: int) -> "delivery.RunStats":
    """Send a number's due messages (a delivery run; see delivery.py)."""
    return delivery.run(number_id)


def deliver_message(*, message_id: int) -> None:
    """Make sure a queued message's number has a delivery run coming."""
    number_id = (
        Message.objects.filter(pk=message_id)
        .values_list("conversation__number_id", flat=True)
        .first()
    )
    if number_id is not None:
        delivery.ring(number_id)


def sweep_deliveries() -> dict:
    """Turn dead workers' sends `unknown` and re-queue due sends."""
    return delivery.sweep()


@transaction.atomic
def pause_sending(*, number: WhatsAppNumber, error: dict | None) -> bool:
    """Stop every send of a number until an admin resumes it; tell the admins."""
    code = (error or {}).get("code")
    reason = (
        f"Meta error {code}: {(error or {}).get('title') or ''} "
        f"{(error or {}).get('details') or ''}"
    ).strip()
    now = timezone.now()
    paused = WhatsAppNumber.objects.filter(pk=number.pk, sending_paused=False).update(
        sending_paused=True,
        sending_paused_reason=reason,
        sending_paused_since=now,
        updated_at=now,
    )
    if paused:
        AccountNotice.objects.create(
            kind="sending_paused",
            event=str(code or ""),
            waba_id=number.waba_id,
            number=number,
            summary=f"Sending from {number} is paused: {reason}. "
            "Fix the cause (e.g. a new access token), then resume sending.",
            raw=error or {},
            occurred_at=now,
        )
        logger.error("Sending from number %s paused: %s", number.pk, reason)
    return bool(paused)


def resume_sending(*, number: WhatsAppNumber) -> None:
    """An admin fixed the cause: queued sends of the number go out again."""
    WhatsAppNumber.objects.filter(pk=number.pk).update(
        sending_paused=False,
        sending_paused_reason="",
        sending_paused_since=None,
        updated_at=timezone.now(),
    )
    transaction.on_commit(
        functools.partial(delivery.ring, number.pk, force=True), robust=True
    )


def handle_send_error(*, message_id: int, code: int | None) -> None:
    """Mirror what a permanent send error says about a template or a contact."""
    message = Message.objects.select_related("template", "conversation").get(
        pk=message_id
    )
    if code in _TEMPLATE_STATUS_BY_CODE and message.template_id:
        MessageTemplate.objects.filter(pk=message.template_id).update(
            status=_TEMPLATE_STATUS_BY_CODE[code],
            status_reason=f"Meta answered {code} to a send",
        )
    elif code == MARKETING_OPTED_OUT_CODE:
        ConsentRecord.objects.create(
            customer_id=message.conversation.customer_id,
            purpose=ConsentRecord.Purpose.MARKETING,
            status=ConsentRecord.Status.OPT_OUT,
            source=ConsentRecord.Source.META_ERROR,
            wording="WhatsApp reported that the customer stopped marketing messages.",
        )
    # A notification's business hears that it failed (business section below).
    _notify_business(message, Message.Status.FAILED)


def sync_templates(*, number: WhatsAppNumber | None = None) -> int:
    """Mirror the message templates of every WABA (or one number's); how many."""
    numbers = (
        [number] if number else list(WhatsAppNumber.objects.filter(is_active=True))
    )
    synced = 0
    seen_wabas: set[str] = set()
    for source in numbers:
        if source.waba_id in seen_wabas:
            continue
        seen_wabas.add(source.waba_id)
        now = timezone.now()
        kept = []
        for item in client.list_templates(source):
            components = list(item.get("components") or [])
            components.append(
                {
                    "type": "PARAMETER_FORMAT",
                    "value": str(item.get("parameter_format", "POSITIONAL")).upper(),
                }
            )
            category = str(item.get("category", "UTILITY")).upper()
            row, _ = MessageTemplate.objects.update_or_create(
                waba_id=source.waba_id,
                name=item["name"],
                language=item.get("language", ""),
                defaults={
                    "template_id": str(item.get("id", "")),
                    "category": category,
                    "status": str(item.get("status", "PENDING")).upper(),
                    "components": components,
                    "status_reason": str(
                        item.get("rejected_reason") or item.get("status_reason") or ""
                    ).replace("NONE", ""),
                    "synced_at": now,
                },
            )
            kept.append(row.pk)
            synced += 1
        MessageTemplate.objects.filter(waba_id=source.waba_id).exclude(
            pk__in=kept
        ).update(status=MessageTemplate.Status.DELETED, synced_at=now)
    return synced


# === Business: consent, notifications, status callbacks and charges ==============
# The business's side of WhatsApp: who agreed to hear from it (a ledger that
# is only ever appended to), template notifications its own systems send,
# signed status callbacks back to those systems, and what each message costs.


class NoConsent(OutboundError):
    code = "no_consent"
    status = 422


class TemplateCategoryMismatch(OutboundError):
    code = "template_category_mismatch"
    status = 422


class InvalidRecipient(OutboundError):
    code = "invalid_phone"
    status = 400


# --- Consent ledger ---------------------------------------------------------------


def _fold(text: str) -> str:
    """Casefold, drop accents and the spaces/punctuation around words."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    words = re.findall(r"\w+", bare.casefold())
    return " ".join(words)


@functools.lru_cache(maxsize=4)
def _folded_keywords(keywords: tuple[str, ...]) -> frozenset[str]:
    # Every customer message is checked: fold the keywords once, not each time.
    return frozenset(_fold(keyword) for keyword in keywords)


def is_opt_out_message(text: str) -> bool:
    """Whether a whole message is an opt-out keyword (STOP, BAJA, ARRÊT, ...)."""
    folded = _fold(text)
    return bool(folded) and folded in _folded_keywords(tuple(settings.OPT_OUT_KEYWORDS))


def is_marketing_opt_out_button(title: str, payload: str = "") -> bool:
    """Whether a quick reply is a marketing template's "Stop promotions" button."""
    buttons = {_fold(button) for button in settings.MARKETING_OPT_OUT_BUTTONS}
    return bool(buttons & {_fold(title), _fold(payload)} - {""})


def record_consent(
    *,
    customer: Customer,
    purpose: str,
    status: str,
    source: str,
    wording: str = "",
    recorded_by: User | None = None,
) -> ConsentRecord:
    """Append an opt-in or opt-out to the ledger (never edited, never deleted)."""
    if purpose not in ConsentRecord.Purpose.values:
        raise ValueError(f"Unknown purpose {purpose!r}")
    if status not in ConsentRecord.Status.values:
        raise ValueError(f"Unknown consent status {status!r}")
    if source not in ConsentRecord.Source.values:
        raise ValueError(f"Unknown consent source {source!r}")
    return ConsentRecord.objects.create(
        customer=customer,
        purpose=purpose,
        status=status,
        source=source,
        wording=wording,
        recorded_by=recorded_by,
    )


def opt_out_everywhere(
    *,
    customer: Customer,
    source: str,
    wording: str,
    recorded_by: User | None = None,
) -> list[ConsentRecord]:
    """Opt a customer out of every purpose, as Meta's policy asks for STOP."""
    return [
        record_consent(
            customer=customer,
            purpose=purpose,
            status=ConsentRecord.Status.OPT_OUT,
            source=source,
            wording=wording,
            recorded_by=recorded_by,
        )
        for purpose in ConsentRecord.Purpose.values
    ]


def latest_consents(customer_ids) -> dict[tuple[int, str], str]:
    """The current status per (customer, purpose): its newest ledger record."""
    state: dict[tuple[int, str], str] = {}
    rows = (
        ConsentRecord.objects.filter(customer_id__in=list(customer_ids))
        .order_by("customer_id", "purpose", "recorded_at", "id")
        .values_list("customer_id", "purpose", "status")
    )
    for customer_id, purpose, status in rows:
        state[(customer_id, purpose)] = status
    return state


def has_consent(customer: Customer, purpose: str) -> bool:
    """Whether the customer's newest record for the purpose is an opt-in."""
    latest = (
        ConsentRecord.objects.filter(customer=customer, purpose=purpose)
        .order_by("-recorded_at", "-id")
        .values_list("status", flat=True)
        .first()
    )
    return latest == ConsentRecord.Status.OPT_IN


def _check_template_consent(customer: Customer, template: MessageTemplate) -> None:
    """Marketing templates need a marketing opt-in; nothing goes after an opt-out.

    Agents may still send a utility template (an order update) to reopen a
    conversation unless the customer opted out of utility messages.
    """
    if template.category == MessageTemplate.Category.MARKETING:
        if not has_consent(customer, ConsentRecord.Purpose.MARKETING):
            raise NoConsent(
                "The customer has not opted in to marketing messages "
                "(or has opted out)."
            )
        return
    latest = (
        ConsentRecord.objects.filter(
            customer=customer, purpose=ConsentRecord.Purpose.UTILITY
        )
        .order_by("-recorded_at", "-id")
        .values_list("status", flat=True)
        .first()
    )
    if latest == ConsentRecord.Status.OPT_OUT:
        raise NoConsent("The customer has opted out of WhatsApp messages.")


def _opt_out_by_message(customer: Customer, message: Message) -> None:
    """A customer's STOP (any purpose) or "Stop promotions" tap (marketing)."""
    if message.type == "text" and is_opt_out_message(message.text):
        opt_out_everywhere(
            customer=customer,
            source=ConsentRecord.Source.WHATSAPP,
            wording=f"Customer wrote: {message.text[:200]}",
        )
    elif message.type in {"button", "interactive"}:
        payload = message.payload or {}
        reply = payload.get("button_reply") or {}
        title = str(payload.get("text") or reply.get("title") or message.text or "")
        button_payload = str(payload.get("payload") or reply.get("id") or "")
        if is_marketing_opt_out_button(title, button_payload):
            record_consent(
                customer=customer,
                purpose=ConsentRecord.Purpose.MARKETING,
                status=ConsentRecord.Status.OPT_OUT,
                source=ConsentRecord.Source.WHATSAPP,
                wording=f"Customer tapped: {title[:200]}",
            )
        elif is_opt_out_message(title):
            opt_out_everywhere(
                customer=customer,
                source=ConsentRecord.Source.WHATSAPP,
                wording=f"Customer tapped: {title[:200]}",
            )


# --- Notifications ------------------------------------------------------------------

# A notification's status as the business sees it, from its message's.
NOTIFICATION_STATUS = {
    Message.Status.QUEUED: "queued",
    Message.Status.SENDING: "queued",
    Message.Status.UNKNOWN: "unknown",
    Message.Status.SENT: "sent",
    Message.Status.DELIVERED: "delivered",
    Message.Status.READ: "read",
    Message.Status.PLAYED: "read",
    Message.Status.FAILED: "failed",
}
CALLBACK_EVENTS = frozenset({"sent", "delivered", "read", "failed"})


def notification_status(notification: Notification) -> str:
    if notification.state == Notification.State.REFUSED:
        return "refused"
    message = notification.message
    if message is None:
        return "queued"
    return NOTIFICATION_STATUS.get(message.status, message.status)


def notification_error(notification: Notification) -> dict | None:
    if notification.state == Notification.State.REFUSED:
        return notification.error
    message = notification.message
    if message is not None and message.status == Message.Status.FAILED:
        return message.error or {"code": None, "title": "Failed"}
    return None


def notification_template(
    *, number: WhatsAppNumber, name: str, language: str, purpose: str
) -> MessageTemplate:
    """The approved template a notification of this purpose may use."""
    template = MessageTemplate.objects.filter(
        waba_id=number.waba_id, name=name, language=language
    ).first()
    if template is None:
        raise TemplateNotApproved(
            f"There is no template {name} ({language}) for this number."
        )
    if template.status != MessageTemplate.Status.APPROVED:
        raise TemplateNotApproved(
            f"Template {name} ({language}) is {template.status}, not approved."
        )
    if template.category.lower() != purpose:
        raise TemplateCategoryMismatch(
            f"Template {name} is a {template.category} template; a {purpose} "
            f"notification needs a {purpose.upper()} one."
        )
    return template


def notification_parameters(
    template: MessageTemplate, parameters: dict, document: dict | None
) -> dict:
    """The template parameters, with the document as its document header.

    Checked against the template here, once, so a bulk send refuses bad
    parameters for everybody before anything is queued.
    """
    parameters = dict(parameters or {})
    if document:
        header = _template_components(template).get("HEADER") or {}
        if str(header.get("format", "")).upper() != "DOCUMENT":
            raise TemplateParametersInvalid(
                "document: this template has no document header"
            )
        if parameters.get("header"):
            raise TemplateParametersInvalid(
                "document: give the document or header.document, not both"
            )
        parameters["header"] = {"document": dict(document)}
    template_components(template, parameters)
    return parameters


def _notification_conversation(
    *, customer: Customer, number: WhatsAppNumber, team, by
) -> tuple[Conversation, bool]:
    """The customer's unresolved conversation on the number, or a new one."""
    for _ in range(5):
        current = (
            Conversation.objects.select_for_update()
            .filter(customer=customer, number=number)
            .unresolved()
            .order_by("-id")
            .first()
        )
        if current is not None:
            if team is not None and current.team_id != team.pk and by is not None:
                current = assign_conversation(conversation=current, by=by, team=team)
            return current, False
        try:
            with transaction.atomic():
                return (
                    Conversation.objects.create(
                        customer=customer, number=number, team=team
                    ),
                    True,
                )
        except IntegrityError:
            continue
    raise IntegrityError(f"Could not settle a conversation for customer {customer.pk}")


def _recipient_digits(to: str) -> str | None:
    value = (to or "").strip()
    if not value.startswith("+"):
        return None
    digits = value[1:]
    return digits if _E164_DIGITS.match(digits) else None


@dataclass
class NotificationOrder:
    """What every recipient of one request shares, checked once."""

    number: WhatsAppNumber
    template: MessageTemplate
    purpose: str
    parameters: dict
    reference: str = ""
    team: Team | None = None
    created_by: User | None = None
    idempotency_key: str = ""
    request_hash: str = ""


def send_notification(
    *,
    order: NotificationOrder,
    to: str,
    position: int = 0,
    batch: NotificationBatch | None = None,
    consents: dict | None = None,
    parameters: dict | None = None,
    reference: str | None = None,
    refusal: dict | None = None,
) -> Notification:
    """Queue one template notification, or record why it was refused.

    `refusal` ({"code", "detail"}) records a recipient the caller already
    refused (a CSV row with bad parameters).

    Refusals for this recipient (a number that is not E.164, no opt-in for
    the purpose) become a refused Notification row; the template and its
    parameters must have been checked already (notification_template,
    notification_parameters). `consents` may carry latest_consents() for a
    bulk send. A duplicate idempotency key raises IntegrityError.
    """
    parameters = order.parameters if parameters is None else parameters
    notification = Notification(
        to=to[:64],
        number=order.number,
        purpose=order.purpose,
        template=order.template,
        template_name=order.template.name,
        template_language=order.template.language,
        parameters=parameters,
        reference=order.reference if reference is None else reference,
        team=order.team,
        idempotency_key=order.idempotency_key,
        request_hash=order.request_hash,
        position=position,
        batch=batch,
        created_by=order.created_by,
    )

    def refuse(code: str, detail: str) -> Notification:
        notification.state = Notification.State.REFUSED
        notification.error = {"code": code, "detail": detail}
        notification.save()
        return notification

    if refusal is not None:
        return refuse(refusal["code"], refusal["detail"])
    digits = _recipient_digits(to)
    if digits is None:
        return refuse(
            InvalidRecipient.code,
            "Give the number in E.164 form, such as +4917012345678.",
        )
    with transaction.atomic():
        customer = find_or_create_customer(wa_id=digits, user_id="")
        notification.customer = customer
        if consents is not None and customer.pk in consents.get("_known", ()):
            consented = (
                consents.get((customer.pk, order.purpose))
                == ConsentRecord.Status.OPT_IN
            )
        else:
            consented = has_consent(customer, order.purpose)
        if not consented:
            return refuse(
                NoConsent.code,
                f"{to} has not opted in to {order.purpose} messages "
                "(or has opted out).",
            )
        conversation, created = _notification_conversation(
            customer=customer, number=order.number, team=order.team, by=order.created_by
        )
        message = send_template(
            conversation=conversation,
            template=order.template,
            parameters=parameters,
        )
        notification.state = Notification.State.QUEUED
        notification.message = message
        notification.conversation = conversation
        notification.save()
        if created:
            realtime.publish(realtime.CONVERSATION_CREATED, conversation=conversation)
    return notification


# Recipients written per round of set-based statements in a bulk send.
BULK_CHUNK = 1000


def _send_notification_chunk(
    *,
    order: NotificationOrder,
    recipients: list[dict],
    offset: int,
    batch: NotificationBatch,
) -> list[Notification]:
    """send_notification() for many recipients in a few statements.

    Same refusals and rows as one call per recipient: customers are looked up
    and created in bulk, consent read once, and conversations, messages,
    notifications and live events inserted with bulk_create; the number's
    doorbell rings once after commit. A recipient the bulk path cannot settle
    alone (the same customer twice, an unresolved conversation that another
    team holds or that may open a free entry point, a conversation another
    request created meanwhile) goes through send_notification().
    """
    template, number = order.template, order.number
    if template.status != MessageTemplate.Status.APPROVED:
        raise TemplateNotApproved(
            f"Template {template.name} ({template.language}) is {template.status}, "
            "not approved."
        )
    if template.waba_id != number.waba_id:
        raise TemplateNotApproved("That template belongs to another account.")

    def row(position: int, item: dict, **fields) -> Notification:
        parameters = item.get("parameters")
        reference = item.get("reference")
        return Notification(
            to=item["to"][:64],
            number=number,
            purpose=order.purpose,
            template=template,
            template_name=template.name,
            template_language=template.language,
            parameters=order.parameters if parameters is None else parameters,
            reference=order.reference if reference is None else reference,
            team=order.team,
            idempotency_key=order.idempotency_key,
            request_hash=order.request_hash,
            position=position,
            batch=batch,
            created_by=order.created_by,
            **fields,
        )

    def refused(code: str, detail: str) -> dict:
        return {
            "state": Notification.State.REFUSED,
            "error": {"code": code, "detail": detail},
        }

    results: dict[int, Notification] = {}
    wanted: dict[int, str] = {}  # position -> wa_id
    for index, item in enumerate(recipients):
        position = offset + index
        if item.get("refusal") is not None:
            results[position] = row(
                position,
                item,
                **refused(item["refusal"]["code"], item["refusal"]["detail"]),
            )
            continue
        digits = _recipient_digits(item["to"])
        if digits is None:
            results[position] = row(
                position,
                item,
                **refused(
                    InvalidRecipient.code,
                    "Give the number in E.164 form, such as +4917012345678.",
                ),
            )
            continue
        wanted[position] = digits

    # Customers: the known ones in one query, the others in one INSERT.
    wa_ids = set(wanted.values())
    customers = dict(
        Customer.objects.filter(wa_id__in=wa_ids).values_list("wa_id", "pk")
    )
    missing = wa_ids - customers.keys()
    if missing:
        Customer.objects.bulk_create(
            [Customer(wa_id=wa_id, phone=f"+{wa_id}") for wa_id in sorted(missing)],
            ignore_conflicts=True,
        )
        customers.update(
            Customer.objects.filter(wa_id__in=missing).values_list("wa_id", "pk")
        )
    consents = latest_consents(customers.values())

    later: list[int] = []  # positions for send_notification()
    ready: dict[int, int] = {}  # position -> customer id, consented
    taken: set[int] = set()
    for position, wa_id in wanted.items():
        customer_id = customers.get(wa_id)
        if customer_id is None:
            later.append(position)
            continue
        if consents.get((customer_id, order.purpose)) != ConsentRecord.Status.OPT_IN:
            item = recipients[position - offset]
            results[position] = row(
                position,
                item,
                customer_id=customer_id,
                **refused(
                    NoConsent.code,
                    f"{item['to']} has not opted in to {order.purpose} messages "
                    "(or has opted out).",
                ),
            )
            continue
        if customer_id in taken:
            later.append(position)
            continue
        taken.add(customer_id)
        ready[position] = customer_id

    # Conversations: reuse the unresolved one unless it needs the slow path.
    current = {
        conversation.customer_id: conversation
        for conversation in Conversation.objects.filter(
            number=number, customer_id__in=set(ready.values())
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
            later.append(position)
            del ready[position]
        else:
            conversations[customer_id] = conversation
    fresh = [
        Conversation(customer_id=customer_id, number=number, team=order.team)
        for customer_id in ready.values()
        if customer_id not in conversations
    ]
    if fresh:
        if not connection.features.can_return_rows_from_bulk_insert:
            later.extend(p for p, c in ready.items() if c not in conversations)
            ready = {p: c for p, c in ready.items() if c in conversations}
            fresh = []
        else:
            try:
                with transaction.atomic():
                    Conversation.objects.bulk_create(fresh)
            except IntegrityError:
                # Another request opened one of them meanwhile.
                later.extend(p for p, c in ready.items() if c not in conversations)
                ready = {p: c for p, c in ready.items() if c in conversations}
                fresh = []
        for conversation in fresh:
            conversations[conversation.customer_id] = conversation

    # Messages: the template rendered once per distinct set of parameters.
    now = timezone.now()
    body_text = (_template_components(template).get("BODY") or {}).get("text", "")
    rendered: dict[str, tuple[dict, str]] = {}
    messages: dict[int, Message] = {}
    for position, customer_id in ready.items():
        item = recipients[position - offset]
        parameters = item.get("parameters")
        parameters = order.parameters if parameters is None else parameters
        key = json.dumps(parameters, sort_keys=True, default=str)
        if key not in rendered:
            components = template_components(template, parameters or {})
            payload = {
                "name": template.name,
                "language": {"code": template.language, "policy": "deterministic"},
                "components": components,
            }
            rendered[key] = (payload, _render_template_text(body_text, components))
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
    if messages:
        Message.objects.bulk_create(messages.values())
        # Each conversation's newest message, never moving backwards.
        newest = (
            Message.objects.filter(
                conversation_id=OuterRef("pk"),
                direction=Message.Direction.OUTBOUND,
                timestamp=now,
            )
            .order_by("-id")
            .values("id")[:1]
        )
        Conversation.objects.filter(
            pk__in={m.conversation_id for m in messages.values()}
        ).filter(Q(last_message_at__isnull=True) | Q(last_message_at__lte=now)).update(
            last_message=Subquery(newest), last_message_at=now, updated_at=now
        )
        for position, message in messages.items():
            results[position] = row(
                position,
                recipients[position - offset],
                state=Notification.State.QUEUED,
                customer_id=ready[position],
                message=message,
                conversation=message.conversation,
            )
        realtime.publish_many(
            realtime.MESSAGE_CREATED, messages=list(messages.values())
        )
        with realtime.batched():  # one INSERT, one announcement hop
            for conversation in fresh:
                realtime.publish(
                    realtime.CONVERSATION_CREATED, conversation=conversation
                )
        transaction.on_commit(functools.partial(delivery.ring, number.pk), robust=True)

    Notification.objects.bulk_create(
        [results[position] for position in sorted(results)]
    )
    consents_known: dict = dict(consents)
    consents_known["_known"] = set(customers.values())
    for position in sorted(later):
        item = recipients[position - offset]
        results[position] = send_notification(
            order=order,
            to=item["to"],
            position=position,
            batch=batch,
            consents=consents_known,
            parameters=item.get("parameters"),
            reference=item.get("reference"),
        )
    return [results[position] for position in sorted(results)]


def send_notifications(
    *,
    order: NotificationOrder,
    recipients: list[dict],
    source: str = NotificationBatch.Source.API,
    name: str = "",
) -> tuple[NotificationBatch, list[Notification]]:
    """Queue one notification per recipient.

    recipients: [{"to", "parameters"?, "reference"?, "refusal"?}].

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

    Columns: phone (E.164), reference, body_1, body_2, ... (positional) or
    body_<name> (named), header (a text header's value), header_link (a
    media header) and document_filename. A row whose parameters the template
    refuses is recorded as refused with the reason; the others are sent.
    """
    template = notification_template(
        number=number, name=template.name, language=template.language, purpose=purpose
    )
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "phone" not in reader.fieldnames:
        raise OutboundError("The CSV needs a header row with a phone column.")
    header = _template_components(template).get("HEADER") or {}
    header_kind = str(header.get("format", "")).lower()
    named = parameter_format(template) == "NAMED"
    recipients = []
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
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
        item = {"to": row.get("phone", ""), "reference": row.get("reference", "")}
        try:
            item["parameters"] = notification_parameters(template, parameters, None)
        except OutboundError as error:
            item["parameters"] = parameters
            item["refusal"] = {"code": error.code, "detail": error.detail}
        recipients.append(item)
    if not recipients:
        raise OutboundError("The CSV has no rows.")
    order = NotificationOrder(
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


def request_hash(data) -> str:
    """A stable hash of a request body (key order and spacing do not matter)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- Status callbacks to the business -------------------------------------------------


def _notify_business(message: Message, status: str) -> int:
    """Owe every active callback endpoint this notification's new status.

    Rows in the caller's transaction (an outbox); the HTTP requests happen in
    their own task after commit, so a slow endpoint never holds up webhook
    processing. A redelivered status owes nothing new (unique per event).
    """
    if status not in CALLBACK_EVENTS:
        return 0
    endpoints = list(
        CallbackEndpoint.objects.filter(active=True).values_list("pk", flat=True)
    )
    if not endpoints:
        return 0
    notification = (
        Notification.objects.filter(message_id=message.pk)
        .select_related("message")
        .first()
    )
    if notification is None:
        return 0
    notification.message = message
    payload = {
        "type": "notification.status",
        "status": NOTIFICATION_STATUS.get(status, status),
        "occurred_at": timezone.now().isoformat(),
        "notification": notification_payload(notification),
    }
    created = CallbackDelivery.objects.bulk_create(
        [
            CallbackDelivery(
                endpoint_id=endpoint_id,
                notification=notification,
                event=status,
                payload=payload,
            )
            for endpoint_id in endpoints
        ],
        ignore_conflicts=True,
    )
    transaction.on_commit(_queue_callback_delivery, robust=True)
    return len(created)


def notification_payload(notification: Notification) -> dict:
    """A notification as the API and the callbacks show it."""
    return {
        "id": notification.pk,
        "status": notification_status(notification),
        "to": notification.to,
        "purpose": notification.purpose,
        "template": {
            "name": notification.template_name,
            "language": notification.template_language,
        },
        "reference": notification.reference,
        "message": notification.message_id,
        "conversation": notification.conversation_id,
        "team": notification.team_id,
        "batch": notification.batch_id,
        "error": notification_error(notification),
        "created_at": notification.created_at.isoformat()
        if notification.created_at
        else None,
    }


def _queue_callback_delivery() -> None:
    try:
        tasks.deliver_callbacks.delay()
    except Exception:
        logger.warning("Callback delivery not queued; the sweeper will")


def callback_backoff(attempts: int) -> timedelta:
    """Wait before attempt attempts+1: base × 2^(attempts-1), capped."""
    seconds = settings.BUSINESS_CALLBACK_BACKOFF_BASE * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.BUSINESS_CALLBACK_BACKOFF_MAX))


def _due_callbacks(now):
    return CallbackDelivery.objects.filter(state=CallbackDelivery.State.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def deliver_callbacks(*, limit: int = 50) -> int:
    """Post up to `limit` due callbacks; return how many were tried.

    Rows are claimed (a lease in next_attempt_at, committed) before any
    request, so two workers never post the same row at once; a worker that
    dies leaves the row due again when its lease ends.
    """
    now = timezone.now()
    lease = now + timedelta(
        seconds=settings.BUSINESS_CALLBACK_TIMEOUT
        + settings.BUSINESS_CALLBACK_CONNECT_TIMEOUT
        + 30
    )
    with transaction.atomic():
        ids = list(
            _due_callbacks(now)
            .order_by("id")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        CallbackDelivery.objects.filter(pk__in=ids).update(
            next_attempt_at=lease, attempts=F("attempts") + 1
        )
    rows = list(CallbackDelivery.objects.filter(pk__in=ids).select_related("endpoint"))
    for row in rows:
        body = json.dumps(
            {"id": row.pk, **row.payload}, separators=(",", ":"), sort_keys=True
        ).encode()
        result = callbacks.post(row.endpoint.url, row.endpoint.secret, body)
        now = timezone.now()
        if result.ok:
            CallbackDelivery.objects.filter(pk=row.pk).update(
                state=CallbackDelivery.State.DELIVERED,
                delivered_at=now,
                next_attempt_at=None,
                last_status_code=result.status_code,
                last_error="",
            )
            continue
        gave_up = row.attempts >= settings.BUSINESS_CALLBACK_MAX_ATTEMPTS
        CallbackDelivery.objects.filter(pk=row.pk).update(
            state=CallbackDelivery.State.FAILED
            if gave_up
            else CallbackDelivery.State.PENDING,
            next_attempt_at=None if gave_up else now + callback_backoff(row.attempts),
            last_status_code=result.status_code,
            last_error=result.error[:2000],
        )
    return len(rows)


def callbacks_due() -> bool:
    return _due_callbacks(timezone.now()).exists()


def retry_callback(*, delivery: CallbackDelivery) -> None:
    """An admin sends a callback that gave up once more."""
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        state=CallbackDelivery.State.PENDING, next_attempt_at=None
    )
    transaction.on_commit(_queue_callback_delivery, robust=True)


def _after_status(message: Message, *, status: str, changed: list[str]) -> None:
    """What a status webhook means for the business: cost, opt-out, callbacks."""
    if message.pricing and {"pricing", "delivered_at", "read_at"} & set(changed):
        record_charge(message)
    if (
        status == Message.Status.FAILED
        and "status" in changed
        and (message.error or {}).get("code") == MARKETING_OPTED_OUT_CODE
    ):
        record_consent(
            customer=Customer.objects.get(conversations=message.conversation_id),
            purpose=ConsentRecord.Purpose.MARKETING,
            status=ConsentRecord.Status.OPT_OUT,
            source=ConsentRecord.Source.META_ERROR,
            wording="WhatsApp reported that the customer stopped marketing messages.",
        )
    _notify_business(message, status)


# --- Charges: Meta's pricing priced with the rate card -----------------------------


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


def compare_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Check a callback signature the way a business's receiver should."""
    expected = callbacks.sign(secret, timestamp, body)
    return hmac.compare_digest(expected, signature)
