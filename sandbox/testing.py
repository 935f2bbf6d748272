"""Start the sandbox (and a webhook receiver) from tests, on free ports.

    with running_sandbox(webhook_url=receiver.url) as sandbox:
        sandbox.control.customer_message("4917012345678", type="text", text="Hi")
        number_id = sandbox.number.phone_number_id
        requests.post(f"{sandbox.graph_url}/{number_id}/messages", ...)

Both servers run their own event loop in a background thread, so they work
from synchronous tests (Django's) and from async tests alike.
"""

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import requests
from aiohttp import web

from .config import DEMO_NUMBER, Number, SandboxConfig, StatusDelays
from .payloads import verify
from .server import start_server

GRAPH_VERSION = "v24.0"


class LoopThread:
    """An asyncio loop in a daemon thread, for servers that outlive one call."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_until(condition: Callable[[], object], timeout: float = 5.0, interval=0.01):
    """Return condition()'s first truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class SandboxClient:
    """A small synchronous client for the control API under /_sandbox/."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = requests.Session()

    def _call(self, method: str, path: str, **kwargs):
        response = self.http.request(
            method, f"{self.base_url}/_sandbox/{path}", timeout=30, **kwargs
        )
        if response.status_code >= 400:
            raise AssertionError(
                f"{method} {path}: {response.status_code} {response.text}"
            )
        return response.json()

    def add_number(self, **number) -> dict:
        return self._call("POST", "numbers", json=number)

    def configure(self, **settings) -> dict:
        return self._call("PATCH", "config", json=settings)

    def set_faults(self, **faults) -> dict:
        """Replace all faults with these (unnamed ones go back to defaults)."""
        return self._call("PUT", "faults", json=faults)

    def customer_message(self, wa_id: str, **description) -> dict:
        return self._call("POST", f"customers/{wa_id}/messages", json=description)

    def business_app_message(self, wa_id: str, text: str, **extra) -> dict:
        """The business writes from its WhatsApp Business app (an echo)."""
        return self._call(
            "POST", f"customers/{wa_id}/echoes", json={"text": text, **extra}
        )

    def share_history(self, wa_id: str, messages=None, **extra) -> dict:
        """The business shares its app's past chat with the customer."""
        body = {"messages": messages, **extra} if messages else extra
        return self._call("POST", f"customers/{wa_id}/history", json=body)

    def batch(self, changes: list[dict]) -> dict:
        return self._call("POST", "webhooks/batch", json={"changes": changes})

    def open_window(self, *wa_ids: str, hours_ago: float = 0, **extra) -> dict:
        return self._call(
            "POST",
            "windows",
            json={"wa_ids": list(wa_ids), "hours_ago": hours_ago, **extra},
        )

    def requests(self, path: str = "") -> list[dict]:
        return self._call("GET", "requests", params={"path": path})["requests"]

    def stats(self) -> dict:
        return self._call("GET", "stats")

    def business_clock(self, phone_number_id: str, **move) -> dict:
        """The helpdesk's business clock: read, or moved by `at`, `jump`
        ("closed", "open") or `reset` (sandbox/clock.py)."""
        return self._call(
            "POST",
            "business-clock",
            json={"phone_number_id": phone_number_id, **move},
        )

    def messages(self, wa_id: str = "") -> list[dict]:
        return self._call("GET", "messages", params={"wa_id": wa_id})["messages"]

    def webhooks(self) -> list[dict]:
        return self._call("GET", "webhooks")["webhooks"]

    def set_template_status(self, name: str, status: str, **extra) -> dict:
        return self._call(
            "POST", f"templates/{name}/status", json={"status": status, **extra}
        )

    def add_template(self, **template) -> dict:
        return self._call("POST", "templates", json=template)

    def reset(self) -> dict:
        return self._call("POST", "reset")


@dataclass
class RunningSandbox:
    base_url: str
    control: SandboxClient
    numbers: list[Number]

    @property
    def number(self) -> Number:
        return self.numbers[0]

    @property
    def graph_url(self) -> str:
        """What the helpdesk's WHATSAPP_GRAPH_API_URL + version should point at."""
        return f"{self.base_url}/{GRAPH_VERSION}"


@contextlib.contextmanager
def running_sandbox(
    *,
    webhook_url: str = "",
    numbers: list[Number] | None = None,
    status_delays: dict | None = None,
    faults: dict | None = None,
    **settings,
) -> Iterator[RunningSandbox]:
    """Run a sandbox on a free port for the duration of the block."""
    config = SandboxConfig.from_dict(settings)
    config.webhook_url = webhook_url
    config.numbers = list(numbers or [DEMO_NUMBER])
    if status_delays is not None:
        config.status_delays = StatusDelays.from_dict(status_delays)
    config.faults = dict(faults or {})
    loop_thread = LoopThread()
    try:
        runner, base_url = loop_thread.run(start_server(config))
        try:
            yield RunningSandbox(base_url, SandboxClient(base_url), config.numbers)
        finally:
            loop_thread.run(runner.cleanup())
    finally:
        loop_thread.stop()


@dataclass
class ReceivedWebhook:
    headers: dict
    body: bytes
    received_at: float

    def json(self) -> dict:
        return json.loads(self.body)

    def verifies(self, app_secret: str) -> bool:
        return verify(
            self.body, self.headers.get("X-Hub-Signature-256", ""), app_secret
        )


@dataclass
class WebhookReceiver:
    """A stand-in for the helpdesk's webhook endpoint that records what arrives."""

    url: str = ""
    received: list[ReceivedWebhook] = field(default_factory=list)
    # HTTP status to answer; tests change it to simulate a failing endpoint.
    answer_status: int = 200
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict]:
        with self._lock:
            return [item.json() for item in self.received]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedWebhook]:
        wait_until(lambda: len(self.received) >= count, timeout)
        with self._lock:
            return list(self.received)

    def clear(self):
        with self._lock:
            self.received.clear()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(
                ReceivedWebhook(dict(request.headers), body, time.time())
            )
        if request.method == "GET":
            return web.Response(text=request.query.get("hub.challenge", ""))
        return web.Response(status=self.answer_status)


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    loop_thread = LoopThread()

    async def start():
        app = web.Application()
        app.router.add_route("*", "/webhooks/whatsapp/", receiver._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner

    try:
        runner = loop_thread.run(start())
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/webhooks/whatsapp/"
        try:
            yield receiver
        finally:
            loop_thread.run(runner.cleanup())
    finally:
        loop_thread.stop()
