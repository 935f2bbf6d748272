"""Real servers for the webhook endpoint tests: uvicorn in a thread, a
throwaway redis-server, a Celery worker process, and Meta-style signing."""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import redis
import uvicorn
from django.db import connections

from conversations.whatsapp.webhooks import WebhookEndpoint, route_webhooks
from helpdesk.launcher import free_port, redis_server_binary
from helpdesk.processes import in_this_python, worker_command
from sandbox.testing import wait_until

BASE_DIR = Path(__file__).resolve().parent.parent
PATH = "/webhooks/whatsapp/"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str) -> dict:
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(body, secret),
    }


def text_message_body(wamid: str, wa_id: str, phone_number_id: str, waba_id: str):
    """A new customer's text message, serialised as Meta does (compact)."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba_id,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550100001",
                                "phone_number_id": phone_number_id,
                            },
                            "contacts": [
                                {"profile": {"name": "Kund\u00e9"}, "wa_id": wa_id}
                            ],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": wamid,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": "Where is my order?"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


async def _fallback(scope, receive, send):
    """Stands in for Django: every other path is a 404."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"not the webhook"})


class ServerThread:
    """uvicorn serving an ASGI app on a free port, in a background thread."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
                loop="asyncio",
                http="h11",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def serving(**endpoint_options):
    """The webhook endpoint under uvicorn; yields (server, endpoint)."""
    endpoint = WebhookEndpoint(**endpoint_options)
    with ServerThread(route_webhooks(endpoint, _fallback)) as server:
        yield server, endpoint


class RedisServer:
    """A throwaway redis-server: the tests may freeze it or kill it."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        wait_until(lambda: _pings(client), timeout=10)
        client.close()
        return self

    def freeze(self):
        self.process.send_signal(signal.SIGSTOP)

    def kill(self):
        self.process.kill()
        self.process.wait(10)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def decode_celery_message(raw: bytes) -> tuple[dict, list]:
    """(headers, [args, kwargs, embed]) of a message kombu stored in Redis."""
    envelope = json.loads(raw)
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["content-type"] == "application/json"
    body = json.loads(base64.b64decode(envelope["body"]))
    return envelope["headers"], body


def database_url() -> str:
    """The URL of the database the tests run on (the test database)."""
    database = connections["default"].settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(database['NAME']).resolve()}"
    user = database.get("USER") or ""
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{database['NAME']}"


@contextlib.contextmanager
def celery_worker(redis_url: str, log_path: Path):
    """A real `celery -A helpdesk worker` on the test database and this Redis."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            in_this_python(
                worker_command(
                    queues=["default"], pool="solo", alone=True, log_level="WARNING"
                )
            ),
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
