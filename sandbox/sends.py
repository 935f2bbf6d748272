"""Checks of POST /{phone-number-id}/messages bodies, as Meta makes them."""

from . import identity
from .errors import GraphError, invalid_parameter, missing_parameter

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
SEND_TYPES = MEDIA_TYPES + (
    "text",
    "template",
    "interactive",
    "reaction",
    "location",
    "contacts",
)
INTERACTIVE_TYPES = ("button", "list", "cta_url", "flow", "location_request_message")


def recipient_wa_id(to: str) -> str:
    """The wa_id Meta answers for a `to`: its digits, without '+'."""
    return "".join(ch for ch in to if ch.isdigit())


def check_send(body) -> str:
    """Check a send body; return its kind: 'message', 'mark_read' or 'typing'."""
    if not isinstance(body, dict):
        raise invalid_parameter("The request body must be a JSON object.")
    if body.get("messaging_product") != "whatsapp":
        raise GraphError(
            100,
            "The parameter messaging_product is required and must be 'whatsapp'.",
            message="(#100) The parameter messaging_product is required.",
        )
    if "status" in body:
        return _check_status_update(body)
    identity.check_addressee(body)
    kind = body.get("type", "text")
    if kind not in SEND_TYPES:
        raise invalid_parameter(
            f'Param type must be one of {{{", ".join(SEND_TYPES)}}} - got "{kind}".'
        )
    content = body.get(kind)
    expected = list if kind == "contacts" else dict
    if not isinstance(content, expected) or not content:
        raise missing_parameter(f"Parameter '{kind}' is required for type {kind}.")
    _CHECKS[kind](content)
    context = body.get("context")
    if context is not None:
        if kind == "reaction":
            raise invalid_parameter("Reactions cannot be sent as a contextual reply.")
        if not isinstance(context, dict) or not context.get("message_id"):
            raise missing_parameter("Parameter 'context.message_id' is required.")
    callback = body.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > 512):
        raise invalid_parameter(
            "Param biz_opaque_callback_data must be a string of at most 512 characters."
        )
    return "message"


def _check_status_update(body: dict) -> str:
    if body.get("status") != "read":
        raise invalid_parameter("Param status must be 'read'.")
    if not body.get("message_id"):
        raise missing_parameter("Parameter 'message_id' is required.")
    indicator = body.get("typing_indicator")
    if indicator is None:
        return "mark_read"
    if not isinstance(indicator, dict) or indicator.get("type") != "text":
        raise invalid_parameter("Param typing_indicator['type'] must be 'text'.")
    return "typing"


def _too_long(field: str, limit: int) -> GraphError:
    return invalid_parameter(f"Param {field} must be at most {limit} characters long.")


def _check_text(text: dict):
    body = text.get("body")
    if not isinstance(body, str) or not body:
        raise GraphError(
            100,
            "The parameter text['body'] is required.",
            message="(#100) The parameter text['body'] is required.",
        )
    if len(body) > TEXT_LIMIT:
        raise _too_long("text['body']", TEXT_LIMIT)
    if "preview_url" in text and not isinstance(text["preview_url"], bool):
        raise invalid_parameter("Param text['preview_url'] must be a boolean.")


def _media_checker(kind: str):
    def check(media: dict):
        has_id, has_link = bool(media.get("id")), bool(media.get("link"))
        if has_id and has_link:
            raise invalid_parameter(
                f"Param {kind} must have either id or link, not both."
            )
        if not has_id and not has_link:
            raise missing_parameter(
                f"Parameter '{kind}.id' or '{kind}.link' is required."
            )
        if has_link and not str(media["link"]).startswith(("http://", "https://")):
            raise invalid_parameter(f"Param {kind}['link'] must be an http(s) URL.")
        caption = media.get("caption")
        if caption is not None:
            if kind not in ("image", "video", "document"):
                raise invalid_parameter(f"Param {kind}['caption'] is not supported.")
            if len(str(caption)) > CAPTION_LIMIT:
                raise _too_long(f"{kind}['caption']", CAPTION_LIMIT)

    return check


def _check_template(template: dict):
    # The template store checks name, language and parameters; it needs the
    # number's WABA, which only the server knows.
    if not template.get("name"):
        raise missing_parameter("Parameter 'template.name' is required.")


