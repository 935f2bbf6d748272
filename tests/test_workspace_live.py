"""The workspace's live socket, over channels' WebsocketCommunicator and real Redis."""

import asyncio
import json
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError, connections, transaction
from django.utils import dateformat, timezone

from accounts.models import LiveTab, User
from conversations import realtime, services
from conversations.delivery import doorbells
from conversations.live import hub
from conversations.live.cache import EventCache
from conversations.models import Conversation, CustomerMerge, LiveEvent
from helpdesk.asgi import application
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """Consumers ran in channels' database thread; let go of its connection so
    the test database can be flushed and dropped."""
    yield
    await database_sync_to_async(connections.close_all)()


ORIGIN = b"http://127.0.0.1"


def session_cookie(user) -> bytes:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode()


def communicator(cookie: bytes | None = None, origin: bytes = ORIGIN):
    headers = [(b"host", b"127.0.0.1"), (b"origin", origin)]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/workspace/", headers=headers)


def at_work(agent):
    """The agent has had the workspace open in another tab for a while: a
    test's socket changes nothing colleagues see, so its frames are only
    those the test is about."""
    LiveTab.objects.create(
        user=agent, channel_name=f"{agent.username}-other-tab", seen_at=timezone.now()
    )
    User.objects.filter(pk=agent.pk).update(connected=True)
    agent.connected = True


def world():
    """Two teams with a number each; anna in A, bruno in B."""
    team_a, team_b = TeamFactory(name="A"), TeamFactory(name="B")
    number_a, number_b = WhatsAppNumberFactory(), WhatsAppNumberFactory()
    number_a.teams.add(team_a)
    number_b.teams.add(team_b)
    anna = UserFactory(username="anna-live")
    anna.teams.add(team_a)
    bruno = UserFactory(username="bruno-live")
    bruno.teams.add(team_b)
    at_work(anna)
    at_work(bruno)
    return {
        "number_a": number_a,
        "number_b": number_b,
        "team_a": team_a,
        "anna": anna,
        "bruno": bruno,
        "anna_cookie": session_cookie(anna),
    }


def customer_writes(number, text="Hello", conversation=None):
    """What inbound processing does, through the same publish door."""
    conversation = conversation or ConversationFactory(number=number)
    now = timezone.now()
    message = MessageFactory(conversation=conversation, text=text, timestamp=now)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message, last_message_at=now, last_inbound_at=now
    )
    conversation.refresh_from_db()
    realtime.publish(
        realtime.MESSAGE_CREATED, conversation=conversation, message=message
    )
    # Announcing is asynchronous: wait until the doorbell rang, so a tab that
    # connects next is not also rung for this event.
    realtime.flush_announcements()
    return conversation, message


async def receive_event(ws, timeout=5):
    while True:
        frame = json.loads(await ws.receive_from(timeout))
        if frame["type"] == "event":
            return frame


def applied_so_far():
    """What a tab opened now has applied: the latest id and those below it."""
    ids = list(LiveEvent.objects.order_by("-pk").values_list("pk", flat=True)[:50])
    return (ids[0] if ids else 0), ids


async def fresh_hello(ws, conversation=None):
    after, seen = await sync_to_async(applied_so_far)()
    await hello(ws, after=after, conversation=conversation, seen=seen)


async def hello(ws, after=0, conversation=None, seen=()):
    await ws.send_to(
        text_data=json.dumps(
            {
                "type": "hello",
                "after": after,
                "seen": list(seen),
                "conversation": conversation,
                "filter": "",
            }
        )
    )


async def frame_of_row(ws, conversation_id: int) -> str:
    """The html of the next event frame that carries the conversation's row."""
    while True:
        frame = await receive_event(ws)
        if f'id="row-{conversation_id}"' in frame["html"]:
            return frame["html"]


