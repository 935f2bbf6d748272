"""Customer messages in Meta's inbound shape, built from short descriptions.

A description names a `type` and a few fields; everything Meta would add
(wamid, timestamp, media ids, sha256, url) is filled in. The `message` key,
if present, is merged over the result last, so a test can send any shape.
"""

import base64
import json

from .media import PLACEHOLDER_BYTES

MEDIA_TYPES = {"image", "audio", "voice", "video", "document", "sticker"}
INBOUND_TYPES = MEDIA_TYPES | {
    "text",
    "location",
    "contacts",
    "button_reply",
    "list_reply",
    "nfm_reply",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
    "edit",
    "revoke",
}
# A customer's change to a message they sent (numbers shared with the
# WhatsApp Business app): the change has a wamid of its own and names the
# original in `original_message_id`.
CHANGE_TYPES = {"edit", "revoke"}

SAMPLE_REFERRAL = {
    "source_url": "https://fb.me/sandbox-ad",
    "source_id": "120210000000000001",
    "source_type": "ad",
    "headline": "Spring sale: 20% off",
    "body": "Chat with us on WhatsApp for your discount code.",
    "media_type": "image",
    "image_url": "https://example.com/ads/spring.jpg",
    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4Xvnx",
    "welcome_message": {"text": "Hi! Tell us what you are looking for."},
}

SAMPLE_CONTACT = {
    "name": {
        "formatted_name": "Jo Example",
        "first_name": "Jo",
        "last_name": "Example",
    },
    "phones": [{"phone": "+49 170 1234567", "wa_id": "491701234567", "type": "CELL"}],
    "emails": [{"email": "jo@example.com", "type": "WORK"}],
}


class DescriptionError(ValueError):
    """A description the sandbox cannot turn into a message."""


def _require(description: dict, *keys: str):
    missing = [key for key in keys if description.get(key) in (None, "")]
    if missing:
        kind = description["type"]
        raise DescriptionError(f"a {kind} message needs {', '.join(missing)}")


def build_message(
    description: dict, *, wamid: str, from_wa_id: str, timestamp: int, store_media
) -> dict:
    """Meta's `messages[]` item for a description.

    store_media(kind, data, mime_type, filename, media_id) stores or looks up
    the bytes and returns a dict with id, mime_type, sha256 and url.
    """
    kind = description.get("type", "text")
    if kind not in INBOUND_TYPES:
        raise DescriptionError(
            f"unknown type {kind!r}; one of {', '.join(sorted(INBOUND_TYPES))}"
        )
    description = {**description, "type": kind}
    message = {"from": from_wa_id, "id": wamid, "timestamp": str(timestamp)}
    builder = _BUILDERS.get(kind)
    if kind in MEDIA_TYPES:
        message.update(_media(description, store_media))
    else:
        message.update(builder(description))
    context = _context(description)
    if context:
        message["context"] = context
    referral = description.get("referral")
    if referral:
        message["referral"] = (
            dict(SAMPLE_REFERRAL)
            if referral is True
            else {**SAMPLE_REFERRAL, **referral}
        )
    _add_extras(description, message)
    message.update(description.get("message") or {})
    return message


# Meta's error on an inbound media message it could not take from the phone.
MEDIA_FAILED_ERROR = {
    "code": 131052,
    "title": "Media download error",
    "message": "Media download error",
    "error_data": {"details": "Unable to download the media sent by the user."},
}


def _add_extras(description: dict, message: dict) -> None:
    """What a description adds to any message: written in a group
    (`group_id`), asking about a catalog product (`product`: catalog_id,
    product_retailer_id), media Meta failed to take (`media_failed`)."""
    if description.get("group_id"):
        message["group_id"] = str(description["group_id"])
    product = description.get("product")
    if product:
        message["context"] = {
            "from": description.get("business_display_digits", ""),
            "id": "wamid.sandbox-catalog-message",
            "referred_product": {
                "catalog_id": str(product.get("catalog_id", "")),
                "product_retailer_id": str(product.get("product_retailer_id", "")),
            },
        }
    kind = message.get("type")
    if description.get("media_failed") and kind in MEDIA_TYPES:
        message[kind] = {"mime_type": message[kind]["mime_type"]}
        message["errors"] = [MEDIA_FAILED_ERROR]


def _context(description: dict) -> dict:
    context = {}
    reply_to = description.get("reply_to")
    if reply_to:
        context = {
            "from": description.get("business_display_digits", ""),
            "id": reply_to,
        }
    if description.get("forwarded"):
        context["forwarded"] = True
    if description.get("frequently_forwarded"):
        context["frequently_forwarded"] = True
    return context


def _text(description):
    _require(description, "text")
    return {"type": "text", "text": {"body": str(description["text"])}}


