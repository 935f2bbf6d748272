"""Parsing Meta's webhook bodies into dataclasses (no database)."""

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conversations.whatsapp.payloads import (
    AccountError,
    AccountUpdate,
    InboundMessage,
    MalformedPayload,
    PhoneNumberQualityUpdate,
    StatusUpdate,
    TemplateCategoryUpdate,
    TemplateQualityUpdate,
    TemplateStatusUpdate,
    UnhandledChange,
    UnparsableItem,
    UserPreferenceUpdate,
    parse,
    parse_timestamp,
    signature_header,
    summarize_message,
    verify_signature,
)
from tests.fixtures.payloads import (
    dump_payload,
    load_payload,
    load_payload_json,
    payload_names,
)

WABA = "102290129340398"
PNID = "106540352242922"
DISPLAY = "15550783881"
WA = "16505551234"
BUSINESS_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
OUT_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJEQUI4QUNCMjU0RTdBN0Y0QzAA"


def only_message(name: str) -> InboundMessage:
    batch = parse(load_payload(name))
    assert len(batch.items) == 1, batch.items
    (message,) = batch.messages
    return message


def only_status(name: str) -> StatusUpdate:
    batch = parse(load_payload(name))
    assert len(batch.items) == 1, batch.items
    (status,) = batch.statuses
    return status


# --- Every fixture ---------------------------------------------------------


@pytest.mark.parametrize("name", payload_names())
def test_every_fixture_parses_without_unparsable_items(name):
    """Each documented shape parses cleanly (the bad-message batch aside)."""
    batch = parse(load_payload(name))
    assert batch.items
    if name != "batch_with_bad_message":
        assert batch.unparsable == ()


@pytest.mark.parametrize("name", payload_names())
def test_items_are_frozen(name):
    for item in parse(load_payload(name)).items:
        field = dataclasses.fields(item)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(item, field, "changed")


# --- Inbound messages ------------------------------------------------------


def test_text_message():
    message = only_message("text")
    assert message.waba_id == WABA
    assert message.phone_number_id == PNID
    assert message.display_phone_number == DISPLAY
    assert message.wamid.startswith("wamid.")
    assert message.type == "text"
    assert message.text == "Hello, my parcel has not arrived yet."
    assert message.payload == {"body": "Hello, my parcel has not arrived yet."}
    assert message.timestamp == datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)
    assert message.timestamp.tzinfo is UTC
    assert message.from_wa_id == WA
    assert message.wa_id == WA
    assert message.profile_name == "Sheena Nelson"
    assert message.contact.wa_id == WA
    assert message.media is None
    assert message.context is None
    assert message.referral is None
    assert message.reaction is None
    assert message.system is None
    assert message.errors == ()
    assert message.is_supported is True
    assert message.raw["id"] == message.wamid


def test_image_message():
    message = only_message("image")
    assert message.type == "image"
    assert message.text == "The box arrived like this"
    assert message.media.id == "1003383421387256"
    assert message.media.mime_type == "image/jpeg"
    assert message.media.sha256 == "SfInY0gHbVNOXsOY8PrDE35q+lkDlSxqzN2Vp2/pBdk="
    assert message.media.caption == "The box arrived like this"
    assert message.media.url.startswith("https://lookaside.fbsbx.com/")
    assert message.media.voice is False


def test_voice_note():
    message = only_message("audio_voice")
    assert message.type == "audio"
    assert message.media.voice is True
    assert message.media.mime_type == "audio/ogg; codecs=opus"
    assert message.media.url == ""
    assert message.text == "Voice message"


def test_video_message():
    message = only_message("video")
    assert message.media.id == "1166846181421424"
    assert message.media.mime_type == "video/mp4"
    assert message.text == "Unboxing"


def test_document_message():
    message = only_message("document")
    assert message.media.filename == "invoice-4711.pdf"
    assert message.media.mime_type == "application/pdf"
    assert message.media.caption == "Here is my invoice"
    assert message.text == "Here is my invoice"


def test_document_without_caption_reads_as_its_filename():
    document = load_payload_json("document")
    value = document["entry"][0]["changes"][0]["value"]
    del value["messages"][0]["document"]["caption"]
    (message,) = parse(dump_payload(document)).messages
    assert message.text == "invoice-4711.pdf"


def test_sticker_message():
    message = only_message("sticker")
    assert message.media.animated is True
    assert message.media.mime_type == "image/webp"
    assert message.text == "Sticker"


