"""The agent workspace in headless Chromium against a live helpdesk.

daphne and a Celery worker run in subprocesses on the test database; the
sandbox plays Meta (its customers post signed webhooks, its phone receives
what the helpdesk sends, and it reports sent/delivered/read). Waits are
Playwright's auto-waiting expect(), never sleeps.
"""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from conversations import realtime
from conversations.models import Conversation, MessageTemplate
from conversations.selectors.inbox import INBOX_PAGE_SIZE
from sandbox.testing import wait_until
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    MessageFactory,
)
from tests.fixtures.browser import log_in

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
CUSTOMER = "4917055500011"
expect.set_options(timeout=15_000)
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"


def customer_writes(conversation, *, at=None, publish=True, **fields):
    """What inbound processing stores (a message at `at`, now by default, the
    conversation's latest) and, unless publish=False, publishes."""
    at = at or timezone.now()
    message = MessageFactory(conversation=conversation, timestamp=at, **fields)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message, last_message_at=at, last_inbound_at=at
    )
    if publish:
        conversation.refresh_from_db()
        realtime.publish(
            realtime.MESSAGE_CREATED, conversation=conversation, message=message
        )
    return message


def test_an_agent_answers_a_customer_live_and_a_colleague_sees_it(stack):
    sandbox, url = stack["sandbox"], stack["url"]
    anna_page = stack["browser"].new_context().new_page()
    log_in(anna_page, url, "anna-browser", PASSWORD)
    expect(anna_page.get_by_role("status")).to_have_text("Live")

    # A customer writes: the row appears without a reload.
    sandbox.control.customer_message(
        CUSTOMER, type="text", text="Where is my parcel?", name="Carla Customer"
    )
    row = anna_page.get_by_role("link", name=re.compile("Carla Customer"))
    expect(row).to_contain_text("Where is my parcel?")
    row.click()
    expect(anna_page.get_by_role("heading", name="Carla Customer")).to_be_visible()

    # A colleague has the same conversation open in another browser.
    bruno_page = stack["browser"].new_context().new_page()
    log_in(bruno_page, url, "bruno-browser", PASSWORD)
    bruno_page.get_by_role("link", name=re.compile("Carla Customer")).click()
    expect(bruno_page.get_by_role("status")).to_have_text("Live")
    expect(anna_page.locator("#presence")).to_contain_text("Bruno Agent")

    # Enter sends; the bubble shows at once and its ticks follow to read.
    box = anna_page.get_by_role("textbox", name="Message")
    box.fill("It left our warehouse today")
    box.press("Enter")
    bubble = anna_page.locator("article.bubble.outbound").filter(
        has_text="It left our warehouse today"
    )
    expect(bubble).to_be_visible()
    # A property of the element itself, not an attribute the server renders.
    bubble.evaluate("element => { element.keptByTest = true; }")
    wait_until(
        lambda: any(
            m["body"].get("text", {}).get("body") == "It left our warehouse today"
            for m in sandbox.control.messages(CUSTOMER)
        ),
        timeout=15,
    )
    expect(bubble.get_by_role("img", name="Read")).to_be_visible()
    # The ticks changed in place: the thread (a log) got no new bubble to
    # read out again.
    assert bubble.evaluate("element => element.keptByTest === true")
    # Bruno saw the reply arrive too.
    expect(
        bruno_page.locator("article.bubble.outbound").filter(
            has_text="It left our warehouse today"
        )
    ).to_be_visible()

    # Assignment changes show live in the colleague's browser.
    anna_page.get_by_role("button", name="Assign to me").click()
    expect(bruno_page.locator("#conv-header .assignee-name")).to_have_text("Anna Agent")
    expect(
        bruno_page.get_by_role("link", name=re.compile("Carla Customer"))
    ).to_contain_text("Anna Agent")


def send_template(page, sandbox, name: str) -> list[dict]:
    """Click "Send template", see its bubble, and return the template sends
    the sandbox received once there is one."""
    page.get_by_role("button", name="Send template").click()
    expect(
        page.locator("article.bubble.outbound").filter(has_text=name)
    ).to_be_visible()

    def sent():
        return [
            m
            for m in sandbox.control.messages(CUSTOMER)
            if m["body"].get("type") == "template"
        ]

    wait_until(sent, timeout=15)
    return sent()


