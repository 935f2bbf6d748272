"""Who a customer is on Meta's side since usernames: a phone (wa_id) Meta
always knows, a business-scoped user id (BSUID), a username, and whether
the phone is hidden from the business (a username customer the business
has not messaged by phone in the last 30 days).

Sends name the customer by phone in `to` or by BSUID in `recipient`; a
BSUID in `to` is refused, and authentication templates go to phones only.
"""

import re

from .errors import GraphError, invalid_parameter

BSUID = re.compile(r"^[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,250}$")
# Meta's code for a send to a BSUID that needs a phone (authentication
# templates: one-tap, zero-tap, copy-code).
BSUID_NOT_SUPPORTED = 131062


def check_addressee(body: dict) -> None:
    """Refuse a send that names nobody, or a BSUID in `to`."""
    to = body.get("to")
    recipient = body.get("recipient")
    if to is None and recipient is None:
        raise GraphError(
            100,
            "The parameter to is required.",
            message="(#100) The parameter to is required.",
        )
    if to is not None:
        if not isinstance(to, str) or not to:
            raise invalid_parameter("Param to must be a phone number.")
        if BSUID.match(to) or not any(ch.isdigit() for ch in to):
            raise invalid_parameter(
                f"Param to ({to}) is not a valid phone number. Send to a "
                "business-scoped user id with the recipient parameter."
            )
        return
    if not isinstance(recipient, str) or not BSUID.match(recipient):
        raise invalid_parameter(
            f"Param recipient ({recipient}) is not a valid business-scoped user id."
        )


def check_recipient_template(body: dict, stored_template: dict | None) -> None:
    """Authentication templates sent by BSUID are refused, as Meta does."""
    if (
        "to" not in body
        and stored_template is not None
        and stored_template.get("category") == "AUTHENTICATION"
    ):
        raise GraphError(
            BSUID_NOT_SUPPORTED,
            "Business-scoped User ID recipients are not supported for this message.",
        )


def addressed_customer(sandbox, body: dict):
    """The customer a checked send names: by phone in `to`, or by BSUID in
    `recipient` (a BSUID Meta never gave out is undeliverable)."""
    if "to" in body:
        return sandbox.customer("".join(ch for ch in body["to"] if ch.isdigit()))
    customer = sandbox.customer_by_user_id(body["recipient"])
    if customer is None:
        raise GraphError(131026, f"No WhatsApp user has the id {body['recipient']}.")
    return customer


def answer_contact(body: dict, wa_id: str, user_id: str) -> dict:
    """The `contacts[]` entry of a send's answer: wa_id for a phone send,
    user_id for a BSUID send."""
    if "to" in body:
        return {"input": body["to"], "wa_id": wa_id}
    return {"input": body["recipient"], "user_id": user_id}


def webhook_contact(customer) -> dict:
    """`contacts[]` of a webhook about the customer: the phone only when the
    business may see it, the BSUID and username when the customer has them."""
    profile = {"name": customer.name}
    if customer.username:
        profile["username"] = customer.username
    entry = {"profile": profile, "wa_id": webhook_wa_id(customer)}
    if customer.user_id:
        entry["user_id"] = customer.user_id
    return entry


def webhook_wa_id(customer) -> str:
    return "" if customer.phone_hidden else customer.wa_id


def apply_description(customer, description: dict) -> None:
    """Take a control request's identity fields: `username`, `hide_phone`
    (true: the customer wrote with a username only; false: shared again)."""
    username = description.pop("username", None)
    if username is not None:
        customer.username = str(username)
    hide_phone = description.pop("hide_phone", None)
    if hide_phone is not None:
        if hide_phone and not customer.user_id:
            raise ValueError("a customer with a hidden phone needs a user_id (BSUID)")
        customer.phone_hidden = bool(hide_phone)
