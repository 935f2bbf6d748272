"""Benchmark: replies through the REST API, as a bot or an integration sends them.

    .venv/bin/python bench/api_replies.py [--baseline-ref REF] \
        [--server uvicorn [--workers 2]]

One daphne process (the development server, as bench/status_storm.py runs
it; `--server uvicorn`: production's web command, --workers processes) and one
plain `celery -A helpdesk worker` at nice 19 (delivering the replies
meanwhile, to the sandbox answering after --latency-ms, Meta's ~100 ms
round trip), DEBUG off. --clients keep-alive connections each post text
replies, each with an API token of its own (agents of one team, so every
request checks what the team may see, and no client meets the per-user rate
limit, API_RATE_LIMIT, 100/s) to --conversations open conversations, for
--seconds after a 2 s warm-up. Printed: replies/s, p50 / p99 ms, non-201
answers, statements per reply (counted in a process of the same code around
one reply, BEGIN and COMMIT included), the server process' CPU per reply
(/proc, so robust to the machine's other load), the worker's CPU per
delivered reply, every reply delivered, the machine and its load average
before and after.

--baseline-ref REF runs the same shape first with the code of git revision REF
(exported with `git archive`; the database schema of this checkout) and
prints each figure's ratio.

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/helpdesk_bench_api)
is dropped and created; REDIS_URL (default redis://127.0.0.1:6379/10) flushed.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.cpu import tree_seconds  # noqa: E402
from bench.database import recreate_database  # noqa: E402
from bench.webhook_ack import machine  # noqa: E402
from helpdesk.launcher import free_port, wait_for_port  # noqa: E402
from helpdesk.processes import (  # noqa: E402
    daphne_command,
    in_this_python,
    web_command,
    worker_command,
)

PHONE_NUMBER_ID = "100000000000779"
WARM_UP = 2.0

# Run in a process of the code under test: the statements of one reply.
COUNT_STATEMENTS = """
import sys
import django
django.setup()
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
client = Client(
    HTTP_AUTHORIZATION="Token " + sys.argv[1],
    HTTP_HOST="127.0.0.1",
    HTTP_X_FORWARDED_PROTO="https",
)
url = "/api/v1/conversations/%s/messages/" % sys.argv[2]
body = {"type": "text", "text": "counted"}
client.post(url, body, content_type="application/json")
with CaptureQueriesContext(connection) as captured:
    response = client.post(url, body, content_type="application/json")
assert response.status_code == 201, response.content
print(len(captured))
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def export_tree(ref: str, into: Path) -> Path:
    """The files of git revision `ref`, in a directory of their own."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref], cwd=BASE_DIR, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def prepare(conversations: int, clients: int, sandbox) -> tuple[list, list]:
    """One number, a team, a token for each client's agent, open conversations."""
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from accounts.models import Team, User
    from conversations import services
    from conversations.models import Conversation, Customer

    number, _ = services.add_whatsapp_number(
        phone_number_id=PHONE_NUMBER_ID,
        display_phone_number="+15550100779",
        waba_id="200000000000779",
        access_token="bench-token",  # noqa: S106
        app_secret="bench-secret",  # noqa: S106
        verify_token="bench-verify",  # noqa: S106
        throughput=1000,
    )
    team = Team.objects.create(name="Integrations")
    number.teams.add(team)
    tokens = []
    for n in range(clients):
        agent = User.objects.create_user(username=f"integration{n}")
        agent.teams.add(team)
        tokens.append(Token.objects.create(user=agent).key)
    wa_ids = [f"49172{7000000 + n}" for n in range(conversations)]
    sandbox.control.open_window(*wa_ids)
    now = timezone.now()
    ids = [
        Conversation.objects.create(
            customer=Customer.objects.create(wa_id=wa_id, phone=f"+{wa_id}"),
            number=number,
            last_inbound_at=now,
        ).pk
        for wa_id in wa_ids
    ]
    return tokens, ids


async def post_replies(base: str, tokens: list, ids: list, seconds: float) -> dict:
    """`clients` connections posting replies; latencies after the warm-up."""
    latencies: list[float] = []
    failures: dict[int, int] = {}
    started = time.monotonic()
    measuring_from = started + WARM_UP
    stop_at = measuring_from + seconds
    clients = len(tokens)

    async def client(index: int) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        # As behind production's TLS-terminating proxy.
        headers = {
            "Authorization": f"Token {tokens[index]}",
            "X-Forwarded-Proto": "https",
        }
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            sent = 0
            while (now := time.monotonic()) < stop_at:
                pk = ids[(index + clients * sent) % len(ids)]
                sent += 1
                async with http.post(
                    f"{base}/api/v1/conversations/{pk}/messages/",
                    json={"type": "text", "text": f"Reply {index}.{sent}"},
                ) as response:
                    await response.read()
                if now < measuring_from:
                    continue
                if response.status == 201:
                    latencies.append(time.monotonic() - now)
                else:
                    failures[response.status] = failures.get(response.status, 0) + 1

    await asyncio.gather(*(client(n) for n in range(clients)))
    return {"latencies": latencies, "failures": failures}


def server_command(server: str, port: int, workers: int) -> list[str]:
    if server == "uvicorn":
        return web_command(host="127.0.0.1", port=port, workers=workers)
    return daphne_command(host="127.0.0.1", port=port)


