"""Outbound delivery end to end: services queue rows, a real worker sends them
to the sandbox, and the sandbox's status webhooks come back through inbound."""

import os
import signal
import subprocess
from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations import realtime, services
from conversations.delivery import doorbells, engine
from conversations.models import AccountNotice, LiveEvent, Message, MessageTemplate
from helpdesk.processes import in_this_python, worker_command
from sandbox.testing import wait_until
from tests.factories import MessageFactory
from tests.fixtures.outbound import (
    CUSTOMER,
    feed_webhooks,
    open_conversation,
    sends,
    sends_for,
    wait_for_status,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def reply(conversation, text="Hello"):
    return services.send_reply(
        conversation=conversation, kind="text", content={"body": text}
    )


def test_a_reply_is_queued_then_sent_with_our_id_and_settles_by_webhook(
    graph_sandbox, conversation, delivery_worker, receiver
):
    message = services.send_reply(
        conversation=conversation,
        kind="text",
        content={"body": "See https://example.com", "preview_url": True},
    )
    assert message.status == Message.Status.QUEUED
    wait_for_status(message, Message.Status.SENT)
    assert message.wamid.startswith("wamid.")
    (record,) = sends_for(graph_sandbox, message)
    assert record["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": f"+{CUSTOMER}",
        "type": "text",
        "text": {"body": "See https://example.com", "preview_url": True},
        "biz_opaque_callback_data": str(message.pk),
    }
    receiver.wait_for(3)
    feed_webhooks(receiver)
    message.refresh_from_db()
    assert message.status == Message.Status.READ


def test_every_send_type_goes_out_as_meta_documents_it(
    graph_sandbox, conversation, delivery_worker
):
    quoted = MessageFactory(conversation=conversation, wamid="wamid.CUSTOMER1")
    button_reply = {
        "type": "button",
        "body": {"text": "Pick one"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                {"type": "reply", "reply": {"id": "no", "title": "No"}},
            ]
        },
    }
    a_list = {
        "type": "list",
        "body": {"text": "Choose a slot"},
        "action": {
            "button": "Slots",
            "sections": [{"title": "Today", "rows": [{"id": "t1", "title": "10:00"}]}],
        },
    }
    contact = [{"name": {"formatted_name": "Anna", "first_name": "Anna"}}]
    cases = [
        ("text", {"body": "Hi", "preview_url": False}, None),
        ("image", {"link": "https://example.com/a.jpg", "caption": "A"}, None),
        ("document", {"id": "1234", "filename": "pass.pdf"}, None),
        ("audio", {"link": "https://example.com/v.ogg", "voice": True}, None),
        ("video", {"link": "https://example.com/v.mp4"}, None),
        ("sticker", {"link": "https://example.com/s.webp"}, None),
        ("interactive", button_reply, None),
        ("interactive", a_list, None),
        ("location", {"latitude": 52.5, "longitude": 13.4, "name": "Office"}, None),
        ("contacts", contact, None),
        ("text", {"body": "Quoted"}, quoted),
    ]
    messages = [
        services.send_reply(
            conversation=conversation, kind=kind, content=content, reply_to=reply_to
        )
        for kind, content, reply_to in cases
    ]
    messages.append(services.react(message=quoted, emoji="👍"))
    messages.append(services.react(message=quoted, emoji=""))
    for message in messages:
        wait_for_status(message, Message.Status.SENT, Message.Status.FAILED)
    bodies = [sends_for(graph_sandbox, m)[0]["body"] for m in messages]
    for (kind, content, reply_to), body in zip(cases, bodies, strict=False):
        assert body["type"] == kind
        assert body[kind] == content
        assert body["to"] == f"+{CUSTOMER}"
        if reply_to:
            assert body["context"] == {"message_id": "wamid.CUSTOMER1"}
        else:
            assert "context" not in body
    assert bodies[-2]["reaction"] == {"message_id": "wamid.CUSTOMER1", "emoji": "👍"}
    assert bodies[-1]["reaction"] == {"message_id": "wamid.CUSTOMER1", "emoji": ""}
    assert "context" not in bodies[-1]


def test_outside_the_window_free_form_is_refused_before_any_request(
    graph_sandbox, sandbox_number
):
    conversation = open_conversation(graph_sandbox, sandbox_number)
    conversation.last_inbound_at = timezone.now() - timedelta(hours=24, seconds=1)
    MessageTemplate.objects.create(
        waba_id=sandbox_number.waba_id,
        name="order_shipped",
        language="en",
        category="UTILITY",
        status="APPROVED",
    )
    with pytest.raises(services.WindowClosed) as caught:
        reply(conversation)
    assert caught.value.code == "window_closed"
    assert [t["name"] for t in caught.value.extra["templates"]] == ["order_shipped"]
    assert not Message.objects.filter(direction="outbound").exists()
    assert sends(graph_sandbox) == []