def test_location_message():
    message = only_message("location")
    assert message.text == "Meta Headquarters, 1 Hacker Way, Menlo Park, CA 94025"
    assert message.payload["latitude"] == 37.483307
    assert message.payload["longitude"] == -122.148981
    assert message.media is None


def test_location_without_name_or_address():
    message = only_message("location_without_name")
    assert message.text == "Location"
    assert message.payload == {"latitude": 52.520008, "longitude": 13.404954}


def test_contacts_message():
    message = only_message("contacts")
    assert message.type == "contacts"
    assert message.text == "Barbara J. Johnson, Pablo Morales"
    cards = message.payload["contacts"]
    assert cards[0]["phones"][0]["wa_id"] == "19405551234"
    assert len(cards) == 2
    # The sender is still matched from value.contacts[], not the vCards.
    assert message.profile_name == "Sheena Nelson"


def test_interactive_button_reply():
    message = only_message("interactive_button_reply")
    assert message.type == "interactive"
    assert message.text == "Track my order"
    assert message.payload["button_reply"]["id"] == "track-order"
    assert message.context.message_id == BUSINESS_WAMID
    assert message.reply_to_wamid == BUSINESS_WAMID


def test_interactive_list_reply():
    message = only_message("interactive_list_reply")
    assert message.text == "Express"
    assert message.payload["list_reply"]["description"] == "Next business day"


def test_interactive_nfm_reply():
    message = only_message("interactive_nfm_reply")
    assert message.text == "Sent"
    answers = json.loads(message.payload["nfm_reply"]["response_json"])
    assert answers["flow_token"] == "ticket-4711"


def test_nfm_reply_without_body_reads_as_form_submitted():
    text = summarize_message(
        {"type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": {}}}
    )
    assert text == "Form submitted"


def test_interactive_without_its_object():
    """A fixture in the wild has no interactive object."""
    assert summarize_message({"type": "interactive"}) == "Interactive reply"


def test_template_quick_reply_button():
    message = only_message("button")
    assert message.type == "button"
    assert message.text == "Stop promotions"
    assert message.payload["payload"] == "STOP_PROMOTIONS"
    assert message.context.from_ == DISPLAY
    assert message.context.message_id == BUSINESS_WAMID


def test_reaction():
    message = only_message("reaction")
    assert message.reaction.message_id == BUSINESS_WAMID
    assert message.reaction.emoji == "\N{THUMBS UP SIGN}"
    assert message.reaction.removed is False
    assert message.text == "\N{THUMBS UP SIGN}"


def test_reaction_removed_without_emoji():
    message = only_message("reaction_removed")
    assert message.reaction.message_id == BUSINESS_WAMID
    assert message.reaction.emoji == ""
    assert message.reaction.removed is True
    assert message.text == "Reaction removed"


def test_reaction_removed_with_empty_emoji():
    document = load_payload_json("reaction")
    value = document["entry"][0]["changes"][0]["value"]
    value["messages"][0]["reaction"]["emoji"] = ""
    (message,) = parse(dump_payload(document)).messages
    assert message.reaction.removed is True


def test_order():
    message = only_message("order")
    assert message.text == "Order: 3 items"
    assert message.payload["catalog_id"] == "194836987003835"
    assert len(message.payload["product_items"]) == 2


def test_system_user_changed_number_has_no_contacts():
    message = only_message("system_user_changed_number")
    assert message.type == "system"
    assert message.contact is None
    assert message.from_wa_id == WA
    assert message.system.type == "user_changed_number"
    assert message.system.new_wa_id == "16505553333"
    assert message.system.new_user_id == ""
    assert message.text.startswith("User Sheena Nelson changed from")


