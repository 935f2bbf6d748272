"""Benchmark: webhook acknowledgements per second, and the workers' drain.

    .venv/bin/python bench/webhook_ack.py [--server uvicorn|daphne|both]

Sets up a fresh PostgreSQL database (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/helpdesk_bench_webhook) and uses the machine's
Redis (REDIS_URL, default redis://127.0.0.1:6379/9, flushed). For each server
it starts the production processes (the ASGI server with --processes
processes, and a Celery worker) and, the same way, the reference app
(bench/reference_app.py: a plain ASGI app that checks the same signature and
INSERTs the body with psycopg). wrk then posts signed webhooks, each a text
message from a new customer, for --duration seconds over --connections
keep-alive connections, after a 2 s warm-up. It prints the machine, acks/s,
p50/p99 latency, the ratio to the reference, and how fast the workers drained
the backlog, checking that every acknowledged message was processed once.

wrk (apt-get install wrk) shares the cores with the servers, the database,
Redis and the workers; on a 2-core machine it takes a noticeable share.
By default the Celery workers start when the load ends, so the acks compare
with the reference (which has no workers) and the drain rate is the workers'
own (at normal priority: nothing else of the helpdesk runs then, and a
niced worker on a machine shared with other work measures that work, not
the worker); --workers-during-load runs them throughout, at the lowest CPU
priority (nice 19) as docs/operations.md recommends when web and workers
share cores. Workers: prefork, -c 2 per server process (--worker-concurrency,
--worker-pool).
"""

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

from bench.database import recreate_database
from helpdesk.launcher import free_port, wait_for_port
from helpdesk.processes import (
    daphne_command,
    in_this_python,
    web_command,
    worker_command,
)

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PHONE_NUMBER_ID = "100000000000077"
WABA_ID = "200000000000077"
APP_SECRET = "bench-app-secret-" + "5" * 16
PATH = "/webhooks/whatsapp/"

