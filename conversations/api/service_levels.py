"""Service levels and satisfaction over the API: policies (read by everyone
who sees their team or label; written with
conversations.add/change/delete_servicepolicy), a conversation's standing
and ratings, teams' surveys, and the attainment and satisfaction report."""

from datetime import timedelta

from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Team
from conversations import services
from conversations.models import (
    Conversation,
    Label,
    Macro,
    SatisfactionRating,
    SatisfactionSurvey,
    ServiceLevel,
    ServicePolicy,
    sees_every_number,
)
from conversations.selectors import service_levels as attainment
from conversations.selectors.macros import macros_for

from .permissions import require_permission
from .routing import visible_teams


class ServicePolicySerializer(serializers.ModelSerializer):
    team = serializers.PrimaryKeyRelatedField(
        queryset=Team.objects.all(), allow_null=True, required=False
    )
    label = serializers.PrimaryKeyRelatedField(
        queryset=Label.objects.all(), allow_null=True, required=False
    )

    class Meta:
        model = ServicePolicy
        fields = [
            "id",
            "name",
            "team",
            "label",
            "first_response_minutes",
            "next_response_minutes",
            "resolution_minutes",
            "business_hours_only",
            "updated_at",
        ]
        read_only_fields = ["id", "updated_at"]

    def validate(self, attrs):
        if (attrs.get("team") is None) == (attrs.get("label") is None):
            raise serializers.ValidationError(
                {"team": "Give the policy to a team or to a label, not both."}
            )
        return attrs


def visible_policies(user):
    if sees_every_number(user):
        return ServicePolicy.objects.all()
    return ServicePolicy.objects.filter(
        Q(team__in=visible_teams(user)) | Q(label__isnull=False)
    )


def _save(policy: ServicePolicy, serializer: ServicePolicySerializer):
    data = serializer.validated_data
    team = data.get("team")
    if (
        team is not None
        and not visible_teams(serializer.context["user"]).filter(pk=team.pk).exists()
    ):
        raise serializers.ValidationError({"team": "Unknown team."})
    return services.save_service_policy(
        policy=policy,
        name=data["name"],
        team=team,
        label=data.get("label"),
        first_response_minutes=data.get("first_response_minutes"),
        next_response_minutes=data.get("next_response_minutes"),
        resolution_minutes=data.get("resolution_minutes"),
        business_hours_only=data.get("business_hours_only", True),
    )


class ServicePolicyList(generics.ListAPIView):
    """Service policies; POST adds one (a team's or a label's)."""

    serializer_class = ServicePolicySerializer

    def get_queryset(self):
        return visible_policies(self.request.user).order_by("name", "id")

    def post(self, request):
        require_permission(
            request, "conversations.add_servicepolicy", "add service policies"
        )
        serializer = ServicePolicySerializer(
            data=request.data, context={"user": request.user}
        )
        serializer.is_valid(raise_exception=True)
        policy = _save(ServicePolicy(), serializer)
        return Response(ServicePolicySerializer(policy).data, status=201)


class ServicePolicyDetail(APIView):
    """One policy; PUT replaces it, DELETE removes it."""

    serializer_class = ServicePolicySerializer

    def _policy(self, request, pk):
        return get_object_or_404(visible_policies(request.user), pk=pk)

    def get(self, request, pk: int):
        return Response(ServicePolicySerializer(self._policy(request, pk)).data)

    def put(self, request, pk: int):
        policy = self._policy(request, pk)
        require_permission(
            request, "conversations.change_servicepolicy", "change service policies"
        )
        serializer = ServicePolicySerializer(
            data=request.data, context={"user": request.user}
        )
        serializer.is_valid(raise_exception=True)
        return Response(ServicePolicySerializer(_save(policy, serializer)).data)

    def delete(self, request, pk: int):
        policy = self._policy(request, pk)
        require_permission(
            request, "conversations.delete_servicepolicy", "delete service policies"
        )
        policy.delete()
        return Response(status=204)


class ServiceLevelSerializer(serializers.ModelSerializer):
    class Meta:
        model = ServiceLevel
        fields = [
            "policy",
            "due_at",
            "escalated",
            "attention_at",
            "window_closes_at",
            "first_response_due_at",
            "first_response_met",
            "next_response_due_at",
            "next_responses_met",
            "next_responses_missed",
            "resolution_due_at",
            "resolution_met",
            "updated_at",
        ]


