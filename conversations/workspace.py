"""The agent workspace's reads: inbox filters, the thread, and live rendering.

Pages (views.py) and the live socket (consumers.py) both build their
fragments here, from the same named template partials in
templates/conversations/fragments.html, so a row or a message bubble looks
the same whether it came with the page, as a form's answer or over the
socket. Writes go through services.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from urllib.parse import urlencode, urlsplit

from django.db import close_old_connections, connections
from django.db.models import Max, Prefetch, Q, QuerySet, prefetch_related_objects
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import Team, User

from . import billing, realtime
from .models import (
    CannedResponse,
    ConsentRecord,
    Conversation,
    Customer,
    Label,
    LiveEvent,
    Message,
    MessageTemplate,
    Note,
    Reaction,
    WhatsAppNumber,
)
from .rules import windows
from .whatsapp import templates as meta_templates

FRAGMENTS = "conversations/fragments.html"
INBOX_PAGE_SIZE = 50
THREAD_PAGE_SIZE = 60
# The customer panel lists at most this many of the customer's other
# conversations.
PREVIOUS_CONVERSATIONS = 10
# A reconnecting tab gets the events after its last one, and also re-reads
# this many ids below it: ids are allocated when a transaction inserts its
# event but become visible when it commits, so a lower id can appear after a
# higher one was delivered. The tab says which of those it has applied.
CATCH_UP_LOOKBACK = 50
# More missed events than this and the tab reloads instead (a fresh snapshot
# is cheaper than replaying a day).
CATCH_UP_LIMIT = 2000

VIEWS = {
    "all": "All",
    "mine": "Mine",
    "unassigned": "Unassigned",
    "teams": "My teams",
}
ORDERS = {"activity": "Last activity", "window": "Window closing"}
# The composer's emoji picker.
EMOJIS = ["😊", "👍", "🙏", "🎉", "❤️", "😂", "👋", "✅", "🙂", "😉", "🚚", "📦"]
# A search looks for text in this many of the newest matching messages (of
# the conversations the tab may show); customers' names and numbers always.
SEARCH_MESSAGE_LIMIT = 1000
# A search matching at most this many customers (and at most
# SEARCH_MESSAGE_LIMIT messages in all) hands the page's query their ids; a
# broader one, subqueries (see InboxFilter._search).
SEARCH_CUSTOMER_LIMIT = 1000


def safe_url(value) -> str:
    """The URL if it is an absolute http(s) link, else "" (no javascript:, data:)."""
    if not isinstance(value, str):
        return ""
    value = value.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        return ""
    if any(ord(char) < 32 for char in value):
        return ""
    return value


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """A moment as integer microseconds since the epoch: exact, and nothing
    in it needs escaping in a URL (the keyset cursors)."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(value) -> datetime | None:
    """The moment of to_micros(), or None when value is not such a number."""
    value = str(value or "")
    if not value.isdigit() or len(value) > 18:
        return None
    try:
        return EPOCH + int(value) * MICROSECOND
    except OverflowError:
        return None


# --- Inbox filters ---------------------------------------------------------------