def test_the_composer_becomes_a_template_picker_when_the_window_closes(stack):
    number = stack["number"]
    stack["sandbox"].control.add_template(
        name="parcel_update",
        language="en",
        category="UTILITY",
        status="APPROVED",
        components=[{"type": "BODY", "text": "Hi {{1}}, news about your parcel"}],
    )
    template = MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="parcel_update",
        language="en",
        category="UTILITY",
        status="APPROVED",
        components=[{"type": "BODY", "text": "Hi {{1}}, news about your parcel"}],
    )
    customer = CustomerFactory(wa_id=CUSTOMER, phone=f"+{CUSTOMER}")
    conversation = ConversationFactory(customer=customer, number=number)
    # The customer wrote 24 hours ago less a few seconds: the window is about
    # to close while the agent looks at it.
    at = timezone.now() - timedelta(hours=24) + timedelta(seconds=4)
    customer_writes(conversation, at=at, publish=False, text="Hello?")
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    expect(page.get_by_role("combobox", name="Template")).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).to_have_count(0)
    page.get_by_role("combobox", name="Template").select_option(str(template.pk))
    page.get_by_label("Parameter 1").fill("Carla")
    send_template(page, stack["sandbox"], "parcel_update")


def test_the_template_picker_takes_an_amount_and_a_date(stack):
    number = stack["number"]
    components = [{"type": "BODY", "text": "Total {{1}}, delivery on {{2}}."}]
    stack["sandbox"].control.add_template(
        name="order_total",
        language="en",
        category="UTILITY",
        status="APPROVED",
        components=components,
    )
    template = MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="order_total",
        language="en",
        category="UTILITY",
        status="APPROVED",
        components=components,
    )
    customer = CustomerFactory(wa_id=CUSTOMER, phone=f"+{CUSTOMER}")
    conversation = ConversationFactory(customer=customer, number=number)
    customer_writes(
        conversation, at=timezone.now() - timedelta(days=2), publish=False, text="Hi"
    )
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    page.get_by_role("combobox", name="Template").select_option(str(template.pk))
    # Text by default; the amount's inputs appear when chosen.
    expect(page.get_by_label("Amount for 1")).to_be_hidden()
    page.get_by_label("Send 1 as").select_option("currency")
    expect(page.get_by_label("Parameter 1")).to_be_hidden()
    page.get_by_label("Amount for 1").fill("49.90")
    page.get_by_label("Currency for 1").fill("EUR")
    page.get_by_label("Fallback text for amount 1").fill("€49.90")
    page.get_by_label("Send 2 as").select_option("date_time")
    page.get_by_label("Date and time for 2").fill("2026-12-24T15:30")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "template-amount-and-date.png", full_page=True)
    (sent,) = send_template(page, stack["sandbox"], "order_total")
    parameters = sent["body"]["template"]["components"][0]["parameters"]
    assert parameters == [
        {
            "type": "currency",
            "currency": {
                "fallback_value": "€49.90",
                "code": "EUR",
                "amount_1000": 49900,
            },
        },
        {
            "type": "date_time",
            "date_time": {"fallback_value": "December 24, 2026, 15:30"},
        },
    ]
    page.screenshot(
        path=SCREENSHOTS / "template-amount-and-date-sent.png", full_page=True
    )


def test_a_tab_offline_for_100_events_catches_up_once_and_in_order(stack):
    number = stack["number"]
    customer = CustomerFactory(wa_id=CUSTOMER, phone=f"+{CUSTOMER}")
    conversation = ConversationFactory(customer=customer, number=number)
    now = timezone.now()
    customer_writes(conversation, at=now, publish=False, text="first")
    context = stack["browser"].new_context()
    page = context.new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    status = page.get_by_role("status")
    expect(status).to_have_text("Live")

    context.set_offline(True)
    expect(status).to_contain_text("Offline")
    for index in range(100):
        customer_writes(
            conversation,
            at=now + timedelta(seconds=index + 1),
            text=f"missed {index:03d}",
        )
    # Nothing arrives while offline.
    expect(page.locator("article.bubble", has_text="missed")).to_have_count(0)

    context.set_offline(False)
    bubbles = page.locator("article.bubble", has_text="missed")
    expect(bubbles).to_have_count(100)
    expect(status).to_have_text("Live")
    texts = bubbles.locator(".text").all_inner_texts()
    assert texts == [f"missed {index:03d}" for index in range(100)]
    applied = page.evaluate("window.helpdeskLive.applied")
    assert len(applied) == len(set(applied)), "an event was applied twice"
    assert applied[-100:] == sorted(applied[-100:])
    expect(
        page.get_by_role("link", name=re.compile(customer.display_name))
    ).to_contain_text("missed 099")


