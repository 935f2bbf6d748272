"""Many machines: two web hosts, two worker hosts and beat, each a network
namespace running the production command, behind nginx with the config of
deploy/, over a PostgreSQL and a Redis of the test's own. Under load from a
webhook client that retries as Meta does, one web host and one worker host
are killed, beat is stopped and started again, and PostgreSQL restarts;
afterwards every acknowledged event is processed, every message stored
exactly once, and the figures are printed (docs/operations.md records them).

It judges by what is outside the processing engine only: the events stored,
the messages in the database, and what the client was answered.

It needs root (network namespaces), iproute2, nginx and PostgreSQL's server
binaries; where they are missing it fails, never skips, so CI cannot pass
without it having run.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpdesk.processes import beat_command, production_commands
from tests.fixtures.agents import Agents, Tab, log_in
from tests.fixtures.hosts import (
    BASE_DIR,
    GATEWAY,
    WEB_PORT,
    Network,
    Nginx,
    Postgres,
    Redis,
    missing_tools,
    wait_for,
)
from tests.fixtures.outbound_phase import (
    SANDBOX_URL,
    Sandbox,
    accepted_per_message,
    outbound_statuses,
    queue_replies,
    settled,
    wait_until_started,
)
from tests.fixtures.webhook_server import signed_headers, text_message_body

pytestmark = [pytest.mark.e2e, pytest.mark.multihost, pytest.mark.timeout(600)]

HOSTS = ["web1", "web2", "worker1", "worker2", "beat"]
EVENTS = 1200
RATE = 40.0  # events a second the client starts
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
# Meta retries a webhook that was not answered 2xx, with growing pauses.
RETRY_FIRST, RETRY_CAP, RETRY_FOR = 0.25, 4.0, 180.0
BEAT_STOPPED = 60.0  # beat stopped for a minute, from 12 s into the load
AGENTS = 6
ACCESS_TOKEN = "multi-host-access-token"
REPLIES = 300
METRICS_TOKEN = "multi-host-scrape"
AGENT_PASSWORD = "multi-host-agent"


class MetaClient:
    """Posts each event until a 2xx answers it, backing off after refusals
    and connection errors, as Meta does; counts what happened."""

    def __init__(self, url: str, secret: str):
        self.url = url
        self.secret = secret
        self.counts = Counter()
        self.answers = Counter()
        self.lock = threading.Lock()
        self.session = threading.local()

    def _count(self, what: str, status: int | None = None) -> None:
        with self.lock:
            self.counts[what] += 1
            if status is not None:
                self.answers[status] += 1

    def deliver(self, wamid: str, wa_id: str) -> bool:
        body = text_message_body(wamid, wa_id, PHONE_NUMBER_ID, WABA_ID)
        headers = signed_headers(body, self.secret)
        session = getattr(self.session, "value", None) or requests.Session()
        self.session.value = session
        pause, deadline = RETRY_FIRST, time.monotonic() + RETRY_FOR
        self._count("sent")
        while time.monotonic() < deadline:
            self._count("attempts")
            try:
                response = session.post(self.url, data=body, headers=headers, timeout=5)
            except requests.RequestException:
                self._count("connection_errors")
            else:
                self._count("answered", response.status_code)
                if 200 <= response.status_code < 300:
                    self._count("acknowledged")
                    return True
            time.sleep(pause)
            pause = min(pause * 2, RETRY_CAP)
        self._count("given_up")
        return False


def _environment(postgres: Postgres, redis: Redis) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "PYTEST_CURRENT_TEST"}
    }
    env.update(
        DATABASE_URL=postgres.url,
        REDIS_URL=redis.url,
        DEBUG="1",
        ALLOWED_HOSTS=",".join(
            [GATEWAY, *(host.address for host in Network(HOSTS).hosts.values())]
        ),
        DJANGO_SETTINGS_MODULE="helpdesk.settings",
        # The sweepers run often, so the test's waits stay short.
        WEBHOOK_SWEEP_SECONDS="2",
        # A dead worker's sends are settled 10 s after their claim.
        WHATSAPP_DELIVERY_LEASE_SECONDS="10",
        WHATSAPP_GRAPH_API_URL=SANDBOX_URL,
        LOG_FORMAT="json",
        METRICS_TOKEN=METRICS_TOKEN,
        LOG_LEVEL="WARNING",
    )
    return env


def _seed(env: dict, secret: str) -> None:
    """Migrate the test's database and add the app, the number, the agents."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=BASE_DIR, env=env, check=True, timeout=300,
    )  # fmt: skip
    script = (
        "import django; django.setup();"
        "from conversations.models import MetaApp, WhatsAppNumber;"
        f"app = MetaApp.objects.create(name='App', app_id='1', app_secret='{secret}',"
        " verify_token='v');"
        f"WhatsAppNumber.objects.create(app=app, name='Line', phone_number_id="
        f"'{PHONE_NUMBER_ID}', waba_id='{WABA_ID}',"
        f" display_phone_number='+15550100001', access_token='{ACCESS_TOKEN}');"
        "from accounts.models import User;"
        f"[User.objects.create_superuser(f'agent{{i}}', password='{AGENT_PASSWORD}')"
        f" for i in range({AGENTS})]"
    )
    subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, check=True, timeout=120
    )


def _start(network: Network, env: dict, logs: Path) -> None:
    commands = {c.name: c.argv for c in production_commands(cores=1, proxy=GATEWAY)}
    for name in ("web1", "web2"):
        network.hosts[name].start(commands["web"], env, logs / f"{name}.log")
    for name in ("worker1", "worker2"):
        host = network.hosts[name]
        argv = [*commands["worker"], "-n", f"{name}@%h"]
        host.start(argv, env, logs / f"{name}.log")
    _start_beat(network, env, logs)


def _start_beat(network: Network, env: dict, logs: Path) -> None:
    network.hosts["beat"].start(
        beat_command(schedule=logs / "celerybeat-schedule"), env, logs / "beat.log"
    )


def _ledger(postgres: Postgres) -> dict:
    with psycopg.connect(postgres.url, connect_timeout=3) as connection:
        states = dict(
            connection.execute(
                "SELECT state, count(*) FROM conversations_webhookevent GROUP BY state"
            ).fetchall()
        )
        messages, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT wamid) FROM conversations_message"
            " WHERE direction = 'inbound'"
        ).fetchone()
        request_ids = connection.execute(
            "SELECT count(*) FROM conversations_webhookevent"
            " WHERE headers ? 'x-request-id'"
        ).fetchone()[0]
    return {
        "states": states,
        "messages": messages,
        "distinct": distinct,
        "with_request_id": request_ids,
    }


def _scrape(url: str) -> dict:
    """{(name, labels): value} of /metrics through nginx."""
    response = requests.get(
        f"{url}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=15,
    )
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


def _pending(samples: dict) -> float:
    return sum(
        value
        for (name, _), value in samples.items()
        if name == "helpdesk_webhook_events_pending"
    )


class Scraper(threading.Thread):
    """Scrapes /metrics through nginx every second, as Prometheus would."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.pending: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.pending.append(_pending(_scrape(self.url)))
            except requests.RequestException:
                self.failures += 1


def _readyz(url: str) -> int:
    try:
        return requests.get(f"{url}/readyz", timeout=15).status_code
    except requests.RequestException:
        return 0


def _chaos(network, postgres, env, logs, nginx, figures, started):
    """The faults, on a timeline from the start of the load."""

    def at(second: float) -> None:
        time.sleep(max(0.0, started + second - time.monotonic()))

    at(5)
    network.hosts["web1"].kill()
    figures["web1_killed_at"] = time.monotonic() - started
    at(9)
    network.hosts["worker1"].kill()
    figures["worker1_killed_at"] = time.monotonic() - started
    at(12)
    network.hosts["beat"].kill(signal.SIGTERM)
    at(15)
    postgres.stop()
    down = time.monotonic()
    figures["readyz_while_postgres_down"] = _readyz(nginx.url)
    at(18)
    postgres.start()
    figures["postgres_down_seconds"] = round(time.monotonic() - down, 1)
    at(12 + BEAT_STOPPED)
    _start_beat(network, env, logs)


@pytest.fixture
def tmp_path():
    """A directory PostgreSQL's and nginx's own users may enter (pytest's
    are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="helpdesk-multihost-"))
    directory.chmod(0o755)
    yield directory
    # The logs stay for a failure's post-mortem; the database goes.
    shutil.rmtree(directory / "postgres", ignore_errors=True)


