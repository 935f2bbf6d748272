"""Message templates: mirrored from Meta (sync and review webhooks) and what
agents may still send when the customer service window is closed.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import (
    AccountNotice,
    MessageTemplate,
    WhatsAppNumber,
)
from ..whatsapp import client, payloads
from ..whatsapp import templates as meta_templates
from . import errors


@transaction.atomic
def record_template_status(
    *, update: payloads.TemplateStatusUpdate, received_at: datetime | None = None
) -> MessageTemplate:
    """Mirror Meta's template review result; create the template if unknown.

    An update without an event never blanks the status: Meta also sends
    quality changes under this field, which are recorded as quality.
    """
    reason = " ".join(
        part
        for part in (
            update.reason if update.reason not in ("", "NONE") else "",
            update.rejection_reason,
            update.rejection_recommendation,
            update.other_info_title,
            update.other_info_description,
        )
        if part
    )
    template = _template_for(update)
    if update.new_quality_score:
        _record_quality(template, update, received_at)
    if not update.event:
        return template
    template.status = update.event[:20]
    template.status_reason = reason
    if update.message_template_category and not template.category:
        template.category = update.message_template_category[:20]
    if update.message_template_id:
        template.template_id = update.message_template_id
    template.save()
    return template


def _template_for(update) -> MessageTemplate:
    template = None
    if update.message_template_id:
        template = MessageTemplate.objects.filter(
            waba_id=update.waba_id, template_id=update.message_template_id
        ).first()
    if template is None:
        template, _ = MessageTemplate.objects.get_or_create(
            waba_id=update.waba_id,
            name=update.message_template_name,
            language=update.message_template_language,
            defaults={
                "template_id": update.message_template_id,
                "category": getattr(update, "message_template_category", "")[:20],
                "status": MessageTemplate.Status.PENDING,
            },
        )
    return template


@transaction.atomic
def record_template_category(
    *, update: payloads.TemplateCategoryUpdate
) -> MessageTemplate:
    """Follow Meta's re-categorisation of a template."""
    template = _template_for(update)
    if update.new_category:
        template.category = update.new_category[:20]
        template.save(update_fields=["category", "updated_at"])
    return template


@transaction.atomic
def record_template_quality(
    *, update: payloads.TemplateQualityUpdate, received_at: datetime
) -> AccountNotice:
    """Record a template's quality score change, on it and for admins."""
    return _record_quality(_template_for(update), update, received_at)


def _record_quality(template: MessageTemplate, update, received_at) -> AccountNotice:
    template.quality_score = update.new_quality_score[:20]
    template.save(update_fields=["quality_score", "updated_at"])
    return AccountNotice.objects.create(
        kind="message_template_quality_update",
        event=update.new_quality_score[:60],
        waba_id=update.waba_id,
        summary=(
            f"Template {update.message_template_name} "
            f"({update.message_template_language}): quality "
            f"{update.previous_quality_score or '?'} → {update.new_quality_score}"
        ),
        raw=dict(update.raw),
        occurred_at=update.time or received_at or timezone.now(),
    )


def approved_templates(number: WhatsAppNumber) -> list[dict]:
    """What an agent may still send when the window is closed."""
    return [
        {"id": t.pk, "name": t.name, "language": t.language, "category": t.category}
        for t in MessageTemplate.objects.filter(
            waba_id=number.waba_id, status=MessageTemplate.Status.APPROVED
        )
    ]


def template_components(template: MessageTemplate, parameters: dict) -> list[dict]:
    """Check a template send's parameters; Meta's components[] for it.

    The parameters' shape is whatsapp/templates.py's components(); what does
    not fit is refused with TemplateParametersInvalid.
    """
    try:
        return meta_templates.components(template, parameters)
    except meta_templates.ParametersRefused as error:
        raise errors.TemplateParametersInvalid(str(error)) from None


def sync_templates(*, number: WhatsAppNumber | None = None) -> int:
    """Mirror the message templates of every WABA (or one number's); how many."""
    numbers = (
        [number] if number else list(WhatsAppNumber.objects.filter(is_active=True))
    )
    synced = 0
    seen_wabas: set[str] = set()
    for source in numbers:
        if source.waba_id in seen_wabas:
            continue
        seen_wabas.add(source.waba_id)
        now = timezone.now()
        kept = []
        for item in client.list_templates(source):
            components = list(item.get("components") or [])
            components.append(
                {
                    "type": "PARAMETER_FORMAT",
                    "value": str(item.get("parameter_format", "POSITIONAL")).upper(),
                }
            )
            category = str(item.get("category", "UTILITY")).upper()
            row, _ = MessageTemplate.objects.update_or_create(
                waba_id=source.waba_id,
                name=item["name"],
                language=item.get("language", ""),
                defaults={
                    "template_id": str(item.get("id", "")),
                    "category": category,
                    "status": str(item.get("status", "PENDING")).upper(),
                    "components": components,
                    "status_reason": str(
                        item.get("rejected_reason") or item.get("status_reason") or ""
                    ).replace("NONE", ""),
                    "synced_at": now,
                },
            )
            kept.append(row.pk)
            synced += 1
        MessageTemplate.objects.filter(waba_id=source.waba_id).exclude(
            pk__in=kept
        ).update(status=MessageTemplate.Status.DELETED, synced_at=now)
    return synced
