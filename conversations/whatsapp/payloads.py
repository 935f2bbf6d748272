"""Meta's webhook JSON in, frozen dataclasses out.

The only module of the helpdesk that knows the shape of a WhatsApp Cloud API
webhook. It is pure: no database, no Django models, no I/O. Call
``parse(body)`` with the raw POST body and get a ``WebhookBatch`` whose
``items`` are, in the order Meta sent them:

- ``InboundMessage``: a customer's message (``value.messages[]``),
- ``StatusUpdate``: a delivery report for our send (``value.statuses[]``),
- ``AccountError``: a system or account error (``value.errors[]``),
- ``TemplateStatusUpdate``, ``TemplateQualityUpdate``,
  ``TemplateCategoryUpdate``, ``PhoneNumberQualityUpdate``, ``AccountUpdate``,
  ``UserPreferenceUpdate``: the other change fields the helpdesk handles,
- ``UnhandledChange``: any other change field, kept with its raw JSON,
- ``UnparsableItem``: one entry, change, message or status that could not be
  read, with its raw JSON and the reason, so nothing is ever dropped.

Only a body that is not JSON, or not Meta's envelope at all, raises
``MalformedPayload``. Everything inside the envelope is read defensively:
Meta's payloads vary between versions and fields go missing.

It is also where hostile values stop (anyone holding an app secret can sign
a body, and Meta has bad days), so that nothing parse() returns can make a
database refuse a write:

- NUL characters are removed from every string and key, lone UTF-16
  surrogates become U+FFFD, NaN, Infinity and numbers beyond a double
  become null, and a body nested deeper than ``MAX_DEPTH`` is malformed:
  PostgreSQL takes none of these in text or jsonb columns.
- An identifier (wamid, wa_id, BSUID, the ids of numbers, accounts,
  templates and media) that is not a JSON string or integer, is longer than
  its limit below or holds characters no Meta id has makes its item an
  ``UnparsableItem``; so does a code (a type, a status, a pricing category,
  a language) that is not a string or is longer than the column it goes to.
- Free text is kept whole; the two names stored in bounded columns (a
  profile name, a file name) are cut at their limit, ending in "…".

``verify_signature()`` checks ``X-Hub-Signature-256`` over the raw bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AccountError",
    "AccountUpdate",
    "Contact",
    "Context",
    "InboundMessage",
    "Item",
    "MalformedPayload",
    "Media",
    "MetaError",
    "PhoneNumberQualityUpdate",
    "Pricing",
    "Reaction",
    "Referral",
    "StatusConversation",
    "StatusUpdate",
    "SystemChange",
    "TemplateCategoryUpdate",
    "TemplateQualityUpdate",
    "TemplateStatusUpdate",
    "UnhandledChange",
    "UnparsableItem",
    "UserPreferenceUpdate",
    "WebhookBatch",
    "parse",
    "parse_timestamp",
    "signature_header",
    "summarize_message",
    "verify_signature",
]

OBJECT = "whatsapp_business_account"

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})

# Status values Meta documents for the Cloud API. Others (the
# On-Premises "deleted", "warning") are still parsed, never refused.
KNOWN_STATUSES = frozenset({"sent", "delivered", "read", "played", "failed"})

# Fallback labels for messages that carry no text of their own.
_TYPE_LABELS = {
    "image": "Image",
    "video": "Video",
    "audio": "Audio",
    "document": "Document",
    "sticker": "Sticker",
    "location": "Location",
    "contacts": "Contact",
    "interactive": "Interactive reply",
    "button": "Button reply",
    "order": "Order",
    "system": "Account change",
}


class MalformedPayload(ValueError):
    """The body is not JSON, or not Meta's webhook envelope."""


# --- Limits ---------------------------------------------------------------
#
# Meta documents the BSUID's length; it does not bound its other ids, so
# theirs are the columns that store them, far above what Meta sends (a wamid
# is about 60 characters, a wa_id a phone number's 15 digits at most).
# tests/test_payloads_hostile.py checks that every column is at least as long.

# A business-scoped user id: "up to 256 alphanumeric characters".
BSUID_MAX_LENGTH = 256
# A customer's WhatsApp id: the digits of a phone number (E.164: 15).
WA_ID_MAX_LENGTH = 32
# A message id (wamid), in messages, statuses, replies and reactions.
WAMID_MAX_LENGTH = 256
# Phone-number, WABA and template ids (numeric in Meta's examples).
META_ID_MAX_LENGTH = 64
# A media id goes into a Graph API path: digits in Meta's examples.
MEDIA_ID_MAX_LENGTH = 128
# A click-to-WhatsApp ad's source id and click id.
REFERRAL_SOURCE_ID_MAX_LENGTH = 128
CTWA_CLID_MAX_LENGTH = 512
# Documented: what a send may echo in biz_opaque_callback_data.
CALLBACK_DATA_MAX_LENGTH = 512
# Documented: a template's name.
TEMPLATE_NAME_MAX_LENGTH = 512
# Codes, each as long as the column it is stored in.
MESSAGE_TYPE_MAX_LENGTH = 32
STATUS_MAX_LENGTH = 20
PRICING_CODE_MAX_LENGTH = 40
LANGUAGE_MAX_LENGTH = 15
COUNTRY_CODE_MAX_LENGTH = 4
EMOJI_MAX_LENGTH = 32
MIME_TYPE_MAX_LENGTH = 255
# Names stored in bounded columns, cut (ending in "…") beyond these.
PROFILE_NAME_MAX_LENGTH = 256
USERNAME_MAX_LENGTH = 256
FILENAME_MAX_LENGTH = 255
# Meta's payloads nest about ten levels; PostgreSQL, json.dumps and the
# stack all have limits far below what a 3 MB body can nest.
MAX_DEPTH = 64
# An UnparsableItem's reason is shown to admins, not the value it quotes.
ERROR_MAX_LENGTH = 300


# --- Small building blocks -------------------------------------------------


@dataclass(frozen=True)
class MetaError:
    """One of Meta's error objects (in value.errors, messages[], statuses[])."""

    code: int | None
    title: str = ""
    message: str = ""
    # error_data.details: Meta's most useful text.
    details: str = ""
    href: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Return the error in the shape Message.error stores."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.message,
            "details": self.details,
            "href": self.href,
        }


@dataclass(frozen=True)
class Contact:
    """A customer as value.contacts[] names them."""

    wa_id: str = ""
    # The business-scoped user id (BSUID), new in 2026.
    user_id: str = ""
    name: str = ""
    username: str = ""
    country_code: str = ""
    parent_user_id: str = ""
    identity_key_hash: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Media:
    """The media object of an image, audio, video, document or sticker message."""

    id: str = ""
    mime_type: str = ""
    # As Meta sent it; the docs' examples look like base64 of the SHA-256,
    # but that is not stated, so it is not decoded here.
    sha256: str = ""
    filename: str = ""
    caption: str = ""
    # audio.voice: recorded in WhatsApp (a voice note).
    voice: bool = False
    # sticker.animated.
    animated: bool = False
    # Present from Nov 2025; still needs the bearer token, and
    # expires after 5 minutes.
    url: str = ""


