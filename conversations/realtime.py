"""The one door for live updates: group names, event types, publishing.

Only the services (conversations/services/) and the delivery engine call
publish(). An event is a LiveEvent row written in the transaction of the
change it announces (so it exists exactly when the change does) and, once
that transaction commits, its id is sent to the channel group of its inbox.
Consumers load the row and render the same template fragments the pages use;
a tab that reconnects asks the database for the events after the last id it
applied, so a lost channel message or a frozen Redis delays an update but
never loses it.

An event keeps the id of the request that made its change (data
"request_id": the agent's HTTP request, or the webhook POST a worker
applied; never sent to browsers), and the inbox hub logs it when it hands
the event to tabs: one id followed from nginx to the tab.
"""

import asyncio
import atexit
import contextlib
import contextvars
import logging
import os
import threading

from channels.layers import get_channel_layer
from django.db import connection, transaction

from helpdesk.logs import request_id

from .models import Conversation, LiveEvent, Message

logger = logging.getLogger(__name__)

MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"
NOTE_CREATED = "note.created"
# An agent's availability, stored in every inbox the agent works in.
AGENT_UPDATED = "agent.updated"
EVENT_TYPES = frozenset(
    {
        MESSAGE_CREATED,
        MESSAGE_UPDATED,
        CONVERSATION_CREATED,
        CONVERSATION_UPDATED,
        NOTE_CREATED,
        AGENT_UPDATED,
    }
)

# The channel-layer message type of live events: {"type": ..., "ids": [...]},
# the ids of stored events of the group's inbox in the order they were made.
CHANNEL_MESSAGE_TYPE = "live.event"
# Channel-layer message types of the ephemeral messages (consumer handlers
# access_changed and presence_update): never stored.
ACCESS_MESSAGE_TYPE = "access.changed"
PRESENCE_MESSAGE_TYPE = "presence.update"


def inbox_group(number_id: int) -> str:
    """The channel group of everyone who may see a number's conversations."""
    return f"inbox.{number_id}"


# --- The announcer: one event loop per process owns the channel layer ------------
# async_to_sync(group_send) from sync code starts a new event loop and opens new
# Redis connections on every call (~5-10 ms each here), and a frozen Redis
# would hold the caller (the channel layer's sockets have no timeout). So each
# process keeps one daemon thread running one event loop that owns the
# layer's connections; announce() hands it the message and returns at once.
# The loop sends in submission order. Announcements are doorbells, not state:
# one that is dropped (queue full, Redis down, the process exiting) only
# delays an update until the tab catches up from the LiveEvent table.

# Channel-layer messages waiting for the loop, at most; past this they are
# dropped, so a frozen Redis never grows the process' memory.
ANNOUNCE_QUEUE_LIMIT = 10_000
# A group_send still unanswered after this long is abandoned...
ANNOUNCE_TIMEOUT = 3.0
# ...and what is queued in the next second is dropped without trying, so a
# backlog behind a frozen Redis drains in seconds, not hours.
ANNOUNCE_PAUSE_AFTER_FAILURE = 1.0


class _Announcer:
    """The per-process loop thread that sends channel-layer messages."""

    def __init__(self):
        self.pid = os.getpid()
        self.pending = 0
        self.dropped = 0
        self.changed = threading.Condition()
        self.down_until = 0.0
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue | None = None
        started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(started,), name="realtime-announcer", daemon=True
        )
        self.thread.start()
        started.wait(5)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.loop.create_task(self._drain())
        started.set()
        self.loop.run_forever()

    def submit(self, messages: list[tuple[str, dict]]) -> bool:
        """Queue (group, message) pairs for the loop; False when dropped."""
        with self.changed:
            if self.queue is None or self.pending + len(messages) > (
                ANNOUNCE_QUEUE_LIMIT
            ):
                self.dropped += len(messages)
                return False
            self.pending += len(messages)
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, messages)
        except RuntimeError:  # the loop is closed (interpreter shutdown)
            self._done(len(messages))
            return False
        return True

    def _done(self, count: int) -> None:
        with self.changed:
            self.pending -= count
            self.changed.notify_all()

    async def _drain(self) -> None:
        while True:
            messages = await self.queue.get()
            # Whatever else was handed over meanwhile goes in the same sends.
            while not self.queue.empty():
                messages = messages + self.queue.get_nowait()
            try:
                await self._send_all(_coalesce(messages))
            except Exception:
                logger.warning("Announcements not sent", exc_info=True)
            finally:
                self._done(len(messages))

    async def _send_all(self, messages: list[tuple[str, dict]]) -> None:
        for index, (group, message) in enumerate(messages):
            if self.loop.time() < self.down_until:
                with self.changed:
                    self.dropped += len(messages) - index
                return
            try:
                await asyncio.wait_for(
                    get_channel_layer().group_send(group, message), ANNOUNCE_TIMEOUT
                )
            except Exception:
                self.down_until = self.loop.time() + ANNOUNCE_PAUSE_AFTER_FAILURE
                with self.changed:
                    self.dropped += len(messages) - index
                logger.warning(
                    "Channel layer unavailable; %d announcements dropped (tabs "
                    "catch up from the database)",
                    len(messages) - index,
                    exc_info=True,
                )
                return

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted was sent or dropped."""
        with self.changed:
            return self.changed.wait_for(lambda: self.pending <= 0, timeout)


def _coalesce(messages: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """One live-event message per group, its ids in the order they came.

    A group_send is several Redis round trips, each waiting for the GIL in
    a busy worker: one per event fell behind a burst by seconds, one per
    group and hand-over keeps up with any rate.
    """
    coalesced: list[tuple[str, dict]] = []
    live: dict[str, dict] = {}
    for group, message in messages:
        if message.get("type") != CHANNEL_MESSAGE_TYPE:
            coalesced.append((group, message))
        elif group in live:
            live[group]["ids"].extend(message["ids"])
        else:
            live[group] = {"type": CHANNEL_MESSAGE_TYPE, "ids": list(message["ids"])}
            coalesced.append((group, live[group]))
    return coalesced


_announcer: _Announcer | None = None
_announcer_lock = threading.Lock()


def announcer() -> _Announcer:
    """This process' announcer, started on first use (again in a forked child)."""
    global _announcer
    current = _announcer
    if current is None or current.pid != os.getpid():
        with _announcer_lock:
            current = _announcer
            if current is None or current.pid != os.getpid():
                # A forked child (Celery prefork) inherits the parent's
                # object but not its thread: it starts its own.
                current = _announcer = _Announcer()
    return current


