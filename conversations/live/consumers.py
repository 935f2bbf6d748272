"""The agent workspace's live socket: one per browser tab.

The consumer joins the inbox groups of the numbers the agent may see, plus
the agent's own group (access changes) and, while a conversation is open,
that conversation's group (presence and typing). On every `live.event` it
loads the stored event (once per process: cache.event_cache), checks that
the agent may still see it, and sends the fragments the tab shows, rendered
from the same partials as the pages (frames.frame_for decides which, for
both of the ways a frame is built: see dispatch()).

Protocol (JSON text frames):
- tab → server: {"type": "hello", "streams": {"<number id>": the last
  sequence applied without a gap before it}, "conversation": id or null,
  "filter": the inbox query string, "visible": bool} (older tabs send
  "after": last applied event id and "seen": [ids applied in the lookback
  below it] instead of "streams"); {"type": "missing", "stream": number id,
  "after": s, "upto": t} (a gap: sequences s+1..t); {"type": "typing"};
  {"type": "seen"} (the open conversation was looked at).
- server → tab: {"type": "event", "id": n, "stream": number id, "seq": s,
  "html": "...", "notify": {...}?}; {"type": "synced", "last": n,
  "streams": {"<number id>": s}?}; {"type": "filled", "stream": number id,
  "upto": t}; {"type": "heads", "streams": {"<number id>": s}} (every few
  seconds: where the streams stand, so a lost last event is a gap too);
  {"type": "fragment", "html": "..."}; {"type": "access", "numbers": [...]};
  {"type": "reload"};
  {"type": "error", "code": "rate_limited" | "unavailable" (the database),
  "retry_after": seconds}.

A hello runs the catch-up and the tab's search (a missing, a catch-up of
one stream), so each socket may send LIVE_HELLO_BURST of them at once and then one every
LIVE_HELLO_INTERVAL_SECONDS; one more is answered with the rate_limited
error instead (the socket stays open, and the tab says hello again after
retry_after). Typing is relayed to colleagues TYPING_BURST times at once,
then at most once every LIVE_TYPING_INTERVAL_SECONDS per socket; more
often is dropped.
"""

import asyncio
import functools
import json
import logging
import time

from asgiref.sync import async_to_sync
from channels.exceptions import StopConsumer
from channels.generic.websocket import WebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.db import DatabaseError
from django.utils.crypto import constant_time_compare

from accounts.models import User

from .. import realtime, services
from ..models import Conversation
from ..selectors.inbox import InboxFilter, stream_positions
from ..selectors.thread import WindowState
from . import cache
from .frames import NotRendered, frame_for
from .hub import HEADS_MESSAGE_TYPE, inbox_hub
from .limits import TokenBucket
from .rendering import RenderedEvent, render_fragment

logger = logging.getLogger(__name__)

# Close codes: 4401 not logged in, 4400 unreadable frame.
CLOSE_UNAUTHENTICATED = 4401
# Access is re-read at least this often even without an access message.
ACCESS_RECHECK_SECONDS = 60
# A colleague's "typing" shows this long after their last keystroke.
TYPING_SHOWS_SECONDS = 6
# Typing notes relayed at once before LIVE_TYPING_INTERVAL_SECONDS applies:
# a tab sends one every 3 s, and the network may bunch two of them up.
TYPING_BURST = 3


def _positions(streams: dict) -> dict[int, int]:
    """A hello's {"<number id>": last contiguous sequence}, what is valid of it."""
    positions = {}
    for key, value in streams.items():
        if str(key).isdigit() and isinstance(value, int) and value >= 0:
            positions[int(key)] = value
    return positions


