from django.conf import settings
from django.shortcuts import render


def locked_out(request, *args, **kwargs):
    """The answer to a login attempt while its username and address are
    locked out (django-axes' AXES_LOCKOUT_CALLABLE): 429, how long to wait,
    and who can lift the lock. Every attempt meanwhile restarts the wait."""
    cool_off = settings.AXES_COOLOFF_TIME
    response = render(
        request,
        "registration/locked_out.html",
        {
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "minutes": max(1, round(cool_off.total_seconds() / 60)),
        },
        status=429,
    )
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
