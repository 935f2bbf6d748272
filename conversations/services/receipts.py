"""Courtesies to the customer: blue ticks for their newest message and the
"typing…" indicator, each sent at most once per message or interval.
"""

import logging

from django.conf import settings

from ..delivery import doorbells, ratelimit
from ..models import (
    Conversation,
    Message,
)
from ..rules import windows
from ..whatsapp import client

logger = logging.getLogger(__name__)


READ_KEY = "outbound:read:{}"


TYPING_KEY = "outbound:typing:{}"


def mark_read(*, conversation: Conversation) -> Message | None:
    """Mark the customer's newest message read (once per batch, not per message)."""
    newest = _newest_from_customer(conversation)
    Conversation.objects.filter(pk=conversation.pk).update(unread_count=0)
    if newest is None:
        return None
    try:
        fresh = ratelimit.connection().set(
            READ_KEY.format(conversation.pk), newest.wamid, get=True, ex=86400 * 30
        )
    except Exception:
        logger.warning("Read marker for conversation %s unknown", conversation.pk)
        fresh = None
    if fresh is not None and fresh.decode() == newest.wamid:
        return None
    doorbells.ring_after_commit(doorbells.SEND_READ_RECEIPT, newest.pk)
    return newest


def send_read_receipt(*, message_id: int) -> bool:
    message = Message.objects.select_related("conversation__number").get(pk=message_id)
    return client.mark_read(message.conversation.number, message.wamid)


def send_typing_indicator(*, conversation: Conversation) -> bool:
    """Show "typing…" to the customer, at most once per 20 s per conversation."""
    newest = _newest_from_customer(conversation)
    if newest is None or not windows.service_window_open(conversation):
        return False
    try:
        first = ratelimit.connection().set(
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
    doorbells.ring_after_commit(doorbells.SEND_TYPING, newest.pk)
    return True


def send_typing(*, message_id: int) -> bool:
    message = Message.objects.select_related("conversation__number").get(pk=message_id)
    return client.send_typing_indicator(message.conversation.number, message.wamid)


def _newest_from_customer(conversation: Conversation) -> Message | None:
    """The customer's newest message that WhatsApp knows (has a wamid)."""
    return (
        conversation.messages.filter(
            direction=Message.Direction.INBOUND, wamid__isnull=False
        )
        .order_by("-timestamp", "-id")
        .first()
    )
