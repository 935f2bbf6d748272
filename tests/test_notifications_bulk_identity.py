"""Bulk notifications and the admin's CSV upload name customers by phone or
by business-scoped user id, row by row, with the single send's refusals:
exactly one of the two, consent for the BSUID, no authentication template
without a phone."""

import pytest
from django.urls import reverse

from conversations.models import (
    ConsentRecord,
    Customer,
    Message,
    MessageTemplate,
    NotificationBatch,
)
from tests.fixtures.business import (
    ANNA,
    CONSENT_URL,
    NOTIFY_URL,
    consent,
    upload_csv,
)
from tests.fixtures.outbound import sends_for, wait_for_status

pytestmark = pytest.mark.e2e

LENA = "DE.27182818284590452353"
MAX = "DE.31415926535897932384"


def consent_by_user_id(api, user_id: str, status: str = "opt_in"):
    response = api.post(
        CONSENT_URL,
        {
            "user_id": user_id,
            "purpose": "utility",
            "status": status,
            "source": "web_form",
            "wording": "Send me order updates on WhatsApp",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def order_shipped(to, **extra) -> dict:
    return {
        "to": to,
        "purpose": "utility",
        "template": {"name": "order_shipped", "language": "en"},
        "parameters": {"body": ["Anna", "4711"]},
        **extra,
    }


@pytest.mark.django_db(transaction=True)
def test_a_bulk_send_names_customers_by_phone_or_user_id_row_by_row(
    shop_api, templates, delivery_worker, graph_sandbox, receiver
):
    # Meta knows Lena by her BSUID once she has written (her phone hidden).
    graph_sandbox.control.customer_message(
        "4915112345678", type="text", text="Hi", user_id=LENA, hide_phone=True
    )
    receiver.wait_for(1)
    consent(shop_api, ANNA)
    consent_by_user_id(shop_api, LENA)
    consent_by_user_id(shop_api, MAX, status="opt_out")
    recipients = [
        ANNA,
        {"user_id": LENA, "reference": "order-4712"},
        {"user_id": MAX},
        {"user_id": "DE.99999999999"},
        {"user_id": "not a bsuid"},
    ]

    response = shop_api.post(NOTIFY_URL, order_shipped(recipients), format="json")

    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        ("queued", None),
        ("queued", None),
        ("refused", "no_consent"),
        ("refused", "no_consent"),
        ("refused", "invalid_phone"),
    ]
    assert [(r["to"], r["user_id"]) for r in results] == [
        (ANNA, ""),
        ("", LENA),
        ("", MAX),
        ("", "DE.99999999999"),
        ("", "not a bsuid"),
    ]
    assert "business-scoped user id" in results[4]["detail"]
    lena = Customer.objects.get(user_id=LENA)
    assert Message.objects.get(pk=results[1]["message"]).conversation.customer == lena
    # The unknown BSUID is a customer now, as one send makes it.
    assert Customer.objects.filter(user_id="DE.99999999999", wa_id="").exists()
    shown = shop_api.get(f"{NOTIFY_URL}{results[1]['id']}/").json()
    assert (shown["user_id"], shown["reference"], shown["status"]) == (
        LENA,
        "order-4712",
        "queued",
    )
    message = Message.objects.get(pk=results[1]["message"])
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(graph_sandbox, message)
    assert record["body"]["recipient"] == LENA
    assert "to" not in record["body"]


@pytest.mark.django_db
def test_a_bulk_row_with_both_or_neither_is_a_400_naming_the_row(shop_api, templates):
    for row in ({"to": ANNA, "user_id": LENA}, {"reference": "order-1"}):
        response = shop_api.post(NOTIFY_URL, order_shipped([ANNA, row]), format="json")
        assert response.status_code == 400, response.content
        body = response.json()
        assert body["code"] == "invalid"
        assert body["errors"]["to"]["1"]["to"] == [
            "Give exactly one of to and user_id."
        ]
    assert not NotificationBatch.objects.exists()


@pytest.mark.django_db
def test_an_authentication_template_in_bulk_is_refused_without_a_phone(
    shop_api, templates
):
    consent(shop_api, ANNA)
    consent_by_user_id(shop_api, LENA)
    with_phone = Customer.objects.create(user_id=MAX, wa_id="4915112345678")
    ConsentRecord.objects.create(
        customer=with_phone, purpose="utility", status="opt_in", source="checkout"
    )
    otp = {
        "to": [ANNA, {"user_id": LENA}, {"user_id": MAX}],
        "purpose": "utility",
        "template": {"name": "login_code", "language": "en"},
        "parameters": {"buttons": [{"index": 0, "type": "otp", "code": "482913"}]},
    }

    response = shop_api.post(NOTIFY_URL, otp, format="json")

    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        ("queued", None),
        ("refused", "phone_required"),
        ("queued", None),
    ]
    assert "authentication template" in results[1]["detail"]
    assert results[1]["message"] is None


