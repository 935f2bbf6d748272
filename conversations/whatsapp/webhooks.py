"""The webhook endpoint, /webhooks/whatsapp/: verify, store, answer, ring.

It is a raw ASGI application that helpdesk/asgi.py puts in front of Django,
because this is the hottest path in the system: Meta sends a status webhook
for every sent, delivered and read message, and a Django request under ASGI
costs several milliseconds of thread hand-offs (docs/benchmarks.md). Nothing
here touches the ORM, sessions or middleware.

- GET answers Meta's handshake: ``hub.mode=subscribe`` and a ``hub.verify_token``
  equal to any Meta app's verify token echo ``hub.challenge``; anything else
  is 403.
- POST checks ``X-Hub-Signature-256`` over the raw bytes against every app's
  secret (missing: 401, wrong: 403, nothing stored; the secrets are cached,
  and re-read on a mismatch at a bounded rate), INSERTs one
  ``WebhookEvent`` row in its own committed statement, answers 200, and only
  then asks a worker to process it. Signed bodies that are not JSON are stored
  all the same; processing marks them malformed.
- The database down: 503, so Meta retries. Redis down or frozen: still 200;
  the publish happens after the answer, in batches, with short timeouts, and
  the sweeper (``conversations.tasks.sweep_webhook_events``) queues every
  stored event not processed yet.
"""

import asyncio
import base64
import collections
import contextlib
import datetime
import functools
import hmac
import json
import logging
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs

from django.conf import settings
from django.db import connections

from conversations.models import MetaApp, WebhookEvent
from conversations.tasks import event_batches
from conversations.whatsapp.payloads import (
    BODY_HOLDS_MESSAGES,
    BODY_HOLDS_STATUSES,
    body_holds,
    verify_signature,
)

logger = logging.getLogger(__name__)

WEBHOOK_PATHS = frozenset({"/webhooks/whatsapp/", "/webhooks/whatsapp"})
# The task that processes stored events, a batch of ids per message
# (conversations/tasks.py).
PROCESS_TASK = "conversations.tasks.process_webhook_events"
# Meta documents webhook payloads of up to 3 MB; the margin keeps a batch
# that is a little over from being refused on every retry.
MAX_BODY_BYTES = 3 * 1024 * 1024 + 512 * 1024
# Headers kept with the event, for audits and replays.
KEPT_HEADERS = (
    b"content-type",
    b"content-length",
    b"user-agent",
    b"x-hub-signature-256",
    b"x-forwarded-for",
)
# How long the apps' secrets are trusted before they are read again. A
# signature that no cached secret matches re-reads them at once, so a new
# app works immediately; a removed one lingers at most this long.
SECRETS_TTL = 5.0
# Those re-reads are bounded, or every forged POST (and every handshake with
# a wrong token) would be a database read: a few at once, then one per
# interval. A new app's webhook refused meanwhile is retried by Meta.
SECRETS_REFRESH_BURST = 3
SECRETS_REFRESH_INTERVAL = 1.0
# A database that does not give a connection within this many seconds is
# down as far as Meta is concerned: 503, and Meta retries.
DATABASE_TIMEOUT = 2.0
# The doorbell: a frozen Redis costs at most this per batch, and at most this
# many ids wait for it (the sweeper re-queues whatever is dropped).
REDIS_TIMEOUT = 0.5
DOORBELL_BACKLOG = 10_000
DOORBELL_BATCH = 500
# The claim lane of an event by what its body holds (WebhookEvent.Lane).
LANES = {
    BODY_HOLDS_MESSAGES: WebhookEvent.Lane.MESSAGES.value,
    BODY_HOLDS_STATUSES: WebhookEvent.Lane.STATUSES.value,
}


def lane_of(body: bytes) -> int:
    """The claim lane of a body (WebhookEvent.Lane), from a look at its bytes."""
    return LANES.get(body_holds(body), WebhookEvent.Lane.OTHER.value)