@dataclass(frozen=True)
class Context:
    """What an inbound message replies to, or that it was forwarded."""

    # context.id: the quoted wamid; empty for forwarded messages.
    message_id: str = ""
    # context.from: the business number the quoted message came from.
    from_: str = ""
    forwarded: bool = False
    frequently_forwarded: bool = False
    # {"catalog_id", "product_retailer_id"} for a "Message business" inquiry.
    referred_product: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Referral:
    """The click-to-WhatsApp ad or post a conversation came from."""

    source_id: str = ""
    source_type: str = ""
    source_url: str = ""
    headline: str = ""
    body: str = ""
    media_type: str = ""
    image_url: str = ""
    video_url: str = ""
    thumbnail_url: str = ""
    # Omitted for ads shown in WhatsApp Status.
    ctwa_clid: str = ""
    # welcome_message.text: the ad's greeting.
    welcome_message: str = ""
    # The whole object as Meta sent it, for Conversation.referral.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Reaction:
    """A customer's reaction to one of the business's messages."""

    message_id: str
    emoji: str = ""

    @property
    def removed(self) -> bool:
        """Return whether this takes the reaction away.

        Meta's 2026 reaction reference sends no emoji; older payloads an
        empty string. Both mean "removed".
        """
        return not self.emoji


@dataclass(frozen=True)
class SystemChange:
    """A system message: the customer changed number or user id."""

    type: str = ""
    body: str = ""
    # system.wa_id: the customer's new wa_id.
    new_wa_id: str = ""
    # system.user_id: the new BSUID (user_changed_user_id).
    new_user_id: str = ""


@dataclass(frozen=True)
class Pricing:
    """statuses[].pricing."""

    # Due to be deprecated; Meta recommends type plus category.
    billable: bool | None = None
    pricing_model: str = ""
    category: str = ""
    type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StatusConversation:
    """statuses[].conversation; left out from v24.0 except in FEP windows."""

    id: str = ""
    expiration_timestamp: datetime | None = None
    origin_type: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


# --- Items -----------------------------------------------------------------


@dataclass(frozen=True)
class InboundMessage:
    """One message a customer sent (value.messages[])."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    wamid: str
    type: str
    # Meta's time (unix seconds string), as an aware UTC datetime; None when
    # missing or unreadable (the caller falls back to the time received).
    timestamp: datetime | None
    # messages[].from: the customer's wa_id; may be "" with BSUIDs.
    from_wa_id: str = ""
    # messages[].from_user_id: the customer's BSUID.
    from_user_id: str = ""
    # messages[].group_id: the message was written in a group (Groups API).
    group_id: str = ""
    # The matching value.contacts[] entry; None for system messages (which
    # come without contacts).
    contact: Contact | None = None
    # A readable summary whatever the type: see summarize_message().
    text: str = ""
    # The type's object as Meta sent it ({} when missing).
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False)
    media: Media | None = None
    context: Context | None = None
    referral: Referral | None = None
    reaction: Reaction | None = None
    system: SystemChange | None = None
    errors: tuple[MetaError, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def wa_id(self) -> str:
        """Return the customer's wa_id, from the message or its contact."""
        return self.from_wa_id or (self.contact.wa_id if self.contact else "")

    @property
    def user_id(self) -> str:
        """Return the customer's BSUID, from the message or its contact."""
        return self.from_user_id or (self.contact.user_id if self.contact else "")

    @property
    def profile_name(self) -> str:
        return self.contact.name if self.contact else ""

    @property
    def reply_to_wamid(self) -> str:
        return self.context.message_id if self.context else ""

    @property
    def error(self) -> MetaError | None:
        """Return the first error Meta attached (unsupported types), if any."""
        return self.errors[0] if self.errors else None

    @property
    def is_supported(self) -> bool:
        """Return whether the helpdesk knows this type (else show a placeholder)."""
        return self.type in _SUMMARIES and self.type != "unsupported"


