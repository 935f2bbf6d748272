"""Service levels and satisfaction for the reports: of the steps that were
due, how many were met, by team, by agent and by day (the conversation's
day); and the customers' ratings, by team, agent and day (the answer's)."""

from datetime import datetime

from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from ..models import SatisfactionRating, ServiceLevel
from .reports import Table

STEPS = ("first_response", "next_response", "resolution")
COLUMNS = [
    "conversations",
    "first_response_met",
    "first_response_missed",
    "first_response_attainment",
    "next_response_met",
    "next_response_missed",
    "next_response_attainment",
    "resolution_met",
    "resolution_missed",
    "resolution_attainment",
]
# (table name, title, the group's column, what to group by)
GROUPS = (
    (
        "sla_by_team",
        "Service levels by team (% met)",
        "team",
        "conversation__team__name",
    ),
    (
        "sla_by_agent",
        "Service levels by agent (% met)",
        "agent",
        "conversation__assignee__username",
    ),
    ("sla_by_day", "Service levels by day (% met)", "day", "day"),
)
# What each group's table charts: the attainment of first responses.
CHART_VALUE = "first_response_attainment"


def _percent(met: int, missed: int) -> float | None:
    total = met + missed
    return round(100 * met / total, 1) if total else None


def _rows(levels, group: str, column: str) -> list[dict]:
    rows = []
    # Counted under names of their own: the model's fields are called
    # first_response_met and resolution_met already.
    aggregated = (
        levels.values(group)
        .annotate(
            total=Count("conversation"),
            first_met=Count("conversation", filter=Q(first_response_met=True)),
            first_missed=Count("conversation", filter=Q(first_response_met=False)),
            next_met=Sum("next_responses_met"),
            next_missed=Sum("next_responses_missed"),
            resolved_met=Count("conversation", filter=Q(resolution_met=True)),
            resolved_missed=Count("conversation", filter=Q(resolution_met=False)),
        )
        .order_by(group)
    )
    for counts in aggregated:
        label = counts[group]
        row = {column: label if label is not None else "(none)"}
        row["conversations"] = counts["total"]
        for step, prefix in zip(STEPS, ("first", "next", "resolved"), strict=True):
            met, missed = counts[f"{prefix}_met"] or 0, counts[f"{prefix}_missed"] or 0
            row[f"{step}_met"] = met
            row[f"{step}_missed"] = missed
            row[f"{step}_attainment"] = _percent(met, missed)
        rows.append(row)
    return rows


def attainment(*, since: datetime, until: datetime | None = None) -> dict[str, Table]:
    """The attainment tables of conversations started in [since, until)."""
    until = until or timezone.now()
    levels = ServiceLevel.objects.filter(
        conversation__created_at__gte=since, conversation__created_at__lt=until
    ).annotate(day=TruncDate("conversation__created_at"))
    return {
        name: Table(name, title, [column, *COLUMNS], _rows(levels, group, column))
        for name, title, column, group in GROUPS
    }


CSAT_COLUMNS = ["surveys", "ratings", "average", "satisfied", "satisfied_share"]
CSAT_GROUPS = (
    ("csat_by_team", "Customer satisfaction by team", "team", "team__name"),
    ("csat_by_agent", "Customer satisfaction by agent", "agent", "agent__username"),
    ("csat_by_day", "Customer satisfaction by day", "day", "day"),
)
# What the satisfaction tables chart: the average score (1 to 5).
CSAT_CHART_VALUE = "average"


def satisfaction(*, since: datetime, until: datetime | None = None) -> dict[str, Table]:
    """Ratings of surveys sent in [since, until): how many were answered,
    the average score, and the share of 4s and 5s ("satisfied")."""
    until = until or timezone.now()
    ratings = SatisfactionRating.objects.filter(
        sent_at__gte=since, sent_at__lt=until
    ).annotate(day=TruncDate("sent_at"))
    tables = {}
    for name, title, column, group in CSAT_GROUPS:
        rows = []
        for counts in (
            ratings.values(group)
            .annotate(
                surveys=Count("id"),
                ratings=Count("id", filter=Q(score__isnull=False)),
                average=Avg("score"),
                satisfied=Count("id", filter=Q(score__gte=4)),
            )
            .order_by(group)
        ):
            label = counts.pop(group)
            average = counts["average"]
            rows.append(
                {
                    column: label if label is not None else "(none)",
                    **counts,
                    "average": round(average, 2) if average is not None else None,
                    "satisfied_share": _percent(
                        counts["satisfied"], counts["ratings"] - counts["satisfied"]
                    ),
                }
            )
        tables[name] = Table(name, title, [column, *CSAT_COLUMNS], rows)
    return tables