WRK_SCRIPT = r"""
local bodies, sigs, n, i = {}, {}, 0, 0
local file = os.getenv("BENCH_BODIES")
for line in io.lines(file) do
  local sig, body = line:match("^(%S+) (.*)$")
  n = n + 1; sigs[n] = sig; bodies[n] = body
end
request = function()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = sigs[i]}, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d,'
    .. ' "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d,'
    .. ' "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""


def run(*args, env=None, **kwargs):
    return subprocess.run(args, cwd=BASE_DIR, env=env, check=True, **kwargs)


def version(*args) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine() -> dict:
    import daphne
    import django
    import uvicorn
    from celery import __version__ as celery_version

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "django": django.__version__,
        "uvicorn": uvicorn.__version__,
        "daphne": daphne.__version__,
        "celery": celery_version,
        "psycopg": psycopg.__version__,
        "redis-server": version("redis-server", "--version"),
        "wrk": version("wrk", "--version"),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- Setup -------------------------------------------------------------------


def prepare(env: dict) -> None:
    run(PYTHON, "manage.py", "migrate", "--noinput", "-v", "0", env=env)
    run(
        PYTHON,
        "manage.py",
        "add_whatsapp_number",
        "--phone-number-id",
        PHONE_NUMBER_ID,
        "--display-phone-number",
        "+15550100077",
        "--waba-id",
        WABA_ID,
        env={
            **env,
            "WHATSAPP_ACCESS_TOKEN": "bench-token",
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": "bench-verify",
        },
        stdout=subprocess.DEVNULL,
    )
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_reference (id bigserial PRIMARY KEY,"
            " body bytea NOT NULL, received_at timestamptz NOT NULL)"
        )


def write_bodies(path: Path, run_id: str, count: int) -> None:
    """count signed webhooks, each a text message from a customer never seen."""
    timestamp = str(int(time.time()))
    with path.open("w") as out:
        for index in range(count):
            wa_id = f"{run_id}{index:07d}"
            body = json.dumps(
                {
                    "object": "whatsapp_business_account",
                    "entry": [
                        {
                            "id": WABA_ID,
                            "changes": [
                                {
                                    "value": {
                                        "messaging_product": "whatsapp",
                                        "metadata": {
                                            "display_phone_number": "15550100077",
                                            "phone_number_id": PHONE_NUMBER_ID,
                                        },
                                        "contacts": [
                                            {
                                                "profile": {"name": f"Kunde {index}"},
                                                "wa_id": wa_id,
                                            }
                                        ],
                                        "messages": [
                                            {
                                                "from": wa_id,
                                                "id": f"wamid.bench{wa_id}",
                                                "timestamp": timestamp,
                                                "type": "text",
                                                "text": {
                                                    "body": "Hello, where is my "
                                                    f"order {index}? \u00e4\u00f6"
                                                },
                                            }
                                        ],
                                    },
                                    "field": "messages",
                                }
                            ],
                        }
                    ],
                },
                separators=(",", ":"),
            ).replace("/", "\\/")
            digest = hmac.new(
                APP_SECRET.encode(), body.encode(), hashlib.sha256
            ).hexdigest()
            out.write(f"sha256={digest} {body}\n")


# --- Processes ---------------------------------------------------------------


class Group:
    """Processes started together and stopped together."""

    def __init__(self):
        self.processes: list[subprocess.Popen] = []
        self.files: list = []

    def start(self, args, env, log: Path, **kwargs) -> subprocess.Popen:
        handle = log.open("ab")
        self.files.append(handle)
        process = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for handle in self.files:
            handle.close()


def start_server(
    group: Group, server: str, app: str, processes: int, env: dict, log: Path
) -> int:
    """Start `processes` server processes for app on one port; return it."""
    port = free_port()
    if server == "uvicorn":
        group.start(
            in_this_python(
                web_command(
                    app=app,
                    host="127.0.0.1",
                    port=port,
                    workers=processes,
                    log_level="warning",
                )
            ),
            env,
            log,
        )
    else:
        # Several daphne processes accept on one inherited listening socket,
        # as with systemd socket activation (docs/operations.md).
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        for _ in range(processes):
            group.start(
                in_this_python(daphne_command(fd=sock.fileno(), verbosity=0, app=app)),
                env,
                log,
                pass_fds=[sock.fileno()],
            )
        sock.close()
    # Ready when every process answers; a plain connect may reach only one.
    deadline = time.monotonic() + 60
    url = f"http://127.0.0.1:{port}{PATH}"
    wait_for_port(port, 60, group.processes[-1])
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            answered = subprocess.run(
                ["wrk", "-t1", "-c8", "-d1s", url], capture_output=True, text=True
            ).stdout
            if "Requests/sec" in answered:
                return port
        time.sleep(0.2)
    raise SystemExit(f"{server} did not come up; see {log}")


def wrk(url: str, bodies: Path, seconds: float, connections: int, script: Path):
    env = {**os.environ, "BENCH_BODIES": str(bodies)}
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    if not match:
        raise SystemExit(f"wrk said:\n{out}")
    result = json.loads(match.group(1))
    seconds_run = result["duration_us"] / 1e6
    errors = sum(result[key] for key in ("connect", "read", "write", "timeout"))
    acks = result["requests"] - result["non2xx"]
    return {
        "requests": result["requests"],
        "acks": acks,
        "non_2xx": result["non2xx"],
        "socket_errors": errors,
        "acks_per_s": acks / seconds_run,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
    }


def load(url, workdir: Path, label: str, args, script: Path) -> dict:
    """A 2 s warm-up, then the measured run, each with bodies of its own."""
    expected = int(args.duration * 6000) + 1000
    warm = workdir / f"{label}-warm.txt"
    measured = workdir / f"{label}-run.txt"
    # Digits of the customers' wa_ids: new customers in every run.
    prefix = "1" if label.startswith("ref") else "2"
    write_bodies(warm, prefix + "1", 15000)
    write_bodies(measured, prefix + "2", expected)
    wrk(url, warm, 2, args.connections, script)
    result = wrk(url, measured, args.duration, args.connections, script)
    result["bodies_repeated"] = result["requests"] > expected
    return result


def drain(db_url: str, loaded_at: float, timeout: float = 600) -> dict:
    """Wait until no stored event is left unprocessed; measure the rate."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        backlog = conn.execute(
            "SELECT count(*) FROM conversations_webhookevent WHERE state <> 'processed'"
        ).fetchone()[0]
        deadline = time.monotonic() + timeout
        while True:
            pending = conn.execute(
                "SELECT count(*) FROM conversations_webhookevent"
                " WHERE state IN ('pending', 'failed')"
            ).fetchone()[0]
            if pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        drained_after = time.monotonic() - loaded_at
        events, processed, first, first_done, last = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'processed'),"
            " min(received_at), min(processed_at), max(processed_at)"
            " FROM conversations_webhookevent"
        ).fetchone()
        messages, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT wamid) FROM conversations_message"
        ).fetchone()
        customers = conn.execute(
            "SELECT count(*) FROM conversations_customer"
        ).fetchone()[0]
        states = dict(
            conn.execute(
                "SELECT state, count(*) FROM conversations_webhookevent GROUP BY state"
            ).fetchall()
        )
    span = (last - first).total_seconds() if first and last else float("nan")
    # The workers' own rate: first to last event processed (with the workers
    # started after the load, the span above includes the load itself).
    busy = (last - first_done).total_seconds() if first_done and last else 0
    return {
        "backlog_at_end_of_load": backlog,
        "drained_s_after_load": drained_after,
        "events": events,
        "processed": processed,
        "states": states,
        "messages": messages,
        "distinct_wamids": distinct,
        "customers": customers,
        "processing_rate": processed / span if span else float("nan"),
        "workers_rate": processed / busy if busy else float("nan"),
        "exactly_once": events == processed == messages == distinct == customers,
    }


