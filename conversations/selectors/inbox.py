"""The inbox's reads: which conversations a tab lists, in which order, and
where a page of them starts.

InboxFilter is what a tab shows; apply() narrows the page's query and
matches() answers the same question for one conversation already loaded, so
the live socket places a changed row without a query per tab.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import urlencode

from django.db.models import Max, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from accounts.models import User

from ..models import (
    Conversation,
    Customer,
    LiveEvent,
    LiveStream,
    Message,
    WhatsAppNumber,
    sees_every_number,
)
from ..rules import windows

INBOX_PAGE_SIZE = 50

VIEWS = {
    "all": "All",
    "mine": "Mine",
    "unassigned": "Unassigned",
    "teams": "My teams",
}
ORDERS = {
    "activity": "Last activity",
    "window": "Window closing",
    # Service levels: the earliest real deadline first (a step's due time,
    # or the customer service window's close when it comes first).
    "due": "Due soonest",
}
# The orders whose rows run from the earliest moment down.
ASCENDING_ORDERS = frozenset({"window", "due"})
# A search looks for text in this many of the newest matching messages (of
# the conversations the tab may show); customers' names and numbers always.
SEARCH_MESSAGE_LIMIT = 1000
# A search matching at most this many customers (and at most
# SEARCH_MESSAGE_LIMIT messages in all) hands the page's query their ids; a
# broader one, subqueries (see InboxFilter._search).
SEARCH_CUSTOMER_LIMIT = 1000


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
        if self.order == "due":
            return queryset.filter(service_level__attention_at__isnull=False).order_by(
                "service_level__attention_at", "id"
            )
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
                | Q(username__icontains=self.q)
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
        if self.order == "due" and sort_moment(conversation, "due") is None:
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
        customer.username,
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
    if sees_every_number(user):
        return Conversation.objects.all()
    numbers = list(WhatsAppNumber.objects.visible_to(user).values_list("pk", flat=True))
    return Conversation.objects.filter(number_id__in=numbers)


def sort_moment(conversation: Conversation, order: str) -> datetime | None:
    """The moment that places a row in the inbox's order."""
    if order == "window":
        return conversation.last_inbound_at
    if order == "due":
        level = getattr(conversation, "service_level", None)
        return level.attention_at if level is not None else None
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
        if order == "due":
            moment = "service_level__attention_at"
            return queryset.filter(**{f"{moment}__gte": self.moment}).filter(
                Q(**{f"{moment}__gt": self.moment})
                | Q(**{moment: self.moment}, id__gt=self.conversation_id)
            )
        if order == "window":
            return queryset.filter(last_inbound_at__gte=self.moment).filter(
                Q(last_inbound_at__gt=self.moment)
                | Q(last_inbound_at=self.moment, id__gt=self.conversation_id)
            )
        return queryset.filter(last_message_at__lte=self.moment).filter(
            Q(last_message_at__lt=self.moment)
            | Q(last_message_at=self.moment, id__lt=self.conversation_id)
        )


@dataclass
class InboxPage:
    """One page of an inbox's rows, in the filter's order."""

    conversations: list[Conversation]
    # Whether another page follows.
    more: bool


def inbox_page(
    user: User, inbox_filter: InboxFilter, *, after: InboxCursor | None = None
) -> InboxPage:
    """The first page of the rows the agent may see through this filter, or
    the one after `after` (INBOX_PAGE_SIZE rows, each with its labels)."""
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
    return InboxPage(conversations[:INBOX_PAGE_SIZE], more)


def latest_event_id() -> int:
    """The newest live event's id: a page reads it before any state, and its
    tab catches up from there."""
    return LiveEvent.objects.aggregate(last=Max("id"))["last"] or 0


def stream_positions(number_ids) -> dict[int, int]:
    """Each inbox's last sequence number given out (0: none yet).

    Read before the events: every number up to a position is committed."""
    found = dict(
        LiveStream.objects.filter(number_id__in=list(number_ids)).values_list(
            "number_id", "last_sequence"
        )
    )
    return {number_id: found.get(number_id, 0) for number_id in number_ids}
