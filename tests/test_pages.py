import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import ConversationFactory, MessageFactory, WhatsAppNumberFactory

pytestmark = pytest.mark.django_db


def with_last_message(conversation, text):
    message = MessageFactory(conversation=conversation, text=text)
    conversation.last_message = message
    conversation.last_message_at = timezone.now()
    conversation.save()
    return conversation


def test_the_login_page_answers_and_logs_an_agent_in(client, agent):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'name="username"' in page.content.decode()
    response = client.post(
        reverse("login"), {"username": agent.username, "password": "agent-password"}
    )
    assert response.status_code == 302
    assert response.url == "/"


def test_the_inbox_needs_a_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_the_inbox_lists_only_conversations_of_the_agents_teams(agent_client, number):
    mine = with_last_message(ConversationFactory(number=number), "Where is my order?")
    other = with_last_message(
        ConversationFactory(number=WhatsAppNumberFactory()), "Secret of team B"
    )
    html = agent_client.get("/").content.decode()
    assert mine.customer.display_name in html
    assert "Where is my order?" in html
    assert other.customer.display_name not in html
    assert "Secret of team B" not in html


def test_customer_text_renders_as_inert_text(agent_client, number):
    conversation = ConversationFactory(
        number=number, customer__profile_name="<script>alert('x')</script>"
    )
    with_last_message(conversation, '<img src=x onerror="alert(1)">')
    html = agent_client.get("/").content.decode()
    assert "<script>alert('x')</script>" not in html
    assert "&lt;script&gt;" in html
    assert '<img src=x onerror="alert(1)">' not in html
