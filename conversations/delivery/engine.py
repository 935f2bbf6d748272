"""The outbound delivery engine: a state machine stored in Message rows.

    queued ──claim──▶ sending ──200──────────▶ sent (wamid stored, parked
      ▲ ▲                │                          statuses applied)
      │ │                ├─ retryable error ──▶ queued, next_attempt_at later
      │ │                ├─ permanent error ──▶ failed (code and details)
      │ │                ├─ no answer ────────▶ unknown (never resent blindly)
      │ │                ├─ number stopped ───▶ queued, number paused
      │ │                └─ lease ran out ────▶ unknown if its request started
      │ └── limiter says wait (not an attempt) ◀┤
      └──── lease ran out, request never started ┘ (not an attempt)

A send is a ``queued`` row written in the transaction of the action that
created it; after commit a doorbell (doorbells.py) queues one Celery task per
*number* (``conversations.tasks.deliver_messages``), not one per message. The
task's run claims due rows in batches (``SELECT ... FOR UPDATE SKIP LOCKED``
on PostgreSQL, so any number of workers share the work), marks them
``sending`` with a lease and commits *before* any request. A thread pool then
makes the requests (threads.py): Meta is ~100 ms away, so reaching 1,000
messages/s takes ~100 requests in flight, which one Celery task per message
in a few prefork processes cannot do (about 490 no-op tasks/s per worker on
this class of machine). The threads touch no database; the run's own thread
writes their outcomes in bulk.

Messages to the same customer in one batch go through one thread, in order.
The limiters live in Redis (delivery/ratelimit.py), shared by all workers:
the run reserves the number's per-second slots to size a claim, then takes
every customer's pair slots for the batch in one script call, just before
the threads start; each send takes its number slot in its thread, right
before its request. A run whose claim comes back full rings for a second run
(WHATSAPP_DELIVERY_RUNS_PER_NUMBER, PostgreSQL only), so a backlog is sent
from two processes: one process' Python, not the network, is what caps a
single run.

A ``sending`` row whose worker died keeps its lease until the sweeper finds
it run out. Whether its request had started is in the send-or-not record
(attempts.py): the claim writes each send there as claimed, and the limiter
grant just before its request marks it started, in the same Redis call. A
send that never started goes back to ``queued``; one that did (or that the
record cannot vouch for) becomes ``unknown``, and its status webhook (which
names our message id in biz_opaque_callback_data) settles it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from .. import metrics, realtime, services
from ..models import Message, ParkedStatus, WhatsAppNumber
from ..rules import deadlocks
from ..whatsapp import client
from . import attempts, doorbells, ratelimit, threads
from .threads import (
    DEFER,
    FAILED,
    LIMITER_DOWN_DELAY,
    RETRY,
    SENT,
    STOP,
    UNKNOWN,
    Job,
    Outcome,
)

logger = logging.getLogger(__name__)

# A run with nothing due waits in place for work due within this many seconds.
IDLE_WAIT = 3.0


@dataclass
class RunStats:
    claimed: int = 0
    outcomes: dict = field(default_factory=lambda: defaultdict(int))


RUNS_KEY = "outbound:runs:{}"

# A run holds its place for this long and renews it every RUN_RENEW_SECONDS
# while it lives: a run whose worker was killed gives its place up within
# the lease, not at the end of the run it would have made.
RUN_LEASE_SECONDS = 10.0
RUN_RENEW_SECONDS = 3.0

# KEYS[1] a sorted set of run tokens scored by when they expire; ARGV token,
# lease (ms), cap. Returns 1 when the run may go (it holds a place until
# now + lease): a run renewing its place keeps it, and one whose place
# expired takes it again only if one is free.
_RUN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
  and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return 1
"""


def runs_per_number() -> int:
    """How many runs of one number may go at once (1 without SKIP LOCKED)."""
    if not connection.features.has_select_for_update_skip_locked:
        return 1
    return max(1, settings.WHATSAPP_DELIVERY_RUNS_PER_NUMBER)


def _enter_run(number_id: int, token: str, seconds: float) -> bool:
    """Take or renew one of the number's run places for `seconds` (False:
    all taken by other runs)."""
    try:
        return bool(
            ratelimit.connection().register_script(_RUN_SCRIPT)(
                keys=[RUNS_KEY.format(number_id)],
                args=[token, int(seconds * 1000), runs_per_number()],
            )
        )
    except redis.RedisError:
        # The limiters fail closed anyway; a run without a place still
        # claims safely.
        return True


