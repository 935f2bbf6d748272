"""A live helpdesk for browser tests: daphne and a Celery worker in
subprocesses on the test database, the sandbox playing Meta, and headless
Debian chromium driven by Playwright."""

import contextlib
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.db import connection

from conversations.delivery import ratelimit
from helpdesk.launcher import free_port, wait_for_port
from helpdesk.processes import daphne_command, in_this_python, worker_command

BASE_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_database_url() -> str:
    """DATABASE_URL of the test database this process uses."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


@dataclass
class LiveHelpdesk:
    url: str
    processes: list


@contextlib.contextmanager
def live_helpdesk(graph_url: str, *, workers: int = 8):
    """daphne + a Celery worker on the test database, talking to graph_url."""
    connection_ = ratelimit.connection()
    for key in connection_.scan_iter("outbound:*"):
        connection_.delete(key)
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.browser_settings",
        "DATABASE_URL": test_database_url(),
        "WHATSAPP_GRAPH_API_URL": graph_url,
        "HELPDESK_TEST_QUEUE": f"browser-{uuid.uuid4().hex[:8]}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    processes = []
    try:
        daphne = subprocess.Popen(
            in_this_python(daphne_command(host="127.0.0.1", port=port, verbosity=0)),
            cwd=BASE_DIR,
            env={**env, "HELPDESK_PROCESS": "asgi"},
        )
        processes.append(daphne)
        worker = subprocess.Popen(
            in_this_python(
                worker_command(
                    queues=[env["HELPDESK_TEST_QUEUE"]],
                    pool="threads",
                    concurrency=workers,
                    alone=True,
                    log_level="WARNING",
                )
            ),
            cwd=BASE_DIR,
            env=env,
        )
        processes.append(worker)
        wait_for_port(port, 30, daphne)
        # Django's ORM refuses to run where an event loop runs, and
        # Playwright's sync API runs one in this thread.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        yield LiveHelpdesk(f"http://127.0.0.1:{port}", processes)
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def launch_chromium(playwright):
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )


def log_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")
