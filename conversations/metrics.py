"""What an operator watches: counters kept in Redis, gauges read at scrape time.

Every process of a deployment (web hosts, worker hosts) counts into the same
Redis hashes, and every web process answers ``GET /metrics`` with the whole
deployment's figures: an operator scrapes any one web process (or the load
balancer) and needs no per-process registry. Gauges (events pending, the
oldest one's age, live sockets, queue depths, paused numbers) are read from
PostgreSQL and Redis when scraped, so they hold whatever the processing
engine does. docs/operations.md lists every name and its meaning.

Counting never fails its caller: a Redis that does not answer loses a few
counts (Prometheus sees the gap), never a request, a send or an event.
"""

import logging
import time
from collections import Counter
from collections.abc import Iterable

import redis
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .delivery import ratelimit
from .models import WebhookEvent, WhatsAppNumber

logger = logging.getLogger(__name__)

PREFIX = "helpdesk:metrics:"
WEBHOOK_REQUESTS = PREFIX + "webhook_requests"
SENDS = PREFIX + "sends"
LIMITER_WAITS = PREFIX + "limiter_waits"
# Processed events the retention purge deleted: the processed counter is
# the rows still there plus these, so purging never makes it go down.
PURGED_EVENTS = PREFIX + "purged_events"
# Hash fields joining two labels.
SEPARATOR = "|"
# Webhook event states that are finished: never processed again.
FINISHED_STATES = (
    WebhookEvent.State.PROCESSED,
    WebhookEvent.State.MALFORMED,
    WebhookEvent.State.UNROUTABLE,
)
UNFINISHED_STATES = (WebhookEvent.State.PENDING, WebhookEvent.State.FAILED)
# Keys of the channel layer (channels_redis' default prefix) looked at per
# scrape at most: a layer with more channels is reported as counted so far.
CHANNEL_LAYER_SCAN_LIMIT = 10_000
_last_warning = -float("inf")


def _redis() -> redis.Redis:
    # The limiters' client: one pool per process, short timeouts.
    return ratelimit.connection()


def _warn(error: Exception) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning > 60:
        _last_warning = now
        logger.warning("Metrics not counted (%s: %s)", type(error).__name__, error)


def count(key: str, fields: Counter) -> None:
    """Add `fields` (hash field -> amount) to the Redis hash `key`."""
    fields = {field: amount for field, amount in fields.items() if amount}
    if not fields:
        return
    try:
        pipeline = _redis().pipeline(transaction=False)
        for field, amount in fields.items():
            pipeline.hincrby(key, field, amount)
        pipeline.execute()
    except redis.RedisError as error:
        _warn(error)


def count_sends(outcomes: Iterable) -> None:
    """The outcomes of finished sends, by kind and Meta's error code."""
    sends: Counter = Counter()
    pair_waits = 0
    for outcome in outcomes:
        code = "" if outcome.code is None else str(outcome.code)
        sends[f"{outcome.kind}{SEPARATOR}{code}"] += 1
        pair_waits += outcome.kind == "defer"
    count(SENDS, sends)
    count(LIMITER_WAITS, Counter(pair=pair_waits))


def count_sent_by_status() -> None:
    """A send Meta accepted whose outcome its worker never wrote: a status
    webhook moved the message on from `sending` or `unknown`."""
    count(SENDS, Counter({f"sent{SEPARATOR}": 1}))


def count_interrupted_sends(count_: int) -> None:
    """Sends the sweeper made `unknown`: their worker died mid-request."""
    count(SENDS, Counter({f"unknown{SEPARATOR}": count_}))


def count_limiter_wait(limiter: str) -> None:
    count(LIMITER_WAITS, Counter({limiter: 1}))


def count_purged_events(purged: int) -> None:
    count(PURGED_EVENTS, Counter(processed=purged))


class WebhookRequestCounts:
    """The webhook endpoint's counts, kept in the process and added to Redis
    about once a second, so the hottest path costs no Redis call per request.
    A process killed loses at most its last second of counts."""

    FLUSH_SECONDS = 1.0

    def __init__(self):
        self._counts: Counter = Counter()

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, method: str, status: int) -> None:
        self._counts[f"{method}{SEPARATOR}{status}"] += 1

    async def flush(self, client) -> None:
        """Move the counts to Redis with `client` (redis.asyncio); on failure
        they stay here for the next flush."""
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        try:
            pipeline = client.pipeline(transaction=False)
            for field, amount in counts.items():
                pipeline.hincrby(WEBHOOK_REQUESTS, field, amount)
            await pipeline.execute()
        except Exception as error:  # noqa: BLE001 (any failure: keep them)
            self._counts.update(counts)
            _warn(error)


# --- The collector: read when /metrics is scraped ---------------------------------


def _labelled(raw: dict, names: tuple[str, ...]) -> Iterable[tuple[list[str], int]]:
    for field, value in raw.items():
        labels = field.decode().split(SEPARATOR)
        if len(labels) == len(names):
            yield labels, int(value)


