"""The reports page in headless Chromium, as a supervisor reads it: headline
figures, charts, a quick range, a refused period, at desktop and phone size.
axe-core checks each size for serious or critical violations.

Screenshots: var/screens/reports-1366x768.png and reports-390x844.png.
"""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.utils import timezone

from conversations.models import Conversation, Message, MessageCharge, MessageTemplate
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.browser import launch_chromium, live_helpdesk, log_in

playwright_api = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"
    ),
    pytest.mark.timeout(180),
]

PASSWORD = "agent-password"  # noqa: S105 (the factory's)
SCREENS = Path(settings.VAR_DIR) / "screens"
SIZES = ((1366, 768), (390, 844))
expect.set_options(timeout=15_000)


def forty_days_of_traffic(number, team, agents, template) -> None:
    """Conversations over the last 40 days: answered after a few minutes,
    some resolved, templates sent and billed, one customer still waiting."""
    now = timezone.now()
    messages, charges = [], []
    for day in range(40):
        for index in range(2 + (day * 5) % 7):
            created = now - timedelta(days=day, hours=index % 9 + 1)
            agent = agents[(day + index) % len(agents)]
            chat = ConversationFactory(
                number=number, customer=CustomerFactory(), assignee=agent, team=team
            )
            answered = 40 + (day * 37 + index * 53) % 600
            Conversation.objects.filter(pk=chat.pk).update(
                created_at=created,
                first_response_at=created + timedelta(seconds=answered),
                resolved_at=created + timedelta(hours=1 + index % 5),
                status="resolved",
            )
            messages.append(
                Message(
                    conversation=chat,
                    direction="inbound",
                    type="text",
                    text="Where is my order?",
                    wamid=f"wamid.in.{chat.pk}",
                    status="received",
                    timestamp=created,
                )
            )
            sent = Message(
                conversation=chat,
                direction="outbound",
                type="template",
                template=template,
                wamid=f"wamid.out.{chat.pk}",
                status="read",
                timestamp=created + timedelta(seconds=answered),
                sent_at=created + timedelta(seconds=answered),
                delivered_at=created + timedelta(seconds=answered + 2),
                read_at=created + timedelta(seconds=answered + 60),
            )
            messages.append(sent)
            charges.append((chat, sent, created + timedelta(seconds=answered + 2)))
    Message.objects.bulk_create(messages)
    MessageCharge.objects.bulk_create(
        MessageCharge(
            message=sent,
            conversation=chat,
            category="utility",
            pricing_type="regular",
            billable=True,
            market="49",
            price=Decimal("0.0456"),
            currency="EUR",
            billed_at=billed,
        )
        for chat, sent, billed in charges
    )
    waiting = ConversationFactory(
        number=number, customer=CustomerFactory(profile_name="Carla Customer")
    )
    question = Message.objects.create(
        conversation=waiting,
        direction="inbound",
        type="text",
        text="Hello?",
        wamid="wamid.waiting",
        status="received",
        timestamp=now - timedelta(minutes=47),
    )
    Conversation.objects.filter(pk=waiting.pk).update(
        last_message=question,
        last_inbound_at=question.timestamp,
        last_message_at=question.timestamp,
    )


@pytest.fixture
def supervisor(transactional_db):
    team = TeamFactory(name="Support DE")
    number = WhatsAppNumberFactory(name="Support DE")
    number.teams.add(team)
    agents = [
        UserFactory(username=name, display_name=name.title())
        for name in ("anna", "ben", "chiara")
    ]
    template = MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="order_shipped",
        language="en",
        category="UTILITY",
        status="APPROVED",
    )
    forty_days_of_traffic(number, team, agents, template)
    sam = UserFactory(
        username="sam", display_name="Sam Supervisor", time_zone="Europe/Berlin"
    )
    sam.teams.add(team)
    sam.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="conversations", codename="view_reports"
        )
    )
    return sam


def serious_violations(page) -> list[str]:
    results = axe_playwright.Axe().run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} "
        f"{[node['target'] for node in violation['nodes']][:3]}"
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def test_a_supervisor_reads_the_reports_at_desktop_and_phone_size(supervisor):
    SCREENS.mkdir(parents=True, exist_ok=True)
    with live_helpdesk("http://127.0.0.1:9") as server:
        with playwright_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for width, height in SIZES:
                page = browser.new_context(
                    timezone_id="Europe/Berlin",
                    viewport={"width": width, "height": height},
                ).new_page()
                refused = []
                page.on(
                    "console",
                    lambda entry, refused=refused: (
                        refused.append(entry.text)
                        if "Content Security Policy" in entry.text
                        else None
                    ),
                )
                log_in(page, server.url, "sam", PASSWORD)
                page.goto(f"{server.url}/reports/?range=this_month")
                page.get_by_role("link", name="Last 30 days").click()
                expect(page.get_by_role("link", name="Last 30 days")).to_have_attribute(
                    "aria-current", "true"
                )
                figures = page.locator(".figures")
                expect(figures.get_by_text("Open now")).to_be_visible()
                expect(figures.get_by_text("Carla Customer")).to_be_visible()
                expect(figures.locator(".amount")).to_contain_text("EUR")
                expect(figures).to_contain_text("the 30 days before")
                expect(page.locator("svg[role=img]")).to_have_count(18)
                expect(page.get_by_role("img", name="Messages by day")).to_be_visible()
                assert page.evaluate(
                    "document.documentElement.scrollWidth <= window.innerWidth"
                ), "the page scrolls sideways"
                assert serious_violations(page) == []
                assert refused == [], "the page breaks its Content-Security-Policy"
                page.screenshot(
                    path=SCREENS / f"reports-{width}x{height}.png", full_page=True
                )

            page.get_by_label("From", exact=True).fill("2026-01-10")
            page.get_by_label("To", exact=True).fill("2026-01-01")
            page.get_by_role("button", name="Show").click()
            expect(page.get_by_role("alert")).to_contain_text(
                "The end of the range comes before its start."
            )
            assert serious_violations(page) == []