def _check_interactive(interactive: dict):
    kind = interactive.get("type")
    if kind not in INTERACTIVE_TYPES:
        raise invalid_parameter(
            f"Param interactive['type'] must be one of {', '.join(INTERACTIVE_TYPES)}."
        )
    body = interactive.get("body") or {}
    if kind != "location_request_message" and not body.get("text"):
        raise missing_parameter("Parameter 'interactive.body.text' is required.")
    action = interactive.get("action")
    if not isinstance(action, dict):
        raise missing_parameter("Parameter 'interactive.action' is required.")
    footer = (interactive.get("footer") or {}).get("text", "")
    if len(footer) > 60:
        raise _too_long("interactive['footer']['text']", 60)
    if kind == "button":
        _check_reply_buttons(body, action)
    elif kind == "list":
        _check_list(body, action)
    elif kind == "cta_url":
        parameters = action.get("parameters") or {}
        if action.get("name") != "cta_url" or not parameters.get("url"):
            raise missing_parameter("Parameter 'action.parameters.url' is required.")
        if not parameters.get("display_text"):
            raise missing_parameter(
                "Parameter 'action.parameters.display_text' is required."
            )
    elif kind == "flow":
        parameters = action.get("parameters") or {}
        if action.get("name") != "flow":
            raise invalid_parameter("Param action['name'] must be 'flow'.")
        if not (parameters.get("flow_id") or parameters.get("flow_name")):
            raise missing_parameter(
                "Parameter 'action.parameters.flow_id' is required."
            )
        if not parameters.get("flow_cta"):
            raise missing_parameter(
                "Parameter 'action.parameters.flow_cta' is required."
            )


def _check_reply_buttons(body: dict, action: dict):
    if len(body["text"]) > 1024:
        raise _too_long("interactive['body']['text']", 1024)
    buttons = action.get("buttons") or []
    if not 1 <= len(buttons) <= 3:
        raise GraphError(
            131009, "Param interactive['action']['buttons'] needs 1 to 3 buttons."
        )
    titles = set()
    for button in buttons:
        reply = button.get("reply") or {}
        if not reply.get("id") or not reply.get("title"):
            raise missing_parameter("Each button needs reply.id and reply.title.")
        if len(reply["title"]) > 20:
            raise _too_long("button['reply']['title']", 20)
        if reply["title"] in titles:
            raise GraphError(131009, "Button titles must be unique.")
        titles.add(reply["title"])


def _check_list(body: dict, action: dict):
    if len(body["text"]) > TEXT_LIMIT:
        raise _too_long("interactive['body']['text']", TEXT_LIMIT)
    if not action.get("button"):
        raise missing_parameter("Parameter 'interactive.action.button' is required.")
    if len(action["button"]) > 20:
        raise _too_long("interactive['action']['button']", 20)
    sections = action.get("sections") or []
    rows = [row for section in sections for row in section.get("rows") or []]
    if not sections or len(sections) > 10:
        raise GraphError(
            131009, "Param interactive['action']['sections'] needs 1 to 10 sections."
        )
    if not rows or len(rows) > 10:
        raise GraphError(131009, "A list message needs 1 to 10 rows in total.")
    for row in rows:
        if not row.get("id") or not row.get("title"):
            raise missing_parameter("Each row needs id and title.")
        if len(row["title"]) > 24:
            raise _too_long("row['title']", 24)
        if len(row.get("description", "")) > 72:
            raise _too_long("row['description']", 72)


def _check_reaction(reaction: dict):
    if not reaction.get("message_id"):
        raise missing_parameter("Parameter 'reaction.message_id' is required.")
    if "emoji" not in reaction:
        raise missing_parameter("Parameter 'reaction.emoji' is required.")


def _check_location(location: dict):
    for key in ("latitude", "longitude"):
        if location.get(key) in (None, ""):
            raise missing_parameter(f"Parameter 'location.{key}' is required.")


def _check_contacts(contacts: list):
    for card in contacts:
        if not isinstance(card, dict) or not (card.get("name") or {}).get(
            "formatted_name"
        ):
            raise missing_parameter(
                "Parameter 'contacts.name.formatted_name' is required."
            )


_CHECKS = {
    "text": _check_text,
    "template": _check_template,
    "interactive": _check_interactive,
    "reaction": _check_reaction,
    "location": _check_location,
    "contacts": _check_contacts,
    **{kind: _media_checker(kind) for kind in MEDIA_TYPES},
}