@dataclass(frozen=True)
class MessageEcho:
    """field smb_message_echoes: a message the business sent from the
    WhatsApp Business app (coexistence), to a customer."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    wamid: str
    type: str
    timestamp: datetime | None
    # The customer: their phone, or their BSUID when only that is known.
    to_wa_id: str = ""
    to_user_id: str = ""
    text: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class HistoryMessage:
    """One past message of a chat history thread."""

    wamid: str
    # Sent by the business (from its WhatsApp Business app), else by the customer.
    from_business: bool
    type: str
    text: str
    timestamp: datetime | None
    payload: Mapping[str, Any] = field(default_factory=dict)
    # history_context.status: what Meta knew of a business message (READ...).
    status: str = ""
    # An image, audio, video, document or sticker. Meta leaves the media id
    # out of the first history webhooks and sends it in later ones, for
    # media of the last 14 days only.
    media: Media | None = None


@dataclass(frozen=True)
class HistoryChunk:
    """field history: a chunk of the WhatsApp Business app's past chats,
    shared when a coexistence number was onboarded (or its refusal)."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    phase: int | None
    chunk_order: int | None
    progress: int | None
    # (customer wa_id, messages) per thread.
    threads: tuple[tuple[str, tuple[HistoryMessage, ...]], ...] = ()
    errors: tuple[MetaError, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StatusUpdate:
    """One report on a message the business sent (value.statuses[])."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    wamid: str
    # sent, delivered, read, played, failed, or whatever else Meta sends.
    status: str
    timestamp: datetime | None
    recipient_id: str = ""
    recipient_user_id: str = ""
    # "group" for group sends, with recipient_participant_id.
    recipient_type: str = ""
    recipient_participant_id: str = ""
    # Echoed from the send: the helpdesk puts its own message id there.
    biz_opaque_callback_data: str = ""
    pricing: Pricing | None = None
    conversation: StatusConversation | None = None
    errors: tuple[MetaError, ...] = ()
    # sent, delivered and read may carry contacts[] with BSUIDs.
    contact: Contact | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def error(self) -> MetaError | None:
        """Return the first error of a failed send, if any."""
        return self.errors[0] if self.errors else None


@dataclass(frozen=True)
class AccountError:
    """A system, app or account error not tied to one message (value.errors[])."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    error: MetaError
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TemplateStatusUpdate:
    """field message_template_status_update."""

    waba_id: str
    time: datetime | None
    # APPROVED, REJECTED, PAUSED, DISABLED, ... (Meta's list may grow).
    event: str
    message_template_id: str
    message_template_name: str
    message_template_language: str
    # ABUSIVE_CONTENT, INVALID_FORMAT, NONE, ...; "" when Meta sent null.
    reason: str = ""
    message_template_category: str = ""
    disable_date: str = ""
    # other_info: pause titles such as FIRST_PAUSE, and their description.
    other_info_title: str = ""
    other_info_description: str = ""
    rejection_reason: str = ""
    rejection_recommendation: str = ""
    # Meta's quality-update reference shows quality changes under this field
    # too, with no event.
    previous_quality_score: str = ""
    new_quality_score: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TemplateQualityUpdate:
    """field message_template_quality_update: GREEN, YELLOW, RED or UNKNOWN."""

    waba_id: str
    time: datetime | None
    message_template_id: str
    message_template_name: str
    message_template_language: str
    previous_quality_score: str = ""
    new_quality_score: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TemplateCategoryUpdate:
    """field template_category_update: Meta re-categorised a template."""

    waba_id: str
    time: datetime | None
    message_template_id: str
    message_template_name: str
    message_template_language: str
    # Completed changes carry previous_category; impending ones
    # correct_category and category_update_timestamp instead.
    previous_category: str = ""
    new_category: str = ""
    correct_category: str = ""
    category_update_timestamp: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class PhoneNumberQualityUpdate:
    """field phone_number_quality_update."""

    waba_id: str
    time: datetime | None
    display_phone_number: str
    # THROUGHPUT_UPGRADE, ONBOARDING, and in older docs FLAGGED, UNFLAGGED,
    # UPGRADE, DOWNGRADE; which still fire is uncertain.
    event: str
    # TIER_* values; current_limit and old_limit are due to go in Feb 2026.
    current_limit: str = ""
    old_limit: str = ""
    max_daily_conversation_per_phone: int | None = None
    max_daily_conversations_per_business: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class AccountUpdate:
    """field account_update: violations, bans, restrictions, offboarding."""

    waba_id: str
    time: datetime | None
    # ACCOUNT_VIOLATION, ACCOUNT_RESTRICTION, DISABLED_UPDATE, ACCOUNT_DELETED,
    # PARTNER_ADDED, ...
    event: str
    phone_number: str = ""
    # ban_info.waba_ban_state: DISABLE, REINSTATE, SCHEDULE_FOR_DISABLE.
    ban_state: str = ""
    ban_date: str = ""
    violation_type: str = ""
    # restriction_info[]: {"restriction_type", "expiration"} each.
    restrictions: tuple[Mapping[str, Any], ...] = ()
    country: str = ""
    ban_info: Mapping[str, Any] | None = None
    violation_info: Mapping[str, Any] | None = None
    waba_info: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class UserPreferenceUpdate:
    """field user_preferences: a customer stopped or resumed marketing."""

    waba_id: str
    phone_number_id: str
    display_phone_number: str
    wa_id: str
    user_id: str = ""
    # "marketing_messages".
    category: str = ""
    # "stop" or "resume".
    value: str = ""
    detail: str = ""
    timestamp: datetime | None = None
    contact: Contact | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class UnhandledChange:
    """A change field the helpdesk has no handler for, kept for admins."""

    waba_id: str
    time: datetime | None
    field: str
    value: Any = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class UnparsableItem:
    """Part of a batch that could not be read: its raw JSON and why.

    ``kind`` is "entry", "change", "message", "status", "error" or
    "user_preference".
    """

    kind: str
    error: str
    raw: Any = None
    waba_id: str = ""
    field: str = ""
    phone_number_id: str = ""


Item = (
    InboundMessage
    | MessageEcho
    | HistoryChunk
    | StatusUpdate
    | AccountError
    | TemplateStatusUpdate
    | TemplateQualityUpdate
    | TemplateCategoryUpdate
    | PhoneNumberQualityUpdate
    | AccountUpdate
    | UserPreferenceUpdate
    | UnhandledChange
    | UnparsableItem
)


@dataclass(frozen=True)
class WebhookBatch:
    """Everything in one webhook POST, in Meta's order."""

    items: tuple[Item, ...]

    def _of(self, kind: type) -> tuple:
        return tuple(item for item in self.items if isinstance(item, kind))

    @property
    def messages(self) -> tuple[InboundMessage, ...]:
        return self._of(InboundMessage)

    @property
    def statuses(self) -> tuple[StatusUpdate, ...]:
        return self._of(StatusUpdate)

    @property
    def message_echoes(self) -> tuple[MessageEcho, ...]:
        return self._of(MessageEcho)

    @property
    def errors(self) -> tuple[AccountError, ...]:
        return self._of(AccountError)

    @property
    def template_status_updates(self) -> tuple[TemplateStatusUpdate, ...]:
        return self._of(TemplateStatusUpdate)

    @property
    def template_quality_updates(self) -> tuple[TemplateQualityUpdate, ...]:
        return self._of(TemplateQualityUpdate)

    @property
    def template_category_updates(self) -> tuple[TemplateCategoryUpdate, ...]:
        return self._of(TemplateCategoryUpdate)

    @property
    def phone_number_quality_updates(self) -> tuple[PhoneNumberQualityUpdate, ...]:
        return self._of(PhoneNumberQualityUpdate)

    @property
    def account_updates(self) -> tuple[AccountUpdate, ...]:
        return self._of(AccountUpdate)

    @property
    def user_preference_updates(self) -> tuple[UserPreferenceUpdate, ...]:
        return self._of(UserPreferenceUpdate)

    @property
    def unhandled(self) -> tuple[UnhandledChange, ...]:
        return self._of(UnhandledChange)

    @property
    def unparsable(self) -> tuple[UnparsableItem, ...]:
        return self._of(UnparsableItem)

    @property
    def phone_number_ids(self) -> frozenset[str]:
        """Return the business numbers this batch is for (the routing keys)."""
        return frozenset(
            pid for item in self.items if (pid := getattr(item, "phone_number_id", ""))
        )


# --- Defensive readers -----------------------------------------------------


def _str(value: Any) -> str:
    """Return a scalar as text; "" for None, objects and lists."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        # Ids and timestamps that arrive as JSON numbers.
        return str(int(value))
    return str(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value) if isinstance(value, bool | int) else False


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# Printable ASCII without spaces: every id Meta sends (digits, wamids in
# base64 with "wamid." before them, BSUIDs such as "US.1349...").
_ID_CHARACTERS = re.compile(r"[!-~]*")
# A media id is a path segment of a Graph API URL: no "/", "." or "%".
_MEDIA_ID_CHARACTERS = re.compile(r"[0-9A-Za-z_-]*")


def _id(
    raw: Mapping[str, Any],
    key: str,
    limit: int,
    *,
    name: str = "",
    characters: re.Pattern = _ID_CHARACTERS,
) -> str:
    """Return an identifier as text; "" when missing or null.

    Raise ValueError, which makes the item unparsable, for an id that is not
    a JSON string or integer, is longer than ``limit`` or holds characters
    Meta's ids do not.
    """
    value = raw.get(key)
    name = name or key
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{name} is a JSON {_json_type(value)}, not an id")
    text = str(value)
    if len(text) > limit:
        raise ValueError(
            f"{name} is {len(text)} characters long (an id has at most {limit})"
        )
    if not characters.fullmatch(text):
        raise ValueError(f"{name} holds characters no id of Meta's has")
    return text


def _code(raw: Mapping[str, Any], key: str, limit: int, *, name: str = "") -> str:
    """Return one of Meta's codes (a type, a status, a category); "" when
    missing or null. Raise ValueError for anything but a string, or one
    longer than ``limit``."""
    value = raw.get(key)
    name = name or key
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} is a JSON {_json_type(value)}, not a string")
    if len(value) > limit:
        raise ValueError(
            f"{name} is {len(value)} characters long (at most {limit} are stored)"
        )
    return value


def _cut(text: str, limit: int, *, keep_suffix: bool = False) -> str:
    """Return text cut to ``limit`` characters, ending in "…" when cut.

    With ``keep_suffix`` a short extension stays (a file name's ".pdf").
    """
    if len(text) <= limit:
        return text
    suffix = ""
    if keep_suffix:
        dot = text.rfind(".")
        if dot > 0 and len(text) - dot <= 16:
            suffix = text[dot:]
    return text[: limit - 1 - len(suffix)] + "…" + suffix


_SURROGATES = re.compile("[\ud800-\udfff]")


def _clean_text(text: str) -> str:
    """Return text PostgreSQL takes: no NUL, no lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        # Pairs were joined by json.loads; what is left is lone halves.
        text = _SURROGATES.sub("\ufffd", text)
    return text


class _TooDeep(Exception):
    pass


def _clean(value: Any, depth: int = 0) -> Any:
    """Return a decoded JSON document with every string and key cleaned.

    Raise _TooDeep past MAX_DEPTH levels, so this recursion stays short.
    """
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _TooDeep
        return {
            _clean_text(key): _clean(item, depth + 1) for key, item in value.items()
        }
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise _TooDeep
        return [_clean(item, depth + 1) for item in value]
    return value


def _finite(text: str) -> float | None:
    # A number beyond a double (1e400) reads as inf, which no JSON column
    # takes: it becomes null, like NaN and Infinity (not JSON, but Python's
    # json reads them; see _constant).
    number = float(text)
    return number if math.isfinite(number) else None


def _constant(name: str) -> None:
    return None


def parse_timestamp(value: Any) -> datetime | None:
    """Turn Meta's unix seconds (a string in messages, an int elsewhere) into UTC.

    Return None when the value is missing or not a number.
    """
    if value is None or isinstance(value, bool | dict | list):
        return None
    try:
        seconds = float(str(value).strip())
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _error(raw: Any) -> MetaError:
    raw = _dict(raw)
    error_data = _dict(raw.get("error_data"))
    return MetaError(
        code=_int(raw.get("code")),
        title=_str(raw.get("title")),
        message=_str(raw.get("message")),
        details=_str(error_data.get("details")) or _str(raw.get("details")),
        href=_str(raw.get("href")),
        raw=raw,
    )


def _errors(raw: Any) -> tuple[MetaError, ...]:
    return tuple(_error(item) for item in _list(raw) if isinstance(item, dict))


def _contact(raw: Any) -> Contact:
    raw = _dict(raw)
    profile = _dict(raw.get("profile"))
    # Username and country code sit in profile; read the top level too in
    # case a version moves them.
    username = _str(profile.get("username")) or _str(raw.get("username"))
    country_code = _code(profile, "country_code", COUNTRY_CODE_MAX_LENGTH) or _code(
        raw, "country_code", COUNTRY_CODE_MAX_LENGTH
    )
    wa_id = _id(raw, "wa_id", WA_ID_MAX_LENGTH)
    return Contact(
        wa_id=wa_id,
        user_id=_id(raw, "user_id", BSUID_MAX_LENGTH),
        name=_profile_name(_str(profile.get("name")), wa_id),
        username=_cut(username, USERNAME_MAX_LENGTH),
        country_code=country_code,
        parent_user_id=_id(raw, "parent_user_id", BSUID_MAX_LENGTH),
        identity_key_hash=_str(raw.get("identity_key_hash")),
        raw=raw,
    )


def _profile_name(name: str, wa_id: str) -> str:
    """The customer's WhatsApp name, or "" when the profile names only their
    number (as some payloads do for a customer without a name): a number is
    not a name, and must not replace the name the helpdesk shows."""
    digits = "".join(char for char in name if char.isdigit())
    if digits and digits == wa_id and not any(char.isalpha() for char in name):
        return ""
    return _cut(name, PROFILE_NAME_MAX_LENGTH)


def _match_contact(
    contacts: tuple[Contact, ...], wa_id: str, user_id: str
) -> Contact | None:
    """Return the contact for a sender or recipient, matched on wa_id or BSUID."""
    for contact in contacts:
        if (wa_id and contact.wa_id == wa_id) or (
            user_id and contact.user_id == user_id
        ):
            return contact
    # Meta sends one contact per message in practice. A single contact whose
    # ids do not contradict the sender's (one side empty, as with BSUID-only
    # payloads) is taken to be the sender.
    if len(contacts) == 1:
        (only,) = contacts
        if not ((wa_id and only.wa_id) or (user_id and only.user_id)):
            return only
    return None


# --- Message summaries -----------------------------------------------------


def _summary_text(payload: dict, message: dict) -> str:
    return _str(payload.get("body"))


def _summary_media(payload: dict, message: dict) -> str:
    kind = _str(message.get("type"))
    caption = _str(payload.get("caption"))
    if caption:
        return caption
    if kind == "document":
        return _str(payload.get("filename")) or "Document"
    if kind == "audio" and _bool(payload.get("voice")):
        return "Voice message"
    return _TYPE_LABELS.get(kind, "Media")


def _summary_location(payload: dict, message: dict) -> str:
    # A "current location" share may come without name and address.
    parts = [_str(payload.get("name")), _str(payload.get("address"))]
    return ", ".join(part for part in parts if part) or "Location"


def _summary_contacts(payload: Any, message: dict) -> str:
    names = []
    for card in _list(message.get("contacts")):
        name = _dict(_dict(card).get("name"))
        formatted = _str(name.get("formatted_name")) or " ".join(
            part
            for part in (_str(name.get("first_name")), _str(name.get("last_name")))
            if part
        )
        if formatted:
            names.append(formatted)
    return ", ".join(names) or "Contact"


def _summary_interactive(payload: dict, message: dict) -> str:
    kind = _str(payload.get("type"))
    if kind in {"button_reply", "list_reply"}:
        reply = _dict(payload.get(kind))
        return _str(reply.get("title")) or _str(reply.get("id")) or "Reply"
    if kind == "nfm_reply":
        # A Flow or address answer: its body is a generic "Sent"; the answers
        # are in response_json, a JSON string.
        return _str(_dict(payload.get("nfm_reply")).get("body")) or "Form submitted"
    if kind == "call_permission_reply":
        return _call_permission_summary(_dict(payload.get(kind)))
    # A fixture shows an interactive message without the object.
    return "Interactive reply"


def interactive_choice(payload: Any) -> tuple[str, str] | None:
    """The (id, title) a customer chose from reply buttons or a list, from a
    stored interactive message's payload; None for anything else."""
    payload = _dict(payload)
    kind = _str(payload.get("type"))
    if kind not in {"button_reply", "list_reply"}:
        return None
    reply = _dict(payload.get(kind))
    return _str(reply.get("id")), _str(reply.get("title"))


def flow_answers(payload: Any) -> list[tuple[str, str]] | None:
    """The answers of a Flow (an `nfm_reply`), as (field, value) in the
    order the customer's app sent them, from a stored interactive message's
    payload; None when it is no Flow answer. `response_json` is a JSON
    string; `flow_token` is the business's own reference, not an answer."""
    payload = _dict(payload)
    if _str(payload.get("type")) != "nfm_reply":
        return None
    raw = _dict(payload.get("nfm_reply")).get("response_json")
    try:
        answers = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        answers = {}
    if not isinstance(answers, dict):
        return []
    return [
        (_str(key), value if isinstance(value, str) else json.dumps(value))
        for key, value in answers.items()
        if key != "flow_token"
    ]


def _call_permission_summary(reply: dict) -> str:
    """The customer's answer to a request to call them (Calling API)."""
    if _str(reply.get("response")) != "accept":
        return "Call permission declined"
    if _bool(reply.get("is_permanent")):
        return "Call permission granted (always)"
    until = parse_timestamp(reply.get("expiration_timestamp"))
    if until is None:
        return "Call permission granted"
    return f"Call permission granted until {until:%Y-%m-%d %H:%M} UTC"


def _summary_button(payload: dict, message: dict) -> str:
    return _str(payload.get("text")) or _str(payload.get("payload")) or "Button reply"


def _summary_reaction(payload: dict, message: dict) -> str:
    return _str(payload.get("emoji")) or "Reaction removed"


def _summary_order(payload: dict, message: dict) -> str:
    items = [_dict(item) for item in _list(payload.get("product_items"))]
    count = sum(max(_int(item.get("quantity")) or 1, 1) for item in items)
    summary = f"Order: {count} item{'' if count == 1 else 's'}"
    note = _str(payload.get("text"))
    return f"{summary} ({note})" if note else summary


def _summary_system(payload: dict, message: dict) -> str:
    return _str(payload.get("body")) or "Account change"


def _summary_unsupported(payload: dict, message: dict) -> str:
    kind = _str(payload.get("type"))
    return f"Unsupported message ({kind})" if kind else "Unsupported message"


def _summary_edit(payload: dict, message: dict) -> str:
    # Coexistence numbers only: edit.message is the new content.
    new = _dict(payload.get("message"))
    inner = summarize_message(new) if new else ""
    return f"Edited: {inner}" if inner else "Message edited"


def _summary_revoke(payload: dict, message: dict) -> str:
    return "Message deleted"


_SUMMARIES = {
    "text": _summary_text,
    "image": _summary_media,
    "audio": _summary_media,
    "video": _summary_media,
    "document": _summary_media,
    "sticker": _summary_media,
    "location": _summary_location,
    "contacts": _summary_contacts,
    "interactive": _summary_interactive,
    "button": _summary_button,
    "reaction": _summary_reaction,
    "order": _summary_order,
    "system": _summary_system,
    "unsupported": _summary_unsupported,
    "edit": _summary_edit,
    "revoke": _summary_revoke,
}


def summarize_message(message: Mapping[str, Any]) -> str:
    """Return a readable one-line text for any inbound message object.

    The text body, a caption, a file name, a location's name, a button's
    title, ...; for unknown types "Unsupported message (<type>)".
    """
    message = _dict(message)
    kind = _str(message.get("type"))
    summary = _SUMMARIES.get(kind)
    if summary is None:
        # request_welcome, ephemeral, future types: a placeholder, never an
        # exception.
        return f"Unsupported message ({kind})" if kind else "Unsupported message"
    return summary(_dict(message.get(kind)), message)


# --- Messages, statuses, errors --------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where an item sits in the batch."""

    waba_id: str
    time: datetime | None
    field: str
    phone_number_id: str = ""
    display_phone_number: str = ""


def _media(kind: str, payload: dict) -> Media | None:
    if kind not in MEDIA_TYPES:
        return None
    return Media(
        id=_id(
            payload,
            "id",
            MEDIA_ID_MAX_LENGTH,
            name=f"{kind}.id",
            characters=_MEDIA_ID_CHARACTERS,
        ),
        mime_type=_code(payload, "mime_type", MIME_TYPE_MAX_LENGTH),
        sha256=_str(payload.get("sha256")),
        filename=_cut(
            _str(payload.get("filename")), FILENAME_MAX_LENGTH, keep_suffix=True
        ),
        caption=_str(payload.get("caption")),
        voice=_bool(payload.get("voice")),
        animated=_bool(payload.get("animated")),
        url=_str(payload.get("url")),
    )


def _context(raw: Any) -> Context | None:
    if not isinstance(raw, dict):
        return None
    product = _dict(raw.get("referred_product"))
    referred = {
        "catalog_id": _id(product, "catalog_id", META_ID_MAX_LENGTH),
        "product_retailer_id": _cut(
            _str(product.get("product_retailer_id")), META_ID_MAX_LENGTH
        ),
    }
    return Context(
        message_id=_id(raw, "id", WAMID_MAX_LENGTH, name="context.id"),
        from_=_str(raw.get("from")),
        forwarded=_bool(raw.get("forwarded")),
        frequently_forwarded=_bool(raw.get("frequently_forwarded")),
        referred_product=referred if any(referred.values()) else None,
    )


def _referral(raw: Any) -> Referral | None:
    if not isinstance(raw, dict):
        return None
    return Referral(
        source_id=_id(raw, "source_id", REFERRAL_SOURCE_ID_MAX_LENGTH),
        source_type=_str(raw.get("source_type")),
        source_url=_str(raw.get("source_url")),
        headline=_str(raw.get("headline")),
        body=_str(raw.get("body")),
        media_type=_str(raw.get("media_type")),
        image_url=_str(raw.get("image_url")),
        video_url=_str(raw.get("video_url")),
        thumbnail_url=_str(raw.get("thumbnail_url")),
        ctwa_clid=_id(raw, "ctwa_clid", CTWA_CLID_MAX_LENGTH),
        welcome_message=_str(_dict(raw.get("welcome_message")).get("text")),
        raw=raw,
    )


def _message(raw: Any, where: _Where, contacts: tuple[Contact, ...]) -> InboundMessage:
    if not isinstance(raw, dict):
        raise ValueError(f"message is not an object (got {type(raw).__name__})")
    wamid = _id(raw, "id", WAMID_MAX_LENGTH, name="id (wamid)")
    if not wamid:
        raise ValueError("message has no id (wamid)")
    kind = _code(raw, "type", MESSAGE_TYPE_MAX_LENGTH)
    from_wa_id = _id(raw, "from", WA_ID_MAX_LENGTH)
    from_user_id = _id(raw, "from_user_id", BSUID_MAX_LENGTH)
    contact = _match_contact(contacts, from_wa_id, from_user_id)
    if not (
        from_wa_id or from_user_id or (contact and (contact.wa_id or contact.user_id))
    ):
        raise ValueError("message names no sender (no from, from_user_id or contact)")
    # contacts[] is a list for type "contacts", an object for every other type.
    payload_raw = raw.get(kind) if kind else None
    payload = payload_raw if isinstance(payload_raw, dict) else {}
    if kind == "contacts" and isinstance(payload_raw, list):
        payload = {"contacts": payload_raw}

    reaction = None
    if kind == "reaction":
        reaction = Reaction(
            message_id=_id(
                payload, "message_id", WAMID_MAX_LENGTH, name="reaction.message_id"
            ),
            emoji=_code(payload, "emoji", EMOJI_MAX_LENGTH, name="reaction.emoji"),
        )
    system = None
    if kind == "system":
        system = SystemChange(
            type=_str(payload.get("type")),
            body=_str(payload.get("body")),
            # Older payloads name the new number "new_wa_id".
            new_wa_id=_id(payload, "wa_id", WA_ID_MAX_LENGTH, name="system.wa_id")
            or _id(payload, "new_wa_id", WA_ID_MAX_LENGTH, name="system.new_wa_id"),
            new_user_id=_id(
                payload, "user_id", BSUID_MAX_LENGTH, name="system.user_id"
            ),
        )
    return InboundMessage(
        waba_id=where.waba_id,
        phone_number_id=where.phone_number_id,
        display_phone_number=where.display_phone_number,
        wamid=wamid,
        type=kind,
        timestamp=parse_timestamp(raw.get("timestamp")),
        from_wa_id=from_wa_id,
        from_user_id=from_user_id,
        group_id=_id(raw, "group_id", WAMID_MAX_LENGTH),
        contact=contact,
        text=summarize_message(raw),
        payload=payload,
        media=_media(kind, payload),
        context=_context(raw.get("context")),
        referral=_referral(raw.get("referral")),
        reaction=reaction,
        system=system,
        errors=_errors(raw.get("errors")),
        raw=raw,
    )


def _echo(raw: Any, where: _Where) -> MessageEcho:
    if not isinstance(raw, dict):
        raise ValueError(f"message echo is not an object (got {type(raw).__name__})")
    wamid = _id(raw, "id", WAMID_MAX_LENGTH, name="id (wamid)")
    if not wamid:
        raise ValueError("message echo has no id (wamid)")
    to_wa_id = "".join(ch for ch in _str(raw.get("to")) if ch.isdigit())
    to_user_id = _id(raw, "to_user_id", BSUID_MAX_LENGTH) or _id(
        raw, "recipient_user_id", BSUID_MAX_LENGTH
    )
    if not (to_wa_id or to_user_id):
        raise ValueError("message echo names no customer (no to or to_user_id)")
    kind = _code(raw, "type", MESSAGE_TYPE_MAX_LENGTH)
    payload = raw.get(kind) if kind else None
    return MessageEcho(
        waba_id=where.waba_id,
        phone_number_id=where.phone_number_id,
        display_phone_number=where.display_phone_number,
        wamid=wamid,
        type=kind,
        timestamp=parse_timestamp(raw.get("timestamp")),
        to_wa_id=_cut(to_wa_id, WA_ID_MAX_LENGTH),
        to_user_id=to_user_id,
        text=summarize_message(raw),
        payload=payload if isinstance(payload, dict) else {},
        raw=raw,
    )


def _history_chunk(raw: Any, where: _Where) -> HistoryChunk:
    if not isinstance(raw, dict):
        raise ValueError(f"history is not an object (got {type(raw).__name__})")
    metadata = _dict(raw.get("metadata"))
    business = "".join(ch for ch in where.display_phone_number if ch.isdigit())
    threads = []
    for thread in _list(raw.get("threads")):
        thread = _dict(thread)
        wa_id = _id(thread, "id", WA_ID_MAX_LENGTH, name="threads[].id")
        messages = tuple(
            _history_message(message, business)
            for message in _list(thread.get("messages"))
            if isinstance(message, dict)
        )
        if wa_id:
            threads.append((wa_id.lstrip("+"), messages))
    return HistoryChunk(
        waba_id=where.waba_id,
        phone_number_id=where.phone_number_id,
        display_phone_number=where.display_phone_number,
        phase=_int(metadata.get("phase")),
        chunk_order=_int(metadata.get("chunk_order")),
        progress=_int(metadata.get("progress")),
        threads=tuple(threads),
        errors=_errors(raw.get("errors")),
        raw=raw,
    )


def _history_message(raw: dict, business_digits: str) -> HistoryMessage:
    wamid = _id(raw, "id", WAMID_MAX_LENGTH, name="id (wamid)")
    if not wamid:
        raise ValueError("history message has no id (wamid)")
    sender = "".join(ch for ch in _str(raw.get("from")) if ch.isdigit())
    # Echoes of the business's app name the customer in `to`.
    from_business = bool(raw.get("to")) or (bool(sender) and sender == business_digits)
    kind = _code(raw, "type", MESSAGE_TYPE_MAX_LENGTH)
    payload = raw.get(kind) if kind else None
    return HistoryMessage(
        wamid=wamid,
        from_business=from_business,
        type=kind,
        text=summarize_message(raw),
        timestamp=parse_timestamp(raw.get("timestamp")),
        payload=payload if isinstance(payload, dict) else {},
        status=_str(_dict(raw.get("history_context")).get("status")).lower(),
        media=_media(kind, payload) if isinstance(payload, dict) else None,
    )


def _pricing(raw: Any) -> Pricing | None:
    if not isinstance(raw, dict):
        return None
    billable = raw.get("billable")
    # The charge is priced from the raw object (Message.pricing): its codes
    # must fit MessageCharge's columns as they are.
    return Pricing(
        billable=billable if isinstance(billable, bool) else None,
        pricing_model=_str(raw.get("pricing_model")),
        category=_code(
            raw, "category", PRICING_CODE_MAX_LENGTH, name="pricing.category"
        ),
        type=_code(raw, "type", PRICING_CODE_MAX_LENGTH, name="pricing.type"),
        raw=raw,
    )


def _status_conversation(raw: Any) -> StatusConversation | None:
    if not isinstance(raw, dict):
        return None
    return StatusConversation(
        id=_str(raw.get("id")),
        expiration_timestamp=parse_timestamp(raw.get("expiration_timestamp")),
        origin_type=_str(_dict(raw.get("origin")).get("type")),
        raw=raw,
    )


def _status(raw: Any, where: _Where, contacts: tuple[Contact, ...]) -> StatusUpdate:
    if not isinstance(raw, dict):
        raise ValueError(f"status is not an object (got {type(raw).__name__})")
    wamid = _id(raw, "id", WAMID_MAX_LENGTH, name="id (wamid)")
    if not wamid:
        raise ValueError("status has no id (wamid)")
    status = _code(raw, "status", STATUS_MAX_LENGTH)
    if not status:
        raise ValueError("status has no status value")
    # A wa_id, or a group's id for group sends.
    recipient_id = _id(raw, "recipient_id", WAMID_MAX_LENGTH)
    recipient_user_id = _id(raw, "recipient_user_id", BSUID_MAX_LENGTH)
    return StatusUpdate(
        waba_id=where.waba_id,
        phone_number_id=where.phone_number_id,
        display_phone_number=where.display_phone_number,
        wamid=wamid,
        status=status,
        timestamp=parse_timestamp(raw.get("timestamp")),
        recipient_id=recipient_id,
        recipient_user_id=recipient_user_id,
        recipient_type=_str(raw.get("recipient_type")),
        recipient_participant_id=_id(raw, "recipient_participant_id", WAMID_MAX_LENGTH),
        biz_opaque_callback_data=_code(
            raw, "biz_opaque_callback_data", CALLBACK_DATA_MAX_LENGTH
        ),
        pricing=_pricing(raw.get("pricing")),
        conversation=_status_conversation(raw.get("conversation")),
        errors=_errors(raw.get("errors")),
        contact=_match_contact(contacts, recipient_id, recipient_user_id),
        raw=raw,
    )


def _account_error(raw: Any, where: _Where) -> AccountError:
    if not isinstance(raw, dict):
        raise ValueError(f"error is not an object (got {type(raw).__name__})")
    return AccountError(
        waba_id=where.waba_id,
        phone_number_id=where.phone_number_id,
        display_phone_number=where.display_phone_number,
        error=_error(raw),
        raw=raw,
    )


def _user_preference(
    raw: Any, where: _Where, contacts: tuple[Contact, ...]
) -> UserPreferenceUpdate:
    if not isinstance(raw, dict):
        raise ValueError(f"user preference is not an object (got {type(raw).__name__})")
    wa_id = _id(raw, "wa_id", WA_ID_MAX_LENGTH)
    user_id = _id(raw, "user_id", BSUID_MAX_LENGTH)
    if not (wa_id or user_id):
        raise ValueError("user preference names no customer (no wa_id or user_id)")
    return UserPreferenceUpdate(
        waba_id=where.waba_id,
        phone_number_id=where.phone_number_id,
        display_phone_number=where.display_phone_number,
        wa_id=wa_id,
        user_id=user_id,
        category=_str(raw.get("category")),
        value=_str(raw.get("value")),
        detail=_str(raw.get("detail")),
        timestamp=parse_timestamp(raw.get("timestamp")),
        contact=_match_contact(contacts, wa_id, user_id),
        raw=raw,
    )


# --- Change fields -----------------------------------------------------------


def _unparsable(
    kind: str, error: Exception | str, raw: Any, where: _Where
) -> UnparsableItem:
    return UnparsableItem(
        kind=kind,
        error=_cut(str(error) or type(error).__name__, ERROR_MAX_LENGTH),
        raw=raw,
        waba_id=where.waba_id,
        field=where.field,
        phone_number_id=where.phone_number_id,
    )


def _each(
    kind: str, raws: list[Any], where: _Where, read: Callable[[Any], Item]
) -> list[Item]:
    """Read every item of a list, turning one bad item into an UnparsableItem."""
    items: list[Item] = []
    for raw in raws:
        try:
            items.append(read(raw))
        # One bad item must not sink the batch: keep it, say why.
        except Exception as exc:
            items.append(_unparsable(kind, exc, raw, where))
    return items


def _messages_change(value: dict, where: _Where) -> list[Item]:
    metadata = _dict(value.get("metadata"))
    where = _Where(
        waba_id=where.waba_id,
        time=where.time,
        field=where.field,
        phone_number_id=_id(
            metadata, "phone_number_id", META_ID_MAX_LENGTH, name="phone_number_id"
        ),
        display_phone_number=_str(metadata.get("display_phone_number")),
    )
    items: list[Item] = []
    contacts: list[Contact] = []
    for raw in _list(value.get("contacts")):
        if not isinstance(raw, dict):
            continue
        # A contact with a bad id is kept out (and reported); a message
        # that needs it for its sender becomes unparsable in turn.
        try:
            contacts.append(_contact(raw))
        except ValueError as exc:
            items.append(_unparsable("contact", exc, raw, where))
    found = False
    # A value holds messages, statuses or errors, but nothing
    # forbids several, so all three are read.
    known = tuple(contacts)
    for key, kind, read in (
        ("messages", "message", lambda raw: _message(raw, where, known)),
        ("statuses", "status", lambda raw: _status(raw, where, known)),
        ("message_echoes", "message_echo", lambda raw: _echo(raw, where)),
        ("history", "history_chunk", lambda raw: _history_chunk(raw, where)),
        ("errors", "error", lambda raw: _account_error(raw, where)),
        (
            "user_preferences",
            "user_preference",
            lambda raw: _user_preference(raw, where, known),
        ),
    ):
        if key not in value:
            continue
        found = True
        raws = value[key]
        if not isinstance(raws, list):
            items.append(_unparsable(kind, f"value.{key} is not a list", raws, where))
            continue
        items.extend(_each(kind, raws, where, read))
    if not found:
        items.append(
            UnhandledChange(
                waba_id=where.waba_id, time=where.time, field=where.field, value=value
            )
        )
    return items


def _template_ids(value: dict) -> dict[str, str]:
    return {
        # An integer in Meta's examples; kept as text like every other id.
        "message_template_id": _id(value, "message_template_id", META_ID_MAX_LENGTH),
        "message_template_name": _code(
            value, "message_template_name", TEMPLATE_NAME_MAX_LENGTH
        ),
        "message_template_language": _code(
            value, "message_template_language", LANGUAGE_MAX_LENGTH
        ),
    }


def _template_status(value: dict, where: _Where) -> TemplateStatusUpdate:
    other = _dict(value.get("other_info"))
    rejection = _dict(value.get("rejection_info"))
    return TemplateStatusUpdate(
        waba_id=where.waba_id,
        time=where.time,
        event=_str(value.get("event")),
        **_template_ids(value),
        reason=_str(value.get("reason")),
        message_template_category=_str(value.get("message_template_category")),
        disable_date=_str(_dict(value.get("disable_info")).get("disable_date")),
        other_info_title=_str(other.get("title")),
        other_info_description=_str(other.get("description")),
        rejection_reason=_str(rejection.get("reason")),
        rejection_recommendation=_str(rejection.get("recommendation")),
        previous_quality_score=_str(value.get("previous_quality_score")),
        new_quality_score=_str(value.get("new_quality_score")),
        raw=value,
    )


def _template_quality(value: dict, where: _Where) -> TemplateQualityUpdate:
    return TemplateQualityUpdate(
        waba_id=where.waba_id,
        time=where.time,
        **_template_ids(value),
        previous_quality_score=_str(value.get("previous_quality_score")),
        new_quality_score=_str(value.get("new_quality_score")),
        raw=value,
    )


def _template_category(value: dict, where: _Where) -> TemplateCategoryUpdate:
    return TemplateCategoryUpdate(
        waba_id=where.waba_id,
        time=where.time,
        **_template_ids(value),
        previous_category=_str(value.get("previous_category")),
        new_category=_str(value.get("new_category")),
        correct_category=_str(value.get("correct_category")),
        category_update_timestamp=parse_timestamp(
            value.get("category_update_timestamp")
        ),
        raw=value,
    )


def _phone_quality(value: dict, where: _Where) -> PhoneNumberQualityUpdate:
    return PhoneNumberQualityUpdate(
        waba_id=where.waba_id,
        time=where.time,
        display_phone_number=_str(value.get("display_phone_number")),
        event=_str(value.get("event")),
        current_limit=_str(value.get("current_limit")),
        old_limit=_str(value.get("old_limit")),
        max_daily_conversation_per_phone=_int(
            value.get("max_daily_conversation_per_phone")
        ),
        max_daily_conversations_per_business=_str(
            value.get("max_daily_conversations_per_business")
        ),
        raw=value,
    )


def _account_update(value: dict, where: _Where) -> AccountUpdate:
    ban_info = value.get("ban_info")
    violation_info = value.get("violation_info")
    waba_info = value.get("waba_info")
    # PARTNER_* events come with the partner's id in entry.id and the
    # customer's WABA in waba_info.waba_id: the WABA is what they are about.
    waba_id = _id(_dict(waba_info), "waba_id", META_ID_MAX_LENGTH, name="waba_id")
    return AccountUpdate(
        waba_id=waba_id or where.waba_id,
        time=where.time,
        event=_str(value.get("event")),
        phone_number=_str(value.get("phone_number")),
        ban_state=_str(_dict(ban_info).get("waba_ban_state")),
        ban_date=_str(_dict(ban_info).get("waba_ban_date")),
        violation_type=_str(_dict(violation_info).get("violation_type")),
        restrictions=tuple(
            item
            for item in _list(value.get("restriction_info"))
            if isinstance(item, dict)
        ),
        country=_str(value.get("country")),
        ban_info=ban_info if isinstance(ban_info, dict) else None,
        violation_info=violation_info if isinstance(violation_info, dict) else None,
        waba_info=waba_info if isinstance(waba_info, dict) else None,
        raw=value,
    )


_SINGLE_VALUE_FIELDS = {
    "message_template_status_update": _template_status,
    "message_template_quality_update": _template_quality,
    "template_category_update": _template_category,
    "phone_number_quality_update": _phone_quality,
    "account_update": _account_update,
}

# Fields whose value has messaging_product/metadata and lists of items.
_MESSAGES_FIELDS = frozenset(
    {"messages", "user_preferences", "smb_message_echoes", "history"}
)


def _change(raw: Any, waba_id: str, time: datetime | None) -> list[Item]:
    where = _Where(waba_id=waba_id, time=time, field="")
    if not isinstance(raw, dict):
        return [_unparsable("change", "change is not an object", raw, where)]
    field_name = _str(raw.get("field"))
    where = _Where(waba_id=waba_id, time=time, field=field_name)
    value = raw.get("value")
    if field_name not in _MESSAGES_FIELDS and field_name not in _SINGLE_VALUE_FIELDS:
        return [UnhandledChange(waba_id, time, field_name, value, raw=raw)]
    if not isinstance(value, dict):
        return [
            _unparsable("change", f"{field_name!r} value is not an object", raw, where)
        ]
    try:
        if field_name in _MESSAGES_FIELDS:
            return _messages_change(value, where)
        return [_SINGLE_VALUE_FIELDS[field_name](value, where)]
    except Exception as exc:  # one bad change must not sink the batch
        return [_unparsable("change", exc, raw, where)]


def _entry(raw: Any) -> list[Item]:
    if not isinstance(raw, dict):
        where = _Where(waba_id="", time=None, field="")
        return [_unparsable("entry", "entry is not an object", raw, where)]
    time = parse_timestamp(raw.get("time"))
    try:
        waba_id = _id(raw, "id", META_ID_MAX_LENGTH, name="entry.id (WABA)")
    except ValueError as exc:
        return [_unparsable("entry", exc, raw, _Where(waba_id="", time=time, field=""))]
    changes = raw.get("changes")
    if not isinstance(changes, list):
        where = _Where(waba_id=waba_id, time=time, field="")
        return [_unparsable("entry", "entry.changes is not a list", raw, where)]
    items: list[Item] = []
    for change in changes:
        try:
            items.extend(_change(change, waba_id, time))
        except Exception as exc:  # a last guard: keep the change, say why
            where = _Where(waba_id=waba_id, time=time, field="")
            items.append(_unparsable("change", exc, change, where))
    return items


def parse(body: bytes | bytearray | memoryview | str) -> WebhookBatch:
    """Parse a webhook POST body into a WebhookBatch.

    Raise MalformedPayload when the body is not JSON, nests deeper than
    MAX_DEPTH, is not an object, its ``object`` is
    not "whatsapp_business_account" or its ``entry`` is not a list. Anything
    wrong deeper down becomes an UnparsableItem in the batch. Every string
    of the result is clean (see the module's docstring).
    """
    if isinstance(body, memoryview | bytearray):
        # BinaryField reads back as memoryview on PostgreSQL.
        body = bytes(body)
    try:
        document = json.loads(body, parse_float=_finite, parse_constant=_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = _cut(str(exc), ERROR_MAX_LENGTH)
        raise MalformedPayload(f"Body is not valid JSON: {reason}") from exc
    try:
        document = _clean(document)
    except _TooDeep:
        raise MalformedPayload(
            f"Body nests deeper than {MAX_DEPTH} levels; Meta's never do."
        ) from None
    if not isinstance(document, dict):
        raise MalformedPayload(
            f"Body is a JSON {type(document).__name__}, not an object."
        )
    if document.get("object") != OBJECT:
        shown = _cut(repr(document.get("object")), 80)
        raise MalformedPayload(f"Body's object is {shown}, not {OBJECT!r}.")
    entries = document.get("entry")
    if not isinstance(entries, list):
        raise MalformedPayload("Body's entry is missing or not a list.")
    items: list[Item] = []
    for entry in entries:
        items.extend(_entry(entry))
    return WebhookBatch(items=tuple(items))


# --- Signature -----------------------------------------------------------------

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


def signature_header(body: bytes, secret: str) -> str:
    """Return the X-Hub-Signature-256 value Meta would send for body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    body: bytes, header: str | None, secrets: Iterable[str]
) -> str | None:
    """Return the app secret whose HMAC-SHA256 of body matches header, or None.

    ``header`` is the X-Hub-Signature-256 value, ``sha256=<64 hex>``. The HMAC
    is taken over the raw bytes as received: Meta escapes non-ASCII text as
    \\uXXXX before signing, so re-serialised JSON would not match.
    Several apps may post to one endpoint, each signing with its own secret.
    """
    if not header:
        return None
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return None
    expected = match.group(1).lower().encode()
    if isinstance(body, memoryview | bytearray):
        body = bytes(body)
    found = None
    for secret in secrets:
        # An empty secret is a misconfigured app, never a match.
        if not secret:
            continue
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(digest, expected) and found is None:
            found = secret
    return found


# --- Interactive messages out: Meta's shapes and limits ------------------------
# Reply buttons and lists the helpdesk sends (the workspace's composer, the
# satisfaction survey); kept here with Meta's other JSON.

# Meta's limits of interactive messages (reply buttons and lists).
BUTTONS_MAX = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
BUTTONS_BODY_MAX = 1024
LIST_ROWS_MAX = 10
LIST_SECTIONS_MAX = 10
LIST_ROW_TITLE_MAX = 24
LIST_ROW_ID_MAX = 200
LIST_ROW_DESCRIPTION_MAX = 72
LIST_BUTTON_MAX = 20
LIST_BODY_MAX = 4096
SECTION_TITLE_MAX = 24
HEADER_TEXT_MAX = 60
FOOTER_MAX = 60


def interactive_buttons(*, body: str, buttons: list[tuple[str, str]]) -> dict:
    """Meta's `interactive` object of reply buttons: (id, title) each."""
    return {
        "type": "button",
        "body": {"text": body},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": button_id, "title": title}}
                for button_id, title in buttons
            ]
        },
    }


def interactive_list(
    *, body: str, button: str, rows: list[tuple], section: str = ""
) -> dict:
    """Meta's `interactive` object of a list message with one section: rows
    are (id, title) or (id, title, description); the caller keeps Meta's
    limits (outbound checks them again before the send)."""
    return {
        "type": "list",
        "body": {"text": body},
        "action": {
            "button": button,
            "sections": [
                {
                    **({"title": section} if section else {}),
                    "rows": [
                        {
                            "id": row[0],
                            "title": row[1],
                            **(
                                {"description": row[2]}
                                if len(row) > 2 and row[2]
                                else {}
                            ),
                        }
                        for row in rows
                    ],
                }
            ],
        },
    }


# What a body holds, by a look at its bytes rather than a parse: the webhook
# endpoint answers Meta in milliseconds and parses nothing. A customer's
# message is a "messages" array in a messages change; a status webhook holds
# a "statuses" array instead. A body that fools the look (keys written with
# escapes) is only claimed in another order: processing parses it in full.
BODY_HOLDS_MESSAGES = "messages"
BODY_HOLDS_STATUSES = "statuses"
BODY_HOLDS_OTHER = "other"


# A key, not the value "messages" of every change's "field" (a quote inside a
# JSON string is always escaped, so text cannot fake either).
_MESSAGES_KEY = re.compile(rb'"messages"\s*:')
_STATUSES_KEY = re.compile(rb'"statuses"\s*:')


def body_holds(body: bytes) -> str:
    """BODY_HOLDS_MESSAGES, _STATUSES or _OTHER for a raw webhook body."""
    if _MESSAGES_KEY.search(body):
        return BODY_HOLDS_MESSAGES
    if _STATUSES_KEY.search(body):
        return BODY_HOLDS_STATUSES
    return BODY_HOLDS_OTHER
