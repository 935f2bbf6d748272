"""Signed status callbacks to the business: an outbox of rows written with the
status, posted after commit by their own task, retried with backoff.
"""

import hmac
import json
import logging
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import callbacks
from ..delivery import doorbells
from ..models import (
    CallbackDelivery,
    CallbackEndpoint,
    Message,
    Notification,
)
from ..rules import backoff
from . import notifications

logger = logging.getLogger(__name__)


CALLBACK_EVENTS = frozenset({"sent", "delivered", "read", "failed"})


def notify_business(message: Message, status: str) -> int:
    """Owe every active callback endpoint this notification's new status.

    Rows in the caller's transaction (an outbox); the HTTP requests happen in
    their own task after commit, so a slow endpoint never holds up webhook
    processing. A redelivered status owes nothing new (unique per event).
    """
    return notify_business_many([(message, status)])


def notify_business_many(changes: Sequence[tuple[Message, str]]) -> int:
    """notify_business for many (message, status) pairs in three statements
    at most: the endpoints, the notifications, one INSERT of the rows. The
    payload shows each notification as its message stands now."""
    changes = [
        (message, status) for message, status in changes if status in CALLBACK_EVENTS
    ]
    if not changes:
        return 0
    endpoints = list(
        CallbackEndpoint.objects.filter(active=True).values_list("pk", flat=True)
    )
    if not endpoints:
        return 0
    notifications_by_message = {
        notification.message_id: notification
        for notification in Notification.objects.filter(
            message_id__in={message.pk for message, _ in changes}
        )
    }
    occurred_at = timezone.now().isoformat()
    rows = []
    for message, status in changes:
        notification = notifications_by_message.get(message.pk)
        if notification is None:
            continue
        notification.message = message
        payload = {
            "type": "notification.status",
            "status": notifications.NOTIFICATION_STATUS.get(status, status),
            "occurred_at": occurred_at,
            "notification": notifications.notification_payload(notification),
        }
        rows += [
            CallbackDelivery(
                endpoint_id=endpoint_id,
                notification=notification,
                event=status,
                payload=payload,
            )
            for endpoint_id in endpoints
        ]
    if not rows:
        return 0
    created = CallbackDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    doorbells.ring_after_commit(doorbells.DELIVER_CALLBACKS)
    return len(created)


def callback_backoff(attempts: int) -> timedelta:
    """Wait before attempt attempts+1: base × 2^(attempts-1), capped."""
    return timedelta(
        seconds=backoff.delay(
            attempts,
            base=settings.BUSINESS_CALLBACK_BACKOFF_BASE,
            cap=settings.BUSINESS_CALLBACK_BACKOFF_MAX,
        )
    )


def _due_callbacks(now):
    return CallbackDelivery.objects.filter(state=CallbackDelivery.State.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def deliver_callbacks(*, limit: int = 50) -> int:
    """Post up to `limit` due callbacks; return how many were tried.

    Rows are claimed (a lease in next_attempt_at, committed) before any
    request, so two workers never post the same row at once; a worker that
    dies leaves the row due again when its lease ends.
    """
    now = timezone.now()
    lease = now + timedelta(
        seconds=settings.BUSINESS_CALLBACK_TIMEOUT
        + settings.BUSINESS_CALLBACK_CONNECT_TIMEOUT
        + 30
    )
    with transaction.atomic():
        ids = list(
            _due_callbacks(now)
            .order_by("id")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        CallbackDelivery.objects.filter(pk__in=ids).update(
            next_attempt_at=lease, attempts=F("attempts") + 1
        )
    rows = list(CallbackDelivery.objects.filter(pk__in=ids).select_related("endpoint"))
    for row in rows:
        body = json.dumps(
            {"id": row.pk, **row.payload}, separators=(",", ":"), sort_keys=True
        ).encode()
        result = callbacks.post(row.endpoint.url, row.endpoint.secret, body)
        now = timezone.now()
        if result.ok:
            CallbackDelivery.objects.filter(pk=row.pk).update(
                state=CallbackDelivery.State.DELIVERED,
                delivered_at=now,
                next_attempt_at=None,
                last_status_code=result.status_code,
                last_error="",
            )
            continue
        gave_up = row.attempts >= settings.BUSINESS_CALLBACK_MAX_ATTEMPTS
        CallbackDelivery.objects.filter(pk=row.pk).update(
            state=CallbackDelivery.State.FAILED
            if gave_up
            else CallbackDelivery.State.PENDING,
            next_attempt_at=None if gave_up else now + callback_backoff(row.attempts),
            last_status_code=result.status_code,
            last_error=result.error[:2000],
        )
    return len(rows)


def callbacks_due() -> bool:
    return _due_callbacks(timezone.now()).exists()


def retry_callback(*, delivery: CallbackDelivery) -> None:
    """An admin sends a callback that gave up once more."""
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        state=CallbackDelivery.State.PENDING, next_attempt_at=None
    )
    doorbells.ring_after_commit(doorbells.DELIVER_CALLBACKS)


def compare_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Check a callback signature the way a business's receiver should."""
    expected = callbacks.sign(secret, timestamp, body)
    return hmac.compare_digest(expected, signature)
