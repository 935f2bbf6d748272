"""The consent ledger: records are appended, never edited; the latest per
purpose (by when it happened) decides, and sends check it at send time.
"""

import functools
import re
import unicodedata
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User

from ..models import (
    AccountNotice,
    ConsentRecord,
    Customer,
    Message,
    MessageTemplate,
    WhatsAppNumber,
)
from ..selectors import consent as consent_selectors
from ..whatsapp import payloads
from . import customers, errors

# Meta's category of a user_preferences change that concerns marketing.
MARKETING_PREFERENCE = "marketing_messages"

# What a user_preferences value means for marketing consent, and the wording
# recorded when Meta sends no `detail`. Meta's reference documents `stop`
# and `resume` only
# (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences);
# `signup`, a customer signing up for a business's marketing messages in
# WhatsApp, has no published example: it is modelled on the documented
# fields (wa_id or user_id, detail, category, value, timestamp) and recorded
# as the opt-in it is, in its own words.
PREFERENCE_CONSENT = {
    "stop": (ConsentRecord.Status.OPT_OUT, "Marketing messages: stop (in WhatsApp)"),
    "resume": (ConsentRecord.Status.OPT_IN, "Marketing messages: resume (in WhatsApp)"),
    "signup": (
        ConsentRecord.Status.OPT_IN,
        "Signed up for marketing messages (in WhatsApp)",
    ),
}


def record_user_preference(
    *,
    number: WhatsAppNumber,
    update: payloads.UserPreferenceUpdate,
    received_at: datetime | None = None,
) -> ConsentRecord | None:
    """Record a customer stopping, resuming or signing up for marketing
    messages in WhatsApp.

    The record is dated with Meta's time for the change (else when the
    webhook was received), so one that arrives late, or is replayed or
    processed again, never overrides a newer record: it joins the ledger in
    its place. The same event twice adds one record. A category or value
    the helpdesk does not know is no consent: it is noted for admins. Return
    the record added, or None.
    """
    value = update.value.strip().lower()
    occurred_at = update.timestamp or received_at or timezone.now()
    if value not in PREFERENCE_CONSENT or update.category not in (
        "",
        MARKETING_PREFERENCE,
    ):
        _note_unknown_preference(number, update, occurred_at)
        return None
    status, wording = PREFERENCE_CONSENT[value]
    key = f"user_preferences:{update.category[:64]}:{value}:" + (
        occurred_at.isoformat()
    )
    customer = customers.find_or_merge_customer(
        wa_id=update.wa_id, user_id=update.user_id
    )
    if ConsentRecord.objects.filter(customer=customer, event_key=key).exists():
        return None
    try:
        with transaction.atomic():
            return ConsentRecord.objects.create(
                customer=customer,
                purpose=ConsentRecord.Purpose.MARKETING,
                status=status,
                source=ConsentRecord.Source.WHATSAPP,
                wording=update.detail or wording,
                occurred_at=occurred_at,
                event_key=key,
            )
    except IntegrityError:
        # The same event, processed at the same moment by another worker.
        return None


def _note_unknown_preference(
    number: WhatsAppNumber, update: payloads.UserPreferenceUpdate, occurred_at
) -> None:
    """A preference Meta sent that is not a marketing stop, resume or signup:
    shown to admins (once per event), never guessed into the ledger."""
    summary = (
        f"A customer's preference the helpdesk does not know, not recorded "
        f"as consent: category {update.category or '(none)'!r}, value "
        f"{update.value or '(none)'!r}"
        + (f" ({update.detail})" if update.detail else "")
    )
    notice = {
        "kind": "user_preferences",
        "event": update.value[:60],
        "waba_id": number.waba_id,
        "number": number,
        "summary": summary,
        "occurred_at": occurred_at,
    }
    if not AccountNotice.objects.filter(**notice).exists():
        AccountNotice.objects.create(**notice, raw=dict(update.raw))


MARKETING_OPTED_OUT_CODE = 131050


def _fold(text: str) -> str:
    """Casefold, drop accents and the spaces/punctuation around words."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    words = re.findall(r"\w+", bare.casefold())
    return " ".join(words)


@functools.lru_cache(maxsize=4)
def _folded_keywords(keywords: tuple[str, ...]) -> frozenset[str]:
    # Every customer message is checked: fold the keywords once, not each time.
    return frozenset(_fold(keyword) for keyword in keywords)


def is_opt_out_message(text: str) -> bool:
    """Whether a whole message is an opt-out keyword (STOP, BAJA, ARRÊT, ...)."""
    folded = _fold(text)
    return bool(folded) and folded in _folded_keywords(tuple(settings.OPT_OUT_KEYWORDS))


def is_marketing_opt_out_button(title: str, payload: str = "") -> bool:
    """Whether a quick reply is a marketing template's "Stop promotions" button."""
    buttons = {_fold(button) for button in settings.MARKETING_OPT_OUT_BUTTONS}
    return bool(buttons & {_fold(title), _fold(payload)} - {""})


