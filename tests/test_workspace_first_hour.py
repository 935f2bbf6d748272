"""The first hour of a new team, in headless Chromium against a live helpdesk:
one test per item of the workspace's first-hour list (canned replies, the
sandbox after a restart, the demo seed, live renames, leftover state, ads),
the keyboard shortcuts, and axe-core over every page at a laptop's and a
phone's size, with the screenshots people look at (var/screens/)."""

import json
import os
import re
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import call_command

from conversations.models import CannedResponse, Conversation, Label
from sandbox.testing import running_sandbox
from tests.factories import ConversationFactory, CustomerFactory
from tests.fixtures.accessibility import assert_accessible
from tests.fixtures.browser import BASE_DIR, launch_chromium, log_in
from tests.test_workspace_browser import PASSWORD, customer_writes

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"
    ),
    pytest.mark.timeout(240),
]
expect.set_options(timeout=15_000)

SCREENS = Path(os.environ.get("HELPDESK_VAR_DIR", BASE_DIR / "var")) / "screens"
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def screen(page, name: str) -> None:
    """The picture of a page people look at: var/screens/<page>-<w>x<h>.png."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.screenshot(path=SCREENS / f"{name}-{size['width']}x{size['height']}.png")


def agent_page(stack, viewport=LAPTOP, username="anna-browser"):
    page = stack["browser"].new_context(viewport=viewport).new_page()
    log_in(page, stack["url"], username, PASSWORD)
    expect(page.get_by_role("status")).to_have_text("Live")
    return page


def open_conversation(stack, **customer):
    conversation = ConversationFactory(
        number=stack["number"], customer=CustomerFactory(**customer)
    )
    customer_writes(conversation, text="Where is my order?")
    return conversation


def ada_writes_from_an_ad(sandbox, wa_id: str) -> None:
    """A customer arrives from the sandbox's sample click-to-WhatsApp ad."""
    sandbox.control.customer_message(
        wa_id, type="text", text="Is the sale on?", name="Ada Ad", referral=True
    )


def test_item_3_a_slash_offers_canned_replies_and_never_sends_a_shortcut(stack):
    CannedResponse.objects.create(
        shortcut="where-is-order",
        title="Where is my order",
        text="Hi {{first_name}}, {{agent_name}} here: your parcel is on its way.",
    )
    CannedResponse.objects.create(shortcut="bye", title="Closing", text="Bye!")
    conversation = open_conversation(stack, name="Carla Customer")
    page = agent_page(stack)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    box = page.get_by_role("textbox", name="Message")
    suggestions = page.get_by_role("listbox", name="Canned replies")

    box.press_sequentially("/wh")
    expect(suggestions).to_be_visible()
    expect(
        suggestions.get_by_role("option", name=re.compile("where-is-order"))
    ).to_be_visible()
    expect(suggestions.get_by_role("option", name=re.compile("bye"))).to_be_hidden()
    box.press("Enter")
    filled = "Hi Carla, Anna Agent here: your parcel is on its way."
    expect(box).to_have_value(filled)
    expect(suggestions).to_be_hidden()

    # Typed in full and Enter: the shortcut becomes its text, nothing is sent.
    box.fill("")
    box.press_sequentially("/bye")
    box.press("Escape")
    expect(suggestions).to_be_hidden()
    box.press("Enter")
    expect(box).to_have_value("Bye!")
    assert not conversation.messages.filter(direction="outbound").exists()

    box.fill(filled)
    box.press("Enter")
    expect(page.locator("article.bubble.outbound", has_text=filled)).to_be_visible()
    assert_accessible(page)


