"""Customers and the conversations their messages join: found or created
against the unique constraints, re-keyed by Meta's system messages, renamed
by agents.
"""

import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django.utils import timezone

from accounts.models import User

from .. import realtime
from ..models import (
    Conversation,
    Customer,
    CustomerIdentityChange,
    Message,
    WhatsAppNumber,
)
from ..whatsapp import payloads
from . import merges

logger = logging.getLogger(__name__)


E164_DIGITS = re.compile(r"^[1-9]\d{6,14}$")
# A business-scoped user id: a country code, "ENT." for a parent BSUID, and
# Meta's alphanumeric id (US.13491208655302741918), 256 characters at most.
BSUID = re.compile(r"^[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,250}$")


def find_or_merge_customer(
    *,
    wa_id: str,
    user_id: str,
    profile_name: str = "",
    username: str = "",
    country_code: str = "",
) -> Customer:
    """Return the one customer with this wa_id and/or BSUID, creating one if
    neither matches.

    Either id may be empty. When the wa_id and the BSUID are held by two
    customers they are one person: the two are merged (merges.py) and the
    survivor returned. Missing ids are filled in, and the profile name and
    username are refreshed; the agent-set ``name`` is never touched. Safe
    under concurrency: the unique constraints decide, and a lost race reads
    the winner's row.
    """
    if not (wa_id or user_id):
        raise ValueError("A customer needs a wa_id or a user id.")
    for _ in range(5):
        by_wa = Customer.objects.filter(wa_id=wa_id).first() if wa_id else None
        by_user = Customer.objects.filter(user_id=user_id).first() if user_id else None
        if by_wa is not None and by_user is not None and by_wa.pk != by_user.pk:
            merges.merge_customers(first=by_wa, second=by_user)
            continue
        try:
            with transaction.atomic():
                return _settle_customer(
                    by_wa or by_user,
                    wa_id=wa_id,
                    user_id=user_id,
                    refreshed={
                        "profile_name": profile_name,
                        "username": username,
                        "country_code": country_code,
                    },
                )
        except IntegrityError:
            # Another worker created or re-keyed the row first: read it.
            continue
    raise IntegrityError(
        f"Could not settle customer wa_id={wa_id!r} user_id={user_id!r}"
    )


def _settle_customer(
    customer: Customer | None, *, wa_id: str, user_id: str, refreshed: dict
) -> Customer:
    """Create the customer, or fill in its missing ids and refresh its profile."""
    if customer is None:
        return Customer.objects.create(
            wa_id=wa_id,
            user_id=user_id,
            phone=f"+{wa_id}" if E164_DIGITS.match(wa_id) else "",
            **refreshed,
        )
    changed = []
    if wa_id and not customer.wa_id:
        customer.wa_id = wa_id
        changed.append("wa_id")
        if not customer.phone and E164_DIGITS.match(wa_id):
            customer.phone = f"+{wa_id}"
            changed.append("phone")
    if user_id and not customer.user_id:
        customer.user_id = user_id
        changed.append("user_id")
    for field_name, value in refreshed.items():
        if value and getattr(customer, field_name) != value:
            setattr(customer, field_name, value)
            changed.append(field_name)
    if changed:
        customer.save(update_fields=[*changed, "updated_at"])
    return customer


def learn_from_contact(customer_id: int, contact: payloads.Contact) -> None:
    """What a status webhook's contacts block says about the customer a
    message went to: a BSUID or phone not known yet, a new username or
    profile name. A phone or BSUID another customer holds merges the two."""
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:
        return
    wa_id = contact.wa_id if contact.wa_id and not customer.wa_id else ""
    user_id = contact.user_id if contact.user_id and not customer.user_id else ""
    fresh = {
        "profile_name": contact.name,
        "username": contact.username,
        "country_code": contact.country_code,
    }
    if not (wa_id or user_id) and all(
        not value or getattr(customer, name) == value for name, value in fresh.items()
    ):
        return
    find_or_merge_customer(
        wa_id=wa_id or customer.wa_id,
        user_id=user_id or customer.user_id,
        **fresh,
    )


def _upsert_customer(
    *, wa_id: str, profile_name: str, username: str, country_code: str
) -> tuple[Customer, bool]:
    """find_or_merge_customer for a message that names a wa_id and no BSUID,
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
    phone = f"+{wa_id}" if E164_DIGITS.match(wa_id) else ""
    params = [wa_id, phone, profile_name, username, country_code, stamp, stamp]
    customer = next(iter(Customer.objects.raw(sql, params)))
    return customer, customer.created_at == now


def customer_for(message: payloads.InboundMessage) -> tuple[Customer, bool]:
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
    customer = find_or_merge_customer(
        wa_id=message.wa_id,
        user_id=message.user_id,
        profile_name=message.profile_name,
        username=username,
        country_code=country_code,
    )
    return customer, False


def insert_or_ignore(obj) -> bool:
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


def conversation_for(
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
                .filter(customer=customer, number=number, group_id="")
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
        if insert_or_ignore(conversation):

            def create_undo(conversation=conversation):
                Conversation.objects.filter(pk=conversation.pk).delete()

            return conversation, realtime.CONVERSATION_CREATED, create_undo
        # A concurrent message opened one first (it waited for that commit).
        new_customer = False
    raise IntegrityError(f"Could not settle a conversation for customer {customer.pk}")


def touch_conversation(
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


def apply_system_change(customer: Customer, change: payloads.SystemChange) -> Customer:
    """Re-key the customer after a number or user-id change; history stays.

    `user_changed_number` brings the new number; `user_changed_user_id`
    the new BSUID, and the new number too when it says one. Each old value
    is kept as a CustomerIdentityChange. When another customer holds a new
    value already (the customer wrote from the new number before the
    system message arrived), the two are merged. Return the customer as it
    is now (the survivor of a merge).
    """
    keys = []
    if change.type == "user_changed_user_id" and change.new_user_id:
        keys.append(("user_id", change.new_user_id, change.type))
    if change.type in ("user_changed_number", "user_changed_user_id"):
        if change.new_wa_id:
            keys.append(("wa_id", change.new_wa_id, "user_changed_number"))
    for key, new_value, kind in keys:
        customer = _rekey(customer, key, new_value, kind)
    return customer


def _rekey(customer: Customer, key: str, new_value: str, kind: str) -> Customer:
    old_value = getattr(customer, key)
    if old_value == new_value:
        return customer
    CustomerIdentityChange.objects.create(
        customer=customer, kind=kind, old_value=old_value, new_value=new_value
    )
    holder = Customer.objects.filter(**{key: new_value}).first()
    if holder is not None:
        customer = merges.merge_customers(first=customer, second=holder)
        if getattr(customer, key) == new_value:
            return customer
    setattr(customer, key, new_value)
    fields = [key]
    if key == "wa_id":
        customer.phone = f"+{new_value}" if E164_DIGITS.match(new_value) else ""
        fields.append("phone")
    customer.save(update_fields=[*fields, "updated_at"])
    return customer


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
