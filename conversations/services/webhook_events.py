"""Stored webhook POSTs become work: each is parsed once, its items handed to
the service of their kind, and the event ends processed, malformed,
unroutable or failed (retried with backoff).

An event acts only on the numbers of the Meta app that signed it: any app's
secret passes the endpoint, and the holder of one app's secret (an agency's,
a second brand's, a leaked test app's) must not write messages, statuses,
consent or account changes for another app's numbers.

Meta redelivers, batches and reorders, so everything called from here is
idempotent: messages are inserted against the unique wamid (never checked
first), customers and conversations lean on their unique constraints,
statuses only move forward, and a whole event is processed in one
transaction with its row locked, so two workers handed the same event
process it once.
"""

import logging
from datetime import datetime, timedelta

from django.db import DataError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .. import realtime
from ..models import (
    MetaApp,
    WebhookEvent,
    WhatsAppNumber,
)
from ..rules import backoff
from ..whatsapp import payloads
from . import consent, echoes, history, inbound, statuses, templates
from . import numbers as numbers_service

logger = logging.getLogger(__name__)


# Attempts after which the sweeper leaves a failed event to an admin.
WEBHOOK_MAX_ATTEMPTS = 8

# A value a column refuses (too long, NUL, a lone surrogate): payloads.py
# stops them, and one it misses fails its item, never the event, because
# retrying cannot make it fit.
UNFIT_VALUE_ERRORS = (DataError, UnicodeEncodeError)
# One line of last_error, for admins; the item's JSON is in the body.
PROBLEM_MAX_LENGTH = 500


def webhook_retry_delay(attempts: int) -> timedelta:
    """Return how long a failed event waits before its next attempt."""
    return timedelta(seconds=backoff.delay(attempts, base=30, cap=3600))


def process_webhook_event(*, event_id: int, force: bool = False) -> WebhookEvent:
    """Process one stored webhook POST: every item in it, in Meta's order.

    The event ends processed, malformed (not Meta's JSON: kept, never
    retried), unroutable (some items could not be read, or name a number,
    account or change field the helpdesk does not handle or that is not the
    signing app's: what could be processed was, the rest is listed in
    last_error) or, when an exception escapes, failed with attempts counted
    and the exception re-raised for the task's retry policy. A value that a
    column refuses fails only its item: the event is processed again with
    each item on its own, and the refused ones are listed. Events already
    processed or malformed are left alone unless ``force`` is set.

    Items are routed only to numbers of the app that signed the event
    (``WebhookEvent.app``, recorded by the endpoint since the first
    migration, so older events are held to the same rule). An event whose
    app has since been deleted routes nothing: what that app was allowed is
    no longer known, and an app is deleted only once no number uses it.
    """
    try:
        try:
            return _process_event(event_id, force=force, apart=False)
        except UNFIT_VALUE_ERRORS as exc:
            logger.error(
                "Webhook event %s holds a value a column refuses (%s: %s); "
                "processing its items one by one",
                event_id,
                type(exc).__name__,
                exc,
            )
            return _process_event(event_id, force=force, apart=True)
    except WebhookEvent.DoesNotExist:
        raise
    except Exception as exc:
        _record_event_failure(event_id, exc)
        raise


def _process_event(event_id: int, *, force: bool, apart: bool) -> WebhookEvent:
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
        if apart:
            problems = _process_apart(
                batch, signer_id=event.app_id, received_at=event.received_at
            )
        else:
            # The batch's live events go out in one INSERT.
            with realtime.batched():
                problems = _process_batch(
                    batch, signer_id=event.app_id, received_at=event.received_at
                )
        state = (
            WebhookEvent.State.UNROUTABLE if problems else WebhookEvent.State.PROCESSED
        )
        _finish_event(event, state, "\n".join(problems))
        return event


def _process_apart(
    batch: payloads.WebhookBatch, *, signer_id: int | None, received_at: datetime
) -> list[str]:
    """_process_batch with each item in a savepoint of its own; an item that
    a column refuses is listed and the others are kept."""
    problems: list[str] = []
    for item in batch.items:
        try:
            with transaction.atomic():
                problems += _process_batch(
                    payloads.WebhookBatch(items=(item,)),
                    signer_id=signer_id,
                    received_at=received_at,
                )
        except UNFIT_VALUE_ERRORS as exc:
            problems.append(
                _problem(
                    f"Unstorable {type(item).__name__}: {type(exc).__name__}: {exc}"
                )
            )
    return problems


def _problem(text: str) -> str:
    text = " ".join(text.replace("\x00", "").split())
    if len(text) > PROBLEM_MAX_LENGTH:
        text = text[: PROBLEM_MAX_LENGTH - 1] + "…"
    return text


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
            event.last_error = f"{type(exc).__name__}: {exc}"[:4000].replace("\x00", "")
            event.next_attempt_at = timezone.now() + webhook_retry_delay(event.attempts)
            event.save(
                update_fields=["attempts", "state", "last_error", "next_attempt_at"]
            )
    except Exception:
        # The database itself may be what failed; the sweeper retries pending
        # and failed rows alike.
        logger.warning("Could not record failure of event %s", event_id, exc_info=True)


