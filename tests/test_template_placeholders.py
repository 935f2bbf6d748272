"""A template's placeholders mean the same everywhere: the fields the
workspace's template picker shows, what the REST API checks, and the
components the send carries to Meta (the sandbox) and the text it shows."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Message, MessageTemplate
from tests.fixtures.outbound import sends_for, wait_for_status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CASES = {
    "positional": {
        "format": "POSITIONAL",
        "text": "Hi {{1}}, your order {{2}} is on its way.",
        "fields": ["1", "2"],
        "values": {"1": "Anna", "2": "#4711"},
        "api": ["Anna", "#4711"],
        "sent": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "#4711"}],
        "shown": "Hi Anna, your order #4711 is on its way.",
    },
    "named twice": {
        "format": "NAMED",
        "text": "Hi {{first_name}}! Yes, {{ first_name }}, order {{order}} left.",
        "fields": ["first_name", "order"],
        "values": {"first_name": "Anna", "order": "#4711"},
        "api": {"first_name": "Anna", "order": "#4711"},
        "sent": [
            {"type": "text", "text": "Anna", "parameter_name": "first_name"},
            {"type": "text", "text": "#4711", "parameter_name": "order"},
        ],
        "shown": "Hi Anna! Yes, Anna, order #4711 left.",
    },
    # Meta's parameter names are ASCII: {{prénom}} is text it shows as written.
    "non-ascii name": {
        "format": "NAMED",
        "text": "Bonjour {{prénom}}, commande {{order}}.",
        "fields": ["order"],
        "values": {"order": "#4711"},
        "api": {"order": "#4711"},
        "sent": [{"type": "text", "text": "#4711", "parameter_name": "order"}],
        "shown": "Bonjour {{prénom}}, commande #4711.",
    },
}


def add_template(sandbox, conversation, name: str, case: dict) -> MessageTemplate:
    sandbox.control.add_template(
        name=name,
        language="en",
        category="UTILITY",
        status="APPROVED",
        parameter_format=case["format"],
        components=[{"type": "BODY", "text": case["text"]}],
    )
    services.sync_templates(number=conversation.number)
    return MessageTemplate.objects.get(name=name)


def picker_fields(agent_client, conversation, template) -> list[str]:
    """The body parameters the workspace's template picker asks for (it is
    offered once the customer service window has closed)."""
    Conversation.objects.filter(pk=conversation.pk).update(
        last_inbound_at=timezone.now() - timedelta(hours=30)
    )
    page = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    form = re.search(
        rf'<form class="template-form" data-template="{template.pk}".*?</form>',
        page,
        re.S,
    )
    assert form, "the template is not in the picker"
    # Each parameter's text input; its other inputs (an amount, a date)
    # are named after it with "__".
    return [
        name
        for name in re.findall(r'name="body_([^"]+)"', form.group(0))
        if "__" not in name
    ]


def send_from_workspace(agent_client, conversation, template, values: dict):
    return agent_client.post(
        reverse("conversations:send-template", args=[conversation.pk]),
        {"template": template.pk, **{f"body_{k}": v for k, v in values.items()}},
        HTTP_HX_REQUEST="true",
    )


def send_from_api(api, conversation, template, body):
    return api.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {
            "type": "template",
            "template": {
                "name": template.name,
                "language": template.language,
                "parameters": {"body": body},
            },
        },
        content_type="application/json",
    )


def sent_components(sandbox, message: Message) -> list[dict]:
    wait_for_status(message, Message.Status.SENT)
    (record,) = sends_for(sandbox, message)
    return record["body"]["template"]["components"]


@pytest.mark.parametrize("case_name", list(CASES))
def test_picker_api_and_send_agree_on_the_parameters(
    case_name, agent_client, api, graph_sandbox, conversation, delivery_worker
):
    case = CASES[case_name]
    template = add_template(graph_sandbox, conversation, "placeholders", case)

    assert picker_fields(agent_client, conversation, template) == case["fields"]

    from_workspace = send_from_workspace(
        agent_client, conversation, template, case["values"]
    )
    assert from_workspace.status_code == 201, from_workspace.content
    from_api = send_from_api(api, conversation, template, case["api"])
    assert from_api.status_code == 201, from_api.json()

    workspace_message, api_message = conversation.messages.filter(
        direction=Message.Direction.OUTBOUND
    ).order_by("id")
    expected = [{"type": "body", "parameters": case["sent"]}]
    for message in (workspace_message, api_message):
        assert message.text == case["shown"]
        assert sent_components(graph_sandbox, message) == expected


def test_a_missing_parameter_is_refused_alike_and_nothing_is_sent(
    agent_client, api, graph_sandbox, conversation
):
    case = CASES["named twice"]
    template = add_template(graph_sandbox, conversation, "placeholders", case)
    assert picker_fields(agent_client, conversation, template) == case["fields"]

    from_workspace = send_from_workspace(
        agent_client, conversation, template, {"first_name": "Anna", "order": ""}
    )
    from_api = send_from_api(api, conversation, template, {"first_name": "Anna"})
    positional = add_template(
        graph_sandbox, conversation, "placeholders_positional", CASES["positional"]
    )
    from_api_positional = send_from_api(api, conversation, positional, ["Anna"])

    assert from_workspace.status_code == 422
    assert "body: parameters may not be empty" in from_workspace.content.decode()
    assert from_api.status_code == 422
    assert from_api.json()["code"] == "template_parameters"
    assert from_api.json()["detail"] == "body: missing order; unknown none"
    assert from_api_positional.status_code == 422
    assert from_api_positional.json()["detail"] == (
        "body: 2 parameters expected, 1 given"
    )
    assert not conversation.messages.filter(direction="outbound").exists()
