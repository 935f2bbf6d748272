"""Read and edit endpoints of /api/v1/: an API user sees what the agent sees.

Every queryset starts from ``visible_to(request.user)``, so another team's
conversation, message, customer or media is a 404, even by guessing ids.
"""

import hashlib

from django.db import transaction
from django.db.models import F, Prefetch, Q
from django.http import FileResponse, Http404, HttpResponseNotModified
from django.shortcuts import get_object_or_404
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.views import APIView

from conversations import services
from conversations.models import (
    Conversation,
    Customer,
    Message,
    Reaction,
    SatisfactionRating,
)
from conversations.selectors.access import visible_conversation

from . import replies
from .pagination import MessageCursorPagination
from .serializers import (
    ConversationSerializer,
    CustomerSerializer,
    MessageSerializer,
    newest_ratings,
)
from .uploads import AcceptsUpload


def _int_param(request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError(
            {name: ["Must be a whole number."]}, code="invalid"
        ) from None


def visible_conversations(user):
    """Conversations a user may see, ready to serialise: the inbox's joins
    (the service level among them) plus its policy, and one read each for
    the page's labels, notifications and ratings."""
    return (
        Conversation.objects.visible_to(user)
        .for_inbox()
        .select_related("service_level__policy")
        .prefetch_related(
            "labels",
            "notifications",
            Prefetch(
                "satisfaction_ratings",
                queryset=newest_ratings(SatisfactionRating.objects.all()),
                to_attr="ratings_newest_first",
            ),
        )
    )


def visible_messages(user):
    """Messages of the conversations a user may see, ready to serialise."""
    return (
        Message.objects.filter(conversation__in=Conversation.objects.visible_to(user))
        .select_related("template")
        .prefetch_related(
            Prefetch("reactions", queryset=Reaction.objects.order_by("id"))
        )
    )


@extend_schema(
    parameters=[
        OpenApiParameter("status", str, enum=Conversation.Status.values),
        OpenApiParameter("assignee", OpenApiTypes.STR, description="agent id or none"),
        OpenApiParameter("number", int),
        OpenApiParameter("customer", int),
        OpenApiParameter("page_size", int, description="up to 200"),
    ]
)
class ConversationList(generics.ListAPIView):
    """Conversations the user may see, newest activity first."""

    serializer_class = ConversationSerializer

    def get_queryset(self):
        request = self.request
        queryset = visible_conversations(request.user).order_by(
            F("last_message_at").desc(nulls_last=True), "-id"
        )
        status_filter = request.query_params.get("status")
        if status_filter:
            if status_filter not in Conversation.Status.values:
                raise ValidationError({"status": ["Unknown status."]}, code="invalid")
            queryset = queryset.filter(status=status_filter)
        if request.query_params.get("assignee") == "none":
            queryset = queryset.filter(assignee__isnull=True)
        elif (assignee := _int_param(request, "assignee")) is not None:
            queryset = queryset.filter(assignee_id=assignee)
        if (number := _int_param(request, "number")) is not None:
            queryset = queryset.filter(number_id=number)
        if (customer := _int_param(request, "customer")) is not None:
            queryset = queryset.filter(customer_id=customer)
        return queryset


class ConversationDetail(generics.RetrieveUpdateAPIView):
    """One conversation; PATCH changes its status, assignee, team or labels."""

    serializer_class = ConversationSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return visible_conversations(self.request.user)

    def perform_update(self, serializer):
        """Apply each change through the workspace's services, all or nothing."""
        data = serializer.validated_data
        conversation = serializer.instance
        by = self.request.user
        with transaction.atomic():
            assignment = {k: data[k] for k in ("assignee", "team") if k in data}
            if assignment:
                conversation = services.assign_conversation(
                    conversation=conversation, by=by, **assignment
                )
            if "status" in data:
                conversation = services.change_status(
                    conversation=conversation,
                    status=data["status"],
                    snoozed_until=data.get("snoozed_until"),
                    by=by,
                )
            if "labels" in data:
                services.set_labels(
                    conversation=conversation, labels=data["labels"], by=by
                )
        # The services work on fresh rows; answer with the state they left.
        serializer.instance = self.get_queryset().get(pk=conversation.pk)


class ConversationMessages(AcceptsUpload, generics.ListAPIView):
    """A conversation's messages, oldest first (Meta's time), cursor-paginated.

    POST sends an agent's reply (replies.py: shapes, codes and schema), as
    JSON or, with a file, as multipart (refused past UPLOAD_LIMITS).
    """

    serializer_class = MessageSerializer
    pagination_class = MessageCursorPagination
    upload_kind = "api_reply"

    @extend_schema(**replies.POST_SCHEMA)
    def post(self, request, pk: int):
        # Every send checks the number (paused, active): read with it, in
        # one hand-written statement (the hot path of integrations).
        conversation = visible_conversation(request.user, pk)
        if conversation is None:
            raise Http404
        return replies.post_reply(
            request,
            conversation,
            # The answer is built from the row as written, not read back.
            render=lambda message: (
                MessageSerializer(
                    message,
                    context={**self.get_serializer_context(), "just_queued": True},
                ).data
            ),
        )

    def get_queryset(self):
        conversation = get_object_or_404(
            Conversation.objects.visible_to(self.request.user), pk=self.kwargs["pk"]
        )
        return visible_messages(self.request.user).filter(conversation=conversation)


class MessageDetail(generics.RetrieveAPIView):
    serializer_class = MessageSerializer

    def get_queryset(self):
        return visible_messages(self.request.user)


# Who a customer was before: merges and re-keyings, shown with the customer.
CUSTOMER_HISTORY = ("merges", "identity_changes")


@extend_schema(
    parameters=[
        OpenApiParameter("wa_id", str, description="digits as Meta sends them"),
        OpenApiParameter("user_id", str, description="business-scoped user id"),
        OpenApiParameter(
            "username", str, description="WhatsApp username, with or without '@'"
        ),
        OpenApiParameter("page_size", int, description="up to 200"),
    ]
)
class CustomerList(generics.ListAPIView):
    serializer_class = CustomerSerializer

    def get_queryset(self):
        queryset = (
            Customer.objects.visible_to(self.request.user)
            .prefetch_related(*CUSTOMER_HISTORY)
            .order_by("-id")
        )
        wa_id = self.request.query_params.get("wa_id")
        if wa_id:
            queryset = queryset.filter(wa_id=wa_id.lstrip("+"))
        user_id = self.request.query_params.get("user_id")
        if user_id:
            queryset = queryset.filter(user_id=user_id)
        username = self.request.query_params.get("username", "").lstrip("@")
        if username:
            queryset = queryset.filter(
                Q(username__iexact=username) | Q(username__iexact=f"@{username}")
            )
        return queryset


class CustomerDetail(generics.RetrieveUpdateAPIView):
    """One customer; PATCH sets the name agents see (``name``)."""

    serializer_class = CustomerSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return Customer.objects.visible_to(self.request.user).prefetch_related(
            *CUSTOMER_HISTORY
        )

    def perform_update(self, serializer):
        if "name" in serializer.validated_data:
            services.rename_customer(
                customer=serializer.instance,
                name=serializer.validated_data["name"],
                by=self.request.user,
            )


# Types a browser may show inline; everything else is a download.
INLINE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "audio/aac",
        "audio/amr",
        "audio/mpeg",
        "audio/mp4",
        "audio/ogg",
        "video/mp4",
        "video/3gpp",
    }
)
# Documents WhatsApp carries, served as attachments under their own type.
DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "text/plain",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)


