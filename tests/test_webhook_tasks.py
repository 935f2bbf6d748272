"""The tasks around webhook events: retry policy and the sweeper."""

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from conversations import services, tasks
from conversations.models import Message, WebhookEvent
from conversations.services import inbound
from tests.fixtures.inbound import store_event


@pytest.fixture
def queued(monkeypatch):
    """Event ids the code queued for processing (the broker is not needed)."""
    ids = []
    monkeypatch.setattr(tasks.process_webhook_events, "delay", ids.extend)
    return ids


def aged(event: WebhookEvent, seconds: float = 60, **fields) -> WebhookEvent:
    WebhookEvent.objects.filter(pk=event.pk).update(
        received_at=timezone.now() - timedelta(seconds=seconds), **fields
    )
    return event


def test_the_task_processes_the_event(meta_number):
    event = store_event("text")

    tasks.process_webhook_event.run(event.pk)

    event.refresh_from_db()
    assert event.state == WebhookEvent.State.PROCESSED
    assert Message.objects.count() == 1


def test_the_task_uses_the_published_name():
    assert (
        tasks.process_webhook_event.name == "conversations.tasks.process_webhook_event"
    )
    assert tasks.process_webhook_event.acks_late is True


def test_transient_database_errors_are_retried_with_backoff(meta_number, monkeypatch):
    event = store_event("text")

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "process_webhook_event", locked)
    retries = []

    def fake_retry(*, exc, countdown):
        retries.append(countdown)
        return RuntimeError("retrying")

    monkeypatch.setattr(tasks.process_webhook_event, "retry", fake_retry)

    with pytest.raises(RuntimeError, match="retrying"):
        tasks.process_webhook_event.run(event.pk)
    assert retries == [2]


def test_other_errors_are_left_to_the_sweeper(meta_number, monkeypatch):
    def broken(**kwargs):
        raise ValueError("bad data")

    monkeypatch.setattr(inbound, "receive_message", broken)
    event = store_event("text")

    tasks.process_webhook_event.run(event.pk)  # does not raise

    event.refresh_from_db()
    assert event.state == WebhookEvent.State.FAILED
    assert event.attempts == 1


def test_a_batch_task_processes_each_event_and_skips_failures(meta_number, monkeypatch):
    """A bug the set trips over rolls the set back; one by one, only the
    event that holds it fails."""
    first, second = store_event("text"), store_event("image")
    original = inbound.receive_message

    def broken_set(**kwargs):
        raise ValueError("bad data")

    def broken_for_images(**kwargs):
        if kwargs["message"].type == "image":
            raise ValueError("bad data")
        return original(**kwargs)

    monkeypatch.setattr(inbound, "receive_messages", broken_set)
    monkeypatch.setattr(inbound, "receive_message", broken_for_images)

    tasks.process_webhook_events.run([first.pk, 999999, second.pk])

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == WebhookEvent.State.PROCESSED
    assert second.state == WebhookEvent.State.FAILED
    assert tasks.process_webhook_events.acks_late is True


def test_a_transient_error_retries_the_drain(meta_number, monkeypatch):
    event = store_event("text")

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "drain_webhook_events", locked)
    retries = []

    def fake_retry(*, exc, countdown):
        retries.append(countdown)
        return RuntimeError("retrying")

    monkeypatch.setattr(tasks.process_webhook_events, "retry", fake_retry)

    with pytest.raises(RuntimeError, match="retrying"):
        tasks.process_webhook_events.run([event.pk])
    assert retries == [2]
    event.refresh_from_db()
    assert event.state == WebhookEvent.State.PENDING


@pytest.mark.parametrize("left", [True, False])
def test_a_drain_out_of_time_queues_another(db, monkeypatch, left):
    queued = []
    monkeypatch.setattr(services, "drain_webhook_events", lambda **kwargs: left)
    monkeypatch.setattr(tasks.process_webhook_events, "delay", queued.append)

    tasks.process_webhook_events.run([])

    assert queued == ([[]] if left else [])


def test_the_sweeper_queues_batches(meta_number, monkeypatch):
    batches = []
    monkeypatch.setattr(tasks.process_webhook_events, "delay", batches.append)
    events = [aged(store_event("text")) for _ in range(tasks.WEBHOOK_TASK_BATCH + 1)]

    assert tasks.sweep_webhook_events() == len(events)

    assert [len(batch) for batch in batches] == [tasks.WEBHOOK_TASK_BATCH, 1]
    assert sorted(sum(batches, [])) == sorted(event.pk for event in events)


def test_a_missing_event_is_ignored(db):
    tasks.process_webhook_event.run(999999)


def test_the_sweeper_queues_pending_events_stored_while_redis_was_down(
    meta_number, queued
):
    old = aged(store_event("text"))
    store_event("text")  # just arrived: the endpoint's own publish covers it
    done = aged(store_event("text"), state=WebhookEvent.State.PROCESSED)

    assert tasks.sweep_webhook_events() == 1

    assert queued == [old.pk]
    assert done.pk not in queued
    # Not queued again while the queue works through it.
    assert tasks.sweep_webhook_events() == 0
    # And a real run then processes it.
    tasks.process_webhook_event.run(old.pk)
    old.refresh_from_db()
    assert old.state == WebhookEvent.State.PROCESSED


def test_the_sweeper_backs_off_failed_events_and_gives_up(meta_number, queued):
    waiting = aged(
        store_event("text"),
        state=WebhookEvent.State.FAILED,
        attempts=2,
        next_attempt_at=timezone.now() + timedelta(minutes=1),
    )
    due = aged(
        store_event("text"),
        state=WebhookEvent.State.FAILED,
        attempts=2,
        next_attempt_at=timezone.now() - timedelta(seconds=1),
    )
    exhausted = aged(
        store_event("text"),
        state=WebhookEvent.State.FAILED,
        attempts=services.WEBHOOK_MAX_ATTEMPTS,
    )

    tasks.sweep_webhook_events()

    assert queued == [due.pk]
    assert waiting.pk not in queued
    assert exhausted.pk not in queued


def test_backoff_grows_with_attempts():
    delays = [services.webhook_retry_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays)
    assert delays[0] == timedelta(seconds=30)
    assert delays[-1] == timedelta(hours=1)


def test_the_sweeper_is_scheduled_every_30_seconds(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-webhook-events"]
    assert entry["task"] == "conversations.tasks.sweep_webhook_events"
    assert entry["schedule"] <= 30
