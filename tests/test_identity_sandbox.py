"""Username-era identity end to end on the sandbox: a customer with a username
and no phone writes, an agent answers over the API, the sandbox receives
Meta's `recipient` and no `to`, the ticks come back; the same customer later
shares a phone and stays one customer with one history. Notifications and
consent by user_id take the same road."""

import pytest

from conversations.models import Customer, Message
from tests.fixtures.business import (
    CONSENT_URL,
    NOTIFY_URL,
    api_client_for,
)
from tests.fixtures.outbound import (
    feed_webhooks,
    sends,
    sends_for,
    wait_for_status,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = "4915112345678"
BSUID = "DE.27182818284590452353"


def username_customer_writes(sandbox, receiver, text: str, *, hide_phone=True):
    start = len(receiver.received)
    sandbox.control.customer_message(
        PHONE,
        type="text",
        text=text,
        name="Lena",
        user_id=BSUID,
        username="@lena",
        hide_phone=hide_phone,
    )
    receiver.wait_for(start + 1)
    feed_webhooks(receiver, start)


def test_a_username_customer_is_answered_by_recipient_and_stays_one_customer(
    graph_sandbox, sandbox_number, agent, receiver, delivery_worker
):
    username_customer_writes(graph_sandbox, receiver, "Where is my parcel?")
    customer = Customer.objects.get()
    assert (customer.wa_id, customer.phone) == ("", "")
    assert (customer.user_id, customer.username) == (BSUID, "@lena")
    conversation = customer.conversations.get()

    api = api_client_for(agent)
    shown = api.get(f"/api/v1/conversations/{conversation.pk}/").json()
    assert shown["customer"]["user_id"] == BSUID
    assert shown["customer"]["wa_id"] == ""
    assert shown["customer"]["username"] == "@lena"
    found = api.get("/api/v1/customers/", {"user_id": BSUID}).json()
    assert [c["id"] for c in found["results"]] == [customer.pk]

    start = len(receiver.received)
    response = api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"type": "text", "text": "It leaves today."},
        format="json",
    )
    assert response.status_code == 201, response.content
    reply = Message.objects.get(pk=response.json()["id"])
    wait_for_status(reply, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, reply)
    assert record["body"]["recipient"] == BSUID
    assert "to" not in record["body"]
    assert record["response"]["contacts"] == [{"input": BSUID, "user_id": BSUID}]

    # sent, delivered, read
    receiver.wait_for(start + 3)
    feed_webhooks(receiver, start)
    reply.refresh_from_db()
    assert reply.status == Message.Status.READ

    # Later the customer writes with the phone shown again.
    username_customer_writes(graph_sandbox, receiver, "New address", hide_phone=False)
    (customer,) = Customer.objects.all()
    assert (customer.wa_id, customer.user_id) == (PHONE, BSUID)
    assert customer.phone == f"+{PHONE}"
    history = list(conversation.messages.order_by("id").values_list("text", flat=True))
    assert history == ["Where is my parcel?", "It leaves today.", "New address"]


def test_the_sandbox_refuses_a_bsuid_in_to_as_meta_does(graph):
    response = graph.text(to=BSUID)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 100
    assert "recipient" in error["error_data"]["details"]


def test_a_notification_and_consent_by_user_id_go_out_by_recipient(
    graph_sandbox, sandbox_number, shop, templates, receiver, delivery_worker
):
    username_customer_writes(graph_sandbox, receiver, "Hi")
    api = api_client_for(shop)
    consent = api.post(
        CONSENT_URL,
        {
            "user_id": BSUID,
            "purpose": "utility",
            "status": "opt_in",
            "source": "web_form",
            "wording": "Send me order updates on WhatsApp",
        },
        format="json",
    )
    assert consent.status_code == 201, consent.content
    assert consent.json()["customer"] == Customer.objects.get().pk

    both = api.post(
        NOTIFY_URL,
        {
            "to": f"+{PHONE}",
            "user_id": BSUID,
            "purpose": "utility",
            "template": {"name": "order_shipped", "language": "en"},
        },
        format="json",
    )
    assert both.status_code == 400
    assert "exactly one" in both.json()["detail"]

    response = api.post(
        NOTIFY_URL,
        {
            "user_id": BSUID,
            "purpose": "utility",
            "template": {"name": "order_shipped", "language": "en"},
            "parameters": {"body": ["Lena", "4711"]},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message"])
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, message)
    assert record["body"]["recipient"] == BSUID
    assert "to" not in record["body"]
    shown = api.get(f"{NOTIFY_URL}{response.json()['id']}/").json()
    assert (shown["to"], shown["user_id"]) == ("", BSUID)
    assert len(sends(graph_sandbox)) == 1


def test_the_sandbox_plays_groups_products_failed_media_echoes_and_number_changes(
    graph_sandbox, sandbox_number, receiver
):
    control = graph_sandbox.control
    start = len(receiver.received)
    control.customer_message(PHONE, type="text", text="Hi", name="Lena", user_id=BSUID)
    control.customer_message(
        PHONE,
        type="text",
        text="Is this in stock?",
        product={"catalog_id": "194836987003835", "product_retailer_id": "di9ozbzfi4"},
    )
    control.customer_message(PHONE, type="image", media_failed=True)
    control.customer_message(PHONE, type="text", text="Hi all", group_id="GROUP.1")
    control.business_app_message(PHONE, "Answered from my phone")
    control.customer_message(
        PHONE, type="system", new_wa_id="4915199999999", new_user_id="DE.2"
    )
    receiver.wait_for(start + 6)
    feed_webhooks(receiver, start)

    (customer,) = Customer.objects.all()
    assert (customer.wa_id, customer.user_id) == ("4915199999999", "DE.2")
    changes = dict(customer.identity_changes.values_list("kind", "old_value"))
    assert changes == {"user_changed_user_id": BSUID, "user_changed_number": PHONE}
    private = customer.conversations.get(group_id="")
    texts = list(private.messages.order_by("id").values_list("type", "text"))
    assert texts[:2] == [("text", "Hi"), ("text", "Is this in stock?")]
    inquiry = private.messages.get(text="Is this in stock?")
    assert inquiry.referred_product["product_retailer_id"] == "di9ozbzfi4"
    failed = private.messages.get(type="image")
    assert failed.media_state == Message.MediaState.FAILED
    assert failed.error["code"] == 131052
    echo = private.messages.get(direction="outbound")
    assert (echo.text, echo.from_business_app) == ("Answered from my phone", True)
    group = customer.conversations.get(group_id="GROUP.1")
    assert list(group.messages.values_list("text", flat=True)) == ["Hi all"]
