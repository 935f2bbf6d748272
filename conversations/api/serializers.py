"""The API's shapes of a conversation, a customer and a message (see /api/schema/)."""

import copy
from datetime import timedelta

from django.core.exceptions import ObjectDoesNotExist
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Team, User
from conversations import services
from conversations.models import (
    Conversation,
    Customer,
    CustomerIdentityChange,
    CustomerMerge,
    Label,
    Message,
    ServiceLevel,
)
from conversations.selectors.thread import agents_who_may_see

# Meta's customer service window: free-form replies within 24 h of the
# customer's latest message.
SERVICE_WINDOW = timedelta(hours=24)

# Structured types shown as an object named after the type, Meta's fields.
STRUCTURED_TYPES = ("location", "contacts", "interactive", "button", "order", "system")


class CustomerBriefSerializer(serializers.ModelSerializer):
    """A customer inside a conversation: enough to show and look it up."""

    name = serializers.CharField(source="display_name", read_only=True)

    class Meta:
        model = Customer
        fields = ["id", "wa_id", "user_id", "username", "name"]


class CustomerMergeSerializer(serializers.ModelSerializer):
    """Another customer found to be this one and merged into it."""

    class Meta:
        model = CustomerMerge
        fields = [
            "absorbed_customer_id",
            "absorbed_wa_id",
            "absorbed_user_id",
            "absorbed_name",
            "conversations_moved",
            "merged_at",
        ]
        read_only_fields = fields


class IdentityChangeSerializer(serializers.ModelSerializer):
    """A phone number or BSUID the customer had before Meta re-keyed them."""

    class Meta:
        model = CustomerIdentityChange
        fields = ["kind", "old_value", "new_value", "changed_at"]
        read_only_fields = fields


class CustomerSerializer(serializers.ModelSerializer):
    """A customer. Only ``name`` (the name agents typed) can be changed."""

    display_name = serializers.CharField(read_only=True)
    merges = CustomerMergeSerializer(many=True, read_only=True)
    identity_changes = IdentityChangeSerializer(many=True, read_only=True)

    class Meta:
        model = Customer
        fields = [
            "id",
            "wa_id",
            "user_id",
            "phone",
            "name",
            "profile_name",
            "display_name",
            "username",
            "country_code",
            "merges",
            "identity_changes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [f for f in fields if f != "name"]


class AllowedIdField(serializers.PrimaryKeyRelatedField):
    """An id looked up among the rows allowed for this conversation only: an
    unknown id and a forbidden one get the same refusal (`refusal`, a
    services error), so a guessed id reveals nothing about the row."""

    def __init__(self, *, refusal: type[services.WorkspaceError], **kwargs):
        self.refusal = refusal
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            return self.get_queryset().get(pk=int(data))
        except (TypeError, ValueError, ObjectDoesNotExist):
            refusal = self.refusal()
            raise serializers.ValidationError(
                refusal.detail, code=refusal.code
            ) from None


def _overdue(due_at, met, now) -> bool:
    """A step is breached when it was missed, or is still owed past its due
    time."""
    return met is False or (met is None and due_at is not None and due_at <= now)


DUE_SCHEMA = {"type": "string", "format": "date-time", "nullable": True}
# A promised step: its due time, whether it was met (null: pending or no
# promise) and whether it is breached (missed, or owed past its due time).
STEP_SCHEMA = {
    "type": "object",
    "properties": {
        "due_at": DUE_SCHEMA,
        "met": {"type": "boolean", "nullable": True},
        "breached": {"type": "boolean"},
    },
}


class ServiceLevelStateSerializer(serializers.Serializer):
    """Where a conversation stands against its service policy (read-only;
    the same row as /conversations/{id}/service-level/, with breaches
    worked out)."""

    policy = serializers.SerializerMethodField()
    due_at = serializers.DateTimeField(
        help_text="the earliest due time still owed; null: nothing owed"
    )
    attention_at = serializers.DateTimeField(
        help_text="the real deadline: the window's close when escalated, else due_at"
    )
    window_closes_at = serializers.DateTimeField()
    escalated = serializers.BooleanField(
        help_text="a reply is owed and the customer service window closes "
        "before it is due (after the window only a paid template reaches "
        "the customer)"
    )
    overdue = serializers.SerializerMethodField(
        help_text="something is owed and its due time has passed"
    )
    first_response = serializers.SerializerMethodField()
    next_response = serializers.SerializerMethodField()
    resolution = serializers.SerializerMethodField()
    updated_at = serializers.DateTimeField()

    @property
    def now(self):
        return self.context.setdefault("now", timezone.now())

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
        }
    )
    def get_policy(self, level: ServiceLevel):
        policy = level.policy
        return None if policy is None else {"id": policy.pk, "name": policy.name}

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_overdue(self, level: ServiceLevel) -> bool:
        return level.due_at is not None and level.due_at <= self.now

    def _step(self, due_at, met) -> dict:
        return {
            "due_at": serializers.DateTimeField().to_representation(due_at)
            if due_at
            else None,
            "met": met,
            "breached": _overdue(due_at, met, self.now),
        }

    @extend_schema_field(STEP_SCHEMA)
    def get_first_response(self, level: ServiceLevel) -> dict:
        return self._step(level.first_response_due_at, level.first_response_met)

    @extend_schema_field(
        {
            "type": "object",
            "description": "the pending next response (due_at, breached when "
            "past it) and the counts of next responses met and missed",
            "properties": {
                "due_at": DUE_SCHEMA,
                "breached": {"type": "boolean"},
                "met_count": {"type": "integer"},
                "missed_count": {"type": "integer"},
            },
        }
    )
    def get_next_response(self, level: ServiceLevel) -> dict:
        step = self._step(level.next_response_due_at, None)
        del step["met"]
        return step | {
            "met_count": level.next_responses_met,
            "missed_count": level.next_responses_missed,
        }

    @extend_schema_field(STEP_SCHEMA)
    def get_resolution(self, level: ServiceLevel) -> dict:
        return self._step(level.resolution_due_at, level.resolution_met)


