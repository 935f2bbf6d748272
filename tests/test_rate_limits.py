"""Rate limits on what clients can ask for as fast as they like: the REST
API per token and per anonymous address, the live socket's hello (with its
search) and typing per socket."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connections
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from conversations import realtime
from conversations.live.consumers import TYPING_BURST
from tests.test_workspace_live import (
    communicator,
    customer_writes,
    hello,
    world,
)


class FrozenClock:
    """A clock that moves only when told: the tests' requests all happen
    within one instant, however slow the machine."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api_clock(monkeypatch):
    clock = FrozenClock()
    monkeypatch.setattr(SimpleRateThrottle, "timer", clock)
    return clock


@pytest.fixture
def forget_counts():
    """Start the named throttles' counts afresh, and delete them after the
    test: a count is kept in the shared cache, stamped with the real clock,
    so another test's requests as the same user (ids repeat between tests)
    within the last second would count against this one."""
    keys: list[str] = []

    def forget(*names: str) -> None:
        keys.extend(names)
        cache.delete_many(names)

    yield forget
    cache.delete_many(keys)


def rate(scope: str) -> tuple[int, float]:
    number, period = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].split("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
    return int(number), seconds


@pytest.mark.django_db
def test_a_token_is_held_to_its_rate_per_second(
    client, agent, api_clock, forget_counts
):
    forget_counts(f"throttle_user_{agent.pk}")
    key = Token.objects.create(user=agent).key
    allowed, period = rate("user")
    assert period == 1
    for _ in range(allowed):
        response = client.get(
            "/api/v1/conversations/", HTTP_AUTHORIZATION=f"Token {key}"
        )
        assert response.status_code == 200
    response = client.get("/api/v1/conversations/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert response["Retry-After"] == "1"
    api_clock.now += period
    response = client.get("/api/v1/conversations/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200


@pytest.mark.django_db
def test_anonymous_requests_are_held_to_a_rate_per_address(
    client, api_clock, forget_counts
):
    forget_counts("throttle_anon_203.0.113.9", "throttle_anon_203.0.113.10")
    allowed, period = rate("anon")
    for attempt in range(allowed):
        # A made-up forwarded address changes nothing: the ASGI server put
        # the client's address in REMOTE_ADDR.
        response = client.get(
            "/api/docs/",
            REMOTE_ADDR="203.0.113.9",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{attempt % 250}",
        )
        assert response.status_code == 200
    response = client.get(
        "/api/docs/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="198.51.100.251"
    )
    assert response.status_code == 429
    # Another address has its own allowance.
    assert client.get("/api/docs/", REMOTE_ADDR="203.0.113.10").status_code == 200
    api_clock.now += period
    assert client.get("/api/docs/", REMOTE_ADDR="203.0.113.9").status_code == 200


def test_rates_from_the_environment_are_checked_at_start(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from helpdesk.settings import env_rate

    monkeypatch.setenv("SOME_RATE", "50/s")
    assert env_rate("SOME_RATE", "1/minute") == "50/s"
    monkeypatch.delenv("SOME_RATE")
    assert env_rate("SOME_RATE", "1/minute") == "1/minute"
    for wrong in ("fifty/second", "50", "50/fortnight", "50/ second"):
        monkeypatch.setenv("SOME_RATE", wrong)
        with pytest.raises(ImproperlyConfigured, match="SOME_RATE"):
            env_rate("SOME_RATE", "1/minute")


# --- The live socket -----------------------------------------------------------


@pytest.fixture
def socket_clock(monkeypatch):
    clock = FrozenClock()
    monkeypatch.setattr("conversations.live.limits.monotonic", clock)
    return clock


@pytest.fixture
async def close_consumer_connections():
    yield
    await database_sync_to_async(connections.close_all)()


async def next_frame(ws) -> dict:
    return json.loads(await ws.receive_from(5))


async def until_synced(ws) -> None:
    """Read the catch-up's events up to its "synced"."""
    while (await next_frame(ws))["type"] != "synced":
        pass


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_socket_that_says_hello_too_often_is_told_to_wait(
    socket_clock, close_consumer_connections
):
    data = await sync_to_async(world)()
    ws = communicator(data["anna_cookie"])
    assert (await ws.connect())[0]
    for _ in range(settings.LIVE_HELLO_BURST):
        await hello(ws)
        assert (await next_frame(ws))["type"] == "synced"
    # The next search is refused, not run.
    await ws.send_to(
        text_data=json.dumps({"type": "hello", "after": 0, "filter": "q=anything"})
    )
    frame = await next_frame(ws)
    assert frame == {
        "type": "error",
        "code": "rate_limited",
        "retry_after": settings.LIVE_HELLO_INTERVAL_SECONDS,
    }
    # The socket stays open, and after the wait a hello is answered again.
    socket_clock.now += settings.LIVE_HELLO_INTERVAL_SECONDS
    await hello(ws)
    assert (await next_frame(ws))["type"] == "synced"
    await hello(ws)
    assert (await next_frame(ws))["type"] == "error"
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_typing_frames_reach_colleagues_a_few_at_once_then_every_few_seconds(
    socket_clock, close_consumer_connections, monkeypatch
):
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    relayed = []
    send_presence = realtime.send_presence

    def counting(conversation_id, message):
        if message["action"] == "typing":
            relayed.append(conversation_id)
        send_presence(conversation_id, message)

    monkeypatch.setattr(realtime, "send_presence", counting)
    ws = communicator(data["anna_cookie"])
    assert (await ws.connect())[0]
    await hello(ws, conversation=conversation.pk)
    await until_synced(ws)
    for _ in range(20):
        await ws.send_to(text_data=json.dumps({"type": "typing"}))
    # Frames are handled in order: once this hello is answered, so are they.
    await hello(ws, conversation=conversation.pk)
    await until_synced(ws)
    assert relayed == [conversation.pk] * TYPING_BURST
    socket_clock.now += settings.LIVE_TYPING_INTERVAL_SECONDS
    for _ in range(5):
        await ws.send_to(text_data=json.dumps({"type": "typing"}))
    await hello(ws, conversation=conversation.pk)
    await until_synced(ws)
    assert relayed == [conversation.pk] * (TYPING_BURST + 1)
    await ws.disconnect()


def test_a_token_bucket_spends_and_refills(monkeypatch):
    from conversations.live.limits import TokenBucket

    clock = FrozenClock(50.0)
    monkeypatch.setattr("conversations.live.limits.monotonic", clock)
    bucket = TokenBucket(capacity=3, interval=2.0)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == 2.0
    clock.now += 1.0
    assert bucket.take() is False
    assert bucket.wait() == 1.0
    clock.now += 1.0
    assert bucket.take() is True
    clock.now += 100.0
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
