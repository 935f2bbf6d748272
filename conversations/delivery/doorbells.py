"""The one way the helpdesk asks Celery for work: a doorbell rung after commit.

A row is the unit of work; Celery only carries its id. So a doorbell is
rung once the transaction that wrote the row has committed (a worker must
find it), a broker that cannot be reached is logged and left to the
sweepers (the row is still there), and nothing here imports the tasks:
services ring by task name, so tasks may import services and never the
other way round.
"""

from __future__ import annotations

import functools
import logging

import redis
from celery import current_app
from django.db import transaction

from . import ratelimit

logger = logging.getLogger(__name__)

DELIVER_MESSAGES = "conversations.tasks.deliver_messages"
DOWNLOAD_MEDIA = "conversations.tasks.download_media"
SETTLE_AGENT_CONNECTION = "conversations.tasks.settle_agent_connection"
DELIVER_CALLBACKS = "conversations.tasks.deliver_callbacks"
SEND_READ_RECEIPT = "conversations.tasks.send_read_receipt"
SEND_TYPING = "conversations.tasks.send_typing"
SYNC_TEMPLATES = "conversations.tasks.sync_templates"
ASSIGN_WAITING_CONVERSATIONS = "conversations.tasks.assign_waiting_conversations"

DOORBELL_KEY = "outbound:doorbell:{}"
ROUTING_DOORBELL_KEY = "routing:doorbell:{}"
# A doorbell nobody answered (a lost task) rings again after this long.
DOORBELL_TTL = 30


def ring(task: str, *args, countdown: float | None = None) -> None:
    """Queue a task now; a broker that is down is logged, not raised."""
    try:
        current_app.send_task(task, args=args, countdown=countdown)
    except Exception:
        logger.warning("%s%r not queued; its sweeper will", task, args, exc_info=True)


def ring_after_commit(task: str, *args, countdown: float | None = None) -> None:
    """Queue a task once the current transaction commits (at once outside one)."""
    transaction.on_commit(
        functools.partial(ring, task, *args, countdown=countdown), robust=True
    )


def ring_delivery(number_id: int, *, force: bool = False) -> None:
    """Queue a delivery run for the number unless one is already queued.

    Called after commit. The key is cleared by a run before each claim, so a
    message committed while a run is going is either seen by its next claim
    or rings again. A lost task is covered by the key's expiry and the
    sweeper. `force` queues a run even so: a run that found the number
    paused left the key set, and resuming must not wait for it to expire.
    """
    try:
        fresh = ratelimit.connection().set(
            DOORBELL_KEY.format(number_id), "1", nx=not force, ex=DOORBELL_TTL
        )
    except redis.RedisError:
        logger.warning("Doorbell for number %s not rung; the sweeper will", number_id)
        return
    if fresh:
        ring(DELIVER_MESSAGES, number_id)


def ring_delivery_after_commit(number_id: int, *, force: bool = False) -> None:
    """ring_delivery once the current transaction commits."""
    transaction.on_commit(
        functools.partial(ring_delivery, number_id, force=force), robust=True
    )


def clear_delivery(number_id: int) -> None:
    """A run is about to claim: the next commit may ring again."""
    try:
        ratelimit.connection().delete(DOORBELL_KEY.format(number_id))
    except redis.RedisError:
        logger.warning("Doorbell of number %s not cleared", number_id)


def ring_routing(number_id: int) -> None:
    """Queue an auto-assignment run for the number unless one is queued.

    Called after commit; a burst of new conversations on one number rings
    one run. The run clears the key before it claims (clear_routing), so a
    conversation committed meanwhile rings again; a lost task is covered by
    the key's expiry and the routing sweep.
    """
    try:
        fresh = ratelimit.connection().set(
            ROUTING_DOORBELL_KEY.format(number_id), "1", nx=True, ex=DOORBELL_TTL
        )
    except redis.RedisError:
        logger.warning("Routing of number %s not rung; the sweep will", number_id)
        return
    if fresh:
        ring(ASSIGN_WAITING_CONVERSATIONS, number_id)


def ring_routing_after_commit(number_id: int) -> None:
    """ring_routing once the current transaction commits."""
    transaction.on_commit(functools.partial(ring_routing, number_id), robust=True)


def clear_routing(number_id: int) -> None:
    """An auto-assignment run is about to claim: the next commit may ring."""
    try:
        ratelimit.connection().delete(ROUTING_DOORBELL_KEY.format(number_id))
    except redis.RedisError:
        logger.warning("Routing doorbell of number %s not cleared", number_id)
