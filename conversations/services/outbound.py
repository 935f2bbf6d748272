"""Every send is a `queued` Message row written here, in the caller's
transaction; after commit the number's doorbell rings and a delivery run
sends it (conversations/delivery/engine.py has the state machine).
Refusals happen here, before any request to Meta.
"""

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .. import realtime
from ..delivery import doorbells
from ..models import (
    Conversation,
    Customer,
    Message,
    MessageTemplate,
    Reaction,
    WhatsAppNumber,
)
from ..rules import windows
from ..whatsapp import client, payloads
from ..whatsapp import templates as meta_templates
from . import consent, customers, errors, groups, media, service_levels, templates

logger = logging.getLogger(__name__)


def check_can_send(*, conversation: Conversation, free_form: bool = False) -> None:
    """Refuse at once what could not go out now (the REST API asks first).

    Sends already queued on a paused number wait for resume_sending; a new
    one from an API client is refused with the reason instead, so the client
    is not left with a message that sits `queued`. `free_form`: also check
    the customer service window (before an upload, say).
    """
    groups.check_not_group(conversation)
    number = conversation.number
    if number.sending_paused:
        raise errors.SendingPaused(
            f"Sending from {number} is paused until an admin resumes it: "
            f"{number.sending_paused_reason or 'no reason recorded'}",
            reason=number.sending_paused_reason,
            since=number.sending_paused_since,
        )
    if not number.is_active:
        raise errors.SendingPaused(
            f"{number} is not active.", reason="inactive", since=None
        )
    if free_form:
        _check_window(conversation, timezone.now())


# Meta's limits, checked before the request (Cloud API checklist item 39).
TEXT_LIMIT = 4096


CAPTION_LIMIT = 1024


FREE_FORM_TYPES = frozenset(
    {
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "interactive",
        "reaction",
        "location",
        "contacts",
    }
)


MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})


def _check_window(conversation: Conversation, at: datetime) -> None:
    # A group's conversation refuses every send, whatever its window says.
    groups.check_not_group(conversation)
    if not windows.service_window_open(conversation, at):
        raise errors.WindowClosed(
            "More than 24 hours have passed since the customer's last message: "
            "only an approved template can be sent.",
            templates=templates.approved_templates(conversation.number),
        )


def _check_content(kind: str, content) -> str:
    """Check a free-form type's object against Meta's limits; its summary text."""
    if kind not in FREE_FORM_TYPES:
        raise errors.OutboundError(f"Unknown message type {kind!r}.")
    if kind == "contacts":
        if not isinstance(content, list) or not content:
            raise errors.OutboundError("contacts needs a list of at least one contact.")
        return ", ".join(
            str((c.get("name") or {}).get("formatted_name", "")) for c in content
        )
    if not isinstance(content, dict):
        raise errors.OutboundError(f"{kind} needs an object.")
    if kind == "text":
        body = content.get("body", "")
        if not isinstance(body, str) or not body.strip():
            raise errors.OutboundError("A text message needs a body.")
        if len(body) > TEXT_LIMIT:
            raise errors.OutboundError(f"Text is limited to {TEXT_LIMIT} characters.")
        return body
    if kind in MEDIA_TYPES:
        if bool(content.get("id")) == bool(content.get("link")):
            raise errors.MediaRefused(
                "Media needs exactly one of an uploaded id or a link."
            )
        link = content.get("link", "")
        if link and not str(link).startswith("https://"):
            raise errors.MediaRefused("Media links must be HTTPS URLs.")
        caption = content.get("caption", "")
        if caption and kind not in {"image", "video", "document"}:
            raise errors.MediaRefused(f"{kind} messages cannot have a caption.")
        if len(caption) > CAPTION_LIMIT:
            raise errors.MediaRefused(
                f"Captions are limited to {CAPTION_LIMIT} characters."
            )
        return caption or content.get("filename", "") or kind
    if kind == "interactive":
        return _check_interactive(content)
    if kind == "location":
        try:
            float(content["latitude"])
            float(content["longitude"])
        except (KeyError, TypeError, ValueError):
            raise errors.OutboundError(
                "A location needs a latitude and longitude."
            ) from None
        return content.get("name", "") or "Location"
    if kind == "reaction":
        return content.get("emoji", "")
    return kind


