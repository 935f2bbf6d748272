"""Customers and the conversations their messages join: found or created
against the unique constraints, re-keyed by Meta's system messages, renamed
by agents.
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
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
    learn_from_contacts([(customer_id, contact)])


def learn_from_contacts(learnt: Sequence[tuple[int, payloads.Contact]]) -> None:
    """learn_from_contact for many (customer id, contact) pairs in a number of
    statements that does not grow with them: one read of the customers, one
    of whoever holds an id a contact brings, one UPDATE … FROM (VALUES …).

    A phone or BSUID another customer holds (or two contacts bring for two
    customers) is a merge: that customer is settled one by one
    (find_or_merge_customer), as Meta rarely sends one.
    """
    if not learnt:
        return
    by_pk = Customer.objects.in_bulk({customer_id for customer_id, _ in learnt})
    news: dict[int, dict[str, str]] = {}
    for customer_id, contact in learnt:
        customer = by_pk.get(customer_id)
        if customer is not None:
            _note_news(news.setdefault(customer_id, {}), customer, contact)
    news = {pk: fields for pk, fields in news.items() if fields}
    if not news:
        return
    claims: dict[tuple[str, str], set[int]] = {}
    for pk, fields in news.items():
        for key in ("wa_id", "user_id"):
            if fields.get(key):
                claims.setdefault((key, fields[key]), set()).add(pk)
    contested = {pk for pks in claims.values() if len(pks) > 1 for pk in pks}
    if claims:
        held = Customer.objects.filter(
            Q(wa_id__in={value for key, value in claims if key == "wa_id"})
            | Q(user_id__in={value for key, value in claims if key == "user_id"})
        ).values_list("pk", "wa_id", "user_id")
        for holder, wa_id, user_id in held:
            for key, value in (("wa_id", wa_id), ("user_id", user_id)):
                contested |= claims.get((key, value), set()) - {holder}
    _update_customers(
        {pk: fields for pk, fields in news.items() if pk not in contested}
    )
    for pk in sorted(contested):
        customer, fields = by_pk[pk], news[pk]
        find_or_merge_customer(
            wa_id=fields.pop("wa_id", "") or customer.wa_id,
            user_id=fields.pop("user_id", "") or customer.user_id,
            **{name: value for name, value in fields.items() if name != "phone"},
        )


def _note_news(fields: dict[str, str], customer: Customer, contact) -> None:
    """Add to ``fields`` what a contact tells that the customer row lacks: an
    id it has none of, non-empty profile values that differ."""
    if contact.wa_id and not customer.wa_id:
        fields["wa_id"] = contact.wa_id
        if not customer.phone and E164_DIGITS.match(contact.wa_id):
            fields["phone"] = f"+{contact.wa_id}"
    if contact.user_id and not customer.user_id:
        fields["user_id"] = contact.user_id
    for name, value in (
        ("profile_name", contact.name),
        ("username", contact.username),
        ("country_code", contact.country_code),
    ):
        if value and getattr(customer, name) != value:
            fields[name] = value


_LEARNT_FIELDS = (
    "wa_id",
    "phone",
    "user_id",
    "profile_name",
    "username",
    "country_code",
)


def _update_customers(news: dict[int, dict[str, str]]) -> None:
    """One UPDATE … FROM (VALUES …) writing each customer's learnt fields;
    an empty value keeps what is stored."""
    if not news:
        return
    rows, params = [], []
    for pk in sorted(news):
        rows.append("(%s::bigint" + ", %s::text" * len(_LEARNT_FIELDS) + ")")
        params += [pk, *(news[pk].get(name, "") for name in _LEARNT_FIELDS)]
    names = ", ".join(_LEARNT_FIELDS)
    sets = ", ".join(
        f"{name} = CASE WHEN v.{name} <> '' THEN v.{name} ELSE c.{name} END"
        for name in _LEARNT_FIELDS
    )
    sql = (
        f"UPDATE {Customer._meta.db_table} AS c SET {sets}, updated_at = %s"  # noqa: S608
        f" FROM (VALUES {', '.join(rows)}) AS v(id, {names}) WHERE c.id = v.id"
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, *params])


def _upsert_customer(
    *, wa_id: str, profile_name: str, username: str, country_code: str
) -> tuple[Customer, bool]:
    """find_or_merge_customer for a message that names a wa_id and no BSUID,
    in one statement; return the customer and whether it was created.

    The wa_id's unique index decides (so concurrent messages from a new
    customer make one row), and the profile fields are refreshed the same
    way: non-empty values win, ``updated_at`` moves only when one changed.
    """
    sender = Sender(
        wa_id=wa_id,
        profile_name=profile_name,
        username=username,
        country_code=country_code,
    )
    customer = _upsert_customers([sender])[wa_id]
    return customer, customer.created


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
    conversation: Conversation,
    message: Message,
    *,
    inbound: bool,
    first_response_at: datetime | None = None,
    free_entry_point_expires_at: datetime | None = None,
) -> None:
    """Move the denormalised last-message fields forward in Meta's time.

    One conditional UPDATE, so concurrent or out-of-order messages converge
    on the newest; never backwards. An outbound message also sets, in the
    same statement, ``first_response_at`` and ``free_entry_point_expires_at``
    when given and not set yet.
    """
    now = timezone.now()
    at = message.timestamp
    # Hand-written: the ORM spends longer compiling these statements as
    # Case/When expressions than the database takes to run them.
    adapt = connection.ops.adapt_datetimefield_value
    newer = "(last_message_at IS NULL OR last_message_at <= %s)"
    if not inbound:
        sql = (
            f"UPDATE {Conversation._meta.db_table} SET"  # noqa: S608
            f" last_message_id = CASE WHEN {newer} THEN %s ELSE last_message_id END,"
            f" last_message_at = CASE WHEN {newer} THEN %s ELSE last_message_at END,"
            f" updated_at = CASE WHEN {newer} THEN %s ELSE updated_at END,"
            " first_response_at = COALESCE(first_response_at, %s),"
            " free_entry_point_expires_at"
            " = COALESCE(free_entry_point_expires_at, %s)"
            " WHERE id = %s"
        )
        at, now = adapt(at), adapt(now)
        params = [at, message.pk, at, at, at, now]
        params += [adapt(first_response_at), adapt(free_entry_point_expires_at)]
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, conversation.pk])
        return
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


def touch_conversations(messages: Sequence[Message]) -> None:
    """touch_conversation(inbound=True) for many stored customer messages: one
    UPDATE … FROM (VALUES …), one row per conversation with its newest
    message and how many arrived."""
    if not messages:
        return
    newest: dict[int, Message] = {}
    counts: dict[int, int] = {}
    for message in messages:
        current = newest.get(message.conversation_id)
        if current is None or (message.timestamp, message.pk) > (
            current.timestamp,
            current.pk,
        ):
            newest[message.conversation_id] = message
        counts[message.conversation_id] = counts.get(message.conversation_id, 0) + 1
    adapt = connection.ops.adapt_datetimefield_value
    rows, params = [], []
    for conversation_id in sorted(newest):
        message = newest[conversation_id]
        rows.append("(%s::bigint, %s::bigint, %s::timestamptz, %s::integer)")
        params += [
            conversation_id,
            message.pk,
            adapt(message.timestamp),
            counts[conversation_id],
        ]
    newer = "(c.last_message_at IS NULL OR c.last_message_at <= v.at)"
    sql = (
        f"UPDATE {Conversation._meta.db_table} AS c SET"  # noqa: S608
        f" last_message_id = CASE WHEN {newer} THEN v.message_id"
        " ELSE c.last_message_id END,"
        f" last_message_at = CASE WHEN {newer} THEN v.at ELSE c.last_message_at END,"
        f" updated_at = CASE WHEN {newer} THEN %s ELSE c.updated_at END,"
        " last_inbound_at = CASE WHEN c.last_inbound_at IS NULL"
        " OR c.last_inbound_at < v.at THEN v.at ELSE c.last_inbound_at END,"
        " unread_count = c.unread_count + v.count"
        f" FROM (VALUES {', '.join(rows)}) AS v(id, message_id, at, count)"
        " WHERE c.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [adapt(timezone.now()), *params])


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


# --- Sets: the customers of a batch of messages at once --------------------------


@dataclass(frozen=True)
class Sender:
    """Who wrote a message, as a webhook names them."""

    wa_id: str
    user_id: str = ""
    profile_name: str = ""
    username: str = ""
    country_code: str = ""


def sender_of(message: payloads.InboundMessage) -> Sender:
    contact = message.contact
    return Sender(
        wa_id=message.wa_id,
        user_id=message.user_id,
        profile_name=message.profile_name,
        username=contact.username if contact else "",
        country_code=contact.country_code if contact else "",
    )


def customers_for_senders(senders: Sequence[Sender]) -> dict[str, Customer] | None:
    """The customers of many senders by wa_id, found or created in one upsert
    (plus one read when some name a user id); None when a set cannot settle
    them, and the caller takes the one-by-one path (find_or_merge_customer).

    Every sender needs a wa_id. What find_or_merge_customer does for one
    sender the upsert does for all: the wa_id's unique index decides, a
    missing user id is filled in, non-empty profile fields are refreshed and
    ``updated_at`` moves only when one changed. A user id that a customer of
    another (or no) wa_id holds is a question of identity, not of a set:
    None. Each returned customer carries ``created`` (made by this call).
    """
    merged: dict[str, Sender] = {}
    for sender in senders:
        if not sender.wa_id:
            raise ValueError("customers_for_senders needs a wa_id for every sender")
        known = merged.get(sender.wa_id)
        if known is not None:
            # Later messages' non-empty values win, as they would one by one.
            sender = Sender(
                **{
                    name: getattr(sender, name) or getattr(known, name)
                    for name in Sender.__dataclass_fields__
                }
            )
        merged[sender.wa_id] = sender
    user_ids = {
        sender.user_id: wa_id for wa_id, sender in merged.items() if sender.user_id
    }
    if user_ids:
        holders = Customer.objects.filter(user_id__in=user_ids).values_list(
            "user_id", "wa_id"
        )
        if any(user_ids[user_id] != wa_id for user_id, wa_id in holders):
            return None
    return _upsert_customers(sorted(merged.values(), key=lambda sender: sender.wa_id))


def _upsert_customers(senders: list[Sender]) -> dict[str, Customer]:
    """One INSERT … ON CONFLICT (wa_id) DO UPDATE … RETURNING for all senders
    (in wa_id order, so concurrent batches lock rows in the same order)."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    table = Customer._meta.db_table
    columns = [field.column for field in Customer._meta.concrete_fields]
    refreshed = ("profile_name", "username", "country_code")
    changed = " OR ".join(
        [
            f"(excluded.{name} <> '' AND excluded.{name} <> {table}.{name})"
            for name in refreshed
        ]
        + [f"(excluded.user_id <> '' AND {table}.user_id = '')"]
    )
    sets = [
        f"{name} = CASE WHEN excluded.{name} <> '' THEN excluded.{name}"
        f" ELSE {table}.{name} END"
        for name in refreshed
    ]
    # A user id is filled in, never replaced (find_or_merge_customer).
    sets.append(
        f"user_id = CASE WHEN {table}.user_id = '' THEN excluded.user_id"
        f" ELSE {table}.user_id END"
    )
    sets.append(
        f"updated_at = CASE WHEN {changed} THEN excluded.updated_at"
        f" ELSE {table}.updated_at END"
    )
    rows, params = [], []
    for sender in senders:
        rows.append("(%s, %s, %s, %s, '', %s, %s, %s, %s)")
        params += [
            sender.wa_id,
            sender.user_id,
            f"+{sender.wa_id}" if E164_DIGITS.match(sender.wa_id) else "",
            sender.profile_name,
            sender.username,
            sender.country_code,
            now,
            now,
        ]
    sql = (
        f"INSERT INTO {table} (wa_id, user_id, phone, profile_name, name,"  # noqa: S608
        " username, country_code, created_at, updated_at) VALUES "
        + ", ".join(rows)
        + " ON CONFLICT (wa_id) WHERE NOT (wa_id = '') DO UPDATE SET "
        + ", ".join(sets)
        + " RETURNING "
        + ", ".join(columns)
        + ", "
        + _inserted_here(table)
        + " AS created"
    )
    if connection.vendor != "postgresql":
        params.append(now)
    return {customer.wa_id: customer for customer in Customer.objects.raw(sql, params)}


