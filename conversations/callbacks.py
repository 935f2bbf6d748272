"""Signed HTTP callbacks to the business's own systems (not Meta: see whatsapp/).

Each request carries ``X-Helpdesk-Timestamp`` (Unix seconds) and
``X-Helpdesk-Signature: t=<timestamp>,v1=<hex HMAC-SHA256>`` computed with
the endpoint's secret over ``<timestamp>.`` followed by the raw body. A
receiver recomputes it, compares in constant time and rejects timestamps
more than a few minutes old, so a captured request cannot be replayed.

The URLs are an admin's (CallbackEndpoint), and the helpdesk's network is
not theirs to reach through it: a URL that resolves to a loopback, private,
link-local or otherwise internal address is refused (server-side request
forgery), checked by requests-hardened on the address the connection is
then made to, so a name that resolves elsewhere the second time (DNS
rebinding) cannot dodge it. BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES turns
the check off for business systems on the helpdesk's own private network.
Redirects are not followed, and of an endpoint's refusal only the first
ERROR_BODY_BYTES are read.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import requests
import urllib3
from django.conf import settings
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress

USER_AGENT = "whatsapp-helpdesk-callbacks/1"
# What is read of a refusal's body and kept as the delivery's last error:
# enough to say why, never whatever an endpoint chooses to send.
ERROR_BODY_BYTES = 1024


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


def session() -> requests.Session:
    """A session that connects only to public addresses (unless allowed)."""
    timeout = (
        settings.BUSINESS_CALLBACK_CONNECT_TIMEOUT,
        settings.BUSINESS_CALLBACK_TIMEOUT,
    )
    return HTTPSession(
        Config(
            ip_filter_enable=not settings.BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES,
            ip_filter_allow_loopback_ips=False,
            # A redirect could carry the signed body somewhere else.
            never_redirect=True,
            default_timeout=timeout,
        )
    )


def post(url: str, secret: str, body: bytes) -> Result:
    """POST one callback; any 2xx is delivered, anything else will be retried."""
    try:
        with (
            session() as http,
            http.post(
                url,
                data=body,
                headers=headers(secret, body),
                allow_redirects=False,
                stream=True,
            ) as response,
        ):
            if 200 <= response.status_code < 300:
                return Result(True, response.status_code)
            return Result(False, response.status_code, _start_of_body(response))
    except InvalidIPAddress as error:
        return Result(
            False,
            None,
            f"Refused: the endpoint's host resolves to {error}, a loopback, "
            "private or link-local address "
            "(BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES is off)",
        )
    except requests.RequestException as error:
        return Result(
            False, None, f"{type(error).__name__}: {error}"[:ERROR_BODY_BYTES]
        )


def _start_of_body(response: requests.Response) -> str:
    """The first ERROR_BODY_BYTES of a refusal, as text; the rest is not read."""
    try:
        start = response.raw.read(ERROR_BODY_BYTES, decode_content=True)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        return f"The answer's body could not be read: {type(error).__name__}"
    return start[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