def test_a_connected_tab_fetches_an_event_whose_announcement_was_lost(
    stack, monkeypatch
):
    number = stack["number"]
    customer = CustomerFactory(wa_id=CUSTOMER, phone=f"+{CUSTOMER}")
    conversation = ConversationFactory(customer=customer, number=number)
    now = timezone.now()
    customer_writes(conversation, at=now, text="first")
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    expect(page.get_by_role("status")).to_have_text("Live")

    # Committed, but its channel message never leaves (as when the process
    # that made it dies right after the commit)...
    with monkeypatch.context() as lost:
        lost.setattr(realtime, "announce", lambda event: None)
        customer_writes(conversation, at=now + timedelta(seconds=1), text="lost")
    # ...and the tab learns of the gap from the next event, still connected.
    customer_writes(conversation, at=now + timedelta(seconds=2), text="after it")
    bubbles = page.locator("article.bubble .text")
    expect(bubbles).to_have_text(["first", "lost", "after it"])
    stream = str(number.pk)
    last = number.live_events.order_by("-sequence").first().sequence
    wait_until(lambda: page.evaluate("window.helpdeskLive.streams()")[stream] == last)
    applied = page.evaluate("window.helpdeskLive.applied")
    assert len(applied) == len(set(applied)), "an event was applied twice"


def test_older_messages_load_above_the_thread_in_order(stack):
    number = stack["number"]
    conversation = ConversationFactory(number=number, customer__name="Olga Older")
    start = timezone.now() - timedelta(hours=5)
    count = 70
    for index in range(count):
        MessageFactory(
            conversation=conversation,
            text=f"line {index:02d}",
            timestamp=start + timedelta(minutes=index),
        )
    last = conversation.messages.order_by("-timestamp").first()
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=last, last_message_at=last.timestamp
    )
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    bubbles = page.locator("#thread article.bubble")
    expect(bubbles).to_have_count(60)
    expect(bubbles.first).to_contain_text("line 10")

    page.get_by_role("link", name="Load older messages").click()
    expect(bubbles).to_have_count(count)
    expect(bubbles.first).to_contain_text("line 00")
    expect(bubbles.nth(10)).to_contain_text("line 10")
    expect(bubbles.last).to_contain_text(f"line {count - 1}")
    # Nothing older: the link is gone.
    expect(page.get_by_role("link", name="Load older messages")).to_have_count(0)


def test_the_live_inbox_keeps_the_length_of_its_page(stack):
    number = stack["number"]
    start = timezone.now() - timedelta(hours=1)
    for index in range(INBOX_PAGE_SIZE):
        conversation = ConversationFactory(
            number=number, customer__name=f"Earlier {index:02d}"
        )
        customer_writes(
            conversation, at=start + timedelta(seconds=index), publish=False
        )
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    expect(page.get_by_role("status")).to_have_text("Live")
    rows = page.locator("#inbox-list > li")
    expect(rows).to_have_count(INBOX_PAGE_SIZE)

    for index in range(5):
        conversation = ConversationFactory(
            number=number, customer__name=f"Newcomer {index}"
        )
        customer_writes(conversation, at=timezone.now() + timedelta(seconds=index))

    # The newcomers are on top, the five oldest rows went: what a reload shows.
    expect(rows.first).to_contain_text("Newcomer 4")
    expect(page.locator("#inbox-list > li", has_text="Earlier 04")).to_have_count(0)
    expect(rows).to_have_count(INBOX_PAGE_SIZE)
    assert "Earlier 05" in rows.last.inner_text()


