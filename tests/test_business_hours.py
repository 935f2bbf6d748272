"""Business hours (time zone, holidays) and the away reply, on a controllable
clock: every moment is given, nothing sleeps."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.urls import reverse

from conversations import services
from conversations.models import (
    AutomaticMessage,
    AwayReply,
    BusinessHours,
    Conversation,
    Message,
    OpeningHours,
)
from conversations.rules import business_hours as rules
from tests.factories import TeamFactory
from tests.fixtures.business import api_client_for
from tests.fixtures.routing import waiting_conversation

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = range(5)


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def office(holidays=()) -> rules.Schedule:
    """Monday to Friday 09:00–17:00 in Berlin."""
    return rules.Schedule(
        zone=BERLIN,
        week={day: [(time(9), time(17))] for day in WEEKDAYS},
        holidays=frozenset(holidays),
    )


# --- The rule ----------------------------------------------------------------------

# 2026-12-07 is a Monday.


@pytest.mark.parametrize(
    ("moment", "since"),
    [
        (berlin(2026, 12, 7, 10), None),
        (berlin(2026, 12, 7, 9), None),
        (berlin(2026, 12, 7, 17), berlin(2026, 12, 7, 17)),
        (berlin(2026, 12, 7, 22), berlin(2026, 12, 7, 17)),
        (berlin(2026, 12, 8, 8, 59), berlin(2026, 12, 7, 17)),
        # The weekend is one closed period, from Friday's close.
        (berlin(2026, 12, 13, 12), berlin(2026, 12, 11, 17)),
        (berlin(2026, 12, 14, 8), berlin(2026, 12, 11, 17)),
    ],
)
def test_open_and_closed_in_the_schedules_time_zone(moment, since):
    assert rules.closed_since(office(), moment) == since
    assert rules.is_open(office(), moment) is (since is None)


def test_the_same_moment_in_utc_is_read_in_the_schedules_zone():
    # 08:30 UTC is 09:30 in Berlin (winter time): open.
    assert rules.is_open(office(), datetime(2026, 12, 7, 8, 30, tzinfo=UTC))
    assert not rules.is_open(office(), datetime(2026, 12, 7, 7, 30, tzinfo=UTC))


def test_a_holiday_closes_its_whole_day_and_joins_the_closed_period():
    christmas = office(holidays=[date(2026, 12, 24), date(2026, 12, 25)])
    assert not rules.is_open(christmas, berlin(2026, 12, 24, 11))
    # Closed from Wednesday's close through the holidays and the weekend.
    assert rules.closed_since(christmas, berlin(2026, 12, 27, 12)) == berlin(
        2026, 12, 23, 17
    )
    assert rules.next_opening(christmas, berlin(2026, 12, 24, 11)) == berlin(
        2026, 12, 28, 9
    )


def test_opening_hours_follow_daylight_saving_time():
    # 2026-03-30 is the Monday after the change to summer time.
    assert rules.is_open(office(), datetime(2026, 3, 30, 7, 30, tzinfo=UTC))
    assert not rules.is_open(office(), datetime(2026, 3, 23, 7, 30, tzinfo=UTC))


def test_a_closing_time_of_midnight_ends_the_day():
    late = rules.Schedule(zone=BERLIN, week={0: [(time(18), time(0))]})
    assert rules.is_open(late, berlin(2026, 12, 7, 23, 59))
    assert rules.closed_since(late, berlin(2026, 12, 8, 0, 30)) == berlin(
        2026, 12, 8, 0
    )


def test_a_schedule_without_hours_is_always_closed():
    never = rules.Schedule(zone=BERLIN)
    assert rules.closed_since(never, berlin(2026, 12, 7, 10)) == rules.NEVER_OPEN
    assert rules.next_opening(never, berlin(2026, 12, 7, 10)) is None
    assert rules.add_open_seconds(never, berlin(2026, 12, 7, 10), 60) is None


def test_time_counts_in_open_hours_only():
    friday_4pm = berlin(2026, 12, 11, 16)
    # Two open hours from Friday 16:00: one on Friday, one on Monday.
    assert rules.add_open_seconds(office(), friday_4pm, 7200) == berlin(
        2026, 12, 14, 10
    )
    assert rules.open_seconds(office(), friday_4pm, berlin(2026, 12, 14, 10)) == 7200
    # From a closed moment, the clock starts at the next opening.
    assert rules.add_open_seconds(office(), berlin(2026, 12, 7, 6), 60) == berlin(
        2026, 12, 7, 9, 1
    )


# --- Away replies ------------------------------------------------------------------

AWAY = "We're closed now and answer from 9:00 tomorrow."


@pytest.fixture
def support_hours(team):
    hours = BusinessHours.objects.create(
        name="Support", time_zone="Europe/Berlin", team=team, away_message=AWAY
    )
    OpeningHours.objects.bulk_create(
        OpeningHours(schedule=hours, weekday=day, opens=time(9), closes=time(17))
        for day in WEEKDAYS
    )
    return hours


def wrote_at(number, team, moment: datetime, **fields) -> Conversation:
    conversation = waiting_conversation(number, team=team, **fields)
    Conversation.objects.filter(pk=conversation.pk).update(last_inbound_at=moment)
    conversation.refresh_from_db()
    return conversation


def away_replies(conversation) -> list[Message]:
    return list(
        Message.objects.filter(
            conversation=conversation, automatic__kind=AutomaticMessage.Kind.AWAY
        )
    )


def test_a_customer_writing_at_night_gets_one_away_reply(number, team, support_hours):
    conversation = wrote_at(number, team, berlin(2026, 12, 7, 21))

    assert services.send_away_replies(now=berlin(2026, 12, 7, 21, 0, 10)) == 1
    assert services.send_away_replies(now=berlin(2026, 12, 7, 23)) == 0

    (reply,) = away_replies(conversation)
    assert reply.text == AWAY and reply.sender is None
    assert reply.direction == "outbound" and reply.status == "queued"
    record = AwayReply.objects.get(conversation=conversation)
    assert record.closed_since == berlin(2026, 12, 7, 17)
    assert record.message == reply


def test_writing_again_in_the_next_closed_period_gets_another(
    number, team, support_hours
):
    conversation = wrote_at(number, team, berlin(2026, 12, 7, 21))
    services.send_away_replies(now=berlin(2026, 12, 7, 21, 1))
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=berlin(2026, 12, 8, 19)
    )
    assert services.send_away_replies(now=berlin(2026, 12, 8, 19, 1)) == 1
    assert len(away_replies(conversation)) == 2


def test_nothing_is_sent_while_open(number, team, support_hours):
    wrote_at(number, team, berlin(2026, 12, 7, 10))
    assert services.send_away_replies(now=berlin(2026, 12, 7, 10, 1)) == 0


def test_a_message_from_before_the_close_gets_no_away_reply(
    number, team, support_hours
):
    wrote_at(number, team, berlin(2026, 12, 7, 16, 30))
    assert services.send_away_replies(now=berlin(2026, 12, 7, 17, 5)) == 0


def test_on_a_holiday_the_customer_gets_the_away_reply(number, team, support_hours):
    support_hours.holidays.create(date=date(2026, 12, 24), name="Christmas Eve")
    wrote_at(number, team, berlin(2026, 12, 24, 11))
    assert services.send_away_replies(now=berlin(2026, 12, 24, 11, 1)) == 1


def test_no_away_reply_outside_the_customer_service_window(number, team, support_hours):
    # Wrote on Friday night; nobody swept until Sunday night: the 24-hour
    # window has closed, so only a template could reach the customer.
    wrote_at(number, team, berlin(2026, 12, 11, 20))
    assert services.send_away_replies(now=berlin(2026, 12, 13, 21)) == 0


def test_no_away_reply_to_a_customer_who_opted_out(number, team, support_hours):
    conversation = wrote_at(number, team, berlin(2026, 12, 7, 21))
    services.opt_out_everywhere(
        customer=conversation.customer, source="whatsapp", wording="STOP"
    )
    assert services.send_away_replies(now=berlin(2026, 12, 7, 21, 1)) == 0


def test_resolved_conversations_and_empty_away_messages_send_nothing(
    number, team, support_hours
):
    wrote_at(number, team, berlin(2026, 12, 7, 21), status="resolved")
    assert services.send_away_replies(now=berlin(2026, 12, 7, 21, 1)) == 0
    wrote_at(number, team, berlin(2026, 12, 7, 21))
    BusinessHours.objects.update(away_message="")
    assert services.send_away_replies(now=berlin(2026, 12, 7, 21, 1)) == 0


def test_a_team_with_hours_of_its_own_overrides_the_numbers(number, team):
    night_shift = BusinessHours.objects.create(
        name="Night shift", time_zone="Europe/Berlin", team=team, away_message="Team"
    )
    OpeningHours.objects.create(
        schedule=night_shift, weekday=0, opens=time(18), closes=time(0)
    )
    line = BusinessHours.objects.create(
        name="Line", time_zone="Europe/Berlin", number=number, away_message="Line"
    )
    OpeningHours.objects.create(
        schedule=line, weekday=0, opens=time(9), closes=time(17)
    )
    teamless = wrote_at(number, None, berlin(2026, 12, 7, 21))
    staffed = wrote_at(number, team, berlin(2026, 12, 7, 21))

    assert services.send_away_replies(now=berlin(2026, 12, 7, 21, 1)) == 1
    assert [m.text for m in away_replies(teamless)] == ["Line"]
    assert away_replies(staffed) == []
    assert services.hours_for(staffed) == night_shift
    assert services.hours_for(teamless) == line


def test_the_thread_shows_the_away_reply_as_automatic(
    agent_client, number, team, support_hours
):
    conversation = wrote_at(number, team, berlin(2026, 12, 7, 21))
    services.send_away_replies(now=berlin(2026, 12, 7, 21, 1))
    response = agent_client.get(f"/conversations/{conversation.pk}/")
    assert response.status_code == 200
    assert b"Away reply \xc2\xb7 automatic" in response.content


def test_away_replies_are_swept_often(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["send-away-replies"]
    assert entry["task"] == "conversations.tasks.send_away_replies"
    assert entry["schedule"] <= 60


def test_a_schedule_belongs_to_a_team_or_a_number_not_both(number, team):
    with pytest.raises(IntegrityError), transaction.atomic():
        BusinessHours.objects.create(
            name="Both", time_zone="UTC", team=team, number=number
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        BusinessHours.objects.create(name="Neither", time_zone="UTC")
    assert not BusinessHours.objects.exists()


def test_closed_periods_are_keyed_by_their_start(number, team, support_hours):
    conversation = wrote_at(number, team, berlin(2026, 12, 7, 21))
    services.send_away_replies(now=berlin(2026, 12, 7, 21, 1))
    wrote_again = berlin(2026, 12, 8, 6)
    Conversation.objects.filter(pk=conversation.pk).update(last_inbound_at=wrote_again)
    # Still Monday night's closed period: no second reply before Tuesday 9:00.
    assert services.send_away_replies(now=wrote_again + timedelta(minutes=1)) == 0


# --- Admin and API -----------------------------------------------------------------


def test_an_admin_sets_a_teams_hours_with_holidays(admin_client, team):
    form = {
        "name": "Support",
        "time_zone": "Europe/Berlin",
        "team": team.pk,
        "away_message": AWAY,
        "opening_hours-TOTAL_FORMS": "2",
        "opening_hours-INITIAL_FORMS": "0",
        "opening_hours-0-weekday": "0",
        "opening_hours-0-opens": "09:00",
        "opening_hours-0-closes": "13:00",
        "opening_hours-1-weekday": "0",
        "opening_hours-1-opens": "14:00",
        "opening_hours-1-closes": "18:00",
        "holidays-TOTAL_FORMS": "1",
        "holidays-INITIAL_FORMS": "0",
        "holidays-0-date": "2026-12-24",
        "holidays-0-name": "Christmas Eve",
    }
    url = reverse("admin:conversations_businesshours_add")
    assert admin_client.post(url, form).status_code == 302
    hours = BusinessHours.objects.get(team=team)
    assert hours.opening_hours.count() == 2 and hours.holidays.count() == 1
    changelist = admin_client.get(
        reverse("admin:conversations_businesshours_changelist")
    )
    assert changelist.status_code == 200

    overlapping = {**form, "name": "Again", "opening_hours-1-opens": "12:00"}
    hours.delete()
    response = admin_client.post(url, overlapping)
    assert response.status_code == 200
    assert b"Monday: opening hours overlap." in response.content
    assert not BusinessHours.objects.exists()


def hours_body(**overrides) -> dict:
    return {
        "name": "Support",
        "time_zone": "Europe/Berlin",
        "away_message": AWAY,
        "opening_hours": [
            {"weekday": day, "opens": "09:00", "closes": "17:00"} for day in WEEKDAYS
        ],
        "holidays": [{"date": "2026-12-24", "name": "Christmas Eve"}],
        **overrides,
    }


def test_business_hours_over_the_api(team, agent):
    client = api_client_for(agent)
    body = hours_body(team=team.pk)
    assert (
        client.post("/api/v1/business-hours/", body, format="json").status_code == 403
    )
    agent.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_businesshours", "change_businesshours"]
        )
    )
    response = client.post("/api/v1/business-hours/", body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["team"] == team.pk and created["number"] is None
    assert created["opening_hours"][0] == {
        "weekday": 0,
        "opens": "09:00",
        "closes": "17:00",
    }
    assert created["holidays"] == [{"date": "2026-12-24", "name": "Christmas Eve"}]
    assert isinstance(created["open_now"], bool) and created["next_opening"]

    url = f"/api/v1/business-hours/{created['id']}/"
    changed = client.put(url, hours_body(opening_hours=[], holidays=[]), format="json")
    assert changed.status_code == 200
    assert (
        changed.json()["opening_hours"] == [] and changed.json()["next_opening"] is None
    )
    assert (
        client.get("/api/v1/business-hours/").json()["results"][0]["id"]
        == created["id"]
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        (
            {"opening_hours": [{"weekday": 0, "opens": "17:00", "closes": "09:00"}]},
            "opening_hours",
        ),
        (
            {"opening_hours": [{"weekday": 9, "opens": "09:00", "closes": "17:00"}]},
            "opening_hours",
        ),
        ({"team": None}, "team"),
    ],
)
def test_bad_business_hours_are_refused(team, agent, overrides, field):
    agent.user_permissions.add(Permission.objects.get(codename="add_businesshours"))
    body = hours_body(**{"team": team.pk, **overrides})
    response = api_client_for(agent).post(
        "/api/v1/business-hours/", body, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:")
    assert not BusinessHours.objects.exists()


def test_another_teams_hours_are_not_found(agent):
    other = BusinessHours.objects.create(
        name="Billing", time_zone="UTC", team=TeamFactory(name="Billing")
    )
    client = api_client_for(agent)
    assert client.get(f"/api/v1/business-hours/{other.pk}/").status_code == 404
    assert client.get("/api/v1/business-hours/").json()["results"] == []