async def test_live_fragments_show_times_in_each_agents_time_zone():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    await User.objects.filter(pk=data["anna"].pk).aupdate(time_zone="Europe/Berlin")
    colleague = await sync_to_async(UserFactory)(username="carla-live")
    await sync_to_async(colleague.teams.add)(data["team_a"])
    berlin = communicator(data["anna_cookie"])
    utc = communicator(await sync_to_async(session_cookie)(colleague))
    assert (await berlin.connect())[0] and (await utc.connect())[0]
    await fresh_hello(berlin, conversation=conversation.pk)
    await fresh_hello(utc)

    _, message = await sync_to_async(customer_writes)(
        data["number_a"], "Still there?", conversation
    )
    in_berlin = dateformat.format(
        timezone.localtime(message.timestamp, ZoneInfo("Europe/Berlin")), "M j, H:i"
    )
    in_utc = dateformat.format(timezone.localtime(message.timestamp, UTC), "M j, H:i")
    # The open conversation (row and bubble) and the inbox of the other tab.
    html = await frame_of_row(berlin, conversation.pk)
    assert f'id="msg-{message.pk}"' in html
    assert html.count(f">{in_berlin}</time>") == 2 and f">{in_utc}<" not in html
    html = await frame_of_row(utc, conversation.pk)
    assert f">{in_utc}</time>" in html and f">{in_berlin}<" not in html
    await berlin.disconnect()
    await utc.disconnect()


def test_a_process_renders_each_row_in_the_zones_of_that_inbox_only():
    data = world()
    customer_writes(data["number_a"], "For team A")
    event = LiveEvent.objects.latest("pk")
    zones = {
        data["number_a"].pk: ["Europe/Berlin"],
        data["number_b"].pk: ["Asia/Tokyo"],
    }

    (rendered,) = EventCache()._get_prepared(
        [event.pk], lambda number_id: zones[number_id]
    )

    assert rendered.cached_html("row:activity", "Europe/Berlin")
    # Tokyo's tabs do not see this inbox: nothing rendered for them.
    assert rendered.cached_html("row:activity", "Asia/Tokyo") is None


async def test_anonymous_handshakes_are_refused():
    ws = communicator()
    connected, code = await ws.connect()
    assert not connected
    await ws.disconnect()


async def test_foreign_origin_handshakes_are_refused():
    data = await sync_to_async(world)()
    ws = communicator(data["anna_cookie"], origin=b"https://evil.example")
    connected, _ = await ws.connect()
    assert not connected
    ws = communicator(data["anna_cookie"], origin=b"")
    connected, _ = await ws.connect()
    assert not connected


async def test_new_messages_arrive_rendered_and_only_to_agents_who_may_see_them():
    data = await sync_to_async(world)()
    anna = communicator(data["anna_cookie"])
    assert (await anna.connect())[0]
    bruno = communicator(await sync_to_async(session_cookie)(data["bruno"]))
    assert (await bruno.connect())[0]
    await hello(anna)
    await hello(bruno)
    assert json.loads(await anna.receive_from())["type"] == "synced"
    assert json.loads(await bruno.receive_from())["type"] == "synced"

    conversation, _ = await sync_to_async(customer_writes)(
        data["number_b"], "Only for team B"
    )
    await sync_to_async(customer_writes)(data["number_a"], "<b>For team A</b>")
    frame = await receive_event(anna)
    assert "&lt;b&gt;For team A&lt;/b&gt;" in frame["html"]
    assert "<b>For team A" not in frame["html"]
    assert 'data-live="upsert"' in frame["html"]
    frame = await receive_event(bruno)
    assert "Only for team B" in frame["html"]
    # Anna got nothing of team B, not even by naming its conversation.
    assert await anna.receive_nothing(0.3)
    await hello(anna, after=0, conversation=conversation.pk)
    frames = []
    while not frames or frames[-1]["type"] != "synced":
        frames.append(json.loads(await anna.receive_from()))
    assert "Only for team B" not in json.dumps(frames)
    assert f"row-{conversation.pk}" not in json.dumps(frames)
    await anna.disconnect()
    await bruno.disconnect()


