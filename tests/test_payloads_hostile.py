"""Hostile values stop in the parser (no database): an id or a code that no
column could take makes its item unparsable, and only that item; NUL, lone
surrogates and numbers beyond a double are cleaned out of text and JSON;
names stored in bounded columns are cut with a marker."""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conversations.models import (
    AccountNotice,
    Customer,
    Message,
    MessageCharge,
    MessageTemplate,
    ParkedStatus,
    Reaction,
    WhatsAppNumber,
)
from conversations.whatsapp import payloads
from conversations.whatsapp.payloads import (
    InboundMessage,
    MalformedPayload,
    StatusUpdate,
    UnparsableItem,
    parse,
)
from tests.fixtures.payloads import dump_payload, load_payload_json


def value_of(document: dict) -> dict:
    return document["entry"][0]["changes"][0]["value"]


def two_messages(change) -> bytes:
    """The text fixture with a second message, changed by ``change``."""
    document = load_payload_json("text")
    value = value_of(document)
    second = json.loads(json.dumps(value["messages"][0]))
    second["id"] = "wamid.SECOND"
    change(second)
    value["messages"].append(second)
    return dump_payload(document)


def kinds(batch) -> list[str]:
    return [type(item).__name__ for item in batch.items]


def setter(key, value, *inner):
    def change(message):
        target = message
        for name in inner:
            target = target.setdefault(name, {})
        target[key] = value

    return change


@pytest.mark.parametrize(
    "change, reason",
    [
        (setter("from", "4" * 33), "from is 33 characters long"),
        (setter("from", "4917 0123"), "from holds characters"),
        (setter("from", ["4917"]), "from is a JSON array, not an id"),
        (setter("from_user_id", "U" * 257), "from_user_id is 257 characters long"),
        (setter("id", "wamid." + "A" * 251), "id (wamid) is 257 characters long"),
        (setter("id", {"wamid": 1}), "id (wamid) is a JSON object"),
        (setter("type", "t" * 33), "type is 33 characters long"),
        (setter("type", 5), "type is a JSON number, not a string"),
        (setter("id", "w" * 257, "context"), "context.id is 257 characters long"),
    ],
    ids=[
        "long-wa_id",
        "wa_id-with-space",
        "wa_id-list",
        "long-bsuid",
        "long-wamid",
        "wamid-object",
        "long-type",
        "type-number",
        "long-reply-wamid",
    ],
)
def test_a_bad_id_or_code_makes_only_its_message_unparsable(change, reason):
    batch = parse(two_messages(change))

    assert kinds(batch) == ["InboundMessage", "UnparsableItem"]
    bad = batch.items[1]
    assert bad.kind == "message"
    assert reason in bad.error
    assert bad.raw["id"] != batch.items[0].wamid
    assert len(bad.error) <= payloads.ERROR_MAX_LENGTH


def test_a_media_id_is_never_a_path():
    def image(message):
        message["type"] = "image"
        message["image"] = {"id": "../../1065/messages", "mime_type": "image/jpeg"}

    batch = parse(two_messages(image))

    assert kinds(batch) == ["InboundMessage", "UnparsableItem"]
    assert "image.id holds characters" in batch.items[1].error


def test_a_reaction_with_an_overlong_emoji_is_unparsable():
    def reaction(message):
        message["type"] = "reaction"
        message["reaction"] = {"message_id": "wamid.X", "emoji": "\U0001f600" * 33}

    batch = parse(two_messages(reaction))

    assert "reaction.emoji is 33 characters long" in batch.items[1].error


def test_a_bsuid_of_meta_s_documented_256_characters_is_taken():
    batch = parse(two_messages(setter("from_user_id", "U" * 256)))

    assert kinds(batch) == ["InboundMessage", "InboundMessage"]
    assert batch.items[1].user_id == "U" * 256