class DatabaseUnavailable(Exception):
    """The event could not be stored; Meta must retry."""


class ClientGone(Exception):
    """The client disconnected before its body arrived; nobody to answer."""


@dataclass(frozen=True)
class AppKeys:
    id: int
    app_secret: str
    verify_token: str


class PostgresStore:
    """Apps and events through an asyncio psycopg pool, one statement each."""

    def __init__(self, database: dict, pool_size: int):
        import psycopg
        from psycopg.types.json import Jsonb
        from psycopg_pool import AsyncConnectionPool

        self._errors = (psycopg.Error, OSError)
        self._jsonb = Jsonb
        options = {
            key: value
            for key, value in (database.get("OPTIONS") or {}).items()
            if key in {"sslmode", "sslrootcert", "sslcert", "sslkey", "options"}
        }
        kwargs = {
            "dbname": database["NAME"],
            "user": database.get("USER") or None,
            "password": database.get("PASSWORD") or None,
            "host": database.get("HOST") or None,
            "port": database.get("PORT") or None,
            "connect_timeout": max(1, int(DATABASE_TIMEOUT)),
            "application_name": "helpdesk-webhooks",
            "autocommit": True,
            **options,
        }
        self._pool = AsyncConnectionPool(
            kwargs={key: value for key, value in kwargs.items() if value is not None},
            min_size=1,
            max_size=pool_size,
            timeout=DATABASE_TIMEOUT,
            open=False,
            name="webhooks",
        )
        self._opened = False
        table = WebhookEvent._meta.db_table
        app_table = MetaApp._meta.db_table
        # The app id goes through a sub-select so that an app deleted while
        # its secret was cached leaves the event without an app (the column
        # is SET_NULL anyway) instead of failing the foreign key.
        self._insert = (
            f"INSERT INTO {table} (body, headers, app_id, signature_valid, state,"  # noqa: S608
            " received_at, attempts, last_error, lane)"
            f" VALUES (%s, %s, (SELECT id FROM {app_table} WHERE id = %s), true,"
            " %s, %s, 0, '', %s) RETURNING id"
        )
        self._select_apps = f"SELECT id, app_secret, verify_token FROM {app_table}"  # noqa: S608

    async def _connection(self):
        if not self._opened:
            self._opened = True
            await self._pool.open(wait=False)
        return self._pool.connection()

    async def apps(self) -> list[AppKeys]:
        try:
            async with await self._connection() as conn:
                cursor = await conn.execute(self._select_apps)
                return [AppKeys(*row) for row in await cursor.fetchall()]
        except self._errors as error:
            raise DatabaseUnavailable(str(error)) from error

    async def insert(
        self, body: bytes, headers: dict, app_id: int, received_at, lane: int
    ) -> int:
        try:
            async with await self._connection() as conn:
                cursor = await conn.execute(
                    self._insert,
                    (
                        body,
                        self._jsonb(headers),
                        app_id,
                        WebhookEvent.State.PENDING.value,
                        received_at,
                        lane,
                    ),
                )
                return (await cursor.fetchone())[0]
        except self._errors as error:
            raise DatabaseUnavailable(str(error)) from error

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()