async def test_the_open_conversation_gets_bubbles_ticks_notes_and_presence():
    data = await sync_to_async(world)()
    conversation, message = await sync_to_async(customer_writes)(data["number_a"])
    colleague = await sync_to_async(UserFactory)(username="carla-live")
    await sync_to_async(colleague.teams.add)(data["team_a"])
    await sync_to_async(at_work)(colleague)
    first = communicator(data["anna_cookie"])
    second = communicator(await sync_to_async(session_cookie)(colleague))
    await first.connect()
    await second.connect()
    await fresh_hello(first, conversation=conversation.pk)
    assert json.loads(await first.receive_from())["type"] == "synced"
    await fresh_hello(second, conversation=conversation.pk)
    # Each tab learns the other is there.
    frames = [json.loads(await second.receive_from()) for _ in range(2)]
    assert any("Also here" in f.get("html", "") for f in frames)

    reply = await sync_to_async(
        lambda: services.send_reply(
            conversation=conversation,
            kind="text",
            content={"body": "On it"},
            sender=data["anna"],
        )
    )()
    frame = await receive_event(first)
    assert f'id="msg-{reply.pk}"' in frame["html"] and "Queued" in frame["html"]
    await sync_to_async(
        lambda: services.assign_conversation(
            conversation=conversation, by=colleague, assignee=data["anna"]
        )
    )()
    frame = await receive_event(first)
    assert "Assigned to <strong" in frame["html"] and data["anna"].name in frame["html"]
    await sync_to_async(
        lambda: services.add_note(
            conversation=conversation, author=colleague, body="Psst <i>"
        )
    )()
    frame = await receive_event(first)
    assert "Private note by" in frame["html"] and "Psst &lt;i&gt;" in frame["html"]

    await second.send_to(text_data=json.dumps({"type": "typing"}))
    while True:
        frame = json.loads(await first.receive_from())
        if frame["type"] == "fragment" and "typing" in frame["html"]:
            break
    await first.disconnect()
    await second.disconnect()


async def test_a_delivery_tick_renders_the_bubble_only_where_it_is_open():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    reply = await sync_to_async(
        lambda: services.send_reply(
            conversation=conversation,
            kind="text",
            content={"body": "On its way"},
            sender=data["anna"],
        )
    )()
    await sync_to_async(realtime.flush_announcements)()
    colleague = await sync_to_async(UserFactory)(username="carla-live")
    await sync_to_async(colleague.teams.add)(data["team_a"])
    await sync_to_async(at_work)(colleague)
    open_tab = communicator(data["anna_cookie"])
    inbox_tab = communicator(await sync_to_async(session_cookie)(colleague))
    assert (await open_tab.connect())[0] and (await inbox_tab.connect())[0]
    await fresh_hello(open_tab, conversation=conversation.pk)
    await fresh_hello(inbox_tab)

    def delivered():
        reply.status = "delivered"
        reply.save(update_fields=["status"])
        return realtime.publish(
            realtime.MESSAGE_UPDATED,
            conversation=conversation,
            message=reply,
            data={"status": "delivered"},
        )

    event = await sync_to_async(delivered)()
    await sync_to_async(event.refresh_from_db)()
    frame = await receive_event(open_tab)
    assert frame["id"] == event.pk
    assert f'id="msg-{reply.pk}"' in frame["html"] and "Delivered" in frame["html"]
    # The row shows no message's status: the inbox tab gets the event's
    # place in the stream and nothing to render.
    frame = await receive_event(inbox_tab)
    assert (frame["id"], frame["seq"], frame["html"]) == (event.pk, event.sequence, "")
    await open_tab.disconnect()
    await inbox_tab.disconnect()


async def test_a_customer_merge_is_a_live_line_in_the_open_thread():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    other = await sync_to_async(CustomerFactory)(
        wa_id="", phone="", user_id="DE.31415", profile_name="<b>Lena</b>"
    )
    tab = communicator(data["anna_cookie"])
    assert (await tab.connect())[0]
    await fresh_hello(tab, conversation=conversation.pk)
    assert json.loads(await tab.receive_from())["type"] == "synced"

    await sync_to_async(
        lambda: services.merge_customers(first=conversation.customer, second=other)
    )()
    merge = await CustomerMerge.objects.aget()
    frame = await receive_event(tab)
    assert f'id="merge-{merge.pk}"' in frame["html"]
    assert 'data-live-into="#thread"' in frame["html"]
    assert "Merged with &lt;b&gt;Lena&lt;/b&gt; (DE.31415)" in frame["html"]
    await tab.disconnect()


