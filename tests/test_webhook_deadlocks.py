"""A webhook event whose transaction PostgreSQL chose as a deadlock's victim
is processed again at once, whole: the other transaction has gone on."""

import pytest
from django.db import OperationalError, transaction

from conversations import services
from conversations.models import Message, WebhookEvent
from conversations.rules import deadlocks
from conversations.services import webhook_events
from tests.fixtures.inbound import store_event
from tests.test_inbound_query_counts import text_from


class DeadlockDetected(Exception):
    sqlstate = deadlocks.DEADLOCK_DETECTED


def victim_of(deadlocks: int):
    """_process_event, rolled back as a deadlock's victim `deadlocks` times
    after doing its work (as PostgreSQL aborts it at its last statement)."""
    real = webhook_events._process_event
    calls = []

    def process(event_id, **kwargs):
        calls.append(event_id)
        if len(calls) <= deadlocks:
            # The work done, then rolled back with the transaction.
            with transaction.atomic():
                real(event_id, **kwargs)
                raise OperationalError("deadlock detected") from DeadlockDetected()
        return real(event_id, **kwargs)

    return process, calls


def test_a_deadlock_victim_is_processed_again_once_and_whole(meta_number, monkeypatch):
    process, calls = victim_of(deadlocks=1)
    monkeypatch.setattr(webhook_events, "_process_event", process)
    event = store_event(text_from("4915550001111", "wamid.DEADLOCK1"))

    services.process_webhook_event(event_id=event.pk)

    assert len(calls) == 2
    event.refresh_from_db()
    assert event.state == WebhookEvent.State.PROCESSED
    assert Message.objects.filter(wamid="wamid.DEADLOCK1").count() == 1


def test_other_database_errors_are_not_retried(meta_number, monkeypatch):
    calls = []

    def process(event_id, **kwargs):
        calls.append(event_id)
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(webhook_events, "_process_event", process)
    event = store_event(text_from("4915550001112", "wamid.DEADLOCK2"))

    with pytest.raises(OperationalError):
        services.process_webhook_event(event_id=event.pk)
    assert len(calls) == 1
