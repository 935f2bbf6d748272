"""POST /api/v1/conversations/{id}/messages/: an agent's reply through the API.

One request shape per Meta message type, told apart by ``type`` (the schema
is a oneOf on it). The view validates and resolves (the conversation the
user may see, the quoted or reacted-to message, the template), then calls
the same services as the workspace's composer: ``send_reply``,
``send_template``, ``react``. Refusals are the services' own codes:

- 400 bad input (``code`` names the first problem, ``errors`` every field);
- 404 a conversation the user may not see;
- 409 ``window_closed`` (with the approved ``templates`` that may still be
  sent) and ``sending_paused`` (with its ``reason``);
- 422 ``template_not_approved``, ``template_parameters``, ``no_consent``,
  ``media_refused``, ... .

A reply is answered 201 with the message as GET shows it (status
``queued``); delivery happens after the commit, by the delivery workers.
"""

from __future__ import annotations

import mimetypes

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.response import Response

from conversations import services
from conversations.models import Conversation, Message, MessageTemplate
from conversations.whatsapp import templates as meta_templates

from .business import ParametersSerializer
from .serializers import FreshFields, MessageSerializer


class ReplyBase(FreshFields, serializers.Serializer):
    reply_to = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="the id of a message of this conversation to quote",
    )


class TextReplySerializer(ReplyBase):
    type = serializers.ChoiceField(choices=["text"])
    text = serializers.CharField(
        max_length=services.TEXT_LIMIT, trim_whitespace=False, allow_blank=False
    )
    preview_url = serializers.BooleanField(
        default=False, help_text="show a preview of the first http(s) URL"
    )

    def content(self) -> dict:
        data = self.validated_data
        content = {"body": data["text"]}
        if data["preview_url"]:
            content["preview_url"] = True
        return content


class MediaSerializer(serializers.Serializer):
    id = serializers.CharField(
        max_length=128, required=False, help_text="an uploaded media id"
    )
    link = serializers.URLField(max_length=2000, required=False)
    caption = serializers.CharField(
        max_length=services.CAPTION_LIMIT, required=False, trim_whitespace=False
    )
    filename = serializers.CharField(max_length=240, required=False)

    def validate(self, attrs):
        if bool(attrs.get("id")) == bool(attrs.get("link")):
            raise ValidationError("Give exactly one of id (uploaded media) or link.")
        return attrs


def _media_reply(kind: str) -> type[ReplyBase]:
    fields = {
        "type": serializers.ChoiceField(choices=[kind]),
        kind: MediaSerializer(
            help_text="exactly one of id or link; caption for image, video "
            "and document; filename for document"
        ),
        "content": lambda self: dict(self.validated_data[kind]),
    }
    return type(f"{kind.title()}ReplySerializer", (ReplyBase,), fields)


class TemplateSendSerializer(serializers.Serializer):
    id = serializers.IntegerField(
        required=False, min_value=1, help_text="the template's id in the helpdesk"
    )
    name = serializers.RegexField(r"^[a-z0-9_]{1,512}$", required=False)
    language = serializers.RegexField(
        r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$", required=False
    )
    parameters = ParametersSerializer(required=False)
    components = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        max_length=20,
        help_text="Meta's components[] instead of parameters",
    )

    def validate(self, attrs):
        if not attrs.get("id") and not (attrs.get("name") and attrs.get("language")):
            raise ValidationError("Name the template by id, or by name and language.")
        if "parameters" in attrs and "components" in attrs:
            raise ValidationError("Give parameters or components, not both.")
        if "components" in attrs:
            converted = ParametersSerializer(
                data=meta_templates.parameters_from_components(attrs.pop("components"))
            )
            if not converted.is_valid():
                raise ValidationError({"components": converted.errors})
            attrs["parameters"] = converted.validated_data
        return attrs


