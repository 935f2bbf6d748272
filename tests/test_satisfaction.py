"""Customer satisfaction: the survey after a resolution (inside the window
only, never to an opted-out customer), the answer through the webhook, the
comment, and where agents and reports see them."""

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from conversations import services
from conversations.models import (
    AutomaticMessage,
    Conversation,
    Message,
    SatisfactionRating,
    SatisfactionSurvey,
)
from conversations.selectors import service_levels as report
from tests.factories import TeamFactory, UserFactory
from tests.fixtures.business import api_client_for
from tests.fixtures.inbound import process
from tests.fixtures.routing import waiting_conversation


@pytest.fixture
def survey(team):
    return SatisfactionSurvey.objects.create(team=team)


def resolved(number, team, agent, **fields) -> Conversation:
    conversation = waiting_conversation(number, team=team, assignee=agent, **fields)
    services.change_status(conversation=conversation, status="resolved", by=agent)
    conversation.refresh_from_db()
    return conversation


def survey_message(conversation) -> Message:
    return Message.objects.get(
        conversation=conversation, automatic__kind=AutomaticMessage.Kind.CSAT
    )


def answer_body(number, conversation, survey_wamid, row_id, title, wamid) -> bytes:
    wa_id = conversation.customer.wa_id
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": number.display_phone_number.lstrip("+"),
            "phone_number_id": number.phone_number_id,
        },
        "contacts": [{"profile": {"name": "Kim"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": wamid,
                "timestamp": str(int(time.time())),
                "type": "interactive",
                "context": {"from": number.display_phone_number, "id": survey_wamid},
                "interactive": {
                    "type": "list_reply",
                    "list_reply": {"id": row_id, "title": title},
                },
            }
        ],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": number.waba_id, "changes": [{"field": "messages", "value": value}]}
        ],
    }
    return json.dumps(body).encode()


def text_body(number, conversation, text, wamid) -> bytes:
    document = json.loads(answer_body(number, conversation, "", "", "", wamid))
    message = document["entry"][0]["changes"][0]["value"]["messages"][0]
    message.pop("context")
    message.pop("interactive")
    message.update(type="text", text={"body": text})
    return json.dumps(document).encode()


def test_resolving_sends_the_survey_as_a_list_within_metas_limits(
    number, team, agent, survey
):
    conversation = resolved(number, team, agent)
    message = survey_message(conversation)
    assert message.type == "interactive" and message.sender is None
    interactive = message.payload
    assert interactive["type"] == "list"
    assert interactive["body"]["text"] == survey.question
    rows = interactive["action"]["sections"][0]["rows"]
    assert [row["id"] for row in rows] == [f"csat-{n}" for n in (5, 4, 3, 2, 1)]
    assert all(len(row["title"]) <= 24 for row in rows)
    assert len(interactive["action"]["button"]) <= 20
    rating = SatisfactionRating.objects.get(conversation=conversation)
    assert (rating.agent, rating.team, rating.score) == (agent, team, None)


def test_no_survey_outside_the_window(number, team, agent, survey):
    conversation = waiting_conversation(number, team=team, assignee=agent)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now() - timedelta(hours=25)
    )
    services.change_status(conversation=conversation, status="resolved", by=agent)
    assert not SatisfactionRating.objects.exists()


def test_no_survey_to_a_customer_who_opted_out(number, team, agent, survey):
    conversation = waiting_conversation(number, team=team, assignee=agent)
    services.opt_out_everywhere(
        customer=conversation.customer, source="whatsapp", wording="STOP"
    )
    services.change_status(conversation=conversation, status="resolved", by=agent)
    assert not SatisfactionRating.objects.exists()


def test_no_survey_when_the_team_has_it_off_or_none(number, team, agent, survey):
    SatisfactionSurvey.objects.update(enabled=False)
    resolved(number, team, agent)
    resolved(number, None, agent)
    assert not SatisfactionRating.objects.exists()


def test_one_survey_a_day_per_conversation(number, team, agent, survey):
    conversation = resolved(number, team, agent)
    services.change_status(conversation=conversation, status="open", by=agent)
    services.change_status(conversation=conversation, status="resolved", by=agent)
    assert SatisfactionRating.objects.filter(conversation=conversation).count() == 1


