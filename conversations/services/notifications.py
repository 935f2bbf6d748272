"""Template notifications the business's own systems send (the notifications
API): one recipient at a time, checked and queued like any other send.
"""

import functools
import hashlib
import json
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from accounts.models import Team, User

from .. import realtime
from ..models import (
    ConsentRecord,
    Conversation,
    Customer,
    Message,
    MessageTemplate,
    Notification,
    NotificationBatch,
    WhatsAppNumber,
)
from ..selectors import composer
from ..whatsapp import templates as meta_templates
from . import consent, customers, errors, outbound, templates, workspace

# A notification's status as the business sees it, from its message's.
NOTIFICATION_STATUS = {
    Message.Status.QUEUED: "queued",
    Message.Status.SENDING: "queued",
    Message.Status.UNKNOWN: "unknown",
    Message.Status.SENT: "sent",
    Message.Status.DELIVERED: "delivered",
    Message.Status.READ: "read",
    Message.Status.PLAYED: "read",
    Message.Status.FAILED: "failed",
}


def notification_status(notification: Notification) -> str:
    if notification.state == Notification.State.REFUSED:
        return "refused"
    message = notification.message
    if message is None:
        return "queued"
    return NOTIFICATION_STATUS.get(message.status, message.status)


def notification_error(notification: Notification) -> dict | None:
    if notification.state == Notification.State.REFUSED:
        return notification.error
    message = notification.message
    if message is not None and message.status == Message.Status.FAILED:
        return message.error or {"code": None, "title": "Failed"}
    return None


def notification_template(
    *, number: WhatsAppNumber, name: str, language: str, purpose: str
) -> MessageTemplate:
    """The approved template a notification of this purpose may use."""
    template = MessageTemplate.objects.filter(
        waba_id=number.waba_id, name=name, language=language
    ).first()
    if template is None and not composer.templates_synced(number.waba_id):
        raise errors.TemplateNotApproved(
            "This number's templates are not synced from Meta yet: they sync "
            "when the number is added and every hour, or an admin can sync "
            "them now."
        )
    if template is None:
        raise errors.TemplateNotApproved(
            f"There is no template {name} ({language}) for this number."
        )
    if template.status != MessageTemplate.Status.APPROVED:
        raise errors.TemplateNotApproved(
            f"Template {name} ({language}) is {template.status}, not approved."
        )
    # A one-time password is a message the customer asked for: authentication
    # templates go out as utility notifications.
    category = template.category.lower()
    if category == MessageTemplate.Category.AUTHENTICATION.lower():
        category = ConsentRecord.Purpose.UTILITY
    if category != purpose:
        raise errors.TemplateCategoryMismatch(
            f"Template {name} is a {template.category} template; a {purpose} "
            f"notification needs a {purpose.upper()} one."
        )
    return template


def notification_parameters(
    template: MessageTemplate, parameters: dict, document: dict | None
) -> dict:
    """The template parameters, with the document as its document header.

    Checked against the template here, once, so a bulk send refuses bad
    parameters for everybody before anything is queued.
    """
    parameters = dict(parameters or {})
    if document:
        header = meta_templates.components_by_type(template).get("HEADER") or {}
        if str(header.get("format", "")).upper() != "DOCUMENT":
            raise errors.TemplateParametersInvalid(
                "document: this template has no document header"
            )
        if parameters.get("header"):
            raise errors.TemplateParametersInvalid(
                "document: give the document or header.document, not both"
            )
        parameters["header"] = {"document": dict(document)}
    templates.template_components(template, parameters)
    return parameters


def _notification_conversation(
    *, customer: Customer, number: WhatsAppNumber, team, by
) -> tuple[Conversation, bool]:
    """The customer's unresolved conversation on the number, or a new one."""
    for _ in range(5):
        current = (
            Conversation.objects.select_for_update()
            .filter(customer=customer, number=number, group_id="")
            .unresolved()
            .order_by("-id")
            .first()
        )
        if current is not None:
            if team is not None and current.team_id != team.pk and by is not None:
                current = workspace.assign_conversation(
                    conversation=current, by=by, team=team
                )
            return current, False
        try:
            with transaction.atomic():
                return (
                    Conversation.objects.create(
                        customer=customer, number=number, team=team
                    ),
                    True,
                )
        except IntegrityError:
            continue
    raise IntegrityError(f"Could not settle a conversation for customer {customer.pk}")


def recipient_digits(to: str) -> str | None:
    value = (to or "").strip()
    if not value.startswith("+"):
        return None
    digits = value[1:]
    return digits if customers.E164_DIGITS.match(digits) else None


@dataclass
class NotificationOrder:
    """What every recipient of one request shares, checked once."""

    number: WhatsAppNumber
    template: MessageTemplate
    purpose: str
    parameters: dict
    reference: str = ""
    team: Team | None = None
    created_by: User | None = None
    idempotency_key: str = ""
    request_hash: str = ""


def notification_row(
    order: NotificationOrder,
    *,
    to: str,
    user_id: str = "",
    position: int = 0,
    batch: NotificationBatch | None = None,
    parameters: dict | None = None,
    reference: str | None = None,
    **fields,
) -> Notification:
    """A recipient's Notification row (not saved), the order's values unless
    the recipient has their own parameters or reference."""
    return Notification(
        to=to[:64],
        user_id=user_id[:256],
        number=order.number,
        purpose=order.purpose,
        template=order.template,
        template_name=order.template.name,
        template_language=order.template.language,
        parameters=order.parameters if parameters is None else parameters,
        reference=order.reference if reference is None else reference,
        team=order.team,
        idempotency_key=order.idempotency_key,
        request_hash=order.request_hash,
        position=position,
        batch=batch,
        created_by=order.created_by,
        **fields,
    )


