"""Interactive replies through claimed batches: reply buttons, list picks
and Flow answers are stored as sets, exactly once and as the one-by-one
path stores them, at a statement count that does not grow with the batch;
a survey answer goes one by one, where its rating keeps the conversation
resolved."""

import itertools
import json
import time

import pytest
from django.db import connection

from conversations import services
from conversations.models import (
    Conversation,
    Message,
    SatisfactionRating,
    SatisfactionSurvey,
    WebhookEvent,
)
from conversations.services import inbound
from conversations.whatsapp import payloads
from tests.factories import ConversationFactory, CustomerFactory, MessageFactory
from tests.fixtures.inbound import CUSTOMER_WA_ID, process, store_event
from tests.fixtures.payloads import load_payload_json
from tests.fixtures.routing import waiting_conversation
from tests.test_webhook_batches import MESSAGE_BATCH_STATEMENTS

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="sets need PostgreSQL (SKIP LOCKED)"
)

# The business's message every interactive fixture quotes.
QUOTED = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
KINDS = ("interactive_button_reply", "interactive_list_reply", "interactive_nfm_reply")
_wamids = itertools.count()


def interactive(kind: str, *, wa_id=CUSTOMER_WA_ID, wamid=None, **fields) -> dict:
    """A fixture's interactive reply from another sender and wamid;
    `fields` are merged over the message."""
    document = load_payload_json(kind)
    value = document["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["wa_id"] = wa_id
    message = value["messages"][0]
    message.update({"from": wa_id, "id": wamid or f"wamid.INT{next(_wamids)}"})
    message.update(fields)
    return document


def survey_answer(*, wamid: str, survey_wamid: str, score: int) -> dict:
    document = interactive(
        "interactive_list_reply",
        wamid=wamid,
        timestamp=str(int(time.time())),
        context={"from": "15550783881", "id": survey_wamid},
    )
    message = document["entry"][0]["changes"][0]["value"]["messages"][0]
    message["interactive"]["list_reply"] = {"id": f"csat-{score}", "title": "Good"}
    return document


def quoted_message(number) -> Message:
    """The business's message the fixtures answer, in the customer's open
    conversation."""
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    return MessageFactory(
        conversation=ConversationFactory(number=number, customer=customer),
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.READ,
        wamid=QUOTED,
    )


def drain() -> None:
    services.drain_webhook_events(seconds=60)


def first_message(document: dict) -> payloads.InboundMessage:
    return payloads.parse(json.dumps(document).encode()).messages[0]


def stored(wamids) -> dict:
    fields = (
        "conversation_id",
        "direction",
        "type",
        "text",
        "payload",
        "reply_to_id",
        "context_wamid",
        "status",
        "timestamp",
        "media_state",
    )
    return {
        row[0]: row[1:]
        for row in Message.objects.filter(wamid__in=wamids).values_list(
            "wamid", *fields
        )
    }


@pytest.mark.parametrize("kind", KINDS)
def test_interactive_replies_go_in_sets(kind):
    assert inbound.takes_in_bulk(first_message(interactive(kind)))


def test_a_survey_answer_goes_one_by_one():
    answer = survey_answer(wamid="wamid.A", survey_wamid="wamid.S", score=4)
    assert not inbound.takes_in_bulk(first_message(answer))


def test_each_reply_is_stored_once_however_often_it_comes(meta_number, one_by_one):
    quoted_message(meta_number)
    documents = [interactive(kind, wamid=f"wamid.ONCE.{kind}") for kind in KINDS]
    for document in documents * 2:
        store_event(document)
    drain()
    for document in documents:
        store_event(document)
    drain()

    assert WebhookEvent.objects.exclude(state="processed").count() == 0
    assert one_by_one == []
    inbound_rows = Message.objects.filter(direction=Message.Direction.INBOUND)
    assert sorted(inbound_rows.values_list("wamid", flat=True)) == sorted(
        f"wamid.ONCE.{kind}" for kind in KINDS
    )
    conversation = Conversation.objects.get()
    assert conversation.unread_count == len(KINDS)


def test_the_set_stores_what_one_by_one_stores(meta_number, one_by_one, agent_client):
    quoted = quoted_message(meta_number)
    wamids = [f"wamid.SAME.{kind}" for kind in KINDS]
    for kind, wamid in zip(KINDS, wamids, strict=True):
        process(interactive(kind, wamid=wamid))
    one_by_one_result = stored(wamids)
    assert len(one_by_one) == len(KINDS)
    Message.objects.filter(wamid__in=wamids).delete()
    one_by_one.clear()

    for kind, wamid in zip(KINDS, wamids, strict=True):
        store_event(interactive(kind, wamid=wamid))
    drain()

    assert one_by_one == []
    assert stored(wamids) == one_by_one_result
    rows = Message.objects.filter(wamid__in=wamids)
    assert {row.reply_to_id for row in rows} == {quoted.pk}
    assert sorted(row.text for row in rows) == ["Express", "Sent", "Track my order"]
    # The Flow's answer is still a typed card, not "Sent".
    flow = rows.get(wamid="wamid.SAME.interactive_nfm_reply")
    assert payloads.flow_answers(flow.payload) == [
        ("rating", "5"),
        ("comment", "Fast help"),
    ]
    page = agent_client.get(f"/conversations/{flow.conversation_id}/").content
    assert "<dt>Comment</dt><dd>Fast help</dd>" in page.decode()


def test_a_survey_answer_in_a_batch_records_its_rating(
    meta_number, team, agent, one_by_one
):
    SatisfactionSurvey.objects.create(team=team)
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    conversation = waiting_conversation(
        meta_number, team=team, assignee=agent, customer=customer
    )
    services.change_status(conversation=conversation, status="resolved", by=agent)
    rating = SatisfactionRating.objects.get(conversation=conversation)
    Message.objects.filter(pk=rating.message_id).update(wamid="wamid.SURVEY1")
    store_event(
        interactive("interactive_button_reply", wa_id="16505550001", wamid="wamid.B")
    )
    store_event(
        survey_answer(wamid="wamid.CSAT", survey_wamid="wamid.SURVEY1", score=4)
    )
    store_event(
        interactive("interactive_nfm_reply", wa_id="16505550002", wamid="wamid.F")
    )

    drain()

    assert [message.wamid for message in one_by_one] == ["wamid.CSAT"]
    rating.refresh_from_db()
    assert rating.score == 4 and rating.answered_at is not None
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.RESOLVED
    assert Message.objects.filter(wamid__in=["wamid.B", "wamid.F"]).count() == 2


@pytest.mark.parametrize("size", [10, 200])
def test_a_batch_of_interactive_replies_costs_the_same_statements(
    meta_number, size, django_assert_max_num_queries
):
    quoted = quoted_message(meta_number)
    for index, kind in zip(range(size), itertools.cycle(KINDS)):
        store_event(interactive(kind, wa_id=f"44{index:09d}"))

    # An ordinary batch's statements and one read of the quoted messages.
    with django_assert_max_num_queries(MESSAGE_BATCH_STATEMENTS + 1):
        claimed = services.process_webhook_batch(limit=size)

    assert len(claimed) == size
    replies = Message.objects.filter(type="interactive")
    assert replies.count() == size
    assert set(replies.values_list("reply_to_id", flat=True)) == {quoted.pk}
