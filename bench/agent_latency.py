"""Agent workspace benchmark: webhook ack → message in 20 agents' browsers,
and the inbox and conversation pages at 100,000 conversations / 1,000,000
messages.

    .venv/bin/python bench/agent_latency.py            # live and pages
    .venv/bin/python bench/agent_latency.py --part live --agents 20 --rate 50
    .venv/bin/python bench/agent_latency.py --part live --browsers 1
    .venv/bin/python bench/agent_latency.py --part floor
    .venv/bin/python bench/agent_latency.py --part pages

Needs PostgreSQL (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/helpdesk_bench, dropped and re-created)
and Redis (REDIS_URL, default redis://127.0.0.1:6379/7), plus Debian's
chromium. The live part starts the production server (uvicorn, or daphne
as `make run` does, --server) and a Celery worker, opens headless Chromium
pages logged in as agents on the inbox (--browsers of them; the other
agents are sockets without a browser, bench/socket_agents.py), posts signed
webhooks at the given rate and takes, per agent and message, the wall-clock
time the row with that text appeared (a MutationObserver in the page; the
frame's arrival for a socket) minus the time the webhook's 200 came back.
The floor part measures what the machine's Chromium costs without the
helpdesk: as many blank pages as agents, each changing one number at the
message rate. The pages part fills the database with generate_series and
times the two views in-process.
"""

import argparse
import hashlib
import hmac
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench import cpu  # noqa: E402

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/helpdesk_bench"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["REDIS_URL"] = REDIS_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
# The pages are timed in this process as production serves them: DEBUG off
# (no query log, no template debugging), over HTTPS; the live part's servers
# run the same way (see live_part).
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(40))
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
# Collected static files and the socket agents' results, removed at exit.
SCRATCH = tempfile.TemporaryDirectory(prefix="helpdesk-bench-")
os.environ.setdefault("STATIC_ROOT", str(Path(SCRATCH.name) / "static"))

PHONE_NUMBER_ID = "109900000000001"
WABA_ID = "209900000000001"
APP_SECRET = "bench-app-secret"  # noqa: S105
PASSWORD = "bench-password"  # noqa: S105
IDLE_SECONDS = 5


BLANK_PAGE = """<!doctype html><title>floor</title><p id="n">0</p><script>
window.changes = 0;
setInterval(function () {
  document.getElementById("n").textContent = ++window.changes;
}, %d);
</script>"""
FLOOR_SECONDS = 10


def floor_part(pages: int, rate: float) -> tuple[dict[str, float], float]:
    """What Chromium here costs to show `rate` changes a second in each of
    `pages` pages, with nothing else on them: the share of the machine that
    the live part's browsers need before the helpdesk does anything."""
    from playwright.sync_api import sync_playwright

    from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        opened = []
        for _ in range(pages):
            page = browser.new_context().new_page()
            page.set_content(BLANK_PAGE % round(1000 / rate))
            opened.append(page)
        opened[0].wait_for_timeout(2000)
        before, started = cpu.snapshot(), time.perf_counter()
        counts = [page.evaluate("window.changes") for page in opened]
        opened[0].wait_for_timeout(FLOOR_SECONDS * 1000)
        counts = [
            page.evaluate("window.changes") - count
            for page, count in zip(opened, counts, strict=True)
        ]
        used = cpu.share(before, cpu.snapshot(), time.perf_counter() - started)
        browser.close()
    browsers = {group: share for group, share in used.items() if "browsers" in group}
    return browsers, sum(counts) / len(counts) / FLOOR_SECONDS


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.node()}: {os.cpu_count()} cores {cpu}, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )


def recreate_database() -> None:
    from bench.database import recreate_database as recreate

    recreate(DATABASE_URL)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, check=True
    )


def set_up_agents(count: int):
    import django

    django.setup()
    from accounts.models import Team, User
    from conversations.models import MetaApp, WhatsAppNumber

    team = Team.objects.create(name="Bench team")
    app = MetaApp.objects.create(
        name="Bench app",
        app_id="309900000000001",
        app_secret=APP_SECRET,
        verify_token="bench",  # noqa: S106
    )
    number = WhatsAppNumber.objects.create(
        app=app,
        name="Bench line",
        phone_number_id=PHONE_NUMBER_ID,
        display_phone_number="+15550199001",
        waba_id=WABA_ID,
        access_token="bench-token",  # noqa: S106
    )
    number.teams.add(team)
    agents = []
    for index in range(count):
        agent = User.objects.create_user(
            f"bench{index}", password=PASSWORD, display_name=f"Agent {index}"
        )
        agent.teams.add(team)
        agents.append(agent)
    return number, agents