def test_item_2_the_phone_page_keeps_its_chats_after_a_restart(tmp_path):
    state_file = str(tmp_path / "sandbox-state.json")
    with running_sandbox(state_file=state_file) as sandbox:
        sandbox.control.customer_message(
            "4917055500042", type="text", text="Hello from before", name="Anna Schmidt"
        )
    with (
        running_sandbox(state_file=state_file) as sandbox,
        playwright_api.sync_playwright() as playwright,
    ):
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{sandbox.base_url}/")
        chat = page.get_by_role("button", name=re.compile("Anna Schmidt"))
        expect(chat).to_be_visible()
        chat.click()
        expect(page.get_by_role("log")).to_contain_text("Hello from before")
        browser.close()


def test_item_5_the_demo_shows_labels_canned_replies_and_a_second_team(stack):
    number = stack["number"]
    config = Path(stack["sandbox"].base_url.replace("http://", "").replace(":", "-"))
    config = Path(os.environ.get("TMPDIR", "/tmp")) / f"seed-{config}.json"
    config.write_text(
        json.dumps(
            {
                "phone_number_id": number.phone_number_id,
                "display_phone_number": number.display_phone_number,
                "waba_id": number.waba_id,
                "access_token": "browser-test-token",
                "app_secret": "browser-test-secret",
                "verify_token": "v",
                "name": number.name,
            }
        )
    )
    out = StringIO()
    call_command("seed_demo", "--number-config", str(config), stdout=out)
    config.unlink()
    sam_password = re.search(r"'sam' with password '([^']+)'", out.getvalue())[1]
    conversation = open_conversation(stack, name="Carla Customer")

    page = stack["browser"].new_context(viewport=LAPTOP).new_page()
    log_in(page, stack["url"], "sam", sam_password)
    # Sam, of the Billing team only, sees the number's conversations...
    page.get_by_role("link", name=re.compile("Carla Customer")).click()
    # ...the seeded labels in the labels menu...
    page.locator("details.labels-menu summary").click()
    expect(page.get_by_role("checkbox", name="VIP")).to_be_visible()
    # ...and the canned replies of every team and of Billing.
    box = page.get_by_role("textbox", name="Message")
    box.press_sequentially("/")
    suggestions = page.get_by_role("listbox", name="Canned replies")
    expect(
        suggestions.get_by_role("option", name=re.compile("refund-policy"))
    ).to_be_visible()
    expect(
        suggestions.get_by_role("option", name=re.compile("where-is-order"))
    ).to_be_visible()
    # Assigning to the Billing team shows in the header.
    page.keyboard.press("Escape")
    page.locator("details.assign-menu summary").click()
    page.get_by_role("combobox", name="Assign to team").select_option(label="Billing")
    expect(page.locator("#conv-header")).to_contain_text("team Billing")
    assert Conversation.objects.get(pk=conversation.pk).team.name == "Billing"


def test_item_6_an_agent_set_name_survives_a_nameless_webhook(stack):
    sandbox = stack["sandbox"]
    page = agent_page(stack)
    sandbox.control.customer_message(
        "4917055500066", type="text", text="Hi", name="Anna Schmidt"
    )
    row = page.get_by_role("link", name=re.compile("Anna Schmidt"))
    row.click()
    name = page.get_by_label("Name", exact=True)
    name.fill("Anna S. (VIP)")
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("heading", name="Anna S. (VIP)")).to_be_visible()
    # A webhook without a profile name, then one with the number as name.
    sandbox.control.customer_message(
        "4917055500066", type="text", text="Again", name=""
    )
    sandbox.control.customer_message(
        "4917055500066", type="text", text="And again", name="+49 170 55500066"
    )
    expect(page.locator("#thread")).to_contain_text("And again")
    expect(page.get_by_role("heading", name="Anna S. (VIP)")).to_be_visible()


