"""Stored webhook events applied as sets: claimed batches keep every promise
the one-by-one path made (exactly once, forward only, parked statuses,
poison isolated, nothing lost to a killed worker), with a number of
statements that does not grow with the batch."""

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from conversations import realtime, services, tasks
from conversations.models import (
    Conversation,
    Customer,
    LiveEvent,
    Message,
    MessageCharge,
    ParkedStatus,
    WebhookEvent,
)
from conversations.whatsapp import payloads
from tests.factories import ConversationFactory, MessageFactory
from tests.fixtures import browser
from tests.fixtures.inbound import store_event
from tests.fixtures.payloads import load_payload_json

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="sets need PostgreSQL (SKIP LOCKED)"
)

BASE = datetime(2025, 6, 18, 16, 0, tzinfo=UTC)
BASE_DIR = Path(__file__).resolve().parent.parent
_wamids = itertools.count()


def value_of(document: dict) -> dict:
    return document["entry"][0]["changes"][0]["value"]


def message_body(*, wa_id="16505551234", wamid=None, text="Hello", name="Ann"):
    """The text fixture from another sender, wamid and text."""
    document = load_payload_json("text")
    value = value_of(document)
    value["contacts"][0]["wa_id"] = wa_id
    value["contacts"][0]["profile"]["name"] = name
    message = value["messages"][0]
    message["from"] = wa_id
    message["id"] = wamid or f"wamid.SET{next(_wamids)}"
    message["text"]["body"] = text
    return document


def status_body(status: str, wamid: str, *, at: datetime = BASE, pricing=True):
    document = load_payload_json("status_sent")
    raw = value_of(document)["statuses"][0]
    raw.update(id=wamid, status=status, timestamp=str(int(at.timestamp())))
    if not pricing:
        raw.pop("pricing", None)
    return document


def outbound(number, **fields) -> Message:
    fields.setdefault("status", Message.Status.SENDING)
    fields.setdefault("wamid", f"wamid.OUT{next(_wamids)}")
    return MessageFactory(
        conversation=ConversationFactory(number=number),
        direction=Message.Direction.OUTBOUND,
        **fields,
    )


def drain() -> None:
    services.drain_webhook_events(seconds=60)


def states(events) -> list[str]:
    return [
        WebhookEvent.objects.values_list("state", flat=True).get(pk=event.pk)
        for event in events
    ]


# --- Exactly once --------------------------------------------------------------


def test_a_duplicated_and_a_replayed_message_are_stored_once(meta_number):
    body = message_body(wamid="wamid.ONCE")
    first, duplicate = store_event(body), store_event(body)

    drain()
    replayed = store_event(body)
    drain()

    assert states([first, duplicate, replayed]) == ["processed"] * 3
    assert Message.objects.filter(wamid="wamid.ONCE").count() == 1
    assert (Customer.objects.count(), Conversation.objects.count()) == (1, 1)
    assert Conversation.objects.get().unread_count == 1
    created = LiveEvent.objects.filter(type=realtime.MESSAGE_CREATED)
    assert created.count() == 1


def test_a_replayed_status_changes_nothing(meta_number):
    message = outbound(meta_number)
    body = status_body("delivered", message.wamid)
    store_event(body), store_event(body)
    drain()
    updates = LiveEvent.objects.filter(type=realtime.MESSAGE_UPDATED).count()
    charged = MessageCharge.objects.get(message=message).priced_at

    store_event(body)
    drain()

    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert LiveEvent.objects.filter(type=realtime.MESSAGE_UPDATED).count() == updates
    assert updates == 1
    assert MessageCharge.objects.get(message=message).priced_at == charged


def test_new_customers_get_one_customer_and_one_conversation_each(meta_number):
    for index in range(5):
        for text in ("one", "two"):
            store_event(message_body(wa_id=f"4470000000{index}", text=text))

    drain()

    assert Customer.objects.count() == 5
    assert Conversation.objects.count() == 5
    for conversation in Conversation.objects.select_related("last_message"):
        assert conversation.unread_count == 2
        assert conversation.messages.count() == 2
        assert conversation.last_inbound_at is not None
    customer = Customer.objects.get(wa_id="44700000003")
    assert (customer.phone, customer.profile_name) == ("+44700000003", "Ann")
    created = LiveEvent.objects.filter(type=realtime.CONVERSATION_CREATED)
    assert created.count() == 5


