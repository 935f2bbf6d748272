"""Templates (sync, parameter checks) and the windows at their boundaries."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from conversations import services
from conversations.models import Conversation, MessageTemplate
from conversations.rules import windows
from tests.fixtures.outbound import sends

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_service_window_is_open_until_just_before_24_hours():
    conversation = Conversation(last_inbound_at=T0)
    assert windows.service_window_open(
        conversation, T0 + timedelta(hours=23, minutes=59, seconds=59)
    )
    assert not windows.service_window_open(conversation, T0 + timedelta(hours=24))
    assert not windows.service_window_open(
        conversation, T0 + timedelta(hours=24, seconds=1)
    )
    assert not windows.service_window_open(Conversation(), T0)


def test_free_entry_point_opens_on_a_reply_to_an_ad_and_lasts_72_hours():
    ad = Conversation(last_inbound_at=T0, referral={"source_id": "ad"})
    assert windows.opens_free_entry_point(ad, T0 + timedelta(hours=23))
    assert not windows.opens_free_entry_point(ad, T0 + timedelta(hours=24))
    assert not windows.opens_free_entry_point(Conversation(last_inbound_at=T0), T0)
    ad.free_entry_point_expires_at = windows.free_entry_point_expiry(T0)
    assert windows.free_entry_point_open(
        ad, T0 + timedelta(hours=71, minutes=59, seconds=59)
    )
    assert not windows.free_entry_point_open(ad, T0 + timedelta(hours=72))
    assert not windows.opens_free_entry_point(ad, T0 + timedelta(hours=1))


@pytest.mark.e2e
@pytest.mark.django_db
def test_a_reply_within_24_hours_of_an_ad_opens_the_free_entry_point(
    conversation,
):
    Conversation.objects.filter(pk=conversation.pk).update(referral={"source_id": "1"})
    conversation.refresh_from_db()
    message = services.send_reply(
        conversation=conversation, kind="text", content={"body": "Hi"}
    )
    conversation.refresh_from_db()
    assert conversation.free_entry_point_expires_at == message.timestamp + timedelta(
        hours=72
    )


@pytest.mark.e2e
@pytest.mark.django_db
def test_sync_templates_follows_pages_and_keeps_status(graph_sandbox, sandbox_number):
    call_command("sync_templates", phone_number_id=sandbox_number.phone_number_id)
    templates = {t.name: t for t in MessageTemplate.objects.all()}
    assert templates["order_shipped"].status == "APPROVED"
    assert templates["flash_deal"].status == "REJECTED"
    assert templates["win_back"].status == "PAUSED"


@pytest.mark.e2e
@pytest.mark.django_db
def test_template_parameters_are_checked_and_built(graph_sandbox, conversation):
    services.sync_templates(number=conversation.number)
    shipped = MessageTemplate.objects.get(name="order_shipped")
    with pytest.raises(services.TemplateParametersInvalid, match="body: 2"):
        services.send_template(
            conversation=conversation, template=shipped, parameters={"body": ["Anna"]}
        )
    message = services.send_template(
        conversation=conversation,
        template=shipped,
        parameters={"body": ["Anna", "#4711"]},
    )
    assert message.payload["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Anna"},
                {"type": "text", "text": "#4711"},
            ],
        }
    ]
    assert message.text.startswith("Hi Anna, your order #4711")
    sale = MessageTemplate.objects.get(name="spring_sale")
    # Marketing templates need the customer's marketing opt-in.
    services.record_consent(
        customer=conversation.customer,
        purpose="marketing",
        status="opt_in",
        source="web_form",
    )
    with pytest.raises(services.TemplateParametersInvalid, match="header"):
        services.send_template(
            conversation=conversation,
            template=sale,
            parameters={"body": {"first_name": "Anna", "discount": "20%"}},
        )
    named = services.send_template(
        conversation=conversation,
        template=sale,
        parameters={
            "header": {"image": {"link": "https://example.com/sale.jpg"}},
            "body": {"first_name": "Anna", "discount": "20%"},
        },
    )
    assert named.payload["components"][1]["parameters"][0] == {
        "type": "text",
        "text": "Anna",
        "parameter_name": "first_name",
    }
    boarding = MessageTemplate.objects.get(name="boarding_pass")
    with pytest.raises(services.TemplateParametersInvalid, match="PDF"):
        services.send_template(
            conversation=conversation,
            template=boarding,
            parameters={
                "header": {"document": {"link": "https://example.com/pass.docx"}},
                "body": ["Anna", "LH 2046"],
            },
        )
    with pytest.raises(services.TemplateNotApproved):
        services.send_template(
            conversation=conversation,
            template=MessageTemplate.objects.get(name="win_back"),
            parameters={"body": ["Anna"]},
        )


@pytest.mark.e2e
@pytest.mark.django_db
def test_limits_are_refused_before_any_request(graph_sandbox, conversation):
    with pytest.raises(services.OutboundError, match="4096"):
        services.send_reply(
            conversation=conversation, kind="text", content={"body": "x" * 4097}
        )
    buttons = [
        {"type": "reply", "reply": {"id": str(n), "title": f"B{n}"}} for n in range(4)
    ]
    with pytest.raises(services.OutboundError, match="between 1 and 3"):
        services.send_reply(
            conversation=conversation,
            kind="interactive",
            content={
                "type": "button",
                "body": {"text": "?"},
                "action": {"buttons": buttons},
            },
        )
    with pytest.raises(services.MediaRefused):
        services.send_reply(
            conversation=conversation,
            kind="image",
            content={"id": "1", "link": "https://example.com/a.jpg"},
        )
    assert sends(graph_sandbox) == []
