"""Identity through claimed batches: what the set path cannot settle as
identity's rules say goes one by one, and what it takes keeps those rules
(merges, group threads apart, product inquiries, contacts blocks of
statuses)."""

import pytest
from django.db import connection

from conversations import services
from conversations.models import (
    Conversation,
    Customer,
    CustomerMerge,
    Message,
    WebhookEvent,
)
from conversations.services import inbound
from conversations.whatsapp import payloads
from tests.factories import ConversationFactory, CustomerFactory, MessageFactory
from tests.fixtures.inbound import CUSTOMER_WA_ID, store_event
from tests.fixtures.payloads import load_payload, load_payload_json

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="sets need PostgreSQL (SKIP LOCKED)"
)


def value_of(document: dict) -> dict:
    return document["entry"][0]["changes"][0]["value"]


def drain() -> None:
    services.drain_webhook_events(seconds=60)


def first_message(fixture: str) -> payloads.InboundMessage:
    return payloads.parse(load_payload(fixture)).messages[0]


@pytest.mark.parametrize(
    "fixture",
    [
        "text_group",
        "edit",
        "revoke",
        "image_failed",
        "interactive_call_permission_reply",
        "bsuid_only",
        "reaction",
        "system_user_changed_user_id",
    ],
)
def test_kinds_the_set_does_not_settle_go_one_by_one(fixture):
    assert not inbound.takes_in_bulk(first_message(fixture))


@pytest.mark.parametrize("fixture", ["text", "text_product_inquiry", "image"])
def test_ordinary_messages_and_product_inquiries_go_in_sets(fixture):
    assert inbound.takes_in_bulk(first_message(fixture))


def test_a_mixed_batch_keeps_group_traffic_and_failed_media_apart(
    meta_number, one_by_one
):
    for fixture in ("text", "text_group", "image_failed", "text_product_inquiry"):
        store_event(fixture)

    drain()

    assert WebhookEvent.objects.exclude(state="processed").count() == 0
    assert sorted(message.type for message in one_by_one) == ["image", "text"]
    group = Message.objects.get(conversation__group_id__gt="")
    assert group.text == "What do you all think about this?"
    assert group.group_sender.wa_id == CUSTOMER_WA_ID
    private = Conversation.objects.get(group_id="")
    assert set(private.messages.values_list("type", flat=True)) == {"text", "image"}
    assert private.messages.count() == 3
    failed = private.messages.get(type="image")
    assert failed.media_state == Message.MediaState.FAILED
    inquiry = private.messages.exclude(referred_product=None).get()
    assert set(inquiry.referred_product) == {"catalog_id", "product_retailer_id"}
    assert all(inquiry.referred_product.values())


def test_a_set_never_joins_a_group_conversation_of_its_sender(meta_number):
    sender = CustomerFactory(wa_id="16505550000")
    group = ConversationFactory(customer=sender, number=meta_number, group_id="G.1")
    document = load_payload_json("text")
    value = value_of(document)
    value["contacts"][0]["wa_id"] = value["messages"][0]["from"] = sender.wa_id
    store_event(document)

    drain()

    message = Message.objects.get()
    assert message.conversation != group
    assert message.conversation.group_id == ""
    assert message.conversation.customer == sender


def test_a_sender_whose_phone_and_bsuid_are_two_customers_is_merged(
    meta_number, one_by_one
):
    by_phone = CustomerFactory(wa_id="16505550000", user_id="")
    by_bsuid = Customer.objects.create(wa_id="", user_id="US.7", username="@ann")
    ConversationFactory(customer=by_bsuid, number=meta_number)
    document = load_payload_json("text")
    value = value_of(document)
    value["contacts"][0].update(wa_id=by_phone.wa_id, user_id="US.7")
    value["messages"][0]["from"] = by_phone.wa_id
    ordinary = load_payload_json("text")
    value_of(ordinary)["messages"][0]["id"] = "wamid.ORDINARY"
    value_of(ordinary)["contacts"][0]["wa_id"] = "16505559999"
    value_of(ordinary)["messages"][0]["from"] = "16505559999"
    store_event(document), store_event(ordinary)

    drain()

    merged_wamid = value["messages"][0]["id"]
    assert merged_wamid in {message.wamid for message in one_by_one}
    survivor = Customer.objects.get(user_id="US.7")
    assert survivor.wa_id == by_phone.wa_id
    assert survivor.username == "@ann"
    assert CustomerMerge.objects.filter(survivor=survivor).count() == 1
    assert Conversation.objects.filter(customer=survivor).count() == 1
    ordinary_message = Message.objects.get(wamid="wamid.ORDINARY")
    assert ordinary_message.conversation.customer.wa_id == "16505559999"
    assert WebhookEvent.objects.exclude(state="processed").count() == 0


def statuses_document(wamid: str, *, wa_id: str, user_id: str, username: str):
    document = load_payload_json("status_delivered")
    value = value_of(document)
    value["contacts"] = [
        {"profile": {"name": "Ann", "username": username}, "wa_id": wa_id}
        | {"user_id": user_id}
    ]
    value["statuses"][0].update(id=wamid, recipient_id=wa_id, recipient_user_id=user_id)
    return document


def outbound_to(customer, number, wamid: str) -> Message:
    return MessageFactory(
        conversation=ConversationFactory(customer=customer, number=number),
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.SENT,
        wamid=wamid,
    )


def test_a_set_of_statuses_teaches_the_customers_their_bsuid_and_username(
    meta_number,
):
    ann = CustomerFactory(wa_id="16505550001", user_id="")
    bob = CustomerFactory(wa_id="16505550002", user_id="")
    outbound_to(ann, meta_number, "wamid.ANN")
    outbound_to(bob, meta_number, "wamid.BOB")
    store_event(
        statuses_document("wamid.ANN", wa_id=ann.wa_id, user_id="US.1", username="@a")
    )
    store_event(
        statuses_document("wamid.BOB", wa_id=bob.wa_id, user_id="US.2", username="@b")
    )

    drain()

    ann.refresh_from_db(), bob.refresh_from_db()
    assert (ann.user_id, ann.username, ann.profile_name) == ("US.1", "@a", "Ann")
    assert (bob.user_id, bob.username) == ("US.2", "@b")
    assert Message.objects.filter(status="delivered").count() == 2


def test_a_status_naming_a_bsuid_another_customer_holds_merges_them(meta_number):
    ann = CustomerFactory(wa_id="16505550001", user_id="")
    known_by_bsuid = Customer.objects.create(wa_id="", user_id="US.1")
    outbound_to(ann, meta_number, "wamid.ANN")
    store_event(
        statuses_document("wamid.ANN", wa_id=ann.wa_id, user_id="US.1", username="")
    )

    drain()

    survivor = Customer.objects.get(user_id="US.1")
    assert survivor.wa_id == ann.wa_id
    assert Customer.objects.filter(pk__in=[ann.pk, known_by_bsuid.pk]).count() == 1
    assert CustomerMerge.objects.count() == 1
    assert Message.objects.get(wamid="wamid.ANN").status == "delivered"