async def test_an_agents_reaction_shows_on_the_message_it_reacts_to():
    data = await sync_to_async(world)()
    conversation, message = await sync_to_async(customer_writes)(data["number_a"])
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws, conversation=conversation.pk)
    assert json.loads(await ws.receive_from())["type"] == "synced"

    reaction = await sync_to_async(
        lambda: services.react(message=message, emoji="👍", sender=data["anna"])
    )()

    frame = await receive_event(ws)
    assert f'id="msg-{message.pk}"' in frame["html"]
    assert 'title="You reacted">👍</span>' in frame["html"]
    assert f'id="msg-{reaction.pk}"' not in frame["html"]
    await ws.disconnect()


async def test_a_reconnecting_tab_catches_up_exactly_and_in_order():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    last = await sync_to_async(lambda: LiveEvent.objects.last().pk)()

    def burst():
        for index in range(30):
            customer_writes(data["number_a"], f"missed {index}", conversation)
        customer_writes(data["number_b"], "not for anna")

    await sync_to_async(burst)()
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    # The tab already applied the newest two (they arrived before the drop).
    ids = await sync_to_async(
        lambda: list(
            LiveEvent.objects.filter(number=data["number_a"], pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    )()
    await hello(ws, after=ids[-1], seen=[*ids[-2:], last])
    # Its "after" is the highest it has seen; the lookback below it brings
    # what it has not, e.g. ids that committed late.
    got = []
    while True:
        frame = json.loads(await ws.receive_from())
        if frame["type"] == "synced":
            break
        got.append(frame["id"])
    assert got == ids[:-2], (got, ids, last)
    assert got == sorted(got)
    await ws.disconnect()


def test_an_inboxs_events_are_numbered_without_gaps_in_commit_order():
    data = world()
    first, _ = customer_writes(data["number_a"])
    customer_writes(data["number_b"])
    with pytest.raises(RuntimeError), transaction.atomic():
        customer_writes(data["number_a"], "rolled back", first)
        raise RuntimeError
    customer_writes(data["number_a"], "again", first)
    # An agent's event is numbered in each of the agent's inboxes.
    services.set_availability(user=data["anna"], availability="away")
    sequences = {
        number: list(
            LiveEvent.objects.filter(number=number)
            .order_by("pk")
            .values_list("sequence", flat=True)
        )
        for number in (data["number_a"], data["number_b"])
    }
    # The rolled-back event's number went to the next one.
    assert sequences[data["number_a"]] == [1, 2, 3]
    assert sequences[data["number_b"]] == [1]


def lost_doorbell(number, text, conversation):
    """An event committed whose channel message never left (its process died
    between the commit and the announcement)."""
    ring = realtime.announce
    realtime.announce = lambda event: None
    try:
        return customer_writes(number, text, conversation)
    finally:
        realtime.announce = ring


async def test_a_tab_asks_for_the_gap_before_an_event_and_gets_exactly_it():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws)
    await ws.receive_json_from()  # synced
    await sync_to_async(lost_doorbell)(data["number_a"], "lost", conversation)
    lost = await sync_to_async(lambda: LiveEvent.objects.last().pk)()
    await sync_to_async(customer_writes)(data["number_a"], "next", conversation)
    frame = await receive_event(ws)
    stream = data["number_a"].pk
    # The frame says where it stands: the tab sees the gap before it.
    assert (frame["stream"], frame["seq"]) == (stream, 3)
    await ws.send_json_to({"type": "missing", "stream": stream, "after": 1, "upto": 2})
    frame = await receive_event(ws)
    assert (frame["id"], frame["stream"], frame["seq"]) == (lost, stream, 2)
    assert await ws.receive_json_from() == {
        "type": "filled",
        "stream": stream,
        "upto": 2,
    }
    # Another agent's inbox is not theirs to ask for.
    await ws.send_json_to(
        {"type": "missing", "stream": data["number_b"].pk, "after": 0, "upto": 5}
    )
    assert await ws.receive_nothing(0.5)
    await ws.disconnect()


async def test_tabs_hear_where_their_streams_stand_so_a_lost_last_event_shows(
    monkeypatch,
):
    monkeypatch.setattr(hub, "HUB_HEADS_SECONDS", 0.2)
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws)
    await ws.receive_json_from()  # synced
    # The inbox's last event: no later one will show the tab the gap.
    await sync_to_async(lost_doorbell)(data["number_a"], "lost", conversation)
    while True:
        frame = await ws.receive_json_from()
        if frame["type"] == "heads" and frame["streams"] == {
            str(data["number_a"].pk): 2
        }:
            break
    await ws.disconnect()


