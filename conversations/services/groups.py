"""Group traffic (Meta's Groups API): a message written in a WhatsApp group
joins the group's own conversation, never the sender's one-to-one thread, so
an agent's answer cannot go privately to one member by mistake. Agents read
group conversations; the helpdesk does not send to groups.
"""

from django.db import IntegrityError

from .. import realtime
from ..models import Conversation, Customer, WhatsAppNumber
from . import customers, errors


def group_conversation_for(
    *, number: WhatsAppNumber, group_id: str, sender: Customer
) -> tuple[Conversation, str | None, object]:
    """The group's unresolved conversation on the number, or a new one
    (whose customer is the member who wrote first); the live event to
    publish and how to undo a creation, as customers.conversation_for."""
    for _ in range(5):
        current = (
            Conversation.objects.select_for_update()
            .filter(number=number, group_id=group_id)
            .exclude(status=Conversation.Status.RESOLVED)
            .first()
        )
        if current is not None:
            return current, None, None
        conversation = Conversation(customer=sender, number=number, group_id=group_id)
        if customers.insert_or_ignore(conversation):

            def undo(conversation=conversation):
                Conversation.objects.filter(pk=conversation.pk).delete()

            return conversation, realtime.CONVERSATION_CREATED, undo
    raise IntegrityError(f"Could not settle a conversation for group {group_id!r}")


def check_not_group(conversation: Conversation) -> None:
    """Refuse a send into a group's conversation: it would go privately to
    one member, not to the group."""
    if conversation.group_id:
        raise errors.GroupConversation(
            "This is a WhatsApp group's conversation: a reply here would reach "
            "one member privately, not the group, so the helpdesk does not send "
            "one. Answer the member in their own conversation."
        )
