"""Past chats of a number shared with the WhatsApp Business app (Meta's
`history` webhook, sent once when the business shares its app's history):
each thread's messages join the customer's conversation on the number, or a
resolved one of their own, so the inbox is not flooded with old chats.

Media is downloaded as a live message's is (media.py). Meta leaves media ids
out of the first chunks and sends them in later history webhooks for the
last 14 days' media: an id that arrives for a stored message is noted on it
and its download queued.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import AccountNotice, Conversation, Message, WhatsAppNumber
from ..whatsapp import payloads
from . import customers, media

# history_context.status of a business message, as the helpdesk's statuses.
_STATUSES = {
    "delivered": Message.Status.DELIVERED,
    "read": Message.Status.READ,
    "played": Message.Status.READ,
}


@transaction.atomic
def import_history(
    *,
    number: WhatsAppNumber,
    chunk: payloads.HistoryChunk,
    received_at: datetime | None = None,
) -> int:
    """Store a chunk's past messages (each wamid once); return how many were new.

    A refusal to share (errors, no threads) is noted for admins instead.
    """
    if chunk.errors:
        error = chunk.errors[0]
        AccountNotice.objects.create(
            kind="history",
            event=str(error.code or "")[:60],
            waba_id=chunk.waba_id,
            number=number,
            summary=f"Chat history not shared: {error.title or error.message}",
            raw=dict(chunk.raw),
            occurred_at=received_at or timezone.now(),
        )
        return 0
    stored = 0
    for wa_id, messages in chunk.threads:
        if messages:
            stored += _import_thread(number, wa_id, messages)
    return stored


def _import_thread(number, wa_id: str, messages) -> int:
    customer = customers.find_or_merge_customer(wa_id=wa_id, user_id="")
    newest = max((m.timestamp for m in messages if m.timestamp), default=timezone.now())
    conversation = (
        Conversation.objects.filter(customer=customer, number=number, group_id="")
        .order_by("-created_at")
        .first()
    )
    if conversation is None:
        conversation = Conversation.objects.create(
            customer=customer,
            number=number,
            status=Conversation.Status.RESOLVED,
            resolved_at=newest,
        )
    # One insert each, ignored when the wamid is stored (a redelivered chunk).
    inserted, known = [], []
    for message in messages:
        row = _row(conversation, message)
        if customers.insert_or_ignore(row):
            inserted.append(row)
            media.queue_download(row)
        elif message.media and message.media.id:
            known.append(message)
    _media_arrived(number, known)
    if inserted:
        latest = max(inserted, key=lambda row: row.timestamp)
        customers.touch_conversation(conversation, latest, inbound=False)
    return len(inserted)


def _media_arrived(number: WhatsAppNumber, messages) -> None:
    """Note the media ids of messages stored without one, and queue their
    downloads; a message whose media is known already is left alone."""
    if not messages:
        return
    by_wamid = {message.wamid: message for message in messages}
    rows = Message.objects.select_for_update(of=("self",)).filter(
        wamid__in=by_wamid,
        conversation__number=number,
        media_state=Message.MediaState.NONE,
    )
    for row in rows:
        message = by_wamid[row.wamid]
        media.note_media(row, message.media)
        row.payload = dict(message.payload)
        row.save(
            update_fields=[
                "media_id",
                "media_mime_type",
                "media_filename",
                "media_state",
                "payload",
                "updated_at",
            ]
        )
        media.queue_download(row)


def _row(conversation: Conversation, message: payloads.HistoryMessage) -> Message:
    at = message.timestamp or timezone.now()
    outbound = message.from_business
    row = Message(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND if outbound else Message.Direction.INBOUND,
        type=message.type or "unknown",
        text=message.text,
        payload=dict(message.payload),
        wamid=message.wamid,
        status=_STATUSES.get(message.status, Message.Status.SENT)
        if outbound
        else Message.Status.RECEIVED,
        timestamp=at,
        sent_at=at if outbound else None,
        from_business_app=outbound,
    )
    media.note_media(row, message.media)
    return row
