"""Announcing a live event hands it to the process' announcer loop: the caller
never waits for Redis, a frozen Redis never blocks it nor grows memory, and
announcements flow again once Redis answers."""

import asyncio
import multiprocessing
import signal
import threading

import pytest
from channels.layers import channel_layers

from conversations import realtime
from conversations.models import LiveEvent
from sandbox.testing import wait_until
from tests.fixtures.webhook_server import RedisServer

pytestmark = pytest.mark.e2e


def layer_settings(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": url, "socket_timeout": None}],
                "capacity": 100_000,
                "expiry": 60,
            },
        }
    }


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def event(pk: int, number_id: int = 7) -> LiveEvent:
    # Announcing reads only these fields; no row is needed.
    return LiveEvent(pk=pk, number_id=number_id, type=realtime.MESSAGE_CREATED)


class Listener:
    """A tab's side of the channel layer, on an event loop of its own."""

    def __init__(self, group: str):
        self.loop = asyncio.new_event_loop()
        # A layer of its own: closing it leaves the announcer's connections alone.
        self.layer = channel_layers.make_backend("default")
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add(group, self.channel))

    def received(self, timeout: float = 0.5):
        async def receive():
            try:
                return await asyncio.wait_for(self.layer.receive(self.channel), timeout)
            except TimeoutError:
                return None

        return self.loop.run_until_complete(receive())

    def close(self):
        self.loop.run_until_complete(self.layer.flush())
        self.loop.close()


@pytest.fixture
def listen(settings, redis_server):
    settings.CHANNEL_LAYERS = layer_settings(redis_server.url)
    listeners = []

    def listen(group):
        listeners.append(Listener(group))
        return listeners[-1]

    yield listen
    for listener in listeners:
        listener.close()


def test_an_announcement_reaches_the_inbox_group(listen):
    tab = listen(realtime.inbox_group(7))

    realtime.announce(event(41))

    message = wait_until(tab.received, timeout=10)
    assert message == {"type": realtime.CHANNEL_MESSAGE_TYPE, "ids": [41]}


def test_many_announcements_arrive_in_the_order_they_were_made(listen):
    tab = listen(realtime.inbox_group(7))

    realtime.announce_many([event(pk) for pk in range(1, 51)])
    for pk in range(51, 101):
        realtime.announce(event(pk))

    ids = []
    messages = []

    def received_all():
        message = tab.received()
        if message:
            messages.append(message)
            ids.extend(message["ids"])
        return len(ids) >= 100

    wait_until(received_all, timeout=20)
    assert ids == list(range(1, 101))
    # Events handed over together travel together: a group_send per group
    # and hand-over, not per event.
    assert len(messages) <= 51


def test_a_frozen_redis_never_blocks_the_caller_nor_grows_the_queue(
    settings, redis_server, monkeypatch
):
    settings.CHANNEL_LAYERS = layer_settings(redis_server.url)
    monkeypatch.setattr(realtime, "ANNOUNCE_QUEUE_LIMIT", 50)
    monkeypatch.setattr(realtime, "ANNOUNCE_TIMEOUT", 1.0)
    assert realtime.flush_announcements(10)
    announcer = realtime.announcer()
    dropped_before = announcer.dropped
    redis_server.freeze()  # connections open, no answers
    finished = threading.Event()

    def announce_a_burst():
        for pk in range(1000):
            realtime.announce(event(pk))
        realtime.announce_many([event(pk) for pk in range(1000, 1100)])
        realtime.send_presence(3, {"action": "viewing"})
        finished.set()

    threading.Thread(target=announce_a_burst, daemon=True).start()

    # The caller returns although nothing can be sent...
    assert finished.wait(30), "announce() blocked on a frozen Redis"
    # ...and what waits for the loop stays within the bound; the rest is
    # dropped (tabs catch up from the LiveEvent table).
    assert announcer.pending <= 50
    assert announcer.dropped - dropped_before >= 1100 - 50


def test_announcements_flow_again_once_redis_answers(listen, redis_server):
    tab = listen(realtime.inbox_group(8))
    redis_server.freeze()
    realtime.announce(event(1, number_id=8))
    redis_server.process.send_signal(signal.SIGCONT)

    def announced_and_received():
        realtime.announce(event(2, number_id=8))
        message = tab.received()
        while message is not None and 2 not in message["ids"]:
            message = tab.received()
        return message

    assert 2 in wait_until(announced_and_received, timeout=30)["ids"]


def _announcer_in_child(queue) -> None:
    announcer = realtime.announcer()
    queue.put((announcer.pid, announcer.thread.is_alive()))


def test_a_forked_child_starts_its_own_announcer():
    parent = realtime.announcer()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_announcer_in_child, args=(results,))
    child.start()
    pid, alive = results.get(timeout=30)
    child.join(30)

    assert pid == child.pid != parent.pid
    assert alive
    assert realtime.announcer() is parent