@dataclass(frozen=True)
class InboxFilter:
    """What an inbox tab shows: a view, filters, a search and an order.

    apply() narrows a queryset for the page; matches() answers the same
    question for one conversation already in memory, so the live socket can
    place a changed row without a query per tab.
    """

    view: str = "all"
    status: str = "open"
    number: int | None = None
    label: int | None = None
    team: int | None = None
    q: str = ""
    order: str = "activity"

    @classmethod
    def from_query(cls, query: QueryDict | dict | str) -> InboxFilter:
        if isinstance(query, str):
            query = QueryDict(query)

        def number(name):
            value = query.get(name) or ""
            return int(value) if str(value).isdigit() else None

        view = query.get("view") or "all"
        status = query.get("status") or "open"
        order = query.get("order") or "activity"
        return cls(
            view=view if view in VIEWS else "all",
            status=status
            if status in Conversation.Status.values or status == "any"
            else "open",
            number=number("number"),
            label=number("label"),
            team=number("team"),
            q=(query.get("q") or "").strip()[:100],
            order=order if order in ORDERS else "activity",
        )

    def as_query(self, **changes) -> str:
        values = {
            "view": self.view,
            "status": self.status,
            "number": self.number or "",
            "label": self.label or "",
            "team": self.team or "",
            "q": self.q,
            "order": self.order,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    def apply(self, queryset: QuerySet, user: User) -> QuerySet:
        queryset = queryset.filter(last_message_at__isnull=False)
        if self.view == "mine":
            queryset = queryset.filter(assignee=user)
        elif self.view == "unassigned":
            queryset = queryset.filter(assignee__isnull=True)
        elif self.view == "teams":
            queryset = queryset.filter(team__in=user.teams.all())
        if self.status != "any":
            queryset = queryset.filter(status=self.status)
        if self.number:
            queryset = queryset.filter(number_id=self.number)
        if self.label:
            queryset = queryset.filter(labels__id=self.label)
        if self.team:
            queryset = queryset.filter(team_id=self.team)
        if self.q:
            queryset = queryset.filter(self._search(queryset))
        if self.order == "window":
            # Open windows only, the one closing soonest first.
            since = timezone.now() - windows.SERVICE_WINDOW
            return queryset.filter(last_inbound_at__gt=since).order_by(
                "last_inbound_at", "id"
            )
        return queryset.order_by("-last_message_at", "-id")

    def _search(self, queryset: QuerySet) -> Q:
        """Conversations of queryset whose customer matches, or that hold one
        of the newest SEARCH_MESSAGE_LIMIT matching messages.

        Every test is icontains, which PostgreSQL runs on the trigram
        indexes of migration 0007.

        A narrow search looks up its customers and its messages first, in
        two small queries, and hands the page's query their ids, which
        PostgreSQL reads by index. As two subqueries OR-ed together they
        are no index condition: PostgreSQL tests every conversation of the
        inbox against both, ~24 ms at 50,000 open conversations for a text
        found once. The messages are then all the matches of every
        conversation (at most SEARCH_MESSAGE_LIMIT, so none is beyond the
        newest SEARCH_MESSAGE_LIMIT); the page's query keeps queryset's.

        A broader search stays one query of subqueries, as a common word is
        best found walking the inbox in order until a page is full; its
        messages are the newest SEARCH_MESSAGE_LIMIT matches of queryset's
        conversations, so a common word stops there instead of reading every
        message. Both stay subqueries: alone, an IN (subquery) becomes a
        hash join over the whole inbox, and thousands of ids cost more to
        send and plan than the subqueries take to run.

        Each lookup reads about what its subquery would. The customers come
        unsorted, so a common name's scan stops early instead of reading
        all its customers; the messages newest first, as the subquery reads
        them.
        """
        customers = (
            Customer.objects.filter(
                Q(name__icontains=self.q)
                | Q(profile_name__icontains=self.q)
                | Q(phone__icontains=self.q)
                | Q(wa_id__icontains=self.q)
            )
            .order_by()
            .values_list("pk", flat=True)
        )
        hits = Message.objects.filter(text__icontains=self.q).order_by("-id")
        newest_hits = hits.filter(conversation__in=queryset.values("pk"))
        customer_ids = list(customers[: SEARCH_CUSTOMER_LIMIT + 1])
        if len(customer_ids) <= SEARCH_CUSTOMER_LIMIT:
            found = list(
                hits.values_list("pk", "conversation_id")[: SEARCH_MESSAGE_LIMIT + 1]
            )
            if len(found) <= SEARCH_MESSAGE_LIMIT:
                hit_ids = [conversation_id for _, conversation_id in found]
                return Q(customer__in=customer_ids) | Q(pk__in=hit_ids)
            # None is newer than the newest match of all: the subquery starts
            # there instead of walking back again through newer messages.
            newest_hits = newest_hits.filter(pk__lte=found[0][0])
        newest_hits = newest_hits.values("conversation_id")[:SEARCH_MESSAGE_LIMIT]
        return Q(customer__in=customers) | Q(pk__in=newest_hits)

    def matches(
        self,
        conversation: Conversation,
        *,
        user: User,
        user_team_ids: set[int],
        label_ids: set[int],
        search=None,
    ) -> bool:
        """apply() for one loaded conversation.

        search(q) answers whether the conversation matches the search text;
        without it only the customer and the last message are searched.
        """
        if conversation.last_message_at is None:
            return False
        if self.view == "mine" and conversation.assignee_id != user.pk:
            return False
        if self.view == "unassigned" and conversation.assignee_id is not None:
            return False
        if self.view == "teams" and conversation.team_id not in user_team_ids:
            return False
        if self.status != "any" and conversation.status != self.status:
            return False
        if self.number and conversation.number_id != self.number:
            return False
        if self.label and self.label not in label_ids:
            return False
        if self.team and conversation.team_id != self.team:
            return False
        if self.q:
            if search is None:
                search = partial(search_in_memory, conversation)
            if not search(self.q):
                return False
        if self.order == "window":
            since = timezone.now() - windows.SERVICE_WINDOW
            if (
                not conversation.last_inbound_at
                or conversation.last_inbound_at <= since
            ):
                return False
        return True


def search_in_memory(conversation: Conversation, q: str) -> bool:
    """Whether the customer or the last message contains q (no query)."""
    needle = q.casefold()
    customer = conversation.customer
    haystack = [
        customer.name,
        customer.profile_name,
        customer.phone,
        customer.wa_id,
        conversation.last_message.text if conversation.last_message else "",
    ]
    return any(needle in (value or "").casefold() for value in haystack)


def search_matches(conversation: Conversation, q: str) -> bool:
    """Whether a search for q finds the conversation: its customer or any of
    its messages (one indexed query when the last message does not match)."""
    if search_in_memory(conversation, q):
        return True
    return Message.objects.filter(
        conversation_id=conversation.pk, text__icontains=q
    ).exists()


def visible_conversations(user: User) -> QuerySet:
    """visible_to() without its join and DISTINCT: a list of number ids keeps
    the inbox an index scan on last_message_at (a DISTINCT would sort them
    all), and PostgreSQL plans the page's queries in a fraction of the time
    a subquery through teams took (planning was most of their cost)."""
    if user.is_staff or user.is_superuser:
        return Conversation.objects.all()
    numbers = list(WhatsAppNumber.objects.visible_to(user).values_list("pk", flat=True))
    return Conversation.objects.filter(number_id__in=numbers)


def sort_moment(conversation: Conversation, order: str) -> datetime | None:
    """The moment that places a row in the inbox's order."""
    if order == "window":
        return conversation.last_inbound_at
    return conversation.last_message_at


def row_sort_key(conversation: Conversation, order: str) -> float:
    moment = sort_moment(conversation, order)
    return moment.timestamp() * 1000 if moment else 0


@dataclass(frozen=True)
class InboxCursor:
    """A row's place in the inbox: its sort moment and its id. The next page
    starts after it.

    Every row carries its own (an input named "after"), and "Load more
    conversations" sends the one of the list's last row, so the next page
    follows whatever the list ends with by then: a row that live updates
    moved to the top is not repeated, and rows they pushed off the end (the
    list keeps the length of its pages) come back. A keyset page on the
    order's index (conv_inbox, conv_window) without OFFSET: as fast for the
    hundredth page as for the first.
    """

    moment: datetime
    conversation_id: int

    @classmethod
    def of(cls, conversation: Conversation, order: str) -> InboxCursor | None:
        moment = sort_moment(conversation, order)
        return cls(moment, conversation.pk) if moment else None

    @classmethod
    def from_query(cls, query: QueryDict | dict) -> InboxCursor | None:
        """The cursor of str(), or None when absent or malformed."""
        micros, _, conversation_id = str(query.get("after") or "").partition("-")
        moment = from_micros(micros)
        if moment is None or not conversation_id.isdigit():
            return None
        return cls(moment, int(conversation_id))

    def __str__(self) -> str:
        return f"{to_micros(self.moment)}-{self.conversation_id}"

    def rows_after(self, queryset: QuerySet, order: str) -> QuerySet:
        """The rows of an InboxFilter.apply() queryset that follow this one."""
        # The inclusive bound is the index range; the OR settles equal moments.
        if order == "window":
            return queryset.filter(last_inbound_at__gte=self.moment).filter(
                Q(last_inbound_at__gt=self.moment)
                | Q(last_inbound_at=self.moment, id__gt=self.conversation_id)
            )
        return queryset.filter(last_message_at__lte=self.moment).filter(
            Q(last_message_at__lt=self.moment)
            | Q(last_message_at=self.moment, id__lt=self.conversation_id)
        )


def inbox_context(
    user: User, inbox_filter: InboxFilter, *, after: InboxCursor | None = None
) -> dict:
    """A page of the inbox's rows (the first, or the one after `after`) and
    whether more follow, for the page or for "Load more conversations"."""
    queryset = inbox_filter.apply(
        visible_conversations(user).for_inbox(), user
    ).prefetch_related("labels")
    if inbox_filter.label or inbox_filter.view == "teams":
        # Joins through labels or teams can repeat a row.
        queryset = queryset.distinct()
    if after is not None:
        queryset = after.rows_after(queryset, inbox_filter.order)
    # One row more than a page says whether there is a next one.
    conversations = list(queryset[: INBOX_PAGE_SIZE + 1])
    more = len(conversations) > INBOX_PAGE_SIZE
    conversations = conversations[:INBOX_PAGE_SIZE]
    for conversation in conversations:
        conversation.window_state = WindowState.of(conversation)
        conversation.sort_key = row_sort_key(conversation, inbox_filter.order)
        conversation.cursor = InboxCursor.of(conversation, inbox_filter.order)
    return {
        "conversations": conversations,
        "more_conversations": more,
        "inbox_page_size": INBOX_PAGE_SIZE,
        "filter_query": inbox_filter.as_query(),
    }


# --- The conversation -------------------------------------------------------------


@dataclass
class WindowState:
    """The 24-hour service window and the 72-hour free entry point, for display."""

    expires_at: datetime | None
    is_open: bool
    free_expires_at: datetime | None
    free_open: bool

    @classmethod
    def of(cls, conversation: Conversation) -> WindowState:
        now = timezone.now()
        return cls(
            expires_at=windows.service_window_expires_at(conversation),
            is_open=windows.service_window_open(conversation, now),
            free_expires_at=conversation.free_entry_point_expires_at,
            free_open=windows.free_entry_point_open(conversation, now),
        )


def conversation_for(user: User, pk: int) -> Conversation | None:
    """A conversation the agent may see, or None (unknown and foreign look alike)."""
    return (
        visible_conversations(user)
        .for_inbox()
        .prefetch_related("labels")
        .filter(pk=pk)
        .first()
    )


def messages_queryset() -> QuerySet:
    return Message.objects.select_related(
        # notification: the business's reference on a notification's bubble.
        "reply_to",
        "sender",
        "template",
        "notification",
    ).prefetch_related(
        Prefetch(
            "reactions",
            queryset=Reaction.objects.exclude(emoji="").order_by("direction"),
        )
    )


@dataclass(frozen=True)
class ThreadCursor:
    """Where a page of the thread starts: its oldest message's (timestamp, id).

    "Load older messages" asks for the messages before it, a keyset page on
    the msg_thread index (conversation, timestamp, id): as fast for the
    thousandth page as for the first, and messages arriving meanwhile never
    shift a page.
    """

    timestamp: datetime
    message_id: int

    @classmethod
    def of(cls, message: Message) -> ThreadCursor:
        return cls(message.timestamp, message.pk)

    @classmethod
    def from_query(cls, query: QueryDict | dict) -> ThreadCursor | None:
        """The cursor of as_query(), or None when absent or malformed."""
        moment = from_micros(query.get("before_ts"))
        message_id = str(query.get("before_id") or "")
        if moment is None or not message_id.isdigit():
            return None
        return cls(moment, int(message_id))

    def as_query(self) -> str:
        return urlencode(
            {"before_ts": to_micros(self.timestamp), "before_id": self.message_id}
        )


@dataclass
class ThreadPage:
    """Messages and notes of one page of a thread, oldest first."""

    items: list
    # Set when older messages exist: where the next page starts.
    older: ThreadCursor | None


def thread_page(
    conversation: Conversation, *, before: ThreadCursor | None = None
) -> ThreadPage:
    """THREAD_PAGE_SIZE messages (the newest, or those before `before`), with
    the notes written in the time they span."""
    messages = (
        messages_queryset().filter(conversation=conversation).exclude(type="reaction")
    )
    notes = Note.objects.filter(conversation=conversation).select_related("author")
    if before is not None:
        # timestamp <= bounds the index range; the OR settles equal timestamps.
        messages = messages.filter(timestamp__lte=before.timestamp).filter(
            Q(timestamp__lt=before.timestamp)
            | Q(timestamp=before.timestamp, id__lt=before.message_id)
        )
        notes = notes.filter(created_at__lt=before.timestamp)
    messages = list(messages.order_by("-timestamp", "-id")[: THREAD_PAGE_SIZE + 1])
    older = None
    if len(messages) > THREAD_PAGE_SIZE:
        messages = messages[:THREAD_PAGE_SIZE]
        older = ThreadCursor.of(messages[-1])
        # Notes older than this page come with the older messages.
        notes = notes.filter(created_at__gte=older.timestamp)
    messages.reverse()
    items = [*messages, *notes.order_by("-created_at")[:THREAD_PAGE_SIZE]]
    items.sort(key=item_moment)
    return ThreadPage(items, older)


def thread_items(conversation: Conversation) -> list:
    """The newest messages and notes of a conversation, oldest first."""
    return thread_page(conversation).items


def item_moment(item) -> datetime:
    return item.timestamp if isinstance(item, Message) else item.created_at


def previous_conversations(
    conversation: Conversation, user: User
) -> list[Conversation]:
    """The customer's other conversations on every number the agent may see,
    newest first (PREVIOUS_CONVERSATIONS of them, each with its number)."""
    return list(
        visible_conversations(user)
        .filter(customer_id=conversation.customer_id)
        .exclude(pk=conversation.pk)
        .select_related("last_message", "number")
        .order_by("-created_at", "-id")[:PREVIOUS_CONVERSATIONS]
    )


def assignable_agents(number_id: int) -> list[User]:
    return list(
        User.objects.filter(is_active=True, teams__numbers=number_id)
        .distinct()
        .order_by("display_name", "username")
    )


def canned_responses(user: User) -> list[CannedResponse]:
    queryset = CannedResponse.objects.all()
    if not user.is_staff:
        queryset = queryset.filter(Q(team__isnull=True) | Q(team__members=user))
    return list(queryset.distinct())


def fill_canned(text: str, *, conversation: Conversation, agent: User) -> str:
    values = {
        "customer_name": conversation.customer.display_name,
        "agent_name": agent.name,
        "number_name": conversation.number.name,
    }
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def approved_templates(conversation: Conversation) -> list[MessageTemplate]:
    return list(
        MessageTemplate.objects.filter(
            waba_id=conversation.number.waba_id,
            status=MessageTemplate.Status.APPROVED,
        ).order_by("name", "language")
    )


def template_fields(template: MessageTemplate) -> dict:
    """The parameters an agent fills in for a template: the header's, the
    body's (by name when the template's are named) and the URL buttons'
    variable endings."""
    header = None
    body: list[str] = []
    buttons: list[dict] = []
    for component in template.components or []:
        kind = str(component.get("type", "")).upper()
        text = str(component.get("text", ""))
        names = _placeholders(text)
        if kind == "HEADER" and str(component.get("format", "TEXT")).upper() == "TEXT":
            header = names[0] if names else None
        elif kind == "HEADER":
            header = str(component.get("format", "")).lower()
        elif kind == "BODY":
            body = names
        elif kind == "BUTTONS":
            buttons = [
                {
                    "index": index,
                    "text": str(button.get("text", "")),
                    "url": str(button.get("url", "")),
                }
                for index, button in enumerate(component.get("buttons") or [])
                if str(button.get("type", "")).upper() == "URL"
                and _placeholders(str(button.get("url", "")))
            ]
    return {
        "header": header,
        "body": body,
        "named": meta_templates.parameter_format(template) == "NAMED",
        "buttons": buttons,
    }


def _placeholders(text: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"\{\{\s*([\w]+)\s*\}\}", text)))


