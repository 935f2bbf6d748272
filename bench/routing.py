"""What auto-assignment adds to the webhook → inbox path.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/helpdesk_bench_routing \
    REDIS_URL=redis://127.0.0.1:6379/6 \
    .venv/bin/python bench/routing.py --conversations 1000 --agents 10

Migrates a fresh database with two numbers: one whose team does not route
(the baseline) and one whose team routes round robin over --agents online
agents, with capacity for every conversation. Each new customer's message is
one stored webhook event, processed as the worker does
(services.process_webhook_event, committed, after-commit work included).
On the routing number the routing doorbell's task then runs in this
process, as an idle worker would take it. Three figures: what the routing
check and doorbell add to processing a message (the routed number's
processing as a ratio of the baseline's, taken in the same run: the two
numbers alternate so the machine's noise hits both alike), what one routing
run costs, and the time from a worker taking the event to the conversation
assigned (both, with workers idle).

Then the burst: --conversations more arrive while no worker answers the
doorbell, and one run assigns them all (as after a backlog): its time per
conversation.
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
os.environ.setdefault("DEBUG", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database for the benchmark")
    import django

    from bench.database import recreate_database

    recreate_database(os.environ["DATABASE_URL"])
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    baseline, routed, agents = set_up(args)
    run = Runner(routed)
    per_round = args.conversations // args.rounds
    for index in range(3):  # warm-up: imports, connections, plans
        run.arrive(baseline, f"warm{index}")
        run.arrive(routed, f"warm{index}")
    figures = {"baseline": [], "routed": [], "run": [], "event_to_assigned": []}
    for round_ in range(args.rounds):
        for n in range(per_round):
            key = f"{round_:03d}{n:05d}"
            figures["baseline"].append(run.arrive(baseline, key)[0])
            processing, routing_run, assigned_after = run.arrive(routed, key)
            figures["routed"].append(processing)
            figures["run"].append(routing_run)
            figures["event_to_assigned"].append(assigned_after)
    burst = run.burst(args.conversations)
    report(args, figures, burst, agents)
    return 0


def set_up(args):
    from accounts.models import Team, User
    from conversations import services
    from conversations.models import TeamRouting

    numbers = []
    for index, name in enumerate(("Baseline", "Routed")):
        number, _ = services.add_whatsapp_number(
            phone_number_id=f"10000000000079{index}",
            display_phone_number=f"+1555010079{index}",
            waba_id=f"20000000000079{index}",
            access_token="bench-token",  # noqa: S106
            app_secret="bench-secret",  # noqa: S106
            verify_token="bench-verify",  # noqa: S106
            app_id="bench-app",
        )
        team = Team.objects.create(name=name)
        number.teams.add(team)
        numbers.append(number)
    routed_team = numbers[1].teams.get()
    TeamRouting.objects.create(
        team=routed_team,
        mode=TeamRouting.Mode.ROUND_ROBIN,
        # Room for every conversation of the run and the burst.
        capacity=max(1, (args.conversations * 2 + 10) // args.agents + 1),
    )
    agents = []
    for index in range(args.agents):
        agent = User.objects.create(
            username=f"bench-agent{index}", connected=True, availability="online"
        )
        agent.teams.add(routed_team)
        agents.append(agent)
    return numbers[0], numbers[1], agents


class Runner:
    """Stores and processes one customer's message at a time, running the
    routing task a doorbell asked for right after the commit that rang it."""

    def __init__(self, routed):
        from conversations.delivery import doorbells

        self.routed = routed
        self.rung: list[int] = []
        doorbells.ring = self._ring

    def _ring(self, task, *args, countdown=None):
        from conversations.delivery import doorbells

        if task == doorbells.ASSIGN_WAITING_CONVERSATIONS:
            self.rung.append(args[0])

    def arrive(self, number, key: str) -> tuple[float, float, float]:
        """ms to process one new customer's message, ms of the routing run it
        rang, and their sum: from a worker taking the event to the
        conversation assigned, with workers idle."""
        from django.utils import timezone

        from conversations import services, tasks
        from conversations.models import Conversation, WebhookEvent

        wa_id = f"49{number.pk}{key}"
        event = WebhookEvent.objects.create(
            body=body(number, wa_id, f"wamid.BENCH{number.pk}{key}"),
            app=number.app,
            received_at=timezone.now(),
        )
        before = time.perf_counter()
        services.process_webhook_event(event_id=event.pk)
        cost = (time.perf_counter() - before) * 1000
        if number.pk != self.routed.pk:
            assert not self.rung, "an unrouted number rang routing"
            return cost, 0.0, 0.0
        assert self.rung == [number.pk], self.rung
        self.rung.clear()
        before = time.perf_counter()
        tasks.assign_waiting_conversations.run(number.pk)
        run_ms = (time.perf_counter() - before) * 1000
        conversation = Conversation.objects.get(customer__wa_id=wa_id)
        assert conversation.assignee_id is not None, "not assigned"
        return cost, run_ms, cost + run_ms

    def burst(self, count: int) -> dict:
        from conversations import services
        from conversations.models import Conversation

        for n in range(count):
            self.arrive_unrouted(n)
        waiting = Conversation.objects.filter(
            number=self.routed, assignee__isnull=True
        ).count()
        before = time.perf_counter()
        assigned = 0
        while True:
            done = services.assign_waiting_conversations(number_id=self.routed.pk)
            if not done:
                break
            assigned += done
        elapsed = (time.perf_counter() - before) * 1000
        return {
            "waiting": waiting,
            "assigned": assigned,
            "run_ms": round(elapsed, 1),
            "ms_per_conversation": round(elapsed / max(assigned, 1), 3),
        }

    def arrive_unrouted(self, n: int) -> None:
        from django.utils import timezone

        from conversations import services
        from conversations.models import WebhookEvent

        wa_id = f"4917{9000000 + n}"
        event = WebhookEvent.objects.create(
            body=body(self.routed, wa_id, f"wamid.BURST{n:07d}"),
            app=self.routed.app,
            received_at=timezone.now(),
        )
        services.process_webhook_event(event_id=event.pk)


def body(number, wa_id: str, wamid: str) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": number.display_phone_number.lstrip("+"),
            "phone_number_id": number.phone_number_id,
        },
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": wamid,
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": "Where is my order?"},
            }
        ],
    }
    document = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": number.waba_id, "changes": [{"field": "messages", "value": value}]}
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def report(args, figures, burst, agents) -> None:
    from django.db import connection

    from conversations.models import Conversation

    held = [Conversation.objects.filter(assignee=agent).count() for agent in agents]
    base, routed = summary(figures["baseline"]), summary(figures["routed"])
    print(
        json.dumps(
            {
                "conversations_per_path": len(figures["baseline"]),
                "agents": args.agents,
                "processing_baseline": base,
                "processing_routed": routed,
                "processing_routed_over_baseline_p50": round(
                    routed["p50_ms"] / base["p50_ms"], 2
                ),
                "routing_run_one_conversation": summary(figures["run"]),
                "routing_run_over_baseline_processing_p50": round(
                    summary(figures["run"])["p50_ms"] / base["p50_ms"], 2
                ),
                "event_to_assigned": summary(figures["event_to_assigned"]),
                "burst_one_run": burst,
                "spread_between_agents": max(held) - min(held),
                "database": connection.vendor,
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
