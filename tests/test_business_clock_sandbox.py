"""Fast-forwarding business hours from the sandbox, end to end: the
sandbox's control (what its phone page calls) moves the helpdesk's business
clock over HTTP, signed; a customer writes on the sandbox; the away reply
goes out through the real delivery path and arrives in the sandbox."""

from datetime import time

import pytest

from conversations import services
from conversations.delivery import ratelimit
from conversations.models import BusinessHours, Conversation, OpeningHours
from conversations.services import business_clock
from sandbox.testing import wait_until
from tests.fixtures.outbound import feed_webhooks

CUSTOMER = "4917010000088"
AWAY = "We're closed now; we answer from 9:00."


def write(sandbox, receiver, fed: int, text: str) -> int:
    sandbox.control.customer_message(CUSTOMER, type="text", text=text)
    receiver.wait_for(fed + 1, timeout=10)
    return feed_webhooks(receiver, start=fed)


def texts_to_customer(sandbox) -> list[str]:
    return [
        (message.get("body") or {}).get("text", {}).get("body", "")
        for message in sandbox.control.messages(CUSTOMER)
    ]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_fast_forward_then_a_customer_gets_the_away_reply_in_the_sandbox(
    settings, sandbox_number, delivery_worker, graph_sandbox, receiver, live_server
):
    settings.DEBUG = True
    settings.SANDBOX_CLOCK = True
    ratelimit.connection().delete(business_clock.KEY)
    hours = BusinessHours.objects.create(
        name="Office",
        time_zone="Europe/Berlin",
        number=sandbox_number,
        away_message=AWAY,
    )
    OpeningHours.objects.bulk_create(
        OpeningHours(schedule=hours, weekday=day, opens=time(9), closes=time(17))
        for day in range(7)
    )
    control = graph_sandbox.control
    control.configure(helpdesk_url=live_server.url)
    phone_number_id = graph_sandbox.number.phone_number_id
    try:
        opened = control.business_clock(phone_number_id, jump="open")
        assert opened["open"] is True and opened["hours"]["name"] == "Office"
        fed = write(graph_sandbox, receiver, 0, "Hello, anyone there?")
        assert services.send_away_replies() == 0

        closed = control.business_clock(phone_number_id, jump="closed")
        assert closed["open"] is False
        assert closed["now"][11:16] == "17:00"
        fed = write(graph_sandbox, receiver, fed, "Still there?")
        assert services.send_away_replies() == 1

        wait_until(lambda: AWAY in texts_to_customer(graph_sandbox), timeout=15)
        conversation = Conversation.objects.get(customer__wa_id=CUSTOMER)
        assert conversation.messages.filter(text=AWAY).count() == 1

        back = control.business_clock(phone_number_id, reset=True)
        assert back["shift_seconds"] == 0
    finally:
        ratelimit.connection().delete(business_clock.KEY)
