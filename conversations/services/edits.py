"""A customer editing or deleting a message they sent (Meta's `edit` and
`revoke` messages, on numbers shared with the WhatsApp Business app): the
original message changes, and what it said before is kept in its history.
"""

from datetime import datetime

from .. import realtime
from ..models import Message, WhatsAppNumber
from ..whatsapp import payloads

CHANGE_TYPES = frozenset({"edit", "revoke"})


def apply_change(
    *, number: WhatsAppNumber, message: payloads.InboundMessage, at: datetime
) -> bool:
    """Apply an edit or revoke to the message it names; False if that
    message is unknown (the change is then kept as a message of its own)."""
    original_id = str(message.payload.get("original_message_id") or "")
    original = (
        Message.objects.select_for_update()
        .filter(wamid=original_id, conversation__number=number)
        .select_related("conversation")
        .first()
        if original_id
        else None
    )
    if original is None:
        return False
    if any(item.get("wamid") == message.wamid for item in original.edit_history):
        # A redelivery of a change already applied.
        return True
    original.edit_history = [
        *original.edit_history,
        {
            "text": original.text,
            "payload": original.payload,
            "at": at.isoformat(),
            "wamid": message.wamid,
            "change": message.type,
        },
    ]
    fields = ["edit_history", "updated_at"]
    if message.type == "revoke":
        original.revoked_at = at
        fields.append("revoked_at")
    else:
        new = message.payload.get("message")
        new = new if isinstance(new, dict) else {}
        original.text = payloads.summarize_message(new)
        content = new.get(str(new.get("type", "")))
        if isinstance(content, dict):
            original.payload = content
        original.edited_at = at
        fields += ["text", "payload", "edited_at"]
    original.save(update_fields=fields)
    realtime.publish(
        realtime.MESSAGE_UPDATED,
        conversation=original.conversation,
        message=original,
        data={"change": message.type},
    )
    return True
