"""Small filters of the agent workspace's templates."""

from django import template
from django.urls import NoReverseMatch, reverse

from ..web import context

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
    return context.safe_url(value)


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
    """What a template message was sent with, in order: header media, texts,
    amounts and dates (their fallback text, as the phone shows it)."""
    values = []
    payload = message.payload if isinstance(message.payload, dict) else {}
    for component in payload.get("components") or []:
        if not isinstance(component, dict):
            continue
        for parameter in component.get("parameters") or []:
            if isinstance(parameter, dict):
                value = _parameter_text(parameter)
                if value:
                    values.append(value)
    return values


def _parameter_text(parameter: dict) -> str:
    kind = parameter.get("type")
    value = parameter.get(kind) if isinstance(kind, str) else None
    if kind == "text":
        return str(parameter.get("text", ""))
    if not isinstance(value, dict):
        return ""
    if kind in {"currency", "date_time"}:
        return str(value.get("fallback_value", ""))
    if kind in {"image", "video", "document"}:
        # A link's last segment names the file when no file name was given.
        link = str(value.get("link", "")).split("?")[0].rstrip("/")
        name = value.get("filename") or link.rsplit("/", 1)[-1]
        return f"{kind.capitalize()}: {name}" if name else kind.capitalize()
    if kind == "location":
        place = value.get("name") or value.get("address")
        return f"Location: {place}" if place else "Location"
    return ""


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


# What the business sent in an interactive message, by Meta's type.
INTERACTIVE_LABELS = {
    "button": "Buttons",
    "list": "List",
    "cta_url": "Link button",
    "flow": "Form",
    "location_request_message": "Asked for the location",
}


@register.filter
def interactive_sent(message) -> dict:
    """An outbound interactive message's kind and the options it offered."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    action = payload.get("action") if isinstance(payload.get("action"), dict) else {}
    kind = payload.get("type")
    label = INTERACTIVE_LABELS.get(kind, "Interactive message")
    if kind == "button":
        options = [
            (button.get("reply") or {}).get("title", "")
            for button in action.get("buttons") or []
            if isinstance(button, dict)
        ]
    elif kind == "list":
        if action.get("button"):
            label = f"List ({action['button']})"
        options = [
            row.get("title", "")
            for section in action.get("sections") or []
            if isinstance(section, dict)
            for row in section.get("rows") or []
            if isinstance(row, dict)
        ]
    else:
        parameters = action.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        options = [parameters.get("display_text") or parameters.get("flow_cta") or ""]
    return {"label": label, "options": [str(option) for option in options if option]}


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


@register.filter
def initials(name) -> str:
    """Up to two initials for an avatar ("Anna Schmidt" → "AS"); a number
    (a customer known only by phone) gives its last two digits."""
    words = [word for word in str(name or "").split() if word]
    if not words:
        return "?"
    if not any(char.isalpha() for char in words[0]):
        digits = "".join(char for char in "".join(words) if char.isdigit())
        return digits[-2:] or "?"
    letters = [word[0] for word in words if word[0].isalpha()]
    return "".join(letters[:1] + letters[1:][-1:]).upper() or "?"


@register.filter
def avatar_hue(value) -> int:
    """One of eight hues for an avatar, the same for the same customer."""
    return int(value or 0) % 8