def _leave_run(number_id: int, token: str) -> None:
    try:
        ratelimit.connection().zrem(RUNS_KEY.format(number_id), token)
    except redis.RedisError:
        logger.warning("Run place of number %s not given back; it expires", number_id)


def _forget_after_fork() -> None:
    # Sockets do not survive fork(): a prefork child builds its own Session.
    client._session = None


os.register_at_fork(after_in_child=_forget_after_fork)


# --- The run: claims and bookkeeping, in the task's thread --------------------------


def _due(number_id: int, now):
    return Message.objects.filter(
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.QUEUED,
        conversation__number_id=number_id,
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))


def _job(row, claim_token: str, lease) -> Job:
    """The send of a claimed row (Message.payload is the type's object)."""
    return Job(
        message_id=row.id,
        conversation_id=row.conversation_id,
        recipient=row.wa_id or row.user_id,
        body=client.build_message(
            wa_id=row.wa_id,
            user_id=row.user_id,
            type=row.type,
            content=row.payload,
            context_message_id=row.context_wamid,
            callback_data=str(row.id),
        ),
        # The claim counts this attempt.
        attempts=row.attempts + 1,
        claim=claim_token,
        lease=lease,
    )


def claim(number: WhatsAppNumber, limit: int) -> list[Job]:
    """Move up to `limit` due messages to `sending`; commit before any request.

    Safe with several runs of one number at once: the rows are locked with
    SKIP LOCKED and moved only while still `queued`, so no two runs ever
    claim the same message. The rows are read as tuples with what a send
    needs, in the locking query: model instances cost more than the sends.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            _due(number.pk, now)
            .order_by("id")
            .select_for_update(skip_locked=True, of=("self",))
            .annotate(
                wa_id=F("conversation__customer__wa_id"),
                user_id=F("conversation__customer__user_id"),
            )
            .values_list(
                "id",
                "conversation_id",
                "type",
                "payload",
                "context_wamid",
                "attempts",
                "wa_id",
                "user_id",
                named=True,
            )[:limit]
        )
        if not rows:
            return []
        ids = [row.id for row in rows]
        lease = now + timedelta(seconds=settings.WHATSAPP_DELIVERY_LEASE_SECONDS)
        moved = Message.objects.filter(pk__in=ids, status=Message.Status.QUEUED).update(
            status=Message.Status.SENDING,
            attempts=F("attempts") + 1,
            next_attempt_at=lease,
            updated_at=now,
        )
        if moved < len(ids):
            # Without row locks (SQLite) another run may have moved some
            # first: this claim's lease marks the ones it moved.
            mine = set(
                Message.objects.filter(
                    pk__in=ids, status=Message.Status.SENDING
                ).values_list("pk", flat=True)
            )
            rows = [row for row in rows if row.id in mine]
        realtime.publish_statuses(
            realtime.MESSAGE_UPDATED,
            number_id=number.pk,
            changes=[
                (row.conversation_id, row.id, Message.Status.SENDING) for row in rows
            ],
        )
    claim_token = attempts.new_claim()
    return [_job(row, claim_token, lease) for row in rows]


def _mark_sent(sent: dict[int, Outcome], now) -> list[int]:
    """Store the wamids of accepted sends in one statement; the ids moved to sent.

    One UPDATE joined to a VALUES list (PostgreSQL and SQLite >= 3.33)
    instead of a CASE with a branch per row, whose compilation in the ORM
    cost more than the sends.
    """
    table = connection.ops.quote_name(Message._meta.db_table)
    rows = ", ".join(["(%s, %s)"] * len(sent))
    params: list = []
    for pk, outcome in sent.items():
        params += [pk, outcome.result.wamid]
    moved_sql = (
        f"WITH v(id, wamid) AS (VALUES {rows}) "  # noqa: S608 - names and placeholders only
        f"UPDATE {table} SET status = %s, wamid = v.wamid, sent_at = %s, "
        f"next_attempt_at = NULL, error = NULL, updated_at = %s "
        f"FROM v WHERE {table}.id = v.id AND {table}.status IN (%s, %s) "
        f"RETURNING {table}.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            moved_sql,
            [
                *params,
                Message.Status.SENT,
                now,
                now,
                Message.Status.SENDING,
                Message.Status.UNKNOWN,
            ],
        )
        moved = [row[0] for row in cursor.fetchall()]
        if len(moved) < len(sent):
            # A status webhook (matched by our id) may have moved it already.
            cursor.execute(
                f"WITH v(id, wamid) AS (VALUES {rows}) "  # noqa: S608
                f"UPDATE {table} SET wamid = v.wamid, updated_at = %s "
                f"FROM v WHERE {table}.id = v.id AND {table}.wamid IS NULL",
                [*params, now],
            )
    return moved


def _settle(outcome: Outcome, now) -> list[tuple[int, str]]:
    """Write a tried send's outcome unless a webhook or the sweeper moved it first."""
    fields = {
        UNKNOWN: {"status": Message.Status.UNKNOWN, "next_attempt_at": None},
        RETRY: {
            "status": Message.Status.QUEUED,
            "next_attempt_at": now + timedelta(seconds=outcome.delay),
        },
        FAILED: {
            "status": Message.Status.FAILED,
            "failed_at": now,
            "next_attempt_at": None,
        },
    }[outcome.kind]
    pk = outcome.job.message_id
    if Message.objects.filter(pk=pk, status=Message.Status.SENDING).update(
        error=outcome.error, updated_at=now, **fields
    ):
        return [(pk, fields["status"])]
    return []


