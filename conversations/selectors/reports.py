"""The supervisors' reports: every figure aggregated by the database.

Each table is one grouped query (percentiles included: PERCENTILE_CONT on
PostgreSQL, the same aggregate registered on SQLite connections), so a page
costs a fixed number of queries however many rows the tables hold. Times are
seconds; money is summed per currency, never mixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    Exists,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    Sum,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import ExtractHour, TruncDate
from django.utils import timezone

from ..models import Conversation, Message, MessageCharge

PERCENTILE_FUNCTION = "HELPDESK_PERCENTILE"


class Seconds(Func):
    """Seconds from the second expression to the first (end - start)."""

    output_field = FloatField()
    arity = 2

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler,
            connection,
            template="EXTRACT(EPOCH FROM (%(expressions)s))::float",
            arg_joiner=" - ",
            **extra,
        )


class Percentile(Aggregate):
    """The continuous percentile of an expression (like PERCENTILE_CONT)."""

    name = "Percentile"
    output_field = FloatField()
    allow_distinct = False

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        self.fraction = float(fraction)
        super().__init__(expression, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        clone = self.copy()
        clone.template = (
            f"PERCENTILE_CONT({self.fraction!r}) WITHIN GROUP "
            "(ORDER BY %(expressions)s)"
        )
        return super(Percentile, clone).as_sql(compiler, connection, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        clone = self.copy()
        clone.template = f"{PERCENTILE_FUNCTION}(%(expressions)s, {self.fraction!r})"
        return super(Percentile, clone).as_sql(compiler, connection, **extra)


class _SqlitePercentile:
    """PERCENTILE_CONT for SQLite: collects values, interpolates at finalize."""

    def __init__(self):
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value, fraction):
        if value is not None:
            self.values.append(float(value))
            self.fraction = float(fraction)

    def finalize(self):
        if not self.values:
            return None
        return percentile(self.values, self.fraction)


def percentile(values: list[float], fraction: float) -> float:
    """PERCENTILE_CONT of a list (linear interpolation between ranks)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _prepare_connection() -> None:
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        connection.connection.create_aggregate(
            PERCENTILE_FUNCTION, 2, _SqlitePercentile
        )


