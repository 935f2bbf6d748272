"""The sandbox's business clock over HTTP, for the sandbox only: it posts
here, signed like a webhook with the number's app secret, when the person
trying the helpdesk asks the phone page to pretend another time
(docs/sandbox.md). Not found unless services.business_clock is enabled
(SANDBOX_CLOCK, DEBUG and a Graph API on this machine)."""

import json
from datetime import UTC, datetime

from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .. import services
from ..models import MetaApp, WhatsAppNumber
from ..rules import business_hours as rules
from ..services import business_clock
from ..whatsapp import payloads


def _refusal(code: str, detail: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"code": code, "detail": detail}, status=status)


def _moment(value) -> str | None:
    return value.isoformat() if value else None


def _reading(reading: services.business_hours.ClockReading) -> dict:
    hours = reading.hours
    return {
        "shift_seconds": round(reading.shift.total_seconds()),
        "now": _moment(reading.now),
        "time_zone": hours.time_zone if hours else "UTC",
        "hours": {"id": hours.pk, "name": hours.name} if hours else None,
        "open": reading.open,
        "closed_since": _moment(reading.closed_since),
        "next_opening": _moment(reading.next_opening),
        "next_closing": _moment(reading.next_closing),
    }


def _to(value, number: WhatsAppNumber) -> datetime:
    """An ISO moment; without an offset, in the zone of the number's hours."""
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        hours = services.business_hours.hours_of_number(number)
        zone = rules.ZoneInfo(hours.time_zone) if hours else UTC
        moment = moment.replace(tzinfo=zone)
    return moment


@csrf_exempt
@require_POST
def business_clock_view(request):
    """{"phone_number_id"} reads the clock; with "at" (ISO, business time)
    it pretends that moment, with "jump" ("closed" or "open") it goes to the
    next closing or opening of the number's hours, with "reset" back to
    real time."""
    if not business_clock.enabled():
        raise Http404
    body = request.body
    secrets = list(MetaApp.objects.values_list("app_secret", flat=True))
    secret = payloads.verify_signature(
        body, request.headers.get("X-Hub-Signature-256"), secrets
    )
    if secret is None:
        return _refusal("invalid_signature", "Sign the body as a webhook.", 403)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _refusal("invalid_body", "The body is a JSON object.")
    number = WhatsAppNumber.objects.filter(
        phone_number_id=str(data.get("phone_number_id", "")), app__app_secret=secret
    ).first()
    if number is None:
        return _refusal("unknown_number", "No number of the signing app.", 404)
    try:
        if data.get("at"):
            reading = services.move_business_clock(
                number=number, to=_to(data["at"], number)
            )
        elif data.get("jump") or data.get("reset"):
            reading = services.move_business_clock(
                number=number, jump=str(data.get("jump") or "")
            )
        else:
            reading = services.read_business_clock(number=number)
    except ValueError:
        return _refusal("invalid_clock", "'at' is an ISO date and time.")
    except services.WorkspaceError as refusal:
        return _refusal(refusal.code, refusal.detail)
    return JsonResponse(_reading(reading))
