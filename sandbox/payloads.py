"""Meta's webhook JSON: envelopes, inbound messages, statuses, signatures."""

import base64
import hashlib
import hmac
import json
import secrets
import time

from .config import Number


def new_wamid(wa_id: str) -> str:
    """A message id shaped like Meta's: 'wamid.' and base64 of opaque bytes."""
    raw = (
        b"\x18\x0b" + wa_id.encode() + b"\x15\x02\x00\x12\x18" + secrets.token_bytes(16)
    )
    return "wamid.HBgL" + base64.b64encode(raw).decode()


def serialise(payload: dict) -> bytes:
    """Encode JSON as Meta does: compact, non-ASCII as \\uXXXX, '/' as '\\/'.

    Receivers must hash these exact bytes; re-serialising the parsed JSON
    gives different bytes, which is the mistake this catches.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    # '/' occurs only inside JSON strings, where '\/' is a valid escape.
    return text.replace("/", "\\/").encode("ascii")


def sign(body: bytes, app_secret: str) -> str:
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(body: bytes, signature: str, app_secret: str) -> bool:
    return hmac.compare_digest(sign(body, app_secret), signature or "")


def envelope(changes: list[tuple[Number, str, dict]]) -> dict:
    """Group (number, field, value) changes into Meta's entry[] by WABA id."""
    entries: dict[str, dict] = {}
    for number, field_name, value in changes:
        entry = entries.setdefault(
            number.waba_id, {"id": number.waba_id, "changes": []}
        )
        if field_name != "messages":
            # Meta stamps account-level events (template and quality
            # updates) with the entry's time; message events carry none.
            entry["time"] = now()
        entry["changes"].append({"value": value, "field": field_name})
    return {"object": "whatsapp_business_account", "entry": list(entries.values())}


def messages_value(number: Number) -> dict:
    return {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": number.display_digits,
            "phone_number_id": number.phone_number_id,
        },
    }


def contact(wa_id: str, name: str, user_id: str = "") -> dict:
    entry = {"profile": {"name": name}, "wa_id": wa_id}
    if user_id:
        entry["user_id"] = user_id
    return entry


def inbound_value(number: Number, contacts: list[dict], messages: list[dict]) -> dict:
    value = messages_value(number)
    if contacts:
        value["contacts"] = contacts
    value["messages"] = messages
    return value


def status_value(number: Number, statuses: list[dict], contacts: list[dict]) -> dict:
    value = messages_value(number)
    if contacts:
        value["contacts"] = contacts
    value["statuses"] = statuses
    return value


def pricing(category: str, pricing_type: str) -> dict:
    return {
        "billable": pricing_type == "regular",
        "pricing_model": "PMP",
        "category": category,
        "type": pricing_type,
    }


def status(
    *,
    wamid: str,
    status_name: str,
    recipient_id: str,
    timestamp: int,
    recipient_user_id: str = "",
    pricing_info: dict | None = None,
    conversation: dict | None = None,
    callback_data: str = "",
    errors: list[dict] | None = None,
) -> dict:
    item = {
        "id": wamid,
        "status": status_name,
        "timestamp": str(timestamp),
        "recipient_id": recipient_id,
    }
    if recipient_user_id:
        item["recipient_user_id"] = recipient_user_id
    if conversation:
        item["conversation"] = conversation
    if pricing_info:
        item["pricing"] = pricing_info
    if callback_data:
        item["biz_opaque_callback_data"] = callback_data
    if errors:
        item["errors"] = errors
    return item


def template_status_value(template: dict, event: str, reason: str | None) -> dict:
    value = {
        "event": event,
        "message_template_id": int(template["id"]),
        "message_template_name": template["name"],
        "message_template_language": template["language"],
        "reason": reason,
        "message_template_category": template["category"],
    }
    if event == "PAUSED":
        value["other_info"] = {
            "title": "FIRST_PAUSE",
            "description": "Your template has been paused for 3 hours because of "
            "low quality.",
        }
    return value


def now() -> int:
    return int(time.time())
