"""The agent workspace's page contexts and live rendering.

Pages (views.py) and the live socket (consumers.py) both build their
fragments here, from the same named template partials in
templates/conversations/fragments.html, so a row or a message bubble looks
the same whether it came with the page, as a form's answer or over the
socket. Reads are in selectors/; writes go through services.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial

from django.db import close_old_connections, connections
from django.db.models import QuerySet, prefetch_related_objects
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import User

from . import realtime
from .models import (
    Conversation,
    LiveEvent,
    Message,
    Note,
)
from .selectors.inbox import (
    InboxCursor,
    row_sort_key,
    search_matches,
)
from .selectors.thread import (
    WindowState,
    messages_queryset,
)

FRAGMENTS = "conversations/fragments.html"
# A reconnecting tab gets the events after its last one, and also re-reads
# this many ids below it: ids are allocated when a transaction inserts its
# event but become visible when it commits, so a lower id can appear after a
# higher one was delivered. The tab says which of those it has applied.
CATCH_UP_LOOKBACK = 50
# More missed events than this and the tab reloads instead (a fresh snapshot
# is cheaper than replaying a day).
CATCH_UP_LIMIT = 2000


# --- Rendering fragments -----------------------------------------------------------


def render_fragment(name: str, context: dict) -> str:
    return render_to_string(f"{FRAGMENTS}#{name}", context)


def render_row(conversation: Conversation, order: str = "activity") -> str:
    return render_fragment(
        "row",
        {
            "conversation": conversation,
            "window": WindowState.of(conversation),
            "sort_key": row_sort_key(conversation, order),
            "cursor": InboxCursor.of(conversation, order),
            "live": True,
        },
    )


def render_row_removal(conversation_id: int) -> str:
    return render_fragment("row_removed", {"conversation_id": conversation_id})


def render_message(message: Message) -> str:
    return render_fragment("message", {"message": message, "live": True})


def render_note(note: Note) -> str:
    return render_fragment("note", {"note": note, "live": True})


@dataclass
class RenderedEvent:
    """A live event loaded once per process and rendered once per fragment.

    Fragments carry nothing specific to one agent, so every tab of the
    process that may see the event shares them; those with times in them
    (rows, bubbles, notes, the header) are rendered once per time zone, the
    times shown in the zone of the agents they go to.
    """

    event: LiveEvent
    conversation: Conversation | None
    label_ids: set[int] = field(default_factory=set)

    @cached_property
    def message(self) -> Message | None:
        message_id = self.event.data.get("message")
        if not message_id or self.conversation is None:
            return None
        return (
            messages_queryset()
            .filter(pk=message_id, conversation_id=self.conversation.pk)
            .first()
        )

    @cached_property
    def note(self) -> Note | None:
        note_id = self.event.data.get("note")
        if not note_id or self.conversation is None:
            return None
        return (
            Note.objects.select_related("author")
            .filter(pk=note_id, conversation_id=self.conversation.pk)
            .first()
        )

    @cached_property
    def agent(self) -> User | None:
        agent_id = self.event.data.get("agent")
        return User.objects.filter(pk=agent_id).first() if agent_id else None

    def search(self, q: str) -> bool:
        """search_matches() for this event's conversation, once per search text.

        A row found by an older message stays in a search's results when a
        new message that does not match arrives (the page found it the same
        way), and tabs with the same search share the query.
        """
        cache = self.__dict__.setdefault("_search", {})
        if q not in cache:
            cache[q] = search_matches(self.conversation, q)
        return cache[q]

    def row(self, order: str, zone: str | None = None) -> str:
        return self._cached_in_zone(
            f"row:{order}", lambda: render_row(self.conversation, order), zone
        )

    def message_html(self, zone: str | None = None) -> str:
        def build():
            message = self.message
            if message is None:
                return ""
            if message.type == "reaction" and message.reply_to_id:
                # A reaction shows on the message it reacts to.
                target = messages_queryset().filter(pk=message.reply_to_id).first()
                return render_message(target) if target else ""
            return render_message(message)

        return self._cached_in_zone("message", build, zone)

    def note_html(self, zone: str | None = None) -> str:
        return self._cached_in_zone(
            "note", lambda: render_note(self.note) if self.note else "", zone
        )

    def header_html(self, zone: str | None = None) -> str:
        return self._cached_in_zone(
            "header",
            lambda: render_fragment(
                "header",
                {
                    "conversation": self.conversation,
                    "window": WindowState.of(self.conversation),
                    "live": True,
                },
            ),
            zone,
        )

    def agent_html(self) -> str:
        return self._cached(
            "agent",
            lambda: (
                render_fragment("agent", {"agent": self.agent, "live": True})
                if self.agent
                else ""
            ),
        )

    def removal_html(self) -> str:
        return self._cached(
            "removal",
            lambda: (
                render_row_removal(self.conversation.pk) if self.conversation else ""
            ),
        )

    def prepare(self, zones: Iterable[str] = ()) -> RenderedEvent:
        """Load and render, once, what most tabs need (the event loop cannot):
        the row in the default order, in each of these time zones (those of
        the agents whose tabs will get it; none: the server's).

        A tab whose inbox is in the default order and that does not have
        the conversation open needs nothing else, so its frame is built on
        the event loop without a database query or a thread hop.
        """
        if self.event.type == realtime.AGENT_UPDATED:
            self.agent_html()
        elif self.conversation is not None:
            for zone in zones or [None]:
                self.row("activity", zone)
            self.removal_html()
        return self

    def cached_html(self, key: str, zone: str | None = None) -> str | None:
        """A fragment prepare() or an earlier tab rendered, else None (zone:
        for the fragments with times in them, the agent's time zone)."""
        if zone is not None:
            key = f"{key}@{zone}"
        return self.__dict__.get("_html", {}).get(key)

    def cached_search(self, q: str) -> bool | None:
        """search(q) if a tab of this process asked already, else None."""
        return self.__dict__.get("_search", {}).get(q)

    def _cached(self, key: str, build) -> str:
        cache = self.__dict__.setdefault("_html", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def _cached_in_zone(self, key: str, build, zone: str | None) -> str:
        """_cached() for a fragment with times in it: once per time zone
        (None: the server's), its times shown in that zone."""
        zone = zone or timezone.get_default_timezone().key
        return self._cached(f"{key}@{zone}", partial(render_in_zone, zone, build))


def render_in_zone(zone: str, build) -> str:
    with timezone.override(zone):
        return build()


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