def _requeue_untried(outcomes: list[Outcome], now) -> list[tuple[int, str]]:
    """Requeue untried sends, one UPDATE per delay; the attempt does not count.

    Only rows still under their own claim's lease: a row whose lease ran out
    may have been taken back by the sweeper and claimed again since.
    """
    deferred: dict[tuple, list[int]] = defaultdict(list)
    for outcome in outcomes:
        deferred[outcome.delay, outcome.job.lease].append(outcome.job.message_id)
    changed = []
    for (delay, lease), ids in deferred.items():
        moved = list(
            Message.objects.filter(
                pk__in=ids, status=Message.Status.SENDING, next_attempt_at=lease
            ).values_list("pk", flat=True)
        )
        Message.objects.filter(pk__in=moved).update(
            status=Message.Status.QUEUED,
            next_attempt_at=now + timedelta(seconds=delay),
            attempts=F("attempts") - 1,
            updated_at=now,
        )
        changed += [(pk, Message.Status.QUEUED) for pk in moved]
    return changed


def _apply_parked_statuses(wamids: list[str]) -> None:
    """Apply the statuses Meta reported before these sends' wamids were stored."""
    parked = set(
        ParkedStatus.objects.filter(wamid__in=wamids).values_list("wamid", flat=True)
    )
    if parked:
        for message in Message.objects.filter(wamid__in=parked):
            services.apply_parked_statuses(message)


def record(number: WhatsAppNumber, outcomes: list[Outcome]) -> None:
    """Write what the threads learnt; publish every status change.

    Withdrawn sends are not written: the sweeper took them back.
    """
    now = timezone.now()
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    conversation_of: dict[int, int] = {}
    for outcome in outcomes:
        by_kind[outcome.kind].append(outcome)
        conversation_of[outcome.job.message_id] = outcome.job.conversation_id
    sent = {o.job.message_id: o for o in by_kind[SENT]}

    @transaction.atomic
    def write() -> set[int]:
        # (message id, status) of every row this write moved, to announce.
        changed: list[tuple[int, str]] = []
        moved_to_sent: set[int] = set()
        if sent:
            moved_to_sent = set(_mark_sent(sent, now))
            changed += [(pk, Message.Status.SENT) for pk in moved_to_sent]
        for outcome in by_kind[UNKNOWN]:
            changed += _settle(outcome, now)
        changed += _requeue_untried(by_kind[DEFER] + by_kind[STOP], now)
        for outcome in by_kind[RETRY] + by_kind[FAILED]:
            changed += _settle(outcome, now)
        if by_kind[STOP]:
            services.pause_sending(number=number, error=by_kind[STOP][0].error)
        realtime.publish_statuses(
            realtime.MESSAGE_UPDATED,
            number_id=number.pk,
            changes=[(conversation_of[pk], pk, status) for pk, status in changed],
        )
        return moved_to_sent

    # A status webhook's transaction locks these messages too: a deadlock's
    # victim here would leave sends Meta accepted to end `unknown`.
    moved_to_sent = deadlocks.retrying_deadlocks(write)
    _forget_attempts(number, outcomes)
    # A send a status webhook moved on first was counted there.
    metrics.count_sends(
        [o for o in outcomes if o.kind != SENT or o.job.message_id in moved_to_sent]
    )
    for outcome in by_kind[FAILED]:
        services.record_send_failure(
            message_id=outcome.job.message_id, code=outcome.code
        )
    if sent:
        _apply_parked_statuses([o.result.wamid for o in sent.values()])