def _inserted_here(table: str) -> str:
    """SQL that is true on a row the upsert inserted rather than updated.
    PostgreSQL: xmax is 0 on a row this statement inserted. SQLite (the
    embedded run command, one event at a time) has no xmax: the upsert never
    touches created_at, so a row created at this statement's `now` is new."""
    if connection.vendor == "postgresql":
        return "(xmax = 0)"
    return f"({table}.created_at = %s)"


def conversations_for(
    joining: dict[tuple[int, int], datetime], *, new_customers: set[int]
) -> tuple[dict[tuple[int, int], Conversation], dict[int, str]]:
    """conversation_for for many (customer id, number id) pairs at once.

    ``joining`` maps each pair to the time of its earliest message. Each pair
    gets its unresolved conversation; else the latest resolved one, reopened
    when resolved within CONVERSATION_REOPEN_HOURS of that time; else a new
    one. One locked read (skipped for customers created just now), one
    UPDATE for the reopened, one INSERT … ON CONFLICT DO NOTHING for the
    new (a pair a concurrent message opened meanwhile is read again).
    Return the conversations by pair, and the live event owed per
    conversation id (created or updated).
    """
    window = timedelta(hours=settings.CONVERSATION_REOPEN_HOURS)
    found: dict[tuple[int, int], Conversation] = {}
    events: dict[int, str] = {}
    reopened: list[Conversation] = []
    known = [pair for pair in joining if pair[0] not in new_customers]
    since = min(joining.values(), default=None)
    for pair, conversation in _latest_conversations(known, window, since=since).items():
        if conversation.status != Conversation.Status.RESOLVED:
            found[pair] = conversation
        elif conversation.resolved_at + window >= joining[pair]:
            conversation.status = Conversation.Status.OPEN
            conversation.resolved_at = None
            reopened.append(conversation)
            found[pair] = conversation
            events[conversation.pk] = realtime.CONVERSATION_UPDATED
    if reopened:
        Conversation.objects.filter(pk__in=[c.pk for c in reopened]).update(
            status=Conversation.Status.OPEN, resolved_at=None, updated_at=timezone.now()
        )
    missing = sorted(pair for pair in joining if pair not in found)
    if missing:
        inserted = insert_or_ignore_many(
            [
                Conversation(customer_id=customer_id, number_id=number_id)
                for customer_id, number_id in missing
            ],
            keys=["customer_id", "number_id"],
        )
        for conversation in inserted:
            found[(conversation.customer_id, conversation.number_id)] = conversation
            events[conversation.pk] = realtime.CONVERSATION_CREATED
        raced = [pair for pair in missing if pair not in found]
        if raced:
            # A concurrent message opened these first (we waited for its commit).
            found.update(_latest_conversations(raced, window, since=None))
    return found, events


