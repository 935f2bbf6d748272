"""The live events of this process, loaded and rendered once for all its tabs.

Every tab that may see an event is sent fragments of the same
RenderedEvent: the inbox hub loads each event once, in batches, in a thread
of the cache's own, and tabs reading the same event share it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connections
from django.db.models import QuerySet, prefetch_related_objects

from .. import realtime
from ..models import LiveEvent
from ..selectors.thread import messages_queryset
from .rendering import RenderedEvent

# A reconnecting tab gets the events after its last one, and also re-reads
# this many ids below it: ids are allocated when a transaction inserts its
# event but become visible when it commits, so a lower id can appear after a
# higher one was delivered. The tab says which of those it has applied.
CATCH_UP_LOOKBACK = 50
# More missed events than this and the tab reloads instead (a fresh snapshot
# is cheaper than replaying a day).
CATCH_UP_LIMIT = 2000


# The time zones of the tabs that see a number's inbox, by number id.
ZonesOf = Callable[[int], Iterable[str]]


class EventCache:
    """The last few hundred rendered events of this process, by id."""

    def __init__(self, size: int = 512):
        self.size = size
        self._items: OrderedDict[int, RenderedEvent] = OrderedDict()
        self._lock = threading.Lock()
        # Loads in flight, by event id (touched on the event loop only).
        self._loading: dict[int, asyncio.Future] = {}
        # Loads run one batch at a time in a thread of their own: never
        # behind a tab's sync handler, and loading is Python work that more
        # threads could not share anyway (the GIL).
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="events")

    def get(self, event_id: int) -> RenderedEvent | None:
        return self.get_many([event_id])[0]

    def get_many(self, event_ids: list[int]) -> list[RenderedEvent | None]:
        """The events with these ids, in that order (None: no such event),
        loaded together: a few queries for a whole batch, not a few each."""
        with self._lock:
            cached = {pk: self._items[pk] for pk in event_ids if pk in self._items}
        missing = [pk for pk in event_ids if pk not in cached]
        if missing:
            for rendered in self.put_many(
                list(_live_events().filter(pk__in=missing).order_by("pk"))
            ):
                cached[rendered.event.pk] = rendered
        return [cached.get(pk) for pk in event_ids]

    async def aget(
        self, event_id: int, zones_of: ZonesOf | None = None
    ) -> RenderedEvent | None:
        """get() and prepare() for the event loop."""
        return (await self.aget_many([event_id], zones_of))[0]

    async def aget_many(
        self, event_ids: list[int], zones_of: ZonesOf | None = None
    ) -> list[RenderedEvent | None]:
        """get_many() and prepare() for the event loop: one thread hop per
        batch and process, however many tabs ring at once (they share it).
        zones_of(number_id): the time zones of the tabs that see that number's
        inbox, each event's row rendered in them (none: the server's)."""
        with self._lock:
            ready = {
                pk: rendered
                for pk in event_ids
                if (rendered := self._items.get(pk)) is not None
                and rendered.__dict__.get("_prepared")
            }
        wanted = [pk for pk in event_ids if pk not in ready and pk not in self._loading]
        if wanted:
            loading = asyncio.get_running_loop().run_in_executor(
                self._loader, self._get_prepared, wanted, zones_of
            )
            for pk in wanted:
                self._loading[pk] = loading

            def forget(_):
                for pk in wanted:
                    self._loading.pop(pk, None)

            loading.add_done_callback(forget)
        waits = {self._loading[pk] for pk in event_ids if pk not in ready}
        for future in waits:
            # Shielded: a tab closing while it waits must not cancel the load
            # the others wait for.
            for rendered in await asyncio.shield(future):
                if rendered is not None:
                    ready[rendered.event.pk] = rendered
        return [ready.get(pk) for pk in event_ids]

    def _get_prepared(
        self, event_ids: list[int], zones_of: ZonesOf | None = None
    ) -> list[RenderedEvent | None]:
        # As database_sync_to_async: drop a connection that broke or aged out
        # (a pooled one goes back to the pool after each batch).
        close_old_connections()
        try:
            loaded = self.get_many(event_ids)
            present = [rendered for rendered in loaded if rendered is not None]
            _load_messages(present)
            for rendered in present:
                rendered.prepare(zones_of(rendered.event.number_id) if zones_of else ())
                rendered.__dict__["_prepared"] = True
            return loaded
        finally:
            close_old_connections()

    def close(self) -> None:
        """Close the loader thread's database connection and stop the thread."""
        self._loader.submit(connections.close_all).result()
        self._loader.shutdown()

    def put_many(self, events: list[LiveEvent]) -> list[RenderedEvent]:
        conversations = [e.conversation for e in events if e.conversation is not None]
        # Rows show the labels; one query for every conversation of the batch.
        prefetch_related_objects(conversations, "labels")
        batch = [
            RenderedEvent(
                event,
                event.conversation,
                {label.pk for label in event.conversation.labels.all()}
                if event.conversation is not None
                else set(),
            )
            for event in events
        ]
        with self._lock:
            for rendered in batch:
                self._items[rendered.event.pk] = rendered
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return batch

    def catch_up(self, number_ids, after: int, skip: set[int]) -> list[RenderedEvent]:
        """Events of these inboxes after `after` (and in the lookback), oldest first."""
        floor = max(after - CATCH_UP_LOOKBACK, 0)
        events = list(
            _live_events()
            .filter(number_id__in=list(number_ids), pk__gt=floor)
            .exclude(pk__in=list(skip))
            .order_by("pk")[: CATCH_UP_LIMIT + 1]
        )
        return self.put_many(events)

    def stream_range(
        self, number_id: int, after: int, upto: int | None = None
    ) -> list[RenderedEvent]:
        """Events of one inbox whose sequence is above `after` (up to `upto`),
        in stream order: what a tab lacks from that stream."""
        events = _live_events().filter(number_id=number_id, sequence__gt=after)
        if upto is not None:
            events = events.filter(sequence__lte=upto)
        return self.put_many(list(events.order_by("sequence")[: CATCH_UP_LIMIT + 1]))


def _live_events() -> QuerySet:
    """Live events with what every tab's fragments show of their conversation."""
    return LiveEvent.objects.select_related(
        "conversation__customer",
        "conversation__number",
        "conversation__assignee",
        "conversation__team",
        "conversation__last_message",
    )


def _load_messages(batch: list[RenderedEvent]) -> None:
    """Set RenderedEvent.message, in one query for the batch, where a tab
    without the conversation open needs it: a new message in an assigned
    conversation may notify its assignee. (Tabs with the conversation open
    take the sync path, which loads it.)"""
    waiting = [
        rendered
        for rendered in batch
        if "message" not in rendered.__dict__
        and rendered.event.type == realtime.MESSAGE_CREATED
        and rendered.conversation is not None
        and rendered.conversation.assignee_id is not None
        and rendered.event.data.get("message")
    ]
    if not waiting:
        return
    found = messages_queryset().in_bulk(
        {rendered.event.data["message"] for rendered in waiting}
    )
    for rendered in waiting:
        message = found.get(rendered.event.data["message"])
        # As RenderedEvent.message: only a message of the event's conversation.
        if message is not None and message.conversation_id != rendered.conversation.pk:
            message = None
        rendered.__dict__["message"] = message


event_cache = EventCache()