def test_a_known_customer_joins_their_open_conversation(meta_number):
    open_one = ConversationFactory(
        number=meta_number, customer__wa_id="16505551234", unread_count=3
    )
    store_event(message_body(wa_id="16505551234", name="Ann B."))

    drain()

    assert Conversation.objects.get() == open_one
    open_one.refresh_from_db()
    assert open_one.unread_count == 4
    assert open_one.customer.profile_name == "Ann B."


def test_the_user_id_and_username_are_stored_as_one_by_one(meta_number):
    body = message_body(wa_id="16505550000")
    contact = value_of(body)["contacts"][0]
    contact["user_id"] = "US.13491208655302741918"
    contact["profile"]["username"] = "@ann"
    store_event(body)

    drain()

    customer = Customer.objects.get()
    assert (customer.user_id, customer.wa_id) == (
        "US.13491208655302741918",
        "16505550000",
    )
    assert customer.username == "@ann"


def test_a_user_id_held_by_another_customer_goes_one_by_one(meta_number, one_by_one):
    Customer.objects.create(wa_id="", user_id="US.1")
    body = message_body(wa_id="16505550000")
    value_of(body)["contacts"][0]["user_id"] = "US.1"
    store_event(body)

    drain()

    assert [message.wamid for message in one_by_one] == [Message.objects.get().wamid]
    # As find_or_merge_customer settles it: the user id's customer gets the wa_id.
    assert Customer.objects.get().wa_id == "16505550000"


def test_reactions_and_system_messages_go_one_by_one(meta_number, one_by_one):
    for fixture in ("text", "reaction", "system_user_changed_number"):
        store_event(fixture)

    drain()

    assert sorted(message.type for message in one_by_one) == ["reaction", "system"]
    assert WebhookEvent.objects.exclude(state="processed").count() == 0


# --- Statuses: forward only, parked, priced -------------------------------------


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["sent", "delivered", "read"]))
)
@pytest.mark.parametrize("together", [True, False])
def test_statuses_move_forward_whatever_their_order(meta_number, order, together):
    message = outbound(meta_number)
    at = {"sent": BASE, "delivered": BASE + timedelta(minutes=1)}
    at["read"] = BASE + timedelta(minutes=2)
    for status in order:
        store_event(status_body(status, message.wamid, at=at[status]))
        if not together:
            drain()
    drain()

    message.refresh_from_db()
    assert message.status == Message.Status.READ
    assert (message.sent_at, message.delivered_at, message.read_at) == (
        at["sent"],
        at["delivered"],
        at["read"],
    )


def test_failed_is_final_and_keeps_its_error(meta_number):
    message = outbound(meta_number)
    document = load_payload_json("status_failed")
    value_of(document)["statuses"][0]["id"] = message.wamid
    store_event(document)
    store_event(status_body("read", message.wamid, at=BASE + timedelta(hours=1)))

    drain()

    message.refresh_from_db()
    assert message.status == Message.Status.FAILED
    assert message.error["code"]


def test_a_status_for_an_unknown_wamid_is_parked_and_applied_on_send(meta_number):
    store_event(status_body("delivered", "wamid.LATER", at=BASE))
    store_event(status_body("delivered", "wamid.LATER", at=BASE))

    drain()

    assert ParkedStatus.objects.filter(wamid="wamid.LATER").count() == 1
    message = outbound(meta_number, wamid="wamid.LATER")
    assert services.apply_parked_statuses(message) == 1
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert not ParkedStatus.objects.exists()


def test_a_send_whose_wamid_was_lost_is_found_by_its_callback_data(meta_number):
    message = outbound(meta_number, wamid=None)
    document = status_body("sent", "wamid.FOUND")
    value_of(document)["statuses"][0]["biz_opaque_callback_data"] = str(message.pk)
    store_event(document)

    drain()

    message.refresh_from_db()
    assert (message.wamid, message.status) == ("wamid.FOUND", Message.Status.SENT)


