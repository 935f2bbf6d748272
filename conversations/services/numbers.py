"""The business's WhatsApp numbers: adding them, pausing and resuming their
sends, and what Meta reports about their quality and account.
"""

import logging
import re
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..delivery import doorbells
from ..models import (
    AccountNotice,
    MetaApp,
    WhatsAppNumber,
)
from ..whatsapp import payloads

logger = logging.getLogger(__name__)


@transaction.atomic
def add_whatsapp_number(
    *,
    phone_number_id: str,
    display_phone_number: str,
    waba_id: str,
    access_token: str,
    app_secret: str,
    verify_token: str,
    name: str = "",
    throughput: int = 80,
    app_id: str = "",
) -> tuple[WhatsAppNumber, bool]:
    """Add a number, or update the one with this phone-number id.

    Numbers given the same app id share that Meta app's secret and verify
    token, the latest call's values winning. Without an app id a new number
    gets an app of its own, and an existing number keeps its app.
    Return the number and whether it was created.
    """
    number = (
        WhatsAppNumber.objects.select_for_update()
        .select_related("app")
        .filter(phone_number_id=phone_number_id)
        .first()
    )
    if app_id:
        app, _ = MetaApp.objects.select_for_update().get_or_create(
            app_id=app_id, defaults={"name": f"Meta app {app_id}"}
        )
    elif number is not None:
        app = number.app
    else:
        app = MetaApp(name=name or display_phone_number)
    app.app_secret = app_secret
    app.verify_token = verify_token
    app.full_clean()
    app.save()

    created = number is None
    if created:
        number = WhatsAppNumber(phone_number_id=phone_number_id)
    number.app = app
    number.name = name or number.name or display_phone_number
    number.display_phone_number = display_phone_number
    number.waba_id = waba_id
    number.access_token = access_token
    number.throughput = throughput
    number.full_clean()
    number.save()
    # Templates are Meta's: mirror them now, not at beat's next hourly sync,
    # so the composer and the notifications API can use them at once.
    doorbells.ring_after_commit(doorbells.SYNC_TEMPLATES, number.pk)
    return number, created


def record_phone_number_quality(
    *,
    numbers: list[WhatsAppNumber],
    update: payloads.PhoneNumberQualityUpdate,
    received_at: datetime,
) -> AccountNotice:
    """Store a number's messaging limit and quality event; note it for admins.

    The webhook names the number by its display number within the WABA.
    """
    digits = re.sub(r"\D", "", update.display_phone_number)
    matching = [
        number
        for number in numbers
        if re.sub(r"\D", "", number.display_phone_number) == digits
    ]
    at = update.time or received_at
    limit = update.current_limit or update.max_daily_conversations_per_business
    rating = str(update.raw.get("quality_rating") or "")
    for number in matching:
        if number.quality_updated_at and number.quality_updated_at > at:
            continue
        number.quality_event = update.event[:40]
        if limit:
            number.messaging_limit = limit[:40]
        if rating:
            number.quality_rating = rating[:20]
        number.quality_updated_at = at
        number.save(
            update_fields=[
                "quality_event",
                "messaging_limit",
                "quality_rating",
                "quality_updated_at",
                "updated_at",
            ]
        )
    return AccountNotice.objects.create(
        kind="phone_number_quality_update",
        event=update.event[:60],
        waba_id=update.waba_id,
        number=matching[0] if matching else None,
        summary=(
            f"{update.display_phone_number}: {update.event}"
            + (f", limit {update.old_limit or '?'} → {limit}" if limit else "")
        ),
        raw=dict(update.raw),
        occurred_at=at,
    )


def record_account_update(
    *,
    numbers: list[WhatsAppNumber],
    update: payloads.AccountUpdate,
    received_at: datetime,
) -> AccountNotice:
    """Record a violation, ban, restriction or other account event for admins."""
    details = [
        detail
        for detail in (
            update.ban_state and f"ban {update.ban_state} {update.ban_date}".strip(),
            update.violation_type and f"violation {update.violation_type}",
            *(
                f"restriction {item.get('restriction_type', '')} "
                f"until {item.get('expiration', '?')}"
                for item in update.restrictions
            ),
        )
        if detail
    ]
    digits = re.sub(r"\D", "", update.phone_number)
    number = next(
        (
            number
            for number in numbers
            if digits and re.sub(r"\D", "", number.display_phone_number) == digits
        ),
        None,
    )
    return AccountNotice.objects.create(
        kind="account_update",
        event=update.event[:60],
        waba_id=update.waba_id,
        number=number,
        summary=f"{update.event}: {'; '.join(details)}" if details else update.event,
        raw=dict(update.raw),
        occurred_at=update.time or received_at,
    )


def record_account_error(
    *, number: WhatsAppNumber, error: payloads.AccountError, received_at: datetime
) -> AccountNotice:
    """Record a system or account error Meta reported outside any message."""
    meta_error = error.error
    return AccountNotice.objects.create(
        kind="errors",
        event=str(meta_error.code or "")[:60],
        waba_id=error.waba_id,
        number=number,
        summary=" — ".join(
            part for part in (meta_error.title, meta_error.details) if part
        ),
        raw=dict(error.raw),
        occurred_at=received_at,
    )


@transaction.atomic
def pause_sending(*, number: WhatsAppNumber, error: dict | None) -> bool:
    """Stop every send of a number until an admin resumes it; tell the admins."""
    code = (error or {}).get("code")
    reason = (
        f"Meta error {code}: {(error or {}).get('title') or ''} "
        f"{(error or {}).get('details') or ''}"
    ).strip()
    now = timezone.now()
    paused = WhatsAppNumber.objects.filter(pk=number.pk, sending_paused=False).update(
        sending_paused=True,
        sending_paused_reason=reason,
        sending_paused_since=now,
        updated_at=now,
    )
    if paused:
        AccountNotice.objects.create(
            kind="sending_paused",
            event=str(code or ""),
            waba_id=number.waba_id,
            number=number,
            summary=f"Sending from {number} is paused: {reason}. "
            "Fix the cause (e.g. a new access token), then resume sending.",
            raw=error or {},
            occurred_at=now,
        )
        logger.error("Sending from number %s paused: %s", number.pk, reason)
    return bool(paused)


def resume_sending(*, number: WhatsAppNumber) -> None:
    """An admin fixed the cause: queued sends of the number go out again."""
    WhatsAppNumber.objects.filter(pk=number.pk).update(
        sending_paused=False,
        sending_paused_reason="",
        sending_paused_since=None,
        updated_at=timezone.now(),
    )
    doorbells.ring_delivery_after_commit(number.pk, force=True)
