"""The agent workspace's live socket: one per browser tab.

The consumer joins the inbox groups of the numbers the agent may see, plus
the agent's own group (access changes) and, while a conversation is open,
that conversation's group (presence and typing). On every `live.event` it
loads the stored event (once per process: workspace.event_cache), checks that
the agent may still see it, and sends the fragments the tab shows, rendered
from the same partials as the pages.

Protocol (JSON text frames):
- tab → server: {"type": "hello", "after": last applied event id, "seen":
  [ids applied in the lookback below it], "conversation": id or null,
  "filter": the inbox query string, "visible": bool}; {"type": "typing"};
  {"type": "seen"} (the open conversation was looked at).
- server → tab: {"type": "event", "id": n, "html": "...", "notify": {...}?};
  {"type": "synced", "last": n}; {"type": "fragment", "html": "..."};
  {"type": "access", "numbers": [...]}; {"type": "reload"}.
"""

import asyncio
import contextvars
import functools
import json
import logging
import time

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import WebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from accounts.models import User

from . import realtime, services, workspace
from .models import Conversation, Message
from .selectors.inbox import InboxFilter
from .selectors.thread import WindowState
from .web.context import composer_context

logger = logging.getLogger(__name__)

# Close codes: 4401 not logged in, 4400 unreadable frame.
CLOSE_UNAUTHENTICATED = 4401
# Access is re-read at least this often even without an access message.
ACCESS_RECHECK_SECONDS = 60
# A colleague's "typing" shows this long after their last keystroke.
TYPING_SHOWS_SECONDS = 6


# The hub re-joins its groups this often: channels_redis forgets a group
# member after a day (group_expiry) unless it is added again.
HUB_REJOIN_SECONDS = 3600
# At most this many events are loaded in one batch.
HUB_BATCH_LIMIT = 200


