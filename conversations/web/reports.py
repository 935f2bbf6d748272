"""The supervisors' reports page and its CSV files.

Who may read them: holders of conversations.view_reports, and then only the
conversations of the numbers their teams may see (the page, its CSV and the
API's CSV count the same rows). A period is whole days in the viewer's time
zone: a quick range or any from/to pair, validated here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from numbers import Number

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from ..selectors import reports
from . import charts
from .charts import ChartSpec, Series

VIEW_REPORTS = "conversations.view_reports"
LONGEST_PERIOD = 366  # days
EARLIEST = date(2000, 1, 1)
QUICK_RANGES = {
    "today": "Today",
    "yesterday": "Yesterday",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "this_month": "This month",
    "last_month": "Last month",
    "this_year": "This year",
}
DEFAULT_RANGE = "30d"


def may_see_reports(user) -> bool:
    return user.has_perm(VIEW_REPORTS)


@dataclass(frozen=True)
class Period:
    """Whole days from `first` to `last` (both included) in `zone`."""

    first: date
    last: date
    zone: tzinfo

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time(), tzinfo=self.zone)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), tzinfo=self.zone)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def label(self) -> str:
        first, last = self.first, self.last
        if first == last:
            return f"{last.day} {last:%b %Y}"
        if (first.year, first.month) == (last.year, last.month):
            return f"{first.day}–{last.day} {last:%b %Y}"
        start = (
            f"{first.day} {first:%b}"
            if first.year == last.year
            else (f"{first.day} {first:%b %Y}")
        )
        return f"{start} – {last.day} {last:%b %Y}"

    def query(self) -> str:
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}"

    def filename(self, name: str) -> str:
        return f"{name}_{self.first.isoformat()}_{self.last.isoformat()}.csv"


def quick_range(key: str, today: date) -> tuple[date, date]:
    """The first and last day of a quick range ending today (or last month)."""
    if key == "yesterday":
        yesterday = today - timedelta(days=1)
        return yesterday, yesterday
    if key in ("7d", "30d", "90d"):
        return today - timedelta(days=int(key[:-1]) - 1), today
    if key == "this_month":
        return today.replace(day=1), today
    if key == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    if key == "this_year":
        return today.replace(month=1, day=1), today
    return today, today


class ReportRangeForm(forms.Form):
    """?range=<quick range>, or ?from=YYYY-MM-DD&to=YYYY-MM-DD (both days
    included); neither: the last 30 days. A quick range wins over dates."""

    range = forms.ChoiceField(choices=list(QUICK_RANGES.items()), required=False)

    def __init__(self, data, *, zone: tzinfo):
        super().__init__(data)
        self.zone = zone
        self.today = timezone.localdate(timezone.now(), zone)
        for name, label in (("from", "From"), ("to", "To")):
            self.fields[name] = forms.DateField(
                required=False, label=label, input_formats=["%Y-%m-%d"]
            )
        for name in ("from", "to"):
            self.fields[name].error_messages["invalid"] = "Enter a date as YYYY-MM-DD."

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        key = data.get("range")
        first, last = data.get("from"), data.get("to")
        if key or not (first or last):
            first, last = quick_range(key or DEFAULT_RANGE, self.today)
        else:
            last = last or self.today
            first = first or last - timedelta(days=29)
        if first > last:
            self.add_error("to", "The end of the range comes before its start.")
        elif last > self.today:
            self.add_error("to", "The range cannot end after today.")
        elif first < EARLIEST:
            self.add_error("from", f"The range cannot start before {EARLIEST}.")
        elif (last - first).days + 1 > LONGEST_PERIOD:
            self.add_error(
                "to",
                f"A range covers at most {LONGEST_PERIOD} days; pick a shorter one.",
            )
        data["period"] = Period(first, last, self.zone)
        return data

    @property
    def period(self) -> Period:
        return self.cleaned_data["period"]

    def error_lists(self) -> dict[str, list[str]]:
        """Every problem per field ("range", "from", "to"), as lists."""
        return {field: list(errors) for field, errors in self.errors.items()}


# --- Charts ------------------------------------------------------------------


def _money_spec(label: str, *, horizontal: bool) -> ChartSpec:
    return ChartSpec(label, (), "money", horizontal)


CHARTS: dict[str, ChartSpec] = {
    "volume_by_day": ChartSpec(
        "day", (Series("inbound", "From customers"), Series("outbound", "To customers"))
    ),
    "volume_by_hour": ChartSpec("hour", (Series("messages", "Customer messages"),)),
    "response_times_by_agent": ChartSpec(
        "agent",
        (
            Series("first_response_p50", "First response, median"),
            Series("resolution_p50", "Resolution, median"),
        ),
        "duration",
        horizontal=True,
    ),
    "response_times_by_team": ChartSpec(
        "team",
        (
            Series("first_response_p50", "First response, median"),
            Series("resolution_p50", "Resolution, median"),
        ),
        "duration",
        horizontal=True,
    ),
    "template_funnel": ChartSpec(
        "template",
        (
            Series("sent", "Sent"),
            Series("delivered", "Delivered"),
            Series("read", "Read"),
            Series("replied", "Replied"),
        ),
        horizontal=True,
    ),
    "cost_by_day": _money_spec("day", horizontal=False),
    "cost_by_number": _money_spec("number", horizontal=True),
    "cost_by_team": _money_spec("team", horizontal=True),
    "cost_by_template": _money_spec("template", horizontal=True),
    "cost_by_ad": _money_spec("ad", horizontal=True),
    "ads": ChartSpec(
        "ad",
        (Series("conversations", "Conversations"), Series("resolved", "Resolved")),
        horizontal=True,
    ),
}

SECTIONS = (
    ("Volume", ("volume_by_day", "volume_by_hour")),
    (
        "Response times",
        ("response_times", "response_times_by_agent", "response_times_by_team"),
    ),
    ("Templates", ("template_funnel",)),
    (
        "Cost",
        (
            "cost_by_day",
            "cost_by_number",
            "cost_by_team",
            "cost_by_template",
            "cost_by_ad",
        ),
    ),
    ("Click-to-WhatsApp ads", ("ads",)),
)


def _by_currency(spec: ChartSpec, rows: list[dict]) -> tuple[ChartSpec, list[dict]]:
    """Money rows (one per label and currency) as one row per label with a
    value per currency: currencies are never added together. Charges the rate
    card had no price for are left out of the chart (the table shows them)."""
    currencies = sorted({row["currency"] for row in rows if row["cost"] is not None})
    pivoted: dict = {}
    for row in rows:
        if row["cost"] is not None:
            entry = pivoted.setdefault(row[spec.label], {spec.label: row[spec.label]})
            entry[row["currency"]] = row["cost"]
    series = tuple(Series(currency, currency) for currency in currencies[:4])
    return ChartSpec(spec.label, series, "money", spec.horizontal), list(
        pivoted.values()
    )


# Phones get a narrower drawing of each chart (CSS shows one of the two), so
# its text is not shrunk to a scale nobody reads.
CHART_WIDTHS = {"wide": 640, "compact": 360}


def charts_for(table: reports.Table) -> list[dict]:
    """The table's chart in each of CHART_WIDTHS, or none for no data."""
    spec = CHARTS.get(table.name)
    if spec is None or not table.rows:
        return []
    rows = table.rows
    if spec.unit == "money":
        spec, rows = _by_currency(spec, rows)
        if not spec.series:
            return []
    kind = next(column.kind for column in table.columns if column.key == spec.label)
    drawn = []
    for size, width in CHART_WIDTHS.items():
        chart = charts.bar_chart(spec, rows, kind=kind, title=table.title, width=width)
        chart.update(id=f"{table.name}-{size}", size=size)
        drawn.append(chart)
    return drawn