class RatingStateSerializer(serializers.Serializer):
    """The conversation's latest satisfaction survey and the customer's
    answer (read-only; every survey: /conversations/{id}/satisfaction/)."""

    score = serializers.IntegerField(
        allow_null=True, help_text="1 to 5; null: not rated (yet)"
    )
    comment = serializers.CharField()
    rated_at = serializers.DateTimeField(source="answered_at", allow_null=True)
    commented_at = serializers.DateTimeField(allow_null=True)
    surveyed_at = serializers.DateTimeField(source="sent_at")


def newest_ratings(queryset):
    return queryset.order_by("-sent_at", "-id")


class ConversationSerializer(serializers.ModelSerializer):
    customer = CustomerBriefSerializer(read_only=True)
    # Resolved among those allowed for the conversation (see __init__).
    assignee = AllowedIdField(
        refusal=services.AssigneeNotAllowed,
        queryset=User.objects.none(),
        allow_null=True,
        required=False,
        help_text="an active agent who may see the conversation's number; any "
        "other id (unknown or not) is 400 assignee_not_allowed",
    )
    team = AllowedIdField(
        refusal=services.TeamNotAllowed,
        queryset=Team.objects.none(),
        allow_null=True,
        required=False,
        help_text="a team the conversation's number is open to; any other id "
        "(unknown or not) is 400 team_not_allowed",
    )
    labels = serializers.SlugRelatedField(
        slug_field="name", many=True, queryset=Label.objects.all(), required=False
    )
    window_expires_at = serializers.SerializerMethodField()
    last_message = serializers.SerializerMethodField()
    # The business's notifications sent into this conversation (business).
    notifications = serializers.SerializerMethodField()
    service_level = serializers.SerializerMethodField()
    satisfaction = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "customer",
            "number",
            "status",
            "snoozed_until",
            "assignee",
            "team",
            "labels",
            "last_message_at",
            "last_inbound_at",
            "window_expires_at",
            "unread_count",
            "last_message",
            "referral",
            "referral_source_id",
            "group_id",
            "referral_ctwa_clid",
            "free_entry_point_expires_at",
            "first_response_at",
            "resolved_at",
            "created_at",
            "notifications",
            "service_level",
            "satisfaction",
        ]
        read_only_fields = [
            f
            for f in fields
            if f not in {"status", "snoozed_until", "assignee", "team", "labels"}
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conversation = self.instance
        if isinstance(conversation, Conversation):
            number_id = conversation.number_id
            self.fields["assignee"].queryset = agents_who_may_see(number_id)
            self.fields["team"].queryset = Team.objects.filter(numbers=number_id)

    @extend_schema_field(
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "reference": {"type": "string"},
                    "purpose": {"type": "string"},
                    "template": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "language": {"type": "string"},
                        },
                    },
                    "message": {"type": "integer", "nullable": True},
                    "created_at": {"type": "string", "format": "date-time"},
                },
            },
        }
    )
    def get_notifications(self, conversation):
        # Prefetched by the views ("notifications").
        return [
            {
                "id": n.pk,
                "reference": n.reference,
                "purpose": n.purpose,
                "template": {"name": n.template_name, "language": n.template_language},
                "message": n.message_id,
                "created_at": serializers.DateTimeField().to_representation(
                    n.created_at
                ),
            }
            for n in sorted(conversation.notifications.all(), key=lambda n: n.pk)
        ]

    @extend_schema_field(ServiceLevelStateSerializer(allow_null=True))
    def get_service_level(self, conversation):
        """Null when no service policy covers the conversation. Read with the
        conversation (the views' for_inbox joins the row and its policy)."""
        try:
            level = conversation.service_level
        except ObjectDoesNotExist:
            return None
        return ServiceLevelStateSerializer(level, context=self.context).data

    @extend_schema_field(RatingStateSerializer(allow_null=True))
    def get_satisfaction(self, conversation):
        """Null when no survey was sent. The views prefetch the ratings
        newest first (RATINGS_NEWEST_FIRST); one read otherwise."""
        ratings = getattr(conversation, "ratings_newest_first", None)
        if ratings is None:
            ratings = newest_ratings(conversation.satisfaction_ratings.all())[:1]
        return RatingStateSerializer(ratings[0]).data if ratings else None

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_window_expires_at(self, conversation):
        if conversation.last_inbound_at is None:
            return None
        return serializers.DateTimeField().to_representation(
            conversation.last_inbound_at + SERVICE_WINDOW
        )

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "id": {"type": "integer"},
                "direction": {"type": "string"},
                "type": {"type": "string"},
                "text": {"type": "string"},
            },
        }
    )
    def get_last_message(self, conversation):
        message = conversation.last_message
        if message is None:
            return None
        return {
            "id": message.pk,
            "direction": message.direction,
            "type": message.type,
            "text": message.text,
        }


