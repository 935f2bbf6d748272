"""The business's endpoints of /api/v1/: notifications and their media
(consent records are in consents.py).

Shapes and codes are in the OpenAPI schema (/api/schema/) and the README's
"REST API" section. Every refusal is JSON with a stable
``code``; bad input is a 400 naming the field, never a server error.
"""

from __future__ import annotations

import mimetypes
import re

from django.conf import settings
from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Team
from conversations import services
from conversations.models import (
    ConsentRecord,
    Notification,
    WhatsAppNumber,
    sees_every_number,
)
from conversations.whatsapp import client

from .permissions import CanSendNotifications
from .uploads import AcceptsUpload, SizeLimitedMultiPartParser

# \Z, not $: a trailing newline is not part of a phone number.
E164 = r"^\+[1-9]\d{6,14}\Z"
E164_SCHEMA = r"^\+[1-9]\d{6,14}$"
MAX_TEXT = 1024


class IdempotencyConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_conflict"
    default_detail = (
        "This Idempotency-Key was used with another request body; use a new key."
    )


def _check_text(value, field: str) -> str:
    """A string PostgreSQL and JSON can store: no NUL, no lone surrogates."""
    if not isinstance(value, str):
        raise ValidationError({field: "Must be a string."}, code="invalid")
    if "\x00" in value:
        raise ValidationError({field: "Null characters are not allowed."}, "invalid")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError({field: "Not valid Unicode text."}, "invalid") from None
    if len(value) > MAX_TEXT:
        raise ValidationError({field: f"At most {MAX_TEXT} characters."}, "invalid")
    return value


# --- Notifications --------------------------------------------------------------------


class MediaReferenceSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=128, required=False)
    link = serializers.URLField(max_length=2000, required=False)
    filename = serializers.CharField(max_length=240, required=False)

    def validate(self, attrs):
        if bool(attrs.get("id")) == bool(attrs.get("link")):
            raise ValidationError("Give exactly one of id (uploaded media) or link.")
        if attrs.get("link") and not attrs["link"].lower().startswith("https://"):
            raise ValidationError({"link": "Media links must be HTTPS URLs."})
        return attrs


HEADER_SCHEMA = {
    "oneOf": [
        {"type": "string", "description": "the text header's parameter"},
        {
            "type": "object",
            "description": "the media header: one of image, video or document",
            "properties": {
                kind: {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "link": {"type": "string", "format": "uri"},
                        "filename": {"type": "string"},
                    },
                }
                for kind in ("image", "video", "document")
            },
        },
    ]
}
BODY_VALUE_SCHEMA = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "description": "a price the customer's app formats",
            "properties": {
                "currency": {
                    "type": "object",
                    "required": ["fallback_value", "code", "amount_1000"],
                    "properties": {
                        "fallback_value": {"type": "string", "example": "$100.99"},
                        "code": {"type": "string", "example": "USD"},
                        "amount_1000": {"type": "integer", "example": 100990},
                    },
                }
            },
        },
        {
            "type": "object",
            "description": "a date the customer's app formats",
            "properties": {
                "date_time": {
                    "type": "object",
                    "required": ["fallback_value"],
                    "properties": {
                        "fallback_value": {
                            "type": "string",
                            "example": "February 25, 1977",
                        }
                    },
                }
            },
        },
    ]
}
BODY_SCHEMA = {
    "oneOf": [
        {
            "type": "array",
            "items": BODY_VALUE_SCHEMA,
            "description": "positional parameters {{1}}, {{2}}, ...",
        },
        {
            "type": "object",
            "additionalProperties": BODY_VALUE_SCHEMA,
            "description": "named parameters",
        },
    ]
}


@extend_schema_field(HEADER_SCHEMA)
class HeaderField(serializers.JSONField):
    def to_internal_value(self, data):
        if isinstance(data, str):
            return _check_text(data, "header")
        if not isinstance(data, dict) or len(data) != 1:
            raise ValidationError(
                "A string, or an object with one of image, video or document."
            )
        [(kind, media)] = data.items()
        if kind not in {"image", "video", "document"}:
            raise ValidationError(f"Unknown header kind {str(kind)[:20]!r}.")
        serializer = MediaReferenceSerializer(data=media)
        if not serializer.is_valid():
            raise ValidationError({kind: serializer.errors})
        return {kind: dict(serializer.validated_data)}


