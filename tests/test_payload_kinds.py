"""Payload kinds real webhooks carry that used to be dropped or misfiled,
each from Meta's published example (tests/payloads/SOURCES.md), through the
worker: what is stored, what the agent sees, what the API returns."""

import pytest
from django.urls import reverse

from conversations import services
from conversations.models import (
    AccountNotice,
    Conversation,
    Message,
    MessageTemplate,
    WebhookEvent,
)
from tests.fixtures.business import api_client_for
from tests.fixtures.inbound import FIXTURE_WABA_ID, process
from tests.fixtures.payloads import load_payload_json

pytestmark = pytest.mark.django_db


def only_message() -> Message:
    return Message.objects.select_related("conversation").get()


def page(agent_client, message) -> str:
    url = reverse("conversations:detail", args=[message.conversation_id])
    return agent_client.get(url).content.decode()


@pytest.fixture
def template(meta_number):
    """The template of Meta's quality-update examples, approved."""
    return MessageTemplate.objects.create(
        waba_id=FIXTURE_WABA_ID,
        template_id="806312974732579",
        name="welcome_template",
        language="en-US",
        category="MARKETING",
        status="APPROVED",
    )


def test_a_quality_update_under_the_status_field_never_blanks_the_status(template):
    event = process("template_quality_under_status_update")

    assert event.state == WebhookEvent.State.PROCESSED
    template.refresh_from_db()
    assert template.status == "APPROVED"
    assert template.quality_score == "YELLOW"
    notice = AccountNotice.objects.get()
    assert "quality GREEN → YELLOW" in notice.summary


def test_a_quality_update_in_its_own_field_is_kept_on_the_template(template):
    process("template_quality_update")

    template.refresh_from_db()
    assert (template.status, template.quality_score) == ("APPROVED", "YELLOW")


def test_a_partner_event_is_routed_by_the_waba_in_waba_info(meta_number):
    event = process("account_update_partner_added")

    assert event.state == WebhookEvent.State.PROCESSED
    notice = AccountNotice.objects.get()
    assert notice.event == "PARTNER_ADDED"
    assert notice.waba_id == FIXTURE_WABA_ID


def test_a_product_inquiry_keeps_its_product_and_shows_it(
    meta_number, agent, agent_client
):
    process("text_product_inquiry")

    message = only_message()
    assert message.referred_product == {
        "catalog_id": "194836987003835",
        "product_retailer_id": "di9ozbzfi4",
    }
    html = page(agent_client, message)
    assert 'class="product-card"' in html
    assert "di9ozbzfi4" in html and "catalog 194836987003835" in html
    shown = api_client_for(agent).get(f"/api/v1/messages/{message.pk}/").json()
    assert shown["referred_product"]["product_retailer_id"] == "di9ozbzfi4"


def test_media_meta_marks_failed_is_not_downloaded_and_says_why(
    meta_number, agent_client, monkeypatch
):
    rung = []
    monkeypatch.setattr(
        "conversations.delivery.doorbells.ring_after_commit",
        lambda *args, **kwargs: rung.append(args),
    )

    process("image_failed")

    message = only_message()
    assert message.media_state == Message.MediaState.FAILED
    assert message.error["code"] == 131052
    assert rung == [], "nothing is queued for download"
    html = page(agent_client, message)
    assert "could not be downloaded: Media download error (131052)" in html


def test_a_call_permission_reply_is_stored_as_one(meta_number, agent):
    process("interactive_call_permission_reply")

    message = only_message()
    assert message.type == "interactive"
    assert message.text == "Call permission granted until 2025-06-22 20:45 UTC"
    assert message.payload["type"] == "call_permission_reply"
    shown = api_client_for(agent).get(f"/api/v1/messages/{message.pk}/").json()
    assert shown["interactive"]["call_permission_reply"]["response"] == "accept"


GROUP_ID = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"