def template_body_text(template: MessageTemplate) -> str:
    for component in template.components or []:
        if str(component.get("type", "")).upper() == "BODY":
            return str(component.get("text", ""))
    return ""


def latest_event_id() -> int:
    return LiveEvent.objects.aggregate(last=Max("id"))["last"] or 0


def agent_context(user: User) -> dict:
    teams = list(user.teams.all())
    return {"user_team_ids": {team.pk for team in teams}, "user_teams": teams}


def sidebar_context(user: User) -> dict:
    numbers = list(WhatsAppNumber.objects.visible_to(user).order_by("name"))
    teams = (
        Team.objects.all()
        if user.is_staff
        else Team.objects.filter(numbers__in=numbers).distinct()
    )
    colleagues = (
        User.objects.filter(is_active=True, teams__numbers__in=numbers)
        .distinct()
        .order_by("display_name", "username")
    )
    return {
        "numbers": numbers,
        "teams": list(teams),
        "labels": list(Label.objects.all()),
        "colleagues": list(colleagues[:50]),
    }


def composer_context(conversation: Conversation, user: User) -> dict:
    """What the composer renders, the same with the page, as a form's answer
    and pushed live when the window opens or closes."""
    window = WindowState.of(conversation)
    return {
        "conversation": conversation,
        "window": window,
        "canned": canned_responses(user),
        "templates": [] if window.is_open else template_choices(conversation),
        "emojis": EMOJIS,
    }


