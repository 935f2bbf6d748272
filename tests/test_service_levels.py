"""Service levels: due times in business hours, met and missed steps, the
window-aware escalation, the due chip and the inbox's "due" order. Times
are given, never waited for."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import (
    BusinessHours,
    Conversation,
    Label,
    LiveEvent,
    Message,
    OpeningHours,
    ServiceLevel,
    ServicePolicy,
)
from conversations.rules import business_hours
from conversations.rules import service_levels as rules
from conversations.selectors import service_levels as attainment
from tests.factories import MessageFactory, TeamFactory, UserFactory
from tests.fixtures.business import api_client_for
from tests.fixtures.routing import waiting_conversation

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = business_hours.Schedule(
    zone=BERLIN, week={day: [(time(9), time(17))] for day in range(5)}
)


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def facts(started_at, **fields) -> rules.Facts:
    values = {
        "first_response_at": None,
        "awaiting_since": None,
        "resolved_at": None,
        "window_closes_at": started_at + timedelta(hours=24),
        **fields,
    }
    return rules.Facts(started_at=started_at, **values)


# --- The rule ----------------------------------------------------------------------


def test_a_first_response_is_due_in_open_hours():
    friday_4pm = berlin(2026, 12, 11, 16)
    standing = rules.standing(
        rules.Targets(first_response_minutes=120),
        facts(friday_4pm),
        now=friday_4pm,
        schedule=OFFICE,
    )
    assert standing.first_response_due_at == berlin(2026, 12, 14, 10)
    assert standing.due_at == berlin(2026, 12, 14, 10)
    assert standing.first_response_met is None


def test_around_the_clock_without_a_schedule():
    start = datetime(2026, 12, 11, 16, tzinfo=UTC)
    standing = rules.standing(
        rules.Targets(first_response_minutes=120), facts(start), now=start
    )
    assert standing.first_response_due_at == start + timedelta(hours=2)


def test_steps_are_met_or_missed_by_when_they_happened():
    start = datetime(2026, 12, 7, 10, tzinfo=UTC)
    targets = rules.Targets(first_response_minutes=30, resolution_minutes=240)
    on_time = rules.standing(
        targets,
        facts(
            start,
            first_response_at=start + timedelta(minutes=20),
            resolved_at=start + timedelta(hours=5),
        ),
        now=start + timedelta(hours=6),
    )
    assert on_time.first_response_met is True
    assert on_time.resolution_met is False
    assert on_time.due_at is None and on_time.escalated is False


def test_a_next_response_is_due_from_the_customers_oldest_unanswered_message():
    start = datetime(2026, 12, 7, 10, tzinfo=UTC)
    wrote = start + timedelta(hours=1)
    standing = rules.standing(
        rules.Targets(first_response_minutes=30, next_response_minutes=60),
        facts(
            start, first_response_at=start + timedelta(minutes=5), awaiting_since=wrote
        ),
        now=wrote,
    )
    assert standing.next_response_due_at == wrote + timedelta(hours=1)
    assert standing.due_at == wrote + timedelta(hours=1)


def test_the_window_closing_before_the_reply_is_due_escalates():
    # Friday 20:00: the first response is due Monday 10:00 in open hours,
    # but the reply window closes Saturday 20:00.
    wrote = berlin(2026, 12, 11, 20)
    standing = rules.standing(
        rules.Targets(first_response_minutes=60),
        facts(wrote),
        now=wrote,
        schedule=OFFICE,
    )
    assert standing.due_at == berlin(2026, 12, 14, 10)
    assert standing.escalated is True
    assert standing.attention_at == berlin(2026, 12, 12, 20)


@pytest.mark.parametrize(
    ("now_after", "escalated"),
    [(timedelta(hours=1), False), (timedelta(hours=25), False)],
)
def test_no_escalation_when_the_reply_is_due_first_or_the_window_is_gone(
    now_after, escalated
):
    wrote = berlin(2026, 12, 7, 10)
    standing = rules.standing(
        rules.Targets(first_response_minutes=60 if now_after.days == 0 else 60 * 40),
        facts(wrote),
        now=wrote + now_after,
        schedule=OFFICE,
    )
    assert standing.escalated is escalated
    assert standing.attention_at == standing.due_at


# --- Conversations ---------------------------------------------------------------


@pytest.fixture
def policy(team):
    return ServicePolicy.objects.create(
        name="Support",
        team=team,
        first_response_minutes=30,
        next_response_minutes=60,
        resolution_minutes=24 * 60,
        business_hours_only=False,
    )


def started(number, team, ago: timedelta) -> Conversation:
    conversation = waiting_conversation(number, team=team)
    moment = timezone.now() - ago
    Conversation.objects.filter(pk=conversation.pk).update(
        created_at=moment, last_inbound_at=moment
    )
    Message.objects.filter(conversation=conversation).update(timestamp=moment)
    conversation.refresh_from_db()
    return conversation


def test_a_conversation_gets_its_teams_policy_and_due_time(number, team, policy):
    conversation = started(number, team, timedelta(minutes=10))
    level = services.refresh_service_level(conversation=conversation)
    assert level.policy == policy
    assert level.due_at == conversation.created_at + timedelta(minutes=30)
    assert level.escalated is False and level.first_response_met is None
    event = LiveEvent.objects.filter(conversation=conversation).latest("id")
    assert event.data["change"] == "service_level"


def test_a_labels_policy_wins_over_the_teams(number, team, policy, agent):
    vip = Label.objects.create(name="vip")
    fast = ServicePolicy.objects.create(
        name="VIP", label=vip, first_response_minutes=5, business_hours_only=False
    )
    conversation = started(number, team, timedelta(minutes=1))
    services.set_labels(conversation=conversation, labels=[vip], by=agent)
    level = ServiceLevel.objects.get(conversation=conversation)
    assert level.policy == fast
    assert level.due_at == conversation.created_at + timedelta(minutes=5)


def test_the_agents_reply_meets_the_first_response(number, team, policy, agent):
    conversation = started(number, team, timedelta(minutes=10))
    services.send_reply(
        conversation=conversation, kind="text", content={"body": "Hi!"}, sender=agent
    )
    level = ServiceLevel.objects.get(conversation=conversation)
    assert level.first_response_met is True
    # Resolution is still owed.
    assert level.due_at == level.resolution_due_at


def test_a_late_first_response_is_missed(number, team, policy, agent):
    conversation = started(number, team, timedelta(hours=2))
    services.send_reply(
        conversation=conversation, kind="text", content={"body": "Sorry!"}, sender=agent
    )
    assert (
        ServiceLevel.objects.get(conversation=conversation).first_response_met is False
    )


def test_next_responses_are_counted_met_or_missed(number, team, policy, agent):
    conversation = started(number, team, timedelta(hours=5))
    replied = timezone.now() - timedelta(hours=4)
    MessageFactory(
        conversation=conversation,
        direction="outbound",
        status="sent",
        sender=agent,
        timestamp=replied,
    )
    Conversation.objects.filter(pk=conversation.pk).update(first_response_at=replied)
    # The customer wrote again 3 hours ago; the next response was due 2 hours ago.
    MessageFactory(
        conversation=conversation, timestamp=timezone.now() - timedelta(hours=3)
    )
    services.refresh_service_levels()
    level = ServiceLevel.objects.get(conversation=conversation)
    assert level.next_response_due_at is not None and level.overdue

    services.send_reply(
        conversation=conversation, kind="text", content={"body": "Here"}, sender=agent
    )
    MessageFactory(conversation=conversation, timestamp=timezone.now())
    services.send_reply(
        conversation=conversation, kind="text", content={"body": "Fast"}, sender=agent
    )
    level.refresh_from_db()
    assert (level.next_responses_met, level.next_responses_missed) == (1, 1)
    assert level.next_response_due_at is None


def test_resolving_records_the_resolution_and_clears_the_due_time(
    number, team, policy, agent
):
    conversation = started(number, team, timedelta(hours=1))
    services.change_status(conversation=conversation, status="resolved", by=agent)
    level = ServiceLevel.objects.get(conversation=conversation)
    assert level.resolution_met is True and level.due_at is None


def test_a_conversation_without_policy_has_no_standing(number, team):
    conversation = started(number, team, timedelta(minutes=1))
    assert services.refresh_service_level(conversation=conversation) is None
    assert not ServiceLevel.objects.exists()


def test_business_hours_push_the_due_time_and_the_window_escalates(number, team):
    hours = BusinessHours.objects.create(name="Office", time_zone="UTC", team=team)
    # Open one hour a day, Monday to Friday, at 03:00 UTC: almost always
    # closed, so a first response due in 4 open hours lands days later,
    # after the customer's window has closed.
    OpeningHours.objects.bulk_create(
        OpeningHours(schedule=hours, weekday=day, opens=time(3), closes=time(4))
        for day in range(5)
    )
    ServicePolicy.objects.create(name="Office", team=team, first_response_minutes=240)
    conversation = started(number, team, timedelta(minutes=1))
    level = services.refresh_service_level(conversation=conversation)
    window_closes = conversation.last_inbound_at + timedelta(hours=24)
    assert level.due_at > window_closes
    assert level.escalated is True and level.attention_at == window_closes


# --- The inbox ---------------------------------------------------------------------


def test_the_due_order_puts_the_real_deadline_first(
    agent_client, agent, number, team, policy
):
    """An escalated conversation (its window closes in 10 minutes, its next
    response is due in hours) comes before one whose first response is due
    in 15 minutes."""
    ServicePolicy.objects.filter(pk=policy.pk).update(
        next_response_minutes=26 * 60, resolution_minutes=48 * 60
    )
    soon = started(number, team, timedelta(minutes=15))
    later = started(number, team, timedelta(minutes=1))
    elsewhere = started(number, None, timedelta(minutes=1))
    escalated = started(number, team, timedelta(hours=23, minutes=55))
    replied = escalated.created_at + timedelta(minutes=1)
    MessageFactory(
        conversation=escalated,
        direction="outbound",
        status="sent",
        sender=agent,
        timestamp=replied,
    )
    wrote_again = timezone.now() - timedelta(hours=23, minutes=50)
    MessageFactory(conversation=escalated, timestamp=wrote_again)
    Conversation.objects.filter(pk=escalated.pk).update(
        first_response_at=replied, last_inbound_at=wrote_again
    )
    services.refresh_service_levels()
    assert ServiceLevel.objects.get(conversation=escalated).escalated is True

    response = agent_client.get("/?order=due")
    assert response.status_code == 200
    page = response.content.decode()
    order = [page.index(f'id="row-{c.pk}"') for c in (escalated, soon, later)]
    assert order == sorted(order)
    assert f'id="row-{elsewhere.pk}"' not in page
    assert "Reply before" in page and "(window closes)" in page
    assert 'data-order="asc"' in page


def test_an_overdue_conversation_shows_its_chip(agent_client, number, team, policy):
    conversation = started(number, team, timedelta(hours=1))
    services.refresh_service_level(conversation=conversation)
    response = agent_client.get(f"/conversations/{conversation.pk}/")
    assert b"Overdue since" in response.content


def test_service_levels_are_swept_often(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-service-levels"]
    assert entry["task"] == "conversations.tasks.refresh_service_levels"
    assert entry["schedule"] <= 60


# --- Reports, API, admin -----------------------------------------------------------


def report_ready(number, team, policy, agent):
    """Two conversations of the agent: one answered in time, one late."""
    on_time = started(number, team, timedelta(minutes=10))
    late = started(number, team, timedelta(hours=2))
    for conversation in (on_time, late):
        Conversation.objects.filter(pk=conversation.pk).update(assignee=agent)
        conversation.refresh_from_db()
        services.send_reply(
            conversation=conversation, kind="text", content={"body": "Hi"}, sender=agent
        )
    return on_time, late


def test_reports_show_attainment_by_team_agent_and_day(
    admin_client, number, team, policy, agent
):
    on_time, late = report_ready(number, team, policy, agent)
    now = timezone.now()
    tables = attainment.build(agent, since=now - timedelta(days=1), until=now)
    (by_agent,) = tables["sla_by_agent"].rows
    name = agent.display_name or agent.username
    assert by_agent["agent"] == name
    assert (by_agent["first_response_met"], by_agent["first_response_missed"]) == (1, 1)
    assert by_agent["first_response_attainment"] == 50.0
    assert tables["sla_by_team"].rows[0]["team"] == team.name
    # One row per day the conversations started on (two just after midnight).
    days = {
        timezone.localtime(conversation.created_at).date()
        for conversation in (on_time, late)
    }
    by_day = tables["sla_by_day"].rows
    assert len(by_day) == len(days)
    assert sum(row["conversations"] for row in by_day) == 2

    page = admin_client.get("/reports/")
    assert page.status_code == 200
    content = page.content.decode()
    assert 'id="sla_by_agent"' in content
    # Each bar says its share; the axis runs to 100 %.
    assert f"{name}, First response, % met: 50.0%" in content
    assert ">100%</text>" in content
    csv = admin_client.get("/reports/sla_by_team.csv")
    assert csv.status_code == 200
    assert csv.content.decode().splitlines()[1].startswith(f"{team.name},2,1,1,50.0")

    # Another team's agent sees none of it.
    stranger = UserFactory(username="stranger")
    stranger.teams.add(TeamFactory(name="Sales"))
    elsewhere = attainment.build(stranger, since=now - timedelta(days=1), until=now)
    assert all(not table.rows for table in elsewhere.values())


def test_attainment_over_the_api_needs_the_reports_permission(
    number, team, policy, agent
):
    report_ready(number, team, policy, agent)
    client = api_client_for(agent)
    assert client.get("/api/v1/reports/service-levels/").status_code == 403
    agent.user_permissions.add(Permission.objects.get(codename="view_reports"))
    agent = type(agent).objects.get(pk=agent.pk)
    response = api_client_for(agent).get("/api/v1/reports/service-levels/?days=7")
    assert response.status_code == 200
    assert response.json()["sla_by_agent"][0]["first_response_attainment"] == 50.0
    # The same table as the page's CSV, by token.
    csv = api_client_for(agent).get("/api/v1/reports/sla_by_agent.csv?range=7d")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    header, row = csv.content.decode().splitlines()
    assert header.startswith("agent,conversations,first_response_met")
    assert row.split(",")[1:5] == ["2", "1", "1", "50.0"]


def test_a_conversations_standing_over_the_api(number, team, policy, agent):
    conversation = started(number, team, timedelta(minutes=10))
    services.refresh_service_level(conversation=conversation)
    response = api_client_for(agent).get(
        f"/api/v1/conversations/{conversation.pk}/service-level/"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["policy"] == policy.pk and body["escalated"] is False
    assert body["due_at"] and body["first_response_met"] is None


def test_service_policies_over_the_api(team, agent):
    client = api_client_for(agent)
    body = {"name": "Fast", "team": team.pk, "first_response_minutes": 15}
    assert (
        client.post("/api/v1/service-policies/", body, format="json").status_code == 403
    )
    agent.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_servicepolicy", "change_servicepolicy"]
        )
    )
    response = client.post("/api/v1/service-policies/", body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["first_response_minutes"] == 15 and created["business_hours_only"]

    both = {**body, "label": Label.objects.create(name="vip").pk}
    refused = client.post("/api/v1/service-policies/", both, format="json")
    assert refused.status_code == 400 and refused.json()["detail"].startswith("team:")
    zero = client.put(
        f"/api/v1/service-policies/{created['id']}/",
        {**body, "first_response_minutes": 0},
        format="json",
    )
    assert zero.status_code == 400
    listed = client.get("/api/v1/service-policies/").json()["results"]
    assert [p["id"] for p in listed] == [created["id"]]


def test_admin_service_level_pages(admin_client, number, team, policy):
    conversation = started(number, team, timedelta(minutes=10))
    services.refresh_service_level(conversation=conversation)
    for name in ("servicepolicy", "servicelevel"):
        page = admin_client.get(reverse(f"admin:conversations_{name}_changelist"))
        assert page.status_code == 200, name
    refused = admin_client.post(
        reverse("admin:conversations_servicepolicy_add"),
        {"name": "Nobody's", "first_response_minutes": "10"},
    )
    assert b"Give the policy to a team or to a label." in refused.content
