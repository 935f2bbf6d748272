"""A resend is a new send: every check a first send runs, runs again."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import ConsentRecord, Message, MessageTemplate
from tests.factories import ConversationFactory, MessageFactory

MARKETING_OPTED_OUT = 131050


@pytest.fixture
def chat(number):
    """A conversation whose customer wrote an hour ago and opted in to
    marketing and utility messages."""
    conversation = ConversationFactory(
        number=number, last_inbound_at=timezone.now() - timedelta(hours=1)
    )
    for purpose in ConsentRecord.Purpose.values:
        services.record_consent(
            customer=conversation.customer,
            purpose=purpose,
            status="opt_in",
            source="checkout",
        )
    return conversation


def template(number, category="MARKETING", **fields) -> MessageTemplate:
    return MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name=f"{category.lower()}_news",
        language="en",
        category=category,
        status=MessageTemplate.Status.APPROVED,
        components=[{"type": "BODY", "text": "Our spring sale starts today"}],
        **fields,
    )


def failed_send(conversation, kind="text", template=None, **fields) -> Message:
    return MessageFactory(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type=kind,
        template=template,
        payload={"name": template.name} if template else {"body": "Hello"},
        status=Message.Status.FAILED,
        **fields,
    )


def outbound_count(conversation) -> int:
    return conversation.messages.filter(direction="outbound").count()


def test_a_marketing_template_is_not_resent_after_meta_says_the_customer_opted_out(
    agent_client, chat
):
    sale = template(chat.number)
    failed = failed_send(chat, "template", sale)
    services.record_send_failure(message_id=failed.pk, code=MARKETING_OPTED_OUT)

    response = agent_client.post(
        reverse("conversations:resend", args=[failed.pk]), HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 422
    assert "opted out" in response.content.decode()
    assert outbound_count(chat) == 1


def test_a_utility_template_is_not_resent_after_a_utility_opt_out(chat):
    failed = failed_send(chat, "template", template(chat.number, "UTILITY"))
    services.record_consent(
        customer=chat.customer, purpose="utility", status="opt_out", source="agent"
    )

    with pytest.raises(services.NoConsent):
        services.resend_message(message=failed)
    assert outbound_count(chat) == 1


@pytest.mark.parametrize(
    "change",
    ["paused", "disabled", "deleted", "another account"],
)
def test_a_template_that_may_not_be_sent_now_is_not_resent(chat, change):
    sale = template(chat.number)
    failed = failed_send(chat, "template", sale)
    if change == "deleted":
        sale.delete()
    elif change == "another account":
        MessageTemplate.objects.filter(pk=sale.pk).update(waba_id="999999999")
    else:
        MessageTemplate.objects.filter(pk=sale.pk).update(status=change.upper())
    failed.refresh_from_db()

    with pytest.raises(services.TemplateNotApproved):
        services.resend_message(message=failed)
    assert outbound_count(chat) == 1


@pytest.mark.parametrize("kind", ["text", "template"])
@pytest.mark.parametrize("number_state", ["paused", "inactive"])
def test_nothing_is_resent_from_a_paused_or_inactive_number(chat, kind, number_state):
    failed = failed_send(
        chat, kind, template(chat.number) if kind == "template" else None
    )
    number = chat.number
    if number_state == "paused":
        number.sending_paused = True
        number.sending_paused_reason = "Meta answered 190: the token expired"
    else:
        number.is_active = False
    number.save()
    failed = Message.objects.select_related("conversation__number").get(pk=failed.pk)

    with pytest.raises(services.SendingPaused):
        services.resend_message(message=failed)
    assert outbound_count(chat) == 1


def test_free_form_is_not_resent_outside_the_window(chat):
    failed = failed_send(chat)
    chat.last_inbound_at = timezone.now() - timedelta(hours=25)
    chat.save()
    failed.refresh_from_db()

    with pytest.raises(services.WindowClosed):
        services.resend_message(message=failed)


@pytest.mark.parametrize("kind", ["text", "template"])
def test_a_send_that_passes_every_check_is_queued_again(chat, kind):
    sale = template(chat.number) if kind == "template" else None
    failed = failed_send(chat, kind, sale)

    resent = services.resend_message(message=failed)

    assert resent.pk != failed.pk
    assert (resent.status, resent.type, resent.template) == ("queued", kind, sale)
    assert resent.payload == failed.payload
