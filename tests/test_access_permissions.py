"""Who sees every team: the permission conversations.view_all_numbers (and
superusers), never staff status alone, on every surface that shows
conversations, customers, media, teams, canned responses and notifications."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import User
from conversations import services
from conversations.models import CannedResponse, Message, Notification
from tests.factories import (
    ConversationFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)


def permission(codename: str) -> Permission:
    return Permission.objects.get(
        codename=codename, content_type__app_label="conversations"
    )


@pytest.fixture
def billing(db):
    """Another team's number, a conversation on it with stored media, and
    that team's canned response."""
    team = TeamFactory(name="Billing")
    number = WhatsAppNumberFactory(name="Billing line")
    number.teams.add(team)
    conversation = ConversationFactory(number=number)
    message = MessageFactory(
        conversation=conversation,
        type="image",
        media_mime_type="image/png",
        media_state=Message.MediaState.STORED,
    )
    message.media_file.save("f.png", ContentFile(b"\x89PNG"))
    CannedResponse.objects.create(
        shortcut="refund", title="Refund policy", text="Refunds take 5 days", team=team
    )
    return {"team": team, "conversation": conversation, "message": message}


def staff_member(team) -> User:
    user = UserFactory(username="stefan", is_staff=True)
    user.teams.add(team)
    return user


def token_client(client, user):
    token, _ = Token.objects.get_or_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def surfaces(client, billing) -> dict[str, int]:
    """The status each surface answers for the other team's rows."""
    conversation, message = billing["conversation"], billing["message"]
    listed = client.get("/api/v1/conversations/").json()["results"]
    return {
        "api list": len(listed),
        "api conversation": client.get(
            f"/api/v1/conversations/{conversation.pk}/"
        ).status_code,
        "api customer": client.get(
            f"/api/v1/customers/{conversation.customer_id}/"
        ).status_code,
        "api message": client.get(f"/api/v1/messages/{message.pk}/").status_code,
        "media": client.get(f"/media/{message.pk}/").status_code,
    }


def test_staff_status_alone_does_not_show_other_teams(client, team, number, billing):
    ConversationFactory(number=number)
    staff = staff_member(team)

    assert surfaces(token_client(client, staff), billing) == {
        "api list": 1,
        "api conversation": 404,
        "api customer": 404,
        "api message": 404,
        "media": 404,
    }


def test_staff_status_alone_does_not_open_workspace_pages_or_reports(
    client, team, number, billing
):
    own = ConversationFactory(number=number, last_inbound_at=timezone.now())
    client.force_login(staff_member(team))
    conversation = billing["conversation"]

    assert (
        client.get(reverse("conversations:detail", args=[conversation.pk])).status_code
        == 404
    )
    page = client.get(reverse("conversations:detail", args=[own.pk])).content.decode()
    assert "Billing" not in page  # neither the team nor its number
    assert "/refund" not in page  # nor its canned responses
    assert client.get(reverse("conversations:reports")).status_code == 403


def test_view_all_numbers_shows_every_team_without_staff_status(
    client, team, number, billing
):
    own = ConversationFactory(number=number, last_inbound_at=timezone.now())
    supervisor = UserFactory(username="sofia")
    supervisor.teams.add(team)
    supervisor.user_permissions.add(permission("view_all_numbers"))

    assert surfaces(token_client(client, supervisor), billing) == {
        "api list": 2,
        "api conversation": 200,
        "api customer": 200,
        "api message": 200,
        "media": 200,
    }
    client.force_login(supervisor)
    conversation = billing["conversation"]
    assert (
        client.get(reverse("conversations:detail", args=[conversation.pk])).status_code
        == 200
    )
    page = client.get(reverse("conversations:detail", args=[own.pk])).content.decode()
    assert "Billing" in page and "/refund" in page