async def test_a_database_failure_skips_a_message_not_the_socket(monkeypatch):
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws)
    await ws.receive_json_from()  # synced

    def restarting(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command")

    async def restarting_async(*args, **kwargs):
        restarting()

    monkeypatch.setattr(EventCache, "aget", restarting_async)
    monkeypatch.setattr(EventCache, "stream_range", restarting)
    await sync_to_async(customer_writes)(data["number_a"], "during", conversation)
    stream = data["number_a"].pk
    await ws.send_json_to({"type": "missing", "stream": stream, "after": 1, "upto": 2})
    assert await ws.receive_json_from() == {
        "type": "error",
        "code": "unavailable",
        "retry_after": 2,
    }
    # PostgreSQL is back: the same socket asks again and gets it.
    monkeypatch.undo()
    await ws.send_json_to({"type": "missing", "stream": stream, "after": 1, "upto": 2})
    frame = await receive_event(ws)
    assert (frame["stream"], frame["seq"]) == (stream, 2)
    await ws.disconnect()


async def test_a_reconnecting_tab_catches_up_from_its_last_contiguous_sequence():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])

    def burst():
        for index in range(5):
            customer_writes(data["number_a"], f"missed {index}", conversation)
        customer_writes(data["number_b"], "not for anna")

    await sync_to_async(burst)()
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    # The tab had 1 and 2, then 5 (3 and 4 were lost): it asks from 2, and
    # gets 3 to 6 (5 again: applying an event twice changes nothing).
    streams = {str(data["number_a"].pk): 2}
    await ws.send_json_to({"type": "hello", "streams": streams, "filter": ""})
    got = []
    while True:
        frame = await ws.receive_json_from()
        if frame["type"] == "synced":
            break
        got.append((frame["stream"], frame["seq"]))
    assert got == [(data["number_a"].pk, seq) for seq in (3, 4, 5, 6)]
    assert frame["streams"] == {str(data["number_a"].pk): 6}
    await ws.disconnect()


async def test_removing_an_agent_from_a_team_closes_their_stream():
    data = await sync_to_async(world)()
    conversation, _ = await sync_to_async(customer_writes)(data["number_a"])
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws, conversation=conversation.pk)
    assert json.loads(await ws.receive_from())["type"] == "synced"
    await sync_to_async(data["anna"].teams.remove)(data["team_a"])
    frames = [json.loads(await ws.receive_from()) for _ in range(2)]
    assert {"type": "access", "numbers": []} in frames
    (lost,) = [
        f["html"] for f in frames if "no longer have access" in f.get("html", "")
    ]
    # The customer panel (name, phone, consent, ad) goes with the thread.
    assert '<aside id="customer-panel"' in lost
    phone = await sync_to_async(lambda: conversation.customer.wa_id)()
    assert phone not in lost
    await sync_to_async(customer_writes)(data["number_a"], "after removal")
    assert await ws.receive_nothing(0.5)
    await ws.disconnect()


async def test_removing_a_team_from_a_number_closes_its_agents_streams():
    data = await sync_to_async(world)()
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws)
    assert json.loads(await ws.receive_from())["type"] == "synced"
    await sync_to_async(data["number_a"].teams.remove)(data["team_a"])
    assert json.loads(await ws.receive_from()) == {"type": "access", "numbers": []}
    await sync_to_async(customer_writes)(data["number_a"], "after removal")
    assert await ws.receive_nothing(0.5)
    await ws.disconnect()


async def test_deleting_a_team_closes_its_members_streams():
    data = await sync_to_async(world)()
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws)
    assert json.loads(await ws.receive_from())["type"] == "synced"
    await sync_to_async(data["team_a"].delete)()
    assert json.loads(await ws.receive_from()) == {"type": "access", "numbers": []}
    await sync_to_async(customer_writes)(data["number_a"], "after deletion")
    assert await ws.receive_nothing(0.5)
    await ws.disconnect()


