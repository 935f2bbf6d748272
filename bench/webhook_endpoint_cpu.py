"""Where an acknowledgement's CPU goes: the webhook endpoint called in process.

    .venv/bin/python bench/webhook_endpoint_cpu.py [--requests 2000]

Migrates a fresh database (DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/helpdesk_bench_endpoint), adds one app and
number, and calls the endpoint (conversations/whatsapp/webhooks.py) as an ASGI
application, one signed status webhook after another, without any server:
CPU (`time.process_time`, robust to the machine's other load) and wall time
per acknowledgement, then the parts alone: the signature check over the raw
bytes and the body's claim lane (`lane_of`). What a server adds per request
(daphne's Twisted HTTP, uvicorn's httptools) is the server process' CPU per
request in bench/status_storm.py and bench/webhook_ack.py minus this.
REDIS_URL (default redis://127.0.0.1:6379/9) receives the doorbell's tasks
and is flushed after.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

APP_SECRET = "bench-endpoint-secret"  # noqa: S105


def status_webhook() -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100780", "phone_number_id": "780"},
        "statuses": [
            {
                "id": "wamid.HBgLMTU1NTAxMjM0NTYVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
                "status": "delivered",
                "timestamp": "1700000000",
                "recipient_id": "15551234567",
                "pricing": {"billable": True, "pricing_model": "PMP"},
            }
        ],
    }
    changes = [{"field": "messages", "value": value}]
    document = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": changes}],
    }
    return json.dumps(document).encode()


async def measure(count: int) -> dict:
    from conversations.whatsapp.payloads import verify_signature
    from conversations.whatsapp.webhooks import WebhookEndpoint, lane_of

    body = status_webhook()
    signature = (
        "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/whatsapp/",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-hub-signature-256", signature.encode()),
        ],
    }
    endpoint = WebhookEndpoint()

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def acknowledge(times: int) -> None:
        for _ in range(times):
            answers = []

            async def send(message, answers=answers):
                answers.append(message)

            await endpoint(scope, receive, send)
            if answers[0]["status"] != 200:
                raise SystemExit(f"the endpoint answered {answers}")

    await acknowledge(50)
    cpu, wall = time.process_time(), time.perf_counter()
    await acknowledge(count)
    result = {
        "endpoint CPU us per ack": 1e6 * (time.process_time() - cpu) / count,
        "endpoint wall us per ack (one at a time)": 1e6
        * (time.perf_counter() - wall)
        / count,
    }
    cpu = time.process_time()
    for _ in range(count):
        verify_signature(body, signature, [APP_SECRET])
    result["signature check CPU us"] = 1e6 * (time.process_time() - cpu) / count
    cpu = time.process_time()
    for _ in range(count):
        lane_of(body)
    result["lane_of CPU us"] = 1e6 * (time.process_time() - cpu) / count
    await endpoint.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/helpdesk_bench_endpoint"
    )
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    from bench.database import recreate_database

    recreate_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    import redis
    from django.core.management import call_command

    from bench.webhook_ack import machine
    from conversations import services

    call_command("migrate", verbosity=0)
    services.add_whatsapp_number(
        phone_number_id="780",
        display_phone_number="+15550100780",
        waba_id="200000000000780",
        access_token="bench-token",  # noqa: S106
        app_secret=APP_SECRET,
        verify_token="bench-verify",  # noqa: S106
    )
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result = asyncio.run(measure(args.requests))
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    for key, value in machine().items():
        print(f"{key}: {value}")
    print(f"load average before: {load_before}")
    for key, value in result.items():
        print(f"{key}: {value:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
