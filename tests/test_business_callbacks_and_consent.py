"""Consent API and ledger, signed status callbacks, and the admin's CSV upload."""

import json
import time

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import callbacks, services
from conversations.models import (
    CallbackDelivery,
    CallbackEndpoint,
    ConsentRecord,
    Customer,
    Message,
    MessageTemplate,
    Notification,
    NotificationBatch,
)
from sandbox.testing import webhook_receiver
from tests.fixtures.business import (
    ANNA,
    BEN,
    CONSENT_URL,
    NOTIFY_URL,
    api_client_for,
    boarding_pass,
    consent,
    upload_csv,
)
from tests.fixtures.outbound import feed_webhooks, wait_for_status

# --- Consent -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_consent_creates_the_customer_and_the_ledger_lists_newest_first(
    shop_api, admin_user
):
    first = consent(shop_api, ANNA)
    assert first["purpose"] == "utility" and first["status"] == "opt_in"
    assert first["recorded_by"] == "booking-system"
    customer = Customer.objects.get(wa_id=ANNA[1:])
    assert customer.phone == ANNA
    consent(shop_api, ANNA, status="opt_out")
    assert Customer.objects.count() == 1
    ledger = (
        api_client_for(admin_user)
        .get(f"/api/v1/customers/{customer.pk}/consents/")
        .json()["results"]
    )
    assert [(r["status"], r["source"]) for r in ledger] == [
        ("opt_out", "checkout"),
        ("opt_in", "checkout"),
    ]
    assert set(ledger[0]) == {
        "id",
        "customer",
        "purpose",
        "status",
        "source",
        "wording",
        "occurred_at",
        "recorded_at",
        "recorded_by",
    }
    assert not services.has_consent(customer, "utility")


@pytest.mark.django_db
def test_consent_input_is_validated(shop_api):
    for body in (
        {"phone": "017012345678", "purpose": "utility", "status": "opt_in"},
        {"phone": ANNA, "purpose": "spam", "status": "opt_in"},
        {"phone": ANNA, "purpose": "utility", "status": "maybe"},
        {"phone": ANNA, "purpose": "utility", "status": "opt_in", "source": "whatsapp"},
    ):
        response = shop_api.post(CONSENT_URL, body, format="json")
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid" or response.json()["code"]
    assert not ConsentRecord.objects.exists()


@pytest.mark.parametrize(
    "text,stops",
    [
        ("STOP", True),
        (" stop! ", True),
        ("Arrêt", True),
        ("ARRET", True),
        ("baja", True),
        ("Unsubscribe.", True),
        ("please stop sending", False),
        ("stopp", True),
        ("", False),
    ],
)
def test_opt_out_keywords_match_whole_messages_ignoring_case_and_accents(
    text, stops, settings
):
    settings.OPT_OUT_KEYWORDS = ["STOP", "STOPP", "ARRÊT", "BAJA", "UNSUBSCRIBE"]
    assert services.is_opt_out_message(text) is stops


