"""Errors as JSON with a stable machine-readable code next to the detail."""

from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Return DRF's error response with a top-level ``code`` and ``detail``.

    Validation errors keep their per-field messages under ``errors``.
    """
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    code = getattr(exc, "default_code", "error")
    if hasattr(exc, "get_codes"):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    if isinstance(data, dict) and "detail" in data:
        body = {"code": str(code), "detail": str(data["detail"])}
        body.update({k: v for k, v in data.items() if k not in ("detail", "code")})
    else:
        body = {"code": str(code), "detail": "Invalid input.", "errors": data}
    response.data = body
    return response
