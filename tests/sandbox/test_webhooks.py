"""Status and customer webhooks arrive signed, in Meta's exact shapes."""

import hashlib
import hmac
import json

import pytest

from sandbox.testing import wait_until
from tests.fixtures.sandbox import CUSTOMER

pytestmark = pytest.mark.e2e


def statuses_for(receiver, wamid: str) -> list[dict]:
    found = []
    for body in receiver.bodies():
        for entry in body["entry"]:
            for change in entry["changes"]:
                for status in change["value"].get("statuses", []):
                    if status["id"] == wamid:
                        found.append(status)
    return found


def only_value(webhook: dict) -> dict:
    [entry] = webhook["entry"]
    [change] = entry["changes"]
    assert change["field"] == "messages"
    return change["value"]


def test_statuses_arrive_sent_delivered_read_with_pricing(
    sandbox, graph, receiver, open_window
):
    response = graph.text("Hi", biz_opaque_callback_data="msg-1")
    wamid = response.json()["messages"][0]["id"]
    wait_until(lambda: len(statuses_for(receiver, wamid)) == 3)
    sent, delivered, read = statuses_for(receiver, wamid)
    assert [s["status"] for s in (sent, delivered, read)] == [
        "sent",
        "delivered",
        "read",
    ]
    service = {
        "billable": False,
        "pricing_model": "PMP",
        "category": "service",
        "type": "free_customer_service",
    }
    assert sent["pricing"] == service
    assert delivered["pricing"] == service
    assert "pricing" not in read
    for status in (sent, delivered, read):
        assert status["recipient_id"] == CUSTOMER
        assert status["biz_opaque_callback_data"] == "msg-1"
        assert status["timestamp"].isdigit()
    webhook = receiver.bodies()[0]
    assert webhook["object"] == "whatsapp_business_account"
    assert webhook["entry"][0]["id"] == sandbox.number.waba_id
    value = only_value(webhook)
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {
        "display_phone_number": "15550100001",
        "phone_number_id": sandbox.number.phone_number_id,
    }
    assert [m["statuses"] for m in sandbox.control.messages(CUSTOMER)] == [
        ["sent", "delivered", "read"]
    ]


def test_marketing_template_outside_the_window_is_regular_and_billable(graph, receiver):
    components = [
        {"type": "header", "parameters": [{"type": "image", "image": {"id": "1"}}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Anna"},
                {"type": "text", "parameter_name": "discount", "text": "20%"},
            ],
        },
    ]
    template = {
        "name": "spring_sale",
        "language": {"code": "en"},
        "components": components,
    }
    response = graph.send({"to": CUSTOMER, "type": "template", "template": template})
    wamid = response.json()["messages"][0]["id"]
    sent = wait_until(lambda: statuses_for(receiver, wamid))[0]
    assert sent["pricing"] == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "marketing",
        "type": "regular",
    }


def test_utility_template_inside_the_window_is_free(graph, receiver, open_window):
    template = {"name": "hello_world", "language": {"code": "en_US"}}
    wamid = graph.send(
        {"to": CUSTOMER, "type": "template", "template": template}
    ).json()["messages"][0]["id"]
    sent = wait_until(lambda: statuses_for(receiver, wamid))[0]
    assert (sent["pricing"]["category"], sent["pricing"]["type"]) == (
        "utility",
        "free_customer_service",
    )


def test_reply_to_a_customer_from_an_ad_is_a_free_entry_point(sandbox, graph, receiver):
    sandbox.control.customer_message(CUSTOMER, type="text", text="Hi", referral=True)
    receiver.clear()
    wamid = graph.text("Welcome!").json()["messages"][0]["id"]
    wait_until(lambda: len(statuses_for(receiver, wamid)) == 3)
    sent, delivered, _read = statuses_for(receiver, wamid)
    assert sent["pricing"] == {
        "billable": False,
        "pricing_model": "PMP",
        "category": "referral_conversion",
        "type": "free_entry_point",
    }
    assert sent["conversation"]["origin"] == {"type": "referral_conversion"}
    assert "expiration_timestamp" in sent["conversation"]
    assert "expiration_timestamp" not in delivered["conversation"]


def test_reactions_we_send_get_only_a_sent_status(
    sandbox, graph, receiver, open_window
):
    reaction = {"message_id": "wamid.x", "emoji": "\u2764"}
    wamid = graph.send(
        {"to": CUSTOMER, "type": "reaction", "reaction": reaction}
    ).json()["messages"][0]["id"]
    wait_until(lambda: sandbox.control.messages(CUSTOMER)[0]["statuses"] == ["sent"])
    graph.text("and a text after it")
    wait_until(lambda: len(sandbox.control.messages(CUSTOMER)[1]["statuses"]) == 3)
    assert [s["status"] for s in statuses_for(receiver, wamid)] == ["sent"]


def test_failed_status_carries_errors(sandbox, graph, receiver, open_window):
    sandbox.control.set_faults(failed_status_next=[131026])
    wamid = graph.text().json()["messages"][0]["id"]
    [failed] = wait_until(lambda: statuses_for(receiver, wamid))
    assert failed["status"] == "failed"
    assert "pricing" not in failed
    [error] = failed["errors"]
    assert error["code"] == 131026
    assert error["title"] == "Message undeliverable"
    assert error["error_data"]["details"]


