"""The Content-Security-Policy in headless Chromium: the workspace, the admin
and the API docs work under it, and the browser reports no violation.

Screenshots of each page go to var/screenshots/csp-*.png (ignored by git),
to look at what the policy left of them.
"""

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from conversations.models import Conversation, Label
from tests.factories import (
    ConversationFactory,
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
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"
expect.set_options(timeout=15_000)


@pytest.fixture
def helpdesk(transactional_db):
    """An admin agent with a labelled conversation from an ad, a live server
    and a browser whose console is watched for violations."""
    team = TeamFactory(name="Policy support")
    number = WhatsAppNumberFactory(name="Policy line")
    number.teams.add(team)
    ada = UserFactory(
        username="ada-csp", display_name="Ada Admin", is_staff=True, is_superuser=True
    )
    ada.teams.add(team)
    conversation = ConversationFactory(
        number=number,
        customer__name="Carla Customer",
        referral={
            "source_type": "ad",
            "source_id": "120000000000001",
            "headline": "Spring sale",
            "body": "20% off everything",
            "media_type": "image",
            # An image the policy allows (https:), on no server at all.
            "image_url": "https://127.0.0.1:9/ad.jpg",
        },
    )
    message = MessageFactory(conversation=conversation, text="Do you ship to Oslo?")
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message,
        last_message_at=message.timestamp,
        last_inbound_at=timezone.now(),
    )
    conversation.labels.add(Label.objects.create(name="VIP", color="#b91c1c"))
    with live_helpdesk("http://127.0.0.1:9") as server:
        with playwright_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_context(
                    timezone_id="Europe/Berlin", viewport={"width": 1366, "height": 900}
                ).new_page()
                violations = []
                page.on(
                    "console",
                    lambda entry: (
                        violations.append(entry.text)
                        if "Content Security Policy" in entry.text
                        else None
                    ),
                )
                yield {
                    "url": server.url,
                    "page": page,
                    "violations": violations,
                    "conversation": conversation,
                    "ada": ada,
                }
            finally:
                connections.close_all()
                browser.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"csp-{name}.png", full_page=True)


def test_the_workspace_works_under_the_policy(helpdesk):
    page, url = helpdesk["page"], helpdesk["url"]
    conversation = helpdesk["conversation"]
    # The time zone is told with htmx from workspace.js, no eval'd trigger.
    with page.expect_response("**/me/time-zone/") as told:
        log_in(page, url, "ada-csp", PASSWORD)
    assert told.value.status == 204
    expect(page.get_by_role("status")).to_have_text("Live")
    label = page.locator("#inbox-list .label", has_text="VIP")
    expect(label).to_have_css("border-left-color", "rgb(185, 28, 28)")
    screenshot(page, "inbox")

    page.get_by_role("link", name="Carla Customer").click()
    expect(page.get_by_role("status")).to_have_text("Live")
    expect(page.locator("#conv-header .label", has_text="VIP")).to_have_css(
        "border-left-color", "rgb(185, 28, 28)"
    )
    expect(page.get_by_text("Spring sale")).to_be_visible()
    box = page.get_by_role("textbox", name="Message")
    box.fill("We do, in two days.")
    box.press("Enter")
    expect(
        page.locator("article.bubble.outbound", has_text="We do, in two days.")
    ).to_be_visible()
    page.get_by_text("Add a private note").click()
    page.get_by_role("textbox", name="Private note").fill("Asked about Oslo")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#thread", has_text="Asked about Oslo")).to_be_visible()
    screenshot(page, "conversation")
    assert conversation.messages.count() == 2
    assert helpdesk["violations"] == []


def test_the_admin_and_the_api_docs_work_under_the_policy(helpdesk):
    page, url = helpdesk["page"], helpdesk["url"]
    log_in(page, url, "ada-csp", PASSWORD)

    page.goto(f"{url}/admin/")
    expect(page.get_by_role("link", name="Tokens")).to_be_visible()
    screenshot(page, "admin")
    page.goto(f"{url}/admin/conversations/conversation/")
    # The changelist's JavaScript: selecting a row shows the action bar count.
    page.locator("input.action-select").first.check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    # The two-list team picker is built by the admin's JavaScript.
    page.goto(f"{url}/admin/accounts/user/{helpdesk['ada'].pk}/change/")
    expect(page.locator(".selector .selector-available").first).to_be_visible()
    screenshot(page, "admin-form")

    page.goto(f"{url}/api/docs/")
    expect(page.get_by_role("heading", name="WhatsApp Helpdesk API")).to_be_visible()
    expect(page.get_by_text("/api/v1/conversations/").first).to_be_visible()
    screenshot(page, "api-docs")
    assert helpdesk["violations"] == []