@extend_schema_field(BODY_SCHEMA)
class BodyField(serializers.JSONField):
    def to_internal_value(self, data):
        if isinstance(data, list):
            if len(data) > 100:
                raise ValidationError("At most 100 parameters.")
            return [_body_value(value) for value in data]
        if isinstance(data, dict):
            if len(data) > 100:
                raise ValidationError("At most 100 parameters.")
            return {
                _check_text(key, "body"): _body_value(value)
                for key, value in data.items()
            }
        raise ValidationError("A list of positional or an object of named parameters.")


def _body_value(value):
    """A text parameter, or a currency or date_time object: its texts are
    checked here, its shape against the template by the services."""
    if isinstance(value, dict):
        if len(value) != 1 or not isinstance(next(iter(value.values())), dict):
            raise ValidationError({"body": "An object holds currency or date_time."})
        [(kind, fields)] = value.items()
        fallback = fields.get("fallback_value")
        if isinstance(fallback, str):
            _check_text(fallback, "body")
        return {kind: dict(fields)}
    return _check_text(_scalar(value), "body")


def _scalar(value) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationError({"body": "Parameters are strings (or numbers)."})
    return str(value)


class ButtonSerializer(serializers.Serializer):
    """A template button's value: a URL's ending (`url`), a quick reply's
    payload, a coupon code (`coupon_code`), a one-time password (`otp`,
    `code`), or a flow's token and data (`flow`)."""

    index = serializers.IntegerField(min_value=0, max_value=9)
    type = serializers.ChoiceField(
        choices=["url", "quick_reply", "coupon_code", "otp", "flow"]
    )
    text = serializers.CharField(max_length=2000, required=False)
    payload = serializers.CharField(max_length=1000, required=False)
    coupon_code = serializers.CharField(max_length=15, required=False)
    code = serializers.CharField(max_length=15, required=False)
    flow_token = serializers.CharField(max_length=1000, required=False)
    flow_action_data = serializers.DictField(required=False)


class ParametersSerializer(serializers.Serializer):
    header = HeaderField(required=False)
    body = BodyField(required=False)
    buttons = ButtonSerializer(many=True, required=False, max_length=10)


class TemplateRefSerializer(serializers.Serializer):
    name = serializers.RegexField(r"^[a-z0-9_]{1,512}$", max_length=512)
    language = serializers.RegexField(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")


class RecipientSerializer(serializers.Serializer):
    """One recipient of a bulk send: a phone (`to`) or a business-scoped user
    id (`user_id`), exactly one. A value that names no customer is refused
    for that recipient alone (invalid_phone), as one send refuses it."""

    to = serializers.CharField(max_length=64, required=False)
    user_id = serializers.CharField(max_length=256, required=False)
    parameters = ParametersSerializer(required=False)
    reference = serializers.CharField(max_length=200, required=False, allow_blank=True)

    def validate(self, attrs):
        if ("to" in attrs) == ("user_id" in attrs):
            raise ValidationError({"to": "Give exactly one of to and user_id."})
        return attrs


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "pattern": E164_SCHEMA, "example": "+4917012345678"},
            {
                "type": "array",
                "description": "a bulk send: numbers, or objects with their own "
                "parameters and reference naming the customer by phone (`to`) "
                "or by business-scoped user id (`user_id`), exactly one",
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "oneOf": [{"required": ["to"]}, {"required": ["user_id"]}],
                            "properties": {
                                "to": {
                                    "type": "string",
                                    "example": "+4917012345678",
                                },
                                "user_id": {
                                    "type": "string",
                                    "maxLength": 256,
                                    "example": "US.13491208655302741918",
                                },
                                "parameters": {"type": "object"},
                                "reference": {"type": "string"},
                            },
                        },
                    ]
                },
            },
        ]
    }
)
class RecipientsField(serializers.JSONField):
    """One E.164 number, or a list of recipients (a bulk send)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not re.match(E164, data):
                raise ValidationError(
                    "Give the number in E.164 form, e.g. +4917012345678."
                )
            return data
        if not isinstance(data, list):
            raise ValidationError("A phone number or a list of recipients.")
        if not data:
            raise ValidationError("Name at least one recipient.")
        if len(data) > settings.NOTIFICATIONS_BULK_MAX:
            raise ValidationError(
                f"At most {settings.NOTIFICATIONS_BULK_MAX} recipients per request."
            )
        recipients = []
        for index, item in enumerate(data):
            if isinstance(item, str):
                item = {"to": item}
            serializer = RecipientSerializer(data=item)
            if not serializer.is_valid():
                raise ValidationError({index: serializer.errors})
            recipients.append(dict(serializer.validated_data))
        return recipients


class NotificationInputSerializer(serializers.Serializer):
    to = RecipientsField(required=False)
    user_id = serializers.RegexField(
        services.BSUID,
        max_length=256,
        required=False,
        help_text="the customer's business-scoped user id (BSUID), in place of "
        "`to`, for a customer known by username only",
        error_messages={
            "invalid": "Give the business-scoped user id as Meta sent it, "
            "e.g. US.13491208655302741918."
        },
    )
    purpose = serializers.ChoiceField(choices=ConsentRecord.Purpose.choices)
    template = TemplateRefSerializer()
    parameters = ParametersSerializer(required=False)
    document = MediaReferenceSerializer(
        required=False, help_text="a PDF for the template's document header"
    )
    reference = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    team = serializers.CharField(
        max_length=100, required=False, help_text="the team (name) for replies"
    )
    number = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="the WhatsApp number (id) to send from; the first active one "
        "by default",
    )

    def validate(self, attrs):
        if ("to" in attrs) == ("user_id" in attrs):
            raise ValidationError({"to": "Give exactly one of to and user_id."})
        return attrs


class NotificationSerializer(serializers.Serializer):
    """A notification and its status (mirrored from its message)."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(
        choices=["queued", "sent", "delivered", "read", "failed", "unknown", "refused"]
    )
    to = serializers.CharField()
    user_id = serializers.CharField()
    purpose = serializers.CharField()
    template = TemplateRefSerializer()
    reference = serializers.CharField()
    message = serializers.IntegerField(allow_null=True)
    conversation = serializers.IntegerField(allow_null=True)
    team = serializers.IntegerField(allow_null=True)
    batch = serializers.IntegerField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()


