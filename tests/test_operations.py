"""/healthz, /readyz and /metrics: what probes and Prometheus are answered."""

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
import redis.asyncio
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from conversations import metrics
from conversations.delivery.threads import Job, Outcome
from conversations.models import WebhookEvent

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_is_liveness_only(client):
    response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok")


def test_readyz_answers_200_with_the_database_and_redis_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content


# Committed: the probe reads in a thread of its own, on its own connection.
@pytest.mark.django_db(transaction=True)
@override_settings(READY_MAX_EVENT_LAG_SECONDS=60)
def test_readyz_answers_503_while_a_stored_event_waits_too_long(client):
    event = WebhookEvent.objects.create(
        body=b"{}", received_at=timezone.now() - timedelta(seconds=90)
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert b"the oldest pending is 90 s old" in response.content
    event.state = WebhookEvent.State.PROCESSED
    event.save()
    assert client.get("/readyz").status_code == 200


@override_settings(REDIS_URL="redis://127.0.0.1:9/0")
def test_readyz_answers_503_without_redis(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert b"redis: ConnectionError" in response.content


@override_settings(METRICS_TOKEN="s3cret-scrape-token")
def test_metrics_asks_for_the_bearer_token_when_one_is_set(client):
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")


def test_pending_events_and_the_oldest_age_come_from_the_table(client):
    before = scrape(client)
    WebhookEvent.objects.create(
        body=b"{}", received_at=timezone.now() - timedelta(seconds=30)
    )
    WebhookEvent.objects.create(
        body=b"{}", state=WebhookEvent.State.FAILED, received_at=timezone.now()
    )
    WebhookEvent.objects.create(
        body=b"{}", state=WebhookEvent.State.PROCESSED, received_at=timezone.now()
    )
    after = scrape(client)
    pending = "helpdesk_webhook_events_pending"
    assert value(after, pending, state="pending") == 1
    assert value(after, pending, state="failed") == 1
    assert 29 <= value(after, "helpdesk_webhook_events_oldest_pending_age_seconds")
    finished = "helpdesk_webhook_events_finished_total"
    assert (
        value(after, finished, state="processed")
        == value(before, finished, state="processed") + 1
    )


def job(message_id):
    return Job(
        message_id=message_id,
        conversation_id=1,
        recipient="491701",
        body={},
        attempts=1,
        claim="c",
        lease=timezone.now(),
    )


def test_send_outcomes_and_limiter_waits_are_counted_for_the_deployment(client):
    before = scrape(client)
    metrics.count_sends(
        [
            Outcome(job(1), "sent"),
            Outcome(job(2), "sent"),
            Outcome(job(3), "failed", code=131026),
            Outcome(job(4), "defer"),
        ]
    )
    metrics.count_limiter_wait("number")
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    sent = "helpdesk_messages_sent_total"
    assert grew(sent, outcome="sent", code="") == 2
    assert grew(sent, outcome="failed", code="131026") == 1
    waits = "helpdesk_limiter_waits_total"
    assert grew(waits, limiter="pair") == 1
    assert grew(waits, limiter="number") == 1


def test_webhook_request_counts_reach_redis_in_one_flush(client):
    before = scrape(client)
    counts = metrics.WebhookRequestCounts()
    for status in (200, 200, 403, 503):
        counts.add("POST", status)

    async def flush():
        connection = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            await counts.flush(connection)
        finally:
            await connection.aclose()

    asyncio.run(flush())
    assert not counts
    after = scrape(client)
    for status, grew in Counter({"200": 2, "403": 1, "503": 1}).items():
        name = "helpdesk_webhook_requests_total"
        assert (
            value(after, name, method="POST", status=status)
            - value(before, name, method="POST", status=status)
            == grew
        )


def test_every_documented_metric_is_exported(client):
    names = {name for name, _ in scrape(client)}
    documented = (settings.BASE_DIR / "docs" / "operations.md").read_text()
    for name in names:
        family = name.removesuffix("_total").removesuffix("_created")
        assert f"`{family}" in documented, f"{name} is not in docs/operations.md"
