"""Notifications benchmark: one bulk API call, delivered and acknowledged end to end.

    createdb -h 127.0.0.1 -U postgres helpdesk_bench_notifications  # once
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/helpdesk_bench_notifications \
    REDIS_URL=redis://127.0.0.1:6379/13 \
    .venv/bin/python bench/notifications.py --recipients 10000 --throughput 80

Starts the sandbox (a Cloud API simulator answering after --latency-ms, as
Meta ~100 ms away) posting signed status webhooks (sent, delivered, read for
every message) to the helpdesk's real webhook endpoint under uvicorn; starts
--workers real `celery worker` processes that deliver through the number's
rate limiter and process the webhooks; migrates a fresh database, gives
every recipient a utility opt-in, then sends ONE `POST /api/v1/notifications/`
naming all recipients. Polls (no sleeps as synchronisation) until every
message is `read` and every stored webhook event is processed, then reports
accepted/s (the API call), delivered/s (sends Meta accepted, from the
answer to the last send), the backlog drain time (last send to the last
webhook processed), the highest sends in any wall-clock second at the
sandbox, and losses/duplicates, with the machine it ran on.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
# Plain HTTP on localhost with the development key, as before DEBUG
# defaulted to off.
os.environ.setdefault("DEBUG", "1")

from helpdesk.launcher import free_port  # noqa: E402
from helpdesk.processes import (  # noqa: E402
    in_this_python,
    web_command,
    worker_command,
)


def poll(condition, timeout: float, interval: float = 0.2):
    """condition()'s first truthy value, or None once timeout seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=10000)
    parser.add_argument("--throughput", type=int, default=80)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=3)
    parser.add_argument(
        "--webhook-batch-ms",
        type=float,
        default=200.0,
        help="the sandbox batches webhooks posted within this window into one "
        "body, as Meta does under load (0: one status per POST)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database for the benchmark")
    os.environ["NOTIFICATIONS_BULK_MAX"] = str(max(args.recipients, 10000))
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    from sandbox.config import Number
    from sandbox.testing import running_sandbox

    number_config = Number(
        phone_number_id="100000000000888",
        display_phone_number="+15550100888",
        waba_id="200000000000888",
        access_token="bench-token",  # noqa: S106
        app_secret="bench-secret",  # noqa: S106
        throughput=args.throughput,
    )
    http_port = free_port()
    with running_sandbox(
        webhook_url=f"http://127.0.0.1:{http_port}/webhooks/whatsapp/",
        numbers=[number_config],
        status_delays={"sent": 0.05, "delivered": 0.1, "read": 0.15},
        faults={
            "latency_ms": args.latency_ms,
            "webhook_batch_ms": args.webhook_batch_ms,
        },
        record_limit=args.recipients * 5 + 100,
    ) as sandbox:
        os.environ["WHATSAPP_GRAPH_API_URL"] = sandbox.base_url
        import django

        from bench.database import recreate_database

        recreate_database(os.environ["DATABASE_URL"])
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return run(args, sandbox, number_config, http_port)