def test_notifications_of_others_need_view_all_numbers(client, team, number):
    others = Notification.objects.create(
        to="+4917012345678",
        number=number,
        purpose="utility",
        template_name="order_update",
        template_language="en",
        state=Notification.State.REFUSED,
        created_by=UserFactory(username="booking-system"),
    )
    staff = staff_member(team)
    staff.user_permissions.add(permission("send_notification"))
    api = token_client(client, staff)
    url = f"/api/v1/notifications/{others.pk}/"

    assert api.get(url).status_code == 404
    staff.user_permissions.add(permission("view_all_numbers"))
    assert api.get(url).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_upgrading_grants_staff_what_staff_status_used_to_show():
    executor = MigrationExecutor(connection)
    before = [("conversations", "0007_workspace_perf_trigram_search")]
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        staff = UserFactory(username="old-admin", is_staff=True)
        agent = UserFactory(username="old-agent")
        root = UserFactory(username="old-root", is_staff=True, is_superuser=True)
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    finally:
        MigrationExecutor(connection).migrate(latest)

    granted = {
        user.username: set(user.user_permissions.values_list("codename", flat=True))
        for user in User.objects.filter(pk__in=[staff.pk, agent.pk, root.pk])
    }
    assert granted == {
        "old-admin": {"view_all_numbers", "view_reports", "record_consent"},
        "old-agent": set(),
        "old-root": set(),  # superusers hold every permission already
    }
    assert User.objects.get(pk=staff.pk).has_perm("conversations.view_all_numbers")


# --- Assigning: a guessed id reveals nobody --------------------------------------


@pytest.fixture
def strangers(db):
    """Another team, on another number, with a member."""
    team = TeamFactory(name="Secret Ops")
    WhatsAppNumberFactory().teams.add(team)
    member = UserFactory(username="zed", display_name="Zora Hidden")
    member.teams.add(team)
    return {"team": team, "member": member}


def test_the_api_answers_another_teams_agent_or_team_as_an_unknown_id(
    client, agent, number, strangers
):
    conversation = ConversationFactory(number=number)
    api = token_client(client, agent)

    def patch(body):
        return api.patch(
            f"/api/v1/conversations/{conversation.pk}/",
            body,
            content_type="application/json",
        )

    for field, foreign, word in (
        ("assignee", strangers["member"].pk, "Zora"),
        ("team", strangers["team"].pk, "Secret"),
    ):
        refused, unknown = patch({field: foreign}), patch({field: 999999})
        assert refused.status_code == unknown.status_code == 400
        assert refused.json() == unknown.json()
        assert refused.json()["code"] == f"{field}_not_allowed"
        assert word not in refused.content.decode()
    conversation.refresh_from_db()
    assert conversation.assignee is None and conversation.team is None


def test_the_workspace_answers_another_teams_agent_as_an_unknown_id(
    agent_client, number, strangers
):
    conversation = ConversationFactory(number=number)
    url = reverse("conversations:assign", args=[conversation.pk])

    def assign(**data):
        return agent_client.post(url, data, HTTP_HX_REQUEST="true")

    for field, foreign, word in (
        ("assignee", strangers["member"].pk, "Zora"),
        ("team", strangers["team"].pk, "Secret"),
    ):
        refused, unknown = assign(**{field: foreign}), assign(**{field: 999999})
        assert refused.status_code == unknown.status_code == 400
        assert refused.content == unknown.content
        assert word not in refused.content.decode()


def test_the_service_refuses_without_naming_the_agent_or_team(number, strangers, agent):
    conversation = ConversationFactory(number=number)
    with pytest.raises(services.WorkspaceError) as refused:
        services.assign_conversation(
            conversation=conversation, by=agent, assignee=strangers["member"]
        )
    assert "Zora" not in refused.value.detail
    with pytest.raises(services.WorkspaceError) as refused:
        services.assign_conversation(
            conversation=conversation, by=agent, team=strangers["team"]
        )
    assert "Secret" not in refused.value.detail


def test_someone_who_sees_every_number_may_be_given_any_conversation(
    client, agent, number
):
    conversation = ConversationFactory(number=number)
    supervisor = UserFactory(username="sofia")
    supervisor.user_permissions.add(permission("view_all_numbers"))
    inactive = UserFactory(username="gone", is_active=False)
    inactive.teams.add(*agent.teams.all())
    api = token_client(client, agent)
    url = f"/api/v1/conversations/{conversation.pk}/"

    answer = api.patch(
        url, {"assignee": supervisor.pk}, content_type="application/json"
    )
    assert answer.status_code == 200 and answer.json()["assignee"] == supervisor.pk
    answer = api.patch(url, {"assignee": inactive.pk}, content_type="application/json")
    assert answer.json()["code"] == "assignee_not_allowed"
