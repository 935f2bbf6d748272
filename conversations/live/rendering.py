"""The workspace's fragments, rendered from one source of markup.

Every piece of the workspace is a named partial of
templates/conversations/fragments.html. Pages include them, form answers
render them here, and the live socket renders each event's fragments once
per process (RenderedEvent) for every tab that may see it, so a row or a
bubble looks the same whichever way it came.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING

from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import User

from .. import realtime
from ..models import Conversation, CustomerMerge, LiveEvent, Message, Note
from ..selectors.inbox import InboxCursor, row_sort_key, search_matches
from ..selectors.thread import WindowState, messages_queryset

if TYPE_CHECKING:
    from collections.abc import Iterable

FRAGMENTS = "conversations/fragments.html"


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
    def merge(self) -> CustomerMerge | None:
        """The customer merge an event's thread line is about (data["merge"])."""
        merge_id = self.event.data.get("merge")
        if not merge_id or self.conversation is None:
            return None
        return CustomerMerge.objects.filter(
            pk=merge_id, survivor_id=self.conversation.customer_id
        ).first()

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

    def merge_html(self, zone: str | None = None) -> str:
        return self._cached_in_zone(
            "merge",
            lambda: (
                render_fragment("merge_notice", {"merge": self.merge, "live": True})
                if self.merge
                else ""
            ),
            zone,
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

    @property
    def changes_row(self) -> bool:
        """False for a delivery tick (sent, delivered, read, failed): it
        changes the bubble in the open conversation and nothing of the row,
        which shows no message's status. A campaign's statuses are most of
        the events a process hands on; rendering no row for them keeps
        customers' messages from waiting behind them on agents' sockets."""
        return not (
            self.event.type == realtime.MESSAGE_UPDATED and "status" in self.event.data
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
        elif self.conversation is not None and self.changes_row:
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
