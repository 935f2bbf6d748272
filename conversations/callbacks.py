"""Signed HTTP callbacks to the business's own systems (not Meta: see whatsapp/).

Each request carries ``X-Helpdesk-Timestamp`` (Unix seconds) and
``X-Helpdesk-Signature: t=<timestamp>,v1=<hex HMAC-SHA256>`` computed with
the endpoint's secret over ``<timestamp>.`` followed by the raw body. A
receiver recomputes it, compares in constant time and rejects timestamps
more than a few minutes old, so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import requests
from django.conf import settings

USER_AGENT = "whatsapp-helpdesk-callbacks/1"


@dataclass(frozen=True)
class Result:
    ok: bool
    status_code: int | None = None
    error: str = ""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of "<timestamp>." + body, keyed with the secret."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def headers(secret: str, body: bytes, now: float | None = None) -> dict:
    timestamp = str(int(now if now is not None else time.time()))
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Helpdesk-Timestamp": timestamp,
        "X-Helpdesk-Signature": f"t={timestamp},v1={sign(secret, timestamp, body)}",
    }


def post(url: str, secret: str, body: bytes) -> Result:
    """POST one callback; any 2xx is delivered, anything else will be retried."""
    try:
        response = requests.post(
            url,
            data=body,
            headers=headers(secret, body),
            timeout=(
                settings.BUSINESS_CALLBACK_CONNECT_TIMEOUT,
                settings.BUSINESS_CALLBACK_TIMEOUT,
            ),
            # A redirect could carry the signed body somewhere else.
            allow_redirects=False,
        )
    except requests.RequestException as error:
        return Result(False, None, f"{type(error).__name__}: {error}")
    if 200 <= response.status_code < 300:
        return Result(True, response.status_code)
    return Result(False, response.status_code, response.text[:500])