class HelpdeskCollector:
    """Every figure of docs/operations.md, read from PostgreSQL and Redis."""

    def collect(self):
        yield from self._webhook_events()
        yield GaugeMetricFamily(
            "helpdesk_numbers_sending_paused",
            "Numbers whose sending is paused (an expired token, a restricted"
            " account) until an admin resumes them.",
            value=WhatsAppNumber.objects.filter(sending_paused=True).count(),
        )
        yield GaugeMetricFamily(
            "helpdesk_live_sockets",
            "Workspace sockets open now, over every web process.",
            value=_open_tabs(),
        )
        yield from self._redis_figures()

    def _webhook_events(self):
        by_state = dict(
            WebhookEvent.objects.values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        unfinished = WebhookEvent.objects.filter(state__in=UNFINISHED_STATES)
        oldest = unfinished.aggregate(at=Min("received_at"))["at"]
        pending = GaugeMetricFamily(
            "helpdesk_webhook_events_pending",
            "Stored webhook events not processed yet (pending, or failed and"
            " to be retried).",
            labels=["state"],
        )
        for state in UNFINISHED_STATES:
            pending.add_metric([state], by_state.get(state, 0))
        yield pending
        age = 0.0 if oldest is None else (timezone.now() - oldest).total_seconds()
        yield GaugeMetricFamily(
            "helpdesk_webhook_events_oldest_pending_age_seconds",
            "Age of the oldest stored event not processed yet; 0 when none.",
            value=max(age, 0.0),
        )
        purged = self._hash(PURGED_EVENTS)
        finished = CounterMetricFamily(
            "helpdesk_webhook_events_finished",
            "Stored webhook events processed to the end, by how they ended"
            " (processed, malformed, unroutable); purged ones still count.",
            labels=["state"],
        )
        for state in FINISHED_STATES:
            purged_count = int(purged.get(state.encode(), 0))
            finished.add_metric([state], by_state.get(state, 0) + purged_count)
        yield finished

    @staticmethod
    def _hash(key: str) -> dict:
        try:
            return _redis().hgetall(key)
        except redis.RedisError as error:
            _warn(error)
            return {}

    def _counter(self, key: str, name: str, about: str, labels: list[str]):
        """The counter family `name` from the Redis hash `key`."""
        family = CounterMetricFamily(name, about, labels=labels)
        for values, value in _labelled(self._hash(key), tuple(labels)):
            family.add_metric(values, value)
        return family

    def _redis_figures(self):
        yield self._counter(
            WEBHOOK_REQUESTS,
            "helpdesk_webhook_requests",
            "Requests to Meta's webhook endpoint by method and HTTP status"
            " (200 stored, 401/403 refused signatures, 413 too large, 503 the"
            " database unavailable).",
            ["method", "status"],
        )
        yield self._counter(
            SENDS,
            "helpdesk_messages_sent",
            "Finished send attempts to Meta by outcome (sent, retry, failed,"
            " unknown, stop, defer) and Meta's error code (empty: none).",
            ["outcome", "code"],
        )
        yield self._counter(
            LIMITER_WAITS,
            "helpdesk_limiter_waits",
            "Times a send waited for a rate limiter: the number's throughput"
            " (number) or Meta's pair rate to one customer (pair).",
            ["limiter"],
        )
        yield from _queue_depths()


def _open_tabs() -> int:
    from accounts.models import LiveTab

    return LiveTab.objects.filter(closed_at__isnull=True).count()


def _queue_depths():
    from helpdesk.processes import QUEUES

    celery = GaugeMetricFamily(
        "helpdesk_celery_queue_length",
        "Celery messages waiting in each queue (not yet taken by a worker).",
        labels=["queue"],
    )
    layer = GaugeMetricFamily(
        "helpdesk_channel_layer_messages",
        "Messages waiting in the channel layer's channels and groups (live"
        " events and presence on their way to web processes).",
    )
    up = GaugeMetricFamily(
        "helpdesk_redis_up", "1 when Redis answered this scrape, else 0."
    )
    try:
        client = _redis()
        pipeline = client.pipeline(transaction=False)
        for queue in QUEUES:
            pipeline.llen(queue)
        for queue, length in zip(QUEUES, pipeline.execute(), strict=True):
            celery.add_metric([queue], length)
        layer.add_metric([], _channel_layer_depth(client))
        up.add_metric([], 1)
    except redis.RedisError as error:
        _warn(error)
        up.add_metric([], 0)
    yield celery
    yield layer
    yield up


def _channel_layer_depth(client: redis.Redis) -> int:
    """Messages in the channel layer's channels: channels_redis keeps one
    sorted set per channel, named its prefix "asgi" and the channel's name;
    its groups' sets (under "asgi:group:") hold members, not messages."""
    keys = []
    for key in client.scan_iter(match="asgi*", count=1000):
        if key.startswith(b"asgi:group:"):
            continue
        keys.append(key)
        if len(keys) >= CHANNEL_LAYER_SCAN_LIMIT:
            break
    total = 0
    for start in range(0, len(keys), 500):
        pipeline = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipeline.type(key)
        types = pipeline.execute()
        pipeline = client.pipeline(transaction=False)
        for key, kind in zip(keys[start : start + 500], types, strict=True):
            if kind == b"zset":
                pipeline.zcard(key)
        total += sum(pipeline.execute())
    return total
