import json

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from conversations.models import (
    Label,
    Message,
    MessageTemplate,
    WebhookEvent,
    WhatsAppNumber,
)
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    MetaAppFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)

pytestmark = pytest.mark.django_db

MODELS = [
    "accounts.user",
    "accounts.team",
    "conversations.metaapp",
    "conversations.whatsappnumber",
    "conversations.customer",
    "conversations.consentrecord",
    "conversations.label",
    "conversations.conversation",
    "conversations.message",
    "conversations.messagetemplate",
    "conversations.webhookevent",
]


def make_rows(count: int) -> None:
    team = TeamFactory()
    for index in range(count):
        agent = UserFactory()
        agent.teams.add(team)
        number = WhatsAppNumberFactory()
        number.teams.add(team)
        conversation = ConversationFactory(number=number, assignee=agent, team=team)
        message = MessageFactory(conversation=conversation)
        conversation.last_message = message
        conversation.last_message_at = message.timestamp
        conversation.save()
        label, _ = Label.objects.get_or_create(name=f"label-{index % 3}")
        conversation.labels.add(label)
        MessageTemplate.objects.get_or_create(
            waba_id=number.waba_id,
            name=f"order_update_{index}",
            language="en",
            defaults={"category": "UTILITY", "status": "APPROVED"},
        )
        conversation.customer.consents.create(
            purpose="utility", status="opt_in", source="checkout"
        )
        WebhookEvent.objects.create(
            body=json.dumps({"n": index}).encode(),
            headers={},
            app=number.app,
            received_at=timezone.now(),
        )


def count_queries(client, url, django_assert_max_num_queries, limit):
    with django_assert_max_num_queries(limit):
        response = client.get(url)
    assert response.status_code == 200, url
    return response


@pytest.mark.parametrize("model", MODELS)
def test_changelists_render_with_queries_independent_of_row_count(
    admin_client, model, django_assert_max_num_queries
):
    app_label, model_name = model.split(".")
    url = reverse(f"admin:{app_label}_{model_name}_changelist")
    make_rows(2)
    count_queries(admin_client, url, django_assert_max_num_queries, 20)
    make_rows(20)
    count_queries(admin_client, url, django_assert_max_num_queries, 20)


@pytest.mark.parametrize("model", MODELS)
def test_change_pages_render(admin_client, model, django_assert_max_num_queries):
    make_rows(1)
    app_label, model_name = model.split(".")
    instance = apps.get_model(app_label, model_name).objects.first()
    url = reverse(f"admin:{app_label}_{model_name}_change", args=[instance.pk])
    count_queries(admin_client, url, django_assert_max_num_queries, 40)


def test_secrets_are_never_shown_back_in_full(admin_client):
    number = WhatsAppNumberFactory(access_token="EAAG-very-secret-token-9876")
    number.app.app_secret = "app-secret-abcd"
    number.app.save()
    pages = [
        reverse("admin:conversations_whatsappnumber_changelist"),
        reverse("admin:conversations_whatsappnumber_change", args=[number.pk]),
        reverse("admin:conversations_metaapp_changelist"),
        reverse("admin:conversations_metaapp_change", args=[number.app.pk]),
    ]
    for url in pages:
        html = admin_client.get(url).content.decode()
        assert "EAAG-very-secret-token-9876" not in html
        assert "app-secret-abcd" not in html
    html = admin_client.get(pages[1]).content.decode()
    assert "••••••••9876" in html


def test_saving_a_number_with_the_token_left_blank_keeps_the_token(admin_client):
    number = WhatsAppNumberFactory(access_token="EAAG-keep-me")
    url = reverse("admin:conversations_whatsappnumber_change", args=[number.pk])
    response = admin_client.post(
        url,
        {
            "name": "Renamed line",
            "app": number.app.pk,
            "phone_number_id": number.phone_number_id,
            "display_phone_number": number.display_phone_number,
            "waba_id": number.waba_id,
            "access_token": "",
            "throughput": 80,
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    number.refresh_from_db()
    assert number.name == "Renamed line"
    assert number.access_token == "EAAG-keep-me"


def test_a_new_number_needs_a_token(admin_client):
    app = MetaAppFactory()
    response = admin_client.post(
        reverse("admin:conversations_whatsappnumber_add"),
        {
            "name": "New line",
            "app": app.pk,
            "phone_number_id": "1234567",
            "display_phone_number": "+4930123456",
            "waba_id": "7654321",
            "access_token": "",
            "throughput": 80,
        },
    )
    assert response.status_code == 200
    assert not WhatsAppNumber.objects.exists()


def test_raw_events_are_pretty_printed_escaped_and_read_only(admin_client):
    body = json.dumps(
        {"object": "whatsapp_business_account", "name": "<script>alert(1)</script>"}
    ).encode()
    event = WebhookEvent.objects.create(
        body=body,
        headers={"Content-Type": "application/json"},
        received_at=timezone.now(),
    )
    url = reverse("admin:conversations_webhookevent_change", args=[event.pk])
    html = admin_client.get(url).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html
    assert '"object": "whatsapp_business_account"' in html.replace("&quot;", '"')
    assert admin_client.post(url, {}).status_code == 403
    add_url = reverse("admin:conversations_webhookevent_add")
    assert admin_client.get(add_url).status_code == 403


def test_raw_events_filter_by_state(admin_client):
    now = timezone.now()
    WebhookEvent.objects.create(body=b"{}", received_at=now, state="processed")
    WebhookEvent.objects.create(body=b"{}", received_at=now, state="unroutable")
    url = reverse("admin:conversations_webhookevent_changelist")
    response = admin_client.get(url, {"state__exact": "unroutable"})
    assert response.context["cl"].result_count == 1


def test_messages_are_searchable_by_wamid_and_customer_phone(admin_client):
    customer = CustomerFactory(wa_id="4915112345678", phone="+4915112345678")
    message = MessageFactory(
        conversation=ConversationFactory(customer=customer), wamid="wamid.FINDME"
    )
    MessageFactory()
    url = reverse("admin:conversations_message_changelist")
    for query in ["wamid.FINDME", "+4915112345678"]:
        result = admin_client.get(url, {"q": query}).context["cl"].result_list
        assert list(result) == [message]


def test_conversations_filter_by_status_number_team_and_assignee(admin_client):
    target = ConversationFactory(status="pending")
    ConversationFactory(status="open")
    url = reverse("admin:conversations_conversation_changelist")
    for params in [
        {"status__exact": "pending"},
        {"number__id__exact": target.number_id},
    ]:
        result = admin_client.get(url, params).context["cl"].result_list
        assert list(result) == [target]


def test_customer_names_with_markup_render_as_text_in_the_admin(admin_client):
    customer = CustomerFactory(profile_name='<img src=x onerror="alert(1)">')
    MessageFactory(
        conversation=ConversationFactory(customer=customer),
        text="<b>bold</b>",
        direction=Message.Direction.INBOUND,
    )
    for url in [
        reverse("admin:conversations_customer_changelist"),
        reverse("admin:conversations_message_changelist"),
        reverse("admin:conversations_conversation_changelist"),
    ]:
        html = admin_client.get(url).content.decode()
        assert '<img src=x onerror="alert(1)">' not in html
        assert "<b>bold</b>" not in html
