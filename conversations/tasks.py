"""Celery tasks: thin adapters. Ids in, call one service, own the retry policy.

Every task here is idempotent and acknowledged late (a killed worker's task
is redelivered); the database rows are the unit of work, and beat's sweepers
re-queue rows that should have moved and did not.
"""

import logging
from datetime import timedelta

from celery import shared_task
from django.db import DatabaseError, InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from . import services
from .delivery import engine
from .models import Message, WebhookEvent, WhatsAppNumber
from .rules import backoff
from .whatsapp import client

logger = logging.getLogger(__name__)


# --- Inbound: webhook events and media -------------------------------------------

# Errors worth an immediate retry: the database went away, a deadlock, a
# serialisation failure, a lock timeout. Anything else is a bug or bad data,
# left to the sweeper's slower, attempt-limited retries.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
# Events younger than this are left to the endpoint's own publish.
SWEEP_GRACE = timedelta(seconds=5)
# A pending event the sweeper queued is not queued again before this.
SWEEP_REQUEUE_AFTER = timedelta(minutes=2)
SWEEP_BATCH = 500


def _backoff(retries: int) -> int:
    """Seconds before retry number retries+1: 2, 4, 8, ... capped at 5 minutes."""
    return int(backoff.delay(retries + 1, base=2, cap=300))


@shared_task(
    name="conversations.tasks.process_webhook_event",
    bind=True,
    acks_late=True,
    max_retries=5,
    ignore_result=True,
)
def process_webhook_event(self, event_id: int) -> None:
    """Process a stored webhook event (services.process_webhook_event)."""
    try:
        services.process_webhook_event(event_id=event_id)
    except WebhookEvent.DoesNotExist:
        logger.warning("Webhook event %s does not exist", event_id)
    except TRANSIENT_DB_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            # Counted on the row; the sweeper takes over.
            logger.error("Webhook event %s still failing: %s", event_id, exc)
            return
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    except DatabaseError:
        logger.exception("Webhook event %s failed", event_id)
    except Exception:
        # Marked failed with attempts counted; the sweeper retries it with
        # backoff until WEBHOOK_MAX_ATTEMPTS, then an admin sees it.
        logger.exception("Webhook event %s failed", event_id)


# Most event ids one process_webhook_events message carries. Each message
# starts a drain that claims whatever is pending, so the ids only need to
# wake enough worker processes: Celery's own cost per task (~2-4 ms of CPU
# here) is paid per message, and a status storm need not pay it every 20
# events.
WEBHOOK_TASK_BATCH = 100


def event_batches(event_ids: list[int]) -> list[list[int]]:
    """event_ids in messages of at most WEBHOOK_TASK_BATCH."""
    return [
        event_ids[start : start + WEBHOOK_TASK_BATCH]
        for start in range(0, len(event_ids), WEBHOOK_TASK_BATCH)
    ]


@shared_task(
    name="conversations.tasks.process_webhook_events",
    bind=True,
    acks_late=True,
    max_retries=5,
    ignore_result=True,
)
def process_webhook_events(self, event_ids: list[int]) -> None:
    """Drain stored webhook events in claimed batches (services.drain_webhook_events).

    What the endpoint's doorbell and the sweeper queue. The ids wake a
    worker; the drain claims every pending event, customers' messages
    first, plus the named ones that failed before (the sweeper's retries).
    A drain that ran out of time with events left queues another, so no
    worker process is held for long. Redelivered after a worker died, it
    finds the dead worker's batch pending again and claims it.
    """
    try:
        more = services.drain_webhook_events(event_ids=event_ids)
    except TRANSIENT_DB_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            # Still stored and pending or failed: the sweeper takes over.
            logger.error("Webhook events %s still failing: %s", event_ids, exc)
            return
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if more:
        process_webhook_events.delay([])