def _check_interactive(content: dict) -> str:
    """Meta's limits of reply buttons and lists (whatsapp/payloads.py), so a
    send Meta would refuse is refused here, before any request."""
    body = (content.get("body") or {}).get("text", "")
    action = content.get("action") or {}
    _check_header_footer(content)
    if content.get("type") == "button":
        buttons = action.get("buttons") or []
        if not 1 <= len(buttons) <= payloads.BUTTONS_MAX:
            raise errors.OutboundError("Reply buttons: between 1 and 3 buttons.")
        replies = [b.get("reply") or {} for b in buttons]
        titles = [reply.get("title", "") for reply in replies]
        if any(not t or len(t) > payloads.BUTTON_TITLE_MAX for t in titles) or len(
            set(titles)
        ) != len(titles):
            raise errors.OutboundError("Button titles: unique, 1 to 20 characters.")
        ids = [str(reply.get("id", "")) for reply in replies]
        if any(not i or len(i) > payloads.BUTTON_ID_MAX for i in ids):
            raise errors.OutboundError("Button ids: 1 to 256 characters.")
        if not body or len(body) > payloads.BUTTONS_BODY_MAX:
            raise errors.OutboundError(
                "Reply buttons need a body of up to 1024 characters."
            )
    elif content.get("type") == "list":
        _check_list(action, body)
    elif content.get("type") not in {"cta_url", "flow", "location_request_message"}:
        raise errors.OutboundError("Unknown interactive type.")
    return body


def _check_header_footer(content: dict) -> None:
    header = content.get("header") or {}
    if header.get("type") == "text" and len(header.get("text", "")) > (
        payloads.HEADER_TEXT_MAX
    ):
        raise errors.OutboundError("A text header has at most 60 characters.")
    if len((content.get("footer") or {}).get("text", "")) > payloads.FOOTER_MAX:
        raise errors.OutboundError("A footer has at most 60 characters.")


def _check_list(action: dict, body: str) -> None:
    sections = action.get("sections") or []
    rows = [row for s in sections for row in s.get("rows") or []]
    if not 1 <= len(rows) <= payloads.LIST_ROWS_MAX:
        raise errors.OutboundError("A list has between 1 and 10 rows in total.")
    if len(sections) > payloads.LIST_SECTIONS_MAX:
        raise errors.OutboundError("A list has at most 10 sections.")
    if any(len(s.get("title", "")) > payloads.SECTION_TITLE_MAX for s in sections):
        raise errors.OutboundError("Section titles have at most 24 characters.")
    if any(
        not row.get("title")
        or len(row.get("title", "")) > payloads.LIST_ROW_TITLE_MAX
        or not row.get("id")
        or len(str(row.get("id"))) > payloads.LIST_ROW_ID_MAX
        for row in rows
    ):
        raise errors.OutboundError(
            "List rows need an id of up to 200 and a title of up to 24 chars."
        )
    ids = [str(row.get("id")) for row in rows]
    if len(set(ids)) != len(ids):
        raise errors.OutboundError("List row ids must be unique.")
    if any(
        len(row.get("description", "")) > payloads.LIST_ROW_DESCRIPTION_MAX
        for row in rows
    ):
        raise errors.OutboundError("Row descriptions have at most 72 characters.")
    if not action.get("button") or len(action["button"]) > payloads.LIST_BUTTON_MAX:
        raise errors.OutboundError("A list needs a button label of up to 20 chars.")
    if not body or len(body) > payloads.LIST_BODY_MAX:
        raise errors.OutboundError("A list needs a body of up to 4096 characters.")


