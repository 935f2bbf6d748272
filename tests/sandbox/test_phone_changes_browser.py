"""The phone page in Chromium: a customer edits and deletes a message of
their own, the business shares its app's past chat; each posts Meta's
webhook, and a reloaded page shows the chat as it was left."""

from pathlib import Path

import pytest

from tests.fixtures.browser import CHROMIUM, SCREENSHOTS, launch_chromium

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
    pytest.mark.timeout(120),
]


def last_message(receiver, count: int) -> dict:
    """The messages[] item (or history) of the count-th webhook received."""
    receiver.wait_for(count)
    change = receiver.bodies()[count - 1]["entry"][0]["changes"][0]
    value = change["value"]
    return value["history"][0] if change["field"] == "history" else value["messages"][0]


def test_a_customer_edits_and_deletes_and_the_business_shares_its_chat(
    sandbox, receiver
):
    with playwright_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        phone = browser.new_page()
        phone.goto(f"{sandbox.base_url}/")
        phone.get_by_role("button", name="Start chat").click()
        box = phone.get_by_role("textbox", name="Message")
        box.fill("I ordered the red shoes")
        phone.get_by_role("button", name="Send", exact=True).click()
        bubbles = phone.locator("#messages li.customer")
        first = bubbles.filter(has_text="I ordered the red shoes")
        expect(first).to_be_visible()
        original = last_message(receiver, 1)["id"]

        first.get_by_role("button", name="Edit").click()
        expect(phone.locator("#quoting")).to_contain_text("Editing:")
        expect(box).to_have_value("I ordered the red shoes")
        box.fill("I ordered the blue shoes")
        phone.get_by_role("button", name="Send", exact=True).click()
        expect(bubbles.first).to_contain_text("I ordered the blue shoes")
        expect(bubbles.first).to_contain_text("edited")
        edit = last_message(receiver, 2)
        assert edit["type"] == "edit"
        assert edit["edit"]["original_message_id"] == original
        assert edit["edit"]["message"]["text"]["body"] == "I ordered the blue shoes"
        expect(bubbles).to_have_count(1)

        box.fill("Wrong chat")
        phone.get_by_role("button", name="Send", exact=True).click()
        second = bubbles.filter(has_text="Wrong chat")
        second.get_by_role("button", name="Delete").click()
        expect(bubbles.nth(1)).to_contain_text("You deleted this message")
        expect(bubbles.nth(1).get_by_role("button")).to_have_count(0)
        revoke = last_message(receiver, 4)
        assert (
            revoke["revoke"]["original_message_id"] == last_message(receiver, 3)["id"]
        )

        phone.get_by_role("button", name="Business app: share past chat").click()
        everything = phone.locator("#messages li")
        # The past chat goes before what the customer wrote today.
        expect(everything).to_have_count(4)
        expect(everything.nth(0)).to_contain_text("Do you ship to Canada?")
        expect(everything.nth(1)).to_contain_text("We do, in 5 to 7 days.")
        history = last_message(receiver, 5)
        assert [m["text"]["body"] for m in history["threads"][0]["messages"]] == [
            "Do you ship to Canada?",
            "We do, in 5 to 7 days.",
        ]

        # Reloaded, the page replays the events: the chat as it was left.
        phone.reload()
        phone.locator("#chat-list button").first.click()
        expect(everything).to_have_count(4)
        texts = [
            "Do you ship to Canada?",
            "We do, in 5 to 7 days.",
            "I ordered the blue shoes",
            "You deleted this message",
        ]
        for index, text in enumerate(texts):
            expect(everything.nth(index)).to_contain_text(text)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        phone.screenshot(path=SCREENSHOTS / "sandbox-phone-edit-delete-history.png")
        browser.close()
