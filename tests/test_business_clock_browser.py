"""The sandbox's phone page fast-forwards the helpdesk's business hours, in
headless Chromium: the clock panel reads the number's hours, and "Jump to
closing time" makes them closed (screenshot in var/screens/)."""

import os
import re
from pathlib import Path

import pytest

from conversations.delivery import ratelimit
from conversations.services import business_clock
from sandbox.testing import running_sandbox
from tests.fixtures.accessibility import assert_accessible
from tests.fixtures.browser import BASE_DIR, browser_marks, launch_chromium
from tests.fixtures.outbound import helpdesk_twin
from tests.fixtures.routing import office_hours

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = browser_marks(timeout=120)

SCREENS = Path(os.environ.get("HELPDESK_VAR_DIR", BASE_DIR / "var")) / "screens"


@pytest.fixture
def sandbox_and_helpdesk(transactional_db, settings, live_server):
    with running_sandbox() as sandbox:
        number = helpdesk_twin(sandbox.number)
        office_hours("We're closed.", days=range(7), number=number)
        settings.DEBUG = True
        settings.SANDBOX_CLOCK = True
        settings.WHATSAPP_GRAPH_API_URL = sandbox.base_url
        sandbox.control.configure(helpdesk_url=live_server.url)
        ratelimit.connection().delete(business_clock.KEY)
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        try:
            yield sandbox
        finally:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            ratelimit.connection().delete(business_clock.KEY)


def test_the_phone_page_jumps_the_helpdesk_to_closing_time(sandbox_and_helpdesk):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1366, "height": 768})
            phone = page.new_page()
            phone.goto(f"{sandbox_and_helpdesk.base_url}/")
            state = phone.locator("#clock-state")
            expect(state).to_contain_text("“Office”")
            expect(state).to_contain_text("real time")

            phone.get_by_role("button", name="Jump to closing time").click()
            expect(state).to_contain_text(re.compile(r"17:00 \(Europe/Berlin"))
            expect(state).to_contain_text("pretended), closed; opens")
            assert_accessible(phone)
            SCREENS.mkdir(parents=True, exist_ok=True)
            phone.screenshot(path=SCREENS / "sandbox-clock-1366x768.png")

            phone.get_by_role("button", name="Real time").click()
            expect(state).to_contain_text("real time")
        finally:
            browser.close()