def bench_server(server: str, args, base_env: dict, workdir: Path, script: Path):
    """The helpdesk and the reference under one server kind."""
    db_url = base_env["DATABASE_URL"]
    recreate_database(db_url)
    redis.Redis.from_url(base_env["REDIS_URL"]).flushdb()
    prepare(base_env)
    results = {}

    # The reference: same server, same number of processes, no workers.
    ref_env = {
        **base_env,
        "BENCH_DATABASE_URL": db_url,
        "BENCH_APP_SECRET": APP_SECRET,
        "PYTHONPATH": str(BASE_DIR / "bench"),
    }
    group = Group()
    try:
        port = start_server(
            group,
            server,
            "reference_app:application",
            args.processes,
            ref_env,
            workdir / f"{server}-reference.log",
        )
        results["reference"] = load(
            f"http://127.0.0.1:{port}{PATH}", workdir, f"ref-{server}", args, script
        )
    finally:
        group.stop()

    group = Group()

    def start_worker():
        niced = ["nice", "-n", "19"] if args.workers_during_load else []
        group.start(
            [
                *niced,
                *in_this_python(
                    worker_command(
                        queues=["default"],
                        pool=args.worker_pool,
                        concurrency=args.worker_concurrency or 2 * args.processes,
                        alone=True,
                        log_level="WARNING",
                    )
                ),
            ],
            base_env,
            workdir / f"{server}-worker.log",
        )

    try:
        if args.workers_during_load:
            start_worker()
        port = start_server(
            group,
            server,
            "helpdesk.asgi:application",
            args.processes,
            base_env,
            workdir / f"{server}-helpdesk.log",
        )
        started = time.monotonic()
        results["helpdesk"] = load(
            f"http://127.0.0.1:{port}{PATH}", workdir, f"hd-{server}", args, script
        )
        loaded_at = time.monotonic()
        queue = redis.Redis.from_url(base_env["REDIS_URL"])
        results["celery_messages_at_end_of_load"] = queue.llen("default")
        row = results["helpdesk"]
        print(
            f"[{server}] helpdesk {row['acks_per_s']:.0f} acks/s, p99"
            f" {row['p99_ms']:.1f} ms; reference"
            f" {results['reference']['acks_per_s']:.0f} acks/s; draining...",
            flush=True,
        )
        if not args.workers_during_load:
            start_worker()
        results["drain"] = drain(db_url, loaded_at, args.drain_timeout)
        results["drain"]["load_s"] = loaded_at - started
    finally:
        group.stop()
    results["ratio"] = (
        results["helpdesk"]["acks_per_s"] / results["reference"]["acks_per_s"]
    )
    return results


