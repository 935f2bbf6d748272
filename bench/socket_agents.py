"""Agents without a browser, for the workspace benchmark (bench/agent_latency.py).

Each agent logs in, loads the inbox, opens the workspace socket and says
hello as the page's script does, then notes the wall-clock time at which
each benchmark message's frame arrives. The server cannot tell them from a
page: it does the same work per socket. They stand for agents whose
browsers run on computers of their own, so that the browsers the machine
can hold measure the page and these measure the server's fan-out.

    python bench/socket_agents.py BASE_URL PASSWORD OUT.json USER [USER ...]

Prints "ready" once every socket is synced; on SIGTERM writes
{user: {seq: ms}} to OUT.json and exits.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import websockets

BENCH_TEXT = re.compile(r"bench-(\d+)-x")


def log_in(base: str, username: str, password: str) -> tuple[str, dict]:
    """The session cookies and the inbox's hello, as the page would send it."""
    # The cookies are Secure (DEBUG off) and requests keeps those from plain
    # HTTP, so they travel by hand, as a browser on the loopback sends them.
    cookies: dict[str, str] = {}

    def request(method, path, **kwargs):
        header = "; ".join(f"{name}={value}" for name, value in cookies.items())
        response = requests.request(
            method,
            f"{base}{path}",
            headers={"Cookie": header, "Referer": f"{base}{path}"},
            allow_redirects=False,
            timeout=10,
            **kwargs,
        )
        if response.status_code >= 400:
            response.raise_for_status()
        cookies.update(response.cookies.items())
        return response

    request("GET", "/accounts/login/")
    request(
        "POST",
        "/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": cookies["csrftoken"],
        },
    )
    page = request("GET", "/")
    last_event = int(re.search(r'data-last-event="(\d+)"', page.text).group(1))
    socket_path = re.search(r'data-ws-url="([^"]+)"', page.text).group(1)
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    hello = {
        "type": "hello",
        "after": last_event,
        "seen": [],
        "conversation": None,
        "filter": "",
        "visible": True,
    }
    return cookie, {"hello": hello, "path": socket_path}


async def agent(base: str, cookie: str, start: dict, seen: dict, synced) -> None:
    url = base.replace("http", "ws", 1) + start["path"]
    async with websockets.connect(
        url, additional_headers={"Cookie": cookie, "Origin": base}, max_size=None
    ) as socket:
        await socket.send(json.dumps(start["hello"]))
        async for frame in socket:
            now = time.time() * 1000
            match = BENCH_TEXT.search(frame)
            if match:
                seen.setdefault(match.group(1), now)
            elif '"synced"' in frame:
                synced()


ADD_AGENT = r"""
import sys
import django
django.setup()
from accounts.models import Team, User
from conversations.models import WhatsAppNumber
team = Team.objects.create(name=f"Team of {sys.argv[1]}")
for number in WhatsAppNumber.objects.all():
    number.teams.add(team)
agent = User.objects.create_user(sys.argv[1], password=sys.argv[2])
agent.teams.add(team)
"""


def add_agent(env: dict, username: str, password: str) -> None:
    """An agent in a team of their own that works every number, made in a
    process of its own with `env` (DATABASE_URL and the settings)."""
    root = str(Path(__file__).resolve().parent.parent)
    subprocess.run(
        [sys.executable, "-c", ADD_AGENT, username, password],
        env={**os.environ, **env, "PYTHONPATH": root},
        check=True,
    )


def open_agent(base: str, username: str, password: str, out: Path):
    """This script for one agent, in a process of its own (so that a load
    generator in the caller never delays its reading of frames), once its
    socket is synced; SIGTERM it to have `out` written."""
    process = subprocess.Popen(
        [sys.executable, __file__, base, password, str(out), username],
        stdout=subprocess.PIPE,
        text=True,
    )
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise SystemExit(f"{username}'s socket did not open")
    return process


async def main(base: str, password: str, out: str, users: list[str]) -> None:
    loop = asyncio.get_running_loop()
    logins = await asyncio.gather(
        *(asyncio.to_thread(log_in, base, user, password) for user in users)
    )
    seen = {user: {} for user in users}
    waiting = set(users)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def synced_for(user):
        def synced():
            waiting.discard(user)
            if not waiting:
                print("ready", flush=True)

        return synced

    tasks = [
        asyncio.create_task(agent(base, cookie, start, seen[user], synced_for(user)))
        for user, (cookie, start) in zip(users, logins, strict=True)
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    with open(out, "w") as file:
        json.dump(seen, file)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