QueuedSerializer = inline_serializer(
    "NotificationQueued",
    {
        "id": serializers.IntegerField(),
        "status": serializers.CharField(),
        "message": serializers.IntegerField(allow_null=True),
        "conversation": serializers.IntegerField(allow_null=True),
    },
)
BulkSerializer = inline_serializer(
    "NotificationBulkQueued",
    {
        "batch": serializers.IntegerField(),
        "total": serializers.IntegerField(),
        "queued": serializers.IntegerField(),
        "refused": serializers.IntegerField(),
        "results": inline_serializer(
            "NotificationBulkResult",
            {
                "id": serializers.IntegerField(),
                "to": serializers.CharField(),
                "user_id": serializers.CharField(),
                "status": serializers.CharField(),
                "message": serializers.IntegerField(allow_null=True),
                "conversation": serializers.IntegerField(allow_null=True),
                "code": serializers.CharField(required=False),
                "detail": serializers.CharField(required=False),
            },
            many=True,
        ),
    },
)
ErrorSerializer = inline_serializer(
    "Error",
    {
        "code": serializers.CharField(),
        "detail": serializers.CharField(),
        "errors": serializers.JSONField(required=False),
    },
)


def _result(notification: Notification) -> dict:
    result = {
        "id": notification.pk,
        "to": notification.to,
        "user_id": notification.user_id,
        "status": "refused"
        if notification.state == Notification.State.REFUSED
        else "queued",
        "message": notification.message_id,
        "conversation": notification.conversation_id,
    }
    if notification.state == Notification.State.REFUSED:
        result.update(notification.error or {})
    return result