def _latest_conversations(
    pairs: list[tuple[int, int]], window: timedelta, *, since: datetime | None = None
) -> dict[tuple[int, int], Conversation]:
    """Per pair, the one-to-one conversation (never a group's) a message joins
    first (_CONVERSATION_TO_JOIN), among the unresolved and those resolved
    since ``since`` minus the window; locked, in id order."""
    if not pairs:
        return {}
    table = Conversation._meta.db_table
    sql = (
        f"SELECT * FROM {table} WHERE (customer_id, number_id) IN"  # noqa: S608
        " (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"
        " AND group_id = '' AND (status <> %s OR resolved_at >= %s)"
        " ORDER BY id FOR UPDATE"
    )
    oldest = (since or timezone.now()) - window
    params = [
        [customer_id for customer_id, _ in pairs],
        [number_id for _, number_id in pairs],
        Conversation.Status.RESOLVED,
        connection.ops.adapt_datetimefield_value(oldest),
    ]
    best: dict[tuple[int, int], Conversation] = {}
    for conversation in Conversation.objects.raw(sql, params):
        pair = (conversation.customer_id, conversation.number_id)
        current = best.get(pair)
        if current is None or _joins_before(conversation, current):
            best[pair] = conversation
    return best


def _joins_before(one: Conversation, other: Conversation) -> bool:
    """Whether a message joins ``one`` rather than ``other`` (_CONVERSATION_TO_JOIN)."""
    resolved = Conversation.Status.RESOLVED

    def rank(conversation: Conversation):
        at = conversation.resolved_at
        return (
            conversation.status != resolved,
            at is not None,
            at.timestamp() if at else 0.0,
            conversation.pk,
        )

    return rank(one) > rank(other)


def insert_or_ignore_many(objs: list, *, keys: list[str]) -> list:
    """insert_or_ignore for many new instances of one model in one statement;
    return those inserted (pk set), found by the ``keys`` columns that
    RETURNING gives back (those a unique constraint refused are not)."""
    if not objs:
        return []
    model = type(objs[0])
    opts = model._meta
    fields = [
        field
        for field in opts.local_concrete_fields
        if not field.generated and field is not opts.auto_field
    ]
    query = InsertQuery(model, on_conflict=OnConflict.IGNORE)
    query.insert_values(fields, objs)
    compiler = query.get_compiler(using="default")
    compiler.returning_fields = [opts.pk, *(opts.get_field(key) for key in keys)]
    [(sql, params)] = compiler.as_sql()
    by_key = {tuple(getattr(obj, key) for key in keys): obj for obj in objs}
    inserted = []
    with compiler.connection.cursor() as cursor:
        cursor.execute(sql, params)
        for pk, *values in cursor.fetchall():
            obj = by_key[tuple(values)]
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = compiler.using
            inserted.append(obj)
    return inserted