def _forget_attempts(number: WhatsAppNumber, outcomes: list[Outcome]) -> None:
    """Drop the send-or-not fields of sends whose outcome is written."""
    try:
        attempts.forget(number.pk, [(o.job.message_id, o.job.claim) for o in outcomes])
    except redis.RedisError:
        # Left behind, they expire with the number's record; the rows they
        # describe are no longer `sending`, so the sweeper never reads them.
        logger.warning("Send-or-not record of number %s not trimmed", number.pk)


def next_due_in(number_id: int) -> float | None:
    """Seconds until the number's next queued message is due (None: none)."""
    earliest = Message.objects.filter(
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.QUEUED,
        conversation__number_id=number_id,
    ).aggregate(at=Min("next_attempt_at"))["at"]
    if earliest is None:
        if _due(number_id, timezone.now()).exists():
            return 0.0
        return None
    return max(0.0, (earliest - timezone.now()).total_seconds())


def dispatch(
    number: WhatsAppNumber,
    jobs: list[Job],
    outcomes: queue.Queue,
    stop: threading.Event,
    pool: ThreadPoolExecutor,
    reserved: tuple[str, int] | None = None,
) -> None:
    """Hand a claimed batch to the threads, with its limiter slots taken at once.

    One Redis call records the batch as claimed and not started
    (attempts.py), one takes every customer's pair slots, one gives back the
    run's reservation; each send then takes its number slot in its thread.
    """
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job.recipient].append(job)
    try:
        # Before any thread may start: a grant only moves a field written here.
        attempts.mark_claimed(number.pk, [(j.message_id, j.claim) for j in jobs])
        pairs = ratelimit.acquire_pairs(
            number.phone_number_id, {r: len(g) for r, g in groups.items()}
        )
    except redis.RedisError:
        logger.warning("Rate limiter unavailable; %s messages wait", len(jobs))
        for job in jobs:
            outcomes.put(Outcome(job, DEFER, delay=LIMITER_DOWN_DELAY))
        return
    ready = []
    for recipient, group in groups.items():
        granted, wait = pairs[recipient]
        if granted:
            ready.append(recipient)
            continue
        # Held by the customer's pair limit: nothing to send now.
        for job in group:
            outcomes.put(Outcome(job, DEFER, delay=max(wait, 0.05)))
    # The reservation only sized the claim: each send takes its number slot
    # in its own thread, right before its request. Granting a batch's slots
    # here let a loaded machine start the last requests of a batch >100 ms
    # after the first, past the window's margin (the sandbox answered 130429
    # to 20 of 5,000 sends at limit 80, load average 15).
    try:
        ratelimit.acquire_number_slots(
            number.phone_number_id, number.throughput, 0, release=reserved
        )
    except redis.RedisError:
        logger.warning("Reserved limiter slots of number %s not given back", number.pk)
    for recipient in ready:
        granted, wait = pairs[recipient]
        pool.submit(
            threads.send_group,
            number,
            groups[recipient],
            outcomes,
            stop,
            pair_granted=granted,
            pair_wait=wait,
        )


def run(number_id: int, *, run_seconds: float | None = None) -> RunStats:
    """Deliver a number's due messages until none are left or time is up.

    The run's thread claims, dispatches and records; the pool's threads only
    make requests. Claims wait until a quarter of the pool is free (or the
    backlog is small), and outcomes are written a batch at a time, so the
    database sees a few statements per batch rather than per message.
    """
    if run_seconds is None:
        run_seconds = settings.WHATSAPP_DELIVERY_RUN_SECONDS
    shared = runs_per_number() > 1
    token = uuid.uuid4().hex
    if shared and not _enter_run(number_id, token, RUN_LEASE_SECONDS):
        # As many runs as allowed are going; they see this run's work. The
        # doorbell rings again (the sweeper's next ring queues a run): a
        # place held by a dead run is free within its lease.
        doorbells.clear_delivery(number_id)
        return RunStats()
    # A pool of the run's own, so every send the limiter granted starts at
    # once instead of queueing behind another run's requests in this process.
    pool = ThreadPoolExecutor(
        max_workers=max(1, settings.WHATSAPP_DELIVERY_CONCURRENCY),
        thread_name_prefix="deliver",
    )
    try:
        return _run(
            number_id,
            run_seconds,
            pool,
            helper_wanted=shared,
            place=token if shared else None,
        )
    finally:
        pool.shutdown(wait=True)
        if shared:
            _leave_run(number_id, token)