def test_system_user_changed_user_id():
    text = summarize_message({"type": "system", "system": {}})
    assert text == "Account change"
    document = load_payload_json("system_user_changed_number")
    raw = document["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["system"] = {"type": "user_changed_user_id", "user_id": "US.999", "body": "x"}
    (message,) = parse(dump_payload(document)).messages
    assert message.system.type == "user_changed_user_id"
    assert message.system.new_user_id == "US.999"


def test_unsupported_message_keeps_its_errors():
    message = only_message("unsupported")
    assert message.type == "unsupported"
    assert message.is_supported is False
    assert message.text == "Unsupported message (edit)"
    (error,) = message.errors
    assert error.code == 131051
    assert error.title == "Message type unknown"
    assert error.message == "Message type unknown"
    assert error.details == "Message type is currently not supported."
    assert error.as_dict()["code"] == 131051
    assert message.error is error


def test_unknown_type_reads_as_unsupported_and_keeps_raw_json():
    document = load_payload_json("text")
    raw = document["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["type"] = "request_welcome"
    del raw["text"]
    (message,) = parse(dump_payload(document)).messages
    assert message.type == "request_welcome"
    assert message.text == "Unsupported message (request_welcome)"
    assert message.is_supported is False
    assert message.payload == {}
    assert message.raw["type"] == "request_welcome"


def test_reply_context():
    message = only_message("text_reply_context")
    assert message.context.message_id == BUSINESS_WAMID
    assert message.context.from_ == DISPLAY
    assert message.context.forwarded is False
    assert message.context.referred_product is None


def test_forwarded():
    message = only_message("text_forwarded")
    assert message.context.forwarded is True
    assert message.context.frequently_forwarded is False
    assert message.context.message_id == ""


def test_frequently_forwarded():
    message = only_message("text_frequently_forwarded")
    assert message.context.frequently_forwarded is True


def test_referral_from_click_to_whatsapp_ad():
    message = only_message("referral_ctwa")
    referral = message.referral
    assert referral.source_id == "120226305854810726"
    assert referral.source_type == "ad"
    assert referral.source_url == "https://fb.me/3cr4Wqqkv"
    assert referral.headline == "Chat with us"
    assert referral.body == "Summer sale: 30% off all plants"
    assert referral.media_type == "image"
    assert referral.image_url.endswith("ad-image.jpg")
    assert referral.video_url == ""
    assert referral.thumbnail_url == ""
    assert referral.ctwa_clid.startswith("ARAkLkA8rmlF")
    assert referral.welcome_message == "Hi! How can we help you today?"
    assert referral.raw["welcome_message"] == {"text": "Hi! How can we help you today?"}


def test_bsuid_only_message_with_empty_wa_id():
    message = only_message("bsuid_only")
    assert message.from_wa_id == ""
    assert message.wa_id == ""
    assert message.from_user_id == "US.13491208655302741918"
    assert message.user_id == "US.13491208655302741918"
    assert message.contact.user_id == "US.13491208655302741918"
    assert message.contact.username == "@sheena"
    assert message.contact.country_code == "US"
    assert message.profile_name == "Sheena Nelson"


def test_contact_matched_by_bsuid_among_several():
    document = load_payload_json("bsuid_only")
    value = document["entry"][0]["changes"][0]["value"]
    value["contacts"].insert(
        0, {"profile": {"name": "Someone else"}, "wa_id": "", "user_id": "US.1"}
    )
    (message,) = parse(dump_payload(document)).messages
    assert message.profile_name == "Sheena Nelson"


def test_non_ascii_survives():
    body = load_payload("non_ascii")
    # Meta escapes non-ASCII text; the fixture keeps it that way.
    assert body.isascii()
    assert b"\\u00fc" in body
    message = only_message("non_ascii")
    assert message.text == "Grüße 你好 مرحبا"
    assert message.profile_name == "مريم Müller"


def test_utf8_body_also_parses():
    document = load_payload_json("non_ascii")
    body = json.dumps(document, ensure_ascii=False).encode()
    (message,) = parse(body).messages
    assert message.text == "Grüße 你好 مرحبا"


# --- Statuses ----------------------------------------------------------------


def test_status_sent_with_pricing_and_conversation():
    status = only_status("status_sent")
    assert status.wamid == OUT_WAMID
    assert status.status == "sent"
    assert status.is_known_status is True
    assert status.timestamp == datetime.fromtimestamp(1750263773, tz=UTC)
    assert status.recipient_id == WA
    assert status.recipient_user_id == "US.13491208655302741918"
    assert status.biz_opaque_callback_data == "message:42"
    assert status.pricing.billable is True
    assert status.pricing.pricing_model == "PMP"
    assert status.pricing.category == "utility"
    assert status.pricing.type == "regular"
    assert status.pricing.raw["type"] == "regular"
    assert status.conversation.id == "6ceb9d929c1ec8dd8b2e8e5a31d1d4c4"
    assert status.conversation.origin_type == "utility"
    assert status.conversation.expiration_timestamp == datetime.fromtimestamp(
        1750350180, tz=UTC
    )
    assert status.contact.user_id == "US.13491208655302741918"
    assert status.errors == ()
    assert status.phone_number_id == PNID
    assert status.waba_id == WABA


def test_status_delivered_without_conversation():
    """From v24.0 the conversation object is left out."""
    status = only_status("status_delivered")
    assert status.status == "delivered"
    assert status.conversation is None
    assert status.pricing.category == "utility"
    assert status.contact is None


def test_status_read_without_pricing():
    status = only_status("status_read")
    assert status.status == "read"
    assert status.pricing is None
    assert status.biz_opaque_callback_data == ""


def test_status_failed_with_errors():
    status = only_status("status_failed")
    assert status.status == "failed"
    (error,) = status.errors
    assert error.code == 131047
    assert error.title == "Re-engagement message"
    assert error.message == "Re-engagement message"
    assert error.details.startswith("Message failed to send because more than 24")
    assert error.href.startswith("https://developers.facebook.com/")
    assert status.error is error


def test_unknown_status_value_is_kept():
    status = only_status("status_unknown_value")
    assert status.status == "deleted"
    assert status.is_known_status is False


# --- Batches and robustness ------------------------------------------------------


def test_batch_of_two_entries_two_changes_three_messages():
    batch = parse(load_payload("batch_2x2x3"))
    assert len(batch.messages) == 12
    assert len({message.wamid for message in batch.messages}) == 12
    assert [message.text for message in batch.messages] == [
        f"Message {n} of 12" for n in range(1, 13)
    ]
    assert batch.phone_number_ids == {"106540352242922", "106540352242923"}
    assert {message.waba_id for message in batch.messages} == {
        "102290129340398",
        "102290129340399",
    }


def test_one_bad_message_does_not_sink_the_batch():
    batch = parse(load_payload("batch_with_bad_message"))
    assert [message.text for message in batch.messages] == ["First", "Last"]
    assert len(batch.items) == 4
    no_id, not_object = batch.unparsable
    assert no_id.kind == "message"
    assert "no id" in no_id.error
    assert no_id.raw["text"] == {"body": "No id"}
    assert no_id.phone_number_id == PNID
    assert no_id.waba_id == WABA
    assert no_id.field == "messages"
    assert not_object.raw == "not a message"
    assert "not an object" in not_object.error
    # Meta's order is kept.
    assert isinstance(batch.items[1], UnparsableItem)


def test_message_without_any_sender_is_unparsable():
    document = load_payload_json("text")
    value = document["entry"][0]["changes"][0]["value"]
    del value["contacts"]
    value["messages"][0]["from"] = ""
    (item,) = parse(dump_payload(document)).items
    assert isinstance(item, UnparsableItem)
    assert "no sender" in item.error


def test_missing_fields_are_tolerated():
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messages": [
                                    {"id": "wamid.X", "from": "1", "type": "image"}
                                ],
                                "statuses": [{"id": "wamid.Y", "status": "sent"}],
                            },
                        }
                    ]
                }
            ],
        }
    ).encode()
    batch = parse(body)
    (message,) = batch.messages
    assert message.timestamp is None
    assert message.phone_number_id == ""
    assert message.media.id == ""
    assert message.text == "Image"
    (status,) = batch.statuses
    assert status.timestamp is None
    assert status.recipient_id == ""


