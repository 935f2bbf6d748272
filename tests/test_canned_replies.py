"""Canned replies: placeholders that work or are refused, and a bare
shortcut that never reaches the customer."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from conversations.models import CannedResponse, Message
from conversations.rules import canned
from tests.factories import ConversationFactory, CustomerFactory


def test_double_and_single_brace_placeholders_are_filled():
    values = {"customer_name": "Anna Schmidt", "first_name": "Anna"}
    text = "Hi {{ first_name }}, {customer_name}: {{first_name}}!"
    assert canned.fill(text, values) == "Hi Anna, Anna Schmidt: Anna!"


def test_unknown_placeholders_are_named_once_each():
    text = "Hi {{name}}, your {{ order }} and {{name}} {first_name}"
    assert canned.unknown_placeholders(text) == ["name", "order"]


@pytest.mark.django_db
def test_the_admin_refuses_a_placeholder_the_composer_cannot_fill():
    response = CannedResponse(shortcut="hi", title="Hi", text="Hi {{name}}")
    with pytest.raises(ValidationError) as refused:
        response.full_clean()
    message = str(refused.value)
    assert "{{name}}" in message
    # It says which placeholders are known.
    assert "{{customer_name}}" in message and "{{first_name}}" in message


def test_a_message_that_is_only_a_shortcut_is_a_shortcut():
    assert canned.shortcut_of(" /where-is-order ") == "where-is-order"
    assert canned.shortcut_of("/where-is-order please") == ""
    assert canned.shortcut_of("where-is-order") == ""


@pytest.mark.django_db
def test_the_composer_fills_the_customer_and_agent(agent_client, agent, number):
    customer = CustomerFactory(name="Maria Lopez")
    conversation = ConversationFactory(number=number, customer=customer)
    response = CannedResponse.objects.create(
        shortcut="hello", title="Hello", text="Hi {{first_name}}, {{agent_name}} here."
    )
    filled = agent_client.get(
        reverse("conversations:canned", args=[conversation.pk, response.pk])
    )
    assert filled.content.decode() == f"Hi Maria, {agent.name} here."


@pytest.mark.django_db
def test_a_bare_known_shortcut_is_refused_and_not_sent(agent_client, number):
    conversation = ConversationFactory(number=number)
    CannedResponse.objects.create(shortcut="where-is-order", title="T", text="x")
    answer = agent_client.post(
        reverse("conversations:reply", args=[conversation.pk]),
        {"text": "/where-is-order"},
        HTTP_HX_REQUEST="true",
    )
    assert answer.status_code == 422
    assert "canned reply" in answer.content.decode()
    assert not Message.objects.filter(conversation=conversation).exists()
