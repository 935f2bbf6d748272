"""Hostile fields in a stored event: the good items are processed, the bad
ones recorded where admins see them, and the event never fails for a value
that does not fit a column (PostgreSQL refuses what SQLite lets through:
run these on PostgreSQL, as CI does)."""

import json

import pytest
from django.db import connection
from django.urls import reverse

from conversations.models import (
    Customer,
    LiveEvent,
    Message,
    ParkedStatus,
    WebhookEvent,
)
from conversations.whatsapp import payloads
from tests.fixtures.inbound import process
from tests.fixtures.payloads import load_payload_json


def value_of(document: dict) -> dict:
    return document["entry"][0]["changes"][0]["value"]


def messages(*changes) -> dict:
    """The text fixture with one message per change, each from its own wamid."""
    document = load_payload_json("text")
    value = value_of(document)
    template = value["messages"].pop()
    for index, change in enumerate(changes):
        message = json.loads(json.dumps(template))
        message["id"] = f"wamid.HOSTILE{index}"
        message["text"]["body"] = f"Message {index}"
        change(message)
        value["messages"].append(message)
    return document


def unchanged(message):
    pass


def overlong_sender(message):
    message["from"] = "4" * 40


def test_an_event_with_a_bad_item_processes_the_others_and_shows_why(
    meta_number, admin_client
):
    event = process(messages(unchanged, overlong_sender, unchanged))

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert (event.attempts, event.next_attempt_at) == (0, None)
    assert sorted(Message.objects.values_list("text", flat=True)) == [
        "Message 0",
        "Message 2",
    ]
    reason = "Unreadable message: from is 40 characters long (an id has at most 32)"
    assert event.last_error == reason
    page = admin_client.get(
        reverse("admin:conversations_webhookevent_change", args=[event.pk])
    )
    assert reason in page.content.decode()


def test_nul_and_lone_surrogates_are_stored_cleaned(meta_number):
    def hostile(message):
        message["text"]["body"] = "Hel\u0000lo \ud800"
        message["text"]["note\u0000"] = {"deep": ["\u0000x"]}

    document = messages(hostile)
    value_of(document)["contacts"][0]["profile"]["name"] = "Shee\u0000na"

    event = process(document)

    assert event.state == WebhookEvent.State.PROCESSED
    message = Message.objects.get()
    assert message.text == "Hello \ufffd"
    assert message.payload == {"body": "Hello \ufffd", "note": {"deep": ["x"]}}
    assert message.conversation.customer.profile_name == "Sheena"


def test_a_status_with_nul_in_its_error_is_parked_cleaned(meta_number):
    document = load_payload_json("status_failed")
    status = value_of(document)["statuses"][0]
    status["errors"][0]["error_data"]["details"] = "too\u0000 late"

    event = process(document)

    assert event.state == WebhookEvent.State.PROCESSED
    parked = ParkedStatus.objects.get()
    assert parked.error["details"] == "too late"
    assert parked.raw["errors"][0]["error_data"]["details"] == "too late"


def test_a_long_profile_name_is_stored_cut(meta_number):
    document = messages(unchanged)
    value_of(document)["contacts"][0]["profile"]["name"] = "N" * 1000

    event = process(document)

    assert event.state == WebhookEvent.State.PROCESSED
    name = Customer.objects.get().profile_name
    assert (len(name), name[-1]) == (256, "…")


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite stores any length"
)
def test_a_value_a_column_refuses_fails_only_its_item(meta_number, monkeypatch):
    """Should a value get past the parser, the column's refusal costs its
    item, not the event: retrying could never make it fit."""
    monkeypatch.setattr(payloads, "WA_ID_MAX_LENGTH", 1000, raising=False)

    event = process(messages(unchanged, overlong_sender, unchanged))

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert event.attempts == 0
    assert event.last_error.startswith("Unstorable InboundMessage: DataError: ")
    assert "character varying(32)" in event.last_error
    stored = Message.objects.order_by("text")
    assert list(stored.values_list("text", flat=True)) == ["Message 0", "Message 2"]
    # The stored ones were announced; nothing of the refused one was kept.
    assert LiveEvent.objects.filter(type="message.created").count() == 2
    assert not Customer.objects.filter(wa_id="4" * 40).exists()
