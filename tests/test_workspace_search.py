"""The inbox search: what it finds, the narrow way (ids looked up first) and
the broad way (subqueries), and the queries it takes."""

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from conversations.models import Conversation
from conversations.selectors.inbox import search_matches
from tests.factories import ConversationFactory, MessageFactory, WhatsAppNumberFactory

pytestmark = pytest.mark.django_db


def chat(number, *texts, minutes_ago=60, **customer) -> Conversation:
    """A conversation with a message a minute for each text, the last one
    minutes_ago old."""
    conversation = ConversationFactory(
        number=number, **{f"customer__{k}": v for k, v in customer.items()}
    )
    last = timezone.now() - timedelta(minutes=minutes_ago)
    for index, text in enumerate(texts):
        at = last - timedelta(minutes=len(texts) - 1 - index)
        message = MessageFactory(conversation=conversation, text=text, timestamp=at)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message, last_message_at=last, last_inbound_at=last
    )
    conversation.refresh_from_db()
    return conversation


def found(agent_client, q: str, **filters) -> set[int]:
    html = agent_client.get("/?" + urlencode({"q": q, **filters})).content.decode()
    return {int(pk) for pk in re.findall(r'id="row-(\d+)"', html)}


@pytest.fixture
def chats(number):
    """Conversations found by each field the search reads, and some not."""
    other_number = WhatsAppNumberFactory()
    return {
        "name": chat(number, "Hi", name="Zebulon Quozz"),
        "profile_name": chat(number, "Hi", profile_name="Quozzina Vale"),
        "phone": chat(number, "Hi", phone="+4930777123", wa_id="4930777123"),
        "old_message": chat(number, "Where is parcel QX-4711?", "Thanks!"),
        "resolved": chat(number, "Parcel qx-4711 arrived"),
        "foreign": chat(other_number, "parcel QX-4711 for team B", name="Quozz B"),
        "unrelated": chat(number, "Good morning", name="Ada Lovelace"),
    }


@pytest.fixture
def resolved(chats):
    Conversation.objects.filter(pk=chats["resolved"].pk).update(status="resolved")


def expected(chats, *names) -> set[int]:
    return {chats[name].pk for name in names}


@pytest.mark.parametrize(
    "customer_limit, message_limit",
    [(1000, 1000), (0, 1000), (1000, 1), (0, 1)],
    ids=["narrow", "many customers", "many messages", "many of both"],
)
def test_a_search_reads_names_numbers_and_every_message_case_insensitively(
    agent_client, chats, resolved, monkeypatch, customer_limit, message_limit
):
    """Either way, the same conversations: the limits only decide the way
    (every message match here is the newest of its filter's)."""
    monkeypatch.setattr(
        "conversations.selectors.inbox.SEARCH_CUSTOMER_LIMIT", customer_limit
    )
    monkeypatch.setattr(
        "conversations.selectors.inbox.SEARCH_MESSAGE_LIMIT", message_limit
    )
    assert found(agent_client, "quozz") == expected(chats, "name", "profile_name")
    assert found(agent_client, "4930777") == expected(chats, "phone")
    assert found(agent_client, "PARCEL qx-4711") == expected(chats, "old_message")
    assert found(agent_client, "qx-4711", status="resolved") == expected(
        chats, "resolved"
    )
    assert found(agent_client, "nobody by that name") == set()


def test_a_broad_search_reads_the_newest_matches_of_the_conversations_shown(
    agent_client, number, monkeypatch
):
    monkeypatch.setattr("conversations.selectors.inbox.SEARCH_MESSAGE_LIMIT", 2)
    other_number = WhatsAppNumberFactory()
    resolved = chat(number, "refund 88", minutes_ago=40)
    Conversation.objects.filter(pk=resolved.pk).update(status="resolved")
    chat(number, "refund 88", minutes_ago=30)
    older = chat(number, "refund 88", minutes_ago=20)
    # Newer matches in conversations the agent does not see, or the filters
    # leave out, do not push the agent's own out of the newest two.
    chat(other_number, "refund 88", minutes_ago=15)
    newest = chat(number, "refund 88", minutes_ago=10)
    chat(other_number, "refund 88", minutes_ago=5)

    assert found(agent_client, "refund 88") == {newest.pk, older.pk}
    assert found(agent_client, "refund 88", status="resolved") == {resolved.pk}


def test_search_matches_agrees_with_the_page(agent_client, chats, resolved):
    shown = {
        name: conversation
        for name, conversation in chats.items()
        if name not in ("foreign", "resolved")
    }
    for q in ("quozz", "4930777", "parcel qx-4711", "hi", "morning"):
        page = found(agent_client, q)
        for name, conversation in shown.items():
            assert search_matches(conversation, q) is (conversation.pk in page), (
                q,
                name,
            )


@pytest.mark.parametrize("limit", [1000, 0], ids=["narrow", "broad"])
def test_a_search_adds_at_most_two_queries_to_the_inbox(
    agent_client, number, monkeypatch, django_assert_max_num_queries, limit
):
    monkeypatch.setattr("conversations.selectors.inbox.SEARCH_CUSTOMER_LIMIT", limit)
    for index in range(3):
        chat(number, f"parcel {index}", name=f"Parcel Person {index}")
    with django_assert_max_num_queries(20) as inbox:
        agent_client.get("/")
    for q in ("parcel", "Parcel Person", "nothing by that name"):
        with django_assert_max_num_queries(len(inbox.captured_queries) + 2):
            agent_client.get("/?" + urlencode({"q": q}))