def test_item_7_no_leftover_errors_menus_or_offers(stack):
    Label.objects.create(name="VIP", color="#b91c1c")
    conversation = open_conversation(stack, name="Carla Customer")
    page = agent_page(stack)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")

    # An error under the composer goes away with the next success.
    page.locator(".note-disclosure summary").click()
    page.get_by_role("button", name="Add note").click()
    error = page.locator("#composer-error")
    expect(error).not_to_be_empty()
    box = page.get_by_role("textbox", name="Message")
    box.fill("Thanks, looking into it")
    box.press("Enter")
    expect(page.locator("article.bubble.outbound")).to_be_visible()
    expect(error).to_be_empty()

    # The labels menu closes once saved.
    menu = page.locator("details.labels-menu")
    menu.locator("summary").click()
    page.get_by_role("checkbox", name="VIP").check()
    page.get_by_role("button", name="Save labels").click()
    expect(page.locator("#conv-header .label", has_text="VIP")).to_be_visible()
    expect(menu).not_to_have_attribute("open", "")

    # "Assign to me" is not offered to the assignee, nor after a reload.
    page.get_by_role("button", name="Assign to me").click()
    expect(page.locator("#conv-header .assignee-name")).to_have_text("Anna Agent")
    expect(page.get_by_role("button", name="Assign to me")).to_be_hidden()
    page.reload()
    expect(page.get_by_role("status")).to_have_text("Live")
    expect(page.get_by_role("button", name="Assign to me")).to_be_hidden()


def test_item_8_the_ad_is_above_the_fold_and_everything_is_local(stack):
    sandbox, url = stack["sandbox"], stack["url"]
    page = agent_page(stack)
    ada_writes_from_an_ad(sandbox, "4917055500088")
    row = page.locator("#inbox-list li", has_text="Ada Ad")
    expect(row.locator(".ad-badge")).to_have_text("Ad")
    row.get_by_role("link").click()
    card = page.get_by_role("region", name="Ad that started this conversation")
    expect(card.get_by_role("heading")).to_have_text("Came from an ad")
    expect(card).to_be_in_viewport()
    image = card.get_by_role("img", name="Ad image")
    expect(image).to_have_attribute(
        "src", re.compile("^" + re.escape(sandbox.base_url))
    )
    page.wait_for_function(
        "() => document.querySelector('.ad-card img').naturalWidth > 0"
    )
    expect(page.locator("#conv-header .ad-badge")).to_have_text("From an ad")

    # A customer who never wrote: the closed window says so.
    never = ConversationFactory(
        number=stack["number"], customer=CustomerFactory(name="Nina Notyet")
    )
    page.goto(f"{url}/conversations/{never.pk}/")
    expect(page.locator("#composer")).to_contain_text(
        "has not written to this number yet"
    )
    expect(page.locator("#composer")).not_to_contain_text("More than 24 hours")

    # A favicon, named by the pages and at /favicon.ico for those that do not.
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert requests.get(url + icon, timeout=10).status_code == 200
    favicon = requests.get(f"{url}/favicon.ico", timeout=10)
    assert favicon.status_code == 200
    assert favicon.headers["Content-Type"].startswith("image/svg")


