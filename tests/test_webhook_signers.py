"""Which app signed a webhook decides which numbers it may act on.

The endpoint accepts a signature by any configured app's secret and stores
which app signed; processing routes each item only to that app's numbers.
A holder of one app's secret (an agency's app, a second brand's, a leaked
test app) must not forge messages, statuses, consent or account changes for
the others. And a flood of forged POSTs must not become a flood of reads of
the apps' secrets.
"""

import asyncio
import json

import pytest

from conversations import services, tasks
from conversations.models import (
    AccountNotice,
    ConsentRecord,
    Customer,
    Message,
    MessageTemplate,
    ParkedStatus,
    WebhookEvent,
    WhatsAppNumber,
)
from conversations.whatsapp import webhooks
from conversations.whatsapp.webhooks import AppKeys, AppSecrets
from tests.factories import (
    ConversationFactory,
    MessageFactory,
    MetaAppFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.inbound import process, store_event
from tests.fixtures.payloads import load_payload_json
from tests.fixtures.webhook_server import post_in_process, sign, signed_headers

# The delivered status of tests/payloads/status_delivered.json.
STATUS_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJEQUI4QUNCMjU0RTdBN0Y0QzAA"


@pytest.fixture
def intruder(db):
    """Another Meta app of the same helpdesk, with a number of its own."""
    app = MetaAppFactory(name="Agency app")
    WhatsAppNumberFactory(app=app)
    return app


@pytest.fixture
def sent_message(meta_number):
    """An outbound message of the fixtures' number that Meta reported sent."""
    return MessageFactory(
        conversation=ConversationFactory(number=meta_number),
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.SENT,
        wamid=STATUS_WAMID,
    )


def footprint(message: Message, number: WhatsAppNumber) -> dict:
    """What a webhook can change, as counts and fields."""
    message.refresh_from_db()
    number.refresh_from_db()
    return {
        "messages": Message.objects.count(),
        "customers": Customer.objects.count(),
        "consent": ConsentRecord.objects.count(),
        "notices": AccountNotice.objects.count(),
        "templates": MessageTemplate.objects.count(),
        "parked": ParkedStatus.objects.count(),
        "status": message.status,
        "limit": number.messaging_limit,
    }


BODIES = [
    "text",
    "system_user_changed_number",
    "status_delivered",
    "user_preferences",
    "value_errors",
    "account_update",
    "phone_number_quality_update",
    "template_status_update",
]


@pytest.mark.parametrize("name", BODIES)
def test_another_apps_secret_changes_nothing_of_this_number(
    meta_number, sent_message, intruder, name
):
    before = footprint(sent_message, meta_number)

    event = process(name, intruder)

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert "not one of the signing app's" in event.last_error
    assert footprint(sent_message, meta_number) == before


@pytest.mark.parametrize("name", BODIES)
def test_the_numbers_own_app_is_routed(meta_number, sent_message, intruder, name):
    before = footprint(sent_message, meta_number)

    event = process(name, meta_number.app)

    assert (event.state, event.last_error) == (WebhookEvent.State.PROCESSED, "")
    assert footprint(sent_message, meta_number) != before


def test_a_batch_is_routed_to_the_signers_numbers_only(meta_number, intruder, team):
    WhatsAppNumberFactory(
        app=intruder, phone_number_id="106540352242923", waba_id="102290129340399"
    )

    event = process("batch_2x2x3", meta_number.app)

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert set(Message.objects.values_list("conversation__number", flat=True)) == {
        meta_number.pk
    }
    assert Message.objects.count() == 6
    assert event.last_error.count("'106540352242923' not routed") == 6


def test_app_rows_sharing_a_secret_sign_for_each_others_numbers(meta_number):
    # Two numbers of one Meta app added without its app id get a row each.
    twin = MetaAppFactory(app_id="", app_secret=meta_number.app.app_secret)

    event = process("text", twin)

    assert event.state == WebhookEvent.State.PROCESSED
    assert Message.objects.count() == 1


def test_an_event_whose_signing_app_was_deleted_routes_nothing(meta_number):
    gone = MetaAppFactory()
    event = store_event("text", gone)
    gone.delete()

    services.process_webhook_event(event_id=event.pk)

    event.refresh_from_db()
    assert event.app_id is None
    assert event.state == WebhookEvent.State.UNROUTABLE
    assert "the signing app is gone" in event.last_error
    assert not Message.objects.exists()


# --- Through the endpoint -------------------------------------------------------


def text_for(number: WhatsAppNumber, wamid: str) -> bytes:
    document = load_payload_json("text")
    value = document["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = number.phone_number_id
    value["messages"][0]["id"] = wamid
    return json.dumps(document).encode()


@pytest.mark.django_db(transaction=True)
def test_a_post_signed_by_another_app_is_stored_but_not_routed(meta_number, intruder):
    forged = text_for(meta_number, "wamid.FORGED")
    genuine = text_for(meta_number, "wamid.GENUINE")

    statuses, queued = post_in_process(
        [
            (forged, signed_headers(forged, intruder.app_secret)),
            (genuine, signed_headers(genuine, meta_number.app.app_secret)),
        ]
    )
    tasks.process_webhook_events.run(queued)

    assert statuses == [200, 200]
    events = WebhookEvent.objects.order_by("id")
    assert [event.app_id for event in events] == [intruder.pk, meta_number.app_id]
    assert [event.state for event in events] == ["unroutable", "processed"]
    assert list(Message.objects.values_list("wamid", flat=True)) == ["wamid.GENUINE"]


# --- Bad signatures: the apps' secrets are re-read at a bounded rate --------------


@pytest.mark.django_db(transaction=True)
def test_a_flood_of_forged_posts_reads_the_secrets_a_bounded_number_of_times(
    meta_number, monkeypatch
):
    reads = []
    for store in (webhooks.PostgresStore, webhooks.SqliteStore):

        async def counted(self, original=store.apps):
            reads.append(1)
            return await original(self)

        monkeypatch.setattr(store, "apps", counted)
    body = text_for(meta_number, "wamid.FLOOD")
    forged = {"X-Hub-Signature-256": sign(body, "not-any-apps-secret")}
    genuine = signed_headers(body, meta_number.app.app_secret)

    statuses, queued = post_in_process(
        [(body, genuine)] + [(body, forged)] * 300 + [(body, genuine)]
    )

    assert statuses == [200] + [403] * 300 + [200]
    assert len(queued) == WebhookEvent.objects.count() == 2
    # The first read, then at most the bucket's burst of three (the test is
    # far shorter than the secrets' time to live), not one per forged POST.
    assert 1 <= len(reads) <= 4, len(reads)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """The apps as the database holds them, counting reads."""

    def __init__(self):
        self.apps_held: list[AppKeys] = [AppKeys(1, "first", "token")]
        self.reads = 0

    async def apps(self) -> list[AppKeys]:
        self.reads += 1
        return list(self.apps_held)


def test_refreshes_on_a_miss_come_in_a_burst_then_one_per_interval():
    store, clock = Store(), Clock()
    secrets = AppSecrets(store, ttl=60, burst=3, interval=1.0, clock=clock)

    async def misses(count: int) -> None:
        for _ in range(count):
            await secrets.get(fresh=True)

    asyncio.run(secrets.get())
    asyncio.run(misses(1000))
    assert store.reads == 1 + 3

    clock.now += 0.5
    asyncio.run(misses(1000))
    assert store.reads == 4
    clock.now += 0.5
    asyncio.run(misses(1000))
    assert store.reads == 5
    assert secrets.reads == 5


def test_a_new_app_is_seen_at_once_when_no_flood_spent_the_burst():
    store, clock = Store(), Clock()
    secrets = AppSecrets(store, ttl=60, clock=clock)
    asyncio.run(secrets.get())
    store.apps_held.append(AppKeys(2, "second", "token-2"))

    apps = asyncio.run(secrets.get(fresh=True))

    assert [app.app_secret for app in apps] == ["first", "second"]


def test_after_a_flood_a_new_app_is_seen_within_one_interval():
    store, clock = Store(), Clock()
    secrets = AppSecrets(store, ttl=60, burst=3, interval=1.0, clock=clock)
    asyncio.run(secrets.get())
    for _ in range(100):
        asyncio.run(secrets.get(fresh=True))
    store.apps_held.append(AppKeys(2, "second", "token-2"))

    assert len(asyncio.run(secrets.get(fresh=True))) == 1
    clock.now += 1.0
    assert len(asyncio.run(secrets.get(fresh=True))) == 2


def test_the_secrets_are_read_again_when_their_time_to_live_is_over():
    store, clock = Store(), Clock()
    secrets = AppSecrets(store, ttl=5, clock=clock)
    asyncio.run(secrets.get())
    clock.now += 4.9
    asyncio.run(secrets.get())
    assert store.reads == 1
    clock.now += 0.1
    asyncio.run(secrets.get())
    assert store.reads == 2
