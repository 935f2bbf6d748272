"""The away reply a customer who writes while the business is closed gets.

It goes out once per conversation per closed period (a unique row per
period holds that even for concurrent sweeps), only to a customer who wrote
in that period and whose service window is open, and never to a customer
who opted out (a customer who wrote STOP opted out of every purpose). It is
an ordinary text send with no agent, recorded as an automatic message, so
the thread shows it as one.
"""

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import AutomaticMessage, AwayReply, BusinessHours, Conversation
from ..rules import business_hours as rules
from ..rules import windows
from . import business_hours, customers, errors, outbound

logger = logging.getLogger(__name__)

# Conversations one sweep answers per schedule at most; the next sweep takes
# the rest.
AWAY_BATCH = 500


def send_away_replies(*, now: datetime | None = None) -> int:
    """Answer customers who wrote while their conversation's hours are
    closed, once per closed period; return how many replies were queued."""
    now = now or timezone.now()
    sent = 0
    schedules = BusinessHours.objects.exclude(away_message="").prefetch_related(
        "opening_hours", "holidays"
    )
    for hours in schedules:
        since = rules.closed_since(business_hours.schedule_of(hours), now)
        if since is None:
            continue
        for conversation in _awaiting_away_reply(hours, since, now):
            sent += _send_away_reply(conversation, hours, since=since, now=now)
    return sent


def _awaiting_away_reply(hours: BusinessHours, since: datetime, now: datetime):
    conversations = Conversation.objects.exclude(
        status=Conversation.Status.RESOLVED
    ).filter(
        last_inbound_at__gte=since,
        last_inbound_at__lte=now,
    )
    if hours.team_id:
        conversations = conversations.filter(team_id=hours.team_id)
    else:
        conversations = conversations.filter(number_id=hours.number_id).filter(
            Q(team__isnull=True) | Q(team__business_hours__isnull=True)
        )
    candidates = list(
        conversations.exclude(away_replies__closed_since=since)
        .select_related("number")
        .order_by("last_inbound_at", "id")[:AWAY_BATCH]
    )
    unwilling = business_hours.opted_out({c.customer_id for c in candidates})
    return [
        conversation
        for conversation in candidates
        if conversation.customer_id not in unwilling
        and windows.service_window_open(conversation, now)
    ]


def _send_away_reply(
    conversation: Conversation, hours: BusinessHours, *, since: datetime, now: datetime
) -> int:
    with transaction.atomic():
        reply = AwayReply(conversation=conversation, closed_since=since)
        if not customers.insert_or_ignore(reply):
            return 0
        try:
            message = outbound.send_reply(
                conversation=conversation,
                kind="text",
                content={"body": hours.away_message},
                at=now,
            )
        except errors.ServiceError as refusal:
            # The period stays claimed: a refused reply is not retried into
            # a later moment of the same period.
            logger.info(
                "Away reply to conversation %s not sent: %s", conversation.pk, refusal
            )
            return 0
        business_hours.record_automatic(message, AutomaticMessage.Kind.AWAY)
        AwayReply.objects.filter(pk=reply.pk).update(message=message)
    return 1
