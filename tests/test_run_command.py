"""The run command brings up the whole helpdesk on embedded defaults."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class OutputReader(threading.Thread):
    """Collects a process's output so the test can wait for given lines."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def run(self):
        for line in self.stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{pattern!r} not printed; output:\n" + "".join(self.lines)
                    )
                self.changed.wait(remaining)


@pytest.fixture
def running_helpdesk(tmp_path):
    http_port, sandbox_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            # The run command turns DEBUG on itself (helpdesk.settings
            # leaves it off unless told).
            "DEBUG",
            "DJANGO_SETTINGS_MODULE",
            "WHATSAPP_GRAPH_API_URL",
        }
    }
    env.update(
        HELPDESK_VAR_DIR=str(tmp_path),
        HELPDESK_PORT=str(http_port),
        SANDBOX_PORT=str(sandbox_port),
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "helpdesk.launcher", "run"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = OutputReader(process.stdout)
    reader.start()
    try:
        yield process, reader, http_port, sandbox_port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.e2e
def test_run_starts_everything_and_the_demo_agent_logs_in(running_helpdesk):
    process, output, http_port, sandbox_port = running_helpdesk
    password = output.wait_for(r"with password '([^']+)'", 90).group(1)
    output.wait_for(r"Press Ctrl-C to stop", 60)
    output.wait_for(r"celery@\S+ ready", 60)
    output.wait_for(r"beat: Starting", 60)
    # The login is said again once everything is up, below the start-up logs.
    logins = [i for i, line in enumerate(output.lines) if password in line]
    up = next(i for i, line in enumerate(output.lines) if "Helpdesk: http" in line)
    ready = next(i for i, line in enumerate(output.lines) if "ready." in line)
    assert len(logins) == 2 and logins[0] < ready < up < logins[1]
    base = f"http://127.0.0.1:{http_port}"

    session = requests.Session()
    login_page = session.get(f"{base}/accounts/login/", timeout=10)
    assert login_page.status_code == 200
    assert 'name="username"' in login_page.text
    response = session.post(
        f"{base}/accounts/login/",
        data={
            "username": "demo",
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.url == f"{base}/"
    numbers = session.get(f"{base}/admin/conversations/whatsappnumber/", timeout=10)
    assert numbers.status_code == 200
    assert "+15550100001" in numbers.text
    assert requests.get(f"http://127.0.0.1:{sandbox_port}/", timeout=10).ok

    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert not port_open(http_port)
    assert not port_open(sandbox_port)


@pytest.mark.browser
def test_a_newcomer_says_hello_from_the_sandbox_phone_and_gets_an_answer(
    running_helpdesk,
):
    """The walkthrough of the README, in a browser: phone → inbox → phone."""
    from playwright.sync_api import expect, sync_playwright

    from tests.fixtures.browser import launch_chromium, log_in

    _, output, http_port, sandbox_port = running_helpdesk
    password = output.wait_for(r"with password '([^']+)'", 90).group(1)
    output.wait_for(r"Press Ctrl-C to stop", 60)
    output.wait_for(r"celery@\S+ ready", 60)
    helpdesk = f"http://127.0.0.1:{http_port}"

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            phone = browser.new_page()
            phone.goto(f"http://127.0.0.1:{sandbox_port}/")
            phone.get_by_label("Customer name").fill("Nora Newcomer")
            phone.get_by_label("Customer number").fill("+49 170 5550123")
            phone.get_by_role("button", name="Start chat").click()
            phone.get_by_role("textbox", name="Message").fill("Hello")
            phone.get_by_role("button", name="Send").click()

            agent = browser.new_page()
            log_in(agent, helpdesk, "demo", password)
            row = agent.get_by_role("link", name=re.compile("Nora Newcomer"))
            expect(row).to_contain_text("Hello", timeout=20_000)
            row.click()
            box = agent.get_by_role("textbox", name="Message")
            box.fill("Hi Nora, how can I help?")
            box.press("Enter")

            answer = phone.locator("#messages li").filter(
                has_text="Hi Nora, how can I help?"
            )
            expect(answer).to_be_visible(timeout=20_000)
            expect(answer.locator(".ticks")).to_have_text("✓✓ read", timeout=20_000)
            bubble = agent.locator("article.bubble.outbound").filter(
                has_text="Hi Nora, how can I help?"
            )
            expect(bubble.get_by_role("img", name="Read")).to_be_visible(timeout=20_000)
        finally:
            browser.close()
