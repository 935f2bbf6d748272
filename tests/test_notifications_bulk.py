"""A bulk POST /api/v1/notifications/ takes the set-based path: the same
per-recipient results as one send each, in a number of queries that does not
grow with the recipients, and every accepted message reaches the sandbox."""

import pytest

from conversations.models import (
    ConsentRecord,
    Conversation,
    Customer,
    LiveEvent,
    Message,
    Notification,
)
from sandbox.testing import wait_until
from tests.fixtures.business import NOTIFY_URL, boarding_pass
from tests.fixtures.outbound import sends

pytestmark = pytest.mark.e2e


def phone(index: int) -> str:
    return f"+49170{index:07d}"


def given(phones, status):
    for value in phones:
        customer = Customer.objects.create(wa_id=value[1:], phone=value)
        ConsentRecord.objects.create(
            customer=customer,
            purpose="utility",
            status=status,
            source="checkout",
        )


@pytest.mark.django_db(transaction=True)
def test_a_bulk_send_of_300_is_set_based_and_every_accepted_one_is_delivered(
    shop_api,
    templates,
    sandbox_number,
    delivery_worker,
    graph_sandbox,
    django_assert_max_num_queries,
):
    consented = [phone(i) for i in range(210)]
    opted_out = [phone(i) for i in range(210, 240)]
    unknown = [phone(i) for i in range(240, 270)]
    invalid = [f"not a number {i}" for i in range(30)] + ["4917012345678"] * 5
    given(consented, "opt_in")
    given(opted_out, "opt_out")
    # An unresolved conversation is reused, not opened twice.
    existing = Conversation.objects.create(
        customer=Customer.objects.get(wa_id=consented[0][1:]), number=sandbox_number
    )
    recipients = []
    expected = []
    for index in range(300):
        group = index % 4
        if group == 0 and consented:
            recipients.append(consented.pop(0))
            expected.append(("queued", None))
        elif group == 1 and opted_out:
            recipients.append(opted_out.pop())
            expected.append(("refused", "no_consent"))
        elif group == 2 and unknown:
            recipients.append(unknown.pop())
            expected.append(("refused", "no_consent"))
        elif group == 3 and invalid:
            recipients.append(invalid.pop())
            expected.append(("refused", "invalid_phone"))
        else:
            recipients.append({"to": consented.pop(0), "reference": f"r-{index}"})
            expected.append(("queued", None))
    # The same customer twice gets two messages in one conversation.
    recipients.append(recipients[0])
    expected.append(("queued", None))

    with django_assert_max_num_queries(60):
        response = shop_api.post(
            NOTIFY_URL, boarding_pass(to=recipients), format="json"
        )
    assert response.status_code == 202, response.content
    body = response.json()
    results = body["results"]
    assert [(r["status"], r.get("code")) for r in results] == expected
    queued = [r for r in results if r["status"] == "queued"]
    assert (body["total"], body["queued"]) == (len(recipients), len(queued))
    assert len({r["id"] for r in results}) == len(results)
    assert [r["to"] for r in results] == [
        r if isinstance(r, str) else r["to"] for r in recipients
    ]
    rows = {n.pk: n for n in Notification.objects.all()}
    assert sorted(rows) == sorted(r["id"] for r in results)
    for position, result in enumerate(results):
        row = rows[result["id"]]
        assert row.position == position
        assert row.message_id == result["message"]
        if result["status"] == "queued":
            message = Message.objects.get(pk=result["message"])
            assert message.conversation_id == result["conversation"]
            assert row.customer_id == message.conversation.customer_id
    assert results[0]["conversation"] == results[-1]["conversation"]
    assert results[0]["message"] != results[-1]["message"]
    reused = [r for r in results if r["to"] == phone(0)]
    assert {r["conversation"] for r in reused} == {existing.pk}
    # One unresolved conversation per customer, and its newest message noted.
    conversations = Conversation.objects.filter(
        pk__in={r["conversation"] for r in queued}
    )
    assert conversations.count() == len(queued) - 1
    for conversation in conversations:
        newest = conversation.messages.order_by("-id").first()
        assert conversation.last_message_id == newest.pk
    assert LiveEvent.objects.filter(type="message.created").count() == len(queued)
    assert LiveEvent.objects.filter(type="conversation.created").count() == (
        len(queued) - 2
    )
    for item, result in zip(recipients, results, strict=True):
        reference = item["reference"] if isinstance(item, dict) else "booking-4711"
        assert rows[result["id"]].reference == reference

    def all_sent():
        return not Message.objects.filter(
            direction="outbound", status__in=["queued", "sending"]
        ).exists()

    wait_until(all_sent, timeout=60, interval=0.2)
    assert set(
        Message.objects.filter(direction="outbound").values_list("status", flat=True)
    ) <= {"sent", "delivered", "read"}
    template_sends = [
        s for s in sends(graph_sandbox) if (s["body"] or {}).get("type") == "template"
    ]
    # (A send the sandbox throttled is retried, so count each message once.)
    assert {s["body"]["biz_opaque_callback_data"] for s in template_sends} == {
        str(r["message"]) for r in queued
    }
    document = template_sends[0]["body"]["template"]["components"][0]
    assert document["parameters"][0]["document"]["filename"] == "boarding-pass.pdf"
