"""Reply buttons and lists from the workspace, with Meta's limits checked
before anything is queued; Flow answers shown as cards of their fields."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Message
from conversations.whatsapp import payloads
from tests.fixtures.inbound import process
from tests.fixtures.routing import waiting_conversation

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def conversation(number):
    return waiting_conversation(number)


def post(agent_client, conversation, **form):
    return agent_client.post(
        f"/conversations/{conversation.pk}/interactive/", form, **HTMX
    )


def test_an_agent_sends_reply_buttons(agent_client, agent, conversation):
    response = post(
        agent_client,
        conversation,
        kind="buttons",
        body="Did this solve it?",
        options="Yes\nNo\nTalk to someone",
    )
    assert response.status_code == 201
    message = Message.objects.get(conversation=conversation, type="interactive")
    assert message.sender == agent and message.status == "queued"
    assert message.payload == payloads.interactive_buttons(
        body="Did this solve it?",
        buttons=[
            ("option-1", "Yes"),
            ("option-2", "No"),
            ("option-3", "Talk to someone"),
        ],
    )
    assert f'id="msg-{message.pk}"' in response.content.decode()


def test_an_agent_sends_a_list_with_descriptions(agent_client, conversation):
    response = post(
        agent_client,
        conversation,
        kind="list",
        body="Which order?",
        button="Choose",
        options="Order 4711 | Shoes, 2 Dec\nOrder 4712",
    )
    assert response.status_code == 201
    rows = Message.objects.get(type="interactive").payload["action"]["sections"][0][
        "rows"
    ]
    assert rows == [
        {"id": "option-1", "title": "Order 4711", "description": "Shoes, 2 Dec"},
        {"id": "option-2", "title": "Order 4712"},
    ]


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"kind": "buttons", "options": "a\nb\nc\nd"}, "1 to 3 options"),
        ({"kind": "buttons", "options": "A title far over twenty"}, "at most 20"),
        ({"kind": "buttons", "options": "Yes\nYes"}, "title of its own"),
        ({"kind": "buttons", "options": "Yes", "body": "x" * 1025}, "1024"),
        ({"kind": "list", "options": "a", "button": ""}, "button label"),
        (
            {"kind": "list", "button": "Go", "options": "\n".join("abcdefghijk")},
            "1 to 10 options",
        ),
        ({"kind": "list", "button": "Go", "options": "x" * 25}, "1 to 24"),
        ({"kind": "list", "button": "Go", "options": "ok | " + "d" * 73}, "72"),
    ],
)
def test_metas_limits_are_checked_before_sending(
    agent_client, conversation, form, says
):
    response = post(agent_client, conversation, **{"body": "Pick one", **form})
    assert response.status_code == 400
    assert says in response.content.decode()
    assert not Message.objects.filter(type="interactive").exists()


def test_outside_the_window_nothing_is_sent(agent_client, conversation):
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now() - timedelta(hours=25)
    )
    response = post(
        agent_client, conversation, kind="buttons", body="Still there?", options="Yes"
    )
    assert response.status_code == 409
    assert not Message.objects.filter(type="interactive").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            payloads.interactive_buttons(body="Hi", buttons=[("x" * 257, "Yes")]),
            "Button ids",
        ),
        (
            payloads.interactive_list(
                body="Hi", button="Go", rows=[("a", "A"), ("a", "B")]
            ),
            "unique",
        ),
        (
            {
                **payloads.interactive_list(body="Hi", button="Go", rows=[("a", "A")]),
                "footer": {"text": "f" * 61},
            },
            "footer",
        ),
    ],
)
def test_the_service_refuses_what_meta_would(conversation, content, says):
    with pytest.raises(services.OutboundError, match=says):
        services.send_reply(
            conversation=conversation, kind="interactive", content=content
        )


def test_the_composer_offers_buttons_and_lists_inside_the_window(
    agent_client, conversation
):
    page = agent_client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "Buttons or list…" in page
    assert f"/conversations/{conversation.pk}/interactive/" in page


def test_a_flow_answer_is_a_card_of_its_fields(agent_client, meta_number):
    process("interactive_nfm_reply")
    message = Message.objects.get(type="interactive")
    assert payloads.flow_answers(message.payload) == [
        ("rating", "5"),
        ("comment", "Fast help"),
    ]
    page = agent_client.get(
        f"/conversations/{message.conversation_id}/"
    ).content.decode()
    assert "Form answers" in page
    assert "<dt>Rating</dt><dd>5</dd>" in page
    assert "<dt>Comment</dt><dd>Fast help</dd>" in page
    assert "ticket-4711" not in page


def test_a_flow_answer_with_broken_json_shows_no_fields():
    broken = {"type": "nfm_reply", "nfm_reply": {"response_json": "{not json"}}
    assert payloads.flow_answers(broken) == []
    assert payloads.flow_answers({"type": "button_reply"}) is None
