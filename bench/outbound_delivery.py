"""Outbound delivery benchmark: N replies queued at once, delivered end to end.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/helpdesk_bench_outbound \
    REDIS_URL=redis://127.0.0.1:6379/11 \
    .venv/bin/python bench/outbound_delivery.py --messages 5000 --throughput 1000

Starts the sandbox (a Cloud API simulator) answering after --latency-ms
(Meta's ~100 ms round trip), migrates a fresh database, creates one number
with the given throughput and --customers conversations with open windows,
starts --workers real `celery worker` processes on the default and delivery
queues, queues the replies through services.send_reply in one transaction
with the number paused (the queueing time is reported on its own), resumes
the number, and waits until every message is `sent` or `failed`. Reports
messages/s from the commit to the last `sent`, p50/p99 from queued to sent,
the highest number of sends the sandbox counted in any one wall-clock
second, duplicates (any message id the sandbox accepted more than once), and
the CPU each delivered message cost the worker processes and this process
(the sandbox and the polling): on a shared 2-core machine msgs/s moves with
the neighbours' load, CPU per message much less.

While the replies go out, a web process (daphne) serves `/metrics` and it is
scraped every half second (bench/metrics_scrape.py): the report compares
`helpdesk_messages_sent_total` by outcome with the messages' own statuses.

Status webhooks are not part of this load: the sandbox is told to post none
(status_delays all None), so the figures are delivery alone. In production
each send comes back as ~3 status webhooks processed on the default queue;
on this 2-core machine that work would compete for the same cores (see
docs/benchmarks.md).
"""

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")

METRICS_TOKEN = "bench-metrics-token"  # noqa: S105


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--throughput", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--scrape-interval", type=float, default=0.5, help="seconds between scrapes"
    )
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database for the benchmark")

    # Production settings: DEBUG on would keep every query in memory.
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(40))
    # The number's pair limit would hold customers after 45 messages each.
    os.environ["WHATSAPP_PAIR_BURST"] = str(args.messages)
    os.environ["WHATSAPP_DELIVERY_CONCURRENCY"] = str(args.concurrency)
    os.environ["WHATSAPP_DELIVERY_BATCH"] = str(args.concurrency)
    os.environ["METRICS_TOKEN"] = METRICS_TOKEN
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    from sandbox.config import Number
    from sandbox.testing import running_sandbox

    number_config = Number(
        phone_number_id="100000000000777",
        display_phone_number="+15550100777",
        waba_id="200000000000777",
        access_token="bench-token",  # noqa: S106
        app_secret="bench-secret",  # noqa: S106
        throughput=args.throughput,
    )
    with running_sandbox(
        numbers=[number_config],
        status_delays={"sent": None, "delivered": None, "read": None},
        faults={"latency_ms": args.latency_ms},
        record_limit=args.messages * 2 + 100,
    ) as sandbox:
        os.environ["WHATSAPP_GRAPH_API_URL"] = sandbox.base_url
        import django

        from bench.database import recreate_database

        recreate_database(os.environ["DATABASE_URL"])
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return run(args, sandbox, number_config)


