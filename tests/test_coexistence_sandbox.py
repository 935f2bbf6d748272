"""Coexistence with the WhatsApp Business app, played by the sandbox: a
customer edits and deletes messages they sent, the business shares its app's
past chat; the webhooks go through the helpdesk's processing, and the agent's
thread shows the edited text with what it said before, the deleted message,
and the imported messages in order."""

import pytest
from django.urls import reverse

from conversations.models import Conversation, Message
from tests.fixtures.outbound import feed_webhooks

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = "4915112345600"


def play(receiver, action) -> dict:
    """Run one sandbox action and process the webhook it posted."""
    start = len(receiver.received)
    result = action()
    receiver.wait_for(start + 1)
    feed_webhooks(receiver, start)
    return result


def thread(agent_client, conversation) -> str:
    response = agent_client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_customer_edits_and_deletes_messages_from_the_phone(
    graph_sandbox, sandbox_number, receiver, agent_client
):
    control = graph_sandbox.control

    def write(text):
        return play(
            receiver,
            lambda: control.customer_message(PHONE, type="text", text=text, name="Ida"),
        )["wamid"]

    first = write("I ordered the red <b>shoes</b>")
    second = write("Wrong chat, sorry")
    edit = play(
        receiver,
        lambda: control.customer_message(
            PHONE, type="edit", message_id=first, text="I ordered the blue shoes"
        ),
    )
    # What the sandbox posted is Meta's edit message.
    sent = edit["payload"]["entry"][0]["changes"][0]["value"]["messages"][0]
    assert sent["type"] == "edit"
    assert sent["edit"] == {
        "original_message_id": first,
        "message": {"type": "text", "text": {"body": "I ordered the blue shoes"}},
    }
    revoke = play(
        receiver,
        lambda: control.customer_message(PHONE, type="revoke", message_id=second),
    )
    sent = revoke["payload"]["entry"][0]["changes"][0]["value"]["messages"][0]
    assert sent["revoke"] == {"original_message_id": second}

    conversation = Conversation.objects.get(customer__wa_id=PHONE)
    edited = Message.objects.get(wamid=first)
    assert edited.text == "I ordered the blue shoes"
    assert [v["text"] for v in edited.edit_history] == [
        "I ordered the red <b>shoes</b>"
    ]
    assert Message.objects.get(wamid=second).revoked_at is not None
    # The changes are not messages of their own.
    assert conversation.messages.count() == 2

    html = thread(agent_client, conversation)
    assert "I ordered the blue shoes" in html
    assert "Earlier version" in html
    assert "I ordered the red &lt;b&gt;shoes&lt;/b&gt;" in html
    assert "Deleted by the customer" in html


def test_the_sandbox_refuses_a_change_meta_would_refuse(graph_sandbox, sandbox_number):
    control = graph_sandbox.control
    other = control.customer_message("4915100000001", type="text", text="Mine")
    mine = control.customer_message(PHONE, type="text", text="Hello")
    control.customer_message(PHONE, type="revoke", message_id=mine["wamid"])

    cases = [
        # Another customer's message, then one already deleted, then nothing named.
        {"type": "edit", "message_id": other["wamid"], "text": "Not mine"},
        {"type": "edit", "message_id": mine["wamid"], "text": "Too late"},
        {"type": "revoke", "message_id": mine["wamid"]},
        {"type": "revoke"},
    ]
    for description in cases:
        with pytest.raises(AssertionError) as refused:
            control.customer_message(PHONE, **description)
        assert ": 400 " in str(refused.value), description


def test_the_business_shares_its_app_history_into_the_thread(
    graph_sandbox, sandbox_number, receiver, agent_client
):
    control = graph_sandbox.control
    play(
        receiver,
        lambda: control.customer_message(PHONE, type="text", text="Hello again"),
    )
    past = [
        {"from": "business", "text": "We ship on Mondays.", "minutes_ago": 30},
        {"from": "customer", "text": "Do you ship to Canada?", "minutes_ago": 60},
        {"from": "customer", "text": "Thanks <3", "minutes_ago": 20},
    ]
    shared = play(receiver, lambda: control.share_history(PHONE, past))
    value = shared["payload"]["entry"][0]["changes"][0]
    assert value["field"] == "history"
    (thread_,) = value["value"]["history"][0]["threads"]
    assert thread_["id"] == PHONE
    # Oldest first; the business's own messages name the customer in `to`.
    assert [m.get("to") for m in thread_["messages"]] == [None, PHONE, None]

    conversation = Conversation.objects.get(customer__wa_id=PHONE)
    rows = list(
        conversation.messages.order_by("timestamp").values_list(
            "direction", "text", "from_business_app"
        )
    )
    assert rows == [
        ("inbound", "Do you ship to Canada?", False),
        ("outbound", "We ship on Mondays.", True),
        ("inbound", "Thanks <3", False),
        ("inbound", "Hello again", False),
    ]
    html = thread(agent_client, conversation)
    html = html[html.index('id="thread"') :]
    positions = [
        html.index(text)
        for text in ("Do you ship to Canada?", "We ship on Mondays.", "Thanks &lt;3")
    ]
    assert positions == sorted(positions)
    assert positions[-1] < html.index("Hello again")

    # A customer message from the history is one Meta knows: it can be edited.
    edit = play(
        receiver,
        lambda: control.customer_message(
            PHONE, type="edit", message_id=shared["wamids"][0], text="To Canada?"
        ),
    )
    assert edit["webhook_status"] == 200
    assert Message.objects.get(wamid=shared["wamids"][0]).text == "To Canada?"
