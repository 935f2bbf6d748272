"""A customer known by username only, in a real browser: the agent sees the
username and the hidden phone, answers, and the sandbox receives Meta's
`recipient`. Screenshots go to var/screenshots/identity-*.png (ignored by git)."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from sandbox.testing import wait_until
from tests.factories import CustomerFactory
from tests.fixtures.browser import log_in
from tests.test_workspace_browser import PASSWORD

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"
    ),
    pytest.mark.timeout(180),
]

SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"
PHONE = "4917055500077"
BSUID = "DE.16180339887498948482"


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"identity-{name}.png", full_page=True)


def username_customer_writes(stack, text: str, name: str = ""):
    """An agent's workspace is live; the username customer (no phone) writes."""
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    expect(page.get_by_role("status")).to_have_text("Live")
    stack["sandbox"].control.customer_message(
        PHONE,
        type="text",
        text=text,
        name=name,
        user_id=BSUID,
        username="@lena.k",
        hide_phone=True,
    )
    return page


def test_an_agent_answers_a_username_customer_by_recipient(stack):  # noqa: F811
    sandbox = stack["sandbox"]
    page = username_customer_writes(stack, "Is my order on its way?")
    row = page.get_by_role("link", name=re.compile("Is my order on its way"))
    row.click()
    panel = page.get_by_role("complementary", name="Customer")
    expect(panel).to_contain_text("@lena.k")
    expect(panel).to_contain_text("hidden (username only)")
    expect(panel).to_contain_text(BSUID)

    box = page.get_by_role("textbox", name="Message")
    box.fill("Yes, it arrives tomorrow")
    box.press("Enter")
    wait_until(
        lambda: any(
            m["body"].get("recipient") == BSUID and "to" not in m["body"]
            for m in sandbox.control.messages()
        ),
        timeout=15,
    )
    bubble = page.locator("article.bubble.outbound").filter(
        has_text="Yes, it arrives tomorrow"
    )
    expect(bubble.get_by_role("img", name="Read")).to_be_visible()
    screenshot(page, "username-customer")


def test_a_merge_appears_live_in_the_open_thread(stack):
    sandbox = stack["sandbox"]
    page = username_customer_writes(stack, "Where is parcel 12?", name="Lena K")
    page.get_by_role("link", name=re.compile("Where is parcel 12")).click()
    thread = page.get_by_role("log", name="Messages")
    expect(thread).to_contain_text("Where is parcel 12?")
    # The same person wrote from the phone before, as another customer.
    CustomerFactory(wa_id=PHONE, phone=f"+{PHONE}", name="<i>Lena by phone</i>")

    sandbox.control.customer_message(
        PHONE, type="text", text="It is parcel 12 of order 7", hide_phone=False
    )
    line = thread.locator(".thread-merge")
    expect(line).to_contain_text("Merged with <i>Lena by phone</i> (+" + PHONE + ")")
    # At the merge's time: after the messages before it, the one that
    # revealed it included (Meta stamps it a moment earlier).
    expect(thread).to_contain_text("It is parcel 12 of order 7")
    expect(thread.locator("> *").last).to_have_class("thread-merge")
    screenshot(page, "merge-in-thread")
    page.reload()
    expect(
        page.get_by_role("log", name="Messages").locator(".thread-merge")
    ).to_have_count(1)