# --- Poison, killed workers, the sweeper, customers first -----------------------


def test_a_poisonous_event_never_fails_its_batch(meta_number, monkeypatch):
    """A value that gets past the parser and that a column refuses fails the
    set; one by one, only its event says so, and the rest are applied."""
    monkeypatch.setattr(payloads, "WA_ID_MAX_LENGTH", 1000, raising=False)
    message = outbound(meta_number)
    good = store_event(message_body(wa_id="16505550001", text="fine"))
    poison = store_event(message_body(wa_id="4" * 40, text="poison"))
    status = store_event(status_body("read", message.wamid))

    drain()

    assert states([good, poison, status]) == ["processed", "unroutable", "processed"]
    poison.refresh_from_db()
    assert "DataError" in poison.last_error
    assert list(
        Message.objects.filter(direction="inbound").values_list("text", flat=True)
    ) == ["fine"]
    message.refresh_from_db()
    assert message.status == Message.Status.READ


def test_a_malformed_event_is_marked_and_the_batch_goes_on(meta_number):
    malformed = store_event(b"not json")
    good = store_event(message_body())

    drain()

    assert states([malformed, good]) == ["malformed", "processed"]


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_nothing(meta_number):
    """A worker dies after applying its set and before committing: the
    events are pending again, and the next claim applies them once."""
    message = outbound(meta_number)
    events = [store_event(status_body("delivered", message.wamid))]
    events += [store_event(message_body(wa_id=f"4470000001{i}")) for i in range(3)]
    script = (
        "import os, django; django.setup()\n"
        "from conversations import services\n"
        "from conversations.services import webhook_events\n"
        "original = webhook_events._finish_events\n"
        "def die(finished):\n"
        "    original(finished)\n"
        "    os.kill(os.getpid(), 9)\n"
        "webhook_events._finish_events = die\n"
        "services.process_webhook_batch()\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": browser.test_database_url(),
    }
    killed = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, timeout=60, check=False
    )

    assert killed.returncode == -9
    assert states(events) == ["pending"] * 4
    assert not Message.objects.filter(direction="inbound").exists()
    drain()
    assert states(events) == ["processed"] * 4
    assert Message.objects.filter(direction="inbound").count() == 3
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED


def test_the_sweeper_queues_what_the_doorbell_lost(meta_number, monkeypatch):
    """Stored, never rung: the sweeper's message starts a drain that applies them."""
    events = [store_event(message_body()) for _ in range(3)]
    failed = store_event(message_body())
    WebhookEvent.objects.filter(pk__in=[event.pk for event in events]).update(
        received_at=BASE
    )
    WebhookEvent.objects.filter(pk=failed.pk).update(
        received_at=BASE, state=WebhookEvent.State.FAILED, attempts=1
    )
    queued = []
    monkeypatch.setattr(tasks.process_webhook_events, "delay", queued.append)

    assert tasks.sweep_webhook_events() == 4
    for ids in queued:
        tasks.process_webhook_events.run(ids)

    assert states([*events, failed]) == ["processed"] * 4
    assert Message.objects.count() == 4


def test_customers_messages_are_claimed_before_statuses(meta_number):
    """Stored after a storm's statuses, a customer's message is claimed
    first, in a batch of its own that commits at once."""
    message = outbound(meta_number)
    storm = [store_event(status_body("delivered", message.wamid)) for _ in range(30)]
    customer = store_event(message_body(text="I am here"))

    assert services.process_webhook_batch(limit=5) == [customer.pk]
    assert WebhookEvent.objects.get(pk=customer.pk).state == "processed"
    assert services.process_webhook_batch(limit=5) == [e.pk for e in storm[:5]]


def test_the_endpoint_classifies_bodies_by_a_cheap_look():
    assert payloads.body_holds(json.dumps(message_body()).encode()) == "messages"
    assert (
        payloads.body_holds(json.dumps(status_body("read", "w")).encode()) == "statuses"
    )
    assert (
        payloads.body_holds(json.dumps(load_payload_json("account_update")).encode())
        == "other"
    )


