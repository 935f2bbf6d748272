"""Attribution and cost from real sandbox traffic, checked against hand counts.

Customers write from two ads and without one; agents reply (opening the free
entry point) and the business sends notifications; every send goes through a
real worker to the sandbox and every status webhook through the helpdesk's
processing. The reports must say exactly what was counted by hand below.
"""

import csv
import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Message, MessageTemplate, RateCard
from conversations.selectors import billing, reports
from tests.factories import ConversationFactory
from tests.fixtures.business import NOTIFY_URL, consent
from tests.fixtures.outbound import feed_webhooks, wait_for_status

C1, C2, C3, C4 = "4917010000001", "4917010000002", "4917010000003", "4917010000004"
AD_A = {"source_id": "ad-A", "headline": "Summer flights"}
AD_B = {"source_id": "ad-B", "headline": "Winter sun"}
SALE = {
    "header": {"image": {"link": "https://example.com/sale.jpg"}},
    "body": {"first_name": "Anna", "discount": "20%"},
}


def write(sandbox, receiver, fed: int, wa_id: str, text: str, **extra) -> int:
    """A customer message through the sandbox, processed by the helpdesk."""
    sandbox.control.customer_message(wa_id, type="text", text=text, **extra)
    receiver.wait_for(fed + 1, timeout=10)
    return feed_webhooks(receiver, start=fed)


