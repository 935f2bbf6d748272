"""Errors as JSON with a stable machine-readable code next to the detail."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework.views import exception_handler as drf_exception_handler


def _first(value):
    """Return the first leaf of a nested dict/list of codes or messages."""
    while isinstance(value, dict | list):
        if not value:
            return None
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return value


def exception_handler(exc, context):
    """Return DRF's error response with a top-level ``code`` and ``detail``.

    Validation errors name the first problem in ``code``/``detail`` and keep
    every per-field message under ``errors``.
    """
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
            "errors": data,
        }
    response.data = body
    return response