def refusal(code: str, detail: str) -> dict:
    """The fields of a refused Notification row."""
    return {
        "state": Notification.State.REFUSED,
        "error": {"code": code, "detail": detail},
    }


def invalid_recipient_refusal() -> dict:
    return refusal(
        errors.InvalidRecipient.code,
        "Give the number in E.164 form, such as +4917012345678.",
    )


def invalid_user_id_refusal() -> dict:
    return refusal(
        errors.InvalidRecipient.code,
        "Give the business-scoped user id as Meta sent it, such as "
        "US.13491208655302741918.",
    )


def recipient_ids(*, to: str, user_id: str) -> tuple[dict | None, dict | None]:
    """The ids a recipient names the customer by ({"wa_id", "user_id"}: a
    phone in E.164 form or a business-scoped user id, exactly one), or the
    fields of its refusal."""
    if user_id:
        if to or not customers.BSUID.match(user_id):
            return None, invalid_user_id_refusal()
        return {"wa_id": "", "user_id": user_id}, None
    digits = recipient_digits(to)
    if digits is None:
        return None, invalid_recipient_refusal()
    return {"wa_id": digits, "user_id": ""}, None


def phone_required_refusal(
    customer: Customer, template: MessageTemplate
) -> dict | None:
    """The fields of the refusal of an authentication template to a customer
    known by BSUID only, or None."""
    try:
        outbound.check_template_recipient(customer, template)
    except errors.PhoneRequired as error:
        return refusal(error.code, error.detail)
    return None


def no_consent_refusal(to: str, purpose: str) -> dict:
    return refusal(
        errors.NoConsent.code,
        f"{to} has not opted in to {purpose} messages (or has opted out).",
    )


def send_notification(
    *,
    order: NotificationOrder,
    to: str = "",
    user_id: str = "",
    position: int = 0,
    batch: NotificationBatch | None = None,
    consents: dict | None = None,
    parameters: dict | None = None,
    reference: str | None = None,
    refused: dict | None = None,
) -> Notification:
    """Queue one template notification, or record why it was refused.

    The customer is named by phone (`to`, E.164) or by business-scoped user
    id (`user_id`), exactly one. `refused` ({"code", "detail"}) records a
    recipient the caller already refused (a CSV row with bad parameters).

    Refusals for this recipient (a number that is not E.164, no opt-in for
    the purpose) become a refused Notification row; the template and its
    parameters must have been checked already (notification_template,
    notification_parameters). `consents` may carry latest_consents() of the
    customers listed under its "_known" key, for a bulk send. A duplicate
    idempotency key raises IntegrityError.
    """
    row = functools.partial(
        notification_row,
        order,
        to=to,
        user_id=user_id,
        position=position,
        batch=batch,
        parameters=parameters,
        reference=reference,
    )
    if refused is not None:
        return _saved(row(**refusal(refused["code"], refused["detail"])))
    ids, refused_fields = recipient_ids(to=to, user_id=user_id)
    if refused_fields is not None:
        return _saved(row(**refused_fields))
    with transaction.atomic():
        customer = customers.find_or_merge_customer(**ids)
        if consents is not None and customer.pk in consents.get("_known", ()):
            status = consents.get((customer.pk, order.purpose))
            consented = status == ConsentRecord.Status.OPT_IN
        else:
            consented = consent.has_consent(customer, order.purpose)
        if not consented:
            refused_row = row(
                customer=customer,
                **no_consent_refusal(to or user_id, order.purpose),
            )
            return _saved(refused_row)
        refused_fields = phone_required_refusal(customer, order.template)
        if refused_fields is not None:
            return _saved(row(customer=customer, **refused_fields))
        conversation, created = _notification_conversation(
            customer=customer, number=order.number, team=order.team, by=order.created_by
        )
        notification = row(customer=customer, state=Notification.State.QUEUED)
        notification.message = outbound.send_template(
            conversation=conversation,
            template=order.template,
            parameters=notification.parameters,
        )
        notification.conversation = conversation
        notification.save()
        if created:
            realtime.publish(realtime.CONVERSATION_CREATED, conversation=conversation)
    return notification


def _saved(notification: Notification) -> Notification:
    notification.save()
    return notification


def request_hash(data) -> str:
    """A stable hash of a request body (key order and spacing do not matter)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def notification_payload(notification: Notification) -> dict:
    """A notification as the API and the callbacks show it."""
    return {
        "id": notification.pk,
        "status": notification_status(notification),
        "to": notification.to,
        "user_id": notification.user_id,
        "purpose": notification.purpose,
        "template": {
            "name": notification.template_name,
            "language": notification.template_language,
        },
        "reference": notification.reference,
        "message": notification.message_id,
        "conversation": notification.conversation_id,
        "team": notification.team_id,
        "batch": notification.batch_id,
        "error": notification_error(notification),
        "created_at": notification.created_at.isoformat()
        if notification.created_at
        else None,
    }