@pytest.mark.django_db
def test_an_agent_records_consent_from_the_customer_panel(agent_client, agent, number):
    from tests.factories import ConversationFactory

    conversation = ConversationFactory(number=number)
    response = agent_client.post(
        reverse("conversations:consent", args=[conversation.pk]),
        {"purpose": "all", "status": "opt_out", "wording": "Said no by phone"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    records = ConsentRecord.objects.filter(customer=conversation.customer)
    assert {(r.purpose, r.status, r.source, r.recorded_by) for r in records} == {
        ("marketing", "opt_out", "agent", agent),
        ("utility", "opt_out", "agent", agent),
    }
    assert "Opted out" in response.content.decode()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_marketing_stop_button_and_131050_opt_out_of_marketing_only(
    shop_api, templates, delivery_worker, graph_sandbox, receiver
):
    consent(shop_api, ANNA, purpose="marketing")
    consent(shop_api, ANNA, purpose="utility")
    graph_sandbox.control.customer_message(
        ANNA[1:], type="button", text="Stop promotions", payload="STOP_PROMOTIONS"
    )
    receiver.wait_for(1, timeout=10)
    fed = feed_webhooks(receiver)
    customer = Customer.objects.get(wa_id=ANNA[1:])
    assert not services.has_consent(customer, "marketing")
    assert services.has_consent(customer, "utility")

    consent(shop_api, ANNA, purpose="marketing")
    graph_sandbox.control.set_faults(failed_status_next=[131050])
    sale = {
        "to": ANNA,
        "purpose": "marketing",
        "template": {"name": "spring_sale", "language": "en"},
        "parameters": {
            "header": {"image": {"link": "https://example.com/sale.jpg"}},
            "body": {"first_name": "Anna", "discount": "20%"},
        },
    }
    queued = shop_api.post(NOTIFY_URL, sale, format="json").json()
    wait_for_status(Message.objects.get(pk=queued["message"]), "sent")
    receiver.wait_for(fed + 1, timeout=10)
    feed_webhooks(receiver, start=fed)
    latest = ConsentRecord.objects.filter(customer=customer).first()
    assert (latest.purpose, latest.status, latest.source) == (
        "marketing",
        "opt_out",
        "meta_error",
    )
    assert services.has_consent(customer, "utility")


# --- Callbacks ---------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_statuses_reach_the_business_signed_and_a_failing_endpoint_backs_off(
    shop_api, templates, delivery_worker, graph_sandbox, receiver, settings
):
    settings.BUSINESS_CALLBACK_BACKOFF_BASE = 30.0
    # The business's systems are the test's receivers, on loopback.
    settings.BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES = True
    with webhook_receiver() as business, webhook_receiver() as broken:
        broken.answer_status = 500
        CallbackEndpoint.objects.create(
            name="Bookings", url=business.url, secret="s3cret"
        )
        CallbackEndpoint.objects.create(name="Broken", url=broken.url, secret="other")
        consent(shop_api, ANNA)
        queued = shop_api.post(NOTIFY_URL, boarding_pass(), format="json").json()
        wait_for_status(Message.objects.get(pk=queued["message"]), "sent")
        receiver.wait_for(3, timeout=10)
        feed_webhooks(receiver)
        # Rows first (in the webhook's transaction), requests in their own task.
        assert CallbackDelivery.objects.count() == 6
        while services.deliver_callbacks():
            pass
        received = business.wait_for(3, timeout=10)
        bodies = [item.json() for item in received]
        assert sorted(b["status"] for b in bodies) == ["delivered", "read", "sent"]
        assert {b["notification"]["reference"] for b in bodies} == {"booking-4711"}
        assert {b["notification"]["id"] for b in bodies} == {queued["id"]}
        for item in received:
            timestamp = item.headers["X-Helpdesk-Timestamp"]
            assert abs(int(timestamp) - time.time()) < 60
            assert item.headers["X-Helpdesk-Signature"] == (
                f"t={timestamp},v1={callbacks.sign('s3cret', timestamp, item.body)}"
            )
            assert services.compare_signature(
                "s3cret",
                timestamp,
                item.body,
                callbacks.sign("s3cret", timestamp, item.body),
            )
            assert not services.compare_signature(
                "s3cret", str(int(timestamp) + 1), item.body, timestamp
            )
        assert len(broken.received) == 3
        failing = CallbackDelivery.objects.filter(endpoint__name="Broken")
        assert {(d.state, d.attempts, d.last_status_code) for d in failing} == {
            ("pending", 1, 500)
        }
        assert all(d.next_attempt_at > timezone.now() for d in failing)
        assert not services.callbacks_due()
        # Redelivered webhooks owe the business nothing new.
        feed_webhooks(receiver)
        assert CallbackDelivery.objects.count() == 6
        json.dumps([d.payload for d in CallbackDelivery.objects.all()])


def test_callback_backoff_grows_and_is_capped(settings):
    settings.BUSINESS_CALLBACK_BACKOFF_BASE = 10
    settings.BUSINESS_CALLBACK_BACKOFF_MAX = 3600
    delays = [services.callback_backoff(n).total_seconds() for n in (1, 2, 3, 10, 20)]
    assert delays == [10, 20, 40, 3600, 3600]


# --- Admin -------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_csv_upload_sends_per_row_and_shows_progress(
    admin_client, templates, delivery_worker, graph_sandbox, sandbox_number, shop_api
):
    consent(shop_api, ANNA)
    consent(shop_api, BEN)
    csv_text = (
        "phone,reference,body_1,body_2,header_link,document_filename\n"
        f"{ANNA},booking-1,Anna,LH 1,https://example.com/1.pdf,pass-1.pdf\n"
        f"{BEN},booking-2,Ben,,https://example.com/2.pdf,pass-2.pdf\n"
        "+4917000000000,booking-3,Cy,LH 3,https://example.com/3.pdf,pass-3.pdf\n"
    )
    template = MessageTemplate.objects.get(name="boarding_pass")
    response = upload_csv(
        admin_client, number=sandbox_number, template=template, text=csv_text
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    batch = NotificationBatch.objects.get()
    assert (batch.source, batch.total, batch.queued, batch.refused) == ("csv", 3, 1, 2)
    rows = list(batch.notifications.order_by("position"))
    assert [n.state for n in rows] == ["queued", "refused", "refused"]
    assert [(n.error or {}).get("code") for n in rows] == [
        None,
        "template_parameters",
        "no_consent",
    ]
    wait_for_status(rows[0].message, "sent", "read")
    page = admin_client.get(
        reverse("admin:conversations_notificationbatch_changelist")
    ).content.decode()
    assert "<progress" in page and "3 of 3 settled" in page
    detail = admin_client.get(
        reverse("admin:conversations_notificationbatch_change", args=[batch.pk])
    ).content.decode()
    assert "booking-1" in detail and "refused" in detail
    assert (
        Notification.objects.get(reference="booking-1").message.payload["components"][
            0
        ]["parameters"][0]["document"]["filename"]
        == "pass-1.pdf"
    )