def conversation_context(conversation: Conversation, user: User) -> dict:
    """Everything the conversation pane renders (a fixed number of queries)."""
    return {
        **composer_context(conversation, user),
        **thread_context(conversation),
        **customer_context(conversation, user),
        "agents": assignable_agents(conversation.number_id),
        "number_teams": list(conversation.number.teams.all()),
        "all_labels": list(Label.objects.all()),
        "label_ids": {label.pk for label in conversation.labels.all()},
    }


def customer_context(conversation: Conversation, user: User) -> dict:
    """What the customer panel renders."""
    return {
        "conversation": conversation,
        "previous": previous_conversations(conversation, user),
        "consent": consent_state(conversation.customer_id),
        "consent_purposes": ConsentRecord.Purpose.choices,
        "cost": conversation_cost(conversation),
        "referral": referral_card(conversation.referral),
    }


def thread_context(
    conversation: Conversation, *, before: ThreadCursor | None = None
) -> dict:
    """A page of the thread, for the page or for "Load older messages"."""
    page = thread_page(conversation, before=before)
    return {
        "conversation": conversation,
        "items": page.items,
        "older_query": page.older.as_query() if page.older else "",
    }


def template_choices(conversation: Conversation) -> list[dict]:
    free = ""
    if windows.free_entry_point_open(conversation):
        free = "the free entry point of the ad is open"
    choices = []
    for template in approved_templates(conversation):
        price = None if free else billing.estimate(conversation, template)
        choices.append(
            {
                "template": template,
                "fields": template_fields(template),
                "body": template_body_text(template),
                "price": price,
                "free": free,
            }
        )
    return choices


def conversation_cost(conversation: Conversation) -> list[dict]:
    """What Meta billed for this conversation, per currency (one query)."""
    return billing.conversation_cost(conversation.pk)


def consent_state(customer_id: int) -> dict:
    state = {}
    for record in ConsentRecord.objects.filter(customer_id=customer_id).order_by(
        "recorded_at", "id"
    ):
        state[record.purpose] = record
    return {purpose: state.get(purpose) for purpose in ConsentRecord.Purpose.values}


def referral_card(referral) -> dict | None:
    """The ad that started the conversation, with only safe links and images."""
    if not isinstance(referral, dict) or not referral:
        return None
    media_type = str(referral.get("media_type") or "")
    image = safe_url(referral.get("image_url") or referral.get("thumbnail_url"))
    return {
        "headline": str(referral.get("headline") or ""),
        "body": str(referral.get("body") or ""),
        "source_type": str(referral.get("source_type") or ""),
        "source_id": str(referral.get("source_id") or ""),
        "url": safe_url(referral.get("source_url")),
        "image": image,
        "video": safe_url(referral.get("video_url")),
        "media_type": media_type,
    }


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
