"""Errors as JSON with a stable machine-readable code next to the detail."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from conversations.services import ServiceError

# What a refusal of the services means over HTTP, for the REST API and the
# workspace's htmx answers alike; a code not listed is the client's mistake.
HTTP_STATUS = {
    "invalid_message": 400,
    "invalid_phone": 400,
    "window_closed": 409,
    "nothing_to_mark": 409,
    "sending_paused": 409,
    "group_conversation": 409,
    "conversation_already_open": 409,
    "template_not_approved": 422,
    "template_parameters": 422,
    "template_category_mismatch": 422,
    "media_refused": 422,
    "no_consent": 422,
    "phone_required": 422,
    "upload_failed": 502,
}


def http_status(error: ServiceError) -> int:
    """The HTTP status that answers a refusal of the services."""
    return HTTP_STATUS.get(error.code, 400)


def _first(value):
    """Return the first leaf of a nested dict/list of codes or messages."""
    while isinstance(value, dict | list):
        if not value:
            return None
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return value


def _as_lists(errors):
    """Each field's problems as a list, as serializers give them, also where
    a view raised a single message for a field (a bad query filter)."""
    if isinstance(errors, dict):
        return {key: _as_lists(value) for key, value in errors.items()}
    if isinstance(errors, str):
        return [errors]
    return errors


def exception_handler(exc, context):
    """Return DRF's error response with a top-level ``code`` and ``detail``.

    Validation errors name the first problem in ``code``/``detail`` and keep
    every per-field message under ``errors``. A refusal of the services
    answers its own code, detail and extra values with http_status().
    """
    if isinstance(exc, ServiceError):
        return Response(
            {"code": exc.code, "detail": exc.detail, **exc.extra},
            status=http_status(exc),
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, Http404):
        code = "not_found"
    elif isinstance(exc, PermissionDenied):
        code = "permission_denied"
    else:
        code = getattr(exc, "default_code", "error")
        if hasattr(exc, "get_codes"):
            code = _first(exc.get_codes()) or code
    data = response.data
    if isinstance(data, dict) and set(data) <= {"detail", "code"}:
        body = {"code": str(code), "detail": str(data.get("detail", ""))}
    else:
        field = next(iter(data)) if isinstance(data, dict) and data else ""
        message = str(_first(data) or "Invalid input.")
        body = {
            "code": str(code),
            "detail": f"{field}: {message}" if field else message,
            "errors": _as_lists(data),
        }
    response.data = body
    return response