def test_keyboard_shortcuts_do_the_days_work(stack):
    older = open_conversation(stack, name="Olga Older")
    newer = open_conversation(stack, name="Nils Newer")
    page = agent_page(stack)
    page.goto(f"{stack['url']}/conversations/{newer.pk}/")
    expect(page.get_by_role("heading", name="Nils Newer")).to_be_visible()

    # A message's actions show where the agent points, not on every bubble.
    bubble = page.locator("article.bubble.inbound").first
    actions = bubble.locator(".bubble-actions")
    expect(actions).to_have_css("opacity", "0")
    bubble.hover()
    expect(actions).to_have_css("opacity", "1")
    page.mouse.move(1, 1)
    expect(actions).to_have_css("opacity", "0")

    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_dialog).to_be_visible()
    for key in ("j", "k", "r", "n", "e", "a", "/", "?"):
        expect(
            help_dialog.locator("kbd", has_text=re.compile(f"^{re.escape(key)}$"))
        ).not_to_have_count(0)
    page.keyboard.press("Escape")
    expect(help_dialog).to_be_hidden()

    page.keyboard.press("j")
    expect(page.get_by_role("heading", name="Olga Older")).to_be_visible()
    expect(page).to_have_url(re.compile(f"/conversations/{older.pk}/"))
    # The new page's script is running (its socket is live) before the next key.
    expect(page.get_by_role("status")).to_have_text("Live")
    page.keyboard.press("k")
    expect(page.get_by_role("heading", name="Nils Newer")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Live")

    page.keyboard.press("a")
    expect(page.locator("#conv-header .assignee-name")).to_have_text("Anna Agent")
    page.keyboard.press("e")
    expect(page.locator("#conv-header .status-badge")).to_have_text("Resolved")
    expect(page.get_by_role("button", name="Reopen")).to_be_visible()
    page.keyboard.press("e")
    expect(page.locator("#conv-header .status-badge")).to_have_text("Open")

    page.keyboard.press("r")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("n")
    expect(page.get_by_role("textbox", name="Private note")).to_be_focused()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("/")
    expect(page.get_by_role("searchbox", name="Search")).to_be_focused()


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_every_page_is_accessible_and_pictured(stack, viewport):
    sandbox, url = stack["sandbox"], stack["url"]
    Label.objects.create(name="VIP", color="#6d28d9")
    CannedResponse.objects.create(shortcut="hello", title="Hello", text="Hi!")
    ada_writes_from_an_ad(sandbox, "4917055500099")
    open_conversation(stack, name="Carla Customer")
    context = stack["browser"].new_context(viewport=viewport)
    page = context.new_page()
    page.goto(f"{url}/accounts/login/")
    assert_accessible(page)
    screen(page, "login")
    log_in(page, url, "anna-browser", PASSWORD)
    expect(page.get_by_role("status")).to_have_text("Live")
    expect(page.locator("#inbox-list li", has_text="Ada Ad")).to_be_visible()
    assert_accessible(page)
    screen(page, "inbox")

    page.get_by_role("link", name=re.compile("Ada Ad")).click()
    expect(page.get_by_role("heading", name="Ada Ad")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Live")
    page.get_by_role("textbox", name="Message").fill("Yes, until Sunday.")
    page.get_by_role("textbox", name="Message").press("Enter")
    expect(page.locator("article.bubble.outbound .tick")).to_have_count(1)
    assert_accessible(page)
    screen(page, "conversation")

    phone = context.new_page()
    phone.goto(f"{sandbox.base_url}/")
    phone.get_by_role("button", name=re.compile("Ada Ad")).click()
    expect(phone.get_by_role("log")).to_contain_text("Yes, until Sunday.")
    assert_accessible(phone)
    screen(phone, "phone")


def test_the_sandbox_phone_plays_a_customer_like_a_phone(stack):
    sandbox = stack["sandbox"]
    agent = agent_page(stack)
    phone = stack["browser"].new_context(viewport=PHONE).new_page()
    phone.goto(f"{sandbox.base_url}/")
    phone.get_by_label("Customer name").fill("Paula Phone")
    phone.get_by_label("Customer number").fill("+49 170 5550177")
    phone.get_by_role("button", name="Start from an ad").click()
    # The chat fills the phone, named after the business as on WhatsApp.
    expect(phone.get_by_role("heading", name="Sandbox Business")).to_be_visible()
    expect(phone.get_by_role("region", name="Start a chat")).to_be_hidden()
    message = phone.get_by_role("textbox", name="Message")
    message.fill("Saw your ad")
    message.press("Enter")
    phone.get_by_role("button", name="Location").click()
    phone.get_by_role("button", name="Contact card").click()

    # The helpdesk has the ad, the text, the place and the card.
    agent.get_by_role("link", name=re.compile("Paula Phone")).click()
    thread = agent.get_by_role("log", name="Messages")
    expect(thread).to_contain_text("Saw your ad")
    expect(thread).to_contain_text("Alexanderplatz")
    expect(thread).to_contain_text("Jo Example")
    expect(agent.locator("#conv-header .ad-badge")).to_be_visible()
    box = agent.get_by_role("textbox", name="Message")
    box.fill("The code is SPRING20")
    box.press("Enter")

    # The customer quotes the answer and reacts to it.
    answer = phone.locator("#messages li.business", has_text="SPRING20")
    expect(answer).to_be_visible()
    answer.get_by_role("button", name="Reply").click()
    expect(phone.get_by_text("Replying to: The code is SPRING20")).to_be_visible()
    message.fill("Thanks!")
    message.press("Enter")
    answer.get_by_role("button", name="React 👍").click()
    quoted = agent.locator("article.bubble.inbound", has_text="Thanks!")
    expect(quoted.locator(".quote")).to_contain_text("SPRING20")
    expect(agent.locator("article.bubble.outbound .reaction.inbound")).to_have_text(
        "👍"
    )
    assert_accessible(phone)
    screen(phone, "phone-chat")
    phone.get_by_role("button", name="Back to the chats").click()
    expect(phone.get_by_role("button", name=re.compile("Paula Phone"))).to_be_visible()


def test_item_1_the_template_picker_says_why_it_is_empty_until_a_sync(stack):
    from django.test import override_settings

    from conversations import services

    never = ConversationFactory(
        number=stack["number"], customer=CustomerFactory(name="Tara Template")
    )
    page = agent_page(stack)
    page.goto(f"{stack['url']}/conversations/{never.pk}/")
    composer = page.locator("#composer")
    expect(composer).to_contain_text("templates are not synced from Meta yet")
    expect(page.get_by_role("combobox", name="Template")).to_have_count(0)

    with override_settings(WHATSAPP_GRAPH_API_URL=stack["sandbox"].base_url):
        assert services.sync_templates(number=stack["number"]) > 0
    page.reload()
    picker = page.get_by_role("combobox", name="Template")
    expect(picker.locator("option", has_text="order_shipped")).to_have_count(1)
    expect(composer).not_to_contain_text("not synced")


def test_admins_keep_labels_and_canned_replies_in_the_workspace(stack):
    from tests.factories import UserFactory

    UserFactory(username="ada-admin", is_staff=True, is_superuser=True)
    conversation = open_conversation(stack, name="Carla Customer")
    page = stack["browser"].new_context(viewport=LAPTOP).new_page()
    log_in(page, stack["url"], "ada-admin", PASSWORD)
    page.get_by_role("link", name="Labels & replies").click()
    new_label = page.get_by_role("form", name="New label")
    new_label.get_by_label("Name").fill("Urgent")
    new_label.get_by_role("button", name="Add label").click()
    expect(page.get_by_role("form", name="Label Urgent")).to_be_visible()

    new_reply = page.get_by_role("form", name="New canned reply")
    new_reply.get_by_label("Shortcut").fill("thanks")
    new_reply.get_by_label("Title").fill("Thanks")
    new_reply.get_by_label("Text").fill("Thanks {{name}}!")
    new_reply.get_by_role("button", name="Add canned reply").click()
    expect(page.get_by_role("alert")).to_contain_text("Unknown placeholder {{name}}")
    new_reply = page.get_by_role("form", name="New canned reply")
    new_reply.get_by_label("Text").fill("Thanks {{first_name}}!")
    new_reply.get_by_role("button", name="Add canned reply").click()
    expect(page.get_by_role("form", name="Canned reply /thanks")).to_be_visible()
    assert_accessible(page)
    screen(page, "manage")

    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    page.locator("details.labels-menu summary").click()
    expect(page.get_by_role("checkbox", name="Urgent")).to_be_visible()
    page.keyboard.press("Escape")
    box = page.get_by_role("textbox", name="Message")
    box.press_sequentially("/than")
    box.press("Tab")
    expect(box).to_have_value("Thanks Carla!")
