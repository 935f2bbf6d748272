"""python -m sandbox: run the WhatsApp Cloud API simulator."""

import argparse
import asyncio
import logging
import signal

from .config import DEMO_NUMBER, Number, SandboxConfig, StatusDelays
from .server import start_server


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="A simulated WhatsApp Cloud API (Graph API + webhooks) for "
        "offline development and tests. Nothing here reaches WhatsApp.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--webhook-url", default=None, help="where to post webhooks")
    parser.add_argument("--config", help="JSON file with numbers, faults and timings")
    parser.add_argument(
        "--number",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="a business number, e.g. phone_number_id=1001,display_phone_number="
        "+15550100001,waba_id=2001,access_token=T,app_secret=S[,throughput=80]"
        "[,verify_token=V]; repeatable",
    )
    parser.add_argument(
        "--status-delays",
        metavar="sent=0.05,delivered=0.15,read=0.3",
        help="seconds after a send at which each status is posted; 'none' skips one",
    )
    parser.add_argument(
        "--latency-ms", type=float, help="added to every Graph API answer"
    )
    parser.add_argument(
        "--state-file",
        help="JSON file where customers, windows, sends and the phone's chats are "
        "kept across restarts (read at start, written after changes)",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SandboxConfig:
    config = SandboxConfig.from_file(args.config) if args.config else SandboxConfig()
    config.numbers.extend(Number.from_option(option) for option in args.number)
    if not config.numbers:
        config.numbers.append(DEMO_NUMBER)
    if args.webhook_url is not None:
        config.webhook_url = args.webhook_url
    if args.status_delays:
        delays = {}
        for item in args.status_delays.split(","):
            name, _, value = item.partition("=")
            delays[name.strip()] = None if value.strip().lower() == "none" else value
        config.status_delays = StatusDelays.from_dict(delays)
    if args.state_file:
        config.state_file = args.state_file
    if args.latency_ms is not None:
        config.faults = {**config.faults, "latency_ms": args.latency_ms}
    return config


async def serve(config: SandboxConfig, host: str, port: int):
    runner, base_url = await start_server(config, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    numbers = ", ".join(n.phone_number_id for n in config.numbers)
    # Launchers read this line to learn the port when started with --port 0.
    print(f"WhatsApp sandbox listening on {base_url}", flush=True)
    print(
        f"numbers: {numbers}; webhooks to {config.webhook_url or '(none)'}; "
        f"customer phone at {base_url}/",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv=None):
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    try:
        config = build_config(args)
    except (ValueError, OSError) as error:
        raise SystemExit(f"sandbox: {error}") from None
    asyncio.run(serve(config, args.host, args.port))


if __name__ == "__main__":
    main()
