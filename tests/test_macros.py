"""Macros: one click runs a named set of actions, all or nothing, recorded
in the conversation's history."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import (
    CannedResponse,
    Conversation,
    Label,
    Macro,
    Message,
    Note,
)
from tests.factories import TeamFactory
from tests.fixtures.business import api_client_for
from tests.fixtures.routing import waiting_conversation

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def billing(number):
    team = TeamFactory(name="Billing")
    number.teams.add(team)
    return team


@pytest.fixture
def refund_macro(billing):
    macro = Macro.objects.create(
        name="Refund handled",
        set_team=billing,
        reply=CannedResponse.objects.create(
            shortcut="refunded",
            title="Refunded",
            text="Hi {customer_name}, your refund is on its way. {agent_name}",
        ),
        resolve=True,
    )
    macro.add_labels.add(Label.objects.create(name="refund"))
    return macro


def test_a_macro_runs_every_action_and_leaves_a_note(
    number, team, agent, billing, refund_macro
):
    conversation = waiting_conversation(number, team=team)
    services.run_macro(conversation=conversation, macro=refund_macro, by=agent)

    conversation.refresh_from_db()
    assert conversation.team == billing and conversation.status == "resolved"
    assert [label.name for label in conversation.labels.all()] == ["refund"]
    reply = Message.objects.get(conversation=conversation, direction="outbound")
    name = conversation.customer.display_name
    assert reply.text == f"Hi {name}, your refund is on its way. {agent.name}"
    assert reply.sender == agent
    note = Note.objects.get(conversation=conversation)
    assert note.author == agent
    assert note.body == (
        "Macro “Refund handled”: team Billing; labels refund; reply “Refunded”; "
        "resolved."
    )


def test_a_refused_action_refuses_the_whole_macro(number, team, agent, refund_macro):
    conversation = waiting_conversation(number, team=team)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now() - timedelta(hours=30)
    )
    with pytest.raises(services.WindowClosed):
        services.run_macro(conversation=conversation, macro=refund_macro, by=agent)
    conversation.refresh_from_db()
    assert conversation.team == team and conversation.status == "open"
    assert not conversation.labels.exists() and not Note.objects.exists()


def test_a_teams_macro_is_offered_on_that_teams_conversations_only(
    agent_client, number, team, agent
):
    other = TeamFactory(name="Sales")
    theirs = Macro.objects.create(name="Sales only", team=other, resolve=True)
    ours = Macro.objects.create(name="Close", team=team, resolve=True)
    conversation = waiting_conversation(number, team=team)

    page = agent_client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert ">Close</option>" in page and "Sales only" not in page

    url = f"/conversations/{conversation.pk}/macros/"
    refused = agent_client.post(url, {"macro": theirs.pk}, **HTMX)
    assert refused.status_code == 400
    answered = agent_client.post(url, {"macro": ours.pk}, **HTMX)
    assert answered.status_code == 201
    assert "Macro “Close”: resolved." in answered.content.decode()
    assert Conversation.objects.get(pk=conversation.pk).status == "resolved"


def test_macros_over_the_api(number, team, agent, refund_macro):
    conversation = waiting_conversation(number, team=team)
    api = api_client_for(agent)
    url = f"/api/v1/conversations/{conversation.pk}/macros/"
    offered = api.get(url).json()
    assert [m["name"] for m in offered] == ["Refund handled"]
    assert api.post(url, {"macro": 999999}, format="json").status_code == 400
    response = api.post(url, {"macro": refund_macro.pk}, format="json")
    assert response.status_code == 201
    assert Conversation.objects.get(pk=conversation.pk).status == "resolved"


def test_the_api_answers_a_closed_window_with_its_code(
    number, team, agent, refund_macro
):
    conversation = waiting_conversation(number, team=team)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now() - timedelta(hours=30)
    )
    response = api_client_for(agent).post(
        f"/api/v1/conversations/{conversation.pk}/macros/",
        {"macro": refund_macro.pk},
        format="json",
    )
    assert response.status_code == 409 and response.json()["code"] == "window_closed"


def test_admin_lists_macros(admin_client, refund_macro):
    page = admin_client.get(reverse("admin:conversations_macro_changelist"))
    assert page.status_code == 200 and b"Refund handled" in page.content
