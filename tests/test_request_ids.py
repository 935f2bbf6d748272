"""LOG_FORMAT=json: one object per line, with the id of the request a line is
about, from the proxy's X-Request-ID to the worker processing the event."""

import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse
from django.utils import timezone

from conversations import realtime, services
from conversations.models import LiveEvent, Message, WebhookEvent
from conversations.whatsapp.webhooks import lane_of
from helpdesk import celery as celery_signals
from helpdesk.logs import JsonFormatter, request_id
from tests.factories import ConversationFactory
from tests.fixtures.inbound import FIXTURE_PHONE_NUMBER_ID, FIXTURE_WABA_ID
from tests.fixtures.webhook_server import (
    post_in_process,
    signed_headers,
    text_message_body,
)
from tests.test_workspace_live import (
    at_work,
    close_consumer_connections,  # noqa: F401 (an autouse fixture)
    communicator,
    fresh_hello,
    receive_event,
    session_cookie,
)

pytestmark = pytest.mark.django_db


def test_a_request_keeps_the_proxys_id_and_answers_it(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="7f3a9c0de1")
    assert response["X-Request-ID"] == "7f3a9c0de1"


def test_an_implausible_id_is_replaced_never_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="<script>\n")
    assert response["X-Request-ID"] != "<script>\n"
    assert len(response["X-Request-ID"]) == 32


def test_a_json_line_carries_the_request_id_extras_and_the_exception():
    token = request_id.set("abc123")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.getLogger("helpdesk.test").makeRecord(
                "helpdesk.test",
                logging.ERROR,
                __file__,
                1,
                "Event %s failed",
                (42,),
                exc_info=__import__("sys").exc_info(),
                extra={"event_id": 42},
            )
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["message"] == "Event 42 failed"
    assert line["level"] == "ERROR"
    assert line["request_id"] == "abc123"
    assert line["event_id"] == 42
    assert "ValueError: boom" in line["exception"]


class ProcessEventsTask:
    name = celery_signals.PROCESS_EVENTS_TASK


def test_a_worker_logs_the_request_ids_its_events_arrived_with(settings):
    settings.LOGGING = {"handlers": {"console": {"formatter": "json"}}}
    ids = [
        WebhookEvent.objects.create(
            body=b"{}", headers={"x-request-id": rid}, received_at=timezone.now()
        ).pk
        for rid in ("req-b", "req-a")
    ]
    celery_signals._bind_request_ids(task=ProcessEventsTask(), args=(ids,))
    assert request_id.get() == "req-a,req-b"
    request_id.set("")


# --- One id from the webhook to the agent's socket ---------------------------------


def json_lines(caplog) -> list[dict]:
    return [json.loads(line) for line in caplog.text.splitlines() if line]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("sets", [True, False], ids=["set", "one-by-one"])
async def test_one_request_id_follows_a_webhook_to_the_agents_socket(
    meta_number, agent, caplog, settings, sets
):
    """The endpoint stores the id, the worker logs it and keeps it on the
    live events of the change, and the socket's hub logs it when it hands
    them to the agent's tab: one grep finds all three lines."""
    settings.WEBHOOK_SETS = sets
    caplog.handler.setFormatter(JsonFormatter())
    caplog.set_level(logging.DEBUG)
    await sync_to_async(at_work)(agent)
    ws = communicator(await sync_to_async(session_cookie)(agent))
    connected, _ = await ws.connect()
    assert connected
    await fresh_hello(ws)
    body = text_message_body(
        "wamid.traced1", "4917000000001", FIXTURE_PHONE_NUMBER_ID, FIXTURE_WABA_ID
    )
    secret = await sync_to_async(lambda: meta_number.app.app_secret)()
    headers = {**signed_headers(body, secret), "X-Request-ID": "trace-7f3a9c"}
    answers, queued = await sync_to_async(post_in_process)([(body, headers)])
    assert answers == [200]
    await sync_to_async(services.drain_webhook_events)(event_ids=queued)
    await sync_to_async(realtime.flush_announcements)()
    traced = await sync_to_async(
        lambda: dict(
            LiveEvent.objects.filter(data__request_id="trace-7f3a9c").values_list(
                "pk", "type"
            )
        )
    )()
    assert sorted(traced.values()) == ["conversation.created", "message.created"]
    arrived = set()
    while arrived != set(traced):
        arrived.add((await receive_event(ws))["id"])
    await ws.disconnect()
    lines = [
        line
        for line in json_lines(caplog)
        if "trace-7f3a9c" in line.get("request_id", "").split(",")
    ]
    loggers = [line["logger"] for line in lines]
    assert "conversations.whatsapp.webhooks" in loggers
    assert "conversations.services.webhook_events" in loggers
    handed = {
        line["live_event"]
        for line in lines
        if line["logger"] == "conversations.live.hub"
    }
    assert handed == set(traced)


def test_an_agents_request_id_stays_with_the_live_events_it_made(
    agent_client, agent, number
):
    conversation = ConversationFactory(number=number)
    response = agent_client.post(
        reverse("conversations:note", args=[conversation.pk]),
        {"body": "Internal only"},
        HTTP_HX_REQUEST="true",
        HTTP_X_REQUEST_ID="agent-req-42",
    )
    assert response.status_code == 201
    event = LiveEvent.objects.get(conversation=conversation, type="note.created")
    assert event.data["request_id"] == "agent-req-42"


def test_a_set_keeps_each_events_own_id_on_its_live_events(meta_number):
    """Two webhooks applied in one set: each message's live event keeps the
    id its own webhook arrived with, not the set's."""
    for wamid, wa_id, rid in (
        ("wamid.set-a", "4917000000011", "req-a"),
        ("wamid.set-b", "4917000000012", "req-b"),
    ):
        body = text_message_body(wamid, wa_id, FIXTURE_PHONE_NUMBER_ID, FIXTURE_WABA_ID)
        WebhookEvent.objects.create(
            body=body,
            app=meta_number.app,
            headers={"x-request-id": rid},
            received_at=timezone.now(),
            lane=lane_of(body),
        )
    assert len(services.process_webhook_batch()) == 2
    wamid_of = dict(Message.objects.values_list("pk", "wamid"))
    kept = {
        wamid_of[event.data["message"]]: event.data["request_id"]
        for event in LiveEvent.objects.filter(type="message.created")
    }
    assert kept == {"wamid.set-a": "req-a", "wamid.set-b": "req-b"}