@shared_task(name="conversations.tasks.sweep_webhook_events", ignore_result=True)
def sweep_webhook_events() -> int:
    """Queue every stored event still pending or failed; return how many.

    This is what processes an event answered 200 while Redis was down: it
    is stored, so it is found here. Failed events wait for their backoff and
    stop after WEBHOOK_MAX_ATTEMPTS. Also applies parked statuses whose
    wamid has since been stored.
    """
    now = timezone.now()
    due = list(
        WebhookEvent.objects.filter(
            state__in=[WebhookEvent.State.PENDING, WebhookEvent.State.FAILED],
            received_at__lte=now - SWEEP_GRACE,
            attempts__lt=services.WEBHOOK_MAX_ATTEMPTS,
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("received_at")
        .values_list("id", flat=True)[:SWEEP_BATCH]
    )
    if due:
        # Not queued again while the queue is still working through them.
        WebhookEvent.objects.filter(
            pk__in=due, state=WebhookEvent.State.PENDING
        ).update(next_attempt_at=now + SWEEP_REQUEUE_AFTER)
    for batch in event_batches(due):
        process_webhook_events.delay(batch)
    try:
        services.settle_parked_statuses()
    except Exception:
        logger.exception("Settling parked statuses failed")
    return len(due)


@shared_task(
    name="conversations.tasks.download_media",
    bind=True,
    acks_late=True,
    max_retries=4,
    ignore_result=True,
)
def download_media(self, message_id: int) -> None:
    """Download and store an inbound message's media (services.download_media)."""
    try:
        services.download_media(message_id=message_id)
    except services.MediaTemporarilyUnavailable as exc:
        if self.request.retries >= self.max_retries:
            services.fail_media(message_id=message_id, reason=str(exc))
            return
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    except TRANSIENT_DB_ERRORS as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(name="conversations.tasks.sweep_media_downloads", ignore_result=True)
def sweep_media_downloads() -> int:
    """Queue downloads for inbound media still pending after a while."""
    cutoff = timezone.now() - timedelta(minutes=5)
    # Meta keeps inbound media for 7 days; older ids cannot be fetched.
    oldest = timezone.now() - timedelta(days=7)
    ids = list(
        Message.objects.filter(
            media_state=Message.MediaState.PENDING,
            created_at__lte=cutoff,
            created_at__gte=oldest,
        ).values_list("id", flat=True)[:SWEEP_BATCH]
    )
    for message_id in ids:
        download_media.delay(message_id)
    return len(ids)


# --- Agent workspace: snoozes ---------------------------------------------------------


@shared_task(name="conversations.tasks.wake_snoozed_conversations", ignore_result=True)
def wake_snoozed_conversations() -> int:
    """Reopen snoozed conversations whose time has come (beat, every minute)."""
    return services.wake_snoozed_conversations()


@shared_task(name="conversations.tasks.settle_agent_connection", ignore_result=True)
def settle_agent_connection(user_id: int) -> None:
    """An agent closed a tab: offline now unless another one opened (queued
    with the grace period as countdown)."""
    services.settle_connection(user_id=user_id)


@shared_task(name="conversations.tasks.close_stale_tabs", ignore_result=True)
def close_stale_tabs() -> int:
    """Agents whose server died with their tabs open go offline (beat)."""
    return services.close_stale_tabs()


# --- Routing: auto-assignment ------------------------------------------------------


@shared_task(
    name="conversations.tasks.assign_waiting_conversations",
    bind=True,
    max_retries=3,
    ignore_result=True,
)
def assign_waiting_conversations(self, number_id: int) -> None:
    """Assign a number's waiting conversations (rung after they commit).

    A lock timeout or a deadlock retries; anything else is left to the
    routing sweep, which runs the same thing for every number.
    """
    try:
        services.assign_waiting_conversations(number_id=number_id)
    except TRANSIENT_DB_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            logger.error("Routing of number %s still failing: %s", number_id, exc)
            return
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(name="conversations.tasks.route_conversations", ignore_result=True)
def route_conversations() -> int:
    """Give back offline agents' conversations and assign every waiting one
    (beat: covers lost doorbells, agents coming online, capacity freed)."""
    return services.route_conversations()


@shared_task(name="conversations.tasks.send_away_replies", ignore_result=True)
def send_away_replies() -> int:
    """Answer customers who wrote while closed, once per closed period (beat)."""
    return services.send_away_replies()


@shared_task(name="conversations.tasks.refresh_service_levels", ignore_result=True)
def refresh_service_levels() -> int:
    """Keep due times and window-aware escalations current (beat)."""
    return services.refresh_service_levels()


# --- Outbound: delivery, read receipts, typing, templates --------------------------


@shared_task(name="conversations.tasks.deliver_messages", ignore_result=True)
def deliver_messages(number_id: int) -> None:
    """A delivery run for one number (delivery/engine.py).

    The rows are the state: a run that dies leaves `sending` rows whose lease
    the sweeper expires, never a blind resend; so no Celery retry here.
    """
    engine.run(number_id)


@shared_task(name="conversations.tasks.deliver_message", ignore_result=True)
def deliver_message(message_id: int) -> None:
    services.deliver_message(message_id=message_id)


@shared_task(name="conversations.tasks.sweep_deliveries", ignore_result=True)
def sweep_deliveries() -> dict:
    """Settle dead workers' sends (back to `queued` if their request never
    started, else `unknown`) and ring numbers with due sends."""
    return engine.sweep()


@shared_task(
    name="conversations.tasks.send_read_receipt",
    bind=True,
    max_retries=3,
    ignore_result=True,
)
def send_read_receipt(self, message_id: int) -> None:
    """Mark a customer's message read; transient Graph errors retry."""
    try:
        services.send_read_receipt(message_id=message_id)
    except client.GraphAPIError as exc:
        if exc.retryable and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        logger.warning("Read receipt for message %s not sent: %s", message_id, exc)
    except client.AcceptedButUnknown:
        # Marking read twice is harmless, but a late one is pointless.
        logger.warning("Read receipt for message %s unanswered", message_id)


@shared_task(name="conversations.tasks.send_typing", ignore_result=True)
def send_typing(message_id: int) -> None:
    """Typing indicators are best effort: a late one would mislead."""
    try:
        services.send_typing(message_id=message_id)
    except (client.GraphAPIError, client.AcceptedButUnknown) as exc:
        logger.info("Typing indicator for message %s not sent: %s", message_id, exc)


@shared_task(name="conversations.tasks.sync_templates", ignore_result=True)
def sync_templates(number_id: int | None = None) -> int:
    number = WhatsAppNumber.objects.get(pk=number_id) if number_id else None
    return services.sync_templates(number=number)


# --- Business: signed status callbacks ----------------------------------------------


@shared_task(name="conversations.tasks.deliver_callbacks", ignore_result=True)
def deliver_callbacks(rounds: int = 20) -> int:
    """Post due status callbacks to the business (services.deliver_callbacks).

    Retry state lives in the rows (next_attempt_at), so no Celery retry here;
    the sweeper queues this again while rows are due.
    """
    tried = 0
    for _ in range(rounds):
        count = services.deliver_callbacks()
        tried += count
        if not count:
            break
    return tried


@shared_task(name="conversations.tasks.sweep_callbacks", ignore_result=True)
def sweep_callbacks() -> bool:
    """Queue a delivery run when callbacks are due (retries after backoff)."""
    if services.callbacks_due():
        deliver_callbacks.delay()
        return True
    return False


# --- Retention ------------------------------------------------------------------------


@shared_task(name="conversations.tasks.purge_expired", ignore_result=True)
def purge_expired() -> None:
    """Delete what is past its retention age (services.purge_expired)."""
    services.purge_expired()