def view_all_numbers() -> Permission:
    return Permission.objects.get(
        codename="view_all_numbers", content_type__app_label="conversations"
    )


async def test_staff_status_alone_shows_only_the_agents_teams():
    data = await sync_to_async(world)()
    anna = data["anna"]
    anna.is_staff = True
    await sync_to_async(anna.save)()
    ws = communicator(await sync_to_async(session_cookie)(anna))
    await ws.connect()
    await fresh_hello(ws)
    assert json.loads(await ws.receive_from())["type"] == "synced"
    await sync_to_async(customer_writes)(data["number_b"], "for billing")
    await sync_to_async(customer_writes)(data["number_a"], "for support")
    html = (await receive_event(ws))["html"]
    assert "for support" in html and "for billing" not in html
    assert await ws.receive_nothing(0.5)
    await ws.disconnect()


@pytest.mark.parametrize("via", ["user", "group"])
async def test_taking_view_all_numbers_away_closes_the_other_teams_inboxes(via):
    data = await sync_to_async(world)()
    anna = data["anna"]

    def grant():
        permission = view_all_numbers()
        if via == "user":
            anna.user_permissions.add(permission)
            return lambda: anna.user_permissions.remove(permission)
        group = Group.objects.create(name="Supervisors")
        group.permissions.add(permission)
        anna.groups.add(group)
        return lambda: group.permissions.remove(permission)

    revoke = await sync_to_async(grant)()
    ws = communicator(await sync_to_async(session_cookie)(anna))
    await ws.connect()
    await fresh_hello(ws)
    assert json.loads(await ws.receive_from())["type"] == "synced"
    await sync_to_async(customer_writes)(data["number_b"], "seen as supervisor")
    assert "seen as supervisor" in (await receive_event(ws))["html"]
    await sync_to_async(revoke)()
    assert json.loads(await ws.receive_from()) == {
        "type": "access",
        "numbers": [data["number_a"].pk],
    }
    await sync_to_async(customer_writes)(data["number_b"], "after demotion")
    assert await ws.receive_nothing(0.5)
    await ws.disconnect()


@pytest.mark.parametrize("change", ["deactivate", "delete"])
async def test_a_deactivated_or_deleted_agent_is_disconnected(change):
    data = await sync_to_async(world)()
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws)
    assert json.loads(await ws.receive_from())["type"] == "synced"

    def remove():
        if change == "delete":
            data["anna"].delete()
        else:
            data["anna"].is_active = False
            data["anna"].save()

    await sync_to_async(remove)()
    frames = []
    while True:
        output = await ws.receive_output(5)
        if output["type"] == "websocket.close":
            break
        frames.append(json.loads(output["text"]))
    assert output["code"] == 4401
    assert {"type": "access", "numbers": []} in frames


async def test_the_composer_flips_when_the_window_closes_or_opens():
    data = await sync_to_async(world)()

    def stale():
        conversation, _ = customer_writes(data["number_a"])
        Conversation.objects.filter(pk=conversation.pk).update(
            last_inbound_at=timezone.now() - timedelta(hours=30)
        )
        return conversation

    conversation = await sync_to_async(stale)()
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    await fresh_hello(ws, conversation=conversation.pk)
    assert json.loads(await ws.receive_from())["type"] == "synced"
    await sync_to_async(customer_writes)(data["number_a"], "I'm back", conversation)
    frame = await receive_event(ws)
    assert 'id="composer"' in frame["html"] and 'aria-label="Message"' in frame["html"]
    # The same composer as with the page, its emoji picker filled in.
    assert 'aria-label="Insert 😊"' in frame["html"]
    await ws.disconnect()


