"""The agent workspace's layout in headless Chromium at a laptop's and a
phone's size: the conversation gets the room, and nothing is out of reach."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from conversations.models import Conversation, Label, Message
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
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
expect.set_options(timeout=15_000)


@pytest.fixture
def workspace(transactional_db):
    """An agent, a long conversation and a short one, a live server, a browser."""
    team = TeamFactory(name="Layout support")
    number = WhatsAppNumberFactory()
    number.teams.add(team)
    UserFactory(username="lena-layout", display_name="Lena Layout").teams.add(team)
    for name in ("VIP", "Refund", "Complaint"):
        Label.objects.create(name=name)
    start = timezone.now() - timedelta(hours=2)
    long = ConversationFactory(number=number, customer__name="Carla Customer")
    for index in range(40):
        MessageFactory(
            conversation=long,
            direction=Message.Direction.OUTBOUND if index % 2 else "inbound",
            status=Message.Status.READ if index % 2 else Message.Status.RECEIVED,
            text=f"line {index:02d} about the parcel that has not arrived yet",
            timestamp=start + timedelta(minutes=index),
        )
    short = ConversationFactory(number=number, customer__name="Sam Short")
    MessageFactory(conversation=short, text="Hello?", timestamp=start)
    for conversation in (long, short):
        last = conversation.messages.order_by("-timestamp").first()
        Conversation.objects.filter(pk=conversation.pk).update(
            last_message=last,
            last_message_at=last.timestamp,
            last_inbound_at=last.timestamp,
        )
    # Nothing is sent to WhatsApp here: Graph API calls would go nowhere.
    with live_helpdesk("http://127.0.0.1:9") as helpdesk:
        with playwright_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                yield {"url": helpdesk.url, "browser": browser, "long": long}
            finally:
                connections.close_all()
                browser.close()


def open_page(workspace, viewport):
    page = workspace["browser"].new_context(viewport=viewport).new_page()
    log_in(page, workspace["url"], "lena-layout", PASSWORD)
    return page


def assert_in_viewport(page, locator):
    box = locator.bounding_box()
    viewport = page.viewport_size
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], box
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], box


def assert_no_page_scroll(page):
    sizes = page.evaluate(
        "() => [document.documentElement.scrollWidth, innerWidth,"
        " document.documentElement.scrollHeight, innerHeight]"
    )
    assert sizes[0] <= sizes[1], f"the page scrolls sideways: {sizes}"
    assert sizes[2] <= sizes[3], f"the page scrolls down: {sizes}"


def test_on_a_laptop_the_thread_fills_the_pane_and_the_composer_stays_in_view(
    workspace,
):
    page = open_page(workspace, LAPTOP)
    page.goto(f"{workspace['url']}/conversations/{workspace['long'].pk}/")

    thread = page.get_by_role("log", name="Messages")
    expect(thread.locator("article.bubble")).to_have_count(40)
    assert thread.bounding_box()["height"] >= 400
    # The thread scrolls inside the pane; the page itself does not.
    assert thread.evaluate("el => el.scrollHeight > el.clientHeight")
    assert_no_page_scroll(page)
    assert_in_viewport(page, page.get_by_role("textbox", name="Message"))
    assert_in_viewport(page, page.get_by_role("button", name="Send"))
    # Filters, the live status and the customer are columns, not drawers.
    expect(page.get_by_role("searchbox", name="Search")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Live")
    expect(page.get_by_role("complementary", name="Customer")).to_be_visible()
    expect(page.get_by_role("button", name="Customer details")).to_be_hidden()
    # Ticks re-rendered in the thread are not announced again, only new bubbles.
    expect(thread).to_have_attribute("aria-relevant", "additions")


def test_on_a_phone_the_inbox_filters_and_a_conversation_are_all_usable(
    workspace,
):
    page = open_page(workspace, PHONE)
    expect(page.get_by_role("status")).to_have_text("Live")
    assert_no_page_scroll(page)

    # The filters are a drawer: closed, then opened to search.
    search = page.get_by_role("searchbox", name="Search")
    expect(search).to_be_hidden()
    page.get_by_role("button", name="Filters", exact=True).click()
    expect(page.get_by_label("My availability")).to_be_visible()
    search.fill("Carla")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"q=Carla"))
    expect(page.get_by_role("link", name=re.compile("Sam Short"))).to_have_count(0)

    # The list comes first; a row opens the conversation in its place.
    page.get_by_role("link", name=re.compile("Carla Customer")).click()
    expect(page.get_by_role("heading", name="Carla Customer")).to_be_visible()
    expect(page.get_by_role("region", name="Conversations")).to_be_hidden()
    assert_no_page_scroll(page)
    # Status, assignment and labels are menus: the primary action is a button.
    assert_in_viewport(page, page.get_by_role("button", name="Resolve"))
    page.locator("details.status-menu summary").click()
    assert_in_viewport(page, page.get_by_role("combobox", name="Status"))
    assert_in_viewport(page, page.get_by_role("button", name="Change status"))
    page.keyboard.press("Escape")
    assert_in_viewport(page, page.get_by_role("textbox", name="Message"))
    assert_in_viewport(page, page.get_by_role("button", name="Send"))

    # The customer is a drawer too, and the way back to the list is a link.
    customer = page.get_by_role("complementary", name="Customer")
    expect(customer).to_be_hidden()
    page.get_by_role("button", name="Customer details").click()
    expect(customer).to_contain_text("Phone")
    page.get_by_role("button", name="Close customer details").click()
    expect(customer).to_be_hidden()
    page.get_by_role("link", name="← All conversations").click()
    expect(page.get_by_role("region", name="Conversations")).to_be_visible()