def test_permanent_errors_fail_with_the_code_and_are_not_retried(
    graph_sandbox, conversation, delivery_worker
):
    graph_sandbox.control.set_faults(error_next=[131026])
    message = reply(conversation)
    wait_for_status(message, Message.Status.FAILED)
    assert message.error["code"] == 131026
    assert message.error["fbtrace_id"]
    assert message.attempts == 1
    assert len(sends_for(graph_sandbox, message)) == 1


def test_every_status_a_run_moves_a_message_to_is_published_as_a_live_event(
    graph_sandbox, conversation
):
    graph_sandbox.control.set_faults(error_next=[131026])
    failed, sent = reply(conversation, "one"), reply(conversation, "two")
    published_before = LiveEvent.objects.count()

    engine.run(conversation.number_id, run_seconds=1)

    updates = LiveEvent.objects.filter(
        pk__gt=published_before, type=realtime.MESSAGE_UPDATED
    ).order_by("pk")
    assert {event.number_id for event in updates} == {conversation.number_id}
    assert {event.conversation_id for event in updates} == {conversation.pk}
    statuses = defaultdict(list)
    for event in updates:
        assert event.data["conversation"] == conversation.pk
        statuses[event.data["message"]].append(event.data["status"])
    assert statuses == {
        failed.pk: [Message.Status.SENDING, Message.Status.FAILED],
        sent.pk: [Message.Status.SENDING, Message.Status.SENT],
    }


@pytest.mark.parametrize("code", [130429, 131000])
def test_retryable_errors_retry_and_succeed(
    graph_sandbox, conversation, delivery_worker, code
):
    graph_sandbox.control.set_faults(error_next=[code, code])
    message = reply(conversation)
    wait_for_status(message, Message.Status.SENT)
    assert message.attempts == 3
    records = sends_for(graph_sandbox, message)
    assert [r["status"] for r in records] == [400 if code == 130429 else 500] * 2 + [
        200
    ] or len(records) == 3


def test_a_pair_rate_limit_holds_that_customer_only(
    graph_sandbox, sandbox_number, delivery_worker
):
    first = open_conversation(graph_sandbox, sandbox_number, wa_id="4917000000001")
    second = open_conversation(graph_sandbox, sandbox_number, wa_id="4917000000002")
    graph_sandbox.control.set_faults(error_next=[131056])
    held = reply(first, "one")
    wait_until(lambda: sends_for(graph_sandbox, held), timeout=10)
    others = [reply(second, f"other {n}") for n in range(3)]
    for message in others:
        wait_for_status(message, Message.Status.SENT)
        # Each went out at its first try, while the first customer waits.
        assert [r["status"] for r in sends_for(graph_sandbox, message)] == [200]
    held.refresh_from_db()
    assert held.status == Message.Status.QUEUED
    assert held.error["code"] == 131056
    wait_for_status(held, Message.Status.SENT)
    first_try, retry = sends_for(graph_sandbox, held)
    assert first_try["response"]["error"]["code"] == 131056
    assert retry["status"] == 200


def test_a_read_timeout_after_acceptance_is_unknown_then_sent_by_webhook(
    graph_sandbox, conversation, delivery_worker, receiver, settings
):
    settings.WHATSAPP_GRAPH_API_TIMEOUT = 0.5
    graph_sandbox.control.set_faults(
        timeout_after_accept_next=1, timeout_mode="hang", hang_seconds=5
    )
    message = reply(conversation)
    receiver.wait_for(1)
    wait_for_status(message, Message.Status.UNKNOWN, Message.Status.SENT)
    if message.status == Message.Status.UNKNOWN:
        assert message.wamid is None
    receiver.wait_for(3)
    feed_webhooks(receiver)
    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert message.wamid
    engine.sweep()
    assert len(sends_for(graph_sandbox, message)) == 1


def test_an_expired_token_pauses_the_number_and_tells_admins(
    graph_sandbox, conversation, delivery_worker, sandbox_number
):
    sandbox_number.access_token = "expired"  # noqa: S105
    sandbox_number.save()
    first, second = reply(conversation, "one"), reply(conversation, "two")
    wait_until(
        lambda: AccountNotice.objects.filter(kind="sending_paused").exists(),
        timeout=10,
    )
    sandbox_number.refresh_from_db()
    assert sandbox_number.sending_paused
    assert "190" in sandbox_number.sending_paused_reason
    for message in (first, second):
        wait_for_status(message, Message.Status.QUEUED)
    # Both may have been in flight before the first 190 paused the number;
    # nothing is tried after the pause.
    tried = len(sends(graph_sandbox))
    assert tried <= 2
    engine.sweep()
    assert len(sends(graph_sandbox)) == tried
    sandbox_number.access_token = graph_sandbox.number.access_token
    sandbox_number.save()
    services.resume_sending(number=sandbox_number)
    for message in (first, second):
        wait_for_status(message, Message.Status.SENT)


