"""A customer answers the satisfaction survey on the sandbox's phone: the
survey goes out through the real delivery path, the customer taps a row of
the list, and the helpdesk stores the rating from the webhook."""

import pytest

from conversations import services
from conversations.models import (
    AutomaticMessage,
    Conversation,
    Message,
    SatisfactionRating,
    SatisfactionSurvey,
)
from tests.factories import UserFactory
from tests.fixtures.outbound import feed_webhooks, wait_for_status

CUSTOMER = "4917010000077"


def write(sandbox, receiver, fed: int, **message) -> int:
    sandbox.control.customer_message(CUSTOMER, **message)
    receiver.wait_for(fed + 1, timeout=10)
    return feed_webhooks(receiver, start=fed)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_sandbox_customer_rates_the_help(
    sandbox_number, team, delivery_worker, graph_sandbox, receiver
):
    SatisfactionSurvey.objects.create(team=team)
    agent = UserFactory(username="sandbox-agent")
    agent.teams.add(team)
    fed = write(graph_sandbox, receiver, 0, type="text", text="My order is late")
    conversation = Conversation.objects.get(customer__wa_id=CUSTOMER)
    services.assign_conversation(
        conversation=conversation, by=agent, assignee=agent, team=team
    )
    services.change_status(conversation=conversation, status="resolved", by=agent)

    survey = Message.objects.get(
        conversation=conversation, automatic__kind=AutomaticMessage.Kind.CSAT
    )
    survey = wait_for_status(survey, "sent", "delivered", "read")
    # The sandbox reports sent, delivered and read; the phone shows the list.
    receiver.wait_for(fed + 3, timeout=10)
    fed = feed_webhooks(receiver, start=fed)
    assert Message.objects.get(pk=survey.pk).status == "read"
    fed = write(
        graph_sandbox,
        receiver,
        fed,
        type="list_reply",
        id="csat-5",
        title="5 – Excellent",
        reply_to=survey.wamid,
    )

    rating = SatisfactionRating.objects.get(conversation=conversation)
    assert (rating.score, rating.agent, rating.team) == (5, agent, team)
    assert Conversation.objects.get(pk=conversation.pk).status == "resolved"
