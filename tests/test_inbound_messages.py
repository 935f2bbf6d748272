"""Customers' messages from stored webhook events to conversations and messages."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations import realtime, services
from conversations.delivery import doorbells
from conversations.models import (
    Conversation,
    Customer,
    LiveEvent,
    Message,
    Reaction,
    WebhookEvent,
)
from conversations.services import inbound
from tests.factories import ConversationFactory, CustomerFactory, MessageFactory
from tests.fixtures.inbound import CUSTOMER_WA_ID, process, store_event
from tests.fixtures.payloads import dump_payload, load_payload, load_payload_json

# The business message the fixtures' replies, reactions and buttons point at.
OUR_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
# The fixtures' message timestamp, 1749416383.
SENT_AT = datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)


def only_message() -> Message:
    (message,) = Message.objects.all()
    return message


def our_message(number, **fields) -> Message:
    """An outbound message of the business that fixtures quote or react to."""
    customer = Customer.objects.filter(wa_id=CUSTOMER_WA_ID).first() or (
        CustomerFactory(wa_id=CUSTOMER_WA_ID)
    )
    conversation = ConversationFactory(customer=customer, number=number)
    return MessageFactory(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        wamid=OUR_WAMID,
        status=Message.Status.DELIVERED,
        **fields,
    )


def test_text_creates_customer_conversation_and_message(meta_number):
    event = process("text")

    assert event.state == WebhookEvent.State.PROCESSED
    assert event.processed_at is not None
    message = only_message()
    assert message.direction == Message.Direction.INBOUND
    assert message.type == "text"
    assert message.text == "Hello, my parcel has not arrived yet."
    assert message.status == Message.Status.RECEIVED
    assert message.timestamp == SENT_AT
    conversation = message.conversation
    assert conversation.number == meta_number
    assert conversation.status == Conversation.Status.OPEN
    assert conversation.last_message == message
    assert conversation.last_message_at == message.timestamp
    assert conversation.last_inbound_at == message.timestamp
    assert conversation.unread_count == 1
    customer = conversation.customer
    assert customer.wa_id == CUSTOMER_WA_ID
    assert customer.phone == "+16505551234"
    assert customer.profile_name == "Sheena Nelson"
    assert list(
        LiveEvent.objects.order_by("id").values_list("type", "data__message")
    ) == [
        (realtime.CONVERSATION_CREATED, None),
        (realtime.MESSAGE_CREATED, message.pk),
    ]


@pytest.mark.parametrize(
    ("fixture", "kind", "text", "payload_key"),
    [
        ("image", "image", "The box arrived like this", "caption"),
        ("video", "video", "Unboxing", "id"),
        ("audio_voice", "audio", "Voice message", "voice"),
        ("document", "document", "Here is my invoice", "filename"),
        ("sticker", "sticker", "Sticker", "animated"),
        (
            "location",
            "location",
            "Meta Headquarters, 1 Hacker Way, Menlo Park, CA 94025",
            "latitude",
        ),
        ("location_without_name", "location", "Location", "longitude"),
        ("contacts", "contacts", "Barbara J. Johnson, Pablo Morales", "contacts"),
        ("interactive_button_reply", "interactive", "Track my order", "button_reply"),
        ("interactive_list_reply", "interactive", "Express", "list_reply"),
        ("interactive_nfm_reply", "interactive", "Sent", "nfm_reply"),
        ("button", "button", "Stop promotions", "payload"),
        ("order", "order", "Order: 3 items", "product_items"),
    ],
)
def test_every_type_becomes_a_readable_message(
    meta_number, fixture, kind, text, payload_key
):
    event = process(fixture)

    assert event.state == WebhookEvent.State.PROCESSED, event.last_error
    message = only_message()
    assert (message.type, message.text) == (kind, text)
    assert payload_key in message.payload


@pytest.mark.parametrize(
    ("fixture", "filename"),
    [
        ("image", ""),
        ("video", ""),
        ("audio_voice", ""),
        ("document", "invoice-4711.pdf"),
    ],
)
def test_media_messages_wait_for_their_download(
    meta_number, fixture, filename, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(
        doorbells, "ring", lambda task, *args, **options: queued.append((task, *args))
    )
    with django_capture_on_commit_callbacks(execute=True):
        process(fixture)

    message = only_message()
    assert message.media_state == Message.MediaState.PENDING
    assert message.media_id
    assert message.media_mime_type
    if filename:
        assert message.media_filename == filename
    assert queued == [(doorbells.DOWNLOAD_MEDIA, message.pk)]


def test_voice_flag_is_kept(meta_number):
    process("audio_voice")

    assert only_message().payload["voice"] is True


def test_batch_of_two_entries_two_changes_three_messages_makes_twelve(
    meta_number, team
):
    from tests.factories import WhatsAppNumberFactory

    # A second number of the same Meta app: one app signs for both.
    second = WhatsAppNumberFactory(
        app=meta_number.app,
        phone_number_id="106540352242923",
        waba_id="102290129340399",
    )
    second.teams.add(team)

    event = process("batch_2x2x3")

    assert event.state == WebhookEvent.State.PROCESSED
    assert Message.objects.count() == 12
    assert Conversation.objects.count() == 2
    assert Customer.objects.count() == 1
    texts = list(Message.objects.order_by("id").values_list("text", flat=True))
    assert texts == [f"Message {n} of 12" for n in range(1, 13)]
    assert Conversation.objects.get(number=second).unread_count == 6


def test_processing_an_event_twice_stores_one_message_and_one_event(meta_number):
    event = process("text")
    services.process_webhook_event(event_id=event.pk, force=True)
    process("text")  # the same body delivered again as a new event

    assert Message.objects.count() == 1
    assert live_message_events() == 1
    assert Conversation.objects.get().unread_count == 1


def live_message_events() -> int:
    return LiveEvent.objects.filter(type=realtime.MESSAGE_CREATED).count()


@pytest.mark.django_db(transaction=True)
def test_the_same_wamid_in_two_events_at_once_is_stored_once(team):
    from tests.factories import WhatsAppNumberFactory

    number = WhatsAppNumberFactory(phone_number_id="106540352242922")
    number.teams.add(team)
    events = [store_event("text"), store_event("text")]
    barrier = threading.Barrier(len(events), timeout=10)
    errors = []

    def work(event_id):
        try:
            barrier.wait()
            services.process_webhook_event(event_id=event_id)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(e.pk,)) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert Message.objects.count() == 1
    assert Customer.objects.count() == 1
    assert Conversation.objects.count() == 1
    assert live_message_events() == 1
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {
        WebhookEvent.State.PROCESSED
    }


@pytest.mark.django_db(transaction=True)
def test_two_workers_processing_one_event_store_it_once(team):
    from tests.factories import WhatsAppNumberFactory

    number = WhatsAppNumberFactory(phone_number_id="106540352242922")
    number.teams.add(team)
    event = store_event("batch_with_bad_message")
    barrier = threading.Barrier(2, timeout=10)
    errors = []

    def work():
        try:
            barrier.wait()
            services.process_webhook_event(event_id=event.pk)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert Message.objects.count() == 2
    assert live_message_events() == 2


def test_non_ascii_text_and_names_are_kept(meta_number):
    process("non_ascii")

    message = only_message()
    assert message.text == "Grüße 你好 مرحبا"
    assert message.conversation.customer.profile_name == "مريم Müller"


def test_malformed_json_is_marked_and_never_retried(meta_number):
    event = process(b"{not json")

    assert event.state == WebhookEvent.State.MALFORMED
    assert "not valid JSON" in event.last_error
    assert event.attempts == 0
    services.process_webhook_event(event_id=event.pk)
    event.refresh_from_db()
    assert event.state == WebhookEvent.State.MALFORMED


def test_not_metas_envelope_is_malformed(meta_number):
    event = process(b'{"object": "page", "entry": []}')

    assert event.state == WebhookEvent.State.MALFORMED


def test_unknown_number_is_unroutable_and_kept(db):
    event = process("text")

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert "106540352242922" in event.last_error
    assert Message.objects.count() == 0
    assert WebhookEvent.objects.filter(pk=event.pk).exists()


def test_unroutable_event_is_processed_once_the_number_exists(db, team):
    from tests.factories import MetaAppFactory, WhatsAppNumberFactory

    app = MetaAppFactory()
    event = process("text", app)
    WhatsAppNumberFactory(app=app, phone_number_id="106540352242922")
    services.process_webhook_event(event_id=event.pk)
    event.refresh_from_db()

    assert event.state == WebhookEvent.State.PROCESSED
    assert Message.objects.count() == 1


def test_batch_mixing_known_and_unknown_numbers_processes_what_it_can(meta_number):
    event = process("batch_2x2x3")

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert Message.objects.count() == 6
    assert "106540352242923" in event.last_error


def test_unhandled_change_field_is_unroutable(meta_number):
    event = process("unhandled_field")

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert "business_capability_update" in event.last_error


def test_unreadable_items_are_recorded_and_the_rest_processed(meta_number):
    event = process("batch_with_bad_message")

    assert event.state == WebhookEvent.State.UNROUTABLE
    assert "message has no id" in event.last_error
    assert sorted(Message.objects.values_list("text", flat=True)) == ["First", "Last"]


def test_a_failure_counts_an_attempt_and_is_raised(meta_number, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(inbound, "receive_message", broken)
    event = store_event("text")

    with pytest.raises(RuntimeError, match="boom"):
        services.process_webhook_event(event_id=event.pk)

    event.refresh_from_db()
    assert event.state == WebhookEvent.State.FAILED
    assert event.attempts == 1
    assert "boom" in event.last_error
    assert event.next_attempt_at > timezone.now()


def test_unsupported_type_keeps_a_placeholder_and_the_raw_json(meta_number):
    process("unsupported")

    message = only_message()
    assert message.type == "unsupported"
    assert message.text == "Unsupported message (edit)"
    assert message.payload["unsupported"] == {"type": "edit"}
    assert message.error["code"] == 131051


def test_unknown_type_is_kept_under_its_own_name(meta_number):
    document = load_payload_json("text")
    raw = document["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["type"] = "request_welcome"
    raw["request_welcome"] = {"hello": "there"}
    del raw["text"]

    event = process(document)

    assert event.state == WebhookEvent.State.PROCESSED
    message = only_message()
    assert message.type == "request_welcome"
    assert message.text == "Unsupported message (request_welcome)"
    assert message.payload["request_welcome"] == {"hello": "there"}


def test_reply_links_the_quoted_message(meta_number):
    ours = our_message(meta_number)
    process("text_reply_context")

    reply = Message.objects.get(direction=Message.Direction.INBOUND)
    assert reply.reply_to == ours
    assert reply.context_wamid == OUR_WAMID


def test_reply_to_an_unknown_message_keeps_its_wamid(meta_number):
    process("text_reply_context")

    reply = only_message()
    assert reply.reply_to is None
    assert reply.context_wamid == OUR_WAMID


@pytest.mark.parametrize(
    ("fixture", "forwarded", "frequently"),
    [("text_forwarded", True, False), ("text_frequently_forwarded", False, True)],
)
def test_forwarded_flags(meta_number, fixture, forwarded, frequently):
    process(fixture)

    message = only_message()
    assert (message.forwarded, message.frequently_forwarded) == (forwarded, frequently)


def test_referral_is_stored_on_the_conversation(meta_number):
    process("referral_ctwa")

    message = only_message()
    conversation = message.conversation
    raw = load_payload_json("referral_ctwa")["entry"][0]["changes"][0]["value"][
        "messages"
    ][0]["referral"]
    assert conversation.referral == raw
    assert conversation.referral_source_id == raw["source_id"]
    assert conversation.referral_ctwa_clid == raw["ctwa_clid"]
    assert conversation.referral_ctwa_clid
    assert message.referral == raw


def test_reaction_attaches_to_the_target_and_removal_removes_it(meta_number):
    ours = our_message(meta_number)
    process("reaction")

    reaction = Reaction.objects.get(message=ours)
    assert (reaction.direction, reaction.emoji) == (Message.Direction.INBOUND, "👍")
    assert Message.objects.count() == 1
    assert LiveEvent.objects.filter(
        type=realtime.MESSAGE_UPDATED, data__message=ours.pk
    ).exists()

    document = load_payload_json("reaction_removed")
    message = document["entry"][0]["changes"][0]["value"]["messages"][0]
    message["timestamp"] = str(int(message["timestamp"]) + 10)
    process(document)

    reaction.refresh_from_db()
    assert reaction.emoji == ""


def test_an_older_reaction_never_overwrites_a_newer_one(meta_number):
    ours = our_message(meta_number)
    newer = load_payload_json("reaction")
    raw = newer["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["reaction"]["emoji"] = "❤️"
    raw["id"] = "wamid.NEWER"
    raw["timestamp"] = str(int(raw["timestamp"]) + 60)
    process(newer)
    process("reaction")  # older, arriving late

    assert Reaction.objects.get(message=ours).emoji == "❤️"


def test_a_reaction_to_an_unknown_message_is_kept_as_a_message(meta_number):
    process("reaction")

    message = only_message()
    assert message.type == "reaction"
    assert message.payload["message_id"] == OUR_WAMID


def test_system_message_rekeys_the_customer_and_keeps_history(meta_number):
    process("text")
    customer = Customer.objects.get()

    process("system_user_changed_number")

    customer.refresh_from_db()
    assert customer.wa_id == "16505553333"
    assert customer.phone == "+16505553333"
    assert Customer.objects.count() == 1
    assert customer.conversations.get().messages.count() == 2
    note = Message.objects.get(type="system")
    assert "changed from 16505551234" in note.text


def test_user_changed_user_id_rekeys_the_bsuid(meta_number):
    process("text")
    document = load_payload_json("system_user_changed_number")
    raw = document["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["system"] = {
        "type": "user_changed_user_id",
        "body": "User changed id",
        "user_id": "US.999",
    }
    process(document)

    assert Customer.objects.get().user_id == "US.999"


def test_bsuid_only_message_joins_the_customer_with_that_bsuid(meta_number):
    customer = CustomerFactory(wa_id="", phone="", user_id="US.13491208655302741918")
    process("bsuid_only")

    assert only_message().conversation.customer == customer


def test_missing_bsuid_is_filled_in(meta_number):
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    document = load_payload_json("text")
    document["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = "US.7"

    process(document)

    customer.refresh_from_db()
    assert customer.user_id == "US.7"


def test_profile_name_never_overwrites_the_agents_name(meta_number):
    customer = CustomerFactory(
        wa_id=CUSTOMER_WA_ID, name="Mrs Nelson (VIP)", profile_name="Old"
    )
    process("text")

    customer.refresh_from_db()
    assert customer.name == "Mrs Nelson (VIP)"
    assert customer.profile_name == "Sheena Nelson"


@pytest.mark.parametrize(
    "profile_name",
    [
        "",
        f"+{CUSTOMER_WA_ID}",
        CUSTOMER_WA_ID,
        f"+{CUSTOMER_WA_ID[:2]} {CUSTOMER_WA_ID[2:]}",
    ],
)
def test_a_profile_name_that_is_only_the_number_changes_nothing(
    meta_number, profile_name
):
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID, profile_name="Anna Schmidt")
    document = load_payload_json("text")
    contact = document["entry"][0]["changes"][0]["value"]["contacts"][0]
    contact["profile"]["name"] = profile_name

    process(document)

    customer.refresh_from_db()
    assert customer.profile_name == "Anna Schmidt"
    assert customer.display_name == "Anna Schmidt"


def test_message_joins_the_open_conversation(meta_number):
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    conversation = ConversationFactory(customer=customer, number=meta_number)
    process("text")

    assert only_message().conversation == conversation


def test_recently_resolved_conversation_is_reopened(meta_number, settings):
    settings.CONVERSATION_REOPEN_HOURS = 24
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    sent_at = SENT_AT
    resolved = ConversationFactory(
        customer=customer,
        number=meta_number,
        status=Conversation.Status.RESOLVED,
        resolved_at=sent_at - timedelta(hours=23),
    )
    process("text")

    resolved.refresh_from_db()
    assert only_message().conversation == resolved
    assert resolved.status == Conversation.Status.OPEN
    assert resolved.resolved_at is None


def test_long_resolved_conversation_stays_closed(meta_number, settings):
    settings.CONVERSATION_REOPEN_HOURS = 24
    customer = CustomerFactory(wa_id=CUSTOMER_WA_ID)
    sent_at = SENT_AT
    resolved = ConversationFactory(
        customer=customer,
        number=meta_number,
        status=Conversation.Status.RESOLVED,
        resolved_at=sent_at - timedelta(hours=25),
    )
    process("text")

    conversation = only_message().conversation
    assert conversation != resolved
    assert conversation.status == Conversation.Status.OPEN


def test_last_message_only_moves_forward_in_metas_time(meta_number):
    newer = load_payload_json("text")
    raw = newer["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["id"] = "wamid.NEWER"
    raw["timestamp"] = str(int(raw["timestamp"]) + 60)
    raw["text"]["body"] = "Second"
    process(newer)
    process("text")  # older, arriving late

    conversation = Conversation.objects.get()
    assert conversation.last_message.text == "Second"
    assert conversation.last_inbound_at == conversation.last_message.timestamp
    assert conversation.unread_count == 2
    thread = list(conversation.messages.order_by("timestamp", "id"))
    assert [m.text for m in thread] == [
        "Hello, my parcel has not arrived yet.",
        "Second",
    ]


def test_a_message_without_timestamp_uses_the_time_received(meta_number):
    document = load_payload_json("text")
    del document["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"]
    event = store_event(dump_payload(document))
    services.process_webhook_event(event_id=event.pk)

    assert only_message().timestamp == event.received_at


def test_stored_body_is_read_as_bytes(meta_number):
    """BinaryField reads back as memoryview on PostgreSQL; both work."""
    event = WebhookEvent.objects.create(
        body=memoryview(load_payload("text")),
        app=meta_number.app,
        received_at=timezone.now(),
    )
    services.process_webhook_event(event_id=event.pk)

    assert Message.objects.count() == 1
