"""LOG_FORMAT=json: one object per line, with the id of the request a line is
about, from the proxy's X-Request-ID to the worker processing the event."""

import json
import logging

import pytest
from django.utils import timezone

from conversations.models import WebhookEvent
from helpdesk import celery as celery_signals
from helpdesk.logs import JsonFormatter, request_id

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