def _single_answer(notification: Notification) -> Response:
    if notification.state == Notification.State.REFUSED:
        error = notification.error or {}
        return Response(
            {
                "code": error.get("code", "refused"),
                "detail": error.get("detail", ""),
                "id": notification.pk,
            },
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    return Response(
        {
            "id": notification.pk,
            "status": "queued",
            "message": notification.message_id,
            "conversation": notification.conversation_id,
        },
        status=status.HTTP_202_ACCEPTED,
    )


def _bulk_answer(batch_id, notifications: list[Notification]) -> Response:
    refused = sum(1 for n in notifications if n.state == Notification.State.REFUSED)
    return Response(
        {
            "batch": batch_id,
            "total": len(notifications),
            "queued": len(notifications) - refused,
            "refused": refused,
            "results": [_result(n) for n in notifications],
        },
        status=status.HTTP_202_ACCEPTED,
    )


class NotificationCreate(APIView):
    """Send a template notification (one recipient, or a list: a bulk send)."""

    permission_classes = [CanSendNotifications]

    @extend_schema(
        request=NotificationInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="the same key with the same body answers the first "
                "result again and sends nothing; with another body, 409",
            )
        ],
        responses={
            202: OpenApiResponse(
                QueuedSerializer,
                description="queued (a list of recipients answers "
                "NotificationBulkQueued: one result per recipient)",
            ),
            400: ErrorSerializer,
            403: ErrorSerializer,
            409: ErrorSerializer,
            422: OpenApiResponse(
                ErrorSerializer,
                description="no_consent, template_not_approved, "
                "template_category_mismatch, template_parameters, or "
                "phone_required (an authentication template to a customer "
                "known by user_id only)",
            ),
        },
        examples=[
            OpenApiExample(
                "A boarding pass",
                value={
                    "to": "+4917012345678",
                    "purpose": "utility",
                    "template": {"name": "boarding_pass", "language": "en"},
                    "parameters": {"body": ["Anna", "LH 2046"]},
                    "document": {
                        "link": "https://example.com/pass.pdf",
                        "filename": "boarding-pass.pdf",
                    },
                    "reference": "booking-4711",
                    "team": "Travel desk",
                },
                request_only=True,
            ),
            OpenApiExample(
                "To a customer known by username (BSUID)",
                value={
                    "user_id": "US.13491208655302741918",
                    "purpose": "utility",
                    "template": {"name": "order_update", "language": "en"},
                    "parameters": {"body": ["Anna", "4711"]},
                },
                request_only=True,
            ),
            OpenApiExample(
                "A bulk send by phone and by BSUID",
                value={
                    "to": [
                        "+4917012345678",
                        {"to": "+4917099887766", "reference": "order-4712"},
                        {
                            "user_id": "US.13491208655302741918",
                            "parameters": {"body": ["Lena", "4713"]},
                            "reference": "order-4713",
                        },
                    ],
                    "purpose": "utility",
                    "template": {"name": "order_update", "language": "en"},
                    "parameters": {"body": ["Anna", "4711"]},
                },
                request_only=True,
            ),
        ],
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key", "")
        if key and (len(key) > 255 or not key.isprintable()):
            raise ValidationError(
                {"Idempotency-Key": "At most 255 printable characters."}, "invalid"
            )
        serializer = NotificationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        digest = services.request_hash(request.data)
        if key:
            replay = self._replay(request.user, key, digest)
            if replay is not None:
                return replay
        try:
            with transaction.atomic():
                return self._send(request, serializer.validated_data, key, digest)
        except IntegrityError:
            # A concurrent request with this key committed first.
            replay = self._replay(request.user, key, digest) if key else None
            if replay is None:
                raise
            return replay

    def _replay(self, user, key: str, digest: str) -> Response | None:
        previous = list(
            Notification.objects.filter(created_by=user, idempotency_key=key).order_by(
                "position"
            )
        )
        if not previous:
            return None
        if previous[0].request_hash != digest:
            raise IdempotencyConflict()
        if previous[0].batch_id is None:
            return _single_answer(previous[0])
        return _bulk_answer(previous[0].batch_id, previous)

    def _send(self, request, data: dict, key: str, digest: str) -> Response:
        number = _active_number(data.get("number"))
        team = self._team(data.get("team"), number)
        template = services.notification_template(
            number=number,
            name=data["template"]["name"],
            language=data["template"]["language"],
            purpose=data["purpose"],
        )
        parameters = services.notification_parameters(
            template, data.get("parameters") or {}, data.get("document")
        )
        order = services.NotificationOrder(
            number=number,
            template=template,
            purpose=data["purpose"],
            parameters=parameters,
            reference=data.get("reference", ""),
            team=team,
            created_by=request.user,
            idempotency_key=key,
            request_hash=digest,
        )
        if "user_id" in data:
            notification = services.send_notification(
                order=order, user_id=data["user_id"]
            )
            return _single_answer(notification)
        if isinstance(data["to"], str):
            notification = services.send_notification(order=order, to=data["to"])
            return _single_answer(notification)
        recipients = []
        for index, item in enumerate(data["to"]):
            own = item.get("parameters")
            if own is not None:
                try:
                    own = services.notification_parameters(
                        template, own, data.get("document")
                    )
                except services.OutboundError as error:
                    error.detail = f"to[{index}]: {error.detail}"
                    raise
            recipients.append({**item, "parameters": own})
        batch, notifications = services.send_notifications(
            order=order, recipients=recipients
        )
        return _bulk_answer(batch.pk, notifications)

    def _team(self, name: str | None, number: WhatsAppNumber) -> Team | None:
        if not name:
            return None
        name = _check_text(name, "team")
        team = Team.objects.filter(name=name).first()
        if team is None:
            raise ValidationError({"team": f"No team named {name!r}."}, "invalid")
        if not number.teams.filter(pk=team.pk).exists():
            raise ValidationError(
                {"team": f"{team.name} does not work on {number.name}."}, "invalid"
            )
        return team