def _queue_message(
    *,
    conversation: Conversation,
    kind: str,
    payload,
    text: str,
    sender=None,
    reply_to: Message | None = None,
    template: MessageTemplate | None = None,
    attachment: media.Attachment | None = None,
    media_of: Message | None = None,
) -> Message:
    groups.check_not_group(conversation)
    now = timezone.now()
    opens_free_entry_point = windows.opens_free_entry_point(conversation, now)
    message = Message(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type=kind,
        text=text,
        payload=payload,
        status=Message.Status.QUEUED,
        timestamp=now,
        reply_to=reply_to,
        context_wamid=(reply_to.wamid or "") if reply_to else "",
        sender=sender,
        template=template,
    )
    if attachment is not None:
        message.media_id = str(payload.get("id", ""))
        message.media_filename = attachment.filename[:255]
        media.keep_media(message, attachment.data, attachment.mime_type)
    elif media_of is not None:
        for name in media.MEDIA_FIELDS:
            setattr(message, name, getattr(media_of, name))
    message.save(force_insert=True)
    expires = windows.free_entry_point_expiry(now) if opens_free_entry_point else None
    customers.touch_conversation(
        conversation,
        message,
        inbound=False,
        first_response_at=now if sender is not None else None,
        free_entry_point_expires_at=expires,
    )
    if sender is not None:
        service_levels.record_reply(conversation=conversation, at=now)
    if expires is not None:
        conversation.free_entry_point_expires_at = expires
    realtime.publish(
        realtime.MESSAGE_CREATED,
        conversation=conversation,
        message=message,
        data={"status": message.status},
    )
    doorbells.ring_delivery_after_commit(conversation.number_id)
    return message


@transaction.atomic
def send_reply(
    *,
    conversation: Conversation,
    kind: str,
    content,
    sender=None,
    reply_to: Message | None = None,
    at: datetime | None = None,
    attachment: media.Attachment | None = None,
) -> Message:
    """Queue a free-form reply (text, media, interactive, location, contacts).

    `content` is the type's object in Meta's shape ({"body": ...} for text).
    Refused with WindowClosed outside the customer service window.
    `attachment`: the file uploaded as content's media id, kept on the message.
    """
    if kind == "reaction":
        raise errors.OutboundError("Use react() for reactions.")
    text = _check_content(kind, content)
    _check_window(conversation, at or timezone.now())
    if reply_to is not None and reply_to.conversation_id != conversation.pk:
        raise errors.OutboundError("reply_to must be a message of this conversation.")
    return _queue_message(
        conversation=conversation,
        kind=kind,
        payload=content,
        text=text,
        sender=sender,
        reply_to=reply_to,
        attachment=attachment,
    )


def send_attachment(
    *,
    conversation: Conversation,
    kind: str,
    attachment: media.Attachment,
    caption: str = "",
    sender=None,
    reply_to: Message | None = None,
) -> Message:
    """Upload an agent's file to Meta and queue it as a media reply.

    Whatever would refuse the send is checked before the upload, so nothing
    goes to Meta for a message that would not be queued; an upload Meta
    does not take queues nothing (UploadFailed). The file is kept on the
    message, so its bubble shows it as a customer's would.
    """
    content = {}
    if caption and kind in {"image", "video", "document"}:
        content["caption"] = caption
    if kind == "document":
        content["filename"] = attachment.filename[:240]
    check_can_send(conversation=conversation, free_form=True)
    # The media id is Meta's answer to the upload; a stand-in checks the rest.
    _check_content(kind, {**content, "id": "upload"})
    try:
        media_id = media.upload_media(
            number=conversation.number,
            kind=kind,
            data=attachment.data,
            mime_type=attachment.mime_type,
            filename=attachment.filename,
        )
    except (client.GraphAPIError, client.AcceptedButUnknown) as error:
        logger.warning("Upload for conversation %s failed: %s", conversation.pk, error)
        raise errors.UploadFailed("Meta did not take the upload; try again.") from error
    return send_reply(
        conversation=conversation,
        kind=kind,
        content={**content, "id": media_id},
        sender=sender,
        reply_to=reply_to,
        attachment=attachment,
    )


@transaction.atomic
def react(
    *, message: Message, emoji: str, sender=None, at: datetime | None = None
) -> Message:
    """React to a message with an emoji; an empty emoji removes the reaction."""
    conversation = message.conversation
    if not message.wamid:
        raise errors.OutboundError("Only a message WhatsApp knows can get a reaction.")
    if message.type == "reaction":
        raise errors.OutboundError("A reaction cannot be reacted to.")
    _check_window(conversation, at or timezone.now())
    Reaction.objects.update_or_create(
        message=message,
        direction=Message.Direction.OUTBOUND,
        defaults={"emoji": emoji, "reacted_at": timezone.now(), "agent": sender},
    )
    return _queue_message(
        conversation=conversation,
        kind="reaction",
        payload={"message_id": message.wamid, "emoji": emoji},
        text=emoji,
        sender=sender,
        # Tabs show it on the message it reacts to (RenderedEvent.message_html)
        # and the API names that message; the send never quotes it
        # (client.build_message leaves reactions without context).
        reply_to=message,
    )


