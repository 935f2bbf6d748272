"""Messages the business sent from the WhatsApp Business app on the same
number (coexistence: Meta's smb_message_echoes), kept in the customer's
conversation as outbound messages "sent from the phone app", so agents see
the whole exchange. They are never sent again by the helpdesk.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .. import realtime
from ..models import Message, WhatsAppNumber
from ..whatsapp import payloads
from . import customers, media


@transaction.atomic
def record_echo(
    *,
    number: WhatsAppNumber,
    echo: payloads.MessageEcho,
    received_at: datetime | None = None,
) -> Message | None:
    """Store one echo as a sent outbound message; None if it is known already."""
    at = echo.timestamp or received_at or timezone.now()
    customer = customers.find_or_merge_customer(
        wa_id=echo.to_wa_id, user_id=echo.to_user_id
    )
    conversation, conversation_event, undo = customers.conversation_for(
        customer=customer, number=number, at=at, new_customer=False
    )
    row = Message(
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type=echo.type or "unknown",
        text=echo.text,
        payload=dict(echo.payload),
        wamid=echo.wamid,
        status=Message.Status.SENT,
        timestamp=at,
        sent_at=at,
        from_business_app=True,
    )
    media.note_media(row, echo.media)
    if not customers.insert_or_ignore(row):
        # Stored already (a redelivery): leave no conversation opened for it.
        if undo is not None:
            undo()
        return None
    media.queue_download(row)
    customers.touch_conversation(conversation, row, inbound=False)
    if conversation_event is not None:
        realtime.publish(conversation_event, conversation=conversation)
    realtime.publish(realtime.MESSAGE_CREATED, conversation=conversation, message=row)
    return row