class InboxHub:
    """One channel-layer member per process and inbox, shared by its tabs.

    group_send copies a message once per member channel, and a process reads
    each copy from Redis in a round trip of its own: with one member per
    tab, 20 tabs at 50 messages/s were 1,000 reads a second, more than the
    process could do next to everything else. The hub reads each event once
    per process, loads it once (workspace.event_cache, batched with the
    events that arrived meanwhile) and hands it to its tabs' queues in
    memory, in the order it came.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.layer = get_channel_layer()
        self.channel_name: str | None = None
        self.tabs: dict[str, set] = {}
        self.tasks: list[asyncio.Task] = []
        self.open_tabs: set = set()
        self.keepalive: asyncio.Task | None = None

    async def track(self, tab: "WorkspaceConsumer") -> None:
        """Keep saying that this tab is connected while it is."""
        self.open_tabs.add(tab)
        if self.keepalive is None:
            self.keepalive = self.loop.create_task(
                self._keep_alive(), context=contextvars.Context()
            )

    async def subscribe(self, group: str, tab: "WorkspaceConsumer") -> None:
        if self.channel_name is None:
            self.channel_name = await self.layer.new_channel()
            # A fresh context: subscribe() runs inside a tab's async_to_sync,
            # whose thread executor must not be inherited (it ends with it).
            self.received = asyncio.Queue()
            self.tasks = [
                self.loop.create_task(task, context=contextvars.Context())
                for task in (self._receive(), self._route(), self._rejoin())
            ]
        tabs = self.tabs.setdefault(group, set())
        if not tabs:
            await self.layer.group_add(group, self.channel_name)
        tabs.add(tab)

    async def unsubscribe(self, group: str, tab: "WorkspaceConsumer") -> None:
        tabs = self.tabs.get(group)
        if tabs is None:
            return
        tabs.discard(tab)
        if not tabs:
            del self.tabs[group]
            await self.layer.group_discard(group, self.channel_name)
            if self.tabs.get(group):
                # A tab subscribed while the discard was on its way.
                await self.layer.group_add(group, self.channel_name)

    async def forget(self, tab: "WorkspaceConsumer") -> None:
        self.open_tabs.discard(tab)
        for group in [group for group, tabs in self.tabs.items() if tab in tabs]:
            await self.unsubscribe(group, tab)

    async def _receive(self) -> None:
        """Read events as they come; _route() loads and hands them on."""
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
                if message.get("type") == realtime.CHANNEL_MESSAGE_TYPE:
                    for event_id in message["ids"]:
                        # Tabs take one event per message (WorkspaceConsumer.dispatch).
                        self.received.put_nowait(
                            {"type": realtime.CHANNEL_MESSAGE_TYPE, "id": event_id}
                        )
            except asyncio.CancelledError:
                raise
            except Exception:
                # A Redis hiccup: tabs catch up from the database on reconnect.
                logger.warning("Inbox hub: receive failed", exc_info=True)
                await asyncio.sleep(1)

    async def _route(self) -> None:
        """Load whatever has arrived in one batch, then hand each event to
        its inbox's tabs in the order it came.

        One batch at a time: loading is Python work that threads cannot share
        (the GIL), so events that arrive during a load join the next batch.
        A quiet inbox loads each event alone; a busy one loads dozens in the
        same few queries, and never falls further behind.
        """
        while True:
            batch = [await self.received.get()]
            while not self.received.empty() and len(batch) < HUB_BATCH_LIMIT:
                batch.append(self.received.get_nowait())
            # Each event's row is rendered in the time zones of the tabs that
            # see its inbox.
            zones = {
                group: {tab.time_zone for tab in tabs}
                for group, tabs in self.tabs.items()
            }
            try:
                loaded = await workspace.event_cache.aget_many(
                    [message["id"] for message in batch],
                    lambda number_id, zones=zones: zones.get(
                        realtime.inbox_group(number_id), ()
                    ),
                )
            except Exception:
                logger.warning(
                    "Inbox hub: %d events not loaded", len(batch), exc_info=True
                )
                continue
            for message, rendered in zip(batch, loaded, strict=True):
                if rendered is None:
                    continue
                group = realtime.inbox_group(rendered.event.number_id)
                for tab in list(self.tabs.get(group, ())):
                    tab.live_queue.put_nowait(message)

    async def _keep_alive(self) -> None:
        while True:
            # Three times per LIVE_TAB_STALE_SECONDS, after which silence
            # means a dead server and the sweep closes the tabs.
            await asyncio.sleep(settings.LIVE_TAB_STALE_SECONDS / 3)
            tabs = [tab.channel_name for tab in self.open_tabs]
            if not tabs:
                continue
            try:
                await database_sync_to_async(services.keep_tabs_open)(tabs=tabs)
            except Exception:
                # Tabs not heard of are swept as closed; the next round says them.
                logger.warning("Inbox hub: keep-alive failed", exc_info=True)

    async def _rejoin(self) -> None:
        while True:
            await asyncio.sleep(HUB_REJOIN_SECONDS)
            for group in list(self.tabs):
                try:
                    await self.layer.group_add(group, self.channel_name)
                except Exception:
                    logger.warning("Inbox hub: rejoin failed", exc_info=True)


_hubs: dict[asyncio.AbstractEventLoop, InboxHub] = {}


def inbox_hub() -> InboxHub:
    """The hub of the running event loop (a server has one; tests one each)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [old for old in _hubs if old.is_closed()]:
            del _hubs[old]
        hub = _hubs[loop] = InboxHub(loop)
    return hub


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
        """Live events take a fast path on the event loop; the rest (and any
        live event it cannot settle) runs the sync handlers in a thread.

        At 50 messages/s and 20 tabs a process sends 1,000 frames/s; two
        thread hops and a connection check per frame were most of the cost.
        Messages of one tab are dispatched one at a time, in order, so the
        two paths never reorder its frames.
        """
        if message.get("type") == realtime.CHANNEL_MESSAGE_TYPE:
            frame = await self._fast_frame(message["id"])
            if frame is not None:
                if frame:
                    await self.asgi_send({"type": "websocket.send", "text": frame})
                return
        await super().dispatch(message)

    async def _fast_frame(self, event_id: int) -> str | None:
        """The frame of a live event without a query, "" to send nothing, or
        None when it needs the sync path (the conversation is open here, a
        search or order not yet rendered by this process, access due a
        re-check)."""
        if (
            not hasattr(self, "number_ids")
            or time.monotonic() - getattr(self, "access_checked", 0)
            > ACCESS_RECHECK_SECONDS
        ):
            return None
        rendered = await workspace.event_cache.aget(
            event_id, lambda number_id: [self.time_zone]
        )
        if rendered is None:
            return ""
        event = rendered.event
        if event.number_id not in self.number_ids:
            return ""
        conversation = rendered.conversation
        if event.type == realtime.AGENT_UPDATED:
            html = rendered.cached_html("agent")
        elif conversation is None or conversation.pk == self.conversation_id:
            return None
        else:
            search = None
            if self.filter.q:
                found = rendered.cached_search(self.filter.q)
                if found is None:
                    return None
                search = lambda q: found  # noqa: E731
            if self.filter.matches(
                conversation,
                user=self.user,
                user_team_ids=self.user_team_ids,
                label_ids=rendered.label_ids,
                search=search,
            ):
                html = rendered.cached_html(f"row:{self.filter.order}", self.time_zone)
            else:
                html = rendered.cached_html("removal")
        if html is None:
            return None
        payload = {"type": "event", "id": event.pk, "html": html}
        notify = self._notification(rendered)
        if notify:
            payload["notify"] = notify
        return json.dumps(payload, separators=(",", ":"))

    def _notification(self, rendered: workspace.RenderedEvent) -> dict | None:
        """A new customer message in a conversation assigned to this agent."""
        event, conversation = rendered.event, rendered.conversation
        if (
            event.type != realtime.MESSAGE_CREATED
            or conversation is None
            or conversation.assignee_id != self.user.pk
        ):
            return None
        # Loaded with the event (workspace._load_messages) for exactly these.
        message = rendered.message
        if message is None or message.direction != Message.Direction.INBOUND:
            return None
        return {
            "title": conversation.customer.display_name,
            "body": message.text[:140] or message.type,
            "conversation": conversation.pk,
        }

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
        try:
            self.user.refresh_from_db(
                fields=["is_active", "is_staff", "is_superuser", "time_zone"]
            )
        except User.DoesNotExist:
            # The account was deleted: nothing of it may stay on screen.
            self.user.is_active = False
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
                    "html": workspace.render_fragment("access_lost", {}),
                }
            )
        if not self.user.is_active:
            self.close(code=CLOSE_UNAUTHENTICATED)

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
        if kind == "hello":
            self._hello(message)
        elif kind == "typing" and self.conversation_id:
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
        after = message.get("after")
        seen = message.get("seen") or []
        if isinstance(after, int) and after >= 0:
            skip = {i for i in seen if isinstance(i, int)}
            self._catch_up(after, skip)

    def _close_conversation(self) -> None:
        self._presence("leave")
        self._leave(realtime.conversation_group(self.conversation_id))
        self.conversation_id = None
        self.viewers.clear()
        self.typing.clear()

    def _catch_up(self, after: int, skip: set[int]) -> None:
        events = workspace.event_cache.catch_up(self.number_ids, after, skip)
        if len(events) > workspace.CATCH_UP_LIMIT:
            self._send({"type": "reload"})
            return
        last = after
        for rendered in events:
            self._deliver(rendered)
            last = max(last, rendered.event.pk)
        self._send({"type": "synced", "last": last})

    # --- From the channel layer --------------------------------------------------

    def live_event(self, message):
        self._maybe_recheck_access()
        rendered = workspace.event_cache.get(message["id"])
        if rendered is not None:
            self._deliver(rendered)

    def _deliver(self, rendered: workspace.RenderedEvent) -> None:
        event = rendered.event
        if event.number_id not in self.number_ids:
            return
        html = []
        notify = None
        seen_hint = False
        conversation = rendered.conversation
        if event.type == realtime.AGENT_UPDATED:
            html.append(rendered.agent_html())
        elif conversation is not None:
            if self.filter.matches(
                conversation,
                user=self.user,
                user_team_ids=self.user_team_ids,
                label_ids=rendered.label_ids,
                search=rendered.search,
            ):
                html.append(rendered.row(self.filter.order, self.time_zone))
            else:
                html.append(workspace.render_row_removal(conversation.pk))
            is_open = conversation.pk == self.conversation_id
            if event.type in (realtime.MESSAGE_CREATED, realtime.MESSAGE_UPDATED):
                if is_open:
                    html.append(rendered.message_html(self.time_zone))
                message = rendered.message
                inbound = (
                    event.type == realtime.MESSAGE_CREATED
                    and message is not None
                    and message.direction == Message.Direction.INBOUND
                )
                if inbound and is_open:
                    seen_hint = True
                notify = self._notification(rendered)
            elif event.type == realtime.NOTE_CREATED and is_open:
                html.append(rendered.note_html(self.time_zone))
            if is_open and event.type != realtime.NOTE_CREATED:
                html.append(rendered.header_html(self.time_zone))
                window_open = WindowState.of(conversation).is_open
                if self.window_open is not None and window_open != self.window_open:
                    html.append(self._composer_html(conversation))
                self.window_open = window_open
        payload = {"type": "event", "id": event.pk, "html": "".join(html)}
        if notify:
            payload["notify"] = notify
        if seen_hint:
            # The open conversation got a customer message: a tab that is
            # looked at answers "seen" (resets unread, marks it read).
            payload["inbound"] = True
        self._send(payload)

    def _composer_html(self, conversation: Conversation) -> str:
        # Rarely needed (the window opened or closed), so rendered per tab.
        return workspace.render_fragment(
            "composer", composer_context(conversation, self.user)
        )

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
                "html": workspace.render_fragment(
                    "presence", {"viewers": viewers, "typing": typing}
                ),
                "typing": bool(typing),
            }
        )

    def _send(self, payload: dict) -> None:
        self.send(text_data=json.dumps(payload, separators=(",", ":")))
