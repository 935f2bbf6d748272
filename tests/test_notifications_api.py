"""POST /api/v1/notifications/: refusals, idempotency, bulk sends, documents,
STOP, and the customer's reply landing with the notification's team."""

import pytest
from rest_framework.authtoken.models import Token

from conversations import services
from conversations.models import ConsentRecord, Conversation, Message, Notification
from sandbox.testing import wait_until
from tests.fixtures.business import (
    ANNA,
    BEN,
    NOTIFY_URL,
    api_client_for,
    boarding_pass,
    consent,
    notification,
)
from tests.fixtures.outbound import feed_webhooks, sends, wait_for_status

pytestmark = pytest.mark.e2e


def post(api, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post(NOTIFY_URL, body, format="json", **headers)


def template_sends(sandbox) -> list[dict]:
    return [s for s in sends(sandbox) if (s["body"] or {}).get("type") == "template"]


# --- Refusals ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_customer_without_opt_in_is_refused_with_no_consent(shop_api, templates):
    response = post(shop_api, boarding_pass())
    assert response.status_code == 422
    assert response.json()["code"] == "no_consent"
    assert not Message.objects.filter(direction="outbound").exists()
    consent(shop_api, ANNA, purpose="marketing")
    response = post(shop_api, boarding_pass())
    assert response.json()["code"] == "no_consent", "marketing opt-in is not utility"


@pytest.mark.django_db
def test_a_template_that_is_not_approved_is_refused(shop_api, templates):
    consent(shop_api, ANNA, purpose="marketing")
    for name in ("flash_deal", "win_back", "no_such_template"):
        with_template = {
            "to": ANNA,
            "purpose": "marketing",
            "template": {"name": name, "language": "en"},
        }
        response = post(shop_api, with_template)
        assert response.status_code == 422, name
        assert response.json()["code"] == "template_not_approved", name
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_marketing_template_for_a_utility_notification_is_a_category_mismatch(
    shop_api, templates
):
    consent(shop_api, ANNA)
    response = post(
        shop_api,
        {
            "to": ANNA,
            "purpose": "utility",
            "template": {"name": "spring_sale", "language": "en"},
            "parameters": {"body": {"first_name": "Anna", "discount": "20%"}},
        },
    )
    assert response.status_code == 422
    assert response.json()["code"] == "template_category_mismatch"


@pytest.mark.django_db
def test_the_wrong_parameter_count_is_refused_saying_which(shop_api, templates):
    consent(shop_api, ANNA)
    response = post(shop_api, boarding_pass(parameters={"body": ["Anna"]}))
    assert response.status_code == 422
    assert response.json()["code"] == "template_parameters"
    assert response.json()["detail"] == "body: 2 parameters expected, 1 given"
    no_document = boarding_pass()
    del no_document["document"]
    response = post(shop_api, no_document)
    assert response.json()["code"] == "template_parameters"
    assert "header" in response.json()["detail"]
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_bad_input_is_a_400_naming_the_field(shop_api, templates):
    cases = [
        ({**boarding_pass(), "to": "0170 123"}, "to"),
        ({**boarding_pass(), "to": "+4917012345678\n"}, "to"),
        ({**boarding_pass(), "purpose": "spam"}, "purpose"),
        ({**boarding_pass(), "template": "boarding_pass"}, "template"),
        ({**boarding_pass(), "parameters": {"body": [{"x": 1}]}}, "parameters"),
        (
            {**boarding_pass(), "parameters": {"buttons": [{"index": "a"}]}},
            "parameters",
        ),
        (
            {**boarding_pass(), "document": {"link": "http://x.example/a.pdf"}},
            "document",
        ),
        ({**boarding_pass(), "team": "Nobody's team"}, "team"),
        ({**boarding_pass(), "to": []}, "to"),
    ]
    for body, field in cases:
        response = post(shop_api, body)
        assert response.status_code == 400, (body, response.content)
        assert response.json()["detail"].startswith(field), response.json()
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_users_without_the_permission_get_403(agent, templates):
    response = post(api_client_for(agent), boarding_pass())
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    anonymous = post(api_client_for(agent).__class__(), boarding_pass())
    assert anonymous.status_code in (401, 403)
    Token.objects.all().delete()


# --- Sends through the sandbox --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_retry_with_the_same_key_answers_the_first_result_and_sends_nothing(
    shop_api, templates, delivery_worker, graph_sandbox
):
    consent(shop_api, ANNA)
    first = post(shop_api, boarding_pass(), key="booking-4711-v1")
    assert first.status_code == 202, first.content
    body = first.json()
    assert body["status"] == "queued"
    assert set(body) == {"id", "status", "message", "conversation"}
    message = wait_for_status(Message.objects.get(pk=body["message"]), "sent", "read")
    again = post(shop_api, boarding_pass(), key="booking-4711-v1")
    assert again.status_code == 202
    assert again.json() == body
    assert Notification.objects.count() == 1
    assert Message.objects.filter(direction="outbound").count() == 1
    other = post(
        shop_api, boarding_pass(reference="booking-4712"), key="booking-4711-v1"
    )
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    assert not Message.objects.filter(status__in=["queued", "sending"]).exists()
    recorded = template_sends(graph_sandbox)
    assert [s["body"]["biz_opaque_callback_data"] for s in recorded] == [
        str(message.pk)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_document_header_reaches_the_sandbox_with_its_file_name(
    shop_api, templates, delivery_worker, graph_sandbox
):
    consent(shop_api, ANNA)
    response = post(shop_api, boarding_pass())
    assert response.status_code == 202, response.content
    wait_for_status(Message.objects.get(pk=response.json()["message"]), "sent", "read")
    [send] = template_sends(graph_sandbox)
    template = send["body"]["template"]
    assert template["name"] == "boarding_pass"
    assert template["components"][0] == {
        "type": "header",
        "parameters": [
            {
                "type": "document",
                "document": {
                    "link": "https://example.com/passes/4711.pdf",
                    "filename": "boarding-pass.pdf",
                },
            }
        ],
    }
    assert template["components"][1]["parameters"] == [
        {"type": "text", "text": "Anna"},
        {"type": "text", "text": "LH 2046"},
    ]
    assert send["body"]["to"] == ANNA


@pytest.mark.django_db(transaction=True)
def test_a_bulk_send_queues_the_valid_recipients_and_reports_the_others(
    shop_api, templates, delivery_worker, graph_sandbox
):
    consent(shop_api, ANNA)
    consent(shop_api, BEN)
    consent(shop_api, "+4917055500011", status="opt_out")
    response = post(
        shop_api,
        boarding_pass(
            to=[
                ANNA,
                "not a number",
                {"to": BEN, "reference": "booking-4712"},
                "+4917055500011",
                "+4917055500022",
            ]
        ),
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["total"], body["queued"], body["refused"]) == (5, 2, 3)
    results = body["results"]
    assert [r["status"] for r in results] == [
        "queued",
        "refused",
        "queued",
        "refused",
        "refused",
    ]
    assert [r.get("code") for r in results] == [
        None,
        "invalid_phone",
        None,
        "no_consent",
        "no_consent",
    ]
    assert len({r["id"] for r in results}) == 5
    for result in results:
        assert Notification.objects.filter(pk=result["id"]).exists()
    for result in (results[0], results[2]):
        wait_for_status(Message.objects.get(pk=result["message"]), "sent", "read")
    assert sorted(s["body"]["to"] for s in template_sends(graph_sandbox)) == sorted(
        [ANNA, BEN]
    )
    assert notification(results[2]["id"]).reference == "booking-4712"
    assert notification(results[0]["id"]).reference == "booking-4711"
    refused = shop_api.get(f"{NOTIFY_URL}{results[3]['id']}/").json()
    assert refused["status"] == "refused"
    assert refused["error"]["code"] == "no_consent"


@pytest.mark.django_db(transaction=True)
def test_the_status_follows_the_message_and_a_failure_carries_the_error(
    shop_api, templates, delivery_worker, graph_sandbox, receiver
):
    consent(shop_api, ANNA)
    queued = post(shop_api, boarding_pass()).json()
    detail = shop_api.get(f"{NOTIFY_URL}{queued['id']}/").json()
    assert detail["status"] in {"queued", "sent"}
    assert detail["reference"] == "booking-4711"
    message = wait_for_status(Message.objects.get(pk=queued["message"]), "sent")
    receiver.wait_for(3, timeout=10)
    feed_webhooks(receiver)
    assert shop_api.get(f"{NOTIFY_URL}{queued['id']}/").json()["status"] == "read"

    graph_sandbox.control.set_faults(failed_status_next=[131026])
    failing = post(shop_api, boarding_pass(reference="booking-4713")).json()
    wait_for_status(Message.objects.get(pk=failing["message"]), "sent")
    receiver.wait_for(4, timeout=10)
    feed_webhooks(receiver, start=3)
    failed = shop_api.get(f"{NOTIFY_URL}{failing['id']}/").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == 131026
    message.refresh_from_db()


@pytest.mark.django_db(transaction=True)
def test_stop_from_the_customer_blocks_the_next_marketing_send(
    shop_api, templates, delivery_worker, graph_sandbox, receiver, admin_user
):
    consent(shop_api, ANNA, purpose="marketing")
    sale = {
        "to": ANNA,
        "purpose": "marketing",
        "template": {"name": "spring_sale", "language": "en"},
        "parameters": {
            "header": {"image": {"link": "https://example.com/sale.jpg"}},
            "body": {"first_name": "Anna", "discount": "20%"},
        },
    }
    assert post(shop_api, sale).status_code == 202
    graph_sandbox.control.customer_message(ANNA[1:], type="text", text=" Stop! ")
    wait_until(
        lambda: any(
            "messages" in c["value"]
            for w in receiver.bodies()
            for e in w["entry"]
            for c in e["changes"]
        ),
        timeout=10,
    )
    feed_webhooks(receiver)
    customer = Conversation.objects.get().customer
    assert not services.has_consent(customer, "marketing")
    assert not services.has_consent(customer, "utility")
    refused = post(shop_api, sale)
    assert refused.status_code == 422
    assert refused.json()["code"] == "no_consent"
    ledger = (
        api_client_for(admin_user)
        .get(f"/api/v1/customers/{customer.pk}/consents/")
        .json()
    )
    newest = ledger["results"][:2]
    assert {r["purpose"] for r in newest} == {"marketing", "utility"}
    assert {(r["status"], r["source"], r["recorded_by"]) for r in newest} == {
        ("opt_out", "whatsapp", "customer")
    }
    assert ledger["results"][2]["recorded_by"] == "booking-system"
    assert ConsentRecord.objects.filter(customer=customer).count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_customers_reply_lands_with_the_notification_and_the_chosen_team(
    shop_api,
    templates,
    delivery_worker,
    graph_sandbox,
    receiver,
    travel_desk,
    admin_client,
    admin_user,
):
    consent(shop_api, ANNA)
    queued = post(shop_api, boarding_pass(team="Travel desk")).json()
    wait_for_status(Message.objects.get(pk=queued["message"]), "sent", "read")
    graph_sandbox.control.customer_message(
        ANNA[1:], type="text", text="Can I change my seat?"
    )
    wait_until(
        lambda: any(
            "messages" in c["value"]
            for w in receiver.bodies()
            for e in w["entry"]
            for c in e["changes"]
        ),
        timeout=10,
    )
    feed_webhooks(receiver)
    reply = Message.objects.get(direction="inbound")
    assert reply.conversation_id == queued["conversation"]
    conversation = reply.conversation
    assert conversation.team == travel_desk
    api = api_client_for(admin_user).get(f"/api/v1/conversations/{conversation.pk}/")
    assert api.status_code == 200, api.content
    data = api.json()
    assert data["team"] == travel_desk.pk
    [shown] = data["notifications"]
    assert shown["id"] == queued["id"]
    assert shown["reference"] == "booking-4711"
    assert shown["template"] == {"name": "boarding_pass", "language": "en"}
    html = admin_client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "booking-4711" in html
    assert "Notification" in html


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_with_one_key_queue_once(shop, templates, clean_redis):
    """Two copies of a request racing: the unique key lets one in, the other
    answers its result."""
    import threading

    from django.db import connection

    consent(api_client_for(shop), ANNA)
    barrier = threading.Barrier(2)
    answers = []

    def send():
        client = api_client_for(shop)
        barrier.wait()
        try:
            answers.append(post(client, boarding_pass(), key="race-1"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    assert Notification.objects.count() == 1
    assert Message.objects.filter(direction="outbound").count() == 1