def fresh_fields(fields: dict) -> dict:
    """The fields of one serializer instance, copied from a class's set.

    DRF deep-copies every field for every instance, and a field's deep copy
    runs its __init__ again: for a message's answer that cost more CPU than
    serialising it. A plain field keeps nothing of a request but what
    bind() sets on it, so a shallow copy is as good; nested serializers
    (which bind their own fields) are still deep-copied.
    """
    return {
        name: copy.deepcopy(field)
        if isinstance(field, serializers.BaseSerializer)
        else copy.copy(field)
        for name, field in fields.items()
    }


class FreshFields:
    """A Serializer whose instances copy its declared fields with fresh_fields."""

    def get_fields(self):
        return fresh_fields(self._declared_fields)


class ReactionSerializer(serializers.Serializer):
    emoji = serializers.CharField()
    direction = serializers.CharField()


def _structured(kind: str):
    @extend_schema_field({"type": "object", "nullable": True})
    def getter(self, message):
        if message.type != kind:
            return None
        if kind == "contacts":
            # Meta's contacts is a list: inbound payloads keep it under its
            # name, outbound ones are the list itself.
            if isinstance(message.payload, list):
                return message.payload
            return message.payload.get("contacts", [])
        return message.payload

    getter.__name__ = f"get_{kind}"
    return getter


class MessageSerializer(serializers.ModelSerializer):
    error = serializers.JSONField(read_only=True)
    reactions = serializers.SerializerMethodField()
    media = serializers.SerializerMethodField()
    template = serializers.SerializerMethodField()
    location = serializers.SerializerMethodField()
    contacts = serializers.SerializerMethodField()
    interactive = serializers.SerializerMethodField()
    button = serializers.SerializerMethodField()
    order = serializers.SerializerMethodField()
    system = serializers.SerializerMethodField()

    get_location = _structured("location")
    get_contacts = _structured("contacts")
    get_interactive = _structured("interactive")
    get_button = _structured("button")
    get_order = _structured("order")
    get_system = _structured("system")

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation",
            "direction",
            "type",
            "text",
            "status",
            "wamid",
            "timestamp",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "error",
            "reply_to",
            "context_wamid",
            "forwarded",
            "frequently_forwarded",
            "referred_product",
            "group_sender",
            "from_business_app",
            "edited_at",
            "revoked_at",
            "edit_history",
            "reactions",
            "media",
            "referral",
            "template",
            "pricing",
            "sender",
            "created_at",
            *STRUCTURED_TYPES,
        ]
        read_only_fields = fields

    def get_fields(self):
        # Building a ModelSerializer's fields from the model's options costs
        # more CPU than serialising a message, and they are the same for
        # every instance (all read-only, no context): built once per class,
        # then copied as DRF copies declared fields.
        cls = type(self)
        if "_built_fields" not in cls.__dict__:
            cls._built_fields = super().get_fields()
        return fresh_fields(cls._built_fields)

    @extend_schema_field(ReactionSerializer(many=True))
    def get_reactions(self, message):
        if self.context.get("just_queued"):
            # A message the request itself queued: nobody reacted to it yet.
            return []
        # Removed reactions stay as tombstones with an empty emoji.
        return [
            {"emoji": reaction.emoji, "direction": reaction.direction}
            for reaction in message.reactions.all()
            if reaction.emoji
        ]

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "state": {"type": "string"},
                "mime_type": {"type": "string"},
                "filename": {"type": "string"},
                "size": {"type": "integer", "nullable": True},
                "sha256": {"type": "string"},
                "url": {"type": "string", "nullable": True},
            },
        }
    )
    def get_media(self, message):
        if not message.media_state:
            return None
        url = None
        if message.media_state == Message.MediaState.STORED:
            url = reverse("conversations:message-media", args=[message.pk])
            request = self.context.get("request")
            if request is not None:
                url = request.build_absolute_uri(url)
        return {
            "state": message.media_state,
            "mime_type": message.media_mime_type,
            "filename": message.media_filename,
            "size": message.media_size,
            "sha256": message.media_sha256,
            "url": url,
        }

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "language": {"type": "string"},
            },
        }
    )
    def get_template(self, message):
        template = message.template
        if template is None:
            return None
        return {"id": template.pk, "name": template.name, "language": template.language}