def report(server: str, results: dict, args) -> None:
    hd, ref, dr = results["helpdesk"], results["reference"], results["drain"]
    print(f"\n== {server}, {args.processes} processes ==", flush=True)
    for name, row in (("reference", ref), ("helpdesk", hd)):
        print(
            f"{name:>10}: {row['acks_per_s']:8.0f} acks/s   p50 {row['p50_ms']:6.1f} ms"
            f"   p99 {row['p99_ms']:6.1f} ms   max {row['max_ms']:7.1f} ms"
            f"   ({row['acks']} acks, {row['non_2xx']} non-2xx,"
            f" {row['socket_errors']} socket errors"
            f"{', BODIES REPEATED' if row['bodies_repeated'] else ''})"
        )
    print(f"     ratio: {results['ratio']:.2f} of the reference")
    print(
        f"     drain: backlog {dr['backlog_at_end_of_load']} events at the end of the"
        f" load, all processed {dr['drained_s_after_load']:.1f} s later;"
        f" workers {dr['workers_rate']:.0f} events/s (first to last processed),"
        f" {dr['processing_rate']:.0f} events/s from first received to last"
        f" processed; {results['celery_messages_at_end_of_load']} Celery messages"
        " queued at the end of the load"
    )
    print(
        f"     check: {dr['events']} events stored (warm-up included),"
        f" {dr['processed']} processed, {dr['messages']} messages,"
        f" {dr['distinct_wamids']} distinct wamids, {dr['customers']} customers:"
        f" {'every message processed exactly once' if dr['exactly_once'] else 'MISMATCH ' + str(dr['states'])}"  # noqa: E501
    )
    targets = (
        hd["acks_per_s"] >= 1000
        and results["ratio"] >= 0.6
        and hd["p99_ms"] < 100
        and dr["exactly_once"]
        and hd["non_2xx"] == 0
    )
    print(f"   targets: {'met' if targets else 'NOT met'}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", choices=["uvicorn", "daphne", "both"], default="both"
    )
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--workers-during-load",
        action="store_true",
        help="run the Celery workers during the load (default: start them when it"
        " ends, so the acks compare with the reference and the drain is pure)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=900, help="seconds to wait for workers"
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=0,
        help="Celery worker -c (default: 2 per server process, as docs/operations.md"
        " recommends: processing waits on PostgreSQL half the time)",
    )
    parser.add_argument(
        "--worker-pool", choices=["prefork", "threads", "solo"], default="prefork"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "helpdesk.settings",
        "DATABASE_URL": os.environ.get(
            "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/helpdesk_bench_webhook"
        ),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        # The demo sandbox is not running; nothing is sent out in this bench.
        "WHATSAPP_GRAPH_API_URL": "http://127.0.0.1:9",
    }
    info = machine()
    print(f"webhook_ack benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for key, value in info.items():
        print(f"  {key}: {value}")
    print(
        f"  load: wrk -t1 -c{args.connections}, 2 s warm-up + {args.duration:g} s,"
        " signed new-customer text messages; wrk shares the cores"
    )
    servers = ["uvicorn", "daphne"] if args.server == "both" else [args.server]
    all_results = {"machine": info, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT)
        for server in servers:
            results = bench_server(server, args, env, workdir, script)
            all_results[server] = results
            report(server, results, args)
            print(
                "  load average after this server's run: "
                + " ".join(f"{x:.2f}" for x in os.getloadavg()),
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