@transaction.atomic
def send_template(
    *,
    conversation: Conversation,
    template: MessageTemplate,
    parameters: dict | None = None,
    sender=None,
) -> Message:
    """Queue an approved template with every parameter it defines filled in."""
    check_template_send(conversation=conversation, template=template)
    payload, text = template_message(template, parameters or {})
    return _queue_message(
        conversation=conversation,
        kind="template",
        payload=payload,
        text=text,
        sender=sender,
        template=template,
    )


def check_template_send(
    *, conversation: Conversation, template: MessageTemplate
) -> None:
    """What a template must pass to go to this customer now: approved, of
    the number's account, and the customer's consent for its category."""
    groups.check_not_group(conversation)
    check_template(template, conversation.number)
    check_template_recipient(conversation.customer, template)
    consent.check_template_consent(conversation.customer, template)


def check_template_recipient(customer: Customer, template: MessageTemplate) -> None:
    """Refuse an authentication template to a customer known only by BSUID:
    Meta sends one-tap, zero-tap and copy-code templates to phones only."""
    if template.category == MessageTemplate.Category.AUTHENTICATION and not (
        customer.wa_id
    ):
        raise errors.PhoneRequired(
            f"{template.name} is an authentication template; Meta sends those "
            "only to a phone number, and this customer is known by username only.",
            customer=customer.pk,
        )


def check_template(template: MessageTemplate, number: WhatsAppNumber) -> None:
    """Refuse a template that is not approved or belongs to another account."""
    if template.status != MessageTemplate.Status.APPROVED:
        raise errors.TemplateNotApproved(
            f"Template {template.name} ({template.language}) is {template.status}, "
            "not approved."
        )
    if template.waba_id != number.waba_id:
        raise errors.TemplateNotApproved("That template belongs to another account.")


def template_message(template: MessageTemplate, parameters: dict) -> tuple[dict, str]:
    """A template send's payload (parameters checked) and the text it shows."""
    components = templates.template_components(template, parameters)
    return (
        meta_templates.message_payload(template, components),
        meta_templates.render_text(template, components),
    )


@transaction.atomic
def resend_message(*, message: Message, sender=None) -> Message:
    """An agent's explicit resend of an `unknown` or `failed` send, as a new message.

    A resend is a new send, checked as one now: the number neither paused
    nor inactive, the window for a free-form message, and for a template its
    approval, its account and the customer's consent (so after Meta's 131050
    a marketing template is refused, not sent again). The old row stays as
    it is: a late status may still settle it, and the timeline shows both.
    """
    if message.direction != Message.Direction.OUTBOUND or message.status not in {
        Message.Status.UNKNOWN,
        Message.Status.FAILED,
    }:
        raise errors.OutboundError("Only an unknown or failed send can be resent.")
    conversation = message.conversation
    template = None
    if message.type == "template":
        check_can_send(conversation=conversation)
        # Read now: the failure may have paused or disabled it meanwhile.
        template = MessageTemplate.objects.filter(pk=message.template_id).first()
        if template is None:
            raise errors.TemplateNotApproved("That template no longer exists.")
        check_template_send(conversation=conversation, template=template)
    else:
        check_can_send(conversation=conversation, free_form=True)
    return _queue_message(
        conversation=conversation,
        kind=message.type,
        payload=message.payload,
        text=message.text,
        sender=sender,
        reply_to=message.reply_to,
        template=template,
        media_of=message if message.media_state == Message.MediaState.STORED else None,
    )


def deliver_message(*, message_id: int) -> None:
    """Make sure a queued message's number has a delivery run coming."""
    number_id = (
        Message.objects.filter(pk=message_id)
        .values_list("conversation__number_id", flat=True)
        .first()
    )
    if number_id is not None:
        doorbells.ring_delivery(number_id)
