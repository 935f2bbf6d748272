"""The inbox hub: one channel-layer member per process and inbox.

The process' tabs subscribe to their inboxes here instead of the channel
layer; the hub reads each event once, has the event cache load and render
it once, and puts it on the queues of the tabs that watch its inbox. It
also says, for them all, which tabs of the process are still open.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from .. import realtime, services
from ..selectors.inbox import stream_positions
from . import cache

if TYPE_CHECKING:
    from .consumers import WorkspaceConsumer

logger = logging.getLogger(__name__)

# The hub re-joins its groups this often: channels_redis forgets a group
# member after a day (group_expiry) unless it is added again.
HUB_REJOIN_SECONDS = 3600
# At most this many events are loaded in one batch.
HUB_BATCH_LIMIT = 200
# Tabs are told where their inboxes' streams stand this often: a tab learns
# of a gap before the next event, but the last events of a quiet inbox have
# no next event (their channel messages lost, nothing would tell).
HUB_HEADS_SECONDS = 5.0
# The message a tab's queue gets with them.
HEADS_MESSAGE_TYPE = "live.heads"


class InboxHub:
    """One channel-layer member per process and inbox, shared by its tabs.

    group_send copies a message once per member channel, and a process reads
    each copy from Redis in a round trip of its own: with one member per
    tab, 20 tabs at 50 messages/s were 1,000 reads a second, more than the
    process could do next to everything else. The hub reads each event once
    per process, loads it once (cache.event_cache, batched with the
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

    async def track(self, tab: WorkspaceConsumer) -> None:
        """Keep saying that this tab is connected while it is."""
        self.open_tabs.add(tab)
        if self.keepalive is None:
            self.keepalive = self.loop.create_task(
                self._keep_alive(), context=contextvars.Context()
            )

    async def subscribe(self, group: str, tab: WorkspaceConsumer) -> None:
        if self.channel_name is None:
            self.channel_name = await self.layer.new_channel()
            # A fresh context: subscribe() runs inside a tab's async_to_sync,
            # whose thread executor must not be inherited (it ends with it).
            self.received = asyncio.Queue()
            self.tasks = [
                self.loop.create_task(task, context=contextvars.Context())
                for task in (
                    self._receive(),
                    self._route(),
                    self._rejoin(),
                    self._heads(),
                )
            ]
        tabs = self.tabs.setdefault(group, set())
        if not tabs:
            await self.layer.group_add(group, self.channel_name)
        tabs.add(tab)

    async def unsubscribe(self, group: str, tab: WorkspaceConsumer) -> None:
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

    async def forget(self, tab: WorkspaceConsumer) -> None:
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
                loaded = await cache.event_cache.aget_many(
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
                tabs = list(self.tabs.get(group, ()))
                for tab in tabs:
                    tab.live_queue.put_nowait(message)
                _log_handed(rendered.event, len(tabs))

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

    async def _heads(self) -> None:
        """Tell each tab the positions of its inboxes' streams (one query for
        the process)."""
        while True:
            await asyncio.sleep(HUB_HEADS_SECONDS)
            watched = {group: tabs for group, tabs in self.tabs.items() if tabs}
            if not watched:
                continue
            number_ids = {int(group.split(".", 1)[1]) for group in watched}
            try:
                heads = await database_sync_to_async(stream_positions)(number_ids)
            except Exception:
                logger.warning("Inbox hub: stream heads not read", exc_info=True)
                continue
            for group, tabs in watched.items():
                number_id = int(group.split(".", 1)[1])
                message = {
                    "type": HEADS_MESSAGE_TYPE,
                    "streams": {str(number_id): heads[number_id]},
                }
                for tab in list(tabs):
                    tab.live_queue.put_nowait(message)

    async def _rejoin(self) -> None:
        while True:
            await asyncio.sleep(HUB_REJOIN_SECONDS)
            for group in list(self.tabs):
                try:
                    await self.layer.group_add(group, self.channel_name)
                except Exception:
                    logger.warning("Inbox hub: rejoin failed", exc_info=True)


def _log_handed(event, tabs: int) -> None:
    """At DEBUG: the event went to this process' tabs, with the id of the
    request that made its change (realtime.publish), so one grep follows a
    webhook from nginx through the worker to the sockets."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    origin = event.data.get("request_id", "")
    extra = {"live_event": event.pk, **({"request_id": origin} if origin else {})}
    logger.debug(
        "Live event %s (%s) sent to %d tabs; request %s",
        event.pk,
        event.type,
        tabs,
        origin or "-",
        extra=extra,
    )


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