def _numbers_named(
    batch: payloads.WebhookBatch, signer_id: int | None
) -> tuple[dict[str, WhatsAppNumber], dict[str, list[WhatsAppNumber]]]:
    """Every number the batch names, by phone-number id and by WABA, in one
    query; each marked ``signed`` when the signing app may act on it.

    That is when its app is the signing app, or another app row with the
    same secret (numbers added without an app id get an app row each): a
    signature is only evidence of the secret.
    """
    phone_number_ids = set(batch.phone_number_ids)
    waba_ids = {item.waba_id for item in batch.items if getattr(item, "waba_id", "")}
    by_id: dict[str, WhatsAppNumber] = {}
    by_waba: dict[str, list[WhatsAppNumber]] = {}
    if not (phone_number_ids or waba_ids):
        return by_id, by_waba
    signers = MetaApp.objects.filter(
        pk=signer_id, app_secret=OuterRef("app__app_secret")
    ).exclude(app_secret="")
    for number in WhatsAppNumber.objects.filter(
        Q(phone_number_id__in=phone_number_ids) | Q(waba_id__in=waba_ids)
    ).annotate(signed=Exists(signers)):
        if number.phone_number_id in phone_number_ids:
            by_id[number.phone_number_id] = number
        if number.waba_id in waba_ids:
            by_waba.setdefault(number.waba_id, []).append(number)
    return by_id, by_waba


def _process_batch(
    batch: payloads.WebhookBatch, *, signer_id: int | None, received_at: datetime
) -> list[str]:
    """Hand every item to its service; return what could not be handled."""
    by_id, by_waba = _numbers_named(batch, signer_id)
    not_signer = (
        "not one of the signing app's" if signer_id else "the signing app is gone"
    )
    problems: list[str] = []
    for item in batch.items:
        kind = type(item).__name__
        if isinstance(item, payloads.UnparsableItem):
            problems.append(_problem(f"Unreadable {item.kind}: {item.error}"))
            continue
        if isinstance(item, payloads.UnhandledChange):
            problems.append(_problem(f"Unhandled change field {item.field!r}"))
            continue
        phone_number_id = getattr(item, "phone_number_id", None)
        number, numbers = None, []
        if phone_number_id is not None:
            number = by_id.get(phone_number_id)
            if number is None:
                problems.append(f"Unknown phone_number_id {phone_number_id!r} ({kind})")
                continue
            if not number.signed:
                problems.append(
                    f"Number {phone_number_id!r} not routed, {not_signer} ({kind})"
                )
                continue
        else:
            named = by_waba.get(item.waba_id, [])
            numbers = [candidate for candidate in named if candidate.signed]
            if not named:
                problems.append(f"Unknown WABA {item.waba_id!r} ({kind})")
                continue
            if not numbers:
                problems.append(
                    f"WABA {item.waba_id!r} not routed, {not_signer} ({kind})"
                )
                continue
        if not _hand_over(item, number=number, numbers=numbers, at=received_at):
            # A new item class in payloads.py: keep it visible.
            problems.append(f"No handler for {kind}")
    return problems


def _hand_over(
    item: payloads.Item,
    *,
    number: WhatsAppNumber | None,
    numbers: list[WhatsAppNumber],
    at: datetime,
) -> bool:
    """Call the service for one routed item; False if there is none."""
    if isinstance(item, payloads.InboundMessage):
        inbound.receive_message(number=number, message=item, received_at=at)
    elif isinstance(item, payloads.StatusUpdate):
        statuses.update_message_status(number=number, status=item)
    elif isinstance(item, payloads.MessageEcho):
        echoes.record_echo(number=number, echo=item, received_at=at)
    elif isinstance(item, payloads.HistoryChunk):
        history.import_history(number=number, chunk=item, received_at=at)
    elif isinstance(item, payloads.AccountError):
        numbers_service.record_account_error(number=number, error=item, received_at=at)
    elif isinstance(item, payloads.UserPreferenceUpdate):
        consent.record_user_preference(number=number, update=item, received_at=at)
    elif isinstance(item, payloads.TemplateStatusUpdate):
        templates.record_template_status(update=item, received_at=at)
    elif isinstance(item, payloads.TemplateCategoryUpdate):
        templates.record_template_category(update=item)
    elif isinstance(item, payloads.TemplateQualityUpdate):
        templates.record_template_quality(update=item, received_at=at)
    elif isinstance(item, payloads.PhoneNumberQualityUpdate):
        numbers_service.record_phone_number_quality(
            numbers=numbers, update=item, received_at=at
        )
    elif isinstance(item, payloads.AccountUpdate):
        numbers_service.record_account_update(
            numbers=numbers, update=item, received_at=at
        )
    else:
        return False
    return True
