"""What the customer panel reads: the customer's other conversations, the
consent ledger, and what Meta billed for the open conversation."""

from __future__ import annotations

from accounts.models import User

from ..models import Conversation
from . import billing
from .inbox import visible_conversations

# The customer panel lists at most this many of the customer's other
# conversations.
PREVIOUS_CONVERSATIONS = 10


def previous_conversations(
    conversation: Conversation, user: User
) -> list[Conversation]:
    """The customer's other conversations on every number the agent may see,
    newest first (PREVIOUS_CONVERSATIONS of them, each with its number)."""
    return list(
        visible_conversations(user)
        .filter(customer_id=conversation.customer_id)
        .exclude(pk=conversation.pk)
        .select_related("last_message", "number")
        .order_by("-created_at", "-id")[:PREVIOUS_CONVERSATIONS]
    )


def conversation_cost(conversation: Conversation) -> list[dict]:
    """What Meta billed for this conversation, per currency (one query)."""
    return billing.conversation_cost(conversation.pk)