def test_group_traffic_stays_out_of_the_members_one_to_one_thread(
    meta_number, agent, agent_client
):
    process("text")
    private = Conversation.objects.get()

    process("text_group")

    group = Conversation.objects.get(group_id=GROUP_ID)
    assert group != private
    assert group.customer == private.customer, "started by the member who wrote"
    message = group.messages.get()
    assert message.text == "What do you all think about this?"
    assert message.group_sender == private.customer
    assert private.messages.count() == 1, "nothing joined the private thread"

    html = page(agent_client, message)
    assert 'class="group-badge"' in html
    assert 'class="group-notice"' in html
    assert 'class="reply-form"' not in html, "no composer for a group"
    assert 'class="group-sender">Sheena Nelson<' in html

    api = api_client_for(agent)
    assert api.get(f"/api/v1/conversations/{group.pk}/").json()["group_id"] == GROUP_ID
    refused = api.post(
        f"/api/v1/conversations/{group.pk}/messages/",
        {"type": "text", "text": "Hi all"},
        format="json",
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "group_conversation"
    assert not Message.objects.filter(direction="outbound").exists()

    # The member's next private message still joins the private thread.
    document = load_payload_json("text")
    raw = document["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["id"] = "wamid.private-2"
    process(document)
    assert private.messages.count() == 2


def test_a_reply_in_a_group_conversation_is_refused_by_the_service(meta_number):
    process("text_group")
    group = Conversation.objects.get()

    with pytest.raises(services.GroupConversation):
        services.send_reply(conversation=group, kind="text", content={"body": "Hi"})


def test_an_echo_from_the_business_app_is_an_outbound_message_of_the_thread(
    meta_number, agent, agent_client
):
    process("text")
    conversation = Conversation.objects.get()

    event = process("smb_message_echo")
    process("smb_message_echo")

    assert event.state == WebhookEvent.State.PROCESSED
    echo = conversation.messages.get(direction="outbound")
    assert echo.from_business_app
    assert echo.status == Message.Status.SENT
    assert echo.text.startswith("Here's the info you requested!")
    assert conversation.messages.count() == 2, "a redelivery is stored once"
    html = page(agent_client, echo)
    assert 'class="from-business-app"' in html and "Sent from the phone app" in html
    shown = api_client_for(agent).get(f"/api/v1/messages/{echo.pk}/").json()
    assert shown["from_business_app"] is True


def test_an_edit_changes_the_message_and_keeps_what_it_said(
    meta_number, agent, agent_client
):
    process("text")
    process("edit")
    process("edit")

    message = only_message()
    assert message.text == "Hello, I need help with my order #4712"
    assert message.edited_at is not None
    (version,) = message.edit_history
    assert version["text"] == "Hello, my parcel has not arrived yet."
    html = page(agent_client, message)
    assert 'class="edited"' in html
    assert "Hello, my parcel has not arrived yet." in html
    shown = api_client_for(agent).get(f"/api/v1/messages/{message.pk}/").json()
    assert shown["edit_history"][0]["text"] == "Hello, my parcel has not arrived yet."


def test_a_revoke_marks_the_message_deleted_and_keeps_its_text(
    meta_number, agent_client
):
    process("text")
    process("revoke")

    message = only_message()
    assert message.revoked_at is not None
    assert message.edit_history[0]["change"] == "revoke"
    html = page(agent_client, message)
    assert "Deleted by the customer" in html


def test_an_edit_of_an_unknown_message_is_kept_as_a_message(meta_number):
    process("edit")

    assert only_message().type == "edit"


def test_shared_history_becomes_a_resolved_conversation_once(meta_number):
    event = process("history")
    process("history")

    assert event.state == WebhookEvent.State.PROCESSED
    conversation = Conversation.objects.get()
    assert conversation.status == Conversation.Status.RESOLVED
    asked, answered = conversation.messages.order_by("timestamp")
    assert (asked.direction, asked.text) == ("inbound", "Do you ship to Canada?")
    assert (answered.direction, answered.status) == ("outbound", "read")
    assert answered.from_business_app
    conversation.refresh_from_db()
    assert conversation.last_message == answered
    assert conversation.unread_count == 0


def test_history_joins_the_customers_existing_conversation(meta_number):
    process("text")
    conversation = Conversation.objects.get()

    process("history")

    assert Conversation.objects.count() == 1
    assert conversation.messages.count() == 3
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN
