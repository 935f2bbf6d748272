"""What the composer offers: the canned responses an agent may use and the
templates approved for the conversation's number."""

from django.db.models import Q

from accounts.models import User

from ..models import (
    CannedResponse,
    Conversation,
    MessageTemplate,
    sees_every_number,
)


def canned_responses(user: User) -> list[CannedResponse]:
    queryset = CannedResponse.objects.all()
    if not sees_every_number(user):
        queryset = queryset.filter(Q(team__isnull=True) | Q(team__members=user))
    return list(queryset.distinct())


def approved_templates(conversation: Conversation) -> list[MessageTemplate]:
    return list(
        MessageTemplate.objects.filter(
            waba_id=conversation.number.waba_id,
            status=MessageTemplate.Status.APPROVED,
        ).order_by("name", "language")
    )


def templates_synced(waba_id: str) -> bool:
    """Whether the account's templates were ever mirrored from Meta (a review
    webhook alone leaves them unsynced)."""
    return MessageTemplate.objects.filter(
        waba_id=waba_id, synced_at__isnull=False
    ).exists()
