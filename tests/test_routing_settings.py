"""Auto-assignment settings in the admin and the REST API."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from conversations.models import AgentRouting, Conversation, TeamRouting
from tests.factories import TeamFactory, UserFactory
from tests.fixtures.business import api_client_for
from tests.fixtures.routing import online_agent, route_team, waiting_conversation

pytestmark = pytest.mark.django_db


def grant(user, *codenames):
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


# --- Admin -------------------------------------------------------------------------


def test_an_admin_turns_routing_on_and_waiting_conversations_are_assigned(
    admin_client, team, number, django_capture_on_commit_callbacks, monkeypatch
):
    from conversations.delivery import doorbells

    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:conversations_teamrouting_add"),
            {
                "team": team.pk,
                "mode": "least_busy",
                "capacity": "4",
                "offline_grace_minutes": "5",
            },
        )
    assert response.status_code == 302
    routing = TeamRouting.objects.get(team=team)
    assert (routing.mode, routing.capacity, routing.offline_grace_minutes) == (
        "least_busy",
        4,
        5,
    )
    assert rung == [number.pk]


def test_admin_routing_pages_render(admin_client, team, number):
    agent = online_agent(team, "ada")
    route_team(team)
    AgentRouting.objects.create(agent=agent, capacity=3)
    waiting_conversation(number, assignee=agent)
    for name in ("teamrouting", "agentrouting", "conversationrouting"):
        response = admin_client.get(reverse(f"admin:conversations_{name}_changelist"))
        assert response.status_code == 200, name
    response = admin_client.get(
        reverse("admin:conversations_agentrouting_change", args=[agent.routing.pk])
    )
    assert response.status_code == 200
    assert agent.name.encode() in response.content


def test_an_admin_excludes_an_agent(admin_client, team):
    agent = online_agent(team, "ada")
    response = admin_client.post(
        reverse("admin:conversations_agentrouting_add"),
        {"agent": agent.pk, "capacity": "", "excluded": "on"},
    )
    assert response.status_code == 302
    routing = AgentRouting.objects.get(agent=agent)
    assert routing.excluded is True and routing.capacity is None


# --- API ---------------------------------------------------------------------------


def test_a_team_member_reads_the_team_routing(team, agent):
    route_team(team, capacity=7)
    response = api_client_for(agent).get(f"/api/v1/teams/{team.pk}/routing/")
    assert response.status_code == 200
    assert response.json() == {
        "team": team.pk,
        "mode": "round_robin",
        "capacity": 7,
        "offline_grace_minutes": 15,
    }


def test_another_teams_routing_is_not_found(agent):
    other = TeamFactory(name="Billing")
    response = api_client_for(agent).get(f"/api/v1/teams/{other.pk}/routing/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_changing_routing_needs_the_permission(team, agent):
    client = api_client_for(agent)
    url = f"/api/v1/teams/{team.pk}/routing/"
    response = client.patch(url, {"mode": "round_robin"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not TeamRouting.objects.exists()

    grant(agent, "change_teamrouting")
    response = client.patch(url, {"mode": "round_robin", "capacity": 3}, format="json")
    assert response.status_code == 200
    assert response.json()["mode"] == "round_robin"
    assert TeamRouting.objects.get(team=team).capacity == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "random"}, "mode"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": "lots"}, "capacity"),
        ({"offline_grace_minutes": 100_000}, "offline_grace_minutes"),
    ],
)
def test_bad_routing_settings_are_refused_clearly(team, agent, body, field):
    grant(agent, "change_teamrouting")
    response = api_client_for(agent).patch(
        f"/api/v1/teams/{team.pk}/routing/", body, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:")


def test_a_list_body_is_refused(team, agent):
    grant(agent, "change_teamrouting")
    response = api_client_for(agent).patch(
        f"/api/v1/teams/{team.pk}/routing/", [1, 2], format="json"
    )
    assert response.status_code == 400


def test_an_agents_capacity_and_exclusion_over_the_api(team, number, agent):
    route_team(team)
    colleague = online_agent(team, "bo")
    waiting_conversation(number)
    grant(agent, "change_agentrouting")
    client = api_client_for(agent)
    url = f"/api/v1/agents/{colleague.pk}/routing/"

    response = client.patch(url, {"capacity": 2, "excluded": True}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "agent": colleague.pk,
        "capacity": 2,
        "excluded": True,
        "presence": "online",
        "last_assigned_at": None,
    }
    response = client.patch(url, {"capacity": None}, format="json")
    assert response.json()["capacity"] is None
    assert response.json()["excluded"] is True
    assert Conversation.objects.filter(assignee=colleague).count() == 0


def test_an_agent_outside_ones_teams_is_not_found(agent):
    stranger = UserFactory(username="stranger")
    response = api_client_for(agent).get(f"/api/v1/agents/{stranger.pk}/routing/")
    assert response.status_code == 404
