"""What agents see of username-era identity in the workspace: the username
and BSUID in the customer panel, a merge and an earlier number noted there,
and the inbox search finding a customer by username."""

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import CustomerIdentityChange
from tests.factories import ConversationFactory, CustomerFactory, MessageFactory

pytestmark = pytest.mark.django_db

BSUID = "US.13491208655302741918"


def detail(agent_client, conversation) -> str:
    response = agent_client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_username_customer_is_shown_by_username_with_a_hidden_phone(
    agent_client, number
):
    customer = CustomerFactory(
        wa_id="", phone="", user_id=BSUID, profile_name="", username="@sheena"
    )
    conversation = ConversationFactory(customer=customer, number=number)
    MessageFactory(conversation=conversation, text="Hi")

    html = detail(agent_client, conversation)

    assert "<h2>@sheena</h2>" in html
    assert "hidden (username only)" in html
    assert re.search(r'class="customer-username">@sheena<', html)
    assert f"<code>{BSUID}</code>" in html


def test_a_merge_and_an_earlier_number_are_noted_in_the_customer_panel(
    agent_client, number
):
    phone_customer = CustomerFactory(wa_id="4917012345678", name="Sheena")
    conversation = ConversationFactory(customer=phone_customer, number=number)
    MessageFactory(conversation=conversation, text="Hi")
    username_customer = CustomerFactory(
        wa_id="", phone="", user_id=BSUID, profile_name="<b>Sheena</b>"
    )
    ConversationFactory(customer=username_customer, number=number, status="resolved")
    services.merge_customers(first=phone_customer, second=username_customer)
    CustomerIdentityChange.objects.create(
        customer=phone_customer,
        kind=CustomerIdentityChange.Kind.NUMBER,
        old_value="4917000000001",
        new_value="4917012345678",
    )

    html = detail(agent_client, conversation)

    notice = re.search(r'class="merge-notice"[^>]*>(.*?)</dd>', html).group(1)
    assert "Merged with &lt;b&gt;Sheena&lt;/b&gt;" in notice, "escaped, never markup"
    assert f"({BSUID})" in notice
    assert "1 conversation joined" in notice
    assert "Earlier number" in html and "4917000000001" in html


def test_a_merge_is_a_line_of_the_threads_it_happened_in(agent_client, number):
    phone_customer = CustomerFactory(wa_id="4917012345678", name="Sheena")
    conversation = ConversationFactory(customer=phone_customer, number=number)
    before = timezone.now() - timedelta(minutes=5)
    MessageFactory(conversation=conversation, text="Before merge", timestamp=before)
    closed = ConversationFactory(
        customer=phone_customer,
        number=number,
        status="resolved",
        resolved_at=before,
        created_at=before - timedelta(days=2),
    )
    MessageFactory(conversation=closed, text="Long ago", timestamp=before)
    username_customer = CustomerFactory(
        wa_id="", phone="", user_id=BSUID, profile_name="<b>Sheena</b>"
    )
    theirs = ConversationFactory(customer=username_customer, number=number)
    MessageFactory(conversation=theirs, text="From the username", timestamp=before)
    services.merge_customers(first=phone_customer, second=username_customer)
    MessageFactory(conversation=conversation, text="After merge")

    thread = re.search(r'id="thread".*', detail(agent_client, conversation), re.S)
    thread = thread.group(0)
    line = re.search(r'<p id="merge-\d+" class="thread-merge"[^>]*>(.*?)</p>', thread)
    assert f"Merged with &lt;b&gt;Sheena&lt;/b&gt; ({BSUID})" in line.group(1)
    assert (
        thread.index("Before merge")
        < thread.index('class="thread-merge"')
        < thread.index("After merge")
    )
    # The conversation the merge moved (resolved by it: one open per number).
    moved = re.search(r'id="thread".*', detail(agent_client, theirs), re.S).group(0)
    assert 'class="thread-merge"' in moved
    # A conversation closed before the merge does not show it.
    old = re.search(r'id="thread".*', detail(agent_client, closed), re.S).group(0)
    assert "Long ago" in old and 'class="thread-merge"' not in old


def test_the_inbox_search_finds_a_customer_by_username(agent_client, number):
    customer = CustomerFactory(wa_id="", phone="", user_id=BSUID, username="@quozzina")
    conversation = ConversationFactory(customer=customer, number=number)
    message = MessageFactory(conversation=conversation, text="Hi")
    conversation.last_message = message
    conversation.last_message_at = message.timestamp
    conversation.save()
    other = ConversationFactory(number=number)
    MessageFactory(conversation=other, text="Hi")

    html = agent_client.get("/?" + urlencode({"q": "quozz"})).content.decode()

    assert {int(pk) for pk in re.findall(r'id="row-(\d+)"', html)} == {conversation.pk}