def test_signature_is_hmac_sha256_of_the_raw_bytes(sandbox, receiver):
    text = "Grüße 你好 مرحبا"
    sandbox.control.customer_message(CUSTOMER, type="text", text=text, name="Zoë مرحبا")
    [webhook] = receiver.wait_for(1)
    expected = hmac.new(
        sandbox.number.app_secret.encode(), webhook.body, hashlib.sha256
    ).hexdigest()
    assert webhook.headers["X-Hub-Signature-256"] == f"sha256={expected}"
    assert webhook.headers["Content-Type"] == "application/json"
    # Meta escapes non-ASCII as \uXXXX, so the raw body is pure ASCII.
    assert webhook.body.isascii()
    assert b"\\u00fc" in webhook.body
    value = only_value(webhook.json())
    assert value["messages"][0]["text"]["body"] == text
    assert value["contacts"][0]["profile"]["name"] == "Zoë مرحبا"
    reserialised = json.dumps(webhook.json()).encode()
    assert not hmac.compare_digest(
        hmac.new(
            sandbox.number.app_secret.encode(), reserialised, hashlib.sha256
        ).hexdigest(),
        expected,
    )


def test_customer_message_reports_the_webhook_status(sandbox, receiver):
    receiver.answer_status = 403
    result = sandbox.control.customer_message(CUSTOMER, type="text", text="Hi")
    assert result["webhook_status"] == 403


INBOUND_CASES = {
    "text": ({"type": "text", "text": "Hello"}, "text", {"body": "Hello"}),
    "location": (
        {
            "type": "location",
            "location": {
                "latitude": 52.5,
                "longitude": 13.4,
                "name": "Home",
                "address": "Berlin",
            },
        },
        "location",
        {"latitude": 52.5, "longitude": 13.4, "name": "Home", "address": "Berlin"},
    ),
    "button": (
        {
            "type": "button",
            "text": "Track my order",
            "payload": "track",
            "reply_to": "wamid.t",
        },
        "button",
        {"payload": "track", "text": "Track my order"},
    ),
    "reaction": (
        {"type": "reaction", "message_id": "wamid.b", "emoji": "\U0001f44d"},
        "reaction",
        {"message_id": "wamid.b", "emoji": "\U0001f44d"},
    ),
    "reaction removed": (
        {"type": "reaction", "message_id": "wamid.b"},
        "reaction",
        {"message_id": "wamid.b"},
    ),
}


@pytest.mark.parametrize("case", INBOUND_CASES)
def test_simple_inbound_types_have_metas_shape(sandbox, receiver, case):
    description, meta_type, expected = INBOUND_CASES[case]
    result = sandbox.control.customer_message(CUSTOMER, name="Anna", **description)
    value = only_value(receiver.wait_for(1)[0].json())
    assert value["contacts"] == [{"profile": {"name": "Anna"}, "wa_id": CUSTOMER}]
    [message] = value["messages"]
    assert message["from"] == CUSTOMER
    assert message["id"] == result["wamid"]
    assert message["timestamp"].isdigit()
    assert message["type"] == meta_type
    assert message[meta_type] == expected


@pytest.mark.parametrize(
    ("kind", "meta_type", "mime_type"),
    [
        ("image", "image", "image/jpeg"),
        ("audio", "audio", "audio/ogg"),
        ("voice", "audio", "audio/ogg; codecs=opus"),
        ("video", "video", "video/mp4"),
        ("document", "document", "application/pdf"),
        ("sticker", "sticker", "image/webp"),
    ],
)
def test_inbound_media_has_metas_shape_and_can_be_downloaded(
    sandbox, receiver, kind, meta_type, mime_type
):
    sandbox.control.customer_message(
        CUSTOMER, type=kind, caption="See this", filename="a.pdf"
    )
    message = only_value(receiver.wait_for(1)[0].json())["messages"][0]
    media = message[meta_type]
    assert message["type"] == meta_type
    assert media["mime_type"] == mime_type
    assert media["id"].isdigit()
    assert media["url"].startswith(sandbox.base_url)
    assert len(media["sha256"]) == 44
    assert ("caption" in media) is (kind in {"image", "video", "document"})
    if meta_type == "audio":
        assert media["voice"] is (kind == "voice")
    if kind == "document":
        assert media["filename"] == "a.pdf"
    if kind == "sticker":
        assert media["animated"] is False