def test_the_customers_rating_is_stored_and_the_conversation_stays_resolved(
    number, team, agent, survey
):
    conversation = resolved(number, team, agent)
    Message.objects.filter(pk=survey_message(conversation).pk).update(
        wamid="wamid.SURVEY1", status="delivered"
    )
    process(
        answer_body(
            number, conversation, "wamid.SURVEY1", "csat-4", "4 – Good", "wamid.A1"
        ),
        app=number.app,
    )
    rating = SatisfactionRating.objects.get(conversation=conversation)
    assert rating.score == 4 and rating.answered_at is not None
    conversation.refresh_from_db()
    assert conversation.status == "resolved"
    thanks = Message.objects.filter(conversation=conversation, text=survey.thanks)
    assert thanks.count() == 1

    process(
        text_body(number, conversation, "Quick and friendly!", "wamid.A2"),
        app=number.app,
    )
    rating.refresh_from_db()
    assert rating.comment == "Quick and friendly!"
    # A comment may be a new request: agents see the conversation again.
    assert Conversation.objects.get(pk=conversation.pk).status == "open"


def test_an_answer_that_quotes_no_survey_is_an_ordinary_message(
    number, team, agent, survey
):
    conversation = resolved(number, team, agent)
    process(
        answer_body(number, conversation, "wamid.OTHER", "csat-1", "1", "wamid.B1"),
        app=number.app,
    )
    assert SatisfactionRating.objects.get(conversation=conversation).score is None
    assert Conversation.objects.get(pk=conversation.pk).status == "open"


def test_the_agent_sees_the_rating(agent_client, number, team, agent, survey):
    conversation = resolved(number, team, agent)
    page = agent_client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "Survey sent, no rating yet" in page
    assert "Satisfaction survey · automatic" in page
    SatisfactionRating.objects.update(
        score=5, answered_at=timezone.now(), comment="Great"
    )
    page = agent_client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "Rated 5/5" in page and "Great" in page


def test_reports_and_api_show_satisfaction(admin_client, number, team, agent, survey):
    first, second = resolved(number, team, agent), resolved(number, team, agent)
    SatisfactionRating.objects.filter(conversation=first).update(score=5)
    SatisfactionRating.objects.filter(conversation=second).update(score=2)
    now = timezone.now()
    tables = report.build(agent, since=now - timedelta(days=1), until=now)
    (row,) = tables["csat_by_agent"].rows
    name = agent.display_name or agent.username
    assert row == {
        "agent": name,
        "surveys": 2,
        "ratings": 2,
        "average": 3.5,
        "satisfied": 1,
        "satisfied_share": 50.0,
    }
    # An agent of another team's numbers sees none of these ratings.
    stranger = UserFactory(username="stranger")
    stranger.teams.add(TeamFactory(name="Sales"))
    elsewhere = report.build(stranger, since=now - timedelta(days=1), until=now)
    assert all(not table.rows for table in elsewhere.values())

    page = admin_client.get("/reports/").content.decode()
    assert 'id="csat_by_team"' in page and "<h2" in page
    # The chart: its bar says the score, the axis runs 0 to 5, the table
    # under it holds the same figures.
    assert f"{name}, Average score (1–5): 3.50" in page
    assert '<td class="percent">50.0%</td>' in page

    api = api_client_for(agent)
    listed = api.get(f"/api/v1/conversations/{first.pk}/satisfaction/").json()
    assert listed["results"][0]["score"] == 5


def test_a_teams_survey_over_the_api(team, agent):
    api = api_client_for(agent)
    url = f"/api/v1/teams/{team.pk}/satisfaction-survey/"
    assert api.get(url).json()["enabled"] is False
    body = {"enabled": True, "question": "Rate us?", "button": "Rate", "thanks": ""}
    assert api.put(url, body, format="json").status_code == 403
    agent.user_permissions.add(
        Permission.objects.get(codename="change_satisfactionsurvey")
    )
    api = api_client_for(type(agent).objects.get(pk=agent.pk))
    assert api.put(url, body, format="json").json()["enabled"] is True
    too_long = {**body, "button": "A button label over twenty"}
    response = api.put(url, too_long, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith(
        "button:"
    )