# --- Statements per batch: constant ---------------------------------------------

# What a batch may cost, whatever its size, counting the savepoint pair the
# test's own transaction turns the batch's transaction into. Statuses: the
# claim (customers' messages first, then the rest), the numbers, the
# messages by wamid and by callback data, the parked INSERT, the UPDATE,
# the charges (customers, rate cards, upsert), the callback endpoints, the
# events' UPDATE, the live events' sequences (one per inbox) and INSERT; and
# what the contacts blocks teach: the customers, who holds their new ids, the
# customers' UPDATE.
STATUS_BATCH_STATEMENTS = 19
# Messages: the claim, the numbers, the wamids stored already, the customers'
# upsert, the conversations' INSERT, the messages' INSERT, the
# conversations' UPDATE, which opened conversations' numbers routing works,
# the events' UPDATE, the live events' sequences (one per inbox) and INSERT.
MESSAGE_BATCH_STATEMENTS = 13


@pytest.mark.parametrize("size", [10, 200])
def test_a_batch_of_statuses_costs_the_same_statements(
    meta_number, size, django_assert_max_num_queries
):
    sent = [outbound(meta_number) for _ in range(size // 2)]
    wamids = [message.wamid for message in sent]
    for index, message in enumerate(sent):
        # Each status names its own customer, with a BSUID not known yet.
        document = status_body("delivered", message.wamid)
        value = value_of(document)
        wa_id, user_id = message.conversation.customer.wa_id, f"US.{index}"
        value["contacts"][0].update(wa_id=wa_id, user_id=user_id)
        value["statuses"][0].update(recipient_id=wa_id, recipient_user_id=user_id)
        store_event(document)
    for index in range(size - len(wamids)):
        store_event(status_body("read", f"wamid.UNKNOWN{index}", pricing=False))

    with django_assert_max_num_queries(STATUS_BATCH_STATEMENTS):
        claimed = services.process_webhook_batch(limit=size)

    assert len(claimed) == size
    assert Message.objects.filter(status="delivered").count() == len(wamids)
    assert ParkedStatus.objects.count() == size - len(wamids)
    assert MessageCharge.objects.count() == len(wamids)
    learnt = Customer.objects.filter(conversations__messages__wamid__in=wamids)
    assert sorted(learnt.values_list("user_id", flat=True)) == sorted(
        f"US.{index}" for index in range(len(wamids))
    )
    assert set(learnt.values_list("profile_name", flat=True)) == {"Sheena Nelson"}


@pytest.mark.parametrize("size", [10, 200])
def test_a_batch_of_new_customers_costs_the_same_statements(
    meta_number, size, django_assert_max_num_queries
):
    for index in range(size):
        store_event(message_body(wa_id=f"44{index:09d}"))

    with django_assert_max_num_queries(MESSAGE_BATCH_STATEMENTS):
        claimed = services.process_webhook_batch(limit=size)

    assert len(claimed) == size
    assert Message.objects.count() == size
    assert Conversation.objects.count() == size
    assert LiveEvent.objects.count() == 2 * size


def test_with_sets_off_the_named_events_go_one_by_one(
    meta_number, settings, one_by_one
):
    settings.WEBHOOK_SETS = False
    named, other = store_event(message_body()), store_event(message_body())

    assert services.drain_webhook_events(event_ids=[named.pk]) is False

    assert states([named, other]) == ["processed", "pending"]
    assert len(one_by_one) == 1


def test_a_wamid_from_callback_data_is_kept_when_its_status_changes_nothing(
    meta_number,
):
    message = outbound(
        meta_number,
        wamid=None,
        status=Message.Status.READ,
        sent_at=BASE - timedelta(hours=1),
    )
    document = status_body("sent", "wamid.KEPT", pricing=False)
    value_of(document)["statuses"][0]["biz_opaque_callback_data"] = str(message.pk)
    store_event(document)

    drain()

    message.refresh_from_db()
    assert message.wamid == "wamid.KEPT"