def _send(group: str, message: dict) -> None:
    _send_many([(group, message)])


def _send_many(messages: list[tuple[str, dict]]) -> None:
    """Hand channel-layer messages to the announcer; never blocks."""
    if not messages:
        return
    try:
        queued = announcer().submit(messages)
    except Exception:
        logger.warning("Announcer unavailable", exc_info=True)
        return
    if not queued:
        logger.warning(
            "Announcement queue full; %d announcements dropped", len(messages)
        )


def flush_announcements(timeout: float = 5.0) -> bool:
    """Wait (up to timeout) until this process' announcements are out."""
    current = _announcer
    if current is None or current.pid != os.getpid():
        return True
    return current.flush(timeout)


# A command or worker that exits right after a commit still rings its bells.
atexit.register(flush_announcements, 2.0)


# Events publish() holds back inside batched(), per thread.
_buffer = threading.local()


@contextlib.contextmanager
def batched():
    """Hold back publish()'s rows and write them in one INSERT at the end.

    Processing a webhook body publishes two or three events per message; one
    statement for all of them instead of one each is most of what a batch
    saves. Nested uses join the outermost. Events are written (in publish
    order, so their ids keep that order) before the block's transaction
    commits, and announced in one hand-over once it has. Inside the block
    publish() returns the event unsaved: its id is set when the block ends.
    """
    if getattr(_buffer, "events", None) is not None:
        yield
        return
    _buffer.events = []
    try:
        yield
        events = _buffer.events
    finally:
        _buffer.events = None
    if events:
        _share_origins(events)
        number_events(events)
        LiveEvent.objects.bulk_create(events)
        transaction.on_commit(lambda: announce_many(events))


# --- Where a change came from: the request id an event keeps --------------------

# While a set of webhook events is applied: the request each message's news
# came in with, by wamid (webhook_events._apply_set). The set's request id
# for log lines names them all; an event keeps only its own.
_origins: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "live_origins", default=None
)


@contextlib.contextmanager
def origins(by_wamid: dict[str, str]):
    """Inside the block an event about a message keeps the request id its
    wamid maps to; an event about no message keeps none (_share_origins)."""
    token = _origins.set(by_wamid)
    try:
        yield
    finally:
        _origins.reset(token)


def _origin(message: Message | None = None) -> str:
    by_wamid = _origins.get()
    if by_wamid is None:
        return request_id.get()
    return by_wamid.get(getattr(message, "wamid", None) or "", "")


def _with_origin(data: dict, message: Message | None = None) -> dict:
    origin = _origin(message)
    return {**data, "request_id": origin} if origin else data


def _share_origins(events: list[LiveEvent]) -> None:
    """A batch's event without a request id of its own (a conversation the
    set's messages opened or moved) takes that of the first event of its
    conversation that has one."""
    by_conversation: dict[int, str] = {}
    for event in events:
        origin = event.data.get("request_id")
        if origin and event.conversation_id:
            by_conversation.setdefault(event.conversation_id, origin)
    for event in events:
        if "request_id" not in event.data and event.conversation_id in (
            by_conversation
        ):
            event.data["request_id"] = by_conversation[event.conversation_id]


# On LiveStream's table (written out: the statement has no parameters
# but the values).
_TAKE_SEQUENCES = """
INSERT INTO conversations_livestream (number_id, last_sequence) VALUES (%s, %s)
ON CONFLICT (number_id) DO UPDATE
SET last_sequence = conversations_livestream.last_sequence + EXCLUDED.last_sequence
RETURNING last_sequence
"""