def conversation_of(wa_id: str) -> Conversation:
    return Conversation.objects.select_related("customer", "number").get(
        customer__wa_id=wa_id
    )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_ad_and_cost_reports_match_the_hand_count(
    templates,
    delivery_worker,
    graph_sandbox,
    receiver,
    shop_api,
    agent,
    admin_user,
    admin_client,
):
    day = date(2025, 7, 1)
    RateCard.objects.create(
        market="49", category="marketing", price="0.1131", valid_from=day
    )
    RateCard.objects.create(
        market="49", category="utility", price="0.0456", valid_from=day
    )
    RateCard.objects.create(
        market="*", category="marketing", price="0.0900", valid_from=day
    )
    # An older price that no longer applies.
    RateCard.objects.create(
        market="49", category="utility", price="0.9999", valid_from=date(2024, 1, 1)
    )
    sale = MessageTemplate.objects.get(name="spring_sale")

    fed = write(graph_sandbox, receiver, 0, C1, "Hi", referral=AD_A)
    fed = write(graph_sandbox, receiver, fed, C2, "Hello", referral=AD_A)
    fed = write(graph_sandbox, receiver, fed, C3, "Hola", referral=AD_B)
    c1, c2 = conversation_of(C1), conversation_of(C2)
    assert c1.referral_source_id == "ad-A"

    # Agents answer the ads within 24 h: the free entry point opens.
    outbound = [
        services.send_reply(
            conversation=c1, kind="text", content={"body": "Hi!"}, sender=agent
        ),
        services.send_reply(
            conversation=c2, kind="text", content={"body": "Hello!"}, sender=agent
        ),
        services.send_reply(
            conversation=c2,
            kind="text",
            content={"body": "Anything else?"},
            sender=agent,
        ),
    ]
    c1.refresh_from_db()
    assert c1.free_entry_point_expires_at is not None
    consent(shop_api, f"+{C1}", purpose="marketing")
    # A marketing template inside the free entry point: free.
    outbound.append(
        services.send_template(
            conversation=conversation_of(C1),
            template=sale,
            parameters=SALE,
            sender=agent,
        )
    )
    # The business's notifications to a customer with no open window: billed.
    consent(shop_api, f"+{C4}", purpose="marketing")
    consent(shop_api, f"+{C4}", purpose="utility")
    for body in (
        {
            "purpose": "marketing",
            "template": {"name": "spring_sale", "language": "en"},
            "parameters": SALE,
        },
        {
            "purpose": "utility",
            "template": {"name": "boarding_pass", "language": "en"},
            "parameters": {"body": ["Dan", "LH 2046"]},
            "document": {"link": "https://example.com/p.pdf", "filename": "pass.pdf"},
        },
    ):
        response = shop_api.post(NOTIFY_URL, {"to": f"+{C4}", **body}, format="json")
        assert response.status_code == 202, response.content
        outbound.append(Message.objects.get(pk=response.json()["message"]))
    for message in outbound:
        wait_for_status(message, "sent", "delivered", "read")
    # sent, delivered and read for each of the six sends.
    receiver.wait_for(fed + 18, timeout=15)
    fed = feed_webhooks(receiver, start=fed)
    fed = write(graph_sandbox, receiver, fed, C4, "Thanks!")
    services.change_status(
        conversation=conversation_of(C1), status="resolved", by=agent
    )
    for message in outbound:
        message.refresh_from_db()
        assert message.status == "read", (message.pk, message.status)

    with CaptureQueriesContext(connection) as queries:
        tables = reports.build(
            admin_user,
            since=timezone.now() - timedelta(days=1),
            until=timezone.now() + timedelta(minutes=1),
        )
    assert len(queries) <= 25, "reports aggregate in the database"

    ads = {row["ad"]: row for row in tables["ads"].rows}
    assert {
        key: (
            row["headline"],
            row["conversations"],
            row["resolved"],
            row["replies_in_free_window"],
            row["messages_billed"],
        )
        for key, row in ads.items()
    } == {
        "ad-A": ("Summer flights", 2, 1, 4, 0),
        "ad-B": ("Winter sun", 1, 0, 0, 0),
    }
    assert ads["ad-A"]["first_response_p50"] > 0
    assert ads["ad-B"]["first_response_p50"] is None

    cost_by_template = {
        row["template"]: (row["messages"], row["cost"], row["currency"])
        for row in tables["cost_by_template"].rows
    }
    assert cost_by_template == {
        "spring_sale": (1, Decimal("0.1131"), "EUR"),
        "boarding_pass": (1, Decimal("0.0456"), "EUR"),
    }
    [per_day] = tables["cost_by_day"].rows
    assert (per_day["messages"], per_day["cost"]) == (2, Decimal("0.1587"))
    [per_number] = tables["cost_by_number"].rows
    assert per_number["cost"] == Decimal("0.1587")
    assert tables["cost_by_ad"].rows == []

    funnel = {row["template"]: row for row in tables["template_funnel"].rows}
    assert {
        name: (r["queued"], r["sent"], r["delivered"], r["read"], r["replied"])
        for name, r in funnel.items()
    } == {"spring_sale": (2, 2, 2, 2, 1), "boarding_pass": (1, 1, 1, 1, 1)}

    volume = sum(row["messages"] for row in tables["volume_by_hour"].rows)
    assert volume == 4
    [overall] = tables["response_times"].rows
    assert overall["conversations"] == 4
    assert overall["resolved"] == 1

    # The pricing Meta reported, as the charges kept it.
    free = Message.objects.get(pk=outbound[3].pk)
    assert free.pricing["type"] == "free_entry_point"
    assert free.charge.billable is False
    c4 = conversation_of(C4)
    assert billing.conversation_cost(c4.pk) == [
        {"currency": "EUR", "total": Decimal("0.1587"), "count": 2}
    ]

    page = admin_client.get(reverse("conversations:reports"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Summer flights" in html and "<svg" in html
    csv_text = admin_client.get(
        reverse("conversations:report-csv", args=["ads"])
    ).content.decode()
    assert csv_text.splitlines()[0].startswith("ad,headline,conversations")
    assert "ad-A,Summer flights,2," in csv_text

    panel = admin_client.get(reverse("conversations:detail", args=[c4.pk]))
    assert "0.1587 EUR" in panel.content.decode()
    ad_panel = admin_client.get(reverse("conversations:detail", args=[c1.pk]))
    assert "Ad id ad-A" in ad_panel.content.decode()


@pytest.mark.django_db
def test_agents_without_the_permission_cannot_see_reports(agent_client):
    assert agent_client.get(reverse("conversations:reports")).status_code == 403
    assert (
        agent_client.get(reverse("conversations:report-csv", args=["ads"])).status_code
        == 403
    )


FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]


@pytest.mark.django_db
@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_report_csv_cells_never_start_a_formula(admin_client, number, start):
    """OWASP's CSV injection guidance: a cell a spreadsheet could read as a
    formula (=, +, -, @, tab, carriage return first) starts with a quote."""
    payload = f'{start}HYPERLINK("https://evil.example","Click")'
    ConversationFactory(
        number=number,
        referral_source_id=f"{start}ad-1",
        referral={"source_id": f"{start}ad-1", "headline": payload},
    )

    response = admin_client.get(reverse("conversations:report-csv", args=["ads"]))

    [header, row] = list(csv.reader(io.StringIO(response.content.decode())))
    assert header[:2] == ["ad", "headline"]
    assert row[:3] == [f"'{start}ad-1", f"'{payload}", "1"]


@pytest.mark.django_db
def test_report_csv_keeps_numbers_and_plain_text_as_they_are(admin_client, number):
    ConversationFactory(
        number=number,
        referral_source_id="ad-2",
        referral={"source_id": "ad-2", "headline": "Half price, 2 days"},
    )

    response = admin_client.get(reverse("conversations:report-csv", args=["ads"]))

    [_, row] = list(csv.reader(io.StringIO(response.content.decode())))
    assert row[:3] == ["ad-2", "Half price, 2 days", "1"]


def test_percentile_interpolates_like_percentile_cont():
    assert reports.percentile([1, 2, 3, 4], 0.5) == 2.5
    assert reports.percentile([10], 0.9) == 10
    assert reports.percentile([0, 10], 0.9) == 9


@pytest.mark.django_db
def test_the_template_picker_warns_before_a_billed_template(agent_client, number):
    from tests.factories import ConversationFactory, CustomerFactory

    RateCard.objects.create(
        market="49", category="marketing", price="0.1131", valid_from=date(2025, 7, 1)
    )
    MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="autumn_sale",
        language="en",
        category="MARKETING",
        status="APPROVED",
        components=[{"type": "BODY", "text": "Autumn sale!"}],
    )
    conversation = ConversationFactory(
        number=number, customer=CustomerFactory(wa_id="4917012340000")
    )
    html = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    assert "This template will be billed at about 0.1131 EUR" in html
