"""Stored webhook POSTs become work: each is parsed once, its items handed to
the service of their kind, and the event ends processed, malformed,
unroutable or failed (retried with backoff).

Meta redelivers, batches and reorders, so everything called from here is
idempotent: messages are inserted against the unique wamid (never checked
first), customers and conversations lean on their unique constraints,
statuses only move forward, and a whole event is processed in one
transaction with its row locked, so two workers handed the same event
process it once.
"""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import realtime
from ..models import (
    WebhookEvent,
    WhatsAppNumber,
)
from ..rules import backoff
from ..whatsapp import payloads
from . import consent, inbound, numbers, statuses, templates

logger = logging.getLogger(__name__)


# Attempts after which the sweeper leaves a failed event to an admin.
WEBHOOK_MAX_ATTEMPTS = 8


def webhook_retry_delay(attempts: int) -> timedelta:
    """Return how long a failed event waits before its next attempt."""
    return timedelta(seconds=backoff.delay(attempts, base=30, cap=3600))


def process_webhook_event(*, event_id: int, force: bool = False) -> WebhookEvent:
    """Process one stored webhook POST: every item in it, in Meta's order.

    The event ends processed, malformed (not Meta's JSON: kept, never
    retried), unroutable (some items name a number or field the helpdesk does
    not handle: what could be processed was, the rest is listed in
    last_error) or, when an exception escapes, failed with attempts counted
    and the exception re-raised for the task's retry policy. Events already
    processed or malformed are left alone unless ``force`` is set.
    """
    try:
        with transaction.atomic():
            # The row lock makes a second worker handed the same event wait,
            # then find it processed.
            event = WebhookEvent.objects.select_for_update().get(pk=event_id)
            done = {WebhookEvent.State.PROCESSED, WebhookEvent.State.MALFORMED}
            if event.state in done and not force:
                return event
            try:
                batch = payloads.parse(bytes(event.body))
            except payloads.MalformedPayload as exc:
                _finish_event(event, WebhookEvent.State.MALFORMED, str(exc))
                return event
            # The batch's live events go out in one INSERT.
            with realtime.batched():
                problems = _process_batch(batch, received_at=event.received_at)
            state = (
                WebhookEvent.State.UNROUTABLE
                if problems
                else WebhookEvent.State.PROCESSED
            )
            _finish_event(event, state, "\n".join(problems))
            return event
    except WebhookEvent.DoesNotExist:
        raise
    except Exception as exc:
        _record_event_failure(event_id, exc)
        raise


def _finish_event(event: WebhookEvent, state: str, error: str) -> None:
    event.state = state
    event.last_error = error
    event.processed_at = timezone.now()
    event.next_attempt_at = None
    event.save(update_fields=["state", "last_error", "processed_at", "next_attempt_at"])


def _record_event_failure(event_id: int, exc: Exception) -> None:
    """Count a failed attempt on the event in a transaction of its own."""
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.select_for_update().get(pk=event_id)
            event.attempts += 1
            event.state = WebhookEvent.State.FAILED
            event.last_error = f"{type(exc).__name__}: {exc}"[:4000]
            event.next_attempt_at = timezone.now() + webhook_retry_delay(event.attempts)
            event.save(
                update_fields=["attempts", "state", "last_error", "next_attempt_at"]
            )
    except Exception:
        # The database itself may be what failed; the sweeper retries pending
        # and failed rows alike.
        logger.warning("Could not record failure of event %s", event_id, exc_info=True)


def _process_batch(batch: payloads.WebhookBatch, *, received_at: datetime) -> list[str]:
    """Hand every item to its service; return what could not be handled."""
    # Every number the batch names, by phone-number id or by WABA, in one query.
    phone_number_ids = set(batch.phone_number_ids)
    waba_ids = {item.waba_id for item in batch.items if getattr(item, "waba_id", "")}
    by_id: dict[str, WhatsAppNumber] = {}
    by_waba: dict[str, list[WhatsAppNumber]] = {}
    if phone_number_ids or waba_ids:
        for number in WhatsAppNumber.objects.filter(
            Q(phone_number_id__in=phone_number_ids) | Q(waba_id__in=waba_ids)
        ):
            if number.phone_number_id in phone_number_ids:
                by_id[number.phone_number_id] = number
            if number.waba_id in waba_ids:
                by_waba.setdefault(number.waba_id, []).append(number)

    problems: list[str] = []
    for item in batch.items:
        if isinstance(item, payloads.UnparsableItem):
            problems.append(f"Unreadable {item.kind}: {item.error}")
            continue
        if isinstance(item, payloads.UnhandledChange):
            problems.append(f"Unhandled change field {item.field!r}")
            continue
        phone_number_id = getattr(item, "phone_number_id", None)
        if phone_number_id is not None:
            number = by_id.get(phone_number_id)
            if number is None:
                problems.append(
                    f"Unknown phone_number_id {phone_number_id!r} "
                    f"({type(item).__name__})"
                )
                continue
        elif item.waba_id in by_waba:
            number = None
        else:
            problems.append(f"Unknown WABA {item.waba_id!r} ({type(item).__name__})")
            continue

        if isinstance(item, payloads.InboundMessage):
            inbound.receive_message(
                number=number, message=item, received_at=received_at
            )
        elif isinstance(item, payloads.StatusUpdate):
            statuses.update_message_status(number=number, status=item)
        elif isinstance(item, payloads.AccountError):
            numbers.record_account_error(
                number=number, error=item, received_at=received_at
            )
        elif isinstance(item, payloads.UserPreferenceUpdate):
            consent.record_user_preference(
                number=number, update=item, received_at=received_at
            )
        elif isinstance(item, payloads.TemplateStatusUpdate):
            templates.record_template_status(update=item)
        elif isinstance(item, payloads.TemplateCategoryUpdate):
            templates.record_template_category(update=item)
        elif isinstance(item, payloads.TemplateQualityUpdate):
            templates.record_template_quality(update=item, received_at=received_at)
        elif isinstance(item, payloads.PhoneNumberQualityUpdate):
            numbers.record_phone_number_quality(
                numbers=by_waba[item.waba_id], update=item, received_at=received_at
            )
        elif isinstance(item, payloads.AccountUpdate):
            numbers.record_account_update(
                numbers=by_waba[item.waba_id], update=item, received_at=received_at
            )
        else:  # a new item class in payloads.py: keep it visible
            problems.append(f"No handler for {type(item).__name__}")
    return problems