def test_load_more_goes_on_after_the_last_row_the_live_inbox_shows(stack):
    number = stack["number"]
    start = timezone.now() - timedelta(hours=1)
    earlier = []
    for index in range(INBOX_PAGE_SIZE + 5):
        conversation = ConversationFactory(
            number=number, customer__name=f"Earlier {index:02d}"
        )
        customer_writes(
            conversation, at=start + timedelta(seconds=index), publish=False
        )
        earlier.append(conversation)
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    expect(page.get_by_role("status")).to_have_text("Live")
    rows = page.locator("#inbox-list > li")
    expect(rows).to_have_count(INBOX_PAGE_SIZE)

    # The oldest customer, not shown yet, writes: the row goes on top and the
    # list's last row (Earlier 05) makes room for it.
    customer_writes(earlier[0])
    expect(rows.first).to_contain_text("Earlier 00")
    expect(page.locator("#inbox-list > li", has_text="Earlier 05")).to_have_count(0)

    # The next page starts after the last row shown: Earlier 05 comes back,
    # Earlier 00 is not there twice, and nothing is left to load.
    page.get_by_role("button", name="Load more conversations").click()
    expect(rows).to_have_count(INBOX_PAGE_SIZE + 5)
    expect(rows.last).to_contain_text("Earlier 01")
    expect(page.locator("#inbox-list > li", has_text="Earlier 00")).to_have_count(1)
    expect(page.locator("#inbox-list > li", has_text="Earlier 05")).to_have_count(1)
    expect(page.get_by_role("button", name="Load more conversations")).to_have_count(0)

    # The list now keeps the length of two pages: a newcomer trims nothing.
    customer_writes(ConversationFactory(number=number, customer__name="Newcomer"))
    expect(rows.first).to_contain_text("Newcomer")
    expect(rows).to_have_count(INBOX_PAGE_SIZE + 6)


def test_the_agents_time_zone_follows_the_browsers(stack):
    at = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    conversation = ConversationFactory(
        number=stack["number"], customer__name="Summer Customer"
    )
    customer_writes(conversation, at=at, publish=False)
    page = stack["browser"].new_context(timezone_id="Europe/Berlin").new_page()
    with page.expect_response(re.compile(r"/me/time-zone/$")) as told:
        log_in(page, stack["url"], "anna-browser", PASSWORD)
    assert told.value.status == 204
    stack["anna"].refresh_from_db()
    assert stack["anna"].time_zone == "Europe/Berlin"

    # From the next page on, times are the agent's; the page asks no more.
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.reload()
    row = page.locator("#inbox-list > li", has_text="Summer Customer")
    expect(row.locator("time")).to_have_text("Jun 1, 12:00")
    expect(page.get_by_role("status")).to_have_text("Live")
    assert not [url for url in requests if url.endswith("/me/time-zone/")]


def conversation_with_a_message(number, **fields):
    customer = CustomerFactory(wa_id=CUSTOMER, phone=f"+{CUSTOMER}")
    conversation = ConversationFactory(customer=customer, number=number, **fields)
    customer_writes(conversation, text="hello")
    return conversation


def test_a_colleague_who_keeps_typing_keeps_showing_as_typing(stack):
    conversation = conversation_with_a_message(stack["number"])
    pages = {}
    for name in ("anna", "bruno"):
        page = stack["browser"].new_context().new_page()
        # The pages' timers run on clocks the test moves.
        page.clock.install()
        log_in(page, stack["url"], f"{name}-browser", PASSWORD)
        page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
        expect(page.get_by_role("status")).to_have_text("Live")
        page.clock.pause_at(timezone.now() + timedelta(seconds=1))
        pages[name] = page
    anna, bruno = pages["anna"], pages["bruno"]
    presence = anna.locator("#presence")
    expect(presence).to_contain_text("Bruno Agent")
    # Counts the presence notes Anna's tab applies (each replaces #presence).
    anna.evaluate(
        """() => {
          window.presenceNotes = 0;
          new MutationObserver((records) => records.forEach((record) =>
            record.addedNodes.forEach((node) => {
              if (node.id === "presence") window.presenceNotes++;
            }))
          ).observe(document.getElementById("presence").parentNode, {childList: true});
        }"""
    )
    box = bruno.get_by_role("textbox", name="Message")
    box.press("H")
    expect(presence).to_contain_text("Bruno Agent is typing")
    # A function, not an expression: the page's Content-Security-Policy
    # allows Playwright no eval of a string.
    anna.wait_for_function("() => window.presenceNotes >= 1")

    anna.clock.run_for(5000)
    # Bruno types on, past his tab's 3 s between notes.
    bruno.clock.run_for(3100)
    box.press("i")
    anna.wait_for_function("() => window.presenceNotes >= 2")
    # 8 s after the first note, 3 s after the last one: still typing.
    anna.clock.run_for(3000)
    assert "typing" in presence.inner_text()
    # Once he stops, the note goes.
    anna.clock.run_for(4000)
    expect(presence).not_to_contain_text("typing")


