"""Admins keep labels and canned replies in the workspace; the inbox shows
its filters as chips and each team as a tab."""

import pytest
from django.urls import reverse

from conversations.models import CannedResponse, Label
from tests.factories import ConversationFactory, TeamFactory

pytestmark = pytest.mark.django_db
MANAGE = "/manage/"


def test_an_admin_adds_changes_and_removes_a_label(admin_client):
    added = admin_client.post(
        MANAGE, {"kind": "label", "name": "VIP", "color": "#6d28d9"}
    )
    assert added.status_code == 302
    label = Label.objects.get(name="VIP")
    admin_client.post(
        MANAGE, {"kind": "label", "pk": label.pk, "name": "Gold", "color": "#b45309"}
    )
    label.refresh_from_db()
    assert (label.name, label.color) == ("Gold", "#b45309")
    refused = admin_client.post(
        MANAGE, {"kind": "label", "pk": label.pk, "name": "Gold", "color": "red"}
    )
    assert refused.status_code == 422
    assert "Use a colour like" in refused.content.decode()
    admin_client.post(MANAGE, {"kind": "label", "pk": label.pk, "delete": "1"})
    assert not Label.objects.exists()


def test_an_admin_adds_a_canned_reply_and_unknown_placeholders_are_refused(
    admin_client,
):
    team = TeamFactory(name="Billing")
    refused = admin_client.post(
        MANAGE,
        {
            "kind": "canned",
            "shortcut": "/hello",
            "title": "Hello",
            "text": "Hi {{name}}",
            "team": "",
        },
    )
    assert refused.status_code == 422
    page = refused.content.decode()
    assert "Unknown placeholder {{name}}" in page
    # What was typed is kept, to correct it.
    assert "Hi {{name}}" in page
    assert not CannedResponse.objects.exists()
    added = admin_client.post(
        MANAGE,
        {
            "kind": "canned",
            "shortcut": "/hello",
            "title": "Hello",
            "text": "Hi {{first_name}}",
            "team": str(team.pk),
        },
    )
    assert added.status_code == 302
    response = CannedResponse.objects.get()
    assert (response.shortcut, response.team) == ("hello", team)
    page = admin_client.get(MANAGE).content.decode()
    assert "Canned reply /hello" in page


def test_agents_without_the_permissions_get_403_and_no_link(agent_client):
    assert agent_client.get(MANAGE).status_code == 403
    denied = agent_client.post(MANAGE, {"kind": "label", "name": "X"})
    assert denied.status_code == 403
    assert not Label.objects.exists()
    assert MANAGE not in agent_client.get("/").content.decode()


def test_filters_show_as_chips_that_remove_them_and_teams_as_tabs(
    agent_client, team, number
):
    label = Label.objects.create(name="VIP")
    ConversationFactory(number=number)
    page = agent_client.get(
        reverse("conversations:inbox"), {"label": label.pk, "q": "parcel"}
    ).content.decode()
    assert "Label: VIP" in page and "Search: parcel" in page
    assert 'aria-label="Remove the filter Label: VIP"' in page
    assert "?view=all&amp;status=open&amp;q=parcel" in page
    # The agent's team is a tab of its own.
    assert f"team={team.pk}" in page
    assert ">Support</a>" in page