def number_events(events: list[LiveEvent]) -> None:
    """Give unsaved events the next sequence numbers of their inboxes, in
    list order.

    The counter row stays locked until the transaction ends: a concurrent
    one waits here, so an inbox's numbers are committed in order and without
    gaps (a rollback gives its numbers back). Inboxes are taken in id order,
    so two transactions of several inboxes never wait on each other.
    """
    counts: dict[int, int] = {}
    for event in events:
        counts[event.number_id] = counts.get(event.number_id, 0) + 1
    following: dict[int, int] = {}
    with connection.cursor() as cursor:
        for number_id in sorted(counts):
            cursor.execute(_TAKE_SEQUENCES, [number_id, counts[number_id]])
            following[number_id] = cursor.fetchone()[0] - counts[number_id] + 1
    for event in events:
        event.sequence = following[event.number_id]
        following[event.number_id] += 1


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
    event = LiveEvent(
        number_id=conversation.number_id,
        conversation=conversation,
        type=event_type,
        data=_with_origin(payload, message),
    )
    pending = getattr(_buffer, "events", None)
    if pending is not None:
        pending.append(event)
        return event
    number_events([event])
    event.save()
    transaction.on_commit(lambda: announce(event))
    return event


def _doorbell(event: LiveEvent) -> tuple[str, dict]:
    return inbox_group(event.number_id), {
        "type": CHANNEL_MESSAGE_TYPE,
        "ids": [event.pk],
    }


def announce(event: LiveEvent) -> None:
    """Ring the inbox group's doorbell; a failure only delays the update."""
    _send_many([_doorbell(event)])


def publish_many(
    event_type: str, *, messages: list[Message], data: dict | None = None
) -> list[LiveEvent]:
    """publish() for many messages at once: one INSERT, one announcement hop.

    Bulk delivery moves hundreds of messages per second; a row and a channel
    round trip each would cost more than the sends themselves. Each message
    needs its conversation loaded (select_related).
    """
    return _publish_changes(
        event_type,
        [
            (
                message.conversation.number_id,
                message.conversation_id,
                message.pk,
                message.status,
            )
            for message in messages
        ],
        data,
    )


def publish_statuses(
    event_type: str, *, number_id: int, changes: list[tuple[int, int, str]]
) -> list[LiveEvent]:
    """publish_many() from ids the caller already holds, without model rows.

    `changes` are (conversation id, message id, new status) of messages of
    one number: the delivery run knows them from its claim, and loading the
    rows again only to announce them was a tenth of its CPU.
    """
    return _publish_changes(
        event_type,
        [
            (number_id, conversation_id, message_id, status)
            for conversation_id, message_id, status in changes
        ],
        None,
    )


def _publish_changes(
    event_type: str, changes: list[tuple[int, int, int, str]], data: dict | None
) -> list[LiveEvent]:
    # changes: (number id, conversation id, message id, status) per message.
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown live event type {event_type!r}")
    if not changes:
        return []
    data = _with_origin(data or {})
    events = [
        LiveEvent(
            number_id=number_id,
            conversation_id=conversation_id,
            type=event_type,
            data={
                "conversation": conversation_id,
                "message": message_id,
                "status": status,
                **data,
            },
        )
        for number_id, conversation_id, message_id, status in changes
    ]
    number_events(events)
    LiveEvent.objects.bulk_create(events)
    transaction.on_commit(lambda: announce_many(events))
    return events


def announce_many(events: list[LiveEvent]) -> None:
    """Ring the doorbells of many events in one hand-over to the announcer."""
    _send_many([_doorbell(event) for event in events])


# --- Agent workspace: agents' own streams, presence and typing ------------------
# Availability is an event of every inbox the agent works in (stored like the
# others, so colleagues' tabs catch up on it). Access changes, presence and
# typing are ephemeral: they go straight through the channel layer, never to
# the LiveEvent table, and a lost one costs nothing that a reload or the next
# beat would not restore.


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
    data = _with_origin(data)
    events = [
        LiveEvent(number_id=number_id, type=event_type, data=data)
        for number_id in sorted(set(number_ids))
    ]
    number_events(events)
    LiveEvent.objects.bulk_create(events)
    for event in events:
        transaction.on_commit(lambda event=event: announce(event))
    return events


def announce_access_changed(user_ids) -> None:
    """After commit, tell these agents' tabs to re-check what they may see."""
    user_ids = sorted(set(user_ids))

    def send():
        # Consumers also re-check access on a timer, so a lost one only waits.
        _send_many(
            [
                (user_group(user_id), {"type": ACCESS_MESSAGE_TYPE})
                for user_id in user_ids
            ]
        )

    if user_ids:
        transaction.on_commit(send)


def send_presence(conversation_id: int, message: dict) -> None:
    """Pass a presence or typing note to the tabs viewing a conversation."""
    _send(
        conversation_group(conversation_id),
        {"type": PRESENCE_MESSAGE_TYPE, **message},
    )
