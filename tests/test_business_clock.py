"""The sandbox's business clock: business hours read as if it were another
moment, for development against the sandbox only (off by default, never
against Meta), so out-of-hours behaviour shows without waiting."""

import json
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from conversations import services
from conversations.delivery import ratelimit
from conversations.models import (
    AutomaticMessage,
    Conversation,
    Message,
    ServicePolicy,
)
from conversations.rules import business_hours as rules
from conversations.services import business_clock
from sandbox.payloads import sign
from tests.factories import MetaAppFactory
from tests.fixtures.routing import office_hours, waiting_conversation

BERLIN = ZoneInfo("Europe/Berlin")
AWAY = "We're closed now and answer from 9:00."
URL = "/dev/business-clock/"


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def office(**fields) -> rules.Schedule:
    """Monday to Friday 09:00–17:00 in Berlin."""
    week = {day: [(time(9), time(17))] for day in range(5)}
    return rules.Schedule(zone=BERLIN, week=week, **fields)


# --- The rule: a shifted schedule --------------------------------------------------

# 2026-12-07 is a Monday.


def test_a_shifted_schedule_is_read_that_far_ahead_and_answers_real_time():
    ahead = office(shift=timedelta(hours=5))

    # Real 13:00 is 18:00 on the shifted clock: closed since its 17:00,
    # which is real 12:00.
    assert rules.closed_since(ahead, berlin(2026, 12, 7, 13)) == berlin(2026, 12, 7, 12)
    assert rules.is_open(ahead, berlin(2026, 12, 7, 11, 59)) is True
    assert rules.next_opening(ahead, berlin(2026, 12, 7, 13)) == berlin(2026, 12, 8, 4)
    assert (
        rules.open_seconds(ahead, berlin(2026, 12, 7, 11), berlin(2026, 12, 7, 13))
        == 3600
    )


@pytest.mark.parametrize(
    ("moment", "closing"),
    [
        (berlin(2026, 12, 7, 10), berlin(2026, 12, 7, 17)),
        (berlin(2026, 12, 7, 20), berlin(2026, 12, 8, 17)),
        # Friday evening: the next close is Monday's.
        (berlin(2026, 12, 11, 18), berlin(2026, 12, 14, 17)),
    ],
)
def test_the_next_closing(moment, closing):
    assert rules.next_closing(office(), moment) == closing


def test_back_to_back_intervals_close_once():
    late = rules.Schedule(
        zone=BERLIN, week={0: [(time(17), time(0))], 1: [(time(0), time(2))]}
    )
    assert rules.next_closing(late, berlin(2026, 12, 7, 18)) == berlin(2026, 12, 8, 2)


# --- The switch ---------------------------------------------------------------------


@pytest.fixture
def clock_on(settings):
    settings.DEBUG = True
    settings.SANDBOX_CLOCK = True
    settings.WHATSAPP_GRAPH_API_URL = "http://127.0.0.1:8001"
    forget_shift()
    yield settings
    forget_shift()


def forget_shift() -> None:
    ratelimit.connection().delete(business_clock.KEY)


@pytest.mark.parametrize(
    ("debug", "switch", "graph"),
    [
        (True, False, "http://127.0.0.1:8001"),
        (False, True, "http://127.0.0.1:8001"),
        (True, True, "https://graph.facebook.com"),
        (True, True, "http://sandbox.example.com:8001"),
    ],
)
def test_the_clock_is_off_unless_debug_switch_and_a_local_graph_api(
    clock_on, client, number, debug, switch, graph
):
    business_clock.store_shift(timedelta(hours=9))
    clock_on.DEBUG, clock_on.SANDBOX_CLOCK = debug, switch
    clock_on.WHATSAPP_GRAPH_API_URL = graph

    assert business_clock.enabled() is False
    assert business_clock.shift() == timedelta(0)
    body = json.dumps({"phone_number_id": number.phone_number_id}).encode()
    assert post(client, body, number.app.app_secret).status_code == 404
    with pytest.raises(services.WorkspaceError):
        services.move_business_clock(number=number, jump="closed")


def test_off_by_default(settings):
    assert settings.SANDBOX_CLOCK is False


# --- The endpoint the sandbox posts to --------------------------------------------


