"""A customer's message, stored once: customer, conversation, message, the
conversation's denormalised fields and the live events, in one transaction.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError
from django.utils import timezone

from .. import realtime
from ..models import (
    Conversation,
    Customer,
    Message,
    Reaction,
    WhatsAppNumber,
)
from ..whatsapp import payloads
from . import consent, customers, edits, groups, media, routing, satisfaction

logger = logging.getLogger(__name__)


class DuplicateMessage(Exception):
    """The wamid is stored already: Meta redelivered the message."""


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
    if message.type in edits.CHANGE_TYPES:
        if edits.apply_change(number=number, message=message, at=at):
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
    customer, new_customer = customers.customer_for(message)
    if message.group_id:
        # Group traffic stays out of the sender's one-to-one thread.
        conversation, conversation_event, undo = groups.group_conversation_for(
            number=number, group_id=message.group_id, sender=customer
        )
    else:
        conversation, conversation_event, undo = customers.conversation_for(
            customer=customer, number=number, at=at, new_customer=new_customer
        )
    reopened = conversation_event == realtime.CONVERSATION_UPDATED
    row = _message_row(message, conversation=conversation, at=at)
    if message.group_id:
        row.group_sender = customer
    if not customers.insert_or_ignore(row):
        if not Message.objects.filter(wamid=message.wamid).exists():
            raise IntegrityError(f"Message {message.wamid!r} could not be stored")
        # Stored already (a redelivery): leave no trace of this call.
        if undo is not None:
            undo()
        if new_customer:
            Customer.objects.filter(pk=customer.pk).delete()
        raise DuplicateMessage(message.wamid)

    if message.referral is not None:
        _record_referral(conversation, message.referral)
        if conversation_event is None:
            conversation_event = realtime.CONVERSATION_UPDATED
    if message.system is not None:
        customers.apply_system_change(customer, message.system)

    customers.touch_conversation(conversation, row, inbound=True)
    # STOP and the marketing opt-out button (consent.py).
    consent.opt_out_by_message(customer, row)
    if (
        satisfaction.answer_received(
            conversation=conversation, message=row, reopened=reopened
        )
        and reopened
    ):
        # A rating is no new request: the conversation stays resolved.
        undo()
    if conversation_event is not None:
        realtime.publish(conversation_event, conversation=conversation)
        routing.conversation_waiting(conversation)
    realtime.publish(realtime.MESSAGE_CREATED, conversation=conversation, message=row)
    media.queue_download(row)
    return row


def _message_row(
    message: payloads.InboundMessage, *, conversation: Conversation, at: datetime
) -> Message:
    """The Message row of a customer's message (not saved), linked to the
    message it replies to when that one is stored."""
    context = message.context
    reply_to = None
    if context and context.message_id:
        reply_to = (
            Message.objects.filter(
                wamid=context.message_id,
                conversation__number_id=conversation.number_id,
            )
            .only("pk")
            .first()
        )
    return _new_row(message, conversation=conversation, at=at, reply_to=reply_to)


def _new_row(
    message: payloads.InboundMessage,
    *,
    conversation: Conversation,
    at: datetime,
    reply_to: Message | None,
) -> Message:
    context = message.context
    row = Message(
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        type=message.type or "unknown",
        text=message.text,
        # Unknown and unsupported types keep the whole message for later.
        payload=dict(message.payload if message.is_supported else message.raw),
        wamid=message.wamid,
        status=Message.Status.RECEIVED,
        timestamp=at,
        error=message.error.as_dict() if message.error else None,
        reply_to=reply_to,
        context_wamid=context.message_id if context else "",
        forwarded=bool(context and context.forwarded),
        frequently_forwarded=bool(context and context.frequently_forwarded),
        referred_product=dict(context.referred_product)
        if context and context.referred_product
        else None,
        referral=dict(message.referral.raw) if message.referral else None,
    )
    # Media Meta marks failed (message-level errors) has nothing to fetch.
    media.note_media(row, message.media, failed=bool(message.errors))
    return row


def _record_referral(conversation: Conversation, referral: payloads.Referral) -> None:
    """The click-to-WhatsApp ad that brought the customer, on the conversation."""
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


# --- Sets: the ordinary messages of a batch of webhook events at once ------------


def takes_in_bulk(message: payloads.InboundMessage) -> bool:
    """Whether receive_messages stores this message, or it goes one by one.

    Only a customer's ordinary one-to-one message, named by wa_id:
    reactions, system messages (re-keying), ad referrals, anything naming no
    wa_id (a username customer is found by BSUID), group messages (a
    conversation of their own), edits and revokes (they change another
    message), media Meta marks failed and call permission replies take the
    one-by-one path (receive_message), where identity questions are settled.

    Interactive replies (reply buttons, lists, Flows' nfm_reply) go in sets
    and are stored alike by both paths (the payload, the quoted message, the
    Flow's answers for its card). A survey answer does not
    (satisfaction.may_be_answer): its rating must leave the conversation it
    reopened resolved, an undo of the reopening that only receive_message
    can make, and the thanks it sends is a send of its own. A product
    inquiry's referred_product is stored by both paths alike. A new kind of
    message belongs one by one until a set handles it.
    """
    return (
        bool(message.wa_id)
        and message.type not in {"reaction", "system", *edits.CHANGE_TYPES}
        and message.reaction is None
        and message.system is None
        and message.referral is None
        and not message.group_id
        and not message.errors
        and message.payload.get("type") != "call_permission_reply"
        and not satisfaction.may_be_answer(message)
    )


@dataclass
class StoredMessages:
    """What receive_messages stored: the rows, and the conversations it
    created (for whatever must follow a new conversation after commit)."""

    messages: list[Message] = field(default_factory=list)
    created_conversations: list[Conversation] = field(default_factory=list)


def receive_messages(
    *, received: Sequence[tuple[WhatsAppNumber, payloads.InboundMessage, datetime]]
) -> StoredMessages | None:
    """receive_message for many ordinary messages (takes_in_bulk) with a
    number of statements that does not grow with them; None, having written
    nothing, when the set cannot settle the senders (customers_for_senders)
    and every message must go one by one.

    Wamids already stored are dropped first (a redelivery changes nothing);
    customers and conversations are upserted (one unresolved per customer and
    number); messages are inserted or ignored on the wamid; each touched
    conversation's last-message fields move once; live events are published
    (one INSERT under realtime.batched(), one announcement per inbox).
    """
    stored = set(
        Message.objects.filter(
            wamid__in={message.wamid for _, message, _ in received}
        ).values_list("wamid", flat=True)
    )
    fresh: dict[str, tuple[WhatsAppNumber, payloads.InboundMessage, datetime]] = {}
    for number, message, received_at in received:
        if message.wamid not in stored and message.wamid not in fresh:
            at = message.timestamp or received_at or timezone.now()
            fresh[message.wamid] = (number, message, at)
    if not fresh:
        return StoredMessages()
    by_wa_id = customers.customers_for_senders(
        [customers.sender_of(message) for _, message, _ in fresh.values()]
    )
    if by_wa_id is None:
        return None
    joining: dict[tuple[int, int], datetime] = {}
    for number, message, at in fresh.values():
        pair = (by_wa_id[message.wa_id].pk, number.pk)
        joining[pair] = min(at, joining.get(pair, at))
    conversations, events = customers.conversations_for(
        joining,
        new_customers={c.pk for c in by_wa_id.values() if c.created},
    )
    rows = _insert_rows(fresh.values(), by_wa_id, conversations)
    joined = {row.conversation_id for row in rows}
    created = [
        conversation
        for conversation in conversations.values()
        if events.get(conversation.pk) == realtime.CONVERSATION_CREATED
    ]
    empty = [c.pk for c in created if c.pk not in joined]
    if empty:
        # Their messages were stored by a concurrent batch meanwhile: leave
        # no conversation without a message behind (as receive_message).
        Conversation.objects.filter(pk__in=empty).delete()
    _settle_touched(rows, conversations.values(), events, by_wa_id)
    return StoredMessages(
        messages=rows, created_conversations=[c for c in created if c.pk in joined]
    )


def _insert_rows(fresh, by_wa_id, conversations) -> list[Message]:
    """The messages' rows in one INSERT … ON CONFLICT DO NOTHING (a wamid a
    concurrent batch stored meanwhile is skipped), replies linked by one read."""
    quoted = {
        message.context.message_id
        for _, message, _ in fresh
        if message.context and message.context.message_id
    }
    replied = {}
    if quoted:
        replied = {
            (wamid, number_id): pk
            for pk, wamid, number_id in Message.objects.filter(
                wamid__in=quoted
            ).values_list("pk", "wamid", "conversation__number_id")
        }
    rows = []
    for number, message, at in fresh:
        conversation = conversations[(by_wa_id[message.wa_id].pk, number.pk)]
        quoted_wamid = message.context.message_id if message.context else ""
        reply_to_id = replied.get((quoted_wamid, number.pk))
        row = _new_row(message, conversation=conversation, at=at, reply_to=None)
        row.reply_to_id = reply_to_id
        rows.append(row)
    return customers.insert_or_ignore_many(rows, keys=["wamid"])


def _settle_touched(rows, conversations, events, by_wa_id) -> None:
    """One UPDATE of every touched conversation, consent, live events, media."""
    touched = {c.pk: c for c in conversations}
    customer_of = {c.pk: c for c in by_wa_id.values()}
    customers.touch_conversations(rows)
    joined = {row.conversation_id for row in rows}
    for conversation_id, event in events.items():
        if conversation_id in joined:
            realtime.publish(event, conversation=touched[conversation_id])
    _comment_on_ratings(rows, touched, events)
    # Opened or reopened: auto-assignment runs once this commits.
    routing.conversations_waiting(
        touched[conversation_id] for conversation_id in events.keys() & joined
    )
    for row in rows:
        conversation = touched[row.conversation_id]
        # STOP and the marketing opt-out button (consent.py): a query only
        # for a message that says so.
        consent.opt_out_by_message(customer_of[conversation.customer_id], row)
        realtime.publish(
            realtime.MESSAGE_CREATED, conversation=conversation, message=row
        )
        media.queue_download(row)


def _comment_on_ratings(rows, touched, events) -> None:
    """A reopened conversation's first message of the batch, as
    receive_message sees it: text written after a survey answer is its
    comment (satisfaction.answer_received)."""
    first: dict[int, Message] = {}
    for row in sorted(rows, key=lambda row: (row.timestamp, row.pk)):
        first.setdefault(row.conversation_id, row)
    for conversation_id, row in first.items():
        if events.get(conversation_id) == realtime.CONVERSATION_UPDATED:
            satisfaction.answer_received(
                conversation=touched[conversation_id], message=row, reopened=True
            )
