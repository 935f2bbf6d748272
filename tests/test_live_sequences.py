"""Live events are numbered after their transaction commits, never inside it.

An inbox's counter row used to be locked from a transaction's first event to
its commit, so a transaction that published and then locked another row
could deadlock with one that held that row and then published. These tests
run such pairs on PostgreSQL's real locks.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from conversations import realtime, tasks
from conversations.models import Conversation, LiveEvent, LiveStream
from tests.factories import ConversationFactory, WhatsAppNumberFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def in_thread(target, *args):
    """Run target in a thread with its own database connection; its result
    or exception is kept."""
    outcome = {}

    def run():
        try:
            outcome["result"] = target(*args)
        except Exception as error:  # reported by the test
            outcome["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_publishing_then_locking_never_deadlocks_with_locking_then_publishing():
    conversation = ConversationFactory()
    other = ConversationFactory(number=conversation.number)
    published = threading.Event()
    locked = threading.Event()

    def publish_then_lock():
        with transaction.atomic():
            realtime.publish(realtime.CONVERSATION_UPDATED, conversation=conversation)
            published.set()
            assert locked.wait(10)
            # Waits for the other transaction, which holds this row.
            Conversation.objects.select_for_update().get(pk=other.pk)

    def lock_then_publish():
        with transaction.atomic():
            Conversation.objects.select_for_update().get(pk=other.pk)
            locked.set()
            assert published.wait(10)
            with realtime.batched():
                realtime.publish(realtime.CONVERSATION_UPDATED, conversation=other)
                realtime.publish(realtime.CONVERSATION_UPDATED, conversation=other)

    first, first_outcome = in_thread(publish_then_lock)
    second, second_outcome = in_thread(lock_then_publish)
    first.join(30)
    second.join(30)

    assert "error" not in first_outcome, first_outcome
    assert "error" not in second_outcome, second_outcome
    sequences = sorted(
        LiveEvent.objects.filter(number=conversation.number).values_list(
            "sequence", flat=True
        )
    )
    assert sequences == [1, 2, 3]
    assert LiveStream.objects.get(number=conversation.number).last_sequence == 3


def test_an_event_is_numbered_only_once_its_transaction_commits():
    conversation = ConversationFactory()
    with transaction.atomic():
        event = realtime.publish(
            realtime.CONVERSATION_UPDATED, conversation=conversation
        )
        event.refresh_from_db()
        assert event.sequence is None
    event.refresh_from_db()
    assert event.sequence == 1


def test_concurrent_writers_give_one_inbox_numbers_without_gaps_or_repeats():
    number = WhatsAppNumberFactory()
    conversations = [ConversationFactory(number=number) for _ in range(4)]
    start = threading.Barrier(4)

    def write(conversation):
        start.wait(10)
        for _ in range(25):
            with transaction.atomic():
                realtime.publish(
                    realtime.CONVERSATION_UPDATED, conversation=conversation
                )

    threads = [in_thread(write, conversation) for conversation in conversations]
    for thread, _ in threads:
        thread.join(30)
    assert all("error" not in outcome for _, outcome in threads)

    numbered = list(
        LiveEvent.objects.filter(number=number)
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )
    assert numbered == list(range(1, 101))
    # Each writer's own events keep their order within the stream.
    for conversation in conversations:
        own = list(
            LiveEvent.objects.filter(conversation=conversation)
            .order_by("pk")
            .values_list("sequence", flat=True)
        )
        assert own == sorted(own)


def test_events_a_dead_process_never_numbered_are_numbered_and_announced_by_the_sweep(
    monkeypatch, settings
):
    conversation = ConversationFactory()
    realtime.publish(realtime.CONVERSATION_UPDATED, conversation=conversation)
    # Written and committed, then the process died before numbering them.
    monkeypatch.setattr(realtime, "_settle_this_thread", lambda: None)
    with transaction.atomic():
        with realtime.batched():
            lost = [
                realtime.publish(
                    realtime.CONVERSATION_UPDATED, conversation=conversation
                )
                for _ in range(3)
            ]
    announced = []
    monkeypatch.setattr(realtime, "announce_ids", announced.extend)
    settings.LIVE_SETTLE_GRACE_SECONDS = 5

    # Too recent: their own process may still be about to number them.
    assert tasks.settle_live_events() == 0
    LiveEvent.objects.filter(pk__in=[event.pk for event in lost]).update(
        created_at=timezone.now() - timedelta(seconds=6)
    )
    assert tasks.settle_live_events() == 3

    number = conversation.number_id
    assert announced == [(number, event.pk) for event in lost]
    assert list(
        LiveEvent.objects.filter(pk__in=[event.pk for event in lost])
        .order_by("pk")
        .values_list("sequence", flat=True)
    ) == [2, 3, 4]
    assert tasks.settle_live_events() == 0


def test_a_backlog_larger_than_one_round_is_numbered_in_full(monkeypatch):
    conversation = ConversationFactory()
    monkeypatch.setattr(realtime, "SETTLE_BATCH", 7)
    with realtime.batched():
        for _ in range(20):
            realtime.publish(realtime.CONVERSATION_UPDATED, conversation=conversation)
    assert list(
        LiveEvent.objects.order_by("pk").values_list("sequence", flat=True)
    ) == list(range(1, 21))


def test_numbering_an_inbox_takes_a_constant_number_of_statements(
    django_assert_max_num_queries,
):
    conversation = ConversationFactory()
    for count in (1, 200):
        with django_assert_max_num_queries(9):
            with transaction.atomic(), realtime.batched():
                for _ in range(count):
                    realtime.publish(
                        realtime.CONVERSATION_UPDATED, conversation=conversation
                    )


def test_replies_committing_together_in_one_process_share_the_numbering(
    monkeypatch,
):
    number = WhatsAppNumberFactory()
    conversations = [ConversationFactory(number=number) for _ in range(8)]
    announced = []
    monkeypatch.setattr(realtime, "announce_ids", announced.extend)
    start = threading.Barrier(8)

    def reply(conversation):
        start.wait(10)
        for _ in range(10):
            with transaction.atomic():
                realtime.publish(
                    realtime.CONVERSATION_UPDATED, conversation=conversation
                )

    threads = [in_thread(reply, conversation) for conversation in conversations]
    for thread, _ in threads:
        thread.join(30)
    assert all("error" not in outcome for _, outcome in threads)

    events = list(
        LiveEvent.objects.filter(number=number)
        .order_by("sequence")
        .values_list("pk", "sequence")
    )
    assert [sequence for _, sequence in events] == list(range(1, 81))
    # Each event announced exactly once, whichever thread numbered it.
    assert sorted(announced, key=lambda pair: dict(events)[pair[1]]) == [
        (number.pk, pk) for pk, _ in events
    ]
    assert len(announced) == 80
    assert realtime._numbering == {}
