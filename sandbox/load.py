"""python -m sandbox.load: drive signed webhook traffic at a set rate.

N simulated customers send a mix of message types (and, if asked, statuses)
to a webhook URL at M requests per second for S seconds, over keep-alive
connections with many requests in flight, then report what happened.
"""

import argparse
import asyncio
import collections
import json
import random
import secrets
import time

import aiohttp

from . import inbound, payloads
from .config import DEMO_NUMBER, Number
from .media import PLACEHOLDER_BYTES

DEFAULT_MIX = "text=70,image=10,audio=5,document=5,location=3,button_reply=4,reaction=3"
LOAD_TYPES = inbound.INBOUND_TYPES - {"system", "order", "nfm_reply"} | {"status"}
PLACEHOLDER_MEDIA_ID = "100000000000000"


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for item in text.split(","):
        kind, _, weight = item.partition("=")
        kind = kind.strip()
        if kind not in LOAD_TYPES:
            raise ValueError(
                f"unknown type {kind!r} in --mix; one of {sorted(LOAD_TYPES)}"
            )
        mix[kind] = int(weight or 1)
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("--mix needs at least one positive weight")
    return mix


class TrafficBuilder:
    """Builds signed webhook bodies for a number's simulated customers."""

    def __init__(self, number: Number, customers: int, media_ids: dict[str, str]):
        self.number = number
        self.wa_ids = [f"49170{index:08d}" for index in range(customers)]
        self.contacts = {
            wa_id: payloads.contact(wa_id, f"Load customer {index}")
            for index, wa_id in enumerate(self.wa_ids)
        }
        self.media_ids = media_ids
        # Fake statuses and reactions refer to a pool of earlier wamids.
        self.recent_wamids = collections.deque(maxlen=1000)
        self.random = random.Random(7)  # noqa: S311 (traffic shape, not secrets)

    def _store_media(self, kind, data, mime_type, filename, media_id):
        return {
            "id": self.media_ids.get(kind, PLACEHOLDER_MEDIA_ID),
            "mime_type": mime_type,
            "sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "url": "",
            "filename": filename,
        }

    def description(self, kind: str) -> dict:
        if kind == "text":
            return {
                "type": "text",
                "text": f"Hello, where is my order {secrets.token_hex(3)}?",
            }
        if kind == "location":
            return {
                "type": "location",
                "location": {"latitude": 52.52, "longitude": 13.40},
            }
        if kind in {"button_reply", "list_reply"}:
            return {
                "type": kind,
                "id": "yes",
                "title": "Yes",
                "reply_to": self._earlier(),
            }
        if kind == "button":
            return {
                "type": "button",
                "text": "Track my order",
                "reply_to": self._earlier(),
            }
        if kind == "reaction":
            return {
                "type": "reaction",
                "message_id": self._earlier(),
                "emoji": "\U0001f44d",
            }
        if kind in {"image", "video", "document"}:
            return {"type": kind, "caption": "see attached"}
        return {"type": kind}

    def _earlier(self) -> str:
        if self.recent_wamids:
            return self.random.choice(self.recent_wamids)
        return payloads.new_wamid("0")

    def body(self, kind: str) -> bytes:
        wa_id = self.random.choice(self.wa_ids)
        value = payloads.messages_value(self.number)
        if kind == "status":
            value["statuses"] = [
                payloads.status(
                    wamid=self._earlier(),
                    status_name="delivered",
                    recipient_id=wa_id,
                    timestamp=payloads.now(),
                )
            ]
        else:
            wamid = payloads.new_wamid(wa_id)
            message = inbound.build_message(
                self.description(kind),
                wamid=wamid,
                from_wa_id=wa_id,
                timestamp=payloads.now(),
                store_media=self._store_media,
            )
            self.recent_wamids.append(wamid)
            value["contacts"] = [self.contacts[wa_id]]
            value["messages"] = [message]
        return payloads.serialise(payloads.envelope([(self.number, "messages", value)]))


class Report:
    def __init__(self):
        self.by_type = collections.Counter()
        self.by_status = collections.Counter()
        self.latencies: list[float] = []
        self.started = time.monotonic()
        self.finished = self.started

    def as_dict(self) -> dict:
        elapsed = max(self.finished - self.started, 1e-9)
        ordered = sorted(self.latencies)

        def percentile(share: float) -> float | None:
            if not ordered:
                return None
            return round(
                ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2
            )

        completed = sum(self.by_status.values())
        return {
            "sent": completed,
            "by_type": dict(self.by_type),
            "by_status": dict(self.by_status),
            "ack_latency_ms": {"p50": percentile(0.50), "p99": percentile(0.99)},
            "elapsed_s": round(elapsed, 3),
            "achieved_rate": round(completed / elapsed, 1),
        }