RECORD_NOTIFICATIONS = """
window.shownNotifications = [];
window.Notification = class {
  constructor(title) { window.shownNotifications.push(title); }
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
let focused = true;
document.hasFocus = () => focused;
window.setFocus = (value) => {
  focused = value;
  window.dispatchEvent(new Event(value ? "focus" : "blur"));
};
"""


def test_the_title_badge_and_notifications_are_for_what_the_agent_did_not_see(stack):
    conversation = conversation_with_a_message(stack["number"], assignee=stack["anna"])
    context = stack["browser"].new_context()
    # The system's notifications are recorded, and window focus is the test's.
    context.add_init_script(RECORD_NOTIFICATIONS)
    page = context.new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    status = page.get_by_role("status")
    expect(status).to_have_text("Live")
    row = page.get_by_role("link", name=re.compile(conversation.customer.display_name))

    # In front of the agent: the row says it, the title stays quiet.
    customer_writes(conversation, text="while looking")
    expect(row).to_contain_text("while looking")
    expect(page).to_have_title("Inbox · Helpdesk")
    assert page.evaluate("window.shownNotifications") == []

    # Another window in front: a badge and a notification.
    page.evaluate("window.setFocus(false)")
    customer_writes(conversation, text="while away")
    expect(page).to_have_title("(1) Inbox · Helpdesk")
    assert page.evaluate("window.shownNotifications") == [
        conversation.customer.display_name
    ]

    # What arrived while the tab was offline counts, without a notification each.
    context.set_offline(True)
    expect(status).to_contain_text("Offline")
    customer_writes(conversation, text="missed one")
    customer_writes(conversation, text="missed two")
    context.set_offline(False)
    expect(status).to_have_text("Live")
    expect(page).to_have_title("(3) Inbox · Helpdesk")
    assert len(page.evaluate("window.shownNotifications")) == 1

    # Back in front of the agent: the badge goes.
    page.evaluate("window.setFocus(true)")
    expect(page).to_have_title("Inbox · Helpdesk")


def test_two_quick_enters_send_the_reply_once(stack):
    conversation = conversation_with_a_message(stack["number"])
    page = stack["browser"].new_context().new_page()
    log_in(page, stack["url"], "anna-browser", PASSWORD)
    page.goto(f"{stack['url']}/conversations/{conversation.pk}/")
    box = page.get_by_role("textbox", name="Message")
    box.fill("Only once")
    box.press("Enter")
    box.press("Enter")
    expect(
        page.locator("article.bubble.outbound").filter(has_text="Only once")
    ).to_be_visible()
    # Every request the form made has been answered: one, so no second
    # request went out with the emptied box ("Write a message first.").
    expect(page.locator("#composer form.htmx-request")).to_have_count(0)
    expect(box).to_have_value("")
    expect(page.locator("#composer-error")).to_have_text("")
    assert conversation.messages.filter(direction="outbound").count() == 1
    # Shift+Enter still starts a new line, and Enter sends again.
    box.type("Two")
    box.press("Shift+Enter")
    box.type("lines")
    expect(box).to_have_value("Two\nlines")
    box.press("Enter")
    expect(
        page.locator("article.bubble.outbound").filter(has_text="lines")
    ).to_be_visible()
