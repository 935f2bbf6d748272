"""Every send type the helpdesk uses is accepted with Meta's answer shape."""

import re

import pytest

from tests.fixtures.sandbox import CUSTOMER

pytestmark = pytest.mark.e2e

WAMID = re.compile(r"^wamid\.[A-Za-z0-9+/=_-]+$")
LINK = "https://example.com/files/"

SEND_BODIES = {
    "text": {"text": {"body": "Hello https://example.com", "preview_url": True}},
    "image by id": "uploaded",
    "image by link": {"image": {"link": LINK + "a.jpg", "caption": "A photo"}},
    "audio": {"audio": {"link": LINK + "a.ogg"}},
    "video": {"video": {"link": LINK + "a.mp4", "caption": "A clip"}},
    "document": {
        "document": {
            "link": LINK + "pass.pdf",
            "filename": "pass.pdf",
            "caption": "Pass",
        }
    },
    "sticker": {"sticker": {"link": LINK + "s.webp"}},
    "reaction": {"reaction": {"message_id": "wamid.customer", "emoji": "\U0001f44d"}},
    "reaction removed": {"reaction": {"message_id": "wamid.customer", "emoji": ""}},
    "location": {
        "location": {
            "latitude": 52.52,
            "longitude": 13.40,
            "name": "HQ",
            "address": "Berlin",
        }
    },
    "contacts": {
        "contacts": [
            {"name": {"formatted_name": "Jo Example"}, "phones": [{"phone": "+491"}]}
        ]
    },
    "reply buttons": {
        "interactive": {
            "type": "button",
            "body": {"text": "Did that help?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                    {"type": "reply", "reply": {"id": "no", "title": "No"}},
                ]
            },
        }
    },
    "list": {
        "interactive": {
            "type": "list",
            "body": {"text": "Pick a topic"},
            "action": {
                "button": "Topics",
                "sections": [
                    {
                        "title": "Orders",
                        "rows": [{"id": "where", "title": "Where is it?"}],
                    }
                ],
            },
        }
    },
    "cta_url": {
        "interactive": {
            "type": "cta_url",
            "body": {"text": "Track it here"},
            "action": {
                "name": "cta_url",
                "parameters": {"display_text": "Track", "url": "https://example.com/t"},
            },
        }
    },
    "flow": {
        "interactive": {
            "type": "flow",
            "body": {"text": "Tell us more"},
            "action": {
                "name": "flow",
                "parameters": {
                    "flow_message_version": "3",
                    "flow_token": "t-1",
                    "flow_id": "123",
                    "flow_cta": "Open",
                },
            },
        }
    },
}


def _type_of(body: dict) -> str:
    return next(
        key for key in body if key not in {"context", "biz_opaque_callback_data"}
    )


@pytest.mark.parametrize("case", SEND_BODIES)
def test_send_type_is_accepted_with_metas_answer(sandbox, graph, open_window, case):
    body = SEND_BODIES[case]
    if body == "uploaded":
        upload = graph.http.post(
            f"{sandbox.graph_url}/{sandbox.number.phone_number_id}/media",
            data={"messaging_product": "whatsapp", "type": "image/png"},
            files={"file": ("a.png", b"\x89PNG-bytes", "image/png")},
        )
        body = {"image": {"id": upload.json()["id"]}}
    kind = _type_of(body)
    response = graph.send(
        {"recipient_type": "individual", "to": f"+{CUSTOMER}", "type": kind, **body}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [{"input": f"+{CUSTOMER}", "wa_id": CUSTOMER}]
    [message] = answer["messages"]
    assert WAMID.match(message["id"])
    assert "message_status" not in message


def test_template_send_answers_message_status_accepted(graph):
    components = [
        {
            "type": "header",
            "parameters": [
                {
                    "type": "document",
                    "document": {"link": LINK + "pass.pdf", "filename": "pass.pdf"},
                }
            ],
        },
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Anna"},
                {"type": "text", "text": "LH 2046"},
            ],
        },
    ]
    response = graph.send(
        {
            "to": f"+{CUSTOMER}",
            "type": "template",
            "template": {
                "name": "boarding_pass",
                "language": {"code": "en"},
                "components": components,
            },
        }
    )
    assert response.status_code == 200, response.text
    [message] = response.json()["messages"]
    assert message["message_status"] == "accepted"


def test_named_template_with_named_parameters_is_accepted(graph):
    components = [
        {"type": "header", "parameters": [{"type": "image", "image": {"id": "42"}}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Anna"},
                {"type": "text", "parameter_name": "discount", "text": "20%"},
            ],
        },
    ]
    template = {
        "name": "spring_sale",
        "language": {"code": "en"},
        "components": components,
    }
    response = graph.send(
        {"to": f"+{CUSTOMER}", "type": "template", "template": template}
    )
    assert response.status_code == 200, response.text


def test_reply_with_context_and_callback_data_is_recorded(sandbox, graph, open_window):
    response = graph.text(
        context={"message_id": "wamid.abc"}, biz_opaque_callback_data="msg-7"
    )
    assert response.status_code == 200
    [sent] = sandbox.control.messages(CUSTOMER)
    assert sent["wamid"] == response.json()["messages"][0]["id"]
    assert sent["body"]["context"] == {"message_id": "wamid.abc"}
    assert sent["body"]["biz_opaque_callback_data"] == "msg-7"


def test_mark_as_read_and_typing_indicator_answer_success(sandbox, graph):
    wamid = sandbox.control.customer_message(CUSTOMER, type="text", text="Hi")["wamid"]
    assert graph.send({"status": "read", "message_id": wamid}).json() == {
        "success": True
    }
    typing = {
        "status": "read",
        "message_id": wamid,
        "typing_indicator": {"type": "text"},
    }
    response = graph.send(typing)
    assert response.status_code == 200
    assert response.json() == {"success": True}


def test_sends_to_a_number_without_plus_keep_the_input(graph, open_window):
    response = graph.text(to=CUSTOMER)
    assert response.json()["contacts"] == [{"input": CUSTOMER, "wa_id": CUSTOMER}]