def test_a_contact_with_a_bad_id_is_reported_and_its_message_kept():
    document = load_payload_json("text")
    value = value_of(document)
    value["contacts"].append({"profile": {"name": "Mallory"}, "wa_id": "9" * 40})

    batch = parse(dump_payload(document))

    assert kinds(batch) == ["UnparsableItem", "InboundMessage"]
    assert batch.items[0].kind == "contact"
    assert "wa_id is 40 characters long" in batch.items[0].error
    assert batch.items[1].contact.name == "Sheena Nelson"


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("id", "wamid." + "S" * 251, "id (wamid) is 257 characters long"),
        ("status", "delivered" * 3, "status is 27 characters long"),
        ("biz_opaque_callback_data", "x" * 513, "is 513 characters long"),
        ("recipient_user_id", ["US.1"], "recipient_user_id is a JSON array"),
        ("pricing", {"category": ["utility"]}, "pricing.category is a JSON array"),
        ("pricing", {"type": "r" * 41}, "pricing.type is 41 characters long"),
    ],
    ids=["wamid", "status", "callback", "bsuid-list", "category-list", "long-type"],
)
def test_a_bad_status_is_unparsable_and_the_next_one_read(key, value, reason):
    document = load_payload_json("status_delivered")
    statuses = value_of(document)["statuses"]
    bad = json.loads(json.dumps(statuses[0]))
    bad[key] = value
    statuses.insert(0, bad)

    batch = parse(dump_payload(document))

    assert kinds(batch) == ["UnparsableItem", "StatusUpdate"]
    assert reason in batch.items[0].error


def test_an_entry_with_a_bad_waba_id_is_unparsable_and_the_next_one_read():
    document = load_payload_json("text")
    bad = json.loads(json.dumps(document["entry"][0]))
    bad["id"] = "1" * 65
    document["entry"].insert(0, bad)

    batch = parse(dump_payload(document))

    assert kinds(batch) == ["UnparsableItem", "InboundMessage"]
    assert batch.items[0].kind == "entry"
    assert "entry.id (WABA) is 65 characters long" in batch.items[0].error


def test_a_change_for_an_overlong_phone_number_id_is_unparsable():
    document = load_payload_json("text")
    value_of(document)["metadata"]["phone_number_id"] = "1" * 65

    (item,) = parse(dump_payload(document)).items

    assert item.kind == "change"
    assert "phone_number_id is 65 characters long" in item.error


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("message_template_name", "n" * 513, "is 513 characters long"),
        ("message_template_language", "en_US" * 4, "is 20 characters long"),
        ("message_template_id", {"id": 1}, "is a JSON object, not an id"),
    ],
    ids=["long-name", "long-language", "id-object"],
)
def test_a_template_update_with_a_bad_key_is_unparsable(key, value, reason):
    document = load_payload_json("template_status_update")
    value_of(document)[key] = value

    (item,) = parse(dump_payload(document)).items

    assert isinstance(item, UnparsableItem)
    assert reason in item.error


def test_a_user_preference_with_an_overlong_wa_id_is_unparsable():
    document = load_payload_json("user_preferences")
    value_of(document)["user_preferences"][0]["wa_id"] = "1" * 33

    (item,) = parse(dump_payload(document)).items

    assert item.kind == "user_preference"


def test_ids_sent_as_json_integers_are_read_as_text():
    document = load_payload_json("template_status_update")
    value_of(document)["message_template_id"] = 1234567890123

    (item,) = parse(dump_payload(document)).items

    assert item.message_template_id == "1234567890123"


# --- Cleaned: NUL, lone surrogates, numbers beyond a double ---------------------


def strings_in(document) -> list[str]:
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [s for k, v in document.items() for s in (k, *strings_in(v))]
    if isinstance(document, list):
        return [s for item in document for s in strings_in(item)]
    return []


