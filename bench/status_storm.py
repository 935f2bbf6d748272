"""Benchmark: a campaign's status storm, and customers' messages during it.

    .venv/bin/python bench/status_storm.py [--no-baseline] [--worker-concurrency 4]
        [--server daphne|uvicorn]

The shape of the processing-engine issue, run by the production processes
(one daphne process, or with `--server uvicorn` production's web command,
one uvicorn process per core; one plain `celery -A helpdesk worker` at nice 19 as
docs/operations.md advises when web and workers share cores, DEBUG off):

1. 1,000 new customers each write a first message (signed webhooks over 50
   keep-alive connections): acknowledgements/s, and first messages stored/s
   (first acknowledgement to the last of them processed);
2. 2,000 replies to them stand sent (rows as the delivery engine leaves them,
   so this measures webhook processing, not sending);
3. Meta's sent, delivered and read for each (6,000 status webhooks, one
   status each, 50 connections), while a trickle of customers' messages
   (10/s) arrives on its own connection: status acknowledgements/s and p50 /
   p99, statuses applied/s (first status acknowledgement to the last status
   event processed), the trickle's latency (acknowledgement to its message
   and live event committed, polled every 10 ms; and acknowledgement to its
   frame on an agent's workspace socket, `--agents`, logged in and synced as
   a browser tab is), the worker's CPU per event;
4. a standing backlog: sent, delivered and read for 2,000 more replies
   stored at once and rung as the endpoint rings (no load, no endpoint):
   the worker's own statuses applied/s and CPU per event, which step 3
   cannot show once processing keeps pace with the acknowledgements.

While steps 1-3 run, `/metrics` is scraped every half second (with
METRICS_TOKEN, bench/metrics_scrape.py): the pending-events gauge's course
is printed, and the counters' growth beside the benchmark's own counts
(webhook POSTs answered 200, events processed, messages sent by outcome:
none here, the replies are stored as sent).

Every run checks 0 lost (every event processed), 0 duplicated (one message
per wamid, one customer per sender) and every reply read. The same shape runs
twice: with sets (the default) and, as the baseline, with WEBHOOK_SETS=0 (each
event on its own, as before), each on a fresh database; the ratios are
printed. Last, the statements one batch of 200 costs are counted in process.
The load generator (aiohttp) shares the cores with everything else; the
machine's load average is printed before and after each run.

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/helpdesk_bench_storm)
is dropped and created; REDIS_URL (default redis://127.0.0.1:6379/9) flushed.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import metrics_scrape  # noqa: E402
from bench.cpu import tree_seconds  # noqa: E402
from bench.database import recreate_database  # noqa: E402
from bench.socket_agents import add_agent, open_agent  # noqa: E402
from bench.webhook_ack import (  # noqa: E402
    APP_SECRET,
    PHONE_NUMBER_ID,
    WABA_ID,
    Group,
    machine,
    prepare,
)
from helpdesk.launcher import free_port, wait_for_port  # noqa: E402
from helpdesk.processes import (  # noqa: E402
    daphne_command,
    in_this_python,
    web_command,
    worker_command,
)

PATH = "/webhooks/whatsapp/"
METRICS_TOKEN = "bench-metrics-token"  # noqa: S105
AGENT_PASSWORD = "bench-agent-password"  # noqa: S105
# After the last trickle message is committed, how long the agent's socket
# is still listened to for its frame.
SOCKET_GRACE_SECONDS = 10


def percentile(values: list[float], share: float) -> float | None:
    """The value below which `share` of the sorted values fall (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def signed(document: dict) -> tuple[bytes, str]:
    body = json.dumps(document, separators=(",", ":")).encode()
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, f"sha256={digest}"


def envelope(value: dict) -> dict:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": "15550100077",
            "phone_number_id": PHONE_NUMBER_ID,
        },
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    }


def message_body(wa_id: str, wamid: str, text: str) -> tuple[bytes, str]:
    return signed(
        envelope(
            {
                "contacts": [{"profile": {"name": f"Kunde {wa_id}"}, "wa_id": wa_id}],
                "messages": [
                    {
                        "from": wa_id,
                        "id": wamid,
                        "timestamp": str(int(time.time())),
                        "type": "text",
                        "text": {"body": text},
                    }
                ],
            }
        )
    )