@extend_schema(responses={200: NotificationSerializer})
class NotificationDetail(APIView):
    """A notification's status: queued, sent, delivered, read, failed (with
    the error), or refused (with the reason)."""

    permission_classes = [CanSendNotifications]

    def get(self, request, pk: int):
        notifications = Notification.objects.select_related("message")
        if not sees_every_number(request.user):
            notifications = notifications.filter(created_by=request.user)
        notification = get_object_or_404(notifications, pk=pk)
        return Response(services.notification_payload(notification))


# --- Media for notification headers ---------------------------------------------------

# Template headers take a PDF document, an image or a video.
HEADER_MEDIA_KINDS = {
    "application/pdf": "document",
    "image/jpeg": "image",
    "image/png": "image",
    "video/mp4": "video",
    "video/3gpp": "video",
}


class MediaUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="the file: a PDF for a document header (at most 100 MB), "
        "a JPEG or PNG image (5 MB) or an MP4/3GPP video (16 MB)"
    )
    number = serializers.IntegerField(
        required=False, help_text="the WhatsApp number's id (default: the first)"
    )


class UploadedMediaSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Meta's media id, valid for 30 days")
    type = serializers.ChoiceField(choices=["document", "image", "video"])
    mime_type = serializers.CharField()
    filename = serializers.CharField()
    size = serializers.IntegerField()
    number = serializers.IntegerField()


class MediaUpload(AcceptsUpload, APIView):
    """Upload a notification's header file (a PDF, image or video) to Meta for
    a number; the answer's id goes in parameters.header.document.id (with the
    file name in parameters.header.document.filename)."""

    permission_classes = [CanSendNotifications]
    # What the request may hold at all (UPLOAD_LIMITS, refused as it
    # arrives); Meta's limit per kind is checked after (client.check_media).
    upload_kind = "header_media"
    parser_classes = [SizeLimitedMultiPartParser]

    @extend_schema(
        request={"multipart/form-data": MediaUploadSerializer},
        responses={
            201: UploadedMediaSerializer,
            400: ErrorSerializer,
            403: ErrorSerializer,
            422: OpenApiResponse(
                ErrorSerializer,
                description="media_refused: a type or size Meta refuses",
            ),
            413: OpenApiResponse(
                ErrorSerializer,
                description="too_large: the file is past the upload limit "
                "(100 MB); refused as it arrives",
            ),
            502: ErrorSerializer,
        },
    )
    def post(self, request):
        serializer = MediaUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        number = _active_number(serializer.validated_data.get("number"))
        mime_type = (upload.content_type or "").split(";")[0].strip().lower()
        if mime_type in {"", "application/octet-stream"}:
            mime_type = mimetypes.guess_type(upload.name)[0] or ""
        kind = HEADER_MEDIA_KINDS.get(mime_type)
        if kind is None:
            raise services.MediaRefused(
                "A template header takes a PDF, a JPEG or PNG image or an "
                f"MP4 video, not {mime_type or 'an unknown type'}."
            )
        data = upload.read()
        if kind == "document" and not data.startswith(b"%PDF-"):
            raise services.MediaRefused("That file is not a PDF.")
        filename = re.sub(r"[\x00-\x1f/\\]", "", upload.name or "")[:240] or "file"
        try:
            media_id = services.upload_media(
                number=number,
                kind=kind,
                data=data,
                mime_type=mime_type,
                filename=filename,
            )
        except client.GraphAPIError as error:
            raise services.UploadFailed(
                f"Meta did not take the upload: {error}"
            ) from None
        return Response(
            {
                "id": media_id,
                "type": kind,
                "mime_type": mime_type,
                "filename": filename,
                "size": len(data),
                "number": number.pk,
            },
            status=status.HTTP_201_CREATED,
        )


def _active_number(number_id: int | None) -> WhatsAppNumber:
    numbers = WhatsAppNumber.objects.filter(is_active=True)
    number = (
        numbers.filter(pk=number_id).first()
        if number_id
        else numbers.order_by("pk").first()
    )
    if number is None:
        raise ValidationError({"number": "No such active WhatsApp number."}, "invalid")
    return number


# drf-spectacular reads these when it cannot infer a serializer.
NotificationCreate.serializer_class = NotificationInputSerializer
NotificationDetail.serializer_class = NotificationSerializer
MediaUpload.serializer_class = MediaUploadSerializer
