"""A number's run places: held by a lease its run renews while it lives, so
a killed worker's place frees within the lease, never past the run it would
have made, and no more runs than allowed claim for a number at once."""

import time

import pytest

from conversations.delivery import doorbells, engine, ratelimit
from sandbox.testing import wait_until
from tests.factories import WhatsAppNumberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def number(settings):
    settings.WHATSAPP_DELIVERY_RUNS_PER_NUMBER = 2
    number = WhatsAppNumberFactory()
    redis = ratelimit.connection()
    redis.delete(engine.RUNS_KEY.format(number.pk))
    redis.delete(doorbells.DOORBELL_KEY.format(number.pk))
    yield number
    redis.delete(engine.RUNS_KEY.format(number.pk))
    redis.delete(doorbells.DOORBELL_KEY.format(number.pk))


def test_the_places_of_killed_runs_free_within_the_lease(number, monkeypatch):
    monkeypatch.setattr(engine, "RUN_LEASE_SECONDS", 1.0)
    # Two runs whose worker is killed mid-run: they never give their place
    # back, nor renew it.
    with monkeypatch.context() as killed:
        killed.setattr(engine, "_run", lambda *args, **kwargs: engine.RunStats())
        killed.setattr(engine, "_leave_run", lambda number_id, token: None)
        engine.run(number.pk, run_seconds=60)
        engine.run(number.pk, run_seconds=60)
    assert not engine._enter_run(number.pk, "next-run", engine.RUN_LEASE_SECONDS)
    started = time.monotonic()
    wait_until(
        lambda: engine._enter_run(number.pk, "next-run", engine.RUN_LEASE_SECONDS),
        timeout=5,
    )
    # Within the lease, not the 60 s the dead runs would have gone on for.
    assert time.monotonic() - started < 3


def test_a_live_run_keeps_its_place_and_one_that_lost_it_stops_claiming(number):
    lease = engine.RUN_LEASE_SECONDS
    assert engine._enter_run(number.pk, "first", lease)
    assert engine._enter_run(number.pk, "second", lease)
    assert not engine._enter_run(number.pk, "third", lease)
    # Renewing is not entering: a run holding a place keeps it at the cap.
    assert engine._enter_run(number.pk, "first", lease)

    def loop(place: str) -> engine._RunLoop:
        return engine._RunLoop(
            number=number,
            pool=None,
            deadline=time.monotonic() + 60,
            concurrency=1,
            batch=1,
            claim_step=1,
            helper_wanted=False,
            place=place,
        )

    alive, lost = loop("second"), loop("expired-meanwhile")
    engine._keep_place(alive)
    engine._keep_place(lost)
    assert alive.deadline > time.monotonic() + 50
    # Both places are taken by others: it claims no more, and ends once
    # what it has in flight is written back.
    assert lost.deadline <= time.monotonic()


def test_a_run_turned_away_lets_the_doorbell_ring_again(number):
    for token in ("first", "second"):
        assert engine._enter_run(number.pk, token, engine.RUN_LEASE_SECONDS)
    doorbells.ring_delivery(number.pk)
    engine.run(number.pk, run_seconds=1)
    # The sweeper's next ring queues a run: a place of a dead run frees
    # within its lease, and that run must not wait for the doorbell's expiry.
    assert not ratelimit.connection().exists(doorbells.DOORBELL_KEY.format(number.pk))