class SqliteStore:
    """The embedded mode: one thread and one connection, as SQLite likes it."""

    def __init__(self, database: dict):
        self._path = str(database["NAME"])
        self._timeout = float((database.get("OPTIONS") or {}).get("timeout", 30))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="webhooks-sqlite")
        self._connection: sqlite3.Connection | None = None
        table = WebhookEvent._meta.db_table
        app_table = MetaApp._meta.db_table
        self._insert = (
            f"INSERT INTO {table} (body, headers, app_id, signature_valid, state,"  # noqa: S608
            " received_at, attempts, last_error, lane)"
            f" VALUES (?, ?, (SELECT id FROM {app_table} WHERE id = ?),"
            " 1, ?, ?, 0, '', ?)"
        )
        self._select_apps = f"SELECT id, app_secret, verify_token FROM {app_table}"  # noqa: S608
        self._ops = connections["default"].ops

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Opening must not create a file: a missing database is an outage.
            self._connection = sqlite3.connect(
                f"file:{self._path}?mode=rw",
                uri=True,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        return self._connection

    async def _run(self, function, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as error:
            self._close_connection()
            raise DatabaseUnavailable(str(error)) from error

    def _close_connection(self):
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    async def apps(self) -> list[AppKeys]:
        def select():
            rows = self._connect().execute(self._select_apps).fetchall()
            return [AppKeys(*row) for row in rows]

        return await self._run(select)

    async def insert(
        self, body: bytes, headers: dict, app_id: int, received_at, lane: int
    ) -> int:
        values = (
            body,
            json.dumps(headers),
            app_id,
            WebhookEvent.State.PENDING.value,
            # Django's own text form of a datetime on SQLite (UTC, naive).
            self._ops.adapt_datetimefield_value(received_at),
            lane,
        )

        def insert():
            return self._connect().execute(self._insert, values).lastrowid

        return await self._run(insert)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._close_connection
        )
        self._executor.shutdown(wait=False)


class AppSecrets:
    """The apps' secrets and verify tokens, cached for a few seconds.

    ``get(fresh=True)`` (a signature or token no cached app matches) reads
    them again at once, as a token bucket allows: ``burst`` reads, refilled
    at one per ``interval`` seconds. ``reads`` counts the database reads.
    """

    def __init__(
        self,
        store,
        ttl: float = SECRETS_TTL,
        *,
        burst: int = SECRETS_REFRESH_BURST,
        interval: float = SECRETS_REFRESH_INTERVAL,
        clock=time.monotonic,
    ):
        self._store = store
        self._ttl = ttl
        self._burst = burst
        self._interval = interval
        # The one seam for tests: time.
        self._clock = clock
        self._apps: list[AppKeys] = []
        self._loaded_at = -float("inf")
        self._loading: asyncio.Future | None = None
        self._refreshes = float(burst)
        self._refilled_at = clock()
        self.reads = 0

    async def get(self, *, fresh: bool = False) -> list[AppKeys]:
        expired = self._clock() - self._loaded_at >= self._ttl
        if not expired and not (fresh and self._may_refresh()):
            return self._apps
        # Concurrent misses share one read.
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        return await asyncio.shield(self._loading)

    def _may_refresh(self) -> bool:
        """Take one refresh from the bucket, if one is left."""
        if self._loading is not None:
            # Joining the read in flight costs nothing.
            return True
        now = self._clock()
        elapsed = now - self._refilled_at
        self._refilled_at = now
        self._refreshes = min(
            float(self._burst), self._refreshes + elapsed / self._interval
        )
        if self._refreshes < 1:
            return False
        self._refreshes -= 1
        return True

    async def _load(self) -> list[AppKeys]:
        try:
            self.reads += 1
            self._apps = await self._store.apps()
            self._loaded_at = self._clock()
            return self._apps
        finally:
            self._loading = None


@functools.lru_cache(maxsize=16)
def _task_template(task_name: str) -> tuple[dict, dict, dict]:
    """Celery's own headers, properties and embed for a task; per-message
    fields are filled in by celery_message (building them costs ~70 µs)."""
    from helpdesk.celery import app as celery_app

    headers, properties, body, _ = celery_app.amqp.as_task_v2(
        "-", task_name, args=[], kwargs={}, ignore_result=True
    )
    return headers, properties, body[2]


def celery_message(task_name: str, args: list, queue: str) -> bytes:
    """A Celery protocol-2 message, as kombu's Redis transport stores it (a
    JSON envelope around a base64 JSON body), for a plain LPUSH to the queue.

    Published to the default exchange (routing key = queue), so it needs no
    exchange bindings in Redis: a worker consuming the queue takes it.
    """
    headers, properties, embed = _task_template(task_name)
    task_id = str(uuid.uuid4())
    body = json.dumps([args, {}, embed]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                **headers,
                "id": task_id,
                "root_id": task_id,
                "argsrepr": repr(args),
            },
            "properties": {
                **properties,
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def queue_name(task_name: str) -> str:
    """The Celery queue a task is routed to (CELERY_TASK_ROUTES)."""
    from helpdesk.celery import app as celery_app

    return celery_app.amqp.router.route({}, task_name)["queue"].name


class Doorbell:
    """Tells workers "process events N, M, ...", off the request path and in batches.

    ``ring`` never waits. A background task LPUSHes whatever has gathered in
    one command with a short timeout, as Celery messages of up to
    ``WEBHOOK_TASK_BATCH`` ids each: the busier the endpoint, the more ids
    gather while a push is in flight and the fewer tasks the workers run.
    When Redis is down or frozen the ids are dropped with a warning, because
    the event rows are already stored and the sweeper queues them.
    """

    def __init__(self, redis_url: str):
        self._redis_url = redis_url
        self._pending: collections.deque[int] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._redis = None
        self._queue = queue_name(PROCESS_TASK)
        self._last_warning = -float("inf")
        self.dropped = 0

    def ring(self, event_id: int) -> None:
        if len(self._pending) >= DOORBELL_BACKLOG:
            self.dropped += 1
            return
        self._pending.append(event_id)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import redis.asyncio as redis

        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self._redis_url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [
                    self._pending.popleft()
                    for _ in range(min(DOORBELL_BATCH, len(self._pending)))
                ]
                messages = [
                    celery_message(PROCESS_TASK, [ids], self._queue)
                    for ids in event_batches(batch)
                ]
                try:
                    await asyncio.wait_for(
                        self._redis.lpush(self._queue, *messages), REDIS_TIMEOUT * 2
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 (any failure: the sweeper)
                    self.dropped += len(batch)
                    self._warn(error, len(batch))
                    # Do not spin against a dead server; the backlog is bounded.
                    await asyncio.sleep(REDIS_TIMEOUT)

    def _warn(self, error: Exception, count: int) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            logger.warning(
                "Could not queue %d webhook event(s) (%s: %s); the sweeper "
                "will queue them.",
                count,
                type(error).__name__,
                error,
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()


class WebhookEndpoint:
    """The ASGI application for /webhooks/whatsapp/.

    ``database`` (a Django DATABASES entry) and ``redis_url`` default to the
    settings, read when the first request arrives; tests pass others.
    Resources are bound to the event loop that first uses them.
    """

    def __init__(
        self,
        *,
        database: dict | None = None,
        redis_url: str | None = None,
        pool_size: int | None = None,
    ):
        self._database = database
        self._redis_url = redis_url
        self._pool_size = pool_size
        self._loop = None
        self.store = None
        self.secrets: AppSecrets | None = None
        self.doorbell: Doorbell | None = None

    def _resources(self):
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            database = self._database or connections["default"].settings_dict
            if database["ENGINE"] == "django.db.backends.postgresql":
                pool_size = self._pool_size or getattr(
                    settings, "WEBHOOK_DATABASE_POOL_SIZE", 10
                )
                self.store = PostgresStore(database, pool_size)
            elif database["ENGINE"] == "django.db.backends.sqlite3":
                self.store = SqliteStore(database)
            else:
                raise RuntimeError(f"Unsupported database engine {database['ENGINE']}")
            self.secrets = AppSecrets(self.store)
            self.doorbell = Doorbell(self._redis_url or settings.REDIS_URL)
            self._loop = loop
        return self.store, self.secrets, self.doorbell

    async def close(self) -> None:
        if self._loop is not None:
            await self.doorbell.close()
            await self.store.close()
            self._loop = None

    async def __call__(self, scope, receive, send) -> None:
        event_id = None
        try:
            method = scope["method"]
            if method == "POST":
                status, body, event_id = await self._post(scope, receive)
            elif method == "GET":
                status, body = await self._get(scope)
            else:
                status, body = 405, b"Method not allowed\n"
        except ClientGone:
            return
        except DatabaseUnavailable as error:
            logger.warning("Webhook refused with 503: database unavailable: %s", error)
            status, body = 503, b"Database unavailable, retry later\n"
        except Exception:
            # Never a 500: Meta retries a 503, and the error is logged.
            logger.exception("Webhook failed")
            status, body = 503, b"Temporarily unavailable, retry later\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                    *([(b"allow", b"GET, POST")] if status == 405 else []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        # After the answer: the doorbell. A ring never blocks and never fails.
        if event_id is not None:
            self.doorbell.ring(event_id)

    async def _get(self, scope) -> tuple[int, bytes]:
        query = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
        mode = query.get("hub.mode", [""])[0]
        token = query.get("hub.verify_token", [""])[0].encode()
        challenge = query.get("hub.challenge", [""])[0]
        if mode != "subscribe" or not token:
            return 403, b"Forbidden\n"
        _, secrets, _ = self._resources()
        apps = await secrets.get()
        if not self._token_matches(token, apps):
            apps = await secrets.get(fresh=True)
            if not self._token_matches(token, apps):
                return 403, b"Forbidden\n"
        return 200, challenge.encode()

    @staticmethod
    def _token_matches(token: bytes, apps: list[AppKeys]) -> bool:
        matched = False
        for app in apps:
            # Every token is compared, in constant time, so timing tells
            # nothing about which (or whether a prefix) matched.
            if app.verify_token and hmac.compare_digest(
                app.verify_token.encode(), token
            ):
                matched = True
        return matched

    async def _post(self, scope, receive) -> tuple[int, bytes, int | None]:
        headers = {}
        declared_length = None
        for name, value in scope["headers"]:
            name = name.lower()
            if name in KEPT_HEADERS:
                headers[name.decode()] = value.decode("latin-1")
            if name == b"content-length":
                with contextlib.suppress(ValueError):
                    declared_length = int(value)
        if declared_length is not None and declared_length > MAX_BODY_BYTES:
            return 413, b"Payload too large\n", None
        body = await self._read_body(receive)
        if body is None:
            return 413, b"Payload too large\n", None
        signature = headers.get("x-hub-signature-256")
        if not signature:
            return 401, b"Missing X-Hub-Signature-256\n", None
        store, secrets, _ = self._resources()
        app = self._signed_by(body, signature, await secrets.get())
        if app is None:
            # Perhaps an app added seconds ago: read the apps again, as
            # often as AppSecrets' bucket allows.
            app = self._signed_by(body, signature, await secrets.get(fresh=True))
            if app is None:
                return 403, b"Invalid signature\n", None
        received_at = datetime.datetime.now(datetime.UTC)
        event_id = await store.insert(body, headers, app.id, received_at, lane_of(body))
        return 200, b"OK\n", event_id

    @staticmethod
    def _signed_by(body: bytes, signature: str, apps: list[AppKeys]):
        secret = verify_signature(body, signature, [app.app_secret for app in apps])
        if secret is None:
            return None
        return next(app for app in apps if app.app_secret == secret)

    @staticmethod
    async def _read_body(receive) -> bytes | None:
        """The whole body, or None once it grows past MAX_BODY_BYTES."""
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def route_webhooks(endpoint: WebhookEndpoint, application):
    """An ASGI app: the webhook path to ``endpoint``, everything else to
    ``application``. Also answers the lifespan protocol (uvicorn) so the
    endpoint's pool and Redis client are closed on shutdown."""

    async def router(scope, receive, send):
        kind = scope["type"]
        if kind == "http" and scope["path"] in WEBHOOK_PATHS:
            return await endpoint(scope, receive, send)
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    with contextlib.suppress(Exception):
                        await endpoint.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return await application(scope, receive, send)

    return router