def run_tree(label: str, tree: Path, env: dict, args, sandbox, workdir: Path) -> dict:
    import django.db

    from conversations.models import Message

    django.db.connections.close_all()
    recreate_database(env["DATABASE_URL"])
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    tree_env = {**env, "PYTHONPATH": str(tree)}
    python = [sys.executable]
    subprocess.run(
        [*python, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env=env,
        check=True,
    )
    tokens, ids = prepare(args.conversations, args.clients, sandbox)
    result = {"label": label, "load_before": load_average()}
    processes = []
    logs = []
    try:
        port = free_port()
        for argv, log in (
            (
                in_this_python(server_command(args.server, port, args.workers)),
                args.server,
            ),
            (
                [
                    *("nice", "-n", "19"),
                    *in_this_python(
                        worker_command(queues=None, alone=True, log_level="WARNING")
                    ),
                ],
                "worker",
            ),
        ):
            logs.append((workdir / f"{label}-{log}.log").open("ab"))
            processes.append(
                subprocess.Popen(
                    argv,
                    cwd=tree,
                    env={**tree_env, "HELPDESK_PROCESS": "asgi"},
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        server, worker = processes
        wait_for_port(port, 60, server)
        counted = subprocess.run(
            [*python, "-c", COUNT_STATEMENTS, tokens[0], str(ids[0])],
            cwd=tree,
            env=tree_env,
            capture_output=True,
            text=True,
        )
        if counted.returncode:
            raise SystemExit(f"counting the statements failed:\n{counted.stderr}")
        result["statements"] = int(counted.stdout.split()[-1])
        server_before = tree_seconds(server.pid)
        worker_before = tree_seconds(worker.pid)
        load = asyncio.run(
            post_replies(f"http://127.0.0.1:{port}", tokens, ids, args.seconds)
        )
        # The warm-up's replies cost CPU too: counted with every 201.
        replies = Message.objects.filter(direction="outbound")
        total = replies.count()
        server_cpu = tree_seconds(server.pid) - server_before
        result["server_cpu_ms"] = 1000 * server_cpu / total
        deadline = time.monotonic() + args.timeout
        while replies.exclude(status="sent").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        worker_cpu = tree_seconds(worker.pid) - worker_before
        result["worker_cpu_ms"] = 1000 * worker_cpu / total
        result["delivered"] = f"{replies.filter(status='sent').count()} / {total}"
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            process.wait(30)
        for log in logs:
            log.close()
    latencies = load["latencies"]
    result.update(
        replies_per_s=len(latencies) / args.seconds,
        p50_ms=1000 * percentile(latencies, 0.50),
        p99_ms=1000 * percentile(latencies, 0.99),
        failures=load["failures"],
        load_after=load_average(),
    )
    return result


FIGURES = (
    ("replies/s", "replies_per_s", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.0f}"),
    ("p99 ms", "p99_ms", "{:.0f}"),
    ("statements per reply", "statements", "{}"),
    ("server CPU ms per reply", "server_cpu_ms", "{:.2f}"),
    ("worker CPU ms per delivered reply", "worker_cpu_ms", "{:.2f}"),
)


def report(results: list[dict]) -> None:
    for key, value in machine().items():
        print(f"{key}: {value}")
    print()
    header = ["figure", *(result["label"] for result in results)]
    if len(results) == 2:
        header.append("ratio")
    print(" | ".join(header))
    for name, key, form in FIGURES:
        row = [name, *(form.format(result[key]) for result in results)]
        if len(results) == 2 and results[0][key]:
            row.append(f"{results[1][key] / results[0][key]:.2f}")
        print(" | ".join(row))
    for key in ("failures", "delivered", "load_before", "load_after"):
        print(" | ".join([key, *(str(result[key]) for result in results)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-ref", help="git revision of the baseline")
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn's processes (production runs one per core)",
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "helpdesk.settings",
        "DATABASE_URL": os.environ.get(
            "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/helpdesk_bench_api"
        ),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/10"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Every conversation gets many replies in a row.
        "WHATSAPP_PAIR_BURST": "100000",
    }
    from sandbox.config import Number
    from sandbox.testing import running_sandbox

    with (
        running_sandbox(
            numbers=[
                Number(
                    phone_number_id=PHONE_NUMBER_ID,
                    display_phone_number="+15550100779",
                    waba_id="200000000000779",
                    access_token="bench-token",  # noqa: S106
                    app_secret="bench-secret",  # noqa: S106
                    throughput=1000,
                )
            ],
            status_delays={"sent": None, "delivered": None, "read": None},
            faults={"latency_ms": args.latency_ms},
            record_limit=100_000,
        ) as sandbox,
        tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
    ):
        env["WHATSAPP_GRAPH_API_URL"] = sandbox.base_url
        os.environ.update(env)
        import django

        django.setup()
        workdir = Path(tmp)
        trees = [("this checkout", BASE_DIR)]
        if args.baseline_ref:
            baseline = export_tree(args.baseline_ref, workdir / "baseline")
            trees.insert(0, (args.baseline_ref, baseline))
        results = [
            run_tree(label, tree, env, args, sandbox, workdir) for label, tree in trees
        ]
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
