"""Customer satisfaction: a 1-to-5 WhatsApp list after a resolution, and the
customer's answer and comment.

The survey goes out when a conversation of a team whose survey is on is
resolved, only inside the customer service window, never to a customer who
opted out, and at most once per conversation per SURVEY_INTERVAL (a
conversation resolved again after the customer rated it is not asked
again). It is an interactive list (Meta: up to 10 rows, titles up to 24
characters) sent as an automatic message.

The answer is the list row the customer picks, quoting the survey message:
it is stored on the rating, and a rating that reopened the resolved
conversation leaves it resolved (inbound undoes the reopening: a rating is
no new request). A text the customer writes
within COMMENT_MINUTES of rating, while the conversation was resolved, is
kept as the rating's comment; the conversation then stays open, since it
may be a new request for the agents.
"""

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from .. import realtime
from ..models import (
    AutomaticMessage,
    Conversation,
    Message,
    SatisfactionRating,
    SatisfactionSurvey,
)
from ..rules import windows
from ..whatsapp import payloads
from . import business_hours, errors, outbound

logger = logging.getLogger(__name__)

SURVEY_INTERVAL = timedelta(hours=24)
COMMENT_MINUTES = 30
# The list's rows, best first (ids are what the answer carries back).
SCORES = {
    5: "5 – Excellent",
    4: "4 – Good",
    3: "3 – Okay",
    2: "2 – Poor",
    1: "1 – Very poor",
}
ROW_PREFIX = "csat-"


def survey_rows() -> list[tuple[str, str]]:
    return [(f"{ROW_PREFIX}{score}", title) for score, title in SCORES.items()]


def request_satisfaction(
    *, conversation: Conversation, now: datetime | None = None
) -> SatisfactionRating | None:
    """Send the team's survey for a conversation just resolved, when the
    rules allow; return its rating row (unanswered) or None."""
    now = now or timezone.now()
    survey = SatisfactionSurvey.objects.filter(
        team_id=conversation.team_id, enabled=True
    ).first()
    if survey is None or not windows.service_window_open(conversation, now):
        return None
    if business_hours.opted_out([conversation.customer_id]):
        return None
    if SatisfactionRating.objects.filter(
        conversation=conversation, sent_at__gt=now - SURVEY_INTERVAL
    ).exists():
        return None
    content = payloads.interactive_list(
        body=survey.question, button=survey.button, rows=survey_rows()
    )
    try:
        message = outbound.send_reply(
            conversation=conversation, kind="interactive", content=content, at=now
        )
    except errors.ServiceError as refusal:
        logger.info("Survey for conversation %s not sent: %s", conversation.pk, refusal)
        return None
    business_hours.record_automatic(message, AutomaticMessage.Kind.CSAT)
    return SatisfactionRating.objects.create(
        conversation=conversation,
        message=message,
        agent_id=conversation.assignee_id,
        team_id=conversation.team_id,
    )


def may_be_answer(message: payloads.InboundMessage) -> bool:
    """Whether a customer's message may answer a survey, judged from the
    message alone (no read): a pick of reply buttons or a list whose id is
    one of the survey's rows. Only such a message needs the one-by-one
    path's undo of a reopening (inbound.takes_in_bulk)."""
    choice = payloads.interactive_choice(message.payload)
    return choice is not None and choice[0].startswith(ROW_PREFIX)


def answer_received(
    *, conversation: Conversation, message: Message, reopened: bool
) -> bool:
    """A customer's message arrived: record a survey answer or comment.
    Return whether the message was a rating (no new request: the caller
    keeps a conversation it reopened resolved).

    Cheap for every other message: nothing is read unless the message is an
    interactive reply or reopened a resolved conversation.
    """
    if message.type == "interactive":
        return _record_score(conversation, message)
    if reopened and message.type == "text":
        _record_comment(conversation, message)
    return False


def _record_score(conversation: Conversation, message: Message) -> bool:
    choice = payloads.interactive_choice(message.payload)
    if choice is None or not choice[0].startswith(ROW_PREFIX):
        return False
    score = choice[0].removeprefix(ROW_PREFIX)
    if score not in {str(value) for value in SCORES}:
        return False
    rating = SatisfactionRating.objects.filter(
        conversation=conversation, message__wamid=message.context_wamid
    ).first()
    if rating is None:
        return False
    rating.score = int(score)
    rating.answered_at = message.timestamp
    rating.save(update_fields=["score", "answered_at"])
    realtime.publish(
        realtime.CONVERSATION_UPDATED,
        conversation=conversation,
        data={"change": "satisfaction", "score": rating.score},
    )
    survey = SatisfactionSurvey.objects.filter(team_id=rating.team_id).first()
    if survey is not None and survey.thanks:
        try:
            outbound.send_reply(
                conversation=conversation, kind="text", content={"body": survey.thanks}
            )
        except errors.ServiceError as refusal:
            logger.info("Survey thanks not sent: %s", refusal)
    return True


def _record_comment(conversation: Conversation, message: Message) -> None:
    since = message.timestamp - timedelta(minutes=COMMENT_MINUTES)
    rating = (
        SatisfactionRating.objects.filter(
            conversation=conversation,
            answered_at__gte=since,
            answered_at__lte=message.timestamp,
            comment="",
        )
        .order_by("-answered_at")
        .first()
    )
    if rating is None:
        return
    rating.comment = message.text[:4096]
    rating.commented_at = message.timestamp
    rating.save(update_fields=["comment", "commented_at"])
    realtime.publish(
        realtime.CONVERSATION_UPDATED,
        conversation=conversation,
        data={"change": "satisfaction", "comment": True},
    )


def configure_satisfaction_survey(
    *, team, enabled: bool, question: str, button: str, thanks: str
) -> SatisfactionSurvey:
    """Turn a team's survey on or off and set its wording (Meta's limits:
    a list body, a button label of up to 20 characters)."""
    if not question.strip() or len(question) > 1024:
        raise errors.WorkspaceError(
            "invalid_survey", "The question needs 1 to 1024 characters."
        )
    if not button.strip() or len(button) > 20:
        raise errors.WorkspaceError(
            "invalid_survey", "The button label needs 1 to 20 characters."
        )
    if len(thanks) > 1024:
        raise errors.WorkspaceError(
            "invalid_survey", "The thanks message has at most 1024 characters."
        )
    survey, _ = SatisfactionSurvey.objects.update_or_create(
        team=team,
        defaults={
            "enabled": enabled,
            "question": question,
            "button": button,
            "thanks": thanks,
        },
    )
    return survey
