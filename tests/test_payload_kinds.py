"""Payload kinds real webhooks carry that used to be dropped or misfiled,
each from Meta's published example (tests/payloads/SOURCES.md), through the
worker: what is stored, what the agent sees, what the API returns."""

import pytest
from django.urls import reverse

from conversations.models import AccountNotice, Message, MessageTemplate, WebhookEvent
from tests.fixtures.business import api_client_for
from tests.fixtures.inbound import FIXTURE_WABA_ID, process

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