def test_killing_hosts_under_load_loses_nothing_and_duplicates_nothing(tmp_path):
    missing = missing_tools()
    assert not missing, f"The multi-host test cannot run without: {missing}"
    logs = tmp_path / "logs"
    logs.mkdir()
    postgres, redis = Postgres(tmp_path / "postgres"), Redis(logs)
    network = Network(HOSTS)
    addresses = [network.hosts[n].address for n in ("web1", "web2")]
    nginx = Nginx(tmp_path, addresses)
    secret = secrets.token_hex(16)
    number = {
        "phone_number_id": PHONE_NUMBER_ID,
        "display_phone_number": "+15550100001",
        "waba_id": WABA_ID,
        "access_token": ACCESS_TOKEN,
        "app_secret": secret,
    }
    sandbox = Sandbox(logs, number, f"{nginx.url}/webhooks/whatsapp/")
    with network:
        try:
            postgres.create()
            redis.start()
            env = _environment(postgres, redis)
            _seed(env, secret)
            sandbox.start()
            _start(network, env, logs)
            for address in addresses:
                wait_for(
                    lambda a=address: (
                        requests.get(f"http://{a}:{WEB_PORT}/healthz", timeout=2).ok
                    ),
                    60,
                    f"the web host at {address}",
                )
            nginx.start()
            wait_for(lambda: _readyz(nginx.url) == 200, 60, "/readyz through nginx")
            tabs = [
                Tab(nginx.url, *log_in(nginx.url, f"agent{i}", AGENT_PASSWORD))
                for i in range(AGENTS)
            ]
            with Agents(tabs):
                figures = _run_load(network, postgres, env, logs, nginx, secret)
                figures["agents"] = _caught_up(postgres, tabs)
            figures["outbound"] = _send_through_a_dying_worker(
                network, postgres, env, logs, sandbox, nginx
            )
        finally:
            sandbox.stop()
            nginx.stop()
            redis.stop()
            postgres.destroy()
    print("\nMulti-host figures:", json.dumps(figures, indent=2, sort_keys=True))
    _check(figures)


def _run_load(network, postgres, env, logs, nginx, secret) -> dict:
    client = MetaClient(f"{nginx.url}/webhooks/whatsapp/", secret)
    figures: dict = {}
    started = time.monotonic()
    chaos = threading.Thread(
        target=_chaos,
        args=(network, postgres, env, logs, nginx, figures, started),
        daemon=True,
    )
    chaos.start()
    scraper = Scraper(nginx.url)
    scraper.start()
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []
        for index in range(EVENTS):
            time.sleep(max(0.0, started + index / RATE - time.monotonic()))
            wamid = f"wamid.MULTIHOST{index:06d}"
            futures.append(pool.submit(client.deliver, wamid, f"4917{index:08d}"))
        delivered = sum(future.result() for future in futures)
    figures["load_seconds"] = round(time.monotonic() - started, 1)
    chaos.join(timeout=120)
    drain_started = time.monotonic()
    ledger = wait_for(
        lambda: (
            (ledger := _ledger(postgres))["distinct"] >= EVENTS
            and set(ledger["states"]) == {"processed"}
            and ledger
        ),
        180,
        "every event processed",
        interval=1.0,
    )
    scraper.stop.set()
    scraper.join(timeout=30)
    final = _scrape(nginx.url)
    figures["metrics"] = {
        "scrapes": len(scraper.pending),
        "failed_scrapes": scraper.failures,
        "pending_max": max(scraper.pending, default=0.0),
        "pending_after_drain": _pending(final),
        "webhook_posts_200": final.get(
            (
                "helpdesk_webhook_requests_total",
                (("method", "POST"), ("status", "200")),
            ),
            0.0,
        ),
        "processed": final.get(
            ("helpdesk_webhook_events_finished_total", (("state", "processed"),)), 0.0
        ),
    }
    figures.update(
        events=EVENTS,
        delivered=delivered,
        client=dict(client.counts),
        answers={str(k): v for k, v in sorted(client.answers.items())},
        stored_events=sum(ledger["states"].values()),
        event_states=ledger["states"],
        messages=ledger["messages"],
        distinct_messages=ledger["distinct"],
        events_with_request_id=ledger["with_request_id"],
        drain_seconds_after_load=round(time.monotonic() - drain_started, 1),
    )
    return figures


