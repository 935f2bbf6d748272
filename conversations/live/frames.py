"""What one tab is sent for one live event: the one place that decides it.

A tab's consumer builds the frame in one of two ways, both through
frame_for(). On the event loop, without a query, from what the process has
already loaded and rendered (cached_only): the common case, where the tab
does not have the event's conversation open. When that is not enough
(NotRendered: the conversation is open here, the tab's search or order was
not settled for the event yet), the consumer builds it again in a thread,
where missing fragments are rendered and the open conversation's bubble,
note, header and composer are added. Either way the tab gets the same
frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from accounts.models import User

from .. import realtime
from ..models import Message
from ..selectors.inbox import InboxFilter
from ..selectors.thread import WindowState
from ..web.context import composer_context
from .rendering import RenderedEvent, render_fragment


class Tab(Protocol):
    """What frame_for() reads of a tab (a WorkspaceConsumer)."""

    user: User
    # The inboxes the agent may see now.
    number_ids: set[int]
    user_team_ids: set[int]
    filter: InboxFilter
    conversation_id: int | None
    # The agent's time zone: the fragments' times are shown in it.
    time_zone: str
    # The open conversation's 24-hour window as the tab last showed it
    # (None: not known yet).
    window_open: bool | None


class NotRendered(Exception):
    """The frame needs a query or a render, which only the sync path may do."""


@dataclass(frozen=True)
class Frame:
    """A tab's frame for one event, and the window it leaves the tab showing."""

    # The "event" frame's JSON; None: nothing for this tab.
    payload: dict | None
    window_open: bool | None


def frame_for(rendered: RenderedEvent, tab: Tab, *, cached_only: bool = False) -> Frame:
    """The frame this tab is sent for this event.

    Nothing when the agent may not see the event's inbox. Otherwise the
    agent's card, or the conversation's row (its removal when the
    conversation no longer matches the tab's filter), with what the open
    conversation shows of the event, and a notification for a customer
    message in a conversation assigned to the agent.

    cached_only: build it without a query or a render, or raise NotRendered.
    """
    event, conversation = rendered.event, rendered.conversation
    if event.number_id not in tab.number_ids:
        return Frame(None, tab.window_open)
    fragments = _Fragments(rendered, tab.time_zone, cached_only=cached_only)
    html = []
    window_open = tab.window_open
    inbound = False
    if event.type == realtime.AGENT_UPDATED:
        html.append(fragments.agent())
    elif conversation is not None:
        is_open = conversation.pk == tab.conversation_id
        if is_open and cached_only:
            raise NotRendered("the conversation is open in this tab")
        if is_open or rendered.changes_row:
            html.append(_row(rendered, tab, fragments))
        if is_open:
            shown, window_open, inbound = _in_open_conversation(rendered, tab)
            html += shown
    payload = {
        "type": "event",
        "id": event.pk,
        # Every event of a visible inbox reaches the tab, with or without
        # html: its stream position is how the tab knows what it lacks.
        "stream": event.number_id,
        "seq": event.sequence,
        "html": "".join(html),
    }
    notify = notification(rendered, tab.user)
    if notify:
        payload["notify"] = notify
    if inbound:
        # The open conversation got a customer message: a tab that is
        # looked at answers "seen" (resets unread, marks it read).
        payload["inbound"] = True
    return Frame(payload, window_open)


def _row(rendered: RenderedEvent, tab: Tab, fragments: _Fragments) -> str:
    """The conversation's row in the tab's order, or its removal."""
    if tab.filter.matches(
        rendered.conversation,
        user=tab.user,
        user_team_ids=tab.user_team_ids,
        label_ids=rendered.label_ids,
        search=fragments.search,
    ):
        return fragments.row(tab.filter.order)
    return fragments.removal()


def _in_open_conversation(
    rendered: RenderedEvent, tab: Tab
) -> tuple[list[str], bool | None, bool]:
    """What the tab's open conversation shows of the event, the window as it
    leaves it, and whether a customer message arrived."""
    event, conversation, zone = rendered.event, rendered.conversation, tab.time_zone
    html = []
    if event.type in (realtime.MESSAGE_CREATED, realtime.MESSAGE_UPDATED):
        html.append(rendered.message_html(zone))
    elif event.type == realtime.NOTE_CREATED:
        html.append(rendered.note_html(zone))
    elif event.data.get("merge"):
        # Two customers made one: a line in the thread at the merge's time.
        html.append(rendered.merge_html(zone))
    window_open = tab.window_open
    if event.type != realtime.NOTE_CREATED:
        html.append(rendered.header_html(zone))
        window_open = WindowState.of(conversation).is_open
        if tab.window_open is not None and window_open != tab.window_open:
            # Rarely needed (the window opened or closed), so rendered per tab.
            html.append(
                render_fragment("composer", composer_context(conversation, tab.user))
            )
    inbound = False
    if event.type == realtime.MESSAGE_CREATED:
        message = rendered.message
        inbound = message is not None and message.direction == Message.Direction.INBOUND
    return html, window_open, inbound


def notification(rendered: RenderedEvent, user: User) -> dict | None:
    """A new customer message in a conversation assigned to this agent."""
    event, conversation = rendered.event, rendered.conversation
    if (
        event.type != realtime.MESSAGE_CREATED
        or conversation is None
        or conversation.assignee_id != user.pk
    ):
        return None
    # Loaded with the event (cache._load_messages) for exactly these.
    message = rendered.message
    if message is None or message.direction != Message.Direction.INBOUND:
        return None
    return {
        "title": conversation.customer.display_name,
        "body": message.text[:140] or message.type,
        "conversation": conversation.pk,
    }


class _Fragments:
    """An event's fragments for one tab: rendered when missing, or with
    cached_only only those the process has rendered already (NotRendered
    otherwise), and the search settled the same way."""

    def __init__(self, rendered: RenderedEvent, zone: str, *, cached_only: bool):
        self.rendered = rendered
        self.zone = zone
        self.cached_only = cached_only

    def agent(self) -> str:
        if self.cached_only:
            return self._cached("agent")
        return self.rendered.agent_html()

    def row(self, order: str) -> str:
        if self.cached_only:
            return self._cached(f"row:{order}", self.zone)
        return self.rendered.row(order, self.zone)

    def removal(self) -> str:
        if self.cached_only:
            return self._cached("removal")
        return self.rendered.removal_html()

    def search(self, q: str) -> bool:
        if not self.cached_only:
            return self.rendered.search(q)
        found = self.rendered.cached_search(q)
        if found is None:
            raise NotRendered(f"no search for {q!r} yet")
        return found

    def _cached(self, key: str, zone: str | None = None) -> str:
        html = self.rendered.cached_html(key, zone)
        if html is None:
            raise NotRendered(f"{key} not rendered yet")
        return html