def test_wrongly_typed_parts_become_unparsable_items():
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                "not an entry",
                {"id": "1", "changes": "not a list"},
                {
                    "id": "2",
                    "changes": [
                        7,
                        {"field": "messages", "value": "not an object"},
                        {"field": "messages", "value": {"messages": {"id": "x"}}},
                        {"field": "messages", "value": {"statuses": [{"id": "w"}]}},
                    ],
                },
            ],
        }
    ).encode()
    batch = parse(body)
    assert [item.kind for item in batch.unparsable] == [
        "entry",
        "entry",
        "change",
        "change",
        "message",
        "status",
    ]
    assert batch.items == batch.unparsable


def test_messages_change_with_nothing_known_is_kept_as_unhandled():
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA,
                    "changes": [
                        {"field": "messages", "value": {"messaging_product": "x"}}
                    ],
                }
            ],
        }
    ).encode()
    (item,) = parse(body).items
    assert isinstance(item, UnhandledChange)
    assert item.value == {"messaging_product": "x"}


def test_single_contact_with_another_bsuid_is_not_the_sender():
    document = load_payload_json("bsuid_only")
    value = document["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["user_id"] = "US.someone-else"
    (message,) = parse(dump_payload(document)).messages
    assert message.contact is None
    assert message.user_id == "US.13491208655302741918"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
meta_keys = st.sampled_from(
    [
        "id",
        "from",
        "type",
        "timestamp",
        "text",
        "image",
        "status",
        "statuses",
        "messages",
        "errors",
        "contacts",
        "context",
        "referral",
        "reaction",
        "system",
        "value",
        "field",
        "changes",
        "metadata",
        "pricing",
        "wa_id",
    ]
)
meta_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(meta_keys, children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(entry=st.lists(meta_like | json_values, max_size=3))
def test_any_entry_list_parses_without_raising(entry):
    """Whatever sits inside the envelope, parse returns a batch."""
    body = json.dumps({"object": "whatsapp_business_account", "entry": entry})
    batch = parse(body.encode())
    for item in batch.items:
        assert dataclasses.is_dataclass(item)


@settings(max_examples=200, deadline=None)
@given(document=json_values)
def test_any_json_parses_or_is_malformed(document):
    try:
        parse(json.dumps(document).encode())
    except MalformedPayload:
        pass


def test_empty_entry_list_is_an_empty_batch():
    batch = parse(b'{"object": "whatsapp_business_account", "entry": []}')
    assert batch.items == ()


def test_memoryview_body_parses():
    """BinaryField reads back as memoryview on PostgreSQL."""
    (message,) = parse(memoryview(load_payload("text"))).messages
    assert message.type == "text"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b'{"object": "whatsapp_business_account", "entry": [', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[]", "not an object"),
        (b'"whatsapp_business_account"', "not an object"),
        (b"null", "not an object"),
        (b'{"entry": []}', "object is None"),
        (b'{"object": "page", "entry": []}', "object is 'page'"),
        (b'{"object": "whatsapp_business_account"}', "entry is missing"),
        (b'{"object": "whatsapp_business_account", "entry": {}}', "not a list"),
        (b'{"object": "whatsapp_business_account", "entry": null}', "not a list"),
    ],
)
def test_malformed_bodies(body, message):
    with pytest.raises(MalformedPayload, match=message):
        parse(body)