@pytest.mark.django_db
def test_bulk_sends_by_user_id_are_set_based(
    shop_api, templates, django_assert_max_num_queries
):
    def bsuid(index: int) -> str:
        return f"DE.{index:011d}"

    for index in range(120):
        customer = Customer.objects.create(user_id=bsuid(index))
        ConsentRecord.objects.create(
            customer=customer,
            purpose="utility",
            status="opt_in" if index < 100 else "opt_out",
            source="checkout",
        )
    recipients = [{"user_id": bsuid(index)} for index in range(130)]

    with django_assert_max_num_queries(60):
        response = shop_api.post(NOTIFY_URL, order_shipped(recipients), format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["queued"], body["refused"]) == (100, 30)
    assert Customer.objects.filter(wa_id="").count() == 130


@pytest.mark.django_db
def test_a_csv_upload_takes_a_user_id_column(
    admin_client, shop_api, templates, sandbox_number
):
    consent(shop_api, ANNA)
    consent_by_user_id(shop_api, LENA)
    consent_by_user_id(shop_api, MAX)
    csv_text = (
        "phone,user_id,reference,body_1,body_2\n"
        f"{ANNA},,order-1,Anna,4711\n"
        f",{LENA},order-2,Lena,4712\n"
        f"{ANNA},{LENA},order-3,Both,4713\n"
        ",,order-4,Neither,4714\n"
        f",{MAX},order-5,Max,\n"
        ",not a bsuid,order-6,Bad,4716\n"
        ",DE.99999999999,order-7,New,4717\n"
    )
    template = MessageTemplate.objects.get(name="order_shipped")

    response = upload_csv(
        admin_client, number=sandbox_number, template=template, text=csv_text
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    batch = NotificationBatch.objects.get()
    assert (batch.source, batch.total, batch.queued, batch.refused) == ("csv", 7, 2, 5)
    rows = list(batch.notifications.order_by("position"))
    assert [(n.state, (n.error or {}).get("code")) for n in rows] == [
        ("queued", None),
        ("queued", None),
        ("refused", "invalid_phone"),
        ("refused", "invalid_phone"),
        ("refused", "template_parameters"),
        ("refused", "invalid_phone"),
        ("refused", "no_consent"),
    ]
    assert [(n.to, n.user_id) for n in rows[:2]] == [(ANNA, ""), ("", LENA)]
    assert rows[1].customer == Customer.objects.get(user_id=LENA)
    assert (
        rows[2].error["detail"]
        == rows[3].error["detail"]
        == ("Give exactly one of phone and user_id in each row.")
    )
    assert "business-scoped user id" in rows[5].error["detail"]
    detail = admin_client.get(
        reverse("admin:conversations_notificationbatch_change", args=[batch.pk])
    ).content.decode()
    assert LENA in detail


@pytest.mark.django_db
def test_a_csv_without_a_phone_or_user_id_column_is_refused(
    admin_client, templates, sandbox_number
):
    template = MessageTemplate.objects.get(name="order_shipped")
    response = upload_csv(
        admin_client,
        number=sandbox_number,
        template=template,
        text="reference,body_1\nx,y\n",
    )
    assert response.status_code == 200
    assert "a phone or a user_id column" in response.content.decode()
    assert not NotificationBatch.objects.exists()


@pytest.mark.django_db
def test_the_schema_documents_user_id_for_bulk_recipients(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    to = document["components"]["schemas"]["NotificationInput"]["properties"]["to"]
    (bulk,) = [kind for kind in to["oneOf"] if kind["type"] == "array"]
    (item,) = [kind for kind in bulk["items"]["oneOf"] if kind["type"] == "object"]
    assert {"to", "user_id"} <= set(item["properties"])
    assert item["oneOf"] == [{"required": ["to"]}, {"required": ["user_id"]}]
    examples = document["paths"]["/api/v1/notifications/"]["post"]["requestBody"]
    bulk_example = examples["content"]["application/json"]["examples"]
    assert any(
        isinstance(example["value"]["to"], list)
        and any("user_id" in r for r in example["value"]["to"] if isinstance(r, dict))
        for example in bulk_example.values()
        if "to" in example["value"]
    )