def status_body(wamid: str, wa_id: str, status: str, at: int) -> tuple[bytes, str]:
    raw = {
        "id": wamid,
        "status": status,
        "timestamp": str(at),
        "recipient_id": wa_id,
    }
    if status == "sent":
        raw["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "category": "service",
            "type": "free_customer_service",
        }
    return signed(envelope({"statuses": [raw]}))


def wa_id_of(index: int) -> str:
    return f"49170{index:07d}"


# --- Load --------------------------------------------------------------------------


async def post_all(url: str, bodies: list, connections: int) -> dict:
    """POST every body over `connections` keep-alive connections; latencies."""
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    connector = aiohttp.TCPConnector(limit=connections)

    async with aiohttp.ClientSession(connector=connector) as session:

        async def client():
            nonlocal failures
            while not queue.empty():
                body, signature = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(
                    url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature,
                    },
                ) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "failures": failures,
        "acks_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


async def trickle(
    url: str, rate: float, customers: int, stop: asyncio.Event, acked: dict
) -> None:
    """Customers' messages at `rate`/s on their own connection until stopped;
    `acked` keeps when each was answered 200."""
    index = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            wamid = f"wamid.trickle{index}"
            # The text socket_agents.py looks for in a frame.
            text = f"bench-{index}-x: any news?"
            body, signature = message_body(wa_id_of(index % customers), wamid, text)
            async with session.post(
                url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": signature,
                },
            ) as response:
                await response.read()
                if response.status == 200:
                    # Monotonic for the commit; the wall clock for the
                    # agent's socket, timed in a process of its own.
                    acked[wamid] = (time.monotonic(), time.time() * 1000)
            index += 1
            await asyncio.sleep(1 / rate)


def watch_trickle(db_url: str, acked: dict, seen: dict, done: threading.Event):
    """Poll every 10 ms for the trickle's messages committed with their event,
    until `done` is set and every one was seen (or 30 s more have passed)."""
    deadline = None
    with psycopg.connect(db_url, autocommit=True) as conn:
        while not done.is_set() or len(seen) < len(acked):
            waiting = [wamid for wamid in list(acked) if wamid not in seen]
            if waiting:
                rows = conn.execute(
                    "SELECT m.wamid FROM conversations_message m"
                    " JOIN conversations_liveevent e ON e.type = 'message.created'"
                    " AND (e.data->>'message')::bigint = m.id"
                    " WHERE m.wamid = ANY(%s)",
                    [waiting],
                ).fetchall()
                now = time.monotonic()
                for (wamid,) in rows:
                    seen[wamid] = now
            if done.is_set():
                deadline = deadline or time.monotonic() + 30
                if time.monotonic() > deadline:
                    return
            time.sleep(0.01)


# --- One run -------------------------------------------------------------------------


