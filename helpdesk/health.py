"""What the load balancer and the monitoring ask: alive, ready, the figures.

- ``/healthz``: liveness. The process answers; nothing else is asked, so a
  database outage never makes an orchestrator restart every web process.
- ``/readyz``: readiness. 200 when PostgreSQL and Redis answer and the
  oldest stored webhook event not yet processed is younger than
  ``READY_MAX_EVENT_LAG_SECONDS``; 503 with the reasons otherwise.
- ``/metrics``: Prometheus' text format, the whole deployment's figures
  (conversations/metrics.py); with ``METRICS_TOKEN`` set, only for
  ``Authorization: Bearer <token>``.
"""

import hmac
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from conversations.metrics import UNFINISHED_STATES, HelpdeskCollector
from conversations.models import WebhookEvent

# The classic text format, which every Prometheus version reads (newer
# clients announce a version 1.0.0 that older servers refuse).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_registry = CollectorRegistry(auto_describe=False)
_registry.register(HelpdeskCollector())


DATABASE_PROBE_SECONDS = 3.0
_probe_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")


def _text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


@never_cache
def healthz(request):
    return _text("ok")


def _event_lag() -> float:
    oldest = (
        WebhookEvent.objects.filter(state__in=UNFINISHED_STATES)
        .order_by("received_at")
        .values_list("received_at", flat=True)
        .first()
    )
    return 0.0 if oldest is None else (timezone.now() - oldest).total_seconds()


def _event_lag_in_thread() -> float:
    try:
        return _event_lag()
    finally:
        # This thread's connection goes back (to the pool) at once.
        connections.close_all()


def _problems() -> list[str]:
    problems = []
    # A pooled connection can wait the pool's whole timeout for a database
    # that is gone; a probe answers within DATABASE_PROBE_SECONDS.
    future = _probe_pool.submit(_event_lag_in_thread)
    try:
        lag = future.result(timeout=DATABASE_PROBE_SECONDS)
    except TimeoutError:
        problems.append(f"database: no answer within {DATABASE_PROBE_SECONDS} s")
    except DatabaseError as error:
        problems.append(f"database: {type(error).__name__}")
    else:
        if lag > settings.READY_MAX_EVENT_LAG_SECONDS:
            problems.append(f"webhook events: the oldest pending is {lag:.0f} s old")
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        with client:
            client.ping()
    except redis.RedisError as error:
        problems.append(f"redis: {type(error).__name__}")
    return problems


@never_cache
def readyz(request):
    problems = _problems()
    if problems:
        return _text("not ready\n" + "\n".join(problems) + "\n", status=503)
    return _text("ready\n")


@never_cache
def metrics(request):
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = _text("A bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE)