def test_nul_is_removed_from_text_keys_and_json():
    document = load_payload_json("text")
    message = value_of(document)["messages"][0]
    message["text"]["body"] = "Hel\u0000lo"
    message["text"]["extra\u0000key"] = ["a\u0000", {"b": "\u0000c"}]
    value_of(document)["contacts"][0]["profile"]["name"] = "Shee\u0000na"

    (item,) = parse(dump_payload(document)).items

    assert item.text == "Hello"
    assert item.profile_name == "Sheena"
    assert item.payload["extrakey"] == ["a", {"b": "c"}]
    assert not any("\x00" in text for text in strings_in(dict(item.raw)))


def test_lone_surrogates_become_replacement_characters():
    document = load_payload_json("text")
    value_of(document)["messages"][0]["text"]["body"] = "a\ud800b \udfff"
    body = dump_payload(document)
    # The same in raw UTF-8 bytes, which json.loads lets through too.
    body = body.replace(b"Sheena", b"Sh\xed\xa0\x80eena")

    (item,) = parse(body).items

    assert item.text == "a\ufffdb \ufffd"
    assert item.profile_name == "Sh\ufffdeena Nelson"
    json.dumps(dict(item.raw), ensure_ascii=False).encode("utf-8")


def test_a_surrogate_pair_is_one_character_and_kept():
    document = load_payload_json("text")
    value_of(document)["messages"][0]["text"]["body"] = "\U0001f44d"

    (item,) = parse(dump_payload(document)).items

    assert item.text == "\U0001f44d"


def test_nan_infinity_and_numbers_beyond_a_double_become_null():
    body = dump_payload(load_payload_json("status_failed")).replace(
        b'"code": 131047', b'"code": NaN, "a": Infinity, "b": -Infinity, "c": 1e400', 1
    )

    (item,) = parse(body).items

    error = item.errors[0]
    assert (error.code, error.raw["a"], error.raw["b"], error.raw["c"]) == (
        None,
        None,
        None,
        None,
    )


def test_a_body_nested_deeper_than_max_depth_is_malformed():
    document = load_payload_json("text")
    deep = "bottom"
    for _ in range(payloads.MAX_DEPTH):
        deep = [deep]
    value_of(document)["messages"][0]["text"]["deep"] = deep

    with pytest.raises(MalformedPayload, match="nests deeper than 64 levels"):
        parse(dump_payload(document))


def test_nesting_meta_could_send_is_read():
    document = load_payload_json("text")
    deep = "bottom"
    for _ in range(40):
        deep = {"n": deep}
    value_of(document)["messages"][0]["text"]["deep"] = deep

    (item,) = parse(dump_payload(document)).items

    assert isinstance(item, InboundMessage)


