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


# --- Agent workspace: agents' own streams, presence and typing ------------------
# Availability is an event of every inbox the agent works in (stored like the
# others, so colleagues' tabs catch up on it). Access changes, presence and
# typing are ephemeral: they go straight through the channel layer, never to
# the LiveEvent table, and a lost one costs nothing that a reload or the next
# beat would not restore.

AGENT_UPDATED = "agent.updated"
# Rebound rather than edited above so this section stays self-contained.
EVENT_TYPES = EVENT_TYPES | {AGENT_UPDATED}

# Channel-layer message types of the ephemeral messages (consumer handlers
# access_changed and presence_update).
ACCESS_MESSAGE_TYPE = "access.changed"
PRESENCE_MESSAGE_TYPE = "presence.update"


def user_group(user_id: int) -> str:
    """The channel group of one agent's tabs (control messages)."""
    return f"user.{user_id}"


def conversation_group(conversation_id: int) -> str:
    """The channel group of the tabs that have one conversation open."""
    return f"conversation.{conversation_id}"


def publish_agent(event_type: str, *, number_ids, data: dict) -> list[LiveEvent]:
    """Store an agent-level event in each inbox given; announce after commit."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown live event type {event_type!r}")
    events = [
        LiveEvent.objects.create(number_id=number_id, type=event_type, data=data)
        for number_id in sorted(set(number_ids))
    ]
    for event in events:
        transaction.on_commit(lambda event=event: announce(event))
    return events


def announce_access_changed(user_ids) -> None:
    """After commit, tell these agents' tabs to re-check what they may see."""
    user_ids = sorted(set(user_ids))

    def send():
        try:
            layer = get_channel_layer()
            for user_id in user_ids:
                async_to_sync(layer.group_send)(
                    user_group(user_id), {"type": ACCESS_MESSAGE_TYPE}
                )
        except Exception:
            # Consumers also re-check access on a timer.
            logger.warning("Access change not announced", exc_info=True)

    if user_ids:
        transaction.on_commit(send)


def send_presence(conversation_id: int, message: dict) -> None:
    """Pass a presence or typing note to the tabs viewing a conversation."""
    try:
        async_to_sync(get_channel_layer().group_send)(
            conversation_group(conversation_id),
            {"type": PRESENCE_MESSAGE_TYPE, **message},
        )
    except Exception:
        logger.info("Presence for conversation %s not sent", conversation_id)


# --- End of agent workspace ---------------------------------------------------