class ConversationServiceLevel(APIView):
    """Where a conversation stands against its policy (404: no policy)."""

    serializer_class = ServiceLevelSerializer

    def get(self, request, pk: int):
        conversation = get_object_or_404(
            Conversation.objects.visible_to(request.user), pk=pk
        )
        level = get_object_or_404(ServiceLevel, conversation=conversation)
        return Response(ServiceLevelSerializer(level).data)


class ServiceLevelReport(APIView):
    """Attainment (share of due steps met) and customer satisfaction by
    team, agent and day, for the last `days` (the reports page's figures,
    of the numbers the user may see)."""

    @extend_schema(
        parameters=[OpenApiParameter("days", int, description="1 to 366")],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        if not request.user.has_perm("conversations.view_reports"):
            raise PermissionDenied("This user may not see reports.")
        try:
            days = max(1, min(int(request.query_params.get("days", 30)), 366))
        except ValueError:
            raise serializers.ValidationError({"days": "A whole number."}) from None
        until = timezone.now()
        tables = attainment.build(
            request.user, since=until - timedelta(days=days), until=until
        )
        return Response({name: table.rows for name, table in tables.items()})


class SatisfactionSurveySerializer(serializers.Serializer):
    team = serializers.IntegerField(read_only=True)
    enabled = serializers.BooleanField()
    question = serializers.CharField(max_length=1024)
    button = serializers.CharField(max_length=20)
    thanks = serializers.CharField(max_length=1024, allow_blank=True)


def _survey_data(team: Team) -> dict:
    survey = SatisfactionSurvey.objects.filter(team=team).first()
    if survey is None:
        survey = SatisfactionSurvey(team=team, enabled=False)
    return {
        "team": team.pk,
        "enabled": survey.enabled,
        "question": survey.question,
        "button": survey.button,
        "thanks": survey.thanks,
    }


class TeamSatisfactionSurvey(APIView):
    """A team's satisfaction survey: on or off, and its wording."""

    serializer_class = SatisfactionSurveySerializer

    def get(self, request, pk: int):
        team = get_object_or_404(visible_teams(request.user), pk=pk)
        return Response(SatisfactionSurveySerializer(_survey_data(team)).data)

    def put(self, request, pk: int):
        team = get_object_or_404(visible_teams(request.user), pk=pk)
        require_permission(
            request,
            "conversations.change_satisfactionsurvey",
            "change satisfaction surveys",
        )
        serializer = SatisfactionSurveySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.configure_satisfaction_survey(team=team, **serializer.validated_data)
        return Response(SatisfactionSurveySerializer(_survey_data(team)).data)


class SatisfactionRatingSerializer(serializers.ModelSerializer):
    class Meta:
        model = SatisfactionRating
        fields = [
            "id",
            "message",
            "agent",
            "team",
            "sent_at",
            "score",
            "answered_at",
            "comment",
            "commented_at",
        ]


class ConversationSatisfaction(generics.ListAPIView):
    """The surveys a conversation's customer was sent and their answers,
    newest first."""

    serializer_class = SatisfactionRatingSerializer

    def get_queryset(self):
        conversation = get_object_or_404(
            Conversation.objects.visible_to(self.request.user), pk=self.kwargs["pk"]
        )
        return SatisfactionRating.objects.filter(conversation=conversation).order_by(
            "-sent_at", "-id"
        )


class MacroSerializer(serializers.ModelSerializer):
    class Meta:
        model = Macro
        fields = ["id", "name", "team", "set_team", "add_labels", "reply", "resolve"]


class RunMacroSerializer(serializers.Serializer):
    macro = serializers.IntegerField()


class ConversationMacros(APIView):
    """GET: the macros offered on a conversation; POST {"macro": id} runs
    one (all its actions or none, recorded as a note)."""

    serializer_class = RunMacroSerializer

    def _conversation(self, request, pk):
        return get_object_or_404(Conversation.objects.visible_to(request.user), pk=pk)

    @extend_schema(responses=MacroSerializer(many=True))
    def get(self, request, pk: int):
        conversation = self._conversation(request, pk)
        return Response(MacroSerializer(macros_for(conversation), many=True).data)

    @extend_schema(request=RunMacroSerializer, responses=MacroSerializer)
    def post(self, request, pk: int):
        conversation = self._conversation(request, pk)
        serializer = RunMacroSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        macro = next(
            (
                m
                for m in macros_for(conversation)
                if m.pk == serializer.validated_data["macro"]
            ),
            None,
        )
        if macro is None:
            raise serializers.ValidationError(
                {"macro": "No such macro on this conversation."}
            )
        services.run_macro(conversation=conversation, macro=macro, by=request.user)
        return Response(MacroSerializer(macro).data, status=201)