def webhook_body(seq: int, wa_id: str) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": "15550199001",
            "phone_number_id": PHONE_NUMBER_ID,
        },
        "contacts": [{"profile": {"name": f"Bench {wa_id[-4:]}"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": f"wamid.bench{seq:08d}{time.time_ns()}",
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": f"bench-{seq}-x"},
            }
        ],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


# The row's arrival in the DOM: only the nodes each mutation added are read,
# so the observer costs the page next to nothing per event.
OBSERVER = """
window.__seen = {};
new MutationObserver(function (mutations) {
  var now = Date.now();
  mutations.forEach(function (mutation) {
    mutation.addedNodes.forEach(function (node) {
      if (node.nodeType !== 1) return;
      var m = /bench-(\\d+)-x/.exec(node.textContent);
      if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = now;
    });
  });
}).observe(document.getElementById('inbox-list'), {childList: true, subtree: true});
"""
# The frame's arrival at the page, before the workspace's script applies it
# (a listener added before the script's own onmessage runs first).
FRAME_PROBE = """
window.__frames = {};
(function () {
  var Native = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    var socket = protocols ? new Native(url, protocols) : new Native(url);
    socket.addEventListener('message', function (event) {
      var m = /bench-(\\d+)-x/.exec(event.data);
      if (m && !(m[1] in window.__frames)) window.__frames[m[1]] = Date.now();
    });
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'].forEach(function (k) {
    window.WebSocket[k] = Native[k];
  });
})();
"""


def live_part(
    agents: int,
    rate: float,
    seconds: float,
    customers: int,
    trace: str | None,
    browsers: int,
    server: str,
    server_workers: int,
) -> dict:
    import redis
    import requests
    from playwright.sync_api import sync_playwright

    from helpdesk.launcher import free_port, wait_for_port
    from helpdesk.processes import (
        daphne_command,
        in_this_python,
        web_command,
        worker_command,
    )
    from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS

    recreate_database()
    set_up_agents(agents)
    # Tasks a previous run left queued would name events of the old database.
    redis.Redis.from_url(REDIS_URL).flushdb()
    port = free_port()
    # As deployed: DEBUG off, static files collected (whitenoise serves the
    # hashed names), no access log per request. Plain HTTP on the loopback
    # (Chromium keeps Secure cookies there), so no redirect to HTTPS.
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    env = {**os.environ, "LOG_LEVEL": "WARNING", "SECURE_SSL_REDIRECT": "0"}
    servers = {
        # Production's web command, on the loopback.
        "uvicorn": web_command(
            host="127.0.0.1", port=port, workers=server_workers, log_level="warning"
        ),
        # What `make run` starts.
        "daphne": daphne_command(host="127.0.0.1", port=port, verbosity=0),
    }
    processes = [
        subprocess.Popen(
            in_this_python(servers[server]),
            cwd=BASE_DIR,
            env={**env, "HELPDESK_PROCESS": "asgi"},
        ),
        subprocess.Popen(
            in_this_python(
                worker_command(
                    queues=None,
                    pool="threads",
                    concurrency=8,
                    alone=True,
                    log_level="WARNING",
                )
            ),
            cwd=BASE_DIR,
            env=env,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    acks: dict[int, float] = {}
    ack_latency: list[float] = []
    try:
        wait_for_port(port, 30, processes[0])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            pages = []
            for index in range(browsers):
                context = browser.new_context()
                context.add_init_script(FRAME_PROBE)
                page = context.new_page()
                page.goto(f"{base}/accounts/login/")
                page.fill("#id_username", f"bench{index}")
                page.fill("#id_password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}/")
                page.wait_for_selector("#live-status[data-state=live]")
                page.evaluate(OBSERVER)
                pages.append(page)
            if agents > browsers:
                sockets_out = Path(SCRATCH.name) / "socket-agents.json"
                socket_agents = subprocess.Popen(
                    [
                        sys.executable,
                        str(BASE_DIR / "bench" / "socket_agents.py"),
                        base,
                        PASSWORD,
                        str(sockets_out),
                        *(f"bench{index}" for index in range(browsers, agents)),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                processes.append(socket_agents)
                if socket_agents.stdout.readline().strip() != "ready":
                    raise RuntimeError("the socket agents did not connect")
            # The first page's renderer main thread, as Chrome counts it.
            devtools = pages[0].context.new_cdp_session(pages[0])
            devtools.send("Performance.enable")
            session = requests.Session()
            interval = 1.0 / rate
            total = int(rate * seconds)

            def post(seq):
                wa_id = f"49150{seq % customers:07d}"
                body = webhook_body(seq, wa_id)
                signature = (
                    "sha256="
                    + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
                )
                t0 = time.time()
                response = session.post(
                    f"{base}/webhooks/whatsapp/",
                    data=body,
                    timeout=10,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature,
                    },
                )
                acks[seq] = time.time() * 1000
                ack_latency.append((time.time() - t0) * 1000)
                response.raise_for_status()

            # The sender runs in a thread; Playwright's pages stay idle (their
            # observers run in the browser).
            def sender():
                for seq in range(total):
                    target = started + seq * interval
                    delay = target - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    post(seq)

            # What the idle pages cost (countdowns, the socket's keep-alive).
            idle_before = cpu.snapshot()
            pages[0].wait_for_timeout(IDLE_SECONDS * 1000)
            cpu_idle = cpu.share(idle_before, cpu.snapshot(), IDLE_SECONDS)
            load_before, load_started = cpu.snapshot(), time.perf_counter()
            renderer_before = renderer_metrics(devtools)
            if trace:
                # All of Chromium's processes, for DevTools' performance panel.
                browser.start_tracing(path=trace, categories=TRACE_CATEGORIES)
            thread = threading.Thread(target=sender)
            started = time.perf_counter()
            thread.start()
            while thread.is_alive():
                pages[0].wait_for_timeout(200)
            if trace:
                browser.stop_tracing()
            deadline = time.time() + 20
            seen = []
            frames = []
            for page in pages:
                while True:
                    got = page.evaluate("window.__seen")
                    if len(got) >= total or time.time() > deadline:
                        break
                    page.wait_for_timeout(200)
                seen.append(got)
                frames.append(page.evaluate("window.__frames"))
            socket_seen = []
            if agents > browsers:
                socket_agents.send_signal(signal.SIGTERM)
                socket_agents.wait(30)
                socket_seen = list(json.loads(sockets_out.read_text()).values())
            cpu_load = cpu.share(
                load_before, cpu.snapshot(), time.perf_counter() - load_started
            )
            renderer = {
                name: round(value - renderer_before.get(name, 0), 3)
                for name, value in renderer_metrics(devtools).items()
            }
            browser.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                # daphne may wait on 20 sockets' shutdown; the figures are in.
                process.kill()
                process.wait()

    def latencies_of(agents_seen: list[dict]) -> tuple[list[float], int]:
        latencies, missing = [], 0
        for got in agents_seen:
            for seq, ack in acks.items():
                if str(seq) in got:
                    latencies.append(got[str(seq)] - ack)
                else:
                    missing += 1
        return latencies, missing

    page_latencies, page_missing = latencies_of(seen)
    socket_latencies, socket_missing = latencies_of(socket_seen)
    latencies = page_latencies + socket_latencies
    stages = stage_breakdown(acks, seen, frames)
    if socket_latencies:
        stages["ack → row in browser pages"] = (
            percentile(page_latencies, 0.5),
            percentile(page_latencies, 0.99),
        )
        stages["ack → frame at browserless sockets"] = (
            percentile(socket_latencies, 0.5),
            percentile(socket_latencies, 0.99),
        )
    return {
        "stages": stages,
        "cpu_idle": cpu_idle,
        "cpu_load": cpu_load,
        "renderer": renderer,
        "agents": agents,
        "browsers": browsers,
        "rate": rate,
        "messages": len(acks),
        "samples": len(latencies),
        "missing": page_missing + socket_missing,
        "per_page": [len(got) for got in seen + socket_seen],
        "ack_p50": percentile(ack_latency, 0.5),
        "ack_p99": percentile(ack_latency, 0.99),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
    }


TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "toplevel",
    "blink",
    "cc",
    "viz",
    "gpu",
    "v8",
    "loading",
    "net",
]

RENDERER_METRICS = (
    "TaskDuration",
    "ScriptDuration",
    "RecalcStyleDuration",
    "LayoutDuration",
    "RecalcStyleCount",
    "LayoutCount",
    "Nodes",
)


def renderer_metrics(devtools) -> dict[str, float]:
    """Chrome's own counters of a page's main thread (durations in seconds)."""
    metrics = devtools.send("Performance.getMetrics")["metrics"]
    return {m["name"]: m["value"] for m in metrics if m["name"] in RENDERER_METRICS}


def stage_breakdown(
    acks: dict[int, float], seen: list[dict], frames: list[dict]
) -> dict:
    """Where the time goes, from the rows' own timestamps (one clock):
    ack → message row written (queue + task start + processing) → webhook
    event processed (commit) → first and last page showing it."""
    import re

    from conversations.models import Message, WebhookEvent

    written = {}
    for text, created in Message.objects.filter(text__startswith="bench-").values_list(
        "text", "created_at"
    ):
        written[int(text.split("-")[1])] = created.timestamp() * 1000
    processed = {}
    for body, at in WebhookEvent.objects.values_list("body", "processed_at"):
        match = re.search(rb'"body":"bench-(\d+)-x"', bytes(body))
        if match and at:
            processed[int(match.group(1))] = at.timestamp() * 1000
    stages: dict[str, list[float]] = {
        "ack → message row": [],
        "ack → event committed": [],
        "committed → first page": [],
        "committed → last page": [],
        "committed → frame at page (all pages)": [],
        "frame → row in DOM (all pages)": [],
    }
    for seq, ack in acks.items():
        shown = [got[str(seq)] for got in seen if str(seq) in got]
        if seq in written:
            stages["ack → message row"].append(written[seq] - ack)
        if seq in processed:
            stages["ack → event committed"].append(processed[seq] - ack)
            if shown:
                stages["committed → first page"].append(min(shown) - processed[seq])
                stages["committed → last page"].append(max(shown) - processed[seq])
            for got in frames:
                if str(seq) in got:
                    stages["committed → frame at page (all pages)"].append(
                        got[str(seq)] - processed[seq]
                    )
        for got_frame, got_row in zip(frames, seen, strict=True):
            if str(seq) in got_frame and str(seq) in got_row:
                stages["frame → row in DOM (all pages)"].append(
                    got_row[str(seq)] - got_frame[str(seq)]
                )
    return {
        name: (percentile(values, 0.5), percentile(values, 0.99))
        for name, values in stages.items()
        if values
    }


GENERATE_SQL = """
INSERT INTO conversations_customer
  (wa_id, user_id, phone, profile_name, name, username, country_code,
   created_at, updated_at)
SELECT '4916' || lpad(g::text, 8, '0'), '', '+4916' || lpad(g::text, 8, '0'),
       'Customer ' || g, '', '', '', now(), now()
FROM generate_series(1, %(conversations)s) g;

INSERT INTO conversations_conversation
  (customer_id, number_id, status, unread_count, referral_source_id,
   referral_ctwa_clid, group_id, created_at, updated_at)
SELECT c.id, %(number)s,
       (ARRAY['open','open','pending','resolved'])[1 + c.id %% 4],
       c.id %% 3, '', '', '', now(), now()
FROM conversations_customer c;

INSERT INTO conversations_message
  (conversation_id, direction, type, text, payload, wamid, status, timestamp,
   context_wamid, forwarded, frequently_forwarded, media_id, media_mime_type,
   media_filename, media_sha256, media_file, media_state, attempts,
   from_business_app, edit_history, created_at, updated_at)
SELECT cv.first + (g %% %(conversations)s),
       CASE WHEN g %% 3 = 0 THEN 'outbound' ELSE 'inbound' END, 'text',
       'Message number ' || g || ' about an order', '{}', 'wamid.gen' || g,
       CASE WHEN g %% 3 = 0 THEN 'read' ELSE 'received' END,
       now() - make_interval(secs => (%(messages)s - g) * 7),
       '', false, false, '', '', '', '', '', '', 0, false, '[]', now(), now()
FROM generate_series(1, %(messages)s) g,
     (SELECT min(id) AS first FROM conversations_conversation) cv;

UPDATE conversations_conversation c
SET last_message_id = m.id, last_message_at = m.timestamp,
    last_inbound_at = m.timestamp
FROM (SELECT DISTINCT ON (conversation_id) conversation_id, id, timestamp
      FROM conversations_message ORDER BY conversation_id, timestamp DESC, id DESC) m
WHERE m.conversation_id = c.id;
"""


def pages_part(conversations: int, messages: int, runs: int) -> dict:
    recreate_database()
    number, agents = set_up_agents(1)
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            GENERATE_SQL,
            {"conversations": conversations, "messages": messages, "number": number.pk},
        )
    connection.cursor().execute("VACUUM ANALYZE")
    generated = time.perf_counter() - started
    from conversations.models import Conversation

    busiest = (
        Conversation.objects.filter(status="open").order_by("-last_message_at").first()
    )
    from conversations.selectors.inbox import InboxCursor

    # "Load more conversations" 400 pages down the default inbox (open, by
    # last activity): a keyset page costs the same at any depth.
    deep = InboxCursor.of(
        Conversation.objects.filter(status="open").order_by("-last_message_at", "-id")[
            20_000
        ],
        "activity",
    )
    # As a deployment does: pages link the hashed names collectstatic writes.
    call_command("collectstatic", "--noinput", verbosity=0)
    # The process set up as the server's is (helpdesk/asgi.py freezes what
    # start-up loaded out of the garbage collector's way).
    import helpdesk.asgi  # noqa: F401

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(agents[0])
    results = {"generate_seconds": generated}
    for name, url in (
        ("inbox", "/"),
        ("inbox_search", "/?q=Customer%2099"),
        # One message of a million (the trigram index finds it)...
        ("inbox_search_rare_text", "/?q=number%20999999%20about"),
        # ...and a word in every message (the newest matches bound it).
        ("inbox_search_common_text", "/?q=order"),
        ("inbox_window_order", "/?order=window"),
        ("inbox_page_401", f"/inbox/more/?after={deep}"),
        ("conversation", f"/conversations/{busiest.pk}/"),
    ):
        # Not timed: the first request compiles templates and warms caches.
        first = client.get(url, secure=True)
        assert first.status_code == 200, (url, first.status_code)
        # Every page times a list with rows in it, not an empty answer.
        assert b'id="row-' in first.content, url
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            response = client.get(url, secure=True)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        results[name] = (statistics.median(times), percentile(times, 0.99))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=["live", "floor", "pages", "both"], default="both"
    )
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--trace", help="write a Chromium trace of the live load to this file"
    )
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument(
        "--server-workers", type=int, default=1, help="uvicorn's --workers"
    )
    parser.add_argument(
        "--browsers",
        type=int,
        help="agents with a Chromium page (default: all); the others are "
        "sockets without a browser (bench/socket_agents.py)",
    )
    args = parser.parse_args()
    if args.browsers is not None and not 1 <= args.browsers <= args.agents:
        parser.error("--browsers must be between 1 and --agents")
    print(machine(), flush=True)
    if args.part in ("live", "both"):
        live = live_part(
            args.agents,
            args.rate,
            args.seconds,
            args.customers,
            args.trace,
            args.agents if args.browsers is None else args.browsers,
            args.server,
            args.server_workers,
        )
        print(
            f"live: {live['agents']} agents ({live['browsers']} in Chromium pages), "
            f"{args.server}"
            + (f" --workers {args.server_workers}" if args.server == "uvicorn" else "")
            + ", "
            f"{live['rate']:.0f} msgs/s, "
            f"{live['messages']} messages, {live['samples']} samples, "
            f"{live['missing']} missing (rows per page: {live['per_page']})\n"
            f"  webhook ack p50 {live['ack_p50']:.1f} ms, "
            f"p99 {live['ack_p99']:.1f} ms\n"
            f"  ack → row in page p50 {live['p50']:.1f} ms, p99 {live['p99']:.1f} ms, "
            f"max {live['max']:.1f} ms (targets p50 < 50, p99 < 250)",
            flush=True,
        )
        for name, (p50, p99) in live["stages"].items():
            print(f"  {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
        print(
            "  first page's renderer during the load: "
            + ", ".join(f"{k} {v}" for k, v in live["renderer"].items()),
            flush=True,
        )
        for name in ("cpu_idle", "cpu_load"):
            shares = ", ".join(f"{g} {v:.0f}%" for g, v in live[name].items())
            print(f"  {name} (% of one core): {shares}", flush=True)
    if args.part == "floor":
        used, changes = floor_part(args.agents, args.rate)
        print(
            f"floor: {args.agents} blank Chromium pages, each changing one number "
            f"{args.rate:.0f} times a second (achieved {changes:.1f}/s per page):\n"
            f"  browsers use {sum(used.values()):.0f}% of one core of the machine's "
            f"{100 * os.cpu_count()}% ("
            + ", ".join(f"{group} {share:.0f}%" for group, share in used.items())
            + ")",
            flush=True,
        )
    if args.part in ("pages", "both"):
        pages = pages_part(args.conversations, args.messages, args.runs)
        print(
            f"pages: {args.conversations} conversations, {args.messages} messages "
            f"(generated in {pages.pop('generate_seconds'):.0f} s)",
            flush=True,
        )
        for name, (p50, p99) in pages.items():
            print(f"  {name}: median {p50:.1f} ms, p99 {p99:.1f} ms (target < 100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
