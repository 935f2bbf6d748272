"""Stored webhook POSTs become work: each is parsed once, its items handed to
the service of their kind, and the event ends processed, malformed,
unroutable or failed (retried with backoff).

An event acts only on the numbers of the Meta app that signed it: any app's
secret passes the endpoint, and the holder of one app's secret (an agency's,
a second brand's, a leaked test app's) must not write messages, statuses,
consent or account changes for another app's numbers.

Workers claim stored events in batches (process_webhook_batch: FOR UPDATE
SKIP LOCKED, customers' messages first) and apply each batch as a set, in a
number of statements that does not grow with it; what a set cannot take,
and every event of a set that fails, is processed one by one
(process_webhook_event), as the sweeper's and an admin's replays are.

Meta redelivers, batches and reorders, so everything called from here is
idempotent: messages are inserted against the unique wamid (never checked
first), customers and conversations lean on their unique constraints,
statuses only move forward, and a whole event is processed in one
transaction with its row locked, so two workers handed the same event
process it once.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DataError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from helpdesk.logs import bound_request_id, request_id_of

from .. import realtime
from ..models import (
    MetaApp,
    WebhookEvent,
    WhatsAppNumber,
)
from ..rules import backoff, deadlocks
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
            return deadlocks.retrying_deadlocks(
                lambda: _process_event(event_id, force=force, apart=False)
            )
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
        # Its log lines and live events carry the id it arrived with.
        with bound_request_id(request_id_of(event.headers)):
            return _apply_event(event, apart=apart)


def _apply_event(event: WebhookEvent, *, apart: bool) -> WebhookEvent:
    """Parse and apply one locked event, then mark how it ended."""
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
    state = WebhookEvent.State.UNROUTABLE if problems else WebhookEvent.State.PROCESSED
    _finish_event(event, state, "\n".join(problems))
    logger.debug("Webhook event %s %s", event.pk, state)
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
    problems: list[str] = []
    for item in batch.items:
        target = _route(item, by_id, by_waba, signer_id, problems)
        if target is None:
            continue
        number, numbers = target
        if not _hand_over(item, number=number, numbers=numbers, at=received_at):
            # A new item class in payloads.py: keep it visible.
            problems.append(f"No handler for {type(item).__name__}")
    return problems


def _route(
    item: payloads.Item,
    by_id: dict[str, WhatsAppNumber],
    by_waba: dict[str, list[WhatsAppNumber]],
    signer_id: int | None,
    problems: list[str],
) -> tuple[WhatsAppNumber | None, list[WhatsAppNumber]] | None:
    """The number (or the WABA's numbers) an item acts on, if the signing app
    may act there; otherwise None, with the reason added to ``problems``."""
    not_signer = (
        "not one of the signing app's" if signer_id else "the signing app is gone"
    )
    kind = type(item).__name__
    if isinstance(item, payloads.UnparsableItem):
        problems.append(_problem(f"Unreadable {item.kind}: {item.error}"))
        return None
    if isinstance(item, payloads.UnhandledChange):
        problems.append(_problem(f"Unhandled change field {item.field!r}"))
        return None
    phone_number_id = getattr(item, "phone_number_id", None)
    if phone_number_id is not None:
        number = by_id.get(phone_number_id)
        if number is None:
            problems.append(f"Unknown phone_number_id {phone_number_id!r} ({kind})")
            return None
        if not number.signed:
            problems.append(
                f"Number {phone_number_id!r} not routed, {not_signer} ({kind})"
            )
            return None
        return number, []
    named = by_waba.get(item.waba_id, [])
    numbers = [candidate for candidate in named if candidate.signed]
    if not named:
        problems.append(f"Unknown WABA {item.waba_id!r} ({kind})")
        return None
    if not numbers:
        problems.append(f"WABA {item.waba_id!r} not routed, {not_signer} ({kind})")
        return None
    return None, numbers


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


# --- Sets: claimed batches of stored events -------------------------------------

# Events one claim takes. The statements a batch costs do not grow with it,
# so bigger batches spread them thinner; a batch is one transaction holding
# row locks on its messages, so a few hundred keeps it well under a second.
WEBHOOK_CLAIM_BATCH = 200
# How long one drain keeps claiming before it hands over (the task queues
# another): long enough to amortise a task, short enough that a worker
# process is free for other queues' tasks every few seconds.
WEBHOOK_DRAIN_SECONDS = 5.0


def drain_webhook_events(
    *,
    event_ids: Sequence[int] = (),
    limit: int = WEBHOOK_CLAIM_BATCH,
    seconds: float = WEBHOOK_DRAIN_SECONDS,
) -> bool:
    """Claim and process batches of pending events until a claim finds none
    or ``seconds`` have passed; return whether some may be left.

    ``event_ids`` names events to take even when failed (the sweeper's
    retries); pending events need no naming: any drain claims them, lowest
    lane first (customers' messages before statuses), oldest first.
    """
    if not settings.WEBHOOK_SETS:
        # The operator's switch back to the one-by-one path: the named
        # events only, each in its own transaction, as before sets.
        _process_one_by_one(event_ids)
        return False
    deadline = time.monotonic() + seconds
    named = list(event_ids)
    while True:
        claimed = process_webhook_batch(event_ids=named, limit=limit)
        named = []
        if not claimed:
            return False
        if time.monotonic() >= deadline:
            return True


def process_webhook_batch(
    *, event_ids: Sequence[int] = (), limit: int = WEBHOOK_CLAIM_BATCH
) -> list[int]:
    """Claim up to ``limit`` events (FOR UPDATE SKIP LOCKED) and apply them as
    a set, in one transaction; return the ids claimed.

    The set's statements do not grow with the batch (statuses.apply_statuses,
    inbound.receive_messages). Events the set does not take (a message for
    the one-by-one path) are processed one by one after it commits. When
    anything in the set fails, it is rolled back and every claimed event is
    processed one by one (process_webhook_event), which marks the poisonous
    one failed or unroutable and keeps the others: one bad event never fails
    its batch. A worker killed mid-batch loses only its transaction; the
    events are pending again for the next claim.
    """
    if connection.vendor != "postgresql":
        # The embedded SQLite mode has no SKIP LOCKED: one by one, named only.
        _process_one_by_one(event_ids)
        return list(event_ids)
    claimed: list[int] = []
    apart: list[int] = []
    try:
        with transaction.atomic():
            events = _claim(event_ids, limit)
            claimed = [event.pk for event in events]
            if events:
                # The set's log lines carry every id its events arrived with.
                arrived = ",".join(
                    sorted({request_id_of(e.headers) for e in events} - {""})
                )
                with bound_request_id(arrived), realtime.batched():
                    apart = _apply_set(events)
                logger.debug(
                    "Webhook events %s applied as a set",
                    claimed,
                    extra={"request_id": arrived},
                )
    except Exception:
        if not claimed:
            # Nothing was claimed (the database is away): the caller retries.
            raise
        logger.exception(
            "A batch of %d webhook events failed as a set; processing them one by one",
            len(claimed),
        )
        apart = claimed
    _process_one_by_one(apart)
    return claimed


def _process_one_by_one(event_ids: Sequence[int]) -> None:
    """process_webhook_event for each, each in its own transaction."""
    for event_id in event_ids:
        try:
            process_webhook_event(event_id=event_id)
        except WebhookEvent.DoesNotExist:
            logger.warning("Webhook event %s does not exist", event_id)
        except Exception:
            # Recorded on the row (failed, attempts counted): the sweeper
            # retries it with backoff.
            logger.exception("Webhook event %s failed", event_id)


def _claim(event_ids: Sequence[int], limit: int) -> list[WebhookEvent]:
    """Lock the named failed events, then pending customers' messages, or
    else pending events by lane and age.

    Pending events are never taken by name: a doorbell naming a storm's
    statuses must not jump the customers' messages stored after them.
    """
    claim = WebhookEvent.objects.select_for_update(skip_locked=True).only(
        "pk", "body", "app_id", "received_at", "state", "headers"
    )
    events = []
    if event_ids:
        events = list(
            claim.filter(
                pk__in=list(event_ids)[:limit], state=WebhookEvent.State.FAILED
            ).order_by("pk")
        )
    if len(events) < limit:
        pending = claim.filter(state=WebhookEvent.State.PENDING).exclude(
            pk__in=[event.pk for event in events]
        )
        # Customers' messages make a batch of their own: it commits in
        # milliseconds instead of waiting for a couple of hundred statuses.
        messages = list(
            pending.filter(lane=WebhookEvent.Lane.MESSAGES).order_by("pk")[
                : limit - len(events)
            ]
        )
        events += messages or list(
            pending.order_by("lane", "pk")[: limit - len(events)]
        )
    return events


@dataclass
class _Parsed:
    event: WebhookEvent
    batch: payloads.WebhookBatch
    problems: list[str] = field(default_factory=list)


def _apply_set(events: list[WebhookEvent]) -> list[int]:
    """Apply claimed events as a set; return those left for one by one."""
    finished: dict[int, tuple[str, str]] = {}
    parsed: list[_Parsed] = []
    apart: list[int] = []
    for event in events:
        try:
            batch = payloads.parse(bytes(event.body))
        except payloads.MalformedPayload as exc:
            finished[event.pk] = (WebhookEvent.State.MALFORMED, str(exc))
            continue
        if not _takes_in_set(batch):
            apart.append(event.pk)
        else:
            parsed.append(_Parsed(event, batch))
    routed = _route_all(parsed)
    with realtime.origins(_arrived_with(parsed)):
        parsed, routed, one_by_one = _apply_sets(parsed, routed)
    apart += one_by_one
    for entry, item, number, numbers in routed:
        if isinstance(item, payloads.InboundMessage | payloads.StatusUpdate):
            continue
        with bound_request_id(request_id_of(entry.event.headers)):
            handled = _hand_over(
                item, number=number, numbers=numbers, at=entry.event.received_at
            )
        if not handled:
            entry.problems.append(f"No handler for {type(item).__name__}")
    for entry in parsed:
        state = (
            WebhookEvent.State.UNROUTABLE
            if entry.problems
            else WebhookEvent.State.PROCESSED
        )
        finished[entry.event.pk] = (state, "\n".join(entry.problems))
    _finish_events(finished)
    return apart


def _arrived_with(parsed: list[_Parsed]) -> dict[str, str]:
    """The request id each message's news came in with, by wamid (a status
    reported twice in the set: the later one's)."""
    by_wamid = {}
    for entry in parsed:
        origin = request_id_of(entry.event.headers)
        for item in entry.batch.items:
            if origin and isinstance(
                item, payloads.InboundMessage | payloads.StatusUpdate
            ):
                by_wamid[item.wamid] = origin
    return by_wamid


def _apply_sets(
    parsed: list[_Parsed], routed: list[tuple]
) -> tuple[list[_Parsed], list[tuple], list[int]]:
    """Apply the routed messages and statuses as sets; return what is left of
    ``parsed`` and ``routed`` and the events whose messages need the
    one-by-one path (the set wrote nothing of them)."""
    one_by_one: list[int] = []
    received = [
        (number, item, entry.event.received_at)
        for entry, item, number, _ in routed
        if isinstance(item, payloads.InboundMessage)
    ]
    if received and inbound.receive_messages(received=received) is None:
        # The senders need the one-by-one path: every event with a message.
        with_messages = {entry.event.pk for entry in parsed if entry.batch.messages}
        one_by_one = sorted(with_messages)
        parsed = [entry for entry in parsed if entry.event.pk not in with_messages]
        routed = [route for route in routed if route[0].event.pk not in with_messages]
    statuses.apply_statuses(
        reports=[
            (number, item)
            for _, item, number, _ in routed
            if isinstance(item, payloads.StatusUpdate)
        ]
    )
    return parsed, routed, one_by_one


def _takes_in_set(batch: payloads.WebhookBatch) -> bool:
    """Whether a set applies this event: every message is one receive_messages
    takes (inbound.takes_in_bulk), and nothing writes messages the set's
    statuses could be for (the business app's echoes and history go one by
    one, in their event's order)."""
    return all(
        inbound.takes_in_bulk(message) for message in batch.messages
    ) and not any(
        isinstance(item, payloads.MessageEcho | payloads.HistoryChunk)
        for item in batch.items
    )


def _route_all(parsed: list[_Parsed]) -> list[tuple]:
    """(entry, item, number, numbers) for every item the signing apps may act
    on; the others become the entry's problems (as _process_batch)."""
    routed = []
    by_signer: dict[int | None, list[_Parsed]] = {}
    for entry in parsed:
        by_signer.setdefault(entry.event.app_id, []).append(entry)
    for signer_id, entries in by_signer.items():
        every_item = payloads.WebhookBatch(
            items=tuple(item for entry in entries for item in entry.batch.items)
        )
        by_id, by_waba = _numbers_named(every_item, signer_id)
        for entry in entries:
            for item in entry.batch.items:
                target = _route(item, by_id, by_waba, signer_id, entry.problems)
                if target is not None:
                    routed.append((entry, item, *target))
    return routed


def _finish_events(finished: dict[int, tuple[str, str]]) -> None:
    """_finish_event for many events: one UPDATE … FROM (VALUES …)."""
    if not finished:
        return
    rows, params = [], []
    for event_id, (state, error) in finished.items():
        rows.append("(%s::bigint, %s::text, %s::text)")
        params += [event_id, state, error]
    table = WebhookEvent._meta.db_table
    sql = (
        f"UPDATE {table} AS e SET state = v.state, last_error = v.error,"  # noqa: S608
        " processed_at = %s, next_attempt_at = NULL"
        f" FROM (VALUES {', '.join(rows)}) AS v(id, state, error) WHERE e.id = v.id"
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, *params])
