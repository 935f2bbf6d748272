"""One reply through the REST API costs a fixed, small number of statements,
and its answer, built from the row as written, is the message as GET shows it."""

import pytest
from django.utils import timezone

from conversations.models import Message
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    TeamFactory,
)

# The token and its user, the user's permissions (one read), the conversation
# with its number (one EXISTS for the teams), the message INSERT, one
# conversation UPDATE, the service-level policy lookup (does a team or label
# promise a next response?), the inbox's live-event sequence, the live event,
# and the test transaction's savepoint pair (a request outside a test has
# BEGIN and COMMIT instead).
MAX_STATEMENTS_PER_REPLY = 10


@pytest.fixture
def open_conversation(number):
    return ConversationFactory(
        customer=CustomerFactory(), number=number, last_inbound_at=timezone.now()
    )


def reply(api, conversation, body):
    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        body,
        content_type="application/json",
    )


@pytest.mark.django_db
@pytest.mark.parametrize("replies_before", [0, 1])
def test_a_text_reply_costs_a_fixed_number_of_statements(
    api, open_conversation, replies_before, django_assert_max_num_queries
):
    # The first reply also sets the conversation's first response time.
    for _ in range(replies_before):
        assert (
            reply(api, open_conversation, {"type": "text", "text": "Hi"}).status_code
            == 201
        )
    with django_assert_max_num_queries(MAX_STATEMENTS_PER_REPLY):
        response = reply(api, open_conversation, {"type": "text", "text": "Second"})
    assert response.status_code == 201, response.json()
    message = Message.objects.get(pk=response.json()["id"])
    assert message.text == "Second"
    assert response.json() == api.get(f"/api/v1/messages/{message.pk}/").json()
    open_conversation.refresh_from_db()
    assert open_conversation.last_message_id == message.pk
    assert open_conversation.first_response_at is not None


@pytest.mark.django_db
def test_a_quoting_reply_costs_one_statement_more(
    api, open_conversation, django_assert_max_num_queries
):
    quoted = MessageFactory(conversation=open_conversation, wamid="wamid.quoted")
    with django_assert_max_num_queries(MAX_STATEMENTS_PER_REPLY + 1):
        response = reply(
            api,
            open_conversation,
            {"type": "text", "text": "About this", "reply_to": quoted.pk},
        )
    assert response.status_code == 201, response.json()
    assert response.json()["reply_to"] == quoted.pk
    assert response.json()["context_wamid"] == "wamid.quoted"
    assert (
        response.json() == api.get(f"/api/v1/messages/{response.json()['id']}/").json()
    )


@pytest.mark.django_db
def test_an_agent_in_two_teams_of_a_number_sees_its_conversation_once(
    api, agent, number, open_conversation
):
    second_team = TeamFactory(name="Second line")
    number.teams.add(second_team)
    agent.teams.add(second_team)
    listed = api.get("/api/v1/conversations/").json()["results"]
    assert [row["id"] for row in listed] == [open_conversation.pk]
    assert (
        reply(api, open_conversation, {"type": "text", "text": "Hi"}).status_code == 201
    )


@pytest.mark.django_db
def test_permissions_are_read_from_the_user_and_their_groups_in_one_statement(
    django_assert_num_queries,
):
    from django.contrib.auth.models import Group, Permission

    from accounts.models import User

    user = User.objects.create_user(username="both")
    user.user_permissions.add(Permission.objects.get(codename="view_all_numbers"))
    group = Group.objects.create(name="Consent")
    group.permissions.add(Permission.objects.get(codename="record_consent"))
    user.groups.add(group)
    other = User.objects.create_user(username="neither")
    other.groups.add(Group.objects.create(name="Empty"))
    with django_assert_num_queries(1):
        assert user.get_all_permissions() == {
            "conversations.view_all_numbers",
            "conversations.record_consent",
        }
        assert user.has_perm("conversations.record_consent")
    with django_assert_num_queries(1):
        assert not other.has_perm("conversations.view_all_numbers")
