"""The supervisors' reports on known data: headline figures, tables, team
scoping, the period (validated, in the viewer's time zone), the CSV files
(page links and the API's, by token) and the query count."""

import csv
import io
import zoneinfo
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conversations.models import Conversation, MessageCharge, MessageTemplate
from conversations.selectors import reports
from conversations.web import charts
from conversations.web.reports import Period, ReportRangeForm
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
# 10 November 2026, Berlin: every fixture event happens on that day.
DAY = date(2026, 11, 10)
NOON = datetime(2026, 11, 10, 12, 0, tzinfo=BERLIN)
PERIOD = Period(date(2026, 11, 1), date(2026, 11, 30), BERLIN)


def grant(user, *codenames):
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="conversations", codename__in=codenames
        )
    )
    return type(user).objects.get(pk=user.pk)  # a fresh permission cache


def conversation(number, *, created, first_response=None, resolved=None, **extra):
    """A conversation with its times set (created_at is auto_now_add)."""
    made = ConversationFactory(number=number, customer=CustomerFactory(), **extra)
    Conversation.objects.filter(pk=made.pk).update(
        created_at=created,
        first_response_at=created + timedelta(seconds=first_response)
        if first_response is not None
        else None,
        resolved_at=created + timedelta(seconds=resolved) if resolved else None,
        status="resolved" if resolved else extra.get("status", "open"),
    )
    made.refresh_from_db()
    return made


def message(chat, at, direction="inbound", **extra):
    return MessageFactory(
        conversation=chat,
        direction=direction,
        timestamp=at,
        status="received" if direction == "inbound" else "read",
        **extra,
    )


def charge(chat, at, price, currency="EUR", template=None):
    sent = message(chat, at, "outbound", type="template", template=template)
    return MessageCharge.objects.create(
        message=sent,
        conversation=chat,
        category="marketing",
        pricing_type="regular",
        billable=True,
        price=price,
        currency=currency,
        billed_at=at,
    )


@pytest.fixture
def world(db):
    """Two teams, each with a number; a supervisor of the first team only."""
    sales, other = TeamFactory(name="Sales"), TeamFactory(name="Other")
    visible = WhatsAppNumberFactory(name="Sales line")
    visible.teams.add(sales)
    hidden = WhatsAppNumberFactory(name="Other line")
    hidden.teams.add(other)
    supervisor = UserFactory(username="sam", time_zone="Europe/Berlin")
    supervisor.teams.add(sales)
    anna = UserFactory(username="anna", display_name="Anna Agent")
    anna.teams.add(sales)
    return {
        "visible": visible,
        "hidden": hidden,
        "sales": sales,
        "anna": anna,
        "supervisor": grant(supervisor, "view_reports"),
    }


def populate(world, copies: int = 1):
    """Known traffic on the supervisor's number and noise on the other."""
    template = MessageTemplate.objects.create(
        waba_id="1",
        name=f"order_shipped_{MessageTemplate.objects.count()}",
        language="en",
        category="UTILITY",
        status="APPROVED",
    )
    made = []
    for _ in range(copies):
        answered = conversation(
            world["visible"],
            created=NOON,
            first_response=99,
            resolved=3600,
            assignee=world["anna"],
            team=world["sales"],
            referral_source_id="ad-1",
            referral={"source_id": "ad-1", "headline": "Winter sale"},
        )
        waiting = conversation(
            world["visible"], created=NOON, first_response=300, assignee=world["anna"]
        )
        unassigned = conversation(world["visible"], created=NOON)
        # 00:30 in Berlin is still 9 November in UTC: the viewer's day counts.
        message(answered, datetime(2026, 11, 10, 0, 30, tzinfo=BERLIN))
        message(answered, NOON + timedelta(seconds=99), "outbound")
        inbound = message(waiting, NOON - timedelta(hours=2))
        Conversation.objects.filter(pk=waiting.pk).update(
            last_message=inbound, last_inbound_at=NOON - timedelta(hours=2)
        )
        message(unassigned, NOON)
        charge(answered, NOON, Decimal("0.1131"), template=template)
        charge(waiting, NOON, Decimal("0.0456"), template=template)
        charge(unassigned, NOON, None, currency="")  # no rate card price
        foreign = conversation(
            world["hidden"],
            created=NOON,
            first_response=5,
            referral_source_id="ad-secret",
            referral={"source_id": "ad-secret", "headline": "Not yours"},
        )
        message(foreign, NOON)
        charge(foreign, NOON, Decimal("9.0000"), template=template)
        made.append((answered, waiting, unassigned))
    return made