@dataclass
class Table:
    """One report table: its name (also the CSV's), columns and rows."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)

    def as_lists(self) -> list[list]:
        return [[row.get(column) for column in self.columns] for row in self.rows]


def _timings(queryset, group: str | None) -> list[dict]:
    wait = Seconds(F("first_response_at"), F("created_at"))
    resolve = Seconds(F("resolved_at"), F("created_at"))
    annotations = {
        "conversations": Count("id"),
        "resolved": Count("id", filter=Q(resolved_at__isnull=False)),
        "first_response_p50": Percentile(
            wait, 0.5, filter=Q(first_response_at__isnull=False)
        ),
        "first_response_p90": Percentile(
            wait, 0.9, filter=Q(first_response_at__isnull=False)
        ),
        "resolution_p50": Percentile(resolve, 0.5, filter=Q(resolved_at__isnull=False)),
        "resolution_p90": Percentile(resolve, 0.9, filter=Q(resolved_at__isnull=False)),
    }
    if group is None:
        row = queryset.aggregate(**annotations)
        return [{"group": "all", **row}] if row["conversations"] else []
    return list(
        queryset.values(group)
        .annotate(**annotations)
        .order_by(group)
        .values(group, *annotations)
    )


TIMING_COLUMNS = [
    "conversations",
    "resolved",
    "first_response_p50",
    "first_response_p90",
    "resolution_p50",
    "resolution_p90",
]


def _money(queryset, group: str, label: str) -> Table:
    rows = list(
        queryset.values(group, "currency")
        .annotate(messages=Count("id"), cost=Sum("price"))
        .order_by(group, "currency")
    )
    for row in rows:
        row[label] = row.pop(group)
    return Table(
        f"cost_by_{label}",
        f"Cost by {label}",
        [label, "currency", "messages", "cost"],
        rows,
    )


def build(*, since: datetime, until: datetime | None = None) -> dict[str, Table]:
    """Every report table for conversations and messages from `since`."""
    _prepare_connection()
    until = until or timezone.now()
    messages = Message.objects.filter(timestamp__gte=since, timestamp__lt=until)
    conversations = Conversation.objects.filter(
        created_at__gte=since, created_at__lt=until
    )
    charges = MessageCharge.objects.filter(
        billable=True, billed_at__gte=since, billed_at__lt=until
    )
    tables = [
        *_volume(messages),
        *_response_times(conversations),
        _template_funnel(messages),
        *_costs(charges),
        _ads(conversations, charges),
    ]
    return {table.name: table for table in tables}


def _volume(messages) -> list[Table]:
    inbound = messages.filter(direction=Message.Direction.INBOUND)
    by_hour = Table(
        "volume_by_hour",
        "Customer messages by hour of day",
        ["hour", "messages"],
        list(
            inbound.annotate(hour=ExtractHour("timestamp"))
            .values("hour")
            .annotate(messages=Count("id"))
            .order_by("hour")
        ),
    )
    by_day = Table(
        "volume_by_day",
        "Messages by day",
        ["day", "inbound", "outbound"],
        list(
            messages.annotate(day=TruncDate("timestamp"))
            .values("day")
            .annotate(
                inbound=Count("id", filter=Q(direction="inbound")),
                outbound=Count("id", filter=Q(direction="outbound")),
            )
            .order_by("day")
        ),
    )
    return [by_hour, by_day]


def _response_times(conversations) -> list[Table]:
    overall = Table(
        "response_times",
        "First response and resolution (seconds)",
        ["group", *TIMING_COLUMNS],
        _timings(conversations, None),
    )
    by_agent = _timings(conversations, "assignee__username")
    for row in by_agent:
        row["agent"] = row.pop("assignee__username") or "(unassigned)"
    by_team = _timings(conversations, "team__name")
    for row in by_team:
        row["team"] = row.pop("team__name") or "(no team)"
    return [
        overall,
        Table(
            "response_times_by_agent", "By agent", ["agent", *TIMING_COLUMNS], by_agent
        ),
        Table("response_times_by_team", "By team", ["team", *TIMING_COLUMNS], by_team),
    ]


def _template_funnel(messages) -> Table:
    # Replied: the customer wrote after the template was queued. Our own
    # clock on both rows (Meta's timestamps have whole seconds only).
    replies = Message.objects.filter(
        conversation=OuterRef("conversation"),
        direction=Message.Direction.INBOUND,
        created_at__gt=OuterRef("created_at"),
    )
    funnel = list(
        messages.filter(direction=Message.Direction.OUTBOUND, type="template")
        .values("template__name")
        .annotate(
            queued=Count("id"),
            sent=Count("id", filter=Q(sent_at__isnull=False)),
            delivered=Count("id", filter=Q(delivered_at__isnull=False)),
            read=Count("id", filter=Q(read_at__isnull=False)),
            replied=Count("id", filter=Q(Exists(replies))),
            failed=Count("id", filter=Q(status=Message.Status.FAILED)),
        )
        .order_by("template__name")
    )
    for row in funnel:
        row["template"] = row.pop("template__name") or "(deleted template)"
    return Table(
        "template_funnel",
        "Template funnel",
        ["template", "queued", "sent", "delivered", "read", "replied", "failed"],
        funnel,
    )


def _costs(charges) -> list[Table]:
    by_day = _money(
        charges.annotate(billed_day=TruncDate("billed_at")), "billed_day", "day"
    )
    by_number = _money(charges, "conversation__number__name", "number")
    by_team = _money(charges, "conversation__team__name", "team")
    by_template = _money(charges, "message__template__name", "template")
    by_ad = _money(charges, "conversation__referral_source_id", "ad")
    # Conversations that did not start from an ad have no source id.
    by_ad.rows = [row for row in by_ad.rows if row["ad"]]
    return [by_day, by_number, by_team, by_template, by_ad]


def _ads(conversations, charges) -> Table:
    """Per ad: conversations, first response, resolved, free-window replies, billed."""
    ads = conversations.exclude(referral_source_id="")
    wait = Seconds(F("first_response_at"), F("created_at"))
    rows = {
        row["referral_source_id"]: row
        for row in ads.annotate(headline=KeyTextTransform("headline", "referral"))
        .values("referral_source_id")
        .annotate(
            started=Count("id"),
            resolved=Count("id", filter=Q(resolved_at__isnull=False)),
            first_response_p50=Percentile(
                wait, 0.5, filter=Q(first_response_at__isnull=False)
            ),
        )
        .values("referral_source_id", "started", "resolved", "first_response_p50")
    }
    headlines = dict(
        ads.annotate(headline=KeyTextTransform("headline", "referral"))
        .values_list("referral_source_id", "headline")
        .order_by("referral_source_id", "-id")
        .distinct()
    )
    free_replies = dict(
        Message.objects.filter(
            conversation__in=ads,
            direction=Message.Direction.OUTBOUND,
            conversation__free_entry_point_expires_at__isnull=False,
            timestamp__lt=F("conversation__free_entry_point_expires_at"),
        )
        .values("conversation__referral_source_id")
        .annotate(count=Count("id"))
        .values_list("conversation__referral_source_id", "count")
    )
    billed = {
        source: (count, cost)
        for source, count, cost in charges.filter(conversation__in=ads)
        .values("conversation__referral_source_id")
        .annotate(count=Count("id"), cost=Sum("price"))
        .values_list("conversation__referral_source_id", "count", "cost")
    }
    result = []
    for source_id, row in sorted(rows.items()):
        count, cost = billed.get(source_id, (0, None))
        result.append(
            {
                "ad": source_id,
                "headline": headlines.get(source_id) or "",
                "conversations": row["started"],
                "first_response_p50": row["first_response_p50"],
                "resolved": row["resolved"],
                "replies_in_free_window": free_replies.get(source_id, 0),
                "messages_billed": count,
                "cost": cost,
            }
        )
    return Table(
        "ads",
        "Click-to-WhatsApp ads",
        [
            "ad",
            "headline",
            "conversations",
            "first_response_p50",
            "resolved",
            "replies_in_free_window",
            "messages_billed",
            "cost",
        ],
        result,
    )


def bars(rows: list[dict], label: str, value: str, *, width=640, height=160) -> dict:
    """Geometry of an SVG bar chart for a small aggregated table."""
    values = [float(row.get(value) or 0) for row in rows]
    top = max(values, default=0) or 1
    count = max(len(rows), 1)
    step = width / count
    return {
        "width": width,
        "height": height,
        "bars": [
            {
                "x": round(index * step + 1, 1),
                "width": round(max(step - 2, 1), 1),
                "height": round(height * v / top, 1),
                "y": round(height - height * v / top, 1),
                "label": str(row.get(label)),
                "value": row.get(value),
            }
            for index, (row, v) in enumerate(zip(rows, values, strict=True))
        ],
    }


def default_since(days: int) -> datetime:
    return timezone.now() - timedelta(days=days)