# Kept by the agent's browser only, and checked with the server before each use.
MEDIA_CACHE_CONTROL = "private, no-cache"


class MessageMedia(APIView):
    """A message's stored media file, for agents who may see its conversation.

    Images, audio and video of the allowed types are shown inline; anything
    else is an attachment, never rendered by the browser as a page.
    """

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        message = get_object_or_404(
            Message.objects.filter(
                conversation__in=Conversation.objects.visible_to(request.user),
                media_state=Message.MediaState.STORED,
            ),
            pk=pk,
        )
        if not message.media_file:
            raise Http404
        # Browsers revalidate on every view, so media is gone for an agent
        # the moment their access is; an unchanged file answers 304.
        etag = '"{}"'.format(
            message.media_sha256
            or hashlib.sha256(message.media_file.name.encode()).hexdigest()
        )
        if etag in parse_etags(request.headers.get("If-None-Match", "")):
            response = HttpResponseNotModified()
            response["ETag"] = etag
            response["Cache-Control"] = MEDIA_CACHE_CONTROL
            return response
        mime_type = message.media_mime_type.split(";")[0].strip().lower()
        inline = mime_type in INLINE_TYPES
        if not inline and mime_type not in DOCUMENT_TYPES:
            mime_type = "application/octet-stream"
        filename = message.media_filename or message.media_file.name.rsplit("/", 1)[-1]
        response = FileResponse(
            message.media_file.open("rb"),
            content_type=mime_type,
            as_attachment=not inline,
            filename=filename,
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = MEDIA_CACHE_CONTROL
        response["ETag"] = etag
        return response


# Keeps drf-spectacular from guessing a serializer for the binary view.
MessageMedia.serializer_class = serializers.Serializer