def post(client, body: bytes, secret: str | None):
    headers = {"HTTP_X_HUB_SIGNATURE_256": sign(body, secret)} if secret else {}
    return client.post(URL, body, content_type="application/json", **headers)


def move(client, number, **fields):
    body = json.dumps({"phone_number_id": number.phone_number_id, **fields}).encode()
    return post(client, body, number.app.app_secret)


@pytest.fixture
def number_hours(number):
    return office_hours(AWAY, number=number)


def test_only_a_request_signed_by_the_numbers_app_moves_it(
    clock_on, client, number, number_hours
):
    body = json.dumps({"phone_number_id": number.phone_number_id, "jump": "closed"})
    assert post(client, body.encode(), None).status_code == 403
    assert post(client, body.encode(), "not-the-secret").status_code == 403
    other = MetaAppFactory()
    assert post(client, body.encode(), other.app_secret).status_code == 404
    assert business_clock.shift() == timedelta(0)


def test_pretending_a_moment_reads_it_in_the_hours_zone(
    clock_on, client, number, number_hours
):
    answer = move(client, number, at="2026-12-12T11:00").json()

    assert answer["now"].startswith("2026-12-12T11:00")
    assert answer["time_zone"] == "Europe/Berlin"
    assert answer["hours"] == {"id": number_hours.pk, "name": "Office"}
    assert answer["open"] is False
    assert answer["closed_since"].startswith("2026-12-11T17:00")
    assert answer["next_opening"].startswith("2026-12-14T09:00")
    assert not services.is_open_now(number_hours)

    assert move(client, number, reset=True).json()["shift_seconds"] == 0
    assert business_clock.shift() == timedelta(0)


def test_jumps_land_on_the_next_closing_and_opening(
    clock_on, client, number, number_hours
):
    closed = move(client, number, jump="closed").json()
    assert closed["open"] is False
    since = datetime.fromisoformat(closed["closed_since"])
    now = datetime.fromisoformat(closed["now"])
    # The period began at the jump (on its whole second), at 17:00.
    assert since.time() == time(17)
    assert timedelta(0) <= now - since < timedelta(seconds=2)

    opened = move(client, number, jump="open").json()
    assert opened["open"] is True
    now = datetime.fromisoformat(opened["now"])
    assert (now.hour, now.minute, now.second) in {(9, 0, 0), (9, 0, 1)}
    assert services.is_open_now(number_hours)


def test_a_number_without_hours_cannot_jump(clock_on, client, number):
    answer = move(client, number, jump="closed")

    assert answer.status_code == 400
    assert answer.json()["code"] == "no_business_hours"


def away_replies(conversation) -> int:
    return Message.objects.filter(
        conversation=conversation, automatic__kind=AutomaticMessage.Kind.AWAY
    ).count()


def wrote_now(conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now()
    )


def test_fast_forwarded_to_a_closed_period_a_customer_gets_the_away_reply(
    clock_on, client, number, number_hours
):
    move(client, number, jump="open")
    conversation = waiting_conversation(number)
    wrote_now(conversation)
    assert services.send_away_replies() == 0

    move(client, number, jump="closed")
    wrote_now(conversation)
    assert services.send_away_replies() == 1
    assert services.send_away_replies() == 0
    assert away_replies(conversation) == 1
    # Messages keep real time: only the hours moved.
    reply = Message.objects.get(automatic__kind=AutomaticMessage.Kind.AWAY)
    assert abs(reply.timestamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_service_levels_count_open_hours_by_the_clock(
    clock_on, client, number, number_hours, team
):
    ServicePolicy.objects.create(
        name="Office", team=team, first_response_minutes=60, business_hours_only=True
    )
    closed = move(client, number, jump="closed").json()
    conversation = waiting_conversation(number, team=team)

    level = services.refresh_service_level(conversation=conversation)

    # Started at closing time: the hour is counted from the next opening,
    # shown in real time.
    shift = timedelta(seconds=closed["shift_seconds"])
    opening = datetime.fromisoformat(closed["next_opening"]) - shift
    expected = opening + timedelta(hours=1)
    assert abs(level.first_response_due_at - expected) < timedelta(seconds=1)
