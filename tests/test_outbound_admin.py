"""Admin actions on numbers: see why sending is paused, resume it, sync templates."""

import pytest
from django.urls import reverse

from conversations import services
from conversations.models import Message, MessageTemplate, WhatsAppNumber
from tests.fixtures.outbound import sends_for, wait_for_status

CHANGELIST = reverse("admin:conversations_whatsappnumber_changelist")


def pause(number):
    services.pause_sending(
        number=number,
        error={"code": 190, "title": "Access token expired", "details": "renew it"},
    )


@pytest.mark.django_db
def test_the_number_list_shows_paused_numbers_with_their_reason(admin_client, number):
    pause(number)

    html = admin_client.get(CHANGELIST).content.decode()
    paused_only = admin_client.get(CHANGELIST, {"sending_paused__exact": "1"})

    assert "paused" in html
    assert "Meta error 190: Access token expired renew it" in html
    assert number.display_phone_number in paused_only.content.decode()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_resuming_a_paused_number_sends_what_waited(
    admin_client, graph_sandbox, conversation, delivery_worker
):
    pause(conversation.number)
    message = services.send_reply(
        conversation=conversation, kind="text", content={"body": "Waiting"}
    )

    response = admin_client.post(
        CHANGELIST,
        {"action": "resume_sending", "_selected_action": [conversation.number_id]},
        follow=True,
    )

    assert "Sending resumed on 1 number" in response.content.decode()
    number = WhatsAppNumber.objects.get(pk=conversation.number_id)
    assert not number.sending_paused
    assert number.sending_paused_reason == ""
    wait_for_status(message, Message.Status.SENT)
    assert len(sends_for(graph_sandbox, message)) == 1


@pytest.mark.e2e
@pytest.mark.django_db
def test_sync_templates_now_mirrors_the_numbers_templates(
    admin_client, graph_sandbox, sandbox_number
):
    response = admin_client.post(
        CHANGELIST,
        {"action": "sync_templates_now", "_selected_action": [sandbox_number.pk]},
        follow=True,
    )

    synced = MessageTemplate.objects.filter(waba_id=sandbox_number.waba_id)
    assert synced.filter(name="order_shipped", status="APPROVED").exists()
    assert f"{synced.count()} template(s) synced from 1 account" in (
        response.content.decode()
    )