def wait_until(db_url: str, sql: str, target: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(sql).fetchone()[0] >= target:
                return True
            time.sleep(0.2)
    return False


def add_replies(
    db_url: str, replies: int, customers: int, prefix: str = "reply"
) -> list[tuple[str, str]]:
    """Replies as the delivery engine leaves them: sent, with Meta's wamid."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conversations = conn.execute(
            "SELECT c.id, cu.wa_id FROM conversations_conversation c"
            " JOIN conversations_customer cu ON cu.id = c.customer_id ORDER BY c.id"
        ).fetchall()
        assert len(conversations) == customers, conversations[:3]
        rows = []
        for index in range(replies):
            conversation_id, wa_id = conversations[index % customers]
            rows.append((conversation_id, f"wamid.{prefix}{index}", wa_id))
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO conversations_message (conversation_id, direction, type,"
                " text, payload, wamid, status, timestamp, forwarded,"
                " frequently_forwarded, context_wamid, media_id, media_mime_type,"
                " media_filename, media_sha256, media_file, media_state, attempts,"
                " from_business_app, edit_history, created_at, updated_at)"
                " VALUES (%s, 'outbound', 'text', 'On its way',"
                " '{}', %s, 'sent', now(), false, false, '', '', '', '', '', '', '',"
                " 1, false, '[]', now(), now())",
                [(conversation_id, wamid) for conversation_id, wamid, _ in rows],
            )
    return [(wamid, wa_id) for _, wamid, wa_id in rows]


def storm_bodies(replies: list[tuple[str, str]]) -> list:
    """sent, delivered, read for every reply, in waves of 200 replies."""
    at = int(time.time())
    bodies = []
    for start in range(0, len(replies), 200):
        wave = replies[start : start + 200]
        for offset, status in enumerate(("sent", "delivered", "read")):
            bodies += [
                status_body(wamid, wa_id, status, at + offset) for wamid, wa_id in wave
            ]
    return bodies


def web_server_command(server: str, port: int) -> list[str]:
    """daphne, one process (the contract's command), or production's web
    command: uvicorn with one process per core (helpdesk/processes.py)."""
    if server == "daphne":
        return daphne_command(host="127.0.0.1", port=port, verbosity=0)
    return web_command(
        host="127.0.0.1", port=port, workers=os.cpu_count(), log_level="warning"
    )


def trickle_figures(acked: dict, committed: dict, tab) -> dict:
    """The trickle's latencies from its acknowledgement: to the message and
    its live event committed, and to its frame on the agent's socket."""
    figures = {"messages": len(acked), "seen": len(committed)}
    latencies = [1000 * (committed[w] - acked[w][0]) for w in committed]
    figures["p50_ms"] = percentile(latencies, 0.5)
    figures["p99_ms"] = percentile(latencies, 0.99)
    if tab is None:
        return figures
    process, out = tab
    time.sleep(SOCKET_GRACE_SECONDS)
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    frames = json.loads(out.read_text())["storm-agent"]
    latencies = [
        frames[w.removeprefix("wamid.trickle")] - acked[w][1]
        for w in acked
        if w.removeprefix("wamid.trickle") in frames
    ]
    figures["on_socket"] = len(latencies)
    figures["socket_p50_ms"] = percentile(latencies, 0.5)
    figures["socket_p99_ms"] = percentile(latencies, 0.99)
    figures["socket_max_ms"] = max(latencies, default=None)
    return figures


def run_shape(mode: str, args, env: dict, workdir: Path) -> dict:
    db_url = env["DATABASE_URL"]
    recreate_database(db_url)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    prepare(env)
    if args.agent:
        add_agent(env, "storm-agent", AGENT_PASSWORD)
    result = {"mode": mode, "load_before": load()}
    group = Group()
    tab = None
    try:
        port = free_port()
        group.start(
            in_this_python(web_server_command(args.server, port)),
            {**env, "HELPDESK_PROCESS": "asgi"},
            workdir / f"{mode}-{args.server}.log",
        )
        worker = group.start(
            [
                "nice",
                "-n",
                "19",
                *in_this_python(
                    worker_command(
                        queues=None,
                        concurrency=args.worker_concurrency,
                        alone=True,
                        log_level="WARNING",
                    )
                ),
            ],
            {**env, "WEBHOOK_SETS": "1" if mode == "sets" else "0"},
            workdir / f"{mode}-worker.log",
        )
        wait_for_port(port, 60, group.processes[0])
        url = f"http://127.0.0.1:{port}{PATH}"
        # Warm-up: one message through the whole path (the worker is up).
        asyncio.run(post_all(url, [message_body("1555000", "wamid.warm", "hi")], 1))
        warm = "SELECT count(*) FROM conversations_message WHERE wamid = 'wamid.warm'"
        if not wait_until(db_url, warm, 1, 120):
            raise SystemExit(f"the worker did not process; see {workdir}")
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE conversations_customer, conversations_webhookevent CASCADE"
            )
        scraper = metrics_scrape.Scraper(
            f"http://127.0.0.1:{port}/metrics", METRICS_TOKEN, args.scrape_interval
        )
        # The endpoint moves its counts to Redis once a second: the warm-up's
        # must be in before the first figures.
        time.sleep(1.2)
        metrics_before = scraper.scrape()
        scraper.start()

        first = [
            message_body(wa_id_of(i), f"wamid.first{i}", f"Hello, order {i}?")
            for i in range(args.customers)
        ]
        result["first"] = asyncio.run(post_all(url, first, args.connections))
        stored = (
            "SELECT count(*) FROM conversations_message WHERE direction = 'inbound'"
        )
        wait_until(db_url, stored, args.customers, args.timeout)
        with psycopg.connect(db_url, autocommit=True) as conn:
            began, ended = conn.execute(
                "SELECT min(received_at), max(processed_at)"
                " FROM conversations_webhookevent"
            ).fetchone()
        result["first_stored_per_s"] = args.customers / (ended - began).total_seconds()

        replies = add_replies(db_url, args.replies, args.customers)
        bodies = storm_bodies(replies)
        if args.agent:
            out = workdir / f"{mode}-agent.json"
            base = f"http://127.0.0.1:{port}"
            tab = open_agent(base, "storm-agent", AGENT_PASSWORD, out), out
        cpu_before = tree_seconds(worker.pid)
        acked: dict[str, float] = {}
        seen: dict[str, float] = {}
        done = threading.Event()
        watcher = threading.Thread(
            target=watch_trickle, args=(db_url, acked, seen, done), daemon=True
        )
        watcher.start()

        async def storm():
            stop = asyncio.Event()
            trickling = asyncio.create_task(
                trickle(url, args.trickle_rate, args.customers, stop, acked)
            )
            posted = await post_all(url, bodies, args.connections)
            with psycopg.connect(db_url, autocommit=True) as conn:
                # Whether processing kept pace with the acknowledgements.
                posted["backlog_at_end"] = conn.execute(
                    "SELECT count(*) FROM conversations_webhookevent"
                    " WHERE state = 'pending' AND lane = 2"
                ).fetchone()[0]
            stop.set()
            await trickling
            return posted

        result["storm"] = asyncio.run(storm())
        read = "SELECT count(*) FROM conversations_message WHERE status = 'read'"
        wait_until(db_url, read, args.replies, args.timeout)
        wait_until(
            db_url,
            "SELECT count(*) = 0 FROM conversations_webhookevent"
            " WHERE state IN ('pending', 'failed')",
            1,
            args.timeout,
        )
        result["worker_cpu_ms_per_event"] = (
            1000 * (tree_seconds(worker.pid) - cpu_before) / (len(bodies) + len(acked))
        )
        done.set()
        watcher.join(40)
        result["trickle"] = trickle_figures(acked, seen, tab)
        with psycopg.connect(db_url, autocommit=True) as conn:
            began, ended = conn.execute(
                "SELECT min(received_at), max(processed_at)"
                " FROM conversations_webhookevent WHERE lane = 2"
            ).fetchone()
            result["statuses_applied_per_s"] = len(bodies) / (
                (ended - began).total_seconds()
            )
            result["checks"] = check(conn, args)
        time.sleep(1.2)  # the endpoint's last counts reach Redis
        metrics_after = scraper.scrape()
        scraper.stop()
        result["metrics"] = metrics_scrape.compare(
            scraper,
            metrics_before,
            metrics_after,
            acknowledged=sum(
                part["requests"] - part["failures"]
                for part in (result["first"], result["storm"])
            )
            + len(acked),
            sent={},
        )
        result["standing"] = drain_standing_backlog(env, db_url, worker.pid, args)
    finally:
        if tab is not None and tab[0].poll() is None:
            tab[0].kill()
        group.stop()
    result["load_after"] = load()
    return result


RING = r"""
import json, sys
import django
django.setup()
from django.utils import timezone
from conversations import tasks
ids = json.loads(sys.stdin.read())
print(timezone.now().isoformat(), flush=True)
for batch in tasks.event_batches(ids):
    tasks.process_webhook_events.delay(batch)
"""


def drain_standing_backlog(env: dict, db_url: str, worker_pid: int, args) -> dict:
    """The worker's own rate: sent, delivered and read for 2,000 more replies
    stored at once (no load, no endpoint), then rung as the endpoint rings,
    100 ids a message; applied/s from the ring to the last one processed."""
    replies = add_replies(db_url, args.replies, args.customers, prefix="standing")
    bodies = storm_bodies(replies)
    with psycopg.connect(db_url, autocommit=True) as conn:
        app_id = conn.execute("SELECT id FROM conversations_metaapp").fetchone()[0]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO conversations_webhookevent (body, headers, app_id,"
                " signature_valid, state, received_at, attempts, last_error, lane)"
                " VALUES (%s, '{}', %s, true, 'pending', now(), 0, '', 2)"
                " RETURNING id",
                [(body, app_id) for body, _ in bodies],
                returning=True,
            )
            ids = []
            while True:
                ids.append(cursor.fetchone()[0])
                if not cursor.nextset():
                    break
    cpu_before = tree_seconds(worker_pid)
    rang = subprocess.run(
        [sys.executable, "-c", RING],
        input=json.dumps(ids),
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        check=True,
    )
    started = datetime.fromisoformat(rang.stdout.split()[0])
    done = wait_until(
        db_url,
        "SELECT count(*) FROM conversations_message"
        " WHERE wamid LIKE 'wamid.standing%%' AND status = 'read'",
        args.replies,
        args.timeout,
    )
    wait_until(
        db_url,
        "SELECT count(*) = 0 FROM conversations_webhookevent WHERE state = 'pending'",
        1,
        args.timeout,
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT max(processed_at) FROM conversations_webhookevent"
            " WHERE id = ANY(%s)",
            [ids],
        ).fetchone()[0]
    return {
        "statuses": len(ids),
        "all_read": done,
        "applied_per_s": len(ids) / (ended - started).total_seconds(),
        "worker_cpu_ms_per_event": 1000
        * (tree_seconds(worker_pid) - cpu_before)
        / len(ids),
    }


def check(conn, args) -> dict:
    events, processed = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE state = 'processed')"
        " FROM conversations_webhookevent"
    ).fetchone()
    messages, wamids = conn.execute(
        "SELECT count(*), count(DISTINCT wamid) FROM conversations_message"
    ).fetchone()
    customers = conn.execute("SELECT count(*) FROM conversations_customer").fetchone()[
        0
    ]
    read = conn.execute(
        "SELECT count(*) FROM conversations_message"
        " WHERE direction = 'outbound' AND status = 'read'"
    ).fetchone()[0]
    return {
        "lost": events - processed,
        "duplicated": messages - wamids + customers - args.customers,
        "replies_read": f"{read}/{args.replies}",
    }