def test_the_rate_limiter_keeps_every_second_under_the_throughput(
    graph_sandbox, sandbox_number, delivery_worker, settings
):
    settings.WHATSAPP_RATE_LIMIT_WINDOW = 1.1
    sandbox_number.throughput = 20
    sandbox_number.save()
    graph_sandbox.control.set_faults(latency_ms=20)
    customers = [f"49170100{n:05d}" for n in range(10)]
    conversations = [
        open_conversation(graph_sandbox, sandbox_number, wa_id=wa_id)
        for wa_id in customers
    ]
    messages = [reply(c, f"bulk {n}") for n in range(6) for c in conversations]
    for message in messages:
        wait_for_status(message, Message.Status.SENT, timeout=30)
    stats = graph_sandbox.control.stats()["numbers"][sandbox_number.phone_number_id]
    assert stats["max_per_second"] <= 20
    assert stats.get("rejected_by_throughput", 0) == 0
    for message in messages:
        assert len(sends_for(graph_sandbox, message)) == 1


def test_a_worker_killed_mid_send_never_resends_and_settles_by_webhook(
    graph_sandbox, conversation, receiver, settings, tmp_path
):
    settings.WHATSAPP_DELIVERY_LEASE_SECONDS = 1.0
    graph_sandbox.control.set_faults(
        timeout_after_accept_next=1, timeout_mode="hang", hang_seconds=60
    )
    message = reply(conversation)
    worker = start_subprocess_worker(graph_sandbox, tmp_path)
    try:
        wait_until(lambda: sends_for(graph_sandbox, message), timeout=30)
        message.refresh_from_db()
        assert message.status == Message.Status.SENDING
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    wait_until(
        lambda: (
            engine.sweep()["expired"]
            or Message.objects.get(pk=message.pk).status == "unknown"
        ),
        timeout=10,
    )
    message.refresh_from_db()
    assert message.status == Message.Status.UNKNOWN
    engine.run(conversation.number_id, run_seconds=1)
    receiver.wait_for(3)
    feed_webhooks(receiver)
    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert len(sends_for(graph_sandbox, message)) == 1


def test_a_worker_killed_mid_batch_resends_only_what_never_started(
    graph_sandbox, sandbox_number, receiver, settings, tmp_path
):
    """Replies claimed in a batch but still waiting their turn when the worker
    dies go back to `queued` and are sent once; only the replies whose request
    had reached Meta end `unknown`, and their status webhooks settle them."""
    customers = [f"49170200{n:05d}" for n in range(4)]
    conversations = [
        open_conversation(graph_sandbox, sandbox_number, wa_id=wa_id)
        for wa_id in customers
    ]
    # One thread sends a customer's replies in order: while Meta holds the
    # first, the other four of each customer wait, claimed, for their turn.
    messages = [reply(c, f"reply {n}") for n in range(5) for c in conversations]
    graph_sandbox.control.set_faults(hold_sends_ms=30_000)
    worker = start_subprocess_worker(graph_sandbox, tmp_path)
    try:
        wait_until(lambda: len(sends(graph_sandbox)) >= len(customers), timeout=30)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    reached = {int(r["body"]["biz_opaque_callback_data"]) for r in sends(graph_sandbox)}
    assert len(reached) == len(customers)
    assert set(
        Message.objects.filter(pk__in=[m.pk for m in messages]).values_list(
            "status", flat=True
        )
    ) == {Message.Status.SENDING}

    # The worker's leases (1 s) run out; the sweeper sorts what it left.
    wait_until(lambda: engine.sweep()["expired"], timeout=10)
    statuses = dict(
        Message.objects.filter(pk__in=[m.pk for m in messages]).values_list(
            "pk", "status"
        )
    )
    assert statuses == {
        m.pk: Message.Status.UNKNOWN if m.pk in reached else Message.Status.QUEUED
        for m in messages
    }

    graph_sandbox.control.set_faults()
    engine.run(sandbox_number.pk, run_seconds=10)
    for message in messages:
        message.refresh_from_db()
        assert len(sends_for(graph_sandbox, message)) == 1, message.pk
        assert message.status == (
            Message.Status.UNKNOWN if message.pk in reached else Message.Status.SENT
        )
    # Meta accepted the held ones: their webhooks (our id in them) settle them.
    receiver.wait_for(3 * len(messages), timeout=15)
    feed_webhooks(receiver)
    for message in messages:
        message.refresh_from_db()
        assert message.status == Message.Status.READ
        assert len(sends_for(graph_sandbox, message)) == 1


def start_subprocess_worker(sandbox, tmp_path) -> subprocess.Popen:
    """A real `celery worker` process on the test database."""
    database = connection.settings_dict
    if database["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{database['NAME']}"
    else:
        url = (
            f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        )
    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL,
        "WHATSAPP_GRAPH_API_URL": sandbox.base_url,
        "WHATSAPP_DELIVERY_LEASE_SECONDS": "1",
        "WHATSAPP_GRAPH_API_TIMEOUT": "60",
    }
    doorbells.ring_delivery(Message.objects.first().conversation.number_id)
    return subprocess.Popen(
        in_this_python(
            worker_command(
                queues=["default", "delivery"],
                pool="solo",
                alone=True,
                log_level="WARNING",
            )
        ),
        env=env,
        start_new_session=True,
        stdout=open(tmp_path / "worker.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