def run(args, sandbox, number_config) -> int:
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from bench import cpu, metrics_scrape
    from conversations import services
    from conversations.delivery import ratelimit
    from conversations.models import Conversation, Customer, Message
    from helpdesk.launcher import free_port, wait_for_port
    from helpdesk.processes import daphne_command, in_this_python, worker_command

    number, _ = services.add_whatsapp_number(
        phone_number_id=number_config.phone_number_id,
        display_phone_number=number_config.display_phone_number,
        waba_id=number_config.waba_id,
        access_token=number_config.access_token,
        app_secret="bench-secret",  # noqa: S106
        verify_token="bench-verify",  # noqa: S106
        throughput=args.throughput,
    )
    connection = ratelimit.connection()
    for key in connection.scan_iter("outbound:*"):
        connection.delete(key)
    connection.delete("default")
    wa_ids = [f"49170{7000000 + n}" for n in range(args.customers)]
    sandbox.control.open_window(*wa_ids)
    now = timezone.now()
    conversations = []
    for wa_id in wa_ids:
        customer = Customer.objects.create(wa_id=wa_id, phone=f"+{wa_id}")
        conversations.append(
            Conversation.objects.create(
                customer=customer, number=number, last_inbound_at=now
            )
        )

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "helpdesk.settings"}
    workers = [
        subprocess.Popen(
            in_this_python(
                [
                    *worker_command(
                        queues=["default", "delivery"],
                        pool="prefork",
                        concurrency=1,
                        alone=True,
                        log_level="ERROR",
                    ),
                    *("-n", f"bench{n}@%h"),
                ]
            ),
            cwd=ROOT,
            env=env,
        )
        for n in range(args.workers)
    ]
    port = free_port()
    web = subprocess.Popen(
        in_this_python(daphne_command(host="127.0.0.1", port=port, verbosity=0)),
        cwd=ROOT,
        env=env,
    )
    scraper = metrics_scrape.Scraper(
        f"http://127.0.0.1:{port}/metrics", METRICS_TOKEN, args.scrape_interval
    )
    try:
        wait_for_port(port, 60, web)
        time.sleep(3)  # workers booting; the benchmark's clock starts later
        # Paused while queueing, so the clock measures delivery alone.
        type(number).objects.filter(pk=number.pk).update(sending_paused=True)
        queue_started = time.time()
        # One transaction, as a bulk API call would: the clock starts when
        # every reply is committed `queued` (creating 5,000 rows one by one
        # measures the producer, not delivery).
        with transaction.atomic():
            for n in range(args.messages):
                services.send_reply(
                    conversation=conversations[n % len(conversations)],
                    kind="text",
                    content={"body": f"Reply {n}"},
                )
        started = queued_done = time.time()
        committed_at = timezone.now()
        workers_cpu_before = sum(cpu.tree_seconds(worker.pid) for worker in workers)
        own_cpu_before = time.process_time()
        metrics_before = scraper.scrape()
        scraper.start()
        services.resume_sending(number=number)
        deadline = started + args.timeout
        pending = Message.objects.filter(direction="outbound").exclude(
            status__in=["sent", "failed", "unknown"]
        )
        while pending.exists() and time.time() < deadline:
            time.sleep(0.2)
        finished = time.time()
        workers_cpu = sum(cpu.tree_seconds(w.pid) for w in workers) - workers_cpu_before
        own_cpu = time.process_time() - own_cpu_before
        # The last outcomes are counted just after their commit.
        time.sleep(2 * args.scrape_interval)
        scraper.stop()
        metrics_after = scraper.scrape()
    finally:
        scraper.stop()
        web.terminate()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)

    rows = Message.objects.filter(direction="outbound")
    sent = rows.filter(status="sent")
    latencies = sorted(
        (sent_at - committed_at).total_seconds()
        for sent_at in sent.values_list("sent_at", flat=True)
    )
    last_sent = max(sent.values_list("sent_at", flat=True), default=None)
    elapsed = (last_sent - committed_at).total_seconds() if last_sent else 0
    requests = sandbox.control._call(
        "GET", "requests", params={"path": "/messages", "limit": args.messages * 3}
    )["requests"]
    accepted: dict[str, int] = {}
    for record in requests:
        if record["status"] == 200:
            key = (record["body"] or {}).get("biz_opaque_callback_data")
            accepted[key] = accepted.get(key, 0) + 1
    stats = sandbox.control.stats()["numbers"].get(number.phone_number_id, {})
    outcomes = {
        "sent": sent.count(),
        "failed": rows.filter(status="failed").count(),
        "unknown": rows.filter(status="unknown").count(),
    }
    metrics = metrics_scrape.compare(
        scraper, metrics_before, metrics_after, acknowledged=0, sent=outcomes
    )

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    report = {
        "messages": args.messages,
        "customers": args.customers,
        "throughput_setting": args.throughput,
        "latency_ms": args.latency_ms,
        "workers": args.workers,
        "concurrency_per_worker": args.concurrency,
        "limiter_window_s": settings.WHATSAPP_RATE_LIMIT_WINDOW,
        "sent": sent.count(),
        "failed": rows.filter(status="failed").count(),
        "unknown": rows.filter(status="unknown").count(),
        "not_finished": rows.exclude(status__in=["sent", "failed", "unknown"]).count(),
        "lost": args.messages - len(accepted) - rows.filter(status="failed").count(),
        "sent_twice": sum(1 for count in accepted.values() if count > 1),
        "queueing_s": round(queued_done - queue_started, 2),
        "end_to_end_s": round(elapsed, 2),
        "msgs_per_s": round(sent.count() / elapsed, 1) if elapsed else 0,
        "p50_ms": round(pct(0.50), 1) if latencies else None,
        "p99_ms": round(pct(0.99), 1) if latencies else None,
        "sandbox_max_per_second": stats.get("max_per_second"),
        "sandbox_rejected_130429": stats.get("rejected_by_throughput"),
        "wall_s": round(finished - started, 2),
        "metrics": {
            "scrapes": metrics["scrapes"],
            "failed_scrapes": metrics["failed_scrapes"],
            "sent_by_outcome": metrics["sent_by_outcome"],
            # Retries and deferrals are attempts, not outcomes a message keeps.
            "sent_counts_match": all(
                metrics["sent_by_outcome"]["metrics"].get(outcome, 0) == count
                for outcome, count in outcomes.items()
            ),
        },
        "cpu_ms_per_message": {
            "workers": round(1000 * workers_cpu / args.messages, 3),
            "sandbox_and_bench": round(1000 * own_cpu / args.messages, 3),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
