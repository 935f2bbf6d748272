"""Status webhooks move the business's messages forward, never back."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conversations import metrics, realtime, services
from conversations.delivery import engine
from conversations.delivery.threads import SENT, Job, Outcome
from conversations.models import LiveEvent, Message, ParkedStatus, WebhookEvent
from conversations.rules import deadlocks
from conversations.tasks import sweep_webhook_events
from conversations.whatsapp.client import SendResult
from tests.factories import ConversationFactory, MessageFactory
from tests.fixtures.inbound import process
from tests.fixtures.payloads import load_payload_json

# The wamid of the status fixtures.
WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJEQUI4QUNCMjU0RTdBN0Y0QzAA"
BASE = datetime(2025, 6, 18, 16, 0, tzinfo=UTC)
_counter = itertools.count()


def outbound(number, wamid=WAMID, **fields) -> Message:
    fields.setdefault("status", Message.Status.SENDING)
    return MessageFactory(
        conversation=ConversationFactory(number=number),
        direction=Message.Direction.OUTBOUND,
        wamid=wamid,
        **fields,
    )


def status_body(status: str, *, wamid=WAMID, at: datetime | None = None, **extra):
    """The status_sent fixture reshaped into another status."""
    fixture = "status_failed" if status == "failed" else "status_sent"
    document = load_payload_json(fixture)
    raw = document["entry"][0]["changes"][0]["value"]["statuses"][0]
    raw["id"] = wamid
    raw["status"] = status
    if at is not None:
        raw["timestamp"] = str(int(at.timestamp()))
    if status != "sent":
        raw.pop("pricing", None)
    raw.update(extra)
    return document


def message_updates(message) -> int:
    return LiveEvent.objects.filter(
        type=realtime.MESSAGE_UPDATED, data__message=message.pk
    ).count()


def test_sent_delivered_read_in_order(meta_number):
    message = outbound(meta_number)
    for offset, status in enumerate(["sent", "delivered", "read"]):
        event = process(status_body(status, at=BASE + timedelta(minutes=offset)))
        assert event.state == WebhookEvent.State.PROCESSED

    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert message.sent_at == BASE
    assert message.delivered_at == BASE + timedelta(minutes=1)
    assert message.read_at == BASE + timedelta(minutes=2)
    assert message_updates(message) == 3


def test_read_before_delivered_ends_read_and_counts_as_delivered(meta_number):
    message = outbound(meta_number)
    process(status_body("read", at=BASE + timedelta(minutes=2)))
    process(status_body("delivered", at=BASE + timedelta(minutes=1)))

    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert message.delivered_at == BASE + timedelta(minutes=1)
    assert message.read_at == BASE + timedelta(minutes=2)


def test_read_alone_fills_in_delivered(meta_number):
    message = outbound(meta_number)
    process(status_body("read", at=BASE))

    message.refresh_from_db()
    assert (message.status, message.delivered_at, message.read_at) == (
        Message.Status.READ,
        BASE,
        BASE,
    )


def test_a_late_sent_changes_nothing(meta_number):
    message = outbound(meta_number)
    process(status_body("sent", at=BASE))
    process(status_body("read", at=BASE + timedelta(minutes=2)))
    updates = message_updates(message)

    process(status_body("sent", at=BASE))

    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert message.sent_at == BASE
    assert message_updates(message) == updates


def test_a_repeated_status_is_a_no_op(meta_number):
    message = outbound(meta_number)
    process(status_body("delivered", at=BASE))
    process(status_body("delivered", at=BASE))

    assert message_updates(message) == 1


def test_failed_records_metas_error(meta_number):
    message = outbound(meta_number)
    process("status_failed")

    message.refresh_from_db()
    assert message.status == Message.Status.FAILED
    assert message.failed_at is not None
    assert message.error["code"] == 131047
    assert message.error["title"] == "Re-engagement message"
    assert "24 hours" in message.error["details"]


def test_failed_after_sent_is_recorded_and_final(meta_number):
    message = outbound(meta_number)
    process(status_body("sent", at=BASE))
    process(status_body("failed", at=BASE + timedelta(minutes=1)))
    process(status_body("delivered", at=BASE + timedelta(minutes=2)))

    message.refresh_from_db()
    assert message.status == Message.Status.FAILED


def test_pricing_is_stored(meta_number):
    message = outbound(meta_number)
    body = status_body(
        "sent",
        at=BASE,
        pricing={
            "billable": True,
            "pricing_model": "PMP",
            "category": "utility",
            "type": "regular",
        },
    )
    process(body)

    message.refresh_from_db()
    assert message.pricing["category"] == "utility"
    assert message.pricing["type"] == "regular"


def test_unknown_status_value_is_ignored(meta_number):
    message = outbound(meta_number, status=Message.Status.SENT)
    event = process("status_unknown_value")

    assert event.state == WebhookEvent.State.PROCESSED
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    assert not ParkedStatus.objects.exists()


def test_status_for_an_unknown_wamid_is_parked_then_applied(meta_number):
    event = process(status_body("delivered", at=BASE))
    process(status_body("delivered", at=BASE))  # a redelivery parks once

    assert event.state == WebhookEvent.State.PROCESSED
    parked = ParkedStatus.objects.get()
    assert (parked.wamid, parked.status, parked.timestamp) == (
        WAMID,
        "delivered",
        BASE,
    )
    message = outbound(meta_number, wamid=WAMID, status=Message.Status.SENT)

    assert services.apply_parked_statuses(message) == 1

    assert message.status == Message.Status.DELIVERED
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert message.delivered_at == BASE
    assert not ParkedStatus.objects.exists()


def test_the_sweeper_applies_statuses_parked_after_the_send_was_recorded(
    meta_number,
):
    process(status_body("read", at=BASE))
    message = outbound(meta_number, wamid=WAMID, status=Message.Status.SENT)

    sweep_webhook_events()

    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert not ParkedStatus.objects.exists()


def test_callback_data_settles_a_send_whose_wamid_was_never_stored(meta_number):
    message = outbound(meta_number, wamid=None, status=Message.Status.UNKNOWN)
    process(status_body("sent", at=BASE, biz_opaque_callback_data=str(message.pk)))

    message.refresh_from_db()
    assert message.wamid == WAMID
    assert message.status == Message.Status.SENT
    assert not ParkedStatus.objects.exists()


def test_callback_data_never_claims_another_numbers_message(meta_number):
    from tests.factories import WhatsAppNumberFactory

    other = outbound(WhatsAppNumberFactory(), wamid=None)
    process(status_body("sent", at=BASE, biz_opaque_callback_data=str(other.pk)))

    other.refresh_from_db()
    assert other.wamid is None
    assert ParkedStatus.objects.count() == 1


STATUS_SEQUENCES = st.lists(
    st.sampled_from(["sent", "delivered", "read", "failed"]), min_size=1, max_size=7
)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=STATUS_SEQUENCES)
def test_any_order_of_statuses_ends_in_the_highest(meta_number, sequence):
    wamid = f"wamid.PROPERTY{next(_counter)}"
    message = outbound(meta_number, wamid=wamid)
    for status in sequence:
        minutes = {"sent": 0, "delivered": 1, "read": 2, "failed": 5}[status]
        at = BASE + timedelta(minutes=minutes)
        process(status_body(status, wamid=wamid, at=at))

    message.refresh_from_db()
    if "failed" in sequence:
        expected = Message.Status.FAILED
    else:
        expected = max(sequence, key=lambda s: Message.STATUS_RANK[s])
    assert message.status == expected
    if {"delivered", "read"} & set(sequence):
        assert message.delivered_at is not None
    if "read" in sequence:
        assert message.read_at == BASE + timedelta(minutes=2)
        assert message.delivered_at <= message.read_at
    if "sent" in sequence:
        assert message.sent_at == BASE


def _sent_count() -> int:
    return int(metrics._redis().hget(metrics.SENDS, f"sent{metrics.SEPARATOR}") or 0)


def _written_back(message: Message, wamid: str) -> None:
    """What a delivery run writes when Meta accepted the send."""
    job = Job(
        message_id=message.pk,
        conversation_id=message.conversation_id,
        recipient=message.conversation.customer.wa_id,
        body={},
        attempts=1,
        claim="claim",
        lease=timezone.now(),
    )
    engine.record(
        message.conversation.number, [Outcome(job, SENT, result=SendResult(wamid))]
    )


@pytest.mark.django_db(transaction=True)
def test_every_send_meta_accepted_is_counted_sent_once_whoever_learns_it_first(
    meta_number,
):
    before = _sent_count()
    # Its worker died after Meta accepted: only the status webhook tells.
    orphan = outbound(meta_number)
    process(status_body("delivered", at=BASE))
    assert _sent_count() == before + 1
    # A run that was only slow writes back afterwards: not counted again.
    _written_back(orphan, WAMID)
    assert _sent_count() == before + 1

    # Written back first, then Meta's statuses: counted by the run alone.
    other = "wamid.OTHER"
    written = outbound(meta_number, wamid=None)
    _written_back(written, other)
    process(status_body("read", wamid=other, at=BASE))
    written.refresh_from_db()
    assert written.status == Message.Status.READ
    assert _sent_count() == before + 2


class _DeadlockDetected(Exception):
    sqlstate = deadlocks.DEADLOCK_DETECTED


@pytest.mark.django_db(transaction=True)
def test_a_write_back_chosen_as_a_deadlocks_victim_is_written_again(
    meta_number, monkeypatch
):
    message = outbound(meta_number, wamid=None)
    mark_sent = engine._mark_sent
    calls = []

    def deadlocked_once(sent, now):
        calls.append(now)
        moved = mark_sent(sent, now)
        if len(calls) == 1:
            # PostgreSQL aborts the victim at a later statement.
            raise OperationalError("deadlock detected") from _DeadlockDetected()
        return moved

    monkeypatch.setattr(engine, "_mark_sent", deadlocked_once)
    before = _sent_count()

    _written_back(message, "wamid.AFTERDEADLOCK")

    message.refresh_from_db()
    assert len(calls) == 2
    assert (message.status, message.wamid) == ("sent", "wamid.AFTERDEADLOCK")
    assert _sent_count() == before + 1