def _send_through_a_dying_worker(network, postgres, env, logs, sandbox, nginx):
    """Replies to REPLIES customers while worker host 2, the only worker up,
    sends them: it is killed mid-send, worker host 1 comes back."""
    wa_ids = [f"4917{index:08d}" for index in range(REPLIES)]
    sandbox.open_windows(wa_ids)
    before = _scrape(nginx.url)
    queue_replies(env, wa_ids)
    wait_until_started(sandbox, 1)
    network.hosts["worker2"].kill()
    killed_after = len(sandbox.sends())
    worker = production_commands(cores=1, proxy=GATEWAY)[1].argv
    network.hosts["worker1"].start([*worker, "-n", "worker1b@%h"], env, logs / "w1.log")
    statuses = wait_for(
        lambda: settled(postgres, REPLIES), 180, "every reply sent or unknown", 1.0
    )
    sends = sandbox.sends()
    per_message = accepted_per_message(sends)

    def sent_by(after: dict, outcome: str) -> float:
        return sum(
            value - before.get(key, 0.0)
            for key, value in after.items()
            if key[0] == "helpdesk_messages_sent_total"
            and dict(key[1])["outcome"] == outcome
        )

    def counted() -> dict | None:
        after = _scrape(nginx.url)
        done = sent_by(after, "sent") + sent_by(after, "unknown")
        return after if done >= REPLIES else None

    # A run adds its counts to Redis just after its write-back.
    try:
        after = wait_for(counted, 20, "the sends counted", 0.5)
    except AssertionError:
        after = _scrape(nginx.url)

    return {
        "replies": REPLIES,
        "requests_when_killed": killed_after,
        "statuses": dict(statuses),
        "requests_at_meta": len(sends),
        "accepted_at_meta": sum(per_message.values()),
        "messages_accepted_twice": sum(1 for n in per_message.values() if n > 1),
        "sent_total_sent": sent_by(after, "sent"),
        "sent_total_unknown": sent_by(after, "unknown"),
        "sent_total_by_outcome": {
            outcome: sent_by(after, outcome)
            for outcome in ("sent", "unknown", "retry", "failed", "defer", "withdrawn")
        },
        "final_statuses": dict(outbound_statuses(postgres)),
    }


def _live_events(postgres: Postgres) -> list[tuple[int, int, int]]:
    """(id, inbox, sequence) of every live event."""
    with psycopg.connect(postgres.url, connect_timeout=3) as connection:
        return connection.execute(
            "SELECT id, number_id, sequence FROM conversations_liveevent"
        ).fetchall()


