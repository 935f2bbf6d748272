"""What agents do to conversations in the workspace: assign, change status,
snooze, label, note, open.
"""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Team, User

from .. import realtime
from ..models import (
    Conversation,
    Label,
    Note,
)
from . import agents, errors, receipts, routing, satisfaction, service_levels

logger = logging.getLogger(__name__)


_UNCHANGED = object()


@transaction.atomic
def assign_conversation(
    *,
    conversation: Conversation,
    by: User,
    assignee: User | None | object = _UNCHANGED,
    team: Team | None | object = _UNCHANGED,
) -> Conversation:
    """Give a conversation to an agent and/or a team (None takes it away).

    The agent must be able to see the conversation's number, and the team
    must be one the number is open to.
    """
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    fields = []
    if assignee is not _UNCHANGED:
        if assignee is not None and not (
            assignee.is_active
            and agents.agent_may_see_number(assignee, conversation.number_id)
        ):
            raise errors.AssigneeNotAllowed()
        if conversation.assignee_id != (assignee.pk if assignee else None):
            conversation.assignee = assignee
            fields.append("assignee")
            routing.record_manual_assignment(conversation=conversation)
    if team is not _UNCHANGED:
        if (
            team is not None
            and not conversation.number.teams.filter(pk=team.pk).exists()
        ):
            raise errors.TeamNotAllowed()
        if conversation.team_id != (team.pk if team else None):
            conversation.team = team
            fields.append("team")
    if fields:
        conversation.save(update_fields=[*fields, "updated_at"])
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={
                "change": "assignment",
                "assignee": conversation.assignee_id,
                "team": conversation.team_id,
                "by": by.pk,
            },
        )
        if "team" in fields:
            service_levels.refresh_service_level(conversation=conversation)
    return conversation


@transaction.atomic
def change_status(
    *,
    conversation: Conversation,
    status: str,
    by: User | None,
    snoozed_until: datetime | None = None,
) -> Conversation:
    """Move a conversation to open, pending, snoozed (until a time) or resolved."""
    if status not in Conversation.Status.values:
        raise errors.WorkspaceError("invalid_status", f"Unknown status {status!r}.")
    now = timezone.now()
    if status == Conversation.Status.SNOOZED:
        if snoozed_until is None or snoozed_until <= now:
            raise errors.WorkspaceError(
                "snooze_time", "Snoozing needs a time in the future."
            )
    else:
        snoozed_until = None
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if conversation.status == status and conversation.snoozed_until == snoozed_until:
        return conversation
    conversation.status = status
    conversation.snoozed_until = snoozed_until
    if status == Conversation.Status.RESOLVED:
        conversation.resolved_at = now
    try:
        with transaction.atomic():
            conversation.save(
                update_fields=["status", "snoozed_until", "resolved_at", "updated_at"]
            )
    except IntegrityError:
        raise errors.WorkspaceError(
            "conversation_already_open",
            "The customer has another open conversation on this number.",
        ) from None
    realtime.publish(
        realtime.CONVERSATION_UPDATED,
        conversation=conversation,
        data={"change": "status", "status": status, "by": by.pk if by else None},
    )
    if conversation.assignee is not None and status not in routing.LOAD_STATUSES:
        routing.agent_may_take_more(conversation.assignee)
    service_levels.refresh_service_level(conversation=conversation, now=now)
    if status == Conversation.Status.RESOLVED:
        satisfaction.request_satisfaction(conversation=conversation, now=now)
    return conversation


def wake_snoozed_conversations(*, now: datetime | None = None) -> int:
    """Reopen snoozed conversations whose time has come; return how many."""
    now = now or timezone.now()
    woken = 0
    due = Conversation.objects.filter(
        status=Conversation.Status.SNOOZED, snoozed_until__lte=now
    ).values_list("pk", flat=True)[:500]
    for pk in list(due):
        with transaction.atomic():
            conversation = (
                Conversation.objects.select_for_update()
                .filter(pk=pk, status=Conversation.Status.SNOOZED)
                .first()
            )
            if conversation is not None:
                change_status(
                    conversation=conversation, status=Conversation.Status.OPEN, by=None
                )
                woken += 1
    return woken


@transaction.atomic
def add_note(*, conversation: Conversation, author: User, body: str) -> Note:
    """Leave a private note for colleagues; it never goes to WhatsApp."""
    body = body.strip()
    if not body:
        raise errors.WorkspaceError("empty_note", "A note needs some text.")
    note = Note.objects.create(conversation=conversation, author=author, body=body)
    realtime.publish(
        realtime.NOTE_CREATED, conversation=conversation, data={"note": note.pk}
    )
    return note


@transaction.atomic
def set_labels(
    *, conversation: Conversation, labels: list[Label], by: User
) -> Conversation:
    """Replace a conversation's labels."""
    current = set(conversation.labels.values_list("pk", flat=True))
    wanted = {label.pk for label in labels}
    if current != wanted:
        conversation.labels.set(labels)
        Conversation.objects.filter(pk=conversation.pk).update(
            updated_at=timezone.now()
        )
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={"change": "labels", "labels": sorted(wanted), "by": by.pk},
        )
        service_levels.refresh_service_level(conversation=conversation)
    return conversation


def open_conversation(*, conversation: Conversation, agent: User) -> bool:
    """An agent is looking at a conversation: reset unread, mark it read at Meta.

    Only the first of several tabs doing so at once changes anything. Return
    whether there was something unread.
    """
    with transaction.atomic():
        changed = Conversation.objects.filter(
            pk=conversation.pk, unread_count__gt=0
        ).update(unread_count=0)
        if not changed:
            return False
        conversation.unread_count = 0
        realtime.publish(
            realtime.CONVERSATION_UPDATED,
            conversation=conversation,
            data={"change": "read", "by": agent.pk},
        )
    try:
        # Blue ticks for the customer's newest message (sent once per message).
        receipts.mark_read(conversation=conversation)
    except Exception:
        # A courtesy to the customer; the agent's view never fails on it.
        logger.warning("Marking conversation %s read failed", conversation.pk)
    return True
