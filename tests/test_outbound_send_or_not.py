"""The send-or-not record: which claimed sends started their request, so that
the sweeper sends again only what never left (delivery/attempts.py).

In this process, on the real database and Redis; the worker killed for real
is in test_outbound_delivery.py."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.delivery import attempts, engine, ratelimit, threads
from conversations.models import Message
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(clean_redis):
    """Three replies queued to one customer of one number."""
    conversation = ConversationFactory()
    return [
        MessageFactory(
            conversation=conversation,
            direction=Message.Direction.OUTBOUND,
            status=Message.Status.QUEUED,
            wamid=None,
        )
        for _ in range(3)
    ]


def number_of(messages):
    return messages[0].conversation.number


def grant(number, job) -> float:
    """The number slot a thread takes just before its request (marks it)."""
    return ratelimit.acquire_number(
        number.phone_number_id,
        number.throughput,
        mark=attempts.start_mark(number.pk, job.message_id, job.claim),
    )


def claim_and_mark(number, limit=10):
    jobs = engine.claim(number, limit)
    attempts.mark_claimed(number.pk, [(j.message_id, j.claim) for j in jobs])
    return jobs


def after_the_lease():
    return timezone.now() + timedelta(hours=1)


def states(messages) -> list[tuple[str, int]]:
    rows = Message.objects.filter(pk__in=[m.pk for m in messages]).order_by("pk")
    return list(rows.values_list("status", "attempts"))


def test_only_a_send_whose_request_started_is_unknown_after_its_lease(queued):
    number = number_of(queued)
    first, *waiting = claim_and_mark(number)
    assert grant(number, first) == 0

    result = engine.sweep(now=after_the_lease())

    assert result["expired"] == 3
    assert result["requeued"] == 2
    # The two that never started are due again at once, their try not counted.
    assert states(queued) == [("unknown", 1), ("queued", 0), ("queued", 0)]
    assert not Message.objects.filter(
        pk__in=[j.message_id for j in waiting], next_attempt_at__isnull=False
    ).exists()
    assert Message.objects.get(pk=first.message_id).error["title"] == (
        "Delivery interrupted"
    )


def test_a_thread_cannot_start_a_send_the_sweeper_took_back(queued, clean_redis):
    number = number_of(queued)
    jobs = claim_and_mark(number)
    engine.sweep(now=after_the_lease())
    log = ratelimit.NUMBER_KEY.format(number.phone_number_id)
    granted_before = clean_redis.llen(log)

    with pytest.raises(ratelimit.MarkChanged):
        grant(number, jobs[0])
    # Refused before any slot was taken.
    assert clean_redis.llen(log) == granted_before


def test_a_send_claimed_again_is_not_started_by_the_claim_it_was_taken_from(
    queued,
):
    number = number_of(queued)
    old = claim_and_mark(number)
    engine.sweep(now=after_the_lease())
    new = claim_and_mark(number)

    with pytest.raises(ratelimit.MarkChanged):
        grant(number, old[0])
    assert grant(number, new[0]) == 0


def test_a_stale_outcome_does_not_move_a_send_claimed_again(queued):
    number = number_of(queued)
    old = claim_and_mark(number)
    engine.sweep(now=after_the_lease())
    claim_and_mark(number)

    # The first run, still alive, writes back what its threads said.
    engine.record(
        number,
        [
            threads.Outcome(old[0], threads.WITHDRAWN),
            threads.Outcome(old[1], threads.DEFER, delay=5.0),
        ],
    )

    assert states(queued) == [("sending", 1)] * 3


def test_without_a_record_an_expired_send_counts_as_started(queued):
    number = number_of(queued)
    # The worker died between the claim's commit and the record's write.
    engine.claim(number, 10)

    result = engine.sweep(now=after_the_lease())

    assert result["requeued"] == 0
    assert states(queued) == [("unknown", 1)] * 3


def test_expired_sends_wait_while_the_record_cannot_be_read(queued, settings):
    number = number_of(queued)
    claim_and_mark(number)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens

    assert engine.sweep(now=after_the_lease())["expired"] == 0
    assert states(queued) == [("sending", 1)] * 3


def test_written_back_sends_leave_the_record_but_not_another_claims_fields(
    queued, clean_redis
):
    number = number_of(queued)
    first, second, third = claim_and_mark(number)
    key = attempts.KEY.format(number.pk)
    # Another claim wrote the third's field since (its lease ran out).
    clean_redis.hset(key, str(third.message_id), "another:claimed")

    engine.record(
        number,
        [
            threads.Outcome(first, threads.DEFER, delay=1.0),
            threads.Outcome(second, threads.DEFER, delay=1.0),
            threads.Outcome(third, threads.WITHDRAWN),
        ],
    )

    assert clean_redis.hgetall(key) == {
        str(third.message_id).encode(): b"another:claimed"
    }