def test_deeply_nested_json_is_malformed_not_a_crash():
    with pytest.raises(MalformedPayload):
        parse(b"[" * 100_000 + b"]" * 100_000)


# --- Other change fields ---------------------------------------------------------


def test_value_errors():
    batch = parse(load_payload("value_errors"))
    (item,) = batch.errors
    assert isinstance(item, AccountError)
    assert item.phone_number_id == PNID
    assert item.waba_id == WABA
    assert item.error.code == 130429
    assert item.error.title == "Rate limit hit"
    assert item.error.details == "Cloud API message throughput has been reached."


def test_template_status_update():
    (update,) = parse(load_payload("template_status_update")).items
    assert isinstance(update, TemplateStatusUpdate)
    assert update.waba_id == WABA
    assert update.time == datetime.fromtimestamp(1739321024, tz=UTC)
    assert update.event == "REJECTED"
    assert update.message_template_id == "1689556908129832"
    assert update.message_template_name == "order_confirmation"
    assert update.message_template_language == "en_US"
    assert update.reason == "INVALID_FORMAT"
    assert update.message_template_category == "UTILITY"
    assert update.rejection_reason.startswith("Variables can't be")
    assert update.rejection_recommendation == "Add text before the first variable."


def test_template_paused_with_null_reason():
    (update,) = parse(load_payload("template_status_paused")).template_status_updates
    assert update.event == "PAUSED"
    assert update.reason == ""
    assert update.other_info_title == "FIRST_PAUSE"
    assert update.other_info_description.startswith("Your template has been paused")


def test_template_quality_update():
    (update,) = parse(load_payload("template_quality_update")).items
    assert isinstance(update, TemplateQualityUpdate)
    assert update.previous_quality_score == "GREEN"
    assert update.new_quality_score == "YELLOW"
    assert update.message_template_id == "806312974732579"


def test_template_category_update():
    (update,) = parse(load_payload("template_category_update")).items
    assert isinstance(update, TemplateCategoryUpdate)
    assert update.previous_category == "UTILITY"
    assert update.new_category == "MARKETING"
    assert update.message_template_name == "shipping_update"
    assert update.category_update_timestamp is None


