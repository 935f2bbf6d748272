"""The sandbox's business clock: how far business hours (and the away reply
and service levels, which read them) run ahead of real time, so a person
trying the helpdesk against the WhatsApp sandbox sees out-of-hours
behaviour without waiting (docs/sandbox.md).

It is off unless the SANDBOX_CLOCK setting is on, DEBUG is on and the Graph
API is on this machine (the sandbox at a loopback address); otherwise the
shift is zero, whatever is stored, and nothing is read. The shift is one
Redis key without expiry; Redis unreachable reads as zero. Only schedules
are shifted (rules/business_hours.Schedule.shift): messages, customer
service windows and every other time stay real.
"""

import logging
from datetime import timedelta
from urllib.parse import urlsplit

import redis
from django.conf import settings

from ..delivery import ratelimit

logger = logging.getLogger(__name__)

KEY = "sandbox:business-clock-shift"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# A clock moved further than this is a mistake, not a demonstration.
MAX_SHIFT = timedelta(days=400)


def enabled() -> bool:
    """Whether the clock may be moved and is read (see the module's doc)."""
    host = urlsplit(settings.WHATSAPP_GRAPH_API_URL).hostname or ""
    return bool(
        getattr(settings, "SANDBOX_CLOCK", False)
        and settings.DEBUG
        and host in LOOPBACK_HOSTS
    )


def shift() -> timedelta:
    """How far business hours run ahead of real time (zero when off)."""
    if not enabled():
        return timedelta(0)
    try:
        stored = ratelimit.connection().get(KEY)
    except redis.RedisError:
        logger.warning("Business clock not read; business hours use real time")
        return timedelta(0)
    try:
        return timedelta(seconds=float(stored)) if stored else timedelta(0)
    except ValueError:
        return timedelta(0)


def store_shift(value: timedelta) -> None:
    """Keep the shift (zero clears it); only when enabled."""
    if not enabled():
        raise RuntimeError("The sandbox's business clock is off")
    connection = ratelimit.connection()
    if value:
        connection.set(KEY, str(value.total_seconds()))
    else:
        connection.delete(KEY)