def test_the_figures_on_known_data(world):
    populate(world)
    tables = reports.build(world["supervisor"], since=PERIOD.since, until=PERIOD.until)
    summary = reports.headline(world["supervisor"], tables)

    assert (summary.open, summary.unassigned) == (2, 1)
    assert summary.conversations == 3 and summary.resolved == 1
    assert summary.first_response_p50 == pytest.approx(199.5)  # 99 s and 300 s
    assert summary.resolution_p50 == pytest.approx(3600)
    assert summary.cost == [
        {"currency": "EUR", "total": Decimal("0.1587"), "messages": 2}
    ]
    assert summary.unpriced == 1
    assert summary.waiting.last_inbound_at == NOON - timedelta(hours=2)

    days = {row["day"]: row for row in tables["volume_by_day"].rows}
    assert len(days) == 30  # every day of the period, quiet ones as 0
    assert days[date(2026, 11, 9)]["inbound"] == 0
    assert (days[DAY]["inbound"], days[DAY]["outbound"]) == (3, 3 + 1)
    hours = {row["hour"]: row["messages"] for row in tables["volume_by_hour"].rows}
    assert (hours[0], hours[10], hours[12]) == (1, 1, 1)
    [agent] = [
        row
        for row in tables["response_times_by_agent"].rows
        if row["agent"] == "Anna Agent"
    ]
    assert (agent["conversations"], agent["first_response_p50"]) == (2, 199.5)
    teams = {row["team"] for row in tables["cost_by_team"].rows}
    assert teams == {"Sales", "(no team)"}
    assert [row["ad"] for row in tables["ads"].rows] == ["ad-1"]
    assert [row["number"] for row in tables["cost_by_number"].rows] == [
        "Sales line",
        "Sales line",
    ]


def test_the_headline_compares_with_the_period_just_before(world, client):
    populate(world)
    october = datetime(2026, 10, 15, 9, 0, tzinfo=BERLIN)
    before = conversation(world["visible"], created=october, first_response=60)
    charge(before, october, Decimal("0.5000"))
    hidden = conversation(world["hidden"], created=october, first_response=1)
    charge(hidden, october, Decimal("7.0000"))

    earlier = reports.earlier(
        world["supervisor"], since=PERIOD.since, until=PERIOD.until
    )

    assert earlier == {
        "conversations": 1,
        "first_response_p50": pytest.approx(60),
        "resolution_p50": None,
        "cost": {"EUR": Decimal("0.5000")},
    }
    client.force_login(world["supervisor"])
    html = client.get(
        reverse("conversations:reports"), {"from": "2026-11-01", "to": "2026-11-30"}
    ).content.decode()
    assert "1 m the 30 days before" in html
    assert "0.50 EUR the 30 days before" in html


def test_everyone_with_every_number_sees_the_other_team_too(world):
    populate(world)
    boss = grant(UserFactory(), "view_reports", "view_all_numbers")
    tables = reports.build(boss, since=PERIOD.since, until=PERIOD.until)
    assert {row["ad"] for row in tables["ads"].rows} == {"ad-1", "ad-secret"}
    assert reports.headline(boss, tables).cost[0]["total"] == Decimal("9.1587")


def test_the_query_count_does_not_grow_with_the_data(
    world, django_assert_max_num_queries
):
    populate(world)
    with CaptureQueriesContext(connection) as few:
        tables = reports.build(
            world["supervisor"], since=PERIOD.since, until=PERIOD.until
        )
        reports.headline(world["supervisor"], tables)
    populate(world, copies=6)
    with django_assert_max_num_queries(len(few)):
        tables = reports.build(
            world["supervisor"], since=PERIOD.since, until=PERIOD.until
        )
        reports.headline(world["supervisor"], tables)
    assert tables["response_times"].rows[0]["conversations"] == 3 * 7