@pytest.mark.parametrize(
    ("description", "interactive"),
    [
        (
            {"type": "button_reply", "id": "yes", "title": "Yes"},
            {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
        ),
        (
            {
                "type": "list_reply",
                "id": "where",
                "title": "Where?",
                "description": "Track",
            },
            {
                "type": "list_reply",
                "list_reply": {
                    "id": "where",
                    "title": "Where?",
                    "description": "Track",
                },
            },
        ),
        (
            {"type": "nfm_reply", "response_json": {"flow_token": "t-1", "size": "M"}},
            {
                "type": "nfm_reply",
                "nfm_reply": {
                    "name": "flow",
                    "body": "Sent",
                    "response_json": '{"flow_token": "t-1", "size": "M"}',
                },
            },
        ),
    ],
)
def test_interactive_replies_quote_the_business_message(
    sandbox, receiver, description, interactive
):
    sandbox.control.customer_message(CUSTOMER, reply_to="wamid.question", **description)
    message = only_value(receiver.wait_for(1)[0].json())["messages"][0]
    assert message["type"] == "interactive"
    assert message["interactive"] == interactive
    assert message["context"] == {"from": "15550100001", "id": "wamid.question"}


def test_contacts_and_order_messages(sandbox, receiver):
    sandbox.control.customer_message(CUSTOMER, type="contacts")
    items = [
        {
            "product_retailer_id": "SKU-9",
            "quantity": 2,
            "item_price": 5.5,
            "currency": "EUR",
        }
    ]
    sandbox.control.customer_message(CUSTOMER, type="order", product_items=items)
    contacts, order = [
        only_value(w.json())["messages"][0] for w in receiver.wait_for(2)
    ]
    assert contacts["contacts"][0]["name"]["formatted_name"]
    assert contacts["contacts"][0]["phones"][0]["wa_id"]
    assert order["order"] == {
        "catalog_id": "300000000000001",
        "text": "",
        "product_items": items,
    }


def test_system_number_change_has_no_contacts_and_rekeys_the_customer(
    sandbox, receiver
):
    sandbox.control.customer_message(CUSTOMER, type="system", new_wa_id="4917099999999")
    value = only_value(receiver.wait_for(1)[0].json())
    assert "contacts" not in value
    [message] = value["messages"]
    # Meta's system reference: the old number in `from`, the new in system.wa_id.
    assert message["from"] == CUSTOMER
    assert message["system"]["type"] == "user_changed_number"
    assert message["system"]["wa_id"] == "4917099999999"
    wa_ids = [
        c["wa_id"] for c in sandbox.control._call("GET", "customers")["customers"]
    ]
    assert wa_ids == ["4917099999999"]


def test_unsupported_message_carries_131051(sandbox, receiver):
    sandbox.control.customer_message(
        CUSTOMER, type="unsupported", unsupported_type="edit"
    )
    message = only_value(receiver.wait_for(1)[0].json())["messages"][0]
    assert message["type"] == "unsupported"
    assert message["unsupported"] == {"type": "edit"}
    assert message["errors"][0]["code"] == 131051


def test_forwarded_and_referral_fields(sandbox, receiver):
    sandbox.control.customer_message(
        CUSTOMER, type="text", text="fwd", frequently_forwarded=True
    )
    sandbox.control.customer_message(
        CUSTOMER, type="image", referral={"source_id": "ad-1", "headline": "Sale"}
    )
    forwarded, from_ad = [
        only_value(w.json())["messages"][0] for w in receiver.wait_for(2)
    ]
    assert forwarded["context"] == {"frequently_forwarded": True}
    referral = from_ad["referral"]
    assert referral["source_id"] == "ad-1"
    assert referral["headline"] == "Sale"
    for field in (
        "source_url",
        "source_type",
        "body",
        "media_type",
        "image_url",
        "ctwa_clid",
    ):
        assert referral[field]
    assert referral["welcome_message"]["text"]


def test_user_id_appears_in_contacts_and_status_contacts(sandbox, graph, receiver):
    sandbox.control.customer_message(
        CUSTOMER, type="text", text="Hi", user_id="US.13491208655302741918"
    )
    value = only_value(receiver.wait_for(1)[0].json())
    assert value["contacts"][0]["user_id"] == "US.13491208655302741918"
    wamid = graph.text().json()["messages"][0]["id"]
    wait_until(lambda: statuses_for(receiver, wamid))
    status_webhook = receiver.bodies()[1]
    assert (
        only_value(status_webhook)["contacts"][0]["user_id"]
        == "US.13491208655302741918"
    )


def test_template_status_change_posts_a_signed_update(sandbox, receiver):
    result = sandbox.control.set_template_status(
        "order_shipped", "PAUSED", language="en"
    )
    assert result["webhook_status"] == 200
    [webhook] = receiver.wait_for(1)
    assert webhook.verifies(sandbox.number.app_secret)
    [entry] = webhook.json()["entry"]
    assert entry["id"] == sandbox.number.waba_id
    assert isinstance(entry["time"], int)
    [change] = entry["changes"]
    assert change["field"] == "message_template_status_update"
    value = change["value"]
    assert value["event"] == "PAUSED"
    assert value["message_template_name"] == "order_shipped"
    assert value["message_template_language"] == "en"
    assert isinstance(value["message_template_id"], int)
    assert value["message_template_category"] == "UTILITY"


def test_webhook_verification_handshake(sandbox, receiver):
    result = sandbox.control._call("POST", "verify-webhook", json={})
    assert result == {"status": 200, "verified": True}
    [request] = receiver.wait_for(1)
    assert request.body == b""
