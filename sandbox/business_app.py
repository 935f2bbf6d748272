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
