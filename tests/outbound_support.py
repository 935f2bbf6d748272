"""Fixtures for outbound tests: a sandbox on a real port, a number wired to it,
a real Celery worker, and helpers to feed the sandbox's webhooks back in."""

import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from conversations import services
from conversations.delivery import ratelimit
from conversations.models import Message, WebhookEvent
from conversations.whatsapp import client
from helpdesk.celery import app as celery_app
from sandbox.testing import running_sandbox, wait_until, webhook_receiver
from tests.factories import ConversationFactory, CustomerFactory, WhatsAppNumberFactory

# Statuses arrive quickly; their order is what the tests look at.
FAST_STATUSES = {"sent": 0.0, "delivered": 0.02, "read": 0.04}
CUSTOMER = "4917012345678"


@pytest.fixture
def clean_redis():
    """Forget limiter logs and doorbells other tests left behind."""
    connection = ratelimit.connection()
    for key in connection.scan_iter("outbound:*"):
        connection.delete(key)
    yield connection


@pytest.fixture
def receiver():
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def graph_sandbox(settings, receiver, clean_redis):
    """A Cloud API sandbox the helpdesk's client talks to."""
    with running_sandbox(webhook_url=receiver.url, status_delays=FAST_STATUSES) as sb:
        settings.WHATSAPP_GRAPH_API_URL = sb.base_url
        settings.WHATSAPP_GRAPH_API_VERSION = "v24.0"
        settings.WHATSAPP_GRAPH_API_TIMEOUT = 2.0
        settings.WHATSAPP_GRAPH_API_CONNECT_TIMEOUT = 2.0
        settings.WHATSAPP_DELIVERY_BACKOFF_BASE = 0.2
        settings.WHATSAPP_DELIVERY_RUN_SECONDS = 10.0
        client.reset_session()
        yield sb
        client.reset_session()


@pytest.fixture
def sandbox_number(db, graph_sandbox, team):
    """The helpdesk's WhatsAppNumber for the sandbox's demo number."""
    demo = graph_sandbox.number
    number = WhatsAppNumberFactory(
        phone_number_id=demo.phone_number_id,
        display_phone_number=demo.display_phone_number,
        waba_id=demo.waba_id,
        access_token=demo.access_token,
        throughput=demo.throughput,
    )
    number.teams.add(team)
    return number


def open_conversation(sandbox, number, wa_id=CUSTOMER, **fields):
    """A conversation whose customer wrote just now (on both sides)."""
    sandbox.control.open_window(wa_id)
    customer = CustomerFactory(wa_id=wa_id, phone=f"+{wa_id}")
    return ConversationFactory(
        customer=customer, number=number, last_inbound_at=timezone.now(), **fields
    )


@pytest.fixture
def conversation(sandbox_number, graph_sandbox):
    return open_conversation(graph_sandbox, sandbox_number)


@pytest.fixture
def delivery_worker(transactional_db, graph_sandbox):
    """A real Celery worker (threads) on a queue of this test's own."""
    queue = f"test-outbound-{uuid.uuid4().hex[:8]}"
    previous = celery_app.conf.task_default_queue
    previous_routes = celery_app.conf.task_routes
    celery_app.conf.task_default_queue = queue
    # Every task to this queue, the delivery queue's too.
    use_routes(celery_app, {})
    try:
        with start_worker(
            celery_app,
            pool="threads",
            concurrency=4,
            perform_ping_check=False,
            queues=[queue],
            loglevel="WARNING",
        ) as worker:
            yield worker
    finally:
        celery_app.conf.task_default_queue = previous
        use_routes(celery_app, previous_routes)


def use_routes(app, routes) -> None:
    """Route tasks by `routes` from now on (Celery caches the router)."""
    app.conf.task_routes = routes
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)


def sends(sandbox) -> list[dict]:
    """The message sends the sandbox recorded, oldest first."""
    return [
        record
        for record in sandbox.control._call(
            "GET", "requests", params={"path": "/messages", "limit": 100000}
        )["requests"]
        if record["method"] == "POST" and "status" not in (record["body"] or {})
    ]


def sends_for(sandbox, message: Message) -> list[dict]:
    return [
        record
        for record in sends(sandbox)
        if (record["body"] or {}).get("biz_opaque_callback_data") == str(message.pk)
    ]


def wait_for_status(message: Message, *statuses: str, timeout: float = 15.0):
    def reached():
        message.refresh_from_db()
        return message.status in statuses

    wait_until(reached, timeout=timeout, interval=0.05)
    return message


def feed_webhooks(receiver, start: int = 0) -> int:
    """Process what the sandbox posted (from index start) as the helpdesk would."""
    received = list(receiver.received)
    for item in received[start:]:
        event = WebhookEvent.objects.create(body=item.body, received_at=timezone.now())
        services.process_webhook_event(event_id=event.pk)
    return len(received)