def run(args, sandbox, number_config, http_port: int) -> int:
    import requests
    from django.contrib.auth.models import Permission
    from django.db import connection
    from django.db.models import Max, Min
    from rest_framework.authtoken.models import Token

    from accounts.models import User
    from conversations import services
    from conversations.delivery import ratelimit
    from conversations.models import (
        ConsentRecord,
        Customer,
        Message,
        WebhookEvent,
    )
    from helpdesk.celery import app as celery_app

    number, _ = services.add_whatsapp_number(
        phone_number_id=number_config.phone_number_id,
        display_phone_number=number_config.display_phone_number,
        waba_id=number_config.waba_id,
        access_token=number_config.access_token,
        app_secret=number_config.app_secret,
        verify_token="bench-verify",  # noqa: S106
        throughput=args.throughput,
    )
    services.sync_templates(number=number)
    redis = ratelimit.connection()
    for key in redis.scan_iter("outbound:*"):
        redis.delete(key)
    redis.delete("default")
    user = User.objects.create(username="bench-booking-system")
    user.user_permissions.add(Permission.objects.get(codename="send_notification"))
    token = Token.objects.create(user=user).key
    phones = [f"+49171{5000000 + n}" for n in range(args.recipients)]
    customers = Customer.objects.bulk_create(
        [Customer(wa_id=p[1:], phone=p) for p in phones], batch_size=2000
    )
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                customer=c, purpose="utility", status="opt_in", source="checkout"
            )
            for c in customers
        ],
        batch_size=2000,
    )

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "helpdesk.settings"}
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp"))
    processes = [
        subprocess.Popen(
            in_this_python(
                web_command(host="127.0.0.1", port=http_port, log_level="warning")
            ),
            cwd=ROOT,
            env=env,
            stdout=open(logs / "bench-notifications-uvicorn.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
    ]
    for n in range(args.workers):
        processes.append(
            subprocess.Popen(
                in_this_python(
                    [
                        *worker_command(
                            pool="prefork",
                            concurrency=args.worker_concurrency,
                            alone=True,
                            log_level="WARNING",
                        ),
                        *("-n", f"benchnotify{n}@%h"),
                        # Beat's sweepers (delivery, webhooks, callbacks) in the
                        # first worker, as in production's one beat process.
                        *(
                            ["-B", "-s", str(logs / "bench-notifications-beat")]
                            if n == 0
                            else []
                        ),
                    ]
                ),
                cwd=ROOT,
                env=env,
                stdout=open(logs / f"bench-notifications-worker{n}.log", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
        )
    report: dict = {}
    try:

        def http_up():
            try:
                return requests.get(
                    f"http://127.0.0.1:{http_port}/healthz", timeout=1
                ).ok
            except requests.RequestException:
                return False

        if not poll(http_up, 60):
            raise SystemExit("uvicorn did not start")
        if not poll(
            lambda: len(celery_app.control.ping(timeout=0.5)) >= args.workers, 60
        ):
            raise SystemExit("workers did not start")

        body = {
            "to": phones,
            "purpose": "utility",
            "template": {"name": "order_shipped", "language": "en"},
            "parameters": {"body": ["Anna", "#4711"]},
            "reference": "bench",
        }
        started = time.time()
        response = requests.post(
            f"http://127.0.0.1:{http_port}/api/v1/notifications/",
            json=body,
            headers={"Authorization": f"Token {token}", "Idempotency-Key": "bench-1"},
            timeout=args.timeout,
        )
        accepted_at = time.time()
        if response.status_code != 202:
            raise SystemExit(f"{response.status_code}: {response.text[:500]}")
        answer = response.json()
        print(
            f"accepted {answer['queued']} in {accepted_at - started:.2f} s "
            f"({answer['queued'] / (accepted_at - started):.1f}/s), "
            f"load {os.getloadavg()}",
            file=sys.stderr,
            flush=True,
        )
        outbound = Message.objects.filter(direction="outbound")
        deadline_left = lambda: args.timeout - (time.time() - started)  # noqa: E731
        poll(
            lambda: not outbound.filter(status__in=["queued", "sending"]).exists(),
            deadline_left(),
            0.5,
        )
        sends_done_at = time.time()
        # Every status of every message acknowledged by the endpoint (a
        # batched POST counts once; all its statuses must be processed).
        expected_webhooks = 3 * args.recipients if not args.webhook_batch_ms else 1

        def acknowledged() -> int:
            by_status = sandbox.control.stats()["webhooks"]["by_status"]
            return sum(n for code, n in by_status.items() if str(code) == "200")

        def drained():
            posted = acknowledged()
            pending = WebhookEvent.objects.filter(
                state__in=["pending", "failed"]
            ).exists()
            return (
                posted >= expected_webhooks
                and not pending
                and not outbound.exclude(status="read").exists()
            )

        poll(drained, deadline_left(), 0.5)
        drained_at = time.time()

        times = outbound.aggregate(first=Min("sent_at"), last=Max("sent_at"))
        requests_log = sandbox.control._call(
            "GET",
            "requests",
            params={"path": "/messages", "limit": args.recipients * 3},
        )["requests"]
        accepted_ids: dict[str, int] = {}
        for record in requests_log:
            if record["status"] == 200:
                key = (record["body"] or {}).get("biz_opaque_callback_data")
                accepted_ids[key] = accepted_ids.get(key, 0) + 1
        stats = sandbox.control.stats()
        per_number = stats["numbers"].get(number.phone_number_id, {})
        send_span = (times["last"] - times["first"]).total_seconds()
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
        report = {
            "recipients": args.recipients,
            "api_status": response.status_code,
            "queued": answer["queued"],
            "refused": answer["refused"],
            "accept_s": round(accepted_at - started, 2),
            "accepted_per_s": round(answer["queued"] / (accepted_at - started), 1),
            "throughput_setting": args.throughput,
            "latency_ms": args.latency_ms,
            "webhook_batch_ms": args.webhook_batch_ms,
            "delivery_s": round(sends_done_at - accepted_at, 2),
            "delivered_per_s": round(
                outbound.filter(sent_at__isnull=False).count() / send_span, 1
            )
            if send_span
            else None,
            "sandbox_max_sends_in_one_second": per_number.get("max_per_second"),
            "sandbox_rejected_130429": per_number.get("rejected_by_throughput"),
            "webhooks_posted": stats["webhooks"]["posted"],
            "webhooks_acknowledged_200": acknowledged(),
            "webhook_events_stored": WebhookEvent.objects.count(),
            "webhook_events_processed": WebhookEvent.objects.filter(
                state="processed"
            ).count(),
            "backlog_drain_s": round(drained_at - sends_done_at, 2),
            "end_to_end_s": round(drained_at - started, 2),
            "statuses_posted_by_sandbox": sum(
                len(m.get("statuses", [])) for m in sandbox.control.messages()
            ),
            "messages_delivered": outbound.filter(delivered_at__isnull=False).count(),
            "messages_read": outbound.filter(status="read").count(),
            "failed": outbound.filter(status="failed").count(),
            "lost": args.recipients - len(accepted_ids),
            "sent_twice": sum(1 for c in accepted_ids.values() if c > 1),
            "workers": f"{args.workers} x prefork -c {args.worker_concurrency}",
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "postgresql": pg_version,
            },
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
