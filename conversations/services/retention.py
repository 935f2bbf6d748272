"""Retention: what is old enough and finished goes, in small batches.

Three things grow for ever otherwise: stored webhook events (every status
webhook is one), live events (every change agents see) and downloaded
media files. Each has its own age (settings, docs/operations.md):

- webhook events only once `processed`: pending and failed ones are work
  not done yet, malformed and unroutable ones are kept for admins;
- live events long after every tab has caught up on them (a tab reloads
  instead of catching up on more than 2,000);
- media files by their own age (0 keeps them for ever); the message stays,
  its media shown as deleted.

Deletes go in batches of ``RETENTION_BATCH`` rows, each its own short
transaction that skips rows someone else holds (``SKIP LOCKED``), so the
purge never waits on, nor blocks, the processing of hot rows, and never
holds locks for long.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import metrics
from ..models import LiveEvent, Message, WebhookEvent

logger = logging.getLogger(__name__)


@dataclass
class Purged:
    webhook_events: int = 0
    live_events: int = 0
    media_files: int = 0


def _delete_in_batches(queryset, batch: int) -> int:
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                queryset.select_for_update(skip_locked=True)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch]
            )
            if ids:
                queryset.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
        if len(ids) < batch:
            return deleted


def purge_webhook_events(*, before, batch: int) -> int:
    """Delete processed webhook events received before `before`."""
    deleted = _delete_in_batches(
        WebhookEvent.objects.filter(
            state=WebhookEvent.State.PROCESSED, received_at__lt=before
        ),
        batch,
    )
    metrics.count_purged_events(deleted)
    return deleted


def purge_live_events(*, before, batch: int) -> int:
    """Delete live events created before `before`."""
    return _delete_in_batches(LiveEvent.objects.filter(created_at__lt=before), batch)


def purge_media_files(*, before, batch: int) -> int:
    """Delete the stored media files of messages older than `before`; the
    messages stay, their media marked purged."""
    purged = 0
    stored = Message.objects.filter(
        media_state=Message.MediaState.STORED, timestamp__lt=before
    )
    while True:
        with transaction.atomic():
            messages = list(
                stored.select_for_update(skip_locked=True)
                .order_by("pk")
                .only("pk", "media_file")[:batch]
            )
            for message in messages:
                # A file already gone is what was wanted.
                message.media_file.delete(save=False)
            Message.objects.filter(pk__in=[m.pk for m in messages]).update(
                media_state=Message.MediaState.PURGED, media_file=""
            )
        purged += len(messages)
        if len(messages) < batch:
            return purged


def purge_expired(*, now=None) -> Purged:
    """Everything past its retention age (settings), in batches."""
    now = now or timezone.now()
    batch = settings.RETENTION_BATCH
    purged = Purged(
        webhook_events=purge_webhook_events(
            before=now - timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS),
            batch=batch,
        ),
        live_events=purge_live_events(
            before=now - timedelta(days=settings.LIVE_EVENT_RETENTION_DAYS),
            batch=batch,
        ),
    )
    if settings.MEDIA_RETENTION_DAYS > 0:
        purged.media_files = purge_media_files(
            before=now - timedelta(days=settings.MEDIA_RETENTION_DAYS), batch=batch
        )
    if purged.webhook_events or purged.live_events or purged.media_files:
        logger.info(
            "Purged %d webhook events, %d live events, %d media files",
            purged.webhook_events,
            purged.live_events,
            purged.media_files,
        )
    return purged
