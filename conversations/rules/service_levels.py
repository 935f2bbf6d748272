"""Service levels: when each promised step is due, whether it was met, and
the window-aware escalation. Pure: the caller gathers the facts.

Due times count open hours of the conversation's business hours when the
policy says so (a schedule is given), else around the clock. A conversation
is escalated when a step is still owed and the customer service window
closes before that step is due: after the window only a paid template can
reach the customer, so the window is the real deadline.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from . import business_hours


@dataclass(frozen=True)
class Targets:
    first_response_minutes: int | None = None
    next_response_minutes: int | None = None
    resolution_minutes: int | None = None


@dataclass(frozen=True)
class Facts:
    started_at: datetime
    first_response_at: datetime | None
    # The customer's oldest message not yet answered after the first
    # response (the next response's clock), or None.
    awaiting_since: datetime | None
    resolved_at: datetime | None
    window_closes_at: datetime | None


@dataclass(frozen=True)
class Standing:
    first_response_due_at: datetime | None
    first_response_met: bool | None
    next_response_due_at: datetime | None
    resolution_due_at: datetime | None
    resolution_met: bool | None
    due_at: datetime | None
    escalated: bool

    # The window's close when it comes before a reply that is owed.
    window_closes_at_if_escalated: datetime | None = None

    @property
    def attention_at(self) -> datetime | None:
        """The real deadline: the earliest of what is owed and, when
        escalated, the window's close."""
        moments = [m for m in (self.due_at, self.window_closes_at_if_escalated) if m]
        return min(moments) if moments else None


def due(
    start: datetime, minutes: int | None, schedule: business_hours.Schedule | None
) -> datetime | None:
    """`minutes` after `start`, in open hours when a schedule is given."""
    if minutes is None:
        return None
    if schedule is None:
        return start + timedelta(minutes=minutes)
    return business_hours.add_open_seconds(schedule, start, minutes * 60)


def _met(done: datetime | None, due_at: datetime | None) -> bool | None:
    if done is None or due_at is None:
        return None
    return done <= due_at


def standing(
    targets: Targets,
    facts: Facts,
    *,
    now: datetime,
    schedule: business_hours.Schedule | None = None,
) -> Standing:
    first_due = due(facts.started_at, targets.first_response_minutes, schedule)
    resolution_due = due(facts.started_at, targets.resolution_minutes, schedule)
    next_due = None
    if facts.first_response_at is not None and facts.awaiting_since is not None:
        next_due = due(facts.awaiting_since, targets.next_response_minutes, schedule)
    pending = []
    if facts.resolved_at is None:
        if facts.first_response_at is None and first_due is not None:
            pending.append(first_due)
        if next_due is not None:
            pending.append(next_due)
        if resolution_due is not None:
            pending.append(resolution_due)
    due_at = min(pending) if pending else None
    # Only a reply is stopped by the window; a step owed by a reply (first
    # or next response) escalates.
    reply_due = [
        moment
        for moment in (
            first_due if facts.first_response_at is None else None,
            next_due,
        )
        if moment is not None and facts.resolved_at is None
    ]
    closes = facts.window_closes_at
    escalated = bool(reply_due and closes is not None and now < closes < min(reply_due))
    return Standing(
        first_response_due_at=first_due,
        first_response_met=_met(facts.first_response_at, first_due),
        next_response_due_at=next_due if facts.resolved_at is None else None,
        resolution_due_at=resolution_due,
        resolution_met=_met(facts.resolved_at, resolution_due),
        due_at=due_at,
        escalated=escalated,
        window_closes_at_if_escalated=closes if escalated else None,
    )