async def test_colleagues_see_an_agent_online_while_a_tab_of_theirs_is_open():
    data = await sync_to_async(world)()
    carla = await sync_to_async(UserFactory)(username="carla-live")
    await sync_to_async(carla.teams.add)(data["team_a"])
    watcher = communicator(data["anna_cookie"])
    await watcher.connect()
    await fresh_hello(watcher)
    assert json.loads(await watcher.receive_from())["type"] == "synced"

    carla_cookie = await sync_to_async(session_cookie)(carla)
    tabs = [communicator(carla_cookie), communicator(carla_cookie)]
    await tabs[0].connect()
    html = (await receive_event(watcher))["html"]
    assert f'id="agent-{carla.pk}" class="agent availability-online"' in html
    # The assign menus of the conversations open in Anna's tabs follow.
    assert f'<option id="assign-option-{carla.pk}"' in html
    assert "(Online)" in html

    # A second tab, then closing both: still online for the grace period
    # (the next page's tab may be on its way)...
    await tabs[1].connect()
    await tabs[0].disconnect()
    await tabs[1].disconnect()
    assert await watcher.receive_nothing(0.5)
    # ...then offline, as the settle queued at the close finds.
    later = timezone.now() + timedelta(seconds=settings.LIVE_TAB_GRACE_SECONDS + 1)
    await sync_to_async(services.settle_connection)(user_id=carla.pk, now=later)
    html = (await receive_event(watcher))["html"]
    assert 'class="agent availability-offline"' in html and "(Offline)" in html
    await watcher.disconnect()


def test_a_new_page_within_the_grace_period_keeps_the_agent_online(monkeypatch):
    data = world()
    carla = UserFactory(username="carla-live")
    carla.teams.add(data["team_a"])
    queued = []
    monkeypatch.setattr(
        doorbells,
        "ring",
        lambda task, *args, countdown=None: queued.append((task, args, countdown)),
    )

    services.open_tab(user=carla, tab="inbox-page")
    services.close_tab(user=carla, tab="inbox-page")
    services.open_tab(user=carla, tab="conversation-page")
    for _, args, _ in queued:
        services.settle_connection(user_id=args[0])

    # Colleagues heard once that she came online, and nothing since.
    events = LiveEvent.objects.filter(type="agent.updated")
    assert [event.data for event in events] == [{"agent": carla.pk, "connected": True}]
    assert queued == [
        (
            doorbells.SETTLE_AGENT_CONNECTION,
            (carla.pk,),
            settings.LIVE_TAB_GRACE_SECONDS + 1,
        )
    ]
    carla.refresh_from_db()
    assert carla.connected


def test_the_sweep_settles_agents_whose_delayed_settle_was_lost():
    data = world()
    anna = data["anna"]
    LiveTab.objects.filter(user=anna).update(
        closed_at=timezone.now() - timedelta(minutes=5)
    )
    # And an agent shown as connected without any tab at all.
    bruno = data["bruno"]
    LiveTab.objects.filter(user=bruno).delete()

    assert services.close_stale_tabs() == 1

    assert not User.objects.filter(pk__in=[anna.pk, bruno.pk], connected=True).exists()
    assert {
        event.data["agent"] for event in LiveEvent.objects.filter(type="agent.updated")
    } == {anna.pk, bruno.pk}


def test_tabs_left_open_by_a_dead_server_are_closed_by_the_sweep():
    data = world()
    anna = data["anna"]
    LiveTab.objects.filter(user=anna).update(
        seen_at=timezone.now() - timedelta(hours=1)
    )
    services.keep_tabs_open(tabs=["bruno-live-other-tab"])

    assert services.close_stale_tabs(now=timezone.now()) == 1

    anna.refresh_from_db()
    assert not anna.connected and anna.presence == "offline"
    assert User.objects.get(pk=data["bruno"].pk).connected
    event = LiveEvent.objects.get(type="agent.updated")
    assert event.data == {"agent": anna.pk, "connected": False}
    assert event.number_id == data["number_a"].pk


async def test_a_server_keeps_saying_which_tabs_are_open(settings):
    data = await sync_to_async(world)()
    # The keep-alive comes three times per stale period.
    settings.LIVE_TAB_STALE_SECONDS = 0.15
    ws = communicator(data["anna_cookie"])
    await ws.connect()
    tab = await sync_to_async(
        lambda: LiveTab.objects.exclude(channel_name__endswith="other-tab").get()
    )()
    for _ in range(100):
        await asyncio.sleep(0.05)
        seen = await sync_to_async(lambda: LiveTab.objects.get(pk=tab.pk).seen_at)()
        if seen > tab.seen_at:
            break
    assert seen > tab.seen_at
    await ws.disconnect()
