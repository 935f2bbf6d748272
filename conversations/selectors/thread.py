"""One conversation's reads: the conversation an agent may open, its thread
in keyset pages, its windows and who it may be assigned to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Prefetch, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from accounts.models import User

from ..models import (
    VIEW_ALL_NUMBERS,
    Conversation,
    CustomerMerge,
    Message,
    Note,
    Reaction,
)
from ..rules import windows
from .inbox import from_micros, to_micros, visible_conversations

THREAD_PAGE_SIZE = 60


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
        # group_sender: who wrote a group conversation's message.
        "group_sender",
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


def customer_merges(conversation: Conversation) -> list[CustomerMerge]:
    """The merges of the conversation's customer, newest first (one query;
    the customer panel lists them all, the thread shows those it spans)."""
    return list(CustomerMerge.objects.filter(survivor_id=conversation.customer_id))


def merge_shown_in(conversation: Conversation, merge: CustomerMerge) -> bool:
    """Whether a merge is a line of this conversation's thread: begun before
    it and not resolved before it (its customer's open conversations and
    those the merge moved or resolved, which it stamps with its own time);
    a conversation closed before, or begun after, does not show it."""
    if conversation.created_at > merge.merged_at:
        return False
    if conversation.status != Conversation.Status.RESOLVED:
        return True
    resolved = conversation.resolved_at
    return resolved is not None and resolved >= merge.merged_at


@dataclass
class ThreadPage:
    """Messages, notes and merge notices of one page of a thread, oldest first."""

    items: list
    # Set when older messages exist: where the next page starts.
    older: ThreadCursor | None


def thread_page(
    conversation: Conversation,
    *,
    before: ThreadCursor | None = None,
    merges: list[CustomerMerge] | None = None,
) -> ThreadPage:
    """THREAD_PAGE_SIZE messages (the newest, or those before `before`), with
    the notes written and the customer merges made in the time they span
    (merges: customer_merges(), when the caller read them already)."""
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
    if merges is None:
        merges = customer_merges(conversation)
    shown = [
        merge
        for merge in merges
        if merge_shown_in(conversation, merge)
        and (before is None or merge.merged_at < before.timestamp)
        and (older is None or merge.merged_at >= older.timestamp)
    ]
    items = [*messages, *notes.order_by("-created_at")[:THREAD_PAGE_SIZE], *shown]
    items.sort(key=item_moment)
    return ThreadPage(items, older)


def thread_items(conversation: Conversation) -> list:
    """The newest messages and notes of a conversation, oldest first."""
    return thread_page(conversation).items


def item_moment(item) -> datetime:
    if isinstance(item, Message):
        return item.timestamp
    if isinstance(item, CustomerMerge):
        return item.merged_at
    return item.created_at


def assignable_agents(number_id: int) -> list[User]:
    return list(
        User.objects.filter(is_active=True, teams__numbers=number_id)
        .distinct()
        .order_by("display_name", "username")
    )


def agents_who_may_see(number_id: int | None) -> QuerySet[User]:
    """The active agents who may see a number's conversations (and so be
    given one): its teams' members and whoever sees every number."""
    if number_id is None:
        return User.objects.none()
    # Permissions are ModelBackend's; the other backend (django-axes) only
    # refuses locked-out logins, and with two with_perm() must be told.
    everywhere = User.objects.with_perm(
        VIEW_ALL_NUMBERS,
        include_superusers=True,
        backend="django.contrib.auth.backends.ModelBackend",
    )
    return (
        User.objects.filter(is_active=True)
        .filter(Q(teams__numbers=number_id) | Q(pk__in=everywhere.values("pk")))
        .distinct()
    )
