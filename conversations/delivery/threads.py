"""The delivery threads: requests to Meta and nothing else, no database.

A run (engine.py) claims a batch and hands each customer's messages to one
thread of its pool (send_group), in order; the thread takes the limiter
slots of each send just before its request, makes the request and puts one
Outcome per message on the run's queue. The run's own thread writes the
outcomes back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import redis
from django.conf import settings

from ..rules import backoff as backoff_rules
from ..whatsapp import client
from . import attempts, ratelimit

logger = logging.getLogger(__name__)

# When a limiter cannot be asked (Redis down), try again after this long.
LIMITER_DOWN_DELAY = 5.0
# A send the number limiter told to wait asks again after at most this long.
# The log can be full only for the few milliseconds a run holds the slots
# that size its next claim; sleeping the whole answer (up to the 1.1 s
# window) then left the send idle long after the slots were given back.
NUMBER_WAIT_STEP = 0.1

SENT = "sent"
RETRY = "retry"
DEFER = "defer"
FAILED = "failed"
UNKNOWN = "unknown"
STOP = "stop"
# Never tried, and no longer the run's to write back: the sweeper took it.
WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class Job:
    message_id: int
    conversation_id: int
    recipient: str
    body: dict
    attempts: int
    # The claim that moved the row to `sending`: its token in the send-or-not
    # record (attempts.py) and the lease it wrote in next_attempt_at.
    claim: str
    lease: datetime


@dataclass
class Outcome:
    job: Job
    kind: str
    result: client.SendResult | None = None
    error: dict | None = None
    code: int | None = None
    delay: float = 0.0


# --- Backoff ----------------------------------------------------------------------


def backoff(attempts: int) -> float:
    """Seconds before the next try: exponential, capped, with jitter."""
    return backoff_rules.delay(
        attempts,
        base=settings.WHATSAPP_DELIVERY_BACKOFF_BASE,
        cap=settings.WHATSAPP_DELIVERY_BACKOFF_MAX,
        jitter=(0.5, 1.0),
    )


def pair_backoff(attempts: int) -> float:
    """Meta's schedule for 131056: 1, 4, 16, ... seconds (4^X), with jitter."""
    return backoff_rules.delay(
        attempts,
        base=1,
        factor=4,
        cap=settings.WHATSAPP_DELIVERY_BACKOFF_MAX,
        jitter=(1.0, 1.25),
    )


def send_group(
    number,
    jobs: list[Job],
    outcomes: queue.Queue,
    stop: threading.Event,
    *,
    pair_granted: int | None = None,
    pair_wait: float = 0.0,
):
    """Send one customer's jobs in order; put one Outcome per job.

    The run may already have taken this batch's pair slots in one Redis call:
    `pair_granted` of the jobs have theirs (the rest wait `pair_wait`). Each
    send takes its number slot itself, just before its request, and the grant
    marks it started (attempts.py): from then on it may have reached Meta.
    """
    held_for = 0.0
    for index, job in enumerate(jobs):
        if stop.is_set():
            outcomes.put(Outcome(job, DEFER, delay=0.0))
            continue
        if held_for:
            # An earlier message to this customer waits: keep the order.
            outcomes.put(Outcome(job, DEFER, delay=held_for))
            continue
        try:
            if pair_granted is None:
                wait = ratelimit.acquire_pair(number.phone_number_id, job.recipient)
            else:
                wait = 0.0 if index < pair_granted else max(pair_wait, 0.05)
            if wait > 0:
                held_for = wait
                outcomes.put(Outcome(job, DEFER, delay=wait))
                continue
            mark = attempts.start_mark(number.pk, job.message_id, job.claim)
            while (
                wait := ratelimit.acquire_number(
                    number.phone_number_id, number.throughput, mark=mark
                )
            ) > 0:
                time.sleep(min(wait, NUMBER_WAIT_STEP))
        except ratelimit.MarkChanged:
            # The sweeper took the send back (its lease ran out): it is not
            # this run's any more, and another run may be sending it.
            outcomes.put(Outcome(job, WITHDRAWN))
            continue
        except redis.RedisError:
            logger.warning("Rate limiter unavailable; message %s waits", job.message_id)
            outcomes.put(Outcome(job, DEFER, delay=LIMITER_DOWN_DELAY))
            continue
        outcome = _send_one(number, job)
        if outcome.code == client.PAIR_RATE_CODE:
            held_for = outcome.delay
            try:
                ratelimit.penalize_pair(number.phone_number_id, job.recipient, held_for)
            except redis.RedisError:
                logger.warning("Pair limiter not told about 131056")
        elif outcome.kind == STOP:
            stop.set()
        outcomes.put(outcome)


def _send_one(number, job: Job) -> Outcome:
    try:
        result = client.send_message(number, job.body)
    except client.AcceptedButUnknown as error:
        return Outcome(job, UNKNOWN, error=error.as_dict())
    except client.GraphAPIError as error:
        return _classify(job, error)
    except Exception as error:
        # Anything unexpected after the request may have gone out: do not
        # resend blindly.
        logger.exception("Send of message %s ended unexpectedly", job.message_id)
        return Outcome(
            job,
            UNKNOWN,
            error={"code": None, "title": "Unexpected error", "details": str(error)},
        )
    return Outcome(job, SENT, result=result)


def _classify(job: Job, error: client.GraphAPIError) -> Outcome:
    details = error.as_dict()
    if error.stops_number:
        return Outcome(job, STOP, error=details, code=error.code)
    if error.code == client.PAIR_RATE_CODE:
        return Outcome(
            job, RETRY, error=details, code=error.code, delay=pair_backoff(job.attempts)
        )
    if error.retryable:
        if job.attempts >= settings.WHATSAPP_DELIVERY_MAX_ATTEMPTS:
            return Outcome(job, FAILED, error=details, code=error.code)
        return Outcome(
            job, RETRY, error=details, code=error.code, delay=backoff(job.attempts)
        )
    return Outcome(job, FAILED, error=details, code=error.code)
