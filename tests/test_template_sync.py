"""A new number's templates are mirrored at once, not at beat's next hourly
sync, and until they are, the composer and the notifications API say that
this is why nothing can be sent."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.delivery import doorbells
from conversations.models import MessageTemplate
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

UNSYNCED = "templates are not synced from Meta yet"


def test_adding_a_number_syncs_its_templates_after_commit(
    monkeypatch, django_capture_on_commit_callbacks
):
    rung = []
    monkeypatch.setattr(
        doorbells, "ring", lambda task, *args, **options: rung.append((task, *args))
    )

    with django_capture_on_commit_callbacks(execute=True):
        number, created = services.add_whatsapp_number(
            phone_number_id="109876543210987",
            display_phone_number="+15550001111",
            waba_id="209876543210987",
            access_token="token",
            app_secret="secret",
            verify_token="verify",
        )

    assert created
    assert rung == [(doorbells.SYNC_TEMPLATES, number.pk)]


def closed_conversation(number):
    return ConversationFactory(
        number=number, last_inbound_at=timezone.now() - timedelta(hours=30)
    )


def picker(agent_client, conversation) -> str:
    return agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()


def test_the_picker_says_when_templates_were_never_synced(agent_client, number):
    conversation = closed_conversation(number)

    assert UNSYNCED in picker(agent_client, conversation)

    MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="order_shipped",
        language="en",
        category=MessageTemplate.Category.UTILITY,
        status=MessageTemplate.Status.REJECTED,
        synced_at=timezone.now(),
    )
    page = picker(agent_client, conversation)
    assert UNSYNCED not in page
    assert "No approved templates for this number" in page


def test_a_notification_before_the_first_sync_says_so(number):
    with pytest.raises(services.TemplateNotApproved, match=UNSYNCED):
        services.notification_template(
            number=number, name="order_shipped", language="en", purpose="utility"
        )

    MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="hello_world",
        language="en_US",
        status=MessageTemplate.Status.APPROVED,
        synced_at=timezone.now(),
    )
    with pytest.raises(
        services.TemplateNotApproved, match=r"no template order_shipped \(en\)"
    ):
        services.notification_template(
            number=number, name="order_shipped", language="en", purpose="utility"
        )
