"""The consent endpoints of /api/v1/: a consent given outside WhatsApp, and a
customer's ledger.

Recording needs the permission conversations.record_consent, and reaches
only the customers the user may see: another team's customer is the same
404 as an unknown number, and only a user who sees every number may record
consent for a number that is not a customer yet (creating it). Shapes and
codes are in the OpenAPI schema (/api/schema/) and the README's "REST API"
section.
"""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations import services
from conversations.models import ConsentRecord, Customer, sees_every_number

from .business import E164, ErrorSerializer
from .permissions import CanRecordConsent

# Sources a business or an agent may give; the customer's own (WhatsApp,
# Meta's 131050) are recorded by the helpdesk itself.
API_SOURCES = [
    ConsentRecord.Source.WEB_FORM,
    ConsentRecord.Source.CHECKOUT,
    ConsentRecord.Source.AGENT,
    ConsentRecord.Source.API,
]


class ConsentRecordSerializer(serializers.ModelSerializer):
    customer = serializers.IntegerField(source="customer_id", read_only=True)
    recorded_by = serializers.SerializerMethodField()

    class Meta:
        model = ConsentRecord
        fields = [
            "id",
            "customer",
            "purpose",
            "status",
            "source",
            "wording",
            "occurred_at",
            "recorded_at",
            "recorded_by",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "string",
            "description": "the agent's or API user's username, or `customer`",
        }
    )
    def get_recorded_by(self, record) -> str:
        if record.recorded_by is not None:
            return record.recorded_by.get_username()
        return "customer"


class ConsentInputSerializer(serializers.Serializer):
    phone = serializers.RegexField(
        E164,
        max_length=16,
        required=False,
        error_messages={
            "invalid": "Give the number in E.164 form, e.g. +4917012345678."
        },
    )
    user_id = serializers.RegexField(
        services.BSUID,
        max_length=256,
        required=False,
        help_text="the business-scoped user id (BSUID), in place of `phone`",
        error_messages={
            "invalid": "Give the business-scoped user id as Meta sent it, "
            "e.g. US.13491208655302741918."
        },
    )
    purpose = serializers.ChoiceField(choices=ConsentRecord.Purpose.choices)
    status = serializers.ChoiceField(choices=ConsentRecord.Status.choices)
    source = serializers.ChoiceField(choices=API_SOURCES, default="api")
    wording = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, default=""
    )

    def validate(self, attrs):
        if ("phone" in attrs) == ("user_id" in attrs):
            raise serializers.ValidationError(
                {"phone": "Give exactly one of phone and user_id."}, "invalid"
            )
        return attrs


def consent_customer(user, *, wa_id: str = "", user_id: str = "") -> Customer:
    """The customer a consent given outside WhatsApp is for, by phone or BSUID.

    Found among the customers the user may see; created for a new number or
    BSUID only by a user who sees every number. Anyone else gets the same
    404 for one that is not a customer and for another team's customer, so
    the API neither changes nor reveals what belongs to other teams.
    """
    if sees_every_number(user):
        return services.find_or_merge_customer(wa_id=wa_id, user_id=user_id)
    key = {"wa_id": wa_id} if wa_id else {"user_id": user_id}
    customer = Customer.objects.visible_to(user).filter(**key).first()
    if customer is None:
        raise NotFound("No such customer among those you may see.")
    return customer


@extend_schema(
    request=ConsentInputSerializer,
    description=(
        "Record a consent given outside WhatsApp (a checkout box, a web form), "
        "for a customer named by `phone` or by `user_id` (the business-scoped "
        "user id Meta sent for a customer with a username): exactly one. "
        "Needs the permission `conversations.record_consent`. The customer is "
        "looked up among those the user may see (their teams' customers); a "
        "number that is not a customer yet is created only for a user who sees "
        "every number (`conversations.view_all_numbers`, or a superuser). "
        "Anyone else gets 404 both for an unknown number and for another "
        "team's customer."
    ),
    responses={
        201: ConsentRecordSerializer,
        400: ErrorSerializer,
        403: OpenApiResponse(
            ErrorSerializer,
            description="permission_denied: no conversations.record_consent",
        ),
        404: OpenApiResponse(
            ErrorSerializer,
            description="not_found: no customer with this number that the "
            "user may see (and the user may not create one)",
        ),
    },
    examples=[
        OpenApiExample(
            "Order updates from the checkout",
            value={
                "phone": "+4917012345678",
                "purpose": "utility",
                "status": "opt_in",
                "source": "checkout",
                "wording": "Send me order updates on WhatsApp",
            },
            request_only=True,
        ),
        OpenApiExample(
            "Marketing for a customer known by username",
            value={
                "user_id": "US.13491208655302741918",
                "purpose": "marketing",
                "status": "opt_in",
                "source": "web_form",
                "wording": "Send me offers on WhatsApp",
            },
            request_only=True,
        ),
    ],
)
class ConsentCreate(APIView):
    """Record a consent given outside WhatsApp (conversations.record_consent);
    creates the customer only for a user who sees every number."""

    permission_classes = [CanRecordConsent]

    def post(self, request):
        serializer = ConsentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with transaction.atomic():
            customer = consent_customer(
                request.user,
                wa_id=data["phone"][1:] if "phone" in data else "",
                user_id=data.get("user_id", ""),
            )
            record = services.record_consent(
                customer=customer,
                purpose=data["purpose"],
                status=data["status"],
                source=data["source"],
                wording=data["wording"],
                recorded_by=request.user,
            )
        return Response(
            ConsentRecordSerializer(record).data, status=status.HTTP_201_CREATED
        )


@extend_schema(
    description=(
        "A customer's consent ledger, newest first by `occurred_at` (when the "
        "customer gave it; `recorded_at` is when the helpdesk heard of it): "
        "the first record per purpose decides. For a customer the user may "
        "see (another team's customer is 404, as an unknown id)."
    ),
)
class CustomerConsents(generics.ListAPIView):
    """A customer's consent ledger, newest first."""

    serializer_class = ConsentRecordSerializer

    def get_queryset(self):
        customer = get_object_or_404(
            Customer.objects.visible_to(self.request.user), pk=self.kwargs["pk"]
        )
        return (
            ConsentRecord.objects.filter(customer=customer)
            .select_related("recorded_by")
            .order_by("-occurred_at", "-id")
        )


# drf-spectacular reads this when it cannot infer a serializer.
ConsentCreate.serializer_class = ConsentInputSerializer