def test_phone_number_quality_update():
    (update,) = parse(load_payload("phone_number_quality_update")).items
    assert isinstance(update, PhoneNumberQualityUpdate)
    assert update.display_phone_number == DISPLAY
    assert update.event == "THROUGHPUT_UPGRADE"
    assert update.current_limit == "TIER_10K"
    assert update.old_limit == "TIER_2K"
    assert update.max_daily_conversation_per_phone == 10000
    assert update.max_daily_conversations_per_business == "TIER_10K"


def test_account_update_ban():
    (update,) = parse(load_payload("account_update")).items
    assert isinstance(update, AccountUpdate)
    assert update.event == "DISABLED_UPDATE"
    assert update.ban_state == "SCHEDULE_FOR_DISABLE"
    assert update.ban_date == "April 17, 2025"
    assert update.ban_info == {
        "waba_ban_state": "SCHEDULE_FOR_DISABLE",
        "waba_ban_date": "April 17, 2025",
    }
    assert update.restrictions == ()


def test_account_update_restriction():
    (update,) = parse(load_payload("account_update_restriction")).account_updates
    assert update.event == "ACCOUNT_RESTRICTION"
    assert update.phone_number == DISPLAY
    assert [r["restriction_type"] for r in update.restrictions] == [
        "RESTRICTED_BIZ_INITIATED_MESSAGING",
        "RESTRICTED_ADD_PHONE_NUMBER_ACTION",
    ]


def test_account_update_violation():
    (update,) = parse(load_payload("account_update_violation")).account_updates
    assert update.violation_type == "ADULT"
    assert update.ban_info is None


def test_user_preferences():
    (update,) = parse(load_payload("user_preferences")).items
    assert isinstance(update, UserPreferenceUpdate)
    assert update.wa_id == WA
    assert update.category == "marketing_messages"
    assert update.value == "stop"
    assert update.timestamp == datetime.fromtimestamp(1731705721, tz=UTC)
    assert update.contact.name == "Sheena Nelson"
    assert update.phone_number_id == PNID


def test_unhandled_field_is_kept_with_its_raw_json():
    (item,) = parse(load_payload("unhandled_field")).items
    assert isinstance(item, UnhandledChange)
    assert item.field == "business_capability_update"
    assert item.waba_id == WABA
    assert item.value["max_daily_conversations_per_business"] == "TIER_2K"
    assert item.raw["field"] == "business_capability_update"


# --- Timestamps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1749416383", datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)),
        (1749416383, datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)),
        (" 0 ", datetime(1970, 1, 1, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("soon", None),
        (True, None),
        ({"s": 1}, None),
        ("1e400", None),
    ],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


# --- Signatures --------------------------------------------------------------


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signature_helper_matches_hmac():
    body = load_payload("text")
    assert signature_header(body, "s3cret") == sign(body, "s3cret")


def test_signature_picks_the_right_secret_among_several():
    body = load_payload("text")
    header = sign(body, "app-b-secret")
    secrets = ["app-a-secret", "app-b-secret", "app-c-secret"]
    assert verify_signature(body, header, secrets) == "app-b-secret"
    assert verify_signature(body, header, iter(secrets)) == "app-b-secret"


def test_signature_accepts_uppercase_hex_and_surrounding_space():
    body = load_payload("text")
    header = sign(body, "k")
    upper = "sha256=" + header.removeprefix("sha256=").upper()
    assert verify_signature(body, f" {upper} ", ["k"]) == "k"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,
        "sha256=" + "z" * 64,
        "sha256=" + "a" * 63,
        "0" * 64,
        "sha256=abc,sha256=def",
    ],
)
def test_signature_rejects_wrong_missing_and_malformed_headers(header):
    assert verify_signature(load_payload("text"), header, ["k", ""]) is None


def test_signature_rejects_the_wrong_secret_and_empty_secrets():
    body = load_payload("text")
    assert verify_signature(body, sign(body, "k"), ["other"]) is None
    assert verify_signature(body, sign(body, ""), [""]) is None
    assert verify_signature(body, sign(body, "k"), []) is None


def test_signature_is_over_the_raw_bytes():
    """A re-serialised copy of escaped non-ASCII JSON no longer verifies."""
    body = load_payload("non_ascii")
    header = sign(body, "k")
    assert verify_signature(body, header, ["k"]) == "k"
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert reserialised != body
    assert verify_signature(reserialised, header, ["k"]) is None
    assert verify_signature(body + b" ", header, ["k"]) is None