def test_the_page_shows_headline_charts_and_tables_for_the_team_only(world, client):
    populate(world)
    client.force_login(world["supervisor"])
    page = client.get(reverse("conversations:reports"), {"from": "2026-11-01"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "Winter sale" in html and "Not yours" not in html
    assert "3 m 20 s" in html  # the median first response, 199.5 s
    assert "0.1587 EUR" in html and "1 without a rate card price" in html
    assert "1 billed message has no price" in html
    assert 'role="img"' in html and "<desc id=" in html
    assert "38.98" not in html and "199.5" not in html
    assert "ads.csv?from=2026-11-01&amp;to=" in html


def test_the_page_costs_the_same_queries_with_seven_times_the_data(
    world, client, django_assert_max_num_queries
):
    populate(world)
    client.force_login(world["supervisor"])
    url = reverse("conversations:reports")
    with CaptureQueriesContext(connection) as few:
        assert client.get(url, {"from": "2026-11-01"}).status_code == 200
    populate(world, copies=6)
    with django_assert_max_num_queries(len(few)):
        assert client.get(url, {"from": "2026-11-01"}).status_code == 200


def test_the_page_refuses_a_bad_period_and_says_why(world, client):
    client.force_login(world["supervisor"])
    page = client.get(
        reverse("conversations:reports"), {"from": "2026-11-20", "to": "2026-11-01"}
    )
    assert page.status_code == 400
    assert "The end of the range comes before its start." in page.content.decode()


def range_form(data, today=DAY):
    form = ReportRangeForm(data, zone=BERLIN)
    form.today = today
    return form


@pytest.mark.parametrize(
    ("data", "first", "last"),
    [
        ({}, date(2026, 10, 12), DAY),
        ({"range": "7d"}, date(2026, 11, 4), DAY),
        ({"range": "today"}, DAY, DAY),
        ({"range": "yesterday"}, date(2026, 11, 9), date(2026, 11, 9)),
        ({"range": "this_month"}, date(2026, 11, 1), DAY),
        ({"range": "last_month"}, date(2026, 10, 1), date(2026, 10, 31)),
        ({"range": "this_year"}, date(2026, 1, 1), DAY),
        ({"from": "2026-11-02"}, date(2026, 11, 2), DAY),
        ({"to": "2026-11-05"}, date(2026, 10, 7), date(2026, 11, 5)),
        ({"from": "2025-11-10", "to": "2026-11-10"}, date(2025, 11, 10), DAY),
        ({"range": "7d", "from": "bogus"}, None, None),
    ],
)
def test_a_period_from_quick_ranges_and_dates(data, first, last):
    form = range_form(data)
    if first is None:
        assert form.errors["from"] == ["Enter a date as YYYY-MM-DD."]
        return
    assert form.is_valid(), form.errors
    assert (form.period.first, form.period.last) == (first, last)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"from": "2026-11-05", "to": "2026-11-01"}, "to", "comes before its start"),
        ({"to": "2026-11-11"}, "to", "cannot end after today"),
        ({"from": "2025-11-09", "to": "2026-11-10"}, "to", "at most 366 days"),
        ({"from": "1999-12-31", "to": "2000-01-01"}, "from", "before 2000-01-01"),
        ({"from": "10/11/2026"}, "from", "YYYY-MM-DD"),
        ({"range": "forever"}, "range", "Select a valid choice"),
    ],
)
def test_a_bad_period_is_refused(data, field, message):
    form = range_form(data)
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


def test_a_period_is_whole_days_in_the_viewers_zone():
    period = Period(date(2026, 3, 29), date(2026, 3, 29), BERLIN)  # 23 hours long
    assert period.since == datetime(2026, 3, 28, 23, 0, tzinfo=zoneinfo.ZoneInfo("UTC"))
    utc = zoneinfo.ZoneInfo("UTC")
    assert period.until.astimezone(utc) - period.since == timedelta(hours=23)
    assert period.filename("ads") == "ads_2026-03-29_2026-03-29.csv"
    assert Period(date(2026, 10, 1), date(2026, 11, 9), BERLIN).label == (
        "1 Oct – 9 Nov 2026"
    )


# --- CSV -------------------------------------------------------------------


def token_client(user) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


CSV_URL = "/api/v1/reports/{}.csv"


def rows_of(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_a_token_fetches_a_csv_named_with_its_range_and_scoped_to_its_teams(world):
    populate(world)
    api = token_client(world["supervisor"])
    response = api.get(
        CSV_URL.format("ads"),
        {"from": "2026-11-01", "to": "2026-11-30"},
        HTTP_ACCEPT="text/csv",
    )
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="ads_2026-11-01_2026-11-30.csv"'
    )
    header, *rows = rows_of(response)
    assert header[:4] == [
        "ad",
        "headline",
        "conversations",
        "first_response_p50_seconds",
    ]
    assert rows == [["ad-1", "Winter sale", "1", "99.0", "1", "0", "1"]]

    timings = rows_of(
        api.get(
            CSV_URL.format("response_times"), {"from": "2026-11-01", "to": "2026-11-30"}
        )
    )
    assert timings[1][:5] == ["all", "3", "1", "199.5", "279.9"]


