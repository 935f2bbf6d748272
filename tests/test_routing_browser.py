"""Routing and service levels in headless Chromium against a live helpdesk:
the due chip and the "Due soonest" order, a macro run with one click, reply
buttons from the composer. Waits are Playwright's auto-waiting expect()."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Macro, Message, ServicePolicy
from sandbox.config import Number
from sandbox.testing import running_sandbox
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.browser import launch_chromium, live_helpdesk, log_in

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"
    ),
    pytest.mark.timeout(180),
]

PASSWORD = "agent-password"  # noqa: S105 (the factory's)
expect.set_options(timeout=15_000)


def customer_wrote(number, team, name: str, ago: timedelta) -> Conversation:
    at = timezone.now() - ago
    conversation = ConversationFactory(
        number=number, team=team, customer=CustomerFactory(name=name)
    )
    message = MessageFactory(conversation=conversation, timestamp=at, text="Help?")
    Conversation.objects.filter(pk=conversation.pk).update(
        created_at=at, last_message=message, last_message_at=at, last_inbound_at=at
    )
    return conversation


@pytest.fixture
def stack(transactional_db):
    sandbox_number = Number(
        phone_number_id="109000000000777",
        display_phone_number="+15550109777",
        waba_id="209000000000777",
        access_token="routing-browser-token",  # noqa: S106
        app_secret="routing-browser-secret",  # noqa: S106
    )
    team = TeamFactory(name="Routing support")
    number = WhatsAppNumberFactory(
        phone_number_id=sandbox_number.phone_number_id,
        display_phone_number=sandbox_number.display_phone_number,
        waba_id=sandbox_number.waba_id,
        access_token=sandbox_number.access_token,
        app__app_secret=sandbox_number.app_secret,
    )
    number.teams.add(team)
    agent = UserFactory(username="rita-browser", display_name="Rita Agent")
    agent.teams.add(team)
    with running_sandbox(numbers=[sandbox_number]) as sandbox:
        with live_helpdesk(sandbox.base_url) as helpdesk:
            sandbox.control.configure(webhook_url=f"{helpdesk.url}/webhooks/whatsapp/")
            with playwright_api.sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                try:
                    yield {
                        "url": helpdesk.url,
                        "number": number,
                        "team": team,
                        "browser": browser,
                    }
                finally:
                    connections.close_all()
                    browser.close()


def test_due_chips_order_macros_and_reply_buttons(stack):
    number, team = stack["number"], stack["team"]
    ServicePolicy.objects.create(
        name="Support",
        team=team,
        first_response_minutes=30,
        business_hours_only=False,
    )
    overdue = customer_wrote(number, team, "Olga Overdue", timedelta(hours=1))
    soon = customer_wrote(number, team, "Sam Soon", timedelta(minutes=20))
    customer_wrote(number, team, "Lena Later", timedelta(minutes=1))
    services.refresh_service_levels()
    Macro.objects.create(name="Close politely", team=team, resolve=True)

    page = (
        stack["browser"].new_context(viewport={"width": 1400, "height": 900}).new_page()
    )
    log_in(page, stack["url"], "rita-browser", PASSWORD)
    page.goto(f"{stack['url']}/?order=due")
    rows = page.locator("#inbox-list > li")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Olga Overdue")
    expect(rows.nth(0)).to_contain_text("Overdue since")
    expect(rows.nth(1)).to_contain_text("Sam Soon")
    expect(rows.nth(1)).to_contain_text("Due")

    page.get_by_role("link", name=re.compile("Sam Soon")).click()
    expect(page.get_by_role("heading", name="Sam Soon")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Live")

    # Reply buttons from the composer.
    page.get_by_text("Buttons or list…").click()
    page.get_by_label("Interactive text").fill("Did this help?")
    page.get_by_label("Options").fill("Yes\nNo")
    page.get_by_role("button", name="Offer these choices").click()
    expect(page.locator("#thread")).to_contain_text("Yes")
    assert Message.objects.filter(conversation=soon, type="interactive").exists()

    # A macro with one click: the note shows what it did.
    page.get_by_label("Macro").select_option(label="Close politely")
    page.get_by_role("button", name="Run macro").click()
    expect(page.locator("#thread")).to_contain_text("Macro “Close politely”: resolved.")
    expect(page.locator("#conv-header")).to_contain_text("Resolved")
    assert Conversation.objects.get(pk=soon.pk).status == "resolved"
    assert Conversation.objects.get(pk=overdue.pk).status == "open"