class NoQuote(FreshFields, serializers.Serializer):
    """Types Meta shows no quote for: a reply_to is refused, not ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "get") and data.get("reply_to") not in (None, ""):
            raise _invalid(
                "reply_to", f"A {data.get('type')} cannot quote a message.", "invalid"
            )
        return super().to_internal_value(data)


class TemplateReplySerializer(NoQuote):
    type = serializers.ChoiceField(choices=["template"])
    template = TemplateSendSerializer()


class ReactionTargetSerializer(serializers.Serializer):
    message = serializers.IntegerField(
        min_value=1, help_text="the id of the message of this conversation"
    )
    emoji = serializers.CharField(
        max_length=32,
        allow_blank=True,
        trim_whitespace=False,
        help_text="an empty emoji removes the reaction",
    )


class ReactionReplySerializer(NoQuote):
    type = serializers.ChoiceField(choices=["reaction"])
    reaction = ReactionTargetSerializer()


class LocationSerializer(serializers.Serializer):
    latitude = serializers.FloatField(min_value=-90, max_value=90)
    longitude = serializers.FloatField(min_value=-180, max_value=180)
    name = serializers.CharField(max_length=1000, required=False)
    address = serializers.CharField(max_length=1000, required=False)


class LocationReplySerializer(ReplyBase):
    type = serializers.ChoiceField(choices=["location"])
    location = LocationSerializer()

    def content(self) -> dict:
        return dict(self.validated_data["location"])


class ContactsReplySerializer(ReplyBase):
    type = serializers.ChoiceField(choices=["contacts"])
    contacts = serializers.ListField(
        child=serializers.DictField(),
        min_length=1,
        max_length=20,
        help_text="Meta's contacts[]: name.formatted_name, phones[], emails[], ...",
    )

    def content(self) -> list:
        return list(self.validated_data["contacts"])


class InteractiveReplySerializer(ReplyBase):
    type = serializers.ChoiceField(choices=["interactive"])
    interactive = serializers.DictField(
        help_text="Meta's interactive object: type button, list, cta_url, ..."
    )

    def content(self) -> dict:
        return dict(self.validated_data["interactive"])


REQUESTS: dict[str, type[serializers.Serializer]] = {
    "text": TextReplySerializer,
    **{kind: _media_reply(kind) for kind in sorted(services.MEDIA_TYPES)},
    "template": TemplateReplySerializer,
    "reaction": ReactionReplySerializer,
    "location": LocationReplySerializer,
    "contacts": ContactsReplySerializer,
    "interactive": InteractiveReplySerializer,
}


# --- The view's part ----------------------------------------------------------------


def _invalid(field: str, detail: str, code: str) -> ValidationError:
    return ValidationError({field: [ErrorDetail(detail, code)]})


def _message_of(conversation: Conversation, pk, field: str, code: str) -> Message:
    message = conversation.messages.filter(pk=pk).first()
    if message is None:
        raise _invalid(field, "No message with this id in this conversation.", code)
    return message


def _template(conversation: Conversation, data: dict) -> MessageTemplate:
    templates = MessageTemplate.objects.filter(waba_id=conversation.number.waba_id)
    if data.get("id"):
        template = templates.filter(pk=data["id"]).first()
    else:
        template = templates.filter(
            name=data["name"], language=data["language"]
        ).first()
    if template is None:
        raise services.TemplateNotApproved(
            "There is no such template for this conversation's number.",
            templates=services.approved_templates(conversation.number),
        )
    return template


def _attachment(request, conversation: Conversation) -> Message:
    """A multipart reply: the file is uploaded to Meta, kept on the message
    (the workspace shows it as a customer's file) and sent by its id."""
    # Its size was checked as it arrived (uploads.AcceptsUpload).
    upload = request.FILES["file"]
    mime_type = (
        upload.content_type
        or mimetypes.guess_type(upload.name)[0]
        or "application/octet-stream"
    )
    kind = request.data.get("type") or _media_kind(mime_type)
    if kind not in services.MEDIA_TYPES:
        raise _invalid("type", "A file is sent as a media type.", "invalid")
    reply_to = None
    if request.data.get("reply_to"):
        reply_to = _message_of(
            conversation, request.data["reply_to"], "reply_to", "not_found"
        )
    filename = str(request.data.get("filename") or upload.name)[:240]
    return services.send_attachment(
        conversation=conversation,
        kind=kind,
        attachment=services.Attachment(
            data=upload.read(), filename=filename, mime_type=mime_type
        ),
        caption=str(request.data.get("caption") or ""),
        sender=request.user,
        reply_to=reply_to,
    )


def _media_kind(mime_type: str) -> str:
    if mime_type == "image/webp":
        return "sticker"
    for kind in ("image", "video", "audio"):
        if mime_type.startswith(f"{kind}/"):
            return kind
    return "document"


def post_reply(request, conversation: Conversation, render) -> Response:
    """Validate, resolve, call the service; 201 with the queued message."""
    if "file" in request.FILES:
        # send_attachment checks everything before the upload.
        message = _attachment(request, conversation)
        return Response(render(message), status=status.HTTP_201_CREATED)
    # Checked before anything else: a window_closed or sending_paused
    # answer wins over the body's mistakes.
    services.check_can_send(conversation=conversation)
    data = request.data
    kind = data.get("type") if hasattr(data, "get") else None
    if kind not in REQUESTS:
        raise _invalid(
            "type", f"One of {', '.join(sorted(REQUESTS))}.", "invalid_choice"
        )
    serializer = REQUESTS[kind](data=data)
    serializer.is_valid(raise_exception=True)
    values = serializer.validated_data
    sender = request.user
    if kind == "reaction":
        target = _message_of(
            conversation, values["reaction"]["message"], "reaction", "not_found"
        )
        message = services.react(
            message=target, emoji=values["reaction"]["emoji"], sender=sender
        )
    elif kind == "template":
        message = services.send_template(
            conversation=conversation,
            template=_template(conversation, values["template"]),
            parameters=dict(values["template"].get("parameters") or {}),
            sender=sender,
        )
    else:
        reply_to = None
        if values.get("reply_to"):
            reply_to = _message_of(
                conversation, values["reply_to"], "reply_to", "not_found"
            )
        message = services.send_reply(
            conversation=conversation,
            kind=kind,
            content=serializer.content(),
            sender=sender,
            reply_to=reply_to,
        )
    return Response(render(message), status=status.HTTP_201_CREATED)


# --- The schema -----------------------------------------------------------------------

ErrorSerializer = inline_serializer(
    "ReplyRefused",
    {
        "code": serializers.CharField(),
        "detail": serializers.CharField(),
        "errors": serializers.DictField(required=False),
        "templates": serializers.ListField(
            child=inline_serializer(
                "ApprovedTemplate",
                {
                    "id": serializers.IntegerField(),
                    "name": serializers.CharField(),
                    "language": serializers.CharField(),
                    "category": serializers.CharField(),
                },
            ),
            required=False,
            help_text="window_closed: the approved templates that may be sent",
        ),
        "reason": serializers.CharField(
            required=False, help_text="sending_paused: why the number is paused"
        ),
    },
)

POST_SCHEMA = {
    "summary": "Send a reply",
    "description": __doc__,
    "request": {
        "application/json": PolymorphicProxySerializer(
            component_name="Reply",
            serializers={kind: serializer() for kind, serializer in REQUESTS.items()},
            resource_type_field_name="type",
        ),
        "multipart/form-data": inline_serializer(
            "ReplyUpload",
            {
                "file": serializers.FileField(),
                "type": serializers.ChoiceField(
                    choices=sorted(services.MEDIA_TYPES),
                    required=False,
                    help_text="guessed from the file's type when absent",
                ),
                "caption": serializers.CharField(required=False),
                "filename": serializers.CharField(required=False),
                "reply_to": serializers.IntegerField(required=False),
            },
        ),
    },
    "responses": {
        201: MessageSerializer,
        400: OpenApiResponse(ErrorSerializer, description="bad input"),
        404: OpenApiResponse(
            ErrorSerializer, description="no such conversation for this user"
        ),
        409: OpenApiResponse(
            ErrorSerializer, description="window_closed or sending_paused"
        ),
        422: OpenApiResponse(
            ErrorSerializer,
            description="template_not_approved, template_parameters, no_consent, "
            "media_refused, ...",
        ),
        413: OpenApiResponse(
            ErrorSerializer,
            description="too_large: a file past the upload limit (100 MB), "
            "refused as it arrives; nothing was queued",
        ),
        502: OpenApiResponse(
            ErrorSerializer,
            description="upload_failed: Meta did not take a file sent as "
            "multipart; nothing was queued, try again",
        ),
    },
    "examples": [
        OpenApiExample(
            "Text",
            value={"type": "text", "text": "Your order left the warehouse."},
            request_only=True,
        ),
        OpenApiExample(
            "Image by link, quoting a message",
            value={
                "type": "image",
                "image": {"link": "https://example.com/a.jpg", "caption": "Here"},
                "reply_to": 41,
            },
            request_only=True,
        ),
        OpenApiExample(
            "Template",
            value={
                "type": "template",
                "template": {
                    "name": "order_update",
                    "language": "en",
                    "parameters": {"body": ["Anna", "4711"]},
                },
            },
            request_only=True,
        ),
        OpenApiExample(
            "Reaction",
            value={"type": "reaction", "reaction": {"message": 41, "emoji": "👍"}},
            request_only=True,
        ),
    ],
}