def statements_per_batch(env: dict) -> dict:
    """Count the statements of one batch of 200 statuses and of 200 new
    customers' messages, in a process of its own on the last run's database."""
    script = r"""
import json, time
import django
django.setup()
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from conversations import services
from conversations.models import Message, WebhookEvent
from conversations.whatsapp.webhooks import lane_of
from bench.status_storm import message_body, status_body, wa_id_of
app_id = WebhookEvent.objects.values_list("app_id", flat=True).first()
counts = {}
for kind in ("statuses", "messages"):
    if kind == "statuses":
        wamids = list(Message.objects.filter(direction="outbound")
                      .values_list("wamid", flat=True)[:200])
        bodies = [status_body(w, "1", "played", int(time.time()))[0] for w in wamids]
    else:
        bodies = [message_body(wa_id_of(5000 + i), f"wamid.count{i}", "x")[0]
                  for i in range(200)]
    WebhookEvent.objects.bulk_create([
        WebhookEvent(body=b, app_id=app_id, received_at=timezone.now(), lane=lane_of(b))
        for b in bodies])
    with CaptureQueriesContext(connection) as queries:
        claimed = services.process_webhook_batch(limit=200)
    counts[kind] = {"events": len(claimed), "statements": len(queries)}
print(json.dumps(counts))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: list[dict]) -> None:
    print("\n| figure | " + " | ".join(r["mode"] for r in results) + " | ratio |")
    print("| --- |" + " --- |" * (len(results) + 1))
    rows = [
        ("first messages: acks/s", lambda r: r["first"]["acks_per_s"]),
        ("first messages stored/s", lambda r: r["first_stored_per_s"]),
        ("status acks/s", lambda r: r["storm"]["acks_per_s"]),
        ("status ack p50 ms", lambda r: r["storm"]["p50_ms"]),
        ("status ack p99 ms", lambda r: r["storm"]["p99_ms"]),
        ("statuses applied/s", lambda r: r["statuses_applied_per_s"]),
        (
            "statuses pending when the storm's posting ended",
            lambda r: r["storm"]["backlog_at_end"],
        ),
        ("trickle p50 ms (to the commit)", lambda r: r["trickle"]["p50_ms"]),
        ("trickle p99 ms (to the commit)", lambda r: r["trickle"]["p99_ms"]),
        (
            "trickle p50 ms (to the agent's socket)",
            lambda r: r["trickle"].get("socket_p50_ms"),
        ),
        (
            "trickle p99 ms (to the agent's socket)",
            lambda r: r["trickle"].get("socket_p99_ms"),
        ),
        ("worker CPU ms/event", lambda r: r["worker_cpu_ms_per_event"]),
        (
            "standing backlog: statuses applied/s",
            lambda r: r["standing"]["applied_per_s"],
        ),
        (
            "standing backlog: worker CPU ms/event",
            lambda r: r["standing"]["worker_cpu_ms_per_event"],
        ),
    ]
    for name, figure in rows:
        values = [figure(r) for r in results]
        ratio = ""
        if len(values) == 2 and values[0] and values[1]:
            ratio = f"{values[0] / values[1]:.2f}"
        cells = " | ".join("-" if v is None else f"{v:,.1f}" for v in values)
        print(f"| {name} | {cells} | {ratio} |")
    for r in results:
        print(
            f"{r['mode']}: checks {r['checks']}, standing backlog all read:"
            f" {r['standing']['all_read']}, trickle {r['trickle']['seen']}/"
            f"{r['trickle']['messages']} seen"
            f" ({r['trickle'].get('on_socket', '-')} on the agent's socket),"
            f" load average {r['load_before']} before, {r['load_after']} after"
        )
        print(f"{r['mode']}: /metrics during steps 1-3")
        print("\n".join(metrics_scrape.lines(r["metrics"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--replies", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--trickle-rate", type=float, default=10.0)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the one-by-one run (WEBHOOK_SETS=0)",
    )
    parser.add_argument(
        "--server",
        choices=["daphne", "uvicorn"],
        default="daphne",
        help="daphne, one process (default), or production's web command "
        "(uvicorn, one process per core)",
    )
    parser.add_argument(
        "--agent",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an agent's workspace socket open during the storm (the trickle "
        "measured to its frames); --no-agent: none, as runs before it",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=0.5,
        help="seconds between /metrics scrapes",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "helpdesk.settings",
        "DATABASE_URL": os.environ.get(
            "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/helpdesk_bench_storm"
        ),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "WHATSAPP_GRAPH_API_URL": "http://127.0.0.1:9",
        "METRICS_TOKEN": METRICS_TOKEN,
        # Plain HTTP on the loopback: the agent's login and /metrics.
        "SECURE_SSL_REDIRECT": "0",
    }
    print(f"status_storm benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for key, value in machine().items():
        print(f"  {key}: {value}")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    print(f"  uptime: {uptime.strip()}")
    print(f"  web server: {args.server}")
    modes = ["sets"] if args.no_baseline else ["sets", "one-by-one"]
    results = []
    with tempfile.TemporaryDirectory(prefix="status-storm-") as tmp:
        if args.agent:
            # The agent's pages link the hashed names collectstatic writes.
            env["STATIC_ROOT"] = str(Path(tmp) / "static")
            subprocess.run(
                [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
                check=True,
            )
        for mode in modes:
            print(f"running {mode}...", flush=True)
            results.append(run_shape(mode, args, env, Path(tmp)))
    report(results)
    counts = statements_per_batch(env)
    print(
        f"statements per batch of 200: statuses {counts['statuses']['statements']},"
        f" new customers' messages {counts['messages']['statements']}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": results, "statements": counts}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