# --- Views -------------------------------------------------------------------


@login_required
@require_GET
def reports_page(request: HttpRequest) -> HttpResponse:
    """Headline figures, then each table as a chart with its data under it."""
    if not may_see_reports(request.user):
        raise PermissionDenied
    form = ReportRangeForm(request.GET, zone=request.user.zone)
    context = {"form": form, "quick_ranges": QUICK_RANGES}
    if not form.is_valid():
        return render(request, "conversations/reports.html", context, status=400)
    period = form.period
    tables = reports.build(request.user, since=period.since, until=period.until)
    summary = reports.headline(request.user, tables)
    before = reports.earlier(request.user, since=period.since, until=period.until)
    for entry in summary.cost:
        entry["before"] = before["cost"].get(entry["currency"])
    context.update(
        period=period,
        headline=summary,
        before=before,
        waiting_seconds=summary.waiting_seconds(timezone.now()),
        selected_range=form.cleaned_data.get("range") or "",
        sections=[
            {
                "title": title,
                "tables": [
                    {
                        "table": tables[name],
                        "charts": charts_for(tables[name]),
                        "csv": f"{reverse('conversations:report-csv', args=[name])}"
                        f"?{period.query()}",
                    }
                    for name in names
                ],
            }
            for title, names in SECTIONS
        ],
    )
    return render(request, "conversations/reports.html", context)


@login_required
@require_GET
def report_csv(request: HttpRequest, name: str) -> HttpResponse:
    """One report table as CSV, for the page's own links (a browser session);
    integrations fetch the same file from the API with a token."""
    if not may_see_reports(request.user):
        raise PermissionDenied
    form = ReportRangeForm(request.GET, zone=request.user.zone)
    if not form.is_valid():
        problems = "; ".join(
            f"{field}: {' '.join(errors)}"
            for field, errors in form.error_lists().items()
        )
        return HttpResponse(problems, status=400, content_type="text/plain")
    return csv_file(request.user, name, form.period)


def csv_file(user, name: str, period: Period) -> HttpResponse:
    """The CSV of one table for `user` over `period` (404 for an unknown
    name): durations in seconds, named after the table and its days."""
    if name not in reports.TABLE_NAMES:
        raise Http404("No such report")
    table = reports.build(user, since=period.since, until=period.until, only=name)[name]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{period.filename(name)}"'
    writer = csv.writer(response)
    writer.writerow([column.csv_name for column in table.columns])
    for row in table.as_lists():
        writer.writerow([spreadsheet_cell(value) for value in row])
    return response


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value):
    """A CSV cell that no spreadsheet runs: text that would start a formula
    gets a leading apostrophe (which spreadsheets do not show); numbers,
    negative ones included, stay numbers."""
    if value is None or isinstance(value, Number):
        return value
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
