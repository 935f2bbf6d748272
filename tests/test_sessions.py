"""How long a login lasts: SESSION_COOKIE_AGE, for pages and live sockets."""

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connections
from django.utils import timezone

from conversations import realtime
from tests.test_workspace_live import communicator, hello, world

TWELVE_HOURS = 12 * 3600


@pytest.mark.django_db
def test_a_login_lasts_twelve_hours_by_default(client, agent):
    response = client.post(
        "/accounts/login/", {"username": agent.username, "password": "agent-password"}
    )
    assert response.status_code == 302
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert int(cookie["max-age"]) == TWELVE_HOURS
    session = Session.objects.get()
    remaining = session.expire_date - timezone.now()
    assert timedelta(hours=12) - timedelta(minutes=1) < remaining
    assert remaining <= timedelta(hours=12)


@pytest.mark.django_db
def test_an_expired_session_no_longer_opens_pages(client, agent):
    client.force_login(agent)
    assert client.get("/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/")
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


async def next_output(ws) -> dict:
    return await ws.receive_output(5)


@pytest.fixture
async def close_consumer_connections():
    """The consumer ran in channels' database thread; let go of its
    connection so the test database can be flushed."""
    yield
    await database_sync_to_async(connections.close_all)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("end", ["expire", "log out", "new password"])
async def test_a_live_socket_closes_when_its_session_ends(
    end, close_consumer_connections
):
    data = await sync_to_async(world)()
    ws = communicator(data["anna_cookie"])
    assert (await ws.connect())[0]
    await hello(ws)
    assert json.loads(await ws.receive_from(5))["type"] == "synced"

    def finish():
        if end == "expire":
            Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
        elif end == "log out":
            Session.objects.all().delete()
        else:
            data["anna"].set_password("a-new-password-of-anna")
            data["anna"].save()

    await sync_to_async(finish)()
    # What makes a socket re-read who may see what (it also does so at
    # least every minute, and on a hello after that).
    await sync_to_async(realtime.announce_access_changed)([data["anna"].pk])
    await sync_to_async(realtime.flush_announcements)()
    output = await next_output(ws)
    while output["type"] != "websocket.close":
        output = await next_output(ws)
    assert output["code"] == 4401