@dataclass
class _RunLoop:
    """What a run's loop carries from one turn to the next (its thread only)."""

    # Read again before every claim (an admin may pause it); recording the
    # outcomes uses the copy of the last claim.
    number: WhatsAppNumber
    pool: ThreadPoolExecutor
    deadline: float
    concurrency: int
    batch: int
    # A claim waits for this many free places, unless the last one was short.
    claim_step: int
    helper_wanted: bool
    outcomes: queue.Queue[Outcome] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    stats: RunStats = field(default_factory=RunStats)
    # The run's place token (None: runs do not share the number) and when
    # it was last renewed.
    place: str | None = None
    place_renewed: float = 0.0
    in_flight: int = 0
    next_claim: float = 0.0
    backlog: bool = True


def _run(
    number_id: int,
    run_seconds: float,
    pool: ThreadPoolExecutor,
    *,
    helper_wanted: bool,
    place: str | None = None,
) -> RunStats:
    concurrency = max(1, settings.WHATSAPP_DELIVERY_CONCURRENCY)
    batch = max(1, min(settings.WHATSAPP_DELIVERY_BATCH, concurrency))
    loop = _RunLoop(
        number=WhatsAppNumber.objects.get(pk=number_id),
        pool=pool,
        deadline=time.monotonic() + run_seconds,
        concurrency=concurrency,
        batch=batch,
        claim_step=max(1, batch // 4),
        helper_wanted=helper_wanted,
        place=place,
        place_renewed=time.monotonic(),
    )
    while True:
        _keep_place(loop)
        _write_back_finished(loop)
        if loop.stop.is_set():
            if loop.in_flight == 0:
                break
            continue
        if not _claim_or_wait(loop):
            break
    return loop.stats


def _keep_place(loop: _RunLoop) -> None:
    """Renew the run's place while it lives. A run that lost it (its renewal
    came after the lease, and other runs filled the places) claims nothing
    more: it writes back what is in flight and ends, so no more runs send
    for the number than it allows."""
    now = time.monotonic()
    if loop.place is None or now - loop.place_renewed < RUN_RENEW_SECONDS:
        return
    loop.place_renewed = now
    if not _enter_run(loop.number.pk, loop.place, RUN_LEASE_SECONDS):
        logger.warning("Delivery run of number %s lost its place", loop.number.pk)
        loop.deadline = now


def _write_back_finished(loop: _RunLoop) -> None:
    """Record what the threads finished; wait a moment if no claim is possible."""
    done: list[Outcome] = []
    free = loop.concurrency - loop.in_flight
    try:
        block = loop.in_flight > 0 and (
            loop.stop.is_set()
            or free < (loop.claim_step if loop.backlog else 1)
            or time.monotonic() < loop.next_claim
        )
        done.append(
            loop.outcomes.get(timeout=0.05) if block else loop.outcomes.get_nowait()
        )
        while True:
            done.append(loop.outcomes.get_nowait())
    except queue.Empty:
        pass
    if done:
        loop.in_flight -= len(done)
        record(loop.number, done)
        for outcome in done:
            loop.stats.outcomes[outcome.kind] += 1


def _reserve_slots(number: WhatsAppNumber, wanted: int) -> tuple[int, float, str]:
    """(slots, wait, stamp): up to `wanted` slots; none while Redis is down."""
    try:
        return ratelimit.acquire_number_slots(
            number.phone_number_id, number.throughput, wanted
        )
    except redis.RedisError:
        logger.warning("Rate limiter unavailable; number %s waits", number.pk)
        return 0, LIMITER_DOWN_DELAY, ""


def _release_slots(number: WhatsAppNumber, reserved: tuple[str, int]) -> None:
    """Give back a reservation the claim found nothing to send with."""
    try:
        ratelimit.acquire_number_slots(number.phone_number_id, 0, 0, release=reserved)
    except redis.RedisError:
        logger.warning("Unused limiter slots of number %s not given back", number.pk)


def _claim_or_wait(loop: _RunLoop) -> bool:
    """Claim and dispatch a batch if there is room, else wait; False: the run ends."""
    number_id = loop.number.pk
    now = time.monotonic()
    out_of_time = now >= loop.deadline
    free = loop.concurrency - loop.in_flight
    if (
        not out_of_time
        and free >= (loop.claim_step if loop.backlog and loop.in_flight else 1)
        and now >= loop.next_claim
    ):
        number = loop.number = WhatsAppNumber.objects.get(pk=number_id)
        if number.sending_paused or not number.is_active:
            loop.stop.set()
            return True
        doorbells.clear_delivery(number_id)
        # Reserve the number's slots first, so a run at its throughput
        # claims only what it may send now instead of holding rows
        # `sending` while its threads wait for the limiter.
        slots, wait, stamp = _reserve_slots(number, min(free, loop.batch))
        if not slots:
            metrics.count_limiter_wait("number")
            loop.next_claim = now + min(max(wait, 0.01), LIMITER_DOWN_DELAY)
            return bool(loop.in_flight) or next_due_in(number_id) is not None
        jobs = claim(number, slots)
        loop.backlog = len(jobs) == slots
        if loop.backlog and loop.helper_wanted:
            # More is due than one batch: a second run (another worker
            # process, another core) shares the backlog.
            loop.helper_wanted = False
            doorbells.ring_delivery(number_id)
        if jobs:
            loop.stats.claimed += len(jobs)
            loop.in_flight += len(jobs)
            dispatch(
                number,
                jobs,
                loop.outcomes,
                loop.stop,
                loop.pool,
                reserved=(stamp, slots),
            )
            return True
        _release_slots(number, (stamp, slots))
        loop.next_claim = now + 0.2
    if loop.in_flight:
        return True
    if out_of_time:
        if next_due_in(number_id) is not None:
            doorbells.ring_delivery(number_id)
        return False
    wait = next_due_in(number_id)
    if wait is None or wait > IDLE_WAIT:
        return False
    time.sleep(max(wait, loop.next_claim - time.monotonic(), 0.05))
    return True


# --- The sweeper --------------------------------------------------------------------


def sweep(now=None) -> dict:
    """Settle dead workers' expired leases and ring every number with due work.

    A send whose request never started (attempts.py) goes back to `queued`,
    due at once and its attempt not counted; any other becomes `unknown`.
    """
    now = now or timezone.now()
    expired: list[Message] = []
    requeued: set[int] = set()
    interrupted = 0
    with transaction.atomic():
        stuck = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Message.Status.SENDING, next_attempt_at__lt=now)
            .values_list("pk", "conversation__number_id")[:1000]
        )
        try:
            requeued = attempts.take_back(stuck) if stuck else set()
        except redis.RedisError:
            # Without the record nothing tells the sends apart; the rows wait
            # in `sending` for the next sweep rather than turn `unknown`.
            logger.warning("Send-or-not record unavailable; %s leases wait", len(stuck))
            stuck = []
        if stuck:
            interrupted = _settle_expired([pk for pk, _ in stuck], requeued, now)
            expired = list(
                Message.objects.filter(pk__in=[pk for pk, _ in stuck]).select_related(
                    "conversation"
                )
            )
            realtime.publish_many(realtime.MESSAGE_UPDATED, messages=expired)
    metrics.count_interrupted_sends(interrupted)
    numbers = list(
        Message.objects.filter(
            direction=Message.Direction.OUTBOUND,
            status=Message.Status.QUEUED,
            conversation__number__sending_paused=False,
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .values_list("conversation__number_id", flat=True)
        .distinct()
    )
    for number_id in numbers:
        doorbells.ring_delivery(number_id)
    return {"expired": len(expired), "requeued": len(requeued), "rung": len(numbers)}


def _settle_expired(ids: list[int], requeued: set[int], now) -> int:
    """Requeue the expired sends that never started; the rest become `unknown`
    (how many: the figure returned)."""
    Message.objects.filter(pk__in=requeued, status=Message.Status.SENDING).update(
        status=Message.Status.QUEUED,
        next_attempt_at=None,
        attempts=F("attempts") - 1,
        updated_at=now,
    )
    return Message.objects.filter(
        pk__in=[pk for pk in ids if pk not in requeued],
        status=Message.Status.SENDING,
    ).update(
        status=Message.Status.UNKNOWN,
        next_attempt_at=None,
        error={
            "code": None,
            "title": "Delivery interrupted",
            "details": "The worker sending this message stopped after its "
            "request to Meta started and before Meta answered; it may or may "
            "not have been sent.",
        },
        updated_at=now,
    )
