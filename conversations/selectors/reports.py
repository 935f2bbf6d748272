"""The supervisors' reports: every figure aggregated by the database.

Each table is one grouped query (percentiles included: PERCENTILE_CONT on
PostgreSQL, the same aggregate registered on SQLite connections), so a page
costs a fixed number of queries however many rows the tables hold. Times are
seconds; money is summed per currency, never mixed. Every figure counts only
the conversations of the numbers the viewer may see (their teams'), and days
and hours are the viewer's own (their time zone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

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

from ..models import (
    Conversation,
    Message,
    MessageCharge,
    WhatsAppNumber,
    sees_every_number,
)

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


@dataclass(frozen=True)
class Column:
    """A column of a report: its CSV name, its heading, and what it holds
    (text, count, duration in seconds, money, date, hour or currency)."""

    key: str
    label: str
    kind: str = "count"

    @property
    def csv_name(self) -> str:
        return f"{self.key}_seconds" if self.kind == "duration" else self.key


@dataclass
class Table:
    """One report table: its name (also the CSV's), columns and rows."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict] = field(default_factory=list)

    def as_lists(self) -> list[list]:
        """The rows as CSV cells: seconds to a tenth, days as ISO dates."""
        return [
            [_csv_value(row.get(column.key), column.kind) for column in self.columns]
            for row in self.rows
        ]

    def cells(self) -> list[list[tuple]]:
        """The rows as (value, kind) pairs, for the page to format."""
        return [
            [(row.get(column.key), column.kind) for column in self.columns]
            for row in self.rows
        ]


def _csv_value(value, kind: str):
    if value is None:
        return None
    if kind == "duration":
        return round(float(value), 1)
    if kind == "date":
        return value.isoformat()
    return value


@dataclass(frozen=True)
class Scope:
    """What a report counts: the viewer's numbers, in a period of their zone."""

    since: datetime
    until: datetime
    zone: tzinfo
    numbers: object = None  # a subquery of number ids; None: every number

    @classmethod
    def of(cls, user, *, since: datetime, until: datetime) -> Scope:
        numbers = None
        if not sees_every_number(user):
            numbers = WhatsAppNumber.objects.visible_to(user).values("pk")
        return cls(since=since, until=until, zone=user.zone, numbers=numbers)

    def conversations(self):
        """Every conversation the viewer may see, whatever its age."""
        if self.numbers is None:
            return Conversation.objects.all()
        return Conversation.objects.filter(number__in=self.numbers)

    def messages(self):
        messages = Message.objects.filter(
            timestamp__gte=self.since, timestamp__lt=self.until
        )
        if self.numbers is None:
            return messages
        return messages.filter(conversation__number__in=self.numbers)

    def charges(self):
        charges = MessageCharge.objects.filter(
            billable=True, billed_at__gte=self.since, billed_at__lt=self.until
        )
        if self.numbers is None:
            return charges
        return charges.filter(conversation__number__in=self.numbers)


TABLE_NAMES = (
    "volume_by_hour",
    "volume_by_day",
    "response_times",
    "response_times_by_agent",
    "response_times_by_team",
    "template_funnel",
    "cost_by_day",
    "cost_by_number",
    "cost_by_team",
    "cost_by_template",
    "cost_by_ad",
    "ads",
)


def build(
    user, *, since: datetime, until: datetime, only: str | None = None
) -> dict[str, Table]:
    """Every report table (or the one named `only`, and the few built by the
    same queries) for what `user` may see between since and until."""
    _prepare_connection()
    scope = Scope.of(user, since=since, until=until)
    messages = scope.messages()
    conversations = scope.conversations().filter(
        created_at__gte=since, created_at__lt=until
    )
    charges = scope.charges()
    builders = (
        (TABLE_NAMES[:2], lambda: _volume(messages, scope)),
        (TABLE_NAMES[2:5], lambda: _response_times(conversations)),
        (TABLE_NAMES[5:6], lambda: [_template_funnel(messages)]),
        (TABLE_NAMES[6:11], lambda: _costs(charges, scope)),
        (TABLE_NAMES[11:], lambda: [_ads(conversations, charges)]),
    )
    tables = [
        table
        for names, make in builders
        if only is None or only in names
        for table in make()
    ]
    return {table.name: table for table in tables}


@dataclass
class Headline:
    """The figures a supervisor reads first."""

    open: int
    unassigned: int
    waiting: Conversation | None  # the open conversation waiting longest
    conversations: int
    resolved: int
    first_response_p50: float | None
    resolution_p50: float | None
    cost: list[dict]  # [{"currency", "total", "messages"}], priced charges
    unpriced: int  # billed messages the rate card has no price for

    def waiting_seconds(self, now: datetime) -> float | None:
        if self.waiting is None:
            return None
        return max((now - self.waiting.last_inbound_at).total_seconds(), 0)


def headline(user, tables: dict[str, Table]) -> Headline:
    """Open and unassigned now, who waits longest, and the period's medians
    and cost (read from the tables already built: two queries more)."""
    now = timezone.now()
    conversations = Scope.of(user, since=now, until=now).conversations()
    unresolved = conversations.exclude(status=Conversation.Status.RESOLVED)
    counts = unresolved.aggregate(
        open=Count("id"), unassigned=Count("id", filter=Q(assignee__isnull=True))
    )
    waiting = (
        conversations.filter(
            status=Conversation.Status.OPEN,
            last_message__direction=Message.Direction.INBOUND,
            last_inbound_at__isnull=False,
        )
        .select_related("customer")
        .order_by("last_inbound_at", "id")
        .first()
    )
    overall = (tables["response_times"].rows or [{}])[0]
    cost: dict[str, dict] = {}
    unpriced = 0
    for row in tables["cost_by_day"].rows:
        if row["cost"] is None:
            unpriced += row["messages"]
            continue
        entry = cost.setdefault(
            row["currency"],
            {"currency": row["currency"], "total": 0, "messages": 0},
        )
        entry["total"] += row["cost"]
        entry["messages"] += row["messages"]
    return Headline(
        open=counts["open"],
        unassigned=counts["unassigned"],
        waiting=waiting,
        conversations=overall.get("conversations", 0),
        resolved=overall.get("resolved", 0),
        first_response_p50=overall.get("first_response_p50"),
        resolution_p50=overall.get("resolution_p50"),
        cost=sorted(cost.values(), key=lambda entry: entry["currency"]),
        unpriced=unpriced,
    )


def earlier(user, *, since: datetime, until: datetime) -> dict:
    """The period of the same length just before: its conversations, medians
    and cost per currency, for the headline to compare with (two queries)."""
    _prepare_connection()
    scope = Scope.of(user, since=since - (until - since), until=since)
    started = scope.conversations().filter(
        created_at__gte=scope.since, created_at__lt=scope.until
    )
    timings = (_timings(started) or [{"conversations": 0}])[0]
    cost = (
        scope.charges()
        .exclude(price=None)
        .values("currency")
        .annotate(total=Sum("price"))
        .order_by("currency")
    )
    return {
        "conversations": timings["conversations"],
        "first_response_p50": timings.get("first_response_p50"),
        "resolution_p50": timings.get("resolution_p50"),
        "cost": {row["currency"]: row["total"] for row in cost},
    }


def _timings(queryset, *group: str) -> list[dict]:
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
    if not group:
        row = queryset.aggregate(**annotations)
        return [{"group": "all", **row}] if row["conversations"] else []
    return list(
        queryset.values(*group)
        .annotate(**annotations)
        .order_by(*group)
        .values(*group, *annotations)
    )


TIMING_COLUMNS = [
    Column("conversations", "Conversations"),
    Column("resolved", "Resolved"),
    Column("first_response_p50", "First response, median", "duration"),
    Column("first_response_p90", "First response, 90th percentile", "duration"),
    Column("resolution_p50", "Resolution, median", "duration"),
    Column("resolution_p90", "Resolution, 90th percentile", "duration"),
]


def _money(queryset, group: str, label: Column) -> Table:
    rows = list(
        queryset.values(group, "currency")
        .annotate(messages=Count("id"), cost=Sum("price"))
        .order_by(group, "currency")
    )
    for row in rows:
        row[label.key] = row.pop(group)
    return Table(
        f"cost_by_{label.key}",
        f"Cost by {label.label.lower()}",
        [
            label,
            Column("currency", "Currency", "currency"),
            Column("messages", "Billed messages"),
            Column("cost", "Cost", "money"),
        ],
        rows,
    )


def _volume(messages, scope: Scope) -> list[Table]:
    inbound = messages.filter(direction=Message.Direction.INBOUND)
    hours = {
        row["hour"]: row["messages"]
        for row in inbound.annotate(hour=ExtractHour("timestamp", tzinfo=scope.zone))
        .values("hour")
        .annotate(messages=Count("id"))
        .order_by("hour")
    }
    by_hour = Table(
        "volume_by_hour",
        "Customer messages by hour of day",
        [Column("hour", "Hour", "hour"), Column("messages", "Customer messages")],
        [{"hour": hour, "messages": hours.get(hour, 0)} for hour in range(24)]
        if hours
        else [],
    )
    days = {
        row["day"]: row
        for row in messages.annotate(day=TruncDate("timestamp", tzinfo=scope.zone))
        .values("day")
        .annotate(
            inbound=Count("id", filter=Q(direction="inbound")),
            outbound=Count("id", filter=Q(direction="outbound")),
        )
        .order_by("day")
    }
    by_day = Table(
        "volume_by_day",
        "Messages by day",
        [
            Column("day", "Day", "date"),
            Column("inbound", "From customers"),
            Column("outbound", "To customers"),
        ],
        [
            days.get(day, {"day": day, "inbound": 0, "outbound": 0})
            for day in _days_of(scope)
        ]
        if days
        else [],
    )
    return [by_hour, by_day]


def _days_of(scope: Scope) -> list:
    """Every day of the period in the viewer's zone."""
    first = timezone.localtime(scope.since, scope.zone).date()
    last = timezone.localtime(scope.until, scope.zone).date()
    if timezone.localtime(scope.until, scope.zone).time() == datetime.min.time():
        last = last.fromordinal(last.toordinal() - 1)
    return [
        first.fromordinal(ordinal)
        for ordinal in range(first.toordinal(), last.toordinal() + 1)
    ]


def _response_times(conversations) -> list[Table]:
    overall = Table(
        "response_times",
        "First response and resolution",
        [Column("group", "Group", "text"), *TIMING_COLUMNS],
        _timings(conversations),
    )
    by_agent = _timings(conversations, "assignee__username", "assignee__display_name")
    for row in by_agent:
        username = row.pop("assignee__username")
        row["agent"] = row.pop("assignee__display_name") or username or "(unassigned)"
    by_team = _timings(conversations, "team__name")
    for row in by_team:
        row["team"] = row.pop("team__name") or "(no team)"
    return [
        overall,
        Table(
            "response_times_by_agent",
            "Response times by agent",
            [Column("agent", "Agent", "text"), *TIMING_COLUMNS],
            by_agent,
        ),
        Table(
            "response_times_by_team",
            "Response times by team",
            [Column("team", "Team", "text"), *TIMING_COLUMNS],
            by_team,
        ),
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
        [
            Column("template", "Template", "text"),
            Column("queued", "Queued"),
            Column("sent", "Sent"),
            Column("delivered", "Delivered"),
            Column("read", "Read"),
            Column("replied", "Replied"),
            Column("failed", "Failed"),
        ],
        funnel,
    )


def _costs(charges, scope: Scope) -> list[Table]:
    by_day = _money(
        charges.annotate(billed_day=TruncDate("billed_at", tzinfo=scope.zone)),
        "billed_day",
        Column("day", "Day", "date"),
    )
    by_number = _money(
        charges, "conversation__number__name", Column("number", "Number", "text")
    )
    by_team = _money(
        charges, "conversation__team__name", Column("team", "Team", "text")
    )
    for row in by_team.rows:
        row["team"] = row["team"] or "(no team)"
    by_template = _money(
        charges, "message__template__name", Column("template", "Template", "text")
    )
    by_ad = _money(
        charges, "conversation__referral_source_id", Column("ad", "Ad", "text")
    )
    # Conversations that did not start from an ad have no source id.
    by_ad.rows = [row for row in by_ad.rows if row["ad"]]
    return [by_day, by_number, by_team, by_template, by_ad]


def _ads(conversations, charges) -> Table:
    """Per ad: conversations, first response, resolved, free-window replies
    and billed messages."""
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
    # What the messages cost is in cost_by_ad, per currency.
    billed = dict(
        charges.filter(conversation__in=ads)
        .values("conversation__referral_source_id")
        .annotate(count=Count("id"))
        .values_list("conversation__referral_source_id", "count")
    )
    result = []
    for source_id, row in sorted(rows.items()):
        result.append(
            {
                "ad": source_id,
                "headline": headlines.get(source_id) or "",
                "conversations": row["started"],
                "first_response_p50": row["first_response_p50"],
                "resolved": row["resolved"],
                "replies_in_free_window": free_replies.get(source_id, 0),
                "messages_billed": billed.get(source_id, 0),
            }
        )
    return Table(
        "ads",
        "Click-to-WhatsApp ads",
        [
            Column("ad", "Ad", "text"),
            Column("headline", "Headline", "text"),
            Column("conversations", "Conversations"),
            Column("first_response_p50", "First response, median", "duration"),
            Column("resolved", "Resolved"),
            Column("replies_in_free_window", "Replies in the free window"),
            Column("messages_billed", "Billed messages"),
        ],
        result,
    )
