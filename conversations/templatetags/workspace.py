"""Small filters of the agent workspace's templates."""

from django import template
from django.urls import NoReverseMatch, reverse

from .. import workspace

register = template.Library()

# The agents' media view (built with the inbound API); tried in order.
MEDIA_URL_NAMES = ("conversations:message-media", "conversations:media")


@register.filter
def epoch_ms(value) -> int:
    """A datetime as milliseconds since the epoch (for scripts), 0 if empty."""
    return int(value.timestamp() * 1000) if value else 0


@register.filter
def safe_url(value) -> str:
    """Only absolute http(s) links survive; anything else becomes ""."""
    return workspace.safe_url(value)


@register.filter
def media_url(message) -> str:
    """The authenticated URL of a message's stored media, or ""."""
    if not message.media_file:
        return ""
    for name in MEDIA_URL_NAMES:
        try:
            return reverse(name, args=[message.pk])
        except NoReverseMatch:
            continue
    return ""


@register.filter
def get_item(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def template_parameters(message) -> list[str]:
    """The text parameters a template message was sent with, in order."""
    values = []
    payload = message.payload if isinstance(message.payload, dict) else {}
    for component in payload.get("components") or []:
        for parameter in component.get("parameters") or []:
            if isinstance(parameter, dict) and parameter.get("type") == "text":
                values.append(str(parameter.get("text", "")))
    return values


@register.filter
def contact_cards(message) -> list[dict]:
    payload = message.payload if isinstance(message.payload, dict) else {}
    cards = []
    for raw in payload.get("contacts") or []:
        if not isinstance(raw, dict):
            continue
        name = (raw.get("name") or {}).get("formatted_name", "")
        phones = [
            str(phone.get("phone") or phone.get("wa_id") or "")
            for phone in raw.get("phones") or []
            if isinstance(phone, dict)
        ]
        cards.append({"name": str(name), "phones": phones})
    return cards


@register.filter
def interactive_reply(message) -> str:
    payload = message.payload if isinstance(message.payload, dict) else {}
    for key in ("button_reply", "list_reply", "nfm_reply"):
        reply = payload.get(key)
        if isinstance(reply, dict):
            return str(reply.get("title") or reply.get("body") or reply.get("name"))
    return message.text


@register.filter
def map_link(message) -> str:
    payload = message.payload if isinstance(message.payload, dict) else {}
    try:
        lat = float(payload["latitude"])
        lng = float(payload["longitude"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lng:.6f}#map=16/{lat:.6f}/{lng:.6f}"


MEDIA_KINDS = {"image", "sticker", "audio", "video", "document"}


@register.filter
def is_media(message) -> bool:
    return message.type in MEDIA_KINDS