def _media(description, store_media):
    kind = description["type"]
    meta_type = "audio" if kind == "voice" else kind
    placeholder, default_mime = PLACEHOLDER_BYTES[kind]
    data = placeholder
    if description.get("data_base64"):
        data = base64.b64decode(description["data_base64"])
    filename = description.get("filename", "")
    if kind == "document" and not filename:
        filename = "document.pdf"
    stored = store_media(
        meta_type,
        data,
        description.get("mime_type", default_mime),
        filename,
        description.get("media_id", ""),
    )
    body = {
        "mime_type": stored["mime_type"],
        "sha256": stored["sha256"],
        "id": stored["id"],
        "url": stored["url"],
    }
    if kind in {"image", "video", "document"} and description.get("caption"):
        body["caption"] = str(description["caption"])
    if meta_type == "document":
        body["filename"] = stored.get("filename") or filename
    if meta_type == "audio":
        body["voice"] = kind == "voice" or bool(description.get("voice"))
    if kind == "sticker":
        body["animated"] = bool(description.get("animated"))
    return {"type": meta_type, meta_type: body}


def _location(description):
    # Inside a `location` object, since `name` at the top names the customer.
    fields = description.get("location") or {}
    if fields.get("latitude") is None or fields.get("longitude") is None:
        raise DescriptionError(
            "a location message needs location.latitude and .longitude"
        )
    location = {
        "latitude": float(fields["latitude"]),
        "longitude": float(fields["longitude"]),
    }
    for key in ("name", "address", "url"):
        if fields.get(key):
            location[key] = fields[key]
    return {"type": "location", "location": location}


def _contacts(description):
    return {
        "type": "contacts",
        "contacts": description.get("contacts") or [SAMPLE_CONTACT],
    }


def _button_reply(description):
    _require(description, "id", "title", "reply_to")
    reply = {"id": description["id"], "title": description["title"]}
    return {
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": reply},
    }


def _list_reply(description):
    _require(description, "id", "title", "reply_to")
    reply = {"id": description["id"], "title": description["title"]}
    if description.get("description"):
        reply["description"] = description["description"]
    return {
        "type": "interactive",
        "interactive": {"type": "list_reply", "list_reply": reply},
    }


def _nfm_reply(description):
    _require(description, "reply_to")
    response = description.get("response_json") or {"flow_token": "sandbox-flow-token"}
    if not isinstance(response, str):
        response = json.dumps(response)
    reply = {
        "name": description.get("name", "flow"),
        "body": description.get("body", "Sent"),
        "response_json": response,
    }
    return {
        "type": "interactive",
        "interactive": {"type": "nfm_reply", "nfm_reply": reply},
    }


def _button(description):
    _require(description, "text")
    text = str(description["text"])
    return {
        "type": "button",
        "button": {"payload": description.get("payload", text), "text": text},
    }


def _reaction(description):
    _require(description, "message_id")
    reaction = {"message_id": description["message_id"]}
    # Meta removes a reaction by sending no emoji at all.
    if description.get("emoji"):
        reaction["emoji"] = description["emoji"]
    return {"type": "reaction", "reaction": reaction}


def _order(description):
    items = description.get("product_items") or [
        {
            "product_retailer_id": "SKU-1",
            "quantity": 1,
            "item_price": 19.99,
            "currency": "EUR",
        }
    ]
    order = {
        "catalog_id": description.get("catalog_id", "300000000000001"),
        "text": description.get("text", ""),
        "product_items": items,
    }
    return {"type": "order", "order": order}


def _system(description):
    _require(description, "new_wa_id")
    new_wa_id = str(description["new_wa_id"])
    body = description.get("body") or (
        f"User {description['customer_name']} changed from "
        f"{description['old_wa_id']} to {new_wa_id}"
    )
    if description.get("new_user_id"):
        # A new number gives a new business-scoped user id too.
        system = {
            "body": body,
            "wa_id": new_wa_id,
            "user_id": str(description["new_user_id"]),
            "type": "user_changed_user_id",
        }
        return {"type": "system", "system": system}
    return {
        "type": "system",
        "system": {"body": body, "wa_id": new_wa_id, "type": "user_changed_number"},
    }


def _unsupported(description):
    unsupported_type = description.get("unsupported_type", "unknown")
    return {
        "type": "unsupported",
        "errors": [
            {
                "code": 131051,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": "Message type is currently not supported."},
            }
        ],
        "unsupported": {"type": unsupported_type},
    }


def _edit(description):
    # Meta's edit reference: the new content in edit.message, the original
    # by its wamid (text only here; Meta also lets a caption be edited).
    _require(description, "message_id", "text")
    new = {"type": "text", "text": {"body": str(description["text"])}}
    edit = {"original_message_id": str(description["message_id"]), "message": new}
    return {"type": "edit", "edit": edit}


def _revoke(description):
    _require(description, "message_id")
    revoke = {"original_message_id": str(description["message_id"])}
    return {"type": "revoke", "revoke": revoke}


_BUILDERS = {
    "text": _text,
    "location": _location,
    "contacts": _contacts,
    "button_reply": _button_reply,
    "list_reply": _list_reply,
    "nfm_reply": _nfm_reply,
    "button": _button,
    "reaction": _reaction,
    "order": _order,
    "system": _system,
    "unsupported": _unsupported,
    "edit": _edit,
    "revoke": _revoke,
}