class WorkspaceConsumer(WebsocketConsumer):
    async def __call__(self, scope, receive, send):
        """AsyncConsumer.__call__ with a third source: the hub's live events."""
        self.scope = scope
        # The server's own send, for frames built on the event loop.
        self.asgi_send = send
        self.base_send = async_to_sync(send)
        self.live_queue: asyncio.Queue = asyncio.Queue()
        self.hub = inbox_hub()
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(
            self.channel_layer.receive, self.channel_name
        )
        try:
            await await_many_dispatch(
                [receive, self.channel_receive, self.live_queue.get], self.dispatch
            )
        except StopConsumer:
            pass
        finally:
            await self.hub.forget(self)

    async def dispatch(self, message):
        """_dispatch(), a database failure skipping the message, not the socket.

        Uncaught, the error (PostgreSQL restarting) ended the consumer and
        left the tab a socket that never sent again. A live event skipped is
        a gap the tab asks for; a hello or a gap request the tab repeats.
        """
        try:
            await self._dispatch(message)
        except DatabaseError:
            if message.get("type") == "websocket.connect":
                raise
            logger.warning(
                "Workspace socket: database unavailable, %s skipped",
                message.get("type"),
                exc_info=True,
            )
            if message.get("type") == "websocket.receive":
                # The tab says hello again then (which also covers a gap).
                text = json.dumps(
                    {"type": "error", "code": "unavailable", "retry_after": 2}
                )
                await self.asgi_send({"type": "websocket.send", "text": text})

    async def _dispatch(self, message):
        """Live events take a fast path on the event loop; the rest (and any
        live event it cannot settle) runs the sync handlers in a thread.

        At 50 messages/s and 20 tabs a process sends 1,000 frames/s; two
        thread hops and a connection check per frame were most of the cost.
        Messages of one tab are dispatched one at a time, in order, so the
        two paths never reorder its frames.
        """
        if message.get("type") == HEADS_MESSAGE_TYPE:
            streams = {
                key: head
                for key, head in message["streams"].items()
                if int(key) in getattr(self, "number_ids", ())
            }
            if streams:
                text = json.dumps({"type": "heads", "streams": streams})
                await self.asgi_send({"type": "websocket.send", "text": text})
            return
        if message.get("type") == realtime.CHANNEL_MESSAGE_TYPE:
            frame = await self._fast_frame(message["id"])
            if frame is not None:
                if frame:
                    await self.asgi_send({"type": "websocket.send", "text": frame})
                return
        await super().dispatch(message)

    async def _fast_frame(self, event_id: int) -> str | None:
        """The frame of a live event without a query, "" to send nothing, or
        None when it needs the sync path (frames.NotRendered, or access due a
        re-check)."""
        if (
            not hasattr(self, "number_ids")
            or time.monotonic() - getattr(self, "access_checked", 0)
            > ACCESS_RECHECK_SECONDS
        ):
            return None
        rendered = await cache.event_cache.aget(
            event_id, lambda number_id: [self.time_zone]
        )
        if rendered is None:
            return ""
        try:
            frame = frame_for(rendered, self, cached_only=True)
        except NotRendered:
            return None
        self.window_open = frame.window_open
        if frame.payload is None:
            return ""
        return json.dumps(frame.payload, separators=(",", ":"))

    def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.number_ids: set[int] = set()
        self.groups_joined: set[str] = set()
        self.conversation_id: int | None = None
        self.filter = InboxFilter()
        self.viewers: dict[str, str] = {}
        self.typing: dict[str, tuple[str, float]] = {}
        self.user_team_ids: set[int] = set()
        self.window_open: bool | None = None
        self.hellos = TokenBucket(
            capacity=settings.LIVE_HELLO_BURST,
            interval=settings.LIVE_HELLO_INTERVAL_SECONDS,
        )
        self.typings = TokenBucket(
            capacity=TYPING_BURST, interval=settings.LIVE_TYPING_INTERVAL_SECONDS
        )
        self.accept()
        self._join(realtime.user_group(user.pk))
        self._refresh_access()
        # Colleagues see the agent connected from now (the agent's own tab
        # hears it too, its inboxes being joined).
        services.open_tab(user=user, tab=self.channel_name)
        async_to_sync(self.hub.track)(self)

    def disconnect(self, code):
        if getattr(self, "conversation_id", None):
            self._presence("leave")
        for group in list(getattr(self, "groups_joined", ())):
            self._leave(group)
        if hasattr(self, "user"):
            services.close_tab(user=self.user, tab=self.channel_name)

    # --- Groups and access ---------------------------------------------------------

    def _join(self, group: str) -> None:
        if group not in self.groups_joined:
            if group.startswith("inbox."):
                # Inbox events come through the process' hub.
                async_to_sync(self.hub.subscribe)(group, self)
            else:
                async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
            self.groups_joined.add(group)

    def _leave(self, group: str) -> None:
        if group in self.groups_joined:
            if group.startswith("inbox."):
                async_to_sync(self.hub.unsubscribe)(group, self)
            else:
                async_to_sync(self.channel_layer.group_discard)(
                    group, self.channel_name
                )
            self.groups_joined.discard(group)

    def _refresh_access(self) -> None:
        """Re-read the inboxes the agent may see; join and leave groups to match."""
        # Read afresh, not refreshed: a user object keeps the permissions it
        # loaded once (view_all_numbers may have been taken away since).
        fresh = User.objects.filter(pk=self.user.pk).first()
        if fresh is None:
            # The account was deleted: nothing of it may stay on screen.
            self.user.is_active = False
        else:
            self.user = fresh
        # Live fragments show times in it (set before joining the inboxes:
        # their hub renders for the zones of its tabs).
        self.time_zone = self.user.zone.key
        allowed = (
            services.visible_number_ids(self.user) if self.user.is_active else set()
        )
        for number_id in self.number_ids - allowed:
            self._leave(realtime.inbox_group(number_id))
        for number_id in allowed - self.number_ids:
            self._join(realtime.inbox_group(number_id))
        lost = self.number_ids - allowed
        self.number_ids = allowed
        self.user_team_ids = set(self.user.teams.values_list("pk", flat=True))
        self.access_checked = time.monotonic()
        if lost:
            self._send({"type": "access", "numbers": sorted(allowed)})
        if self.conversation_id and not self._may_see_conversation(
            self.conversation_id
        ):
            self._close_conversation()
            self._send(
                {
                    "type": "fragment",
                    "html": render_fragment("access_lost", {}),
                }
            )
        if not self.user.is_active or not self._session_alive():
            self.close(code=CLOSE_UNAUTHENTICATED)

    def _session_alive(self) -> bool:
        """Whether the login this socket was opened with still stands: not
        expired (SESSION_COOKIE_AGE), not logged out, the password not
        changed since, as Django checks it for each page."""
        session = self.scope.get("session")
        if session is None or not session.session_key:
            return False
        stored = session.__class__(session.session_key)
        return stored.get(SESSION_KEY) == str(self.user.pk) and constant_time_compare(
            stored.get(HASH_SESSION_KEY, ""), self.user.get_session_auth_hash()
        )

    def _may_see_conversation(self, conversation_id: int) -> bool:
        return Conversation.objects.filter(
            pk=conversation_id, number_id__in=self.number_ids
        ).exists()

    def _maybe_recheck_access(self) -> None:
        if time.monotonic() - self.access_checked > ACCESS_RECHECK_SECONDS:
            self._refresh_access()

    def access_changed(self, message):
        self._refresh_access()

    # --- From the tab ---------------------------------------------------------------

    def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind in ("hello", "missing"):
            if self.hellos.take():
                if kind == "hello":
                    self._hello(message)
                else:
                    self._missing(message)
            else:
                self._send(
                    {
                        "type": "error",
                        "code": "rate_limited",
                        "retry_after": round(self.hellos.wait(), 2),
                    }
                )
        elif kind == "typing" and self.conversation_id and self.typings.take():
            self._presence("typing")
            conversation = Conversation.objects.filter(pk=self.conversation_id).first()
            if conversation is not None:
                try:
                    services.send_typing_indicator(conversation=conversation)
                except Exception:
                    logger.info("Typing indicator not sent", exc_info=True)
        elif kind == "seen" and self.conversation_id:
            conversation = Conversation.objects.filter(pk=self.conversation_id).first()
            if conversation is not None:
                services.open_conversation(conversation=conversation, agent=self.user)

    def _hello(self, message: dict) -> None:
        self._maybe_recheck_access()
        self.filter = InboxFilter.from_query(str(message.get("filter", "")))
        conversation_id = message.get("conversation")
        if isinstance(conversation_id, int) and conversation_id != self.conversation_id:
            if self.conversation_id:
                self._close_conversation()
            if self._may_see_conversation(conversation_id):
                self.conversation_id = conversation_id
                self._join(realtime.conversation_group(conversation_id))
                self._presence("join")
                conversation = Conversation.objects.get(pk=conversation_id)
                self.window_open = WindowState.of(conversation).is_open
        streams = message.get("streams")
        after = message.get("after")
        seen = message.get("seen") or []
        if isinstance(streams, dict):
            self._catch_up_streams(_positions(streams))
        elif isinstance(after, int) and after >= 0:
            skip = {i for i in seen if isinstance(i, int)}
            self._catch_up(after, skip)

    def _close_conversation(self) -> None:
        self._presence("leave")
        self._leave(realtime.conversation_group(self.conversation_id))
        self.conversation_id = None
        self.viewers.clear()
        self.typing.clear()

    def _catch_up(self, after: int, skip: set[int]) -> None:
        events = cache.event_cache.catch_up(self.number_ids, after, skip)
        if len(events) > cache.CATCH_UP_LIMIT:
            self._send({"type": "reload"})
            return
        last = after
        for rendered in events:
            self._deliver(rendered)
            last = max(last, rendered.event.pk)
        self._send({"type": "synced", "last": last})

    def _catch_up_streams(self, positions: dict[int, int]) -> None:
        """Every event of the agent's inboxes after the tab's position in
        each, then `synced` with where each stream now stands (a stream the
        tab had no position in starts where it stands now)."""
        now = stream_positions(self.number_ids)
        events = []
        for number_id in sorted(self.number_ids & positions.keys()):
            events += cache.event_cache.stream_range(number_id, positions[number_id])
            if len(events) > cache.CATCH_UP_LIMIT:
                self._send({"type": "reload"})
                return
        for rendered in sorted(events, key=lambda rendered: rendered.event.pk):
            self._deliver(rendered)
        last = max((rendered.event.pk for rendered in events), default=0)
        self._send({"type": "synced", "last": last, "streams": now})

    def _missing(self, message: dict) -> None:
        """Send the events of one stream the tab found missing: sequences
        after `after` up to `upto`, then `filled` (the tab holds everything
        up to `upto` once those are applied: numbers lower than a committed
        one are committed, or purged)."""
        self._maybe_recheck_access()
        number_id, after, upto = (
            message.get(key) for key in ("stream", "after", "upto")
        )
        if not all(isinstance(value, int) for value in (number_id, after, upto)):
            return
        if number_id not in self.number_ids or not 0 <= after < upto:
            return
        events = cache.event_cache.stream_range(number_id, after, upto)
        if len(events) > cache.CATCH_UP_LIMIT:
            self._send({"type": "reload"})
            return
        for rendered in events:
            self._deliver(rendered)
        self._send({"type": "filled", "stream": number_id, "upto": upto})

    # --- From the channel layer --------------------------------------------------

    def live_event(self, message):
        self._maybe_recheck_access()
        rendered = cache.event_cache.get(message["id"])
        if rendered is not None:
            self._deliver(rendered)

    def _deliver(self, rendered: RenderedEvent) -> None:
        frame = frame_for(rendered, self)
        self.window_open = frame.window_open
        if frame.payload is not None:
            self._send(frame.payload)

    # --- Presence and typing (ephemeral) -------------------------------------------

    def _presence(self, action: str) -> None:
        if not self.conversation_id:
            return
        realtime.send_presence(
            self.conversation_id,
            {
                "action": action,
                "channel": self.channel_name,
                "name": self.user.name,
            },
        )

    def presence_update(self, message):
        channel = message.get("channel")
        if channel == self.channel_name or not self.conversation_id:
            return
        action = message.get("action")
        name = str(message.get("name", ""))
        if action == "join":
            self.viewers[channel] = name
            # Tell the newcomer this tab is here too.
            async_to_sync(self.channel_layer.send)(
                channel,
                {
                    "type": realtime.PRESENCE_MESSAGE_TYPE,
                    "action": "here",
                    "channel": self.channel_name,
                    "name": self.user.name,
                },
            )
        elif action == "here":
            self.viewers[channel] = name
        elif action == "leave":
            self.viewers.pop(channel, None)
            self.typing.pop(channel, None)
        elif action == "typing":
            self.viewers[channel] = name
            self.typing[channel] = (name, time.monotonic())
        else:
            return
        now = time.monotonic()
        typing = sorted(
            {n for n, at in self.typing.values() if now - at < TYPING_SHOWS_SECONDS}
        )
        viewers = sorted(set(self.viewers.values()))
        self._send(
            {
                "type": "fragment",
                "html": render_fragment(
                    "presence", {"viewers": viewers, "typing": typing}
                ),
                "typing": bool(typing),
            }
        )

    def _send(self, payload: dict) -> None:
        self.send(text_data=json.dumps(payload, separators=(",", ":")))
