"""The workspace over time: older history, snoozes waking on schedule, and
live rows in a searched inbox."""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from conversations import realtime, services, tasks
from conversations.live import cache
from conversations.models import Conversation, LiveEvent, Message, Note
from conversations.selectors.inbox import InboxFilter
from conversations.selectors.thread import THREAD_PAGE_SIZE, ThreadCursor
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

PAGE = THREAD_PAGE_SIZE


def bubble_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'id="msg-(\d+)"', html)]


def older_link(html: str) -> str | None:
    match = re.search(r'class="load-older" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def long_conversation(number, count: int) -> tuple[Conversation, list[Message]]:
    """count messages a minute apart, except the middle ones, which share one
    timestamp across a page boundary (the id settles their order)."""
    conversation = ConversationFactory(number=number)
    start = timezone.now() - timedelta(days=2)
    shared = start + timedelta(minutes=count // 2)
    messages = []
    for index in range(count):
        at = start + timedelta(minutes=index)
        if abs(index - (count - PAGE)) <= 3:
            at = shared
        messages.append(
            MessageFactory(conversation=conversation, text=f"m{index}", timestamp=at)
        )
    messages.sort(key=lambda message: (message.timestamp, message.pk))
    last = messages[-1]
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=last, last_message_at=last.timestamp
    )
    return conversation, messages


def test_older_messages_load_page_by_page_without_gaps_or_repeats(
    agent_client, number, agent
):
    conversation, messages = long_conversation(number, 2 * PAGE + 10)
    # A note among the oldest messages comes with their page.
    note = Note.objects.create(
        conversation=conversation, author=agent, body="Called the customer"
    )
    Note.objects.filter(pk=note.pk).update(
        created_at=messages[5].timestamp + timedelta(seconds=1)
    )

    page = agent_client.get(reverse("conversations:detail", args=[conversation.pk]))
    html = page.content.decode()
    shown = bubble_ids(html)
    assert shown == [message.pk for message in messages[-PAGE:]]
    assert "Called the customer" not in html

    seen = list(shown)
    link = older_link(html)
    pages = 0
    while link:
        answer = agent_client.get(link, HTTP_HX_REQUEST="true")
        assert answer.status_code == 200
        body = answer.content.decode()
        # The same bubble partial the page uses, placed by its timestamp.
        assert 'data-live="upsert" data-live-into="#thread"' in body
        assert 'id="thread-older"' in body
        seen = bubble_ids(body) + seen
        link = older_link(body)
        pages += 1
    assert pages == 2
    assert seen == [message.pk for message in messages]
    assert "Called the customer" in body


def test_older_messages_are_only_for_agents_who_may_see_the_conversation(
    client, number, other_number_agent
):
    conversation, messages = long_conversation(number, PAGE + 5)
    cursor = ThreadCursor.of(messages[-PAGE])
    url = reverse("conversations:older", args=[conversation.pk])
    client.force_login(other_number_agent)
    assert client.get(f"{url}?{cursor.as_query()}").status_code == 404


def test_a_malformed_cursor_is_refused(agent_client, number):
    conversation, _ = long_conversation(number, 3)
    url = reverse("conversations:older", args=[conversation.pk])
    for query in (
        "",
        "before_ts=x&before_id=1",
        "before_ts=1",
        "before_ts=999999999999999999&before_id=1",
        "before_ts=" + "9" * 30 + "&before_id=1",
    ):
        assert agent_client.get(f"{url}?{query}").status_code == 400, query


@pytest.fixture
def other_number_agent(db):
    from tests.factories import TeamFactory, UserFactory, WhatsAppNumberFactory

    team = TeamFactory(name="Elsewhere")
    WhatsAppNumberFactory().teams.add(team)
    stranger = UserFactory(username="stranger")
    stranger.teams.add(team)
    return stranger


# --- Snoozes ------------------------------------------------------------------------


def test_beat_wakes_snoozed_conversations_every_minute():
    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "conversations.tasks.wake_snoozed_conversations"
    ]
    assert len(entries) == 1
    assert entries[0]["schedule"] <= 60
    assert tasks.wake_snoozed_conversations.name == entries[0]["task"]


def test_a_snoozed_conversation_past_its_time_reopens_and_is_published(
    number, agent, django_capture_on_commit_callbacks, monkeypatch
):
    due = ConversationFactory(number=number)
    later = ConversationFactory(number=number)
    with django_capture_on_commit_callbacks(execute=True):
        for conversation, minutes in ((due, 1), (later, 90)):
            services.change_status(
                conversation=conversation,
                status="snoozed",
                snoozed_until=timezone.now() + timedelta(minutes=minutes),
                by=agent,
            )
    Conversation.objects.filter(pk=due.pk).update(
        snoozed_until=timezone.now() - timedelta(seconds=1)
    )
    announced = []
    monkeypatch.setattr(realtime, "announce", announced.append)
    before = LiveEvent.objects.order_by("-pk").values_list("pk", flat=True).first()

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.wake_snoozed_conversations() == 1

    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, due.snoozed_until) == ("open", None)
    assert later.status == "snoozed"
    event = LiveEvent.objects.get(pk__gt=before or 0)
    assert event.conversation_id == due.pk
    assert event.type == realtime.CONVERSATION_UPDATED
    assert event.data["status"] == "open" and event.data["by"] is None
    assert announced == [event]


# --- Live rows in a searched inbox ---------------------------------------------------


def searched(number, text_of_old: str, text_of_new: str):
    """A conversation with an older message and a newer one, its event loaded."""
    conversation = ConversationFactory(number=number, customer__profile_name="Ina")
    now = timezone.now()
    MessageFactory(
        conversation=conversation, text=text_of_old, timestamp=now - timedelta(hours=1)
    )
    message = MessageFactory(conversation=conversation, text=text_of_new, timestamp=now)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message, last_message_at=now, last_inbound_at=now
    )
    conversation.refresh_from_db()
    event = realtime.publish(
        realtime.MESSAGE_CREATED, conversation=conversation, message=message
    )
    return cache.event_cache.get(event.pk)


def live_row(rendered, query: str, agent) -> str:
    inbox_filter = InboxFilter.from_query(query)
    if inbox_filter.matches(
        rendered.conversation,
        user=agent,
        user_team_ids=set(agent.teams.values_list("pk", flat=True)),
        label_ids=rendered.label_ids,
        search=rendered.search,
    ):
        return rendered.row(inbox_filter.order)
    return rendered.removal_html()


def test_a_pushed_row_stays_in_a_search_it_matches_by_an_older_message(
    number, agent, agent_client
):
    rendered = searched(number, "Where is parcel 4711?", "Thanks!")
    page = agent_client.get(reverse("conversations:inbox") + "?q=parcel+4711")
    assert f'id="row-{rendered.conversation.pk}"' in page.content.decode()

    html = live_row(rendered, "q=parcel 4711", agent)
    assert 'data-live="upsert"' in html


def test_a_pushed_row_leaves_a_search_or_filter_it_does_not_match(number, agent):
    rendered = searched(number, "Hello", "Thanks!")
    for query in ("q=parcel", "status=resolved", "view=mine"):
        html = live_row(rendered, query, agent)
        assert 'data-live="remove"' in html, query
        assert "Thanks!" not in html, query
    assert 'data-live="upsert"' in live_row(rendered, "q=ina", agent)