hostile_text = st.text(
    st.sampled_from(["\x00", "\ud800", "\udfff", "a", "\u00e9", "\U0001f600", " "]),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(text=hostile_text, key=hostile_text)
def test_no_string_parse_returns_is_refused_by_postgresql(text, key):
    """Whatever text a field holds, every string of every item encodes to
    UTF-8 and holds no NUL (PostgreSQL's text and jsonb refuse both)."""
    document = load_payload_json("status_failed")
    status = value_of(document)["statuses"][0]
    status["errors"][0]["error_data"]["details"] = text
    status[key] = {key: [text]}
    value_of(document)["contacts"] = [{"profile": {"name": text}, "wa_id": "1"}]

    for item in parse(dump_payload(document)).items:
        for string in strings_in(dataclasses.asdict(item)):
            assert "\x00" not in string
            string.encode("utf-8")


# --- Cut with a marker: names stored in bounded columns ------------------------


def test_a_long_profile_name_is_cut_with_a_marker():
    document = load_payload_json("text")
    value_of(document)["contacts"][0]["profile"]["name"] = "N" * 300

    (item,) = parse(dump_payload(document)).items

    assert len(item.profile_name) == payloads.PROFILE_NAME_MAX_LENGTH
    assert item.profile_name.endswith("N…")


def test_a_long_file_name_is_cut_keeping_its_extension():
    document = load_payload_json("document")
    value_of(document)["messages"][0]["document"]["filename"] = "f" * 300 + ".pdf"

    (item,) = parse(dump_payload(document)).items

    assert len(item.media.filename) == payloads.FILENAME_MAX_LENGTH
    assert item.media.filename.endswith("f….pdf")


def test_long_free_text_is_kept_whole():
    document = load_payload_json("text")
    value_of(document)["messages"][0]["text"]["body"] = "word " * 20_000

    (item,) = parse(dump_payload(document)).items

    assert item.text == "word " * 20_000


# --- Every limit fits the column the value is stored in -------------------------


def column(model, name):
    return model._meta.get_field(name).max_length


@pytest.mark.parametrize(
    "max_length, limit",
    [
        (column(Customer, "wa_id"), payloads.WA_ID_MAX_LENGTH),
        (column(Customer, "user_id"), payloads.BSUID_MAX_LENGTH),
        (column(Customer, "profile_name"), payloads.PROFILE_NAME_MAX_LENGTH),
        (column(Customer, "username"), payloads.USERNAME_MAX_LENGTH),
        (column(Customer, "country_code"), payloads.COUNTRY_CODE_MAX_LENGTH),
        (column(Message, "wamid"), payloads.WAMID_MAX_LENGTH),
        (column(Message, "context_wamid"), payloads.WAMID_MAX_LENGTH),
        (column(Message, "type"), payloads.MESSAGE_TYPE_MAX_LENGTH),
        (column(Message, "media_id"), payloads.MEDIA_ID_MAX_LENGTH),
        (column(Message, "media_mime_type"), payloads.MIME_TYPE_MAX_LENGTH),
        (column(Message, "media_filename"), payloads.FILENAME_MAX_LENGTH),
        (column(Reaction, "emoji"), payloads.EMOJI_MAX_LENGTH),
        (column(Reaction, "wamid"), payloads.WAMID_MAX_LENGTH),
        (column(ParkedStatus, "wamid"), payloads.WAMID_MAX_LENGTH),
        (column(ParkedStatus, "status"), payloads.STATUS_MAX_LENGTH),
        (column(WhatsAppNumber, "phone_number_id"), payloads.META_ID_MAX_LENGTH),
        (column(WhatsAppNumber, "waba_id"), payloads.META_ID_MAX_LENGTH),
        (column(AccountNotice, "waba_id"), payloads.META_ID_MAX_LENGTH),
        (column(MessageTemplate, "waba_id"), payloads.META_ID_MAX_LENGTH),
        (column(MessageTemplate, "template_id"), payloads.META_ID_MAX_LENGTH),
        (column(MessageTemplate, "name"), payloads.TEMPLATE_NAME_MAX_LENGTH),
        (column(MessageTemplate, "language"), payloads.LANGUAGE_MAX_LENGTH),
        (column(MessageCharge, "category"), payloads.PRICING_CODE_MAX_LENGTH),
        (column(MessageCharge, "pricing_type"), payloads.PRICING_CODE_MAX_LENGTH),
    ],
)
def test_every_limit_of_the_parser_fits_its_column(max_length, limit):
    assert max_length >= limit


def test_the_documented_limits_are_meta_s():
    # developers.facebook.com: business-scoped user ids ("up to 256
    # alphanumeric characters"), template names (512), callback data (512).
    assert payloads.BSUID_MAX_LENGTH == 256
    assert payloads.TEMPLATE_NAME_MAX_LENGTH == 512
    assert payloads.CALLBACK_DATA_MAX_LENGTH == 512


def test_a_status_update_keeps_its_fields_when_every_value_fits():
    (item,) = parse(dump_payload(load_payload_json("status_sent"))).items

    assert isinstance(item, StatusUpdate)
    assert item.recipient_user_id == "US.13491208655302741918"
    assert item.pricing.category == "utility"