def record_consent(
    *,
    customer: Customer,
    purpose: str,
    status: str,
    source: str,
    wording: str = "",
    recorded_by: User | None = None,
) -> ConsentRecord:
    """Append an opt-in or opt-out to the ledger (never edited, never deleted)."""
    if purpose not in ConsentRecord.Purpose.values:
        raise ValueError(f"Unknown purpose {purpose!r}")
    if status not in ConsentRecord.Status.values:
        raise ValueError(f"Unknown consent status {status!r}")
    if source not in ConsentRecord.Source.values:
        raise ValueError(f"Unknown consent source {source!r}")
    return ConsentRecord.objects.create(
        customer=customer,
        purpose=purpose,
        status=status,
        source=source,
        wording=wording,
        recorded_by=recorded_by,
    )


def opt_out_everywhere(
    *,
    customer: Customer,
    source: str,
    wording: str,
    recorded_by: User | None = None,
) -> list[ConsentRecord]:
    """Opt a customer out of every purpose, as Meta's policy asks for STOP."""
    return [
        record_consent(
            customer=customer,
            purpose=purpose,
            status=ConsentRecord.Status.OPT_OUT,
            source=source,
            wording=wording,
            recorded_by=recorded_by,
        )
        for purpose in ConsentRecord.Purpose.values
    ]


def has_consent(customer: Customer, purpose: str) -> bool:
    """Whether the customer's newest record for the purpose is an opt-in."""
    status = consent_selectors.latest_consent(customer.pk, purpose)
    return status == ConsentRecord.Status.OPT_IN


def check_template_consent(customer: Customer, template: MessageTemplate) -> None:
    """Marketing templates need a marketing opt-in; nothing goes after an opt-out.

    Agents may still send a utility template (an order update) to reopen a
    conversation unless the customer opted out of utility messages.
    """
    if template.category == MessageTemplate.Category.MARKETING:
        if not has_consent(customer, ConsentRecord.Purpose.MARKETING):
            raise errors.NoConsent(
                "The customer has not opted in to marketing messages "
                "(or has opted out)."
            )
        return
    latest = consent_selectors.latest_consent(
        customer.pk, ConsentRecord.Purpose.UTILITY
    )
    if latest == ConsentRecord.Status.OPT_OUT:
        raise errors.NoConsent("The customer has opted out of WhatsApp messages.")


def opt_out_by_message(customer: Customer, message: Message) -> None:
    """A customer's STOP (any purpose) or "Stop promotions" tap (marketing)."""
    if message.type == "text" and is_opt_out_message(message.text):
        opt_out_everywhere(
            customer=customer,
            source=ConsentRecord.Source.WHATSAPP,
            wording=f"Customer wrote: {message.text[:200]}",
        )
    elif message.type in {"button", "interactive"}:
        payload = message.payload or {}
        reply = payload.get("button_reply") or {}
        title = str(payload.get("text") or reply.get("title") or message.text or "")
        button_payload = str(payload.get("payload") or reply.get("id") or "")
        if is_marketing_opt_out_button(title, button_payload):
            record_consent(
                customer=customer,
                purpose=ConsentRecord.Purpose.MARKETING,
                status=ConsentRecord.Status.OPT_OUT,
                source=ConsentRecord.Source.WHATSAPP,
                wording=f"Customer tapped: {title[:200]}",
            )
        elif is_opt_out_message(title):
            opt_out_everywhere(
                customer=customer,
                source=ConsentRecord.Source.WHATSAPP,
                wording=f"Customer tapped: {title[:200]}",
            )


def record_marketing_opt_out_from_meta(*, customer_id: int) -> ConsentRecord:
    """Meta refused a marketing message because the customer stopped them
    (error 131050, on a send's answer or its failed status): the ledger says
    so, and later marketing sends are refused before any request."""
    return ConsentRecord.objects.create(
        customer_id=customer_id,
        purpose=ConsentRecord.Purpose.MARKETING,
        status=ConsentRecord.Status.OPT_OUT,
        source=ConsentRecord.Source.META_ERROR,
        wording="WhatsApp reported that the customer stopped marketing messages.",
    )
