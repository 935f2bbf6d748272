"""The hand-written reads of a reply through the API (the token with its user
and permissions; the conversation a user may see, with its number; the
conversation's service policy) answer as the ORM's reads they replace: the
same rows, the same refusals."""

import pytest
from django.contrib.auth.models import Permission
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.backends import token_and_user
from conversations import services
from conversations.models import Conversation, Label, ServicePolicy
from conversations.selectors.access import visible_conversation
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)


def fields(instance) -> dict:
    return {
        f.attname: getattr(instance, f.attname)
        for f in type(instance)._meta.concrete_fields
    }


@pytest.mark.django_db
def test_the_visible_conversation_is_the_one_visible_to_reads(agent, number):
    ours = ConversationFactory(customer=CustomerFactory(), number=number)
    other_number = WhatsAppNumberFactory()
    other_number.teams.add(TeamFactory(name="Elsewhere"))
    theirs = ConversationFactory(customer=CustomerFactory(), number=other_number)
    supervisor = UserFactory(username="sees-all")
    supervisor.user_permissions.add(Permission.objects.get(codename="view_all_numbers"))
    outsider = UserFactory(username="no-team")
    # A second team of the same number: still one row, the same conversation.
    second = TeamFactory(name="Second line")
    number.teams.add(second)
    agent.teams.add(second)
    for user in (agent, supervisor, outsider):
        user = type(user).objects.get(pk=user.pk)
        for conversation in (ours, theirs):
            expected = (
                Conversation.objects.visible_to(user)
                .select_related("number")
                .filter(pk=conversation.pk)
                .first()
            )
            found = visible_conversation(user, conversation.pk)
            if expected is None:
                assert found is None, (user, conversation)
                continue
            assert fields(found) == fields(expected)
            assert fields(found.number) == fields(expected.number)
            # The number came with it, decrypted as the ORM decrypts it.
            assert found.number.access_token == expected.number.access_token
    assert visible_conversation(agent, theirs.pk + 1000) is None


@pytest.mark.django_db
def test_the_conversation_read_saves_like_one_the_orm_read(agent, number):
    conversation = ConversationFactory(customer=CustomerFactory(), number=number)
    found = visible_conversation(agent, conversation.pk)
    found.last_inbound_at = timezone.now()
    found.save(update_fields=["last_inbound_at"])
    conversation.refresh_from_db()
    assert conversation.last_inbound_at == found.last_inbound_at


@pytest.mark.django_db
def test_a_token_brings_its_user_and_their_permissions(
    agent, django_assert_num_queries
):
    agent.user_permissions.add(Permission.objects.get(codename="record_consent"))
    key = Token.objects.create(user=agent).key
    with django_assert_num_queries(1):
        token, user = token_and_user(key)
        assert user.has_perm("conversations.record_consent")
        assert not user.has_perm("conversations.view_all_numbers")
    assert token.key == key and token.user is user
    assert fields(user) == fields(type(agent).objects.get(pk=agent.pk))
    assert token_and_user("0" * 40) is None


@pytest.mark.django_db
def test_a_superusers_token_holds_every_permission(admin_user):
    key = Token.objects.create(user=admin_user).key
    _, user = token_and_user(key)
    assert user.has_perm("conversations.view_all_numbers")
    assert user.get_all_permissions() == {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.select_related("content_type")
    }


@pytest.mark.django_db
def test_tokens_are_refused_as_drf_refuses_them(client, agent, number):
    conversation = ConversationFactory(
        customer=CustomerFactory(), number=number, last_inbound_at=timezone.now()
    )
    url = f"/api/v1/conversations/{conversation.pk}/messages/"
    body = {"type": "text", "text": "Hi"}
    unknown = client.post(
        url, body, content_type="application/json", HTTP_AUTHORIZATION="Token nope"
    )
    assert unknown.status_code == 401
    assert unknown.json() == {
        "code": "authentication_failed",
        "detail": "Invalid token.",
    }
    assert unknown["WWW-Authenticate"] == "Token"
    key = Token.objects.create(user=agent).key
    agent.is_active = False
    agent.save()
    inactive = client.post(
        url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {key}"
    )
    assert inactive.status_code == 401
    assert inactive.json()["detail"] == "User inactive or deleted."
    assert not conversation.messages.exists()


def orm_policy(conversation):
    """policy_for as the ORM wrote it before it was hand-written."""
    owners = Q(label__conversations=conversation)
    if conversation.team_id:
        owners |= Q(team_id=conversation.team_id)
    return (
        ServicePolicy.objects.filter(owners)
        .order_by(F("label__name").asc(nulls_last=True), "name", "id")
        .first()
    )


@pytest.mark.django_db
def test_a_conversations_policy_is_the_one_the_orm_finds(number, team):
    conversation = ConversationFactory(customer=CustomerFactory(), number=number)
    found = []

    def check():
        fresh = Conversation.objects.get(pk=conversation.pk)
        expected = orm_policy(fresh)
        policy = services.policy_for(fresh)
        assert policy == expected
        if expected is not None:
            assert fields(policy) == fields(expected)
        found.append(expected and expected.name)

    check()  # no team, no label: none
    Conversation.objects.filter(pk=conversation.pk).update(team=team)
    ServicePolicy.objects.create(name="Other's", team=TeamFactory(name="Other"))
    check()  # a team without a policy
    ServicePolicy.objects.create(name="Support", team=team)
    ServicePolicy.objects.create(name="Another", team=team)
    check()  # the team's first by name
    # Labels' policies win, the first label by name; the policy of a label
    # the conversation does not have changes nothing.
    zebra, alpha, unused = (
        Label.objects.create(name=n) for n in ("zebra", "alpha", "x")
    )
    ServicePolicy.objects.create(name="Z", label=zebra)
    ServicePolicy.objects.create(name="X", label=unused)
    conversation.labels.add(zebra)
    check()
    ServicePolicy.objects.create(name="A", label=alpha)
    conversation.labels.add(alpha)
    check()
    assert found == [None, None, "Another", "Z", "A"]


@pytest.mark.django_db
def test_a_text_reply_costs_nine_statements(api, number, django_assert_num_queries):
    """The token with its user and permissions, the conversation with its
    number, the savepoint pair (BEGIN and COMMIT outside a test), the
    message, the conversation's last-message UPDATE, its service policy, and
    the live event with its sequence number."""
    conversation = ConversationFactory(
        customer=CustomerFactory(), number=number, last_inbound_at=timezone.now()
    )
    with django_assert_num_queries(9):
        response = api.post(
            f"/api/v1/conversations/{conversation.pk}/messages/",
            {"type": "text", "text": "Hi"},
            content_type="application/json",
        )
    assert response.status_code == 201, response.json()
