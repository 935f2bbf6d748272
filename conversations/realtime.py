"""The one door for live updates: group names, event types, publishing.

Only services.py calls publish(). An event is a LiveEvent row written in the
transaction of the change it announces (so it exists exactly when the change
does) and, once that transaction commits, its id is sent to the channel
group of its inbox. Consumers load the row and render the same template
fragments the pages use; a tab that reconnects asks the database for the
events after the last id it applied, so a lost channel message or a frozen
Redis delays an update but never loses it.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .models import Conversation, LiveEvent, Message

logger = logging.getLogger(__name__)

MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"
NOTE_CREATED = "note.created"
EVENT_TYPES = frozenset(
    {
        MESSAGE_CREATED,
        MESSAGE_UPDATED,
        CONVERSATION_CREATED,
        CONVERSATION_UPDATED,
        NOTE_CREATED,
    }
)

# The channel-layer message type every consumer handles (live_event).
CHANNEL_MESSAGE_TYPE = "live.event"


def inbox_group(number_id: int) -> str:
    """The channel group of everyone who may see a number's conversations."""
    return f"inbox.{number_id}"


def publish(
    event_type: str,
    *,
    conversation: Conversation,
    message: Message | None = None,
    data: dict | None = None,
) -> LiveEvent:
    """Store a live event in the current transaction; announce it after commit."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown live event type {event_type!r}")
    payload = {"conversation": conversation.pk, **(data or {})}
    if message is not None:
        payload["message"] = message.pk
    event = LiveEvent.objects.create(
        number_id=conversation.number_id,
        conversation=conversation,
        type=event_type,
        data=payload,
    )
    transaction.on_commit(lambda: announce(event))
    return event


def announce(event: LiveEvent) -> None:
    """Ring the inbox group's doorbell; a failure only delays the update."""
    try:
        async_to_sync(get_channel_layer().group_send)(
            inbox_group(event.number_id),
            {"type": CHANNEL_MESSAGE_TYPE, "id": event.pk, "event": event.type},
        )
    except Exception:
        # Browsers catch up from the LiveEvent table when they reconnect or
        # poll; the change itself is already committed.
        logger.warning("Live event %s not announced", event.pk, exc_info=True)


def publish_many(
    event_type: str, *, messages: list[Message], data: dict | None = None
) -> list[LiveEvent]:
    """publish() for many messages at once: one INSERT, one announcement hop.

    Bulk delivery moves hundreds of messages per second; a row and a channel
    round trip each would cost more than the sends themselves. Each message
    needs its conversation loaded (select_related).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown live event type {event_type!r}")
    if not messages:
        return []
    events = LiveEvent.objects.bulk_create(
        [
            LiveEvent(
                number_id=message.conversation.number_id,
                conversation_id=message.conversation_id,
                type=event_type,
                data={
                    "conversation": message.conversation_id,
                    "message": message.pk,
                    "status": message.status,
                    **(data or {}),
                },
            )
            for message in messages
        ]
    )
    transaction.on_commit(lambda: announce_many(events))
    return events


def announce_many(events: list[LiveEvent]) -> None:
    """Ring the doorbells of many events in one trip into the event loop."""

    async def send_all():
        layer = get_channel_layer()
        for event in events:
            await layer.group_send(
                inbox_group(event.number_id),
                {"type": CHANNEL_MESSAGE_TYPE, "id": event.pk, "event": event.type},
            )

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("%d live events not announced", len(events), exc_info=True)
