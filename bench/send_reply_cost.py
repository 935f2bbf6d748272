"""What one services.send_reply costs the caller, each reply its own transaction.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/helpdesk_bench_reply \
    REDIS_URL=redis://127.0.0.1:6379/11 \
    .venv/bin/python bench/send_reply_cost.py --replies 1000

Migrates a fresh database, creates one number and --customers conversations
with open windows, and times --replies calls of services.send_reply (text),
each committed on its own as the composer and the API do, so every call pays
its after-commit work: the live event's announcement and the delivery
doorbell. No worker runs: the replies stay `queued`. Reports p50/p99/mean
milliseconds per call and calls per second; then what one announcement
costs the caller, realtime.announce (handed to the process' announcer loop)
against the per-call async_to_sync(group_send) it replaced.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
# Plain HTTP on localhost with the development key, as before DEBUG
# defaulted to off.
os.environ.setdefault("DEBUG", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument(
        "--old-announce",
        action="store_true",
        help="announce as before the announcer: async_to_sync(group_send) per call",
    )
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database for the benchmark")
    import django

    from bench.database import recreate_database

    recreate_database(os.environ["DATABASE_URL"])
    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from conversations import services
    from conversations.models import Conversation, Customer

    if args.old_announce:
        use_old_announce()
    call_command("migrate", verbosity=0)
    number, _ = services.add_whatsapp_number(
        phone_number_id="100000000000778",
        display_phone_number="+15550100778",
        waba_id="200000000000778",
        access_token="bench-token",  # noqa: S106
        app_secret="bench-secret",  # noqa: S106
        verify_token="bench-verify",  # noqa: S106
    )
    # Paused: no delivery run is queued to a worker that is not there.
    type(number).objects.filter(pk=number.pk).update(sending_paused=True)
    now = timezone.now()
    conversations = [
        Conversation.objects.create(
            customer=Customer.objects.create(
                wa_id=f"49171{7000000 + n}", phone=f"+49171{7000000 + n}"
            ),
            number=number,
            last_inbound_at=now,
        )
        for n in range(args.customers)
    ]
    # One warm-up call: imports, connections.
    services.send_reply(
        conversation=conversations[0], kind="text", content={"body": "warm-up"}
    )
    costs = []
    started = time.perf_counter()
    for n in range(args.replies):
        before = time.perf_counter()
        services.send_reply(
            conversation=conversations[n % len(conversations)],
            kind="text",
            content={"body": f"Reply {n}"},
        )
        costs.append((time.perf_counter() - before) * 1000)
    elapsed = time.perf_counter() - started
    costs.sort()
    announce_now, announce_before = announce_costs(args.replies)
    print(
        json.dumps(
            {
                "replies": args.replies,
                "announce": "old" if args.old_announce else "announcer",
                "database": django.db.connection.vendor,
                "p50_ms": round(costs[len(costs) // 2], 2),
                "p99_ms": round(costs[int(len(costs) * 0.99)], 2),
                "mean_ms": round(statistics.fmean(costs), 2),
                "replies_per_s": round(args.replies / elapsed, 1),
                "announce_p50_ms": announce_now,
                "async_to_sync_group_send_p50_ms": announce_before,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                },
            },
            indent=2,
        )
    )
    return 0


def use_old_announce() -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from conversations import realtime

    def send_many(messages):
        for group, message in messages:
            async_to_sync(get_channel_layer().group_send)(group, message)

    realtime._send_many = send_many


def announce_costs(count: int) -> tuple[float, float]:
    """p50 ms of realtime.announce and of async_to_sync(group_send) per call."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from conversations import realtime
    from conversations.models import LiveEvent

    event = LiveEvent.objects.order_by("-pk").first()
    now = []
    for _ in range(count):
        before = time.perf_counter()
        realtime.announce(event)
        now.append((time.perf_counter() - before) * 1000)
    realtime.flush_announcements(30)
    old = []
    message = {"type": realtime.CHANNEL_MESSAGE_TYPE, "id": event.pk, "event": "x"}
    for _ in range(count):
        before = time.perf_counter()
        async_to_sync(get_channel_layer().group_send)(
            realtime.inbox_group(event.number_id), message
        )
        old.append((time.perf_counter() - before) * 1000)
    return (
        round(sorted(now)[count // 2], 3),
        round(sorted(old)[count // 2], 3),
    )


if __name__ == "__main__":
    raise SystemExit(main())