async def prepare_sandbox(session, sandbox_url: str, number: Number, wa_ids: list[str]):
    """Register media and open every customer's window in the sandbox, so the
    helpdesk can download the media and answer these customers through it."""
    media_ids = {}
    for kind in ("image", "audio", "video", "document", "sticker"):
        form = aiohttp.FormData()
        form.add_field("phone_number_id", number.phone_number_id)
        data, mime_type = PLACEHOLDER_BYTES[kind]
        form.add_field("file", data, filename=f"load.{kind}", content_type=mime_type)
        async with session.post(f"{sandbox_url}/_sandbox/media", data=form) as response:
            response.raise_for_status()
            media_ids[kind] = (await response.json())["id"]
    window = {"phone_number_id": number.phone_number_id, "wa_ids": wa_ids}
    async with session.post(f"{sandbox_url}/_sandbox/windows", json=window) as response:
        response.raise_for_status()
    return media_ids


async def run_load(
    *,
    webhook_url: str,
    number: Number,
    customers: int,
    rate: float,
    duration: float,
    mix: dict[str, int],
    concurrency: int = 256,
    sandbox_url: str = "",
) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        builder = TrafficBuilder(number, customers, {})
        if sandbox_url:
            builder.media_ids = await prepare_sandbox(
                session, sandbox_url, number, builder.wa_ids
            )
        kinds, weights = zip(*mix.items(), strict=True)
        report = Report()
        in_flight = asyncio.Semaphore(concurrency)
        tasks = set()

        async def post(kind: str, body: bytes):
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": payloads.sign(body, number.app_secret),
            }
            started = time.perf_counter()
            try:
                async with session.post(
                    webhook_url, data=body, headers=headers
                ) as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = type(error).__name__
            report.latencies.append(time.perf_counter() - started)
            report.by_type[kind] += 1
            report.by_status[outcome] += 1
            in_flight.release()

        total = int(rate * duration)
        issued = 0
        report.started = time.monotonic()
        while issued < total:
            due = min(total, int((time.monotonic() - report.started) * rate) + 1)
            while issued < due:
                await in_flight.acquire()
                kind = builder.random.choices(kinds, weights)[0]
                task = asyncio.create_task(post(kind, builder.body(kind)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                issued += 1
            # Yield so responses are read; a short sleep keeps the pacing even.
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        report.finished = time.monotonic()
        return report.as_dict()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox.load", description=__doc__)
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100, help="requests per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds")
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"type=weight,...; default {DEFAULT_MIX}"
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="requests in flight"
    )
    parser.add_argument("--phone-number-id", default=DEMO_NUMBER.phone_number_id)
    parser.add_argument(
        "--display-phone-number", default=DEMO_NUMBER.display_phone_number
    )
    parser.add_argument("--waba-id", default=DEMO_NUMBER.waba_id)
    parser.add_argument("--app-secret", default=DEMO_NUMBER.app_secret)
    parser.add_argument(
        "--sandbox-url",
        default="",
        help="a running sandbox: register media and open customers' windows there",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        mix = parse_mix(args.mix)
    except ValueError as error:
        raise SystemExit(f"sandbox.load: {error}") from None
    number = Number(
        phone_number_id=args.phone_number_id,
        display_phone_number=args.display_phone_number,
        waba_id=args.waba_id,
        access_token="",
        app_secret=args.app_secret,
    )
    report = asyncio.run(
        run_load(
            webhook_url=args.webhook_url,
            number=number,
            customers=args.customers,
            rate=args.rate,
            duration=args.duration,
            mix=mix,
            concurrency=args.concurrency,
            sandbox_url=args.sandbox_url,
        )
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"sent {report['sent']} in {report['elapsed_s']} s: {report['achieved_rate']}/s"
    )
    print(f"by type:   {report['by_type']}")
    print(f"by status: {report['by_status']}")
    latency = report["ack_latency_ms"]
    print(f"ack latency p50 {latency['p50']} ms, p99 {latency['p99']} ms")


if __name__ == "__main__":
    main()
