"""Service levels and satisfaction for the reports: of the steps that were
due, how many were met, by team, by agent and by day (the conversation's
day); and the customers' ratings, by team, agent and day (the survey's).

Scoped like every other report (reports.Scope): only the conversations of
the numbers the viewer may see, days in the viewer's time zone. Each table
is one grouped query.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Avg, Count, F, Q, Sum
from django.db.models.functions import TruncDate

from ..models import SatisfactionRating, ServiceLevel
from .reports import Column, Scope, Table

STEPS = (
    ("first_response", "first", "First response"),
    ("next_response", "next", "Next responses"),
    ("resolution", "resolved", "Resolution"),
)
SLA_TABLE_NAMES = ("sla_by_team", "sla_by_agent", "sla_by_day")
CSAT_TABLE_NAMES = ("csat_by_team", "csat_by_agent", "csat_by_day")
TABLE_NAMES = SLA_TABLE_NAMES + CSAT_TABLE_NAMES

# The group columns: (label column, the ORM path of a ServiceLevel's, of a
# SatisfactionRating's).
GROUPS = {
    "team": (Column("team", "Team", "text"), "conversation__team__name", "team__name"),
    "agent": (Column("agent", "Agent", "text"), "agent_name", "agent_name"),
    "day": (Column("day", "Day", "date"), "day", "day"),
}
NONE_LABELS = {"team": "(no team)", "agent": "(unassigned)"}

SLA_COLUMNS = [
    Column("conversations", "Conversations"),
    *(
        column
        for key, _, label in STEPS
        for column in (
            Column(f"{key}_met", f"{label}, met"),
            Column(f"{key}_missed", f"{label}, missed"),
            Column(f"{key}_attainment", f"{label}, % met", "percent"),
        )
    ),
]
CSAT_COLUMNS = [
    Column("surveys", "Surveys sent"),
    Column("ratings", "Ratings"),
    Column("average", "Average score (1–5)", "score"),
    Column("satisfied", "Satisfied (4 or 5)"),
    Column("satisfied_share", "Satisfied, % of ratings", "percent"),
]


def percent(met: int, missed: int) -> float | None:
    total = met + missed
    return round(100 * met / total, 1) if total else None


def build(
    user, *, since: datetime, until: datetime, only: str | None = None
) -> dict[str, Table]:
    """The service-level and satisfaction tables (or the one named `only`)
    of what `user` may see between since and until."""
    scope = Scope.of(user, since=since, until=until)
    tables = {}
    if only is None or only in SLA_TABLE_NAMES:
        tables.update(attainment(scope))
    if only is None or only in CSAT_TABLE_NAMES:
        tables.update(satisfaction(scope))
    return tables if only is None else {only: tables[only]}


def _label(row: dict, group: str, path: str):
    """A row's group label: an agent's display name, else username."""
    label = row.pop(path)
    if group == "agent":
        label = label or row.pop("agent_username")
    return label if label not in (None, "") else NONE_LABELS.get(group)


def attainment(scope: Scope) -> dict[str, Table]:
    """Of conversations started in the scope's period: met and missed steps
    per team, agent and day, and the share met."""
    levels = ServiceLevel.objects.filter(
        conversation__created_at__gte=scope.since,
        conversation__created_at__lt=scope.until,
    ).annotate(
        day=TruncDate("conversation__created_at", tzinfo=scope.zone),
        agent_name=F("conversation__assignee__display_name"),
        agent_username=F("conversation__assignee__username"),
    )
    if scope.numbers is not None:
        levels = levels.filter(conversation__number__in=scope.numbers)
    # Counted under names of their own: the model's fields are called
    # first_response_met and resolution_met already.
    counts = {
        "total": Count("conversation"),
        "first_met": Count("conversation", filter=Q(first_response_met=True)),
        "first_missed": Count("conversation", filter=Q(first_response_met=False)),
        "next_met": Sum("next_responses_met"),
        "next_missed": Sum("next_responses_missed"),
        "resolved_met": Count("conversation", filter=Q(resolution_met=True)),
        "resolved_missed": Count("conversation", filter=Q(resolution_met=False)),
    }
    return _tables(
        levels,
        counts,
        path_index=1,
        name="sla",
        title="Service levels",
        columns=SLA_COLUMNS,
        entry=_attainment_entry,
    )


def _attainment_entry(row: dict) -> dict:
    entry = {"conversations": row["total"]}
    for key, prefix, _ in STEPS:
        met = row[f"{prefix}_met"] or 0
        missed = row[f"{prefix}_missed"] or 0
        entry.update(
            {
                f"{key}_met": met,
                f"{key}_missed": missed,
                f"{key}_attainment": percent(met, missed),
            }
        )
    return entry


def satisfaction(scope: Scope) -> dict[str, Table]:
    """Surveys sent in the scope's period: how many were answered, the
    average score, and the share of 4s and 5s ("satisfied")."""
    ratings = SatisfactionRating.objects.filter(
        sent_at__gte=scope.since, sent_at__lt=scope.until
    ).annotate(
        day=TruncDate("sent_at", tzinfo=scope.zone),
        agent_name=F("agent__display_name"),
        agent_username=F("agent__username"),
    )
    if scope.numbers is not None:
        ratings = ratings.filter(conversation__number__in=scope.numbers)
    counts = {
        "surveys": Count("id"),
        "ratings": Count("id", filter=Q(score__isnull=False)),
        "average": Avg("score"),
        "satisfied": Count("id", filter=Q(score__gte=4)),
    }
    return _tables(
        ratings,
        counts,
        path_index=2,
        name="csat",
        title="Customer satisfaction",
        columns=CSAT_COLUMNS,
        entry=_satisfaction_entry,
    )


def _satisfaction_entry(row: dict) -> dict:
    average = row["average"]
    return {
        "surveys": row["surveys"],
        "ratings": row["ratings"],
        "average": round(average, 2) if average is not None else None,
        "satisfied": row["satisfied"],
        "satisfied_share": percent(row["satisfied"], row["ratings"] - row["satisfied"]),
    }


def _tables(
    queryset, counts: dict, *, path_index: int, name: str, title: str, columns, entry
) -> dict[str, Table]:
    """One table per group (team, agent, day): the queryset's counts in each
    group's rows, each row labelled, then made by entry(row)."""
    tables = {}
    for group in ("team", "agent", "day"):
        column, path = GROUPS[group][0], GROUPS[group][path_index]
        fields = [path, "agent_username"] if group == "agent" else [path]
        rows = [
            # The label first: it takes its fields out of the row.
            {group: _label(row, group, path), **entry(row)}
            for row in queryset.values(*fields).annotate(**counts).order_by(*fields)
        ]
        table = f"{name}_by_{group}"
        tables[table] = Table(table, f"{title} by {group}", [column, *columns], rows)
    return tables