def _caught_up(postgres: Postgres, tabs: list[Tab]) -> dict:
    """Wait until every tab applied every live event after its page's
    positions, as connected tabs do (a lost channel message is a gap before
    the next event, which the tab asks for): none may be missing."""
    events = _live_events(postgres)
    expected = [
        {
            event_id
            for event_id, stream, sequence in events
            if sequence > tab.first_streams.get(stream, sequence)
        }
        for tab in tabs
    ]

    def missing() -> dict:
        return {
            index: len(expected[index] - tab.applied) for index, tab in enumerate(tabs)
        }

    try:
        wait_for(lambda: not any(missing().values()), 60, "the tabs to catch up")
    except AssertionError:
        pass
    reconnects = [s for tab in tabs for s in tab.reconnect_seconds]
    return {
        "tabs": len(tabs),
        "live_events": len(events),
        "missed_by_tab": missing(),
        # Where each tab stands: its contiguous position, sequences held
        # above it, whether its socket is open.
        "tabs_state": [
            {
                "streams": tab.streams,
                "ahead": sum(len(held) for held in tab._ahead.values()),
                "connected": tab.socket is not None,
                "disconnects": tab.disconnects,
                "reloads": tab.reloads,
                "gap_requests": tab.gap_requests,
            }
            for tab in tabs
        ],
        "gap_requests": sum(tab.gap_requests for tab in tabs),
        # Events of inboxes the tab's agent may not see.
        "unexpected_ids": sum(
            len(
                tab.applied
                - {
                    event_id
                    for event_id, stream, _ in events
                    if stream in tab.first_streams
                }
            )
            for tab in tabs
        ),
        "duplicate_frames": sum(
            count - 1 for tab in tabs for count in tab.frames.values()
        ),
        "disconnects": sum(tab.disconnects for tab in tabs),
        "reconnects": len(reconnects),
        "reloads": sum(tab.reloads for tab in tabs),
        "reconnect_seconds_max": round(max(reconnects, default=0.0), 2),
        "reconnect_seconds_median": round(
            sorted(reconnects)[len(reconnects) // 2] if reconnects else 0.0, 2
        ),
    }


def _check(figures: dict) -> None:
    assert figures["delivered"] == EVENTS, figures
    assert figures["client"].get("given_up", 0) == 0, figures
    # Every event Meta was told was received is a message, and only once.
    assert figures["distinct_messages"] == EVENTS, figures
    assert figures["messages"] == EVENTS, figures
    # Stored more than once only when an answer was lost; never processed
    # twice: all stored events processed, one message each.
    assert figures["stored_events"] >= EVENTS, figures
    assert figures["event_states"] == {"processed": figures["stored_events"]}
    # The database down: Meta was told 503 and retried.
    assert figures["answers"].get("503", 0) > 0, figures
    assert figures["readyz_while_postgres_down"] == 503, figures
    assert figures["events_with_request_id"] == figures["stored_events"], figures
    outbound = figures["outbound"]
    # Nothing lost (every reply sent or unknown), nothing sent twice; every
    # reply Meta never got a request for is not `unknown`.
    assert sum(outbound["statuses"].values()) == REPLIES, outbound
    assert outbound["messages_accepted_twice"] == 0, outbound
    unknown = outbound["statuses"].get("unknown", 0)
    # Killed mid-send: what was in flight is `unknown`, never resent.
    assert unknown > 0, outbound
    assert outbound["accepted_at_meta"] >= REPLIES - unknown, outbound
    # Every send Meta accepted is counted `sent` once, whether its worker
    # wrote it back or died first and Meta's status webhook told: never more.
    # The count follows the commit, so a worker killed between its commit and
    # its count loses that count: fewer only by sends in flight at the kill.
    assert outbound["sent_total_sent"] <= outbound["accepted_at_meta"], outbound
    assert (
        outbound["sent_total_sent"]
        >= outbound["accepted_at_meta"] - outbound["requests_when_killed"]
    ), outbound

    metrics = figures["metrics"]
    # The pending gauge rose under load and fell back to zero; the processed
    # counter is the ledger's.
    assert metrics["pending_max"] > 0, metrics
    assert metrics["pending_after_drain"] == 0, metrics
    assert metrics["processed"] == figures["stored_events"], metrics
    agents = figures["agents"]
    # Tabs on the killed web host reconnected through nginx and caught up
    # from the database, without a reload, and no tab got an event it
    # should not. Connected tabs fetched the events whose channel message
    # was lost (a worker killed between commit and publish, a web process'
    # load failing while PostgreSQL restarted) as gaps: none is missing.
    assert not any(agents["missed_by_tab"].values()), agents
    assert agents["disconnects"] > 0, agents
    assert agents["reconnects"] == agents["disconnects"], agents
    assert agents["unexpected_ids"] == 0, agents
    assert agents["reloads"] == 0, agents