def test_the_page_and_the_api_serve_the_same_file(world, client):
    populate(world)
    client.force_login(world["supervisor"])
    query = {"from": "2026-11-01", "to": "2026-11-30"}
    page_file = client.get(
        reverse("conversations:report-csv", args=["cost_by_day"]), query
    )
    api_file = token_client(world["supervisor"]).get(
        CSV_URL.format("cost_by_day"), query
    )
    assert page_file.content == api_file.content
    assert page_file["Content-Disposition"] == api_file["Content-Disposition"]
    assert rows_of(api_file)[1:] == [
        ["2026-11-10", "", "1", ""],
        ["2026-11-10", "EUR", "2", "0.1587"],
    ]


def test_the_csv_api_refuses_without_a_token_permission_name_or_good_range(world):
    assert APIClient().get(CSV_URL.format("ads")).status_code == 401

    refused = token_client(world["anna"]).get(CSV_URL.format("ads"))
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"

    api = token_client(world["supervisor"])
    assert api.get(CSV_URL.format("nothing")).json()["code"] == "not_found"
    bad = api.get(CSV_URL.format("ads"), {"from": "2026-13-01"}, HTTP_ACCEPT="text/csv")
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"
    assert bad.json()["errors"] == {"from": ["Enter a date as YYYY-MM-DD."]}


def test_the_api_schema_documents_the_report_csv(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/reports/{name}.csv"]["get"]
    assert "text/csv" in operation["responses"]["200"]["content"]
    assert {parameter["name"] for parameter in operation["parameters"]} >= {
        "name",
        "range",
        "from",
        "to",
    }


# --- Formats and charts ----------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (0, "0 s"),
        (2.25, "2.2 s"),
        (45, "45 s"),
        (99, "1 m 39 s"),
        (38.984982669353485, "39 s"),
        (120, "2 m"),
        (7500, "2 h 5 m"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert charts.human_duration(seconds) == text


def test_axes_step_in_round_units():
    assert charts.axis(38, "count") == [0, 10, 20, 30, 40]
    assert charts.axis(3, "count") == [0, 1, 2, 3]
    assert charts.axis(199.5, "duration") == [0, 60, 120, 180, 240]
    assert charts.axis(5 * 3600, "duration")[-1] == 6 * 3600
    assert charts.axis(0.1587, "money") == [0, 0.05, 0.1, 0.15, 0.2]
    assert charts.money(Decimal("0.1587")) == "0.1587"
    assert charts.money(Decimal("12.5")) == "12.50"


def test_a_chart_labels_its_axis_in_its_unit_and_describes_itself():
    spec = charts.ChartSpec(
        "agent",
        (charts.Series("p50", "Median"),),
        "duration",
        horizontal=True,
    )
    chart = charts.bar_chart(
        spec,
        [{"agent": "anna", "p50": 99}, {"agent": "ben", "p50": 30}],
        kind="text",
        title="First response by agent",
    )
    assert [line["text"] for line in chart["grid"]] == [
        "0 s",
        "30 s",
        "1 m",
        "1 m 30 s",
        "2 m",
    ]
    assert [bar["text"] for bar in chart["bars"]] == ["1 m 39 s", "30 s"]
    # Bars start at the axis and end where their value is on it (2 m at the end).
    anna, ben = chart["bars"]
    plot = chart["grid"][-1]["x1"] - chart["grid"][0]["x1"]
    assert anna["x"] == ben["x"] == chart["grid"][0]["x1"]
    assert anna["width"] == pytest.approx(plot * 99 / 120, abs=0.1)
    assert ben["width"] == pytest.approx(plot * 30 / 120, abs=0.1)
    assert chart["width"] == 640 and chart["grid"][-1]["x1"] < 640
    assert "Highest: median 1 m 39 s (anna)" in chart["description"]


@pytest.mark.django_db
def test_bad_filters_on_the_api_answer_their_errors_as_lists(admin_user):
    api = token_client(admin_user)
    for query, field in (({"status": "bogus"}, "status"), ({"number": "x"}, "number")):
        response = api.get("/api/v1/conversations/", query)
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "invalid"
        assert isinstance(body["errors"][field], list), body
    assert body["errors"] == {"number": ["Must be a whole number."]}
