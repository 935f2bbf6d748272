"""The business's own WhatsApp Business app on a coexistence number: what it
sends reaches the helpdesk as Meta's smb_message_echoes webhook."""

from . import identity, payloads


def echo_value(number, customer, *, text: str) -> tuple[str, dict]:
    """The wamid and the `smb_message_echoes` value of a text the business
    typed in its app to the customer (by phone, or by BSUID when hidden)."""
    wamid = payloads.new_wamid(customer.wa_id)
    echo = {
        "from": number.display_digits,
        "id": wamid,
        "timestamp": str(payloads.now()),
        "type": "text",
        "text": {"body": text},
    }
    phone = identity.webhook_wa_id(customer)
    if phone:
        echo["to"] = f"+{phone}"
    else:
        echo["to_user_id"] = customer.user_id
    value = payloads.messages_value(number)
    value["message_echoes"] = [echo]
    return wamid, value


# The past chat the history action shares when a test names none: the
# customer asks, the business answers from its app.
SAMPLE_HISTORY = (
    {"from": "customer", "text": "Do you ship to Canada?", "minutes_ago": 90},
    {"from": "business", "text": "We do, in 5 to 7 days.", "minutes_ago": 80},
)


def history_value(number, customer, past: list[dict]) -> tuple[list[dict], dict]:
    """The past messages and the `history` value that shares them: one
    chunk, one thread (the customer's phone), oldest first, as Meta sends
    when a business onboarded with its WhatsApp Business app shares its chats.

    Each of `past` is {"from": "customer" | "business", "text", "minutes_ago"}.
    """
    now = payloads.now()
    messages = []
    for item in sorted(past, key=lambda item: -float(item.get("minutes_ago", 0))):
        sender = item.get("from")
        if sender not in ("customer", "business") or not item.get("text"):
            raise ValueError(
                "each past message needs from (customer or business) and text"
            )
        message = {
            "from": customer.wa_id,
            "id": payloads.new_wamid(customer.wa_id),
            "timestamp": str(now - int(float(item.get("minutes_ago", 0)) * 60)),
            "type": "text",
            "text": {"body": str(item["text"])},
            "history_context": {"status": "READ"},
        }
        if sender == "business":
            message["from"] = number.display_digits
            message["to"] = customer.wa_id
        messages.append(message)
    chunk = {
        "metadata": {"phase": 0, "chunk_order": 1, "progress": 100},
        "threads": [{"id": customer.wa_id, "messages": messages}],
    }
    value = payloads.messages_value(number)
    value["history"] = [chunk]
    return messages, value
