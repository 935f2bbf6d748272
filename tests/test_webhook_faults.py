"""The webhook endpoint while Redis fails: Meta still gets its 200 at once,
and every stored event is processed exactly once after Redis returns."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conversations.models import Message, WebhookEvent
from conversations.whatsapp.webhooks import celery_message
from sandbox.testing import wait_until
from tests.factories import MetaAppFactory, WhatsAppNumberFactory
from tests.fixtures.webhook_server import (
    RedisServer,
    celery_worker,
    serving,
    signed_headers,
    text_message_body,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SWEEP_TASK = "conversations.tasks.sweep_webhook_events"
PER_PHASE = 20


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def post_burst(url: str, bodies: list[bytes], secret: str) -> list[tuple[int, float]]:
    """POST every body, ten at a time; (status, seconds) for each."""

    def post(body):
        with requests.Session() as session:
            started = time.monotonic()
            try:
                response = session.post(
                    url, data=body, headers=signed_headers(body, secret), timeout=10
                )
                status = response.status_code
            except requests.RequestException as error:
                status = type(error).__name__
            return status, time.monotonic() - started

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(post, bodies))


def test_redis_frozen_then_killed_mid_burst_every_webhook_answered_and_processed_once(
    redis_server, tmp_path
):
    number = WhatsAppNumberFactory(app=MetaAppFactory(app_secret="fault-secret"))
    bodies = [
        text_message_body(
            f"wamid.fault{index:03d}",
            f"4917{index:08d}",
            number.phone_number_id,
            number.waba_id,
        )
        for index in range(3 * PER_PHASE)
    ]
    phases = [bodies[i : i + PER_PHASE] for i in range(0, len(bodies), PER_PHASE)]

    with (
        serving(redis_url=redis_server.url) as (server, endpoint),
        celery_worker(redis_server.url, tmp_path / "worker.log"),
    ):
        results = post_burst(server.url, phases[0], "fault-secret")
        redis_server.freeze()  # a hung Redis: connections open, no answers
        results += post_burst(server.url, phases[1], "fault-secret")
        redis_server.kill()  # and then gone, with every queued message
        results += post_burst(server.url, phases[2], "fault-secret")

        assert [status for status, _ in results] == [200] * len(bodies)
        slowest = max(seconds for _, seconds in results)
        assert slowest < 1.0, f"slowest answer took {slowest:.2f} s"
        assert WebhookEvent.objects.count() == len(bodies)
        # The doorbell failed for at least the events after the freeze.
        wait_until(lambda: endpoint.doorbell.dropped >= PER_PHASE, timeout=10)

        # Redis returns, empty. The sweeper (run as beat would run it) queues
        # what is stored and not processed; the worker processes it.
        revived = RedisServer(port=redis_server.port).start()
        try:
            client = revived.client()

            def all_processed():
                client.lpush("default", celery_message(SWEEP_TASK, [], "default"))
                return not WebhookEvent.objects.exclude(
                    state=WebhookEvent.State.PROCESSED
                ).exists()

            # The sweeper leaves events younger than a few seconds to the
            # endpoint's own publish, so this polls for a while.
            wait_until(all_processed, timeout=90, interval=1.0)
        finally:
            revived.stop()

    worker_log = (tmp_path / "worker.log").read_text()
    events = list(WebhookEvent.objects.all())
    assert len(events) == len(bodies)
    assert all(event.attempts == 0 and not event.last_error for event in events), (
        worker_log
    )
    wamids = sorted(Message.objects.values_list("wamid", flat=True))
    assert wamids == [f"wamid.fault{index:03d}" for index in range(len(bodies))]
