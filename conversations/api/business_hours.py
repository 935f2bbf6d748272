"""Business hours over the API: when teams and numbers are open, their
holidays and away reply.

Anyone may read the hours of the teams they belong to and of the numbers
they may see; creating and replacing them needs
conversations.add_businesshours / change_businesshours, as in the admin.
"""

from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response

from accounts.models import validate_time_zone
from conversations import services
from conversations.models import BusinessHours, WhatsAppNumber, sees_every_number
from conversations.rules import business_hours as rules

from .permissions import require_permission
from .routing import visible_teams


def visible_hours(user):
    hours = BusinessHours.objects.prefetch_related("opening_hours", "holidays")
    if sees_every_number(user):
        return hours.order_by("name", "id")
    numbers = WhatsAppNumber.objects.visible_to(user)
    return hours.filter(
        Q(team__in=visible_teams(user)) | Q(number__in=numbers)
    ).order_by("name", "id")


class OpeningHoursSerializer(serializers.Serializer):
    weekday = serializers.IntegerField(
        min_value=0, max_value=6, help_text="0 Monday … 6 Sunday"
    )
    opens = serializers.TimeField(format="%H:%M")
    closes = serializers.TimeField(format="%H:%M", help_text="00:00: midnight")


class HolidaySerializer(serializers.Serializer):
    date = serializers.DateField()
    name = serializers.CharField(max_length=100, allow_blank=True, default="")


class BusinessHoursSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=100)
    time_zone = serializers.CharField(max_length=64, validators=[validate_time_zone])
    team = serializers.IntegerField(allow_null=True, required=False)
    number = serializers.IntegerField(allow_null=True, required=False)
    away_message = serializers.CharField(max_length=4096, allow_blank=True, default="")
    opening_hours = OpeningHoursSerializer(many=True)
    holidays = HolidaySerializer(many=True, default=list)
    open_now = serializers.BooleanField(read_only=True)
    next_opening = serializers.DateTimeField(read_only=True, allow_null=True)

    def validate(self, attrs):
        problem = rules.interval_problem(
            [(i["weekday"], i["opens"], i["closes"]) for i in attrs["opening_hours"]]
        )
        if problem:
            raise serializers.ValidationError({"opening_hours": problem})
        return attrs


def represent(hours: BusinessHours) -> dict:
    return BusinessHoursSerializer(_fields(hours)).data


def _fields(hours: BusinessHours) -> dict:
    schedule = services.schedule_of(hours)
    now = timezone.now()
    return {
        "id": hours.pk,
        "name": hours.name,
        "time_zone": hours.time_zone,
        "team": hours.team_id,
        "number": hours.number_id,
        "away_message": hours.away_message,
        "opening_hours": [
            {"weekday": i.weekday, "opens": i.opens, "closes": i.closes}
            for i in hours.opening_hours.all()
        ],
        "holidays": [{"date": h.date, "name": h.name} for h in hours.holidays.all()],
        "open_now": rules.is_open(schedule, now),
        "next_opening": rules.next_opening(schedule, now),
    }


def _save(hours: BusinessHours, data: dict) -> BusinessHours:
    return services.save_business_hours(
        hours=hours,
        name=data["name"],
        time_zone=data["time_zone"],
        away_message=data["away_message"],
        opening_hours=[
            (i["weekday"], i["opens"], i["closes"]) for i in data["opening_hours"]
        ],
        holidays=[(h["date"], h["name"]) for h in data["holidays"]],
    )


class BusinessHoursList(generics.GenericAPIView):
    """Business hours of the teams and numbers the user may see; POST adds
    hours to one team or one number (`team` or `number`, not both)."""

    serializer_class = BusinessHoursSerializer

    def get_queryset(self):
        return visible_hours(self.request.user)

    @extend_schema(
        operation_id="api_v1_business_hours_list",
        responses=BusinessHoursSerializer(many=True),
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([represent(hours) for hours in page])

    def post(self, request):
        require_permission(
            request, "conversations.add_businesshours", "add business hours"
        )
        serializer = BusinessHoursSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team_id, number_id = data.get("team"), data.get("number")
        if (team_id is None) == (number_id is None):
            raise serializers.ValidationError(
                {"team": "Give the hours to a team or to a number, not both."}
            )
        hours = BusinessHours()
        if team_id is not None:
            hours.team = get_object_or_404(visible_teams(request.user), pk=team_id)
            if BusinessHours.objects.filter(team=hours.team).exists():
                raise serializers.ValidationError(
                    {"team": "This team has hours already."}
                )
        else:
            hours.number = get_object_or_404(
                WhatsAppNumber.objects.visible_to(request.user), pk=number_id
            )
            if BusinessHours.objects.filter(number=hours.number).exists():
                raise serializers.ValidationError(
                    {"number": "This number has hours already."}
                )
        hours = _save(hours, data)
        return Response(
            represent(visible_hours(request.user).get(pk=hours.pk)), status=201
        )


class BusinessHoursDetail(generics.GenericAPIView):
    """One schedule; PUT replaces its hours, holidays and away reply."""

    serializer_class = BusinessHoursSerializer

    def get_queryset(self):
        return visible_hours(self.request.user)

    def get(self, request, pk: int):
        return Response(represent(self.get_object()))

    @extend_schema(request=BusinessHoursSerializer, responses=BusinessHoursSerializer)
    def put(self, request, pk: int):
        hours = self.get_object()
        require_permission(
            request, "conversations.change_businesshours", "change business hours"
        )
        serializer = BusinessHoursSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        _save(hours, serializer.validated_data)
        return Response(represent(self.get_queryset().get(pk=hours.pk)))
