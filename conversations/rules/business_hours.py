"""Business hours: open or closed at a moment, since when closed, and time
counted in open hours only. Pure: the caller builds the Schedule.

Opening hours are local times in the schedule's time zone, per weekday
(Monday 0), not overlapping within a day; a closing time of 00:00 means
midnight at the end of that day.
A holiday closes its whole local day. Daylight-saving changes follow the
zone: 09:00–17:00 is 09:00–17:00 local on either side of a change.

A schedule's `shift` reads it as if its clock ran that far ahead: what the
functions take and answer is real time, the hours are looked up at real
time + shift. It is zero but for the sandbox's business clock
(services/business_clock.py, docs/sandbox.md).
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Looking further than this for an open moment means the schedule is never
# open (no hours, or every day a holiday).
HORIZON_DAYS = 400
# The start of a closed period for a schedule that has never been open.
NEVER_OPEN = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Schedule:
    zone: ZoneInfo
    # weekday (0 Monday .. 6 Sunday) -> [(opens, closes)], local times.
    week: dict[int, list[tuple[time, time]]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    # How far the schedule's clock runs ahead of real time (see above).
    shift: timedelta = timedelta(0)


def _day_intervals(schedule: Schedule, day: date) -> list[tuple[datetime, datetime]]:
    """The open intervals of one local day, as aware datetimes, in order."""
    if day in schedule.holidays:
        return []
    intervals = []
    for opens, closes in sorted(schedule.week.get(day.weekday(), [])):
        start = datetime.combine(day, opens, tzinfo=schedule.zone)
        if closes == time(0, 0):
            end = datetime.combine(day + timedelta(days=1), time(0, 0), schedule.zone)
        else:
            end = datetime.combine(day, closes, tzinfo=schedule.zone)
        if end > start:
            intervals.append((start - schedule.shift, end - schedule.shift))
    return intervals


def _intervals_from(
    schedule: Schedule, at: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Open intervals that end after `at`, in order, for HORIZON_DAYS."""
    first = (at + schedule.shift).astimezone(schedule.zone).date() - timedelta(days=1)
    for offset in range(HORIZON_DAYS):
        for start, end in _day_intervals(schedule, first + timedelta(days=offset)):
            if end > at:
                yield start, end


def is_open(schedule: Schedule, at: datetime) -> bool:
    return closed_since(schedule, at) is None


def closed_since(schedule: Schedule, at: datetime) -> datetime | None:
    """When the closed period that `at` falls in began (the last closing
    time), or None when open at `at`."""
    local = (at + schedule.shift).astimezone(schedule.zone).date()
    for offset in range(-1, HORIZON_DAYS):
        intervals = _day_intervals(schedule, local - timedelta(days=offset))
        if any(start <= at < end for start, end in intervals):
            return None
        ended = [end for _, end in intervals if end <= at]
        if ended:
            return max(ended)
    return NEVER_OPEN


def next_opening(schedule: Schedule, at: datetime) -> datetime | None:
    """When it next opens after `at` (`at` itself when open); None: never."""
    for start, _ in _intervals_from(schedule, at):
        return max(start, at)
    return None


def next_closing(schedule: Schedule, at: datetime) -> datetime | None:
    """When it next closes after `at`: the end of the open stretch `at` is
    in, else of the next one (back-to-back intervals are one stretch);
    None: never open."""
    end = None
    for start, stop in _intervals_from(schedule, at):
        if end is not None and start > end:
            break
        end = stop if end is None else max(end, stop)
    return end


def open_seconds(schedule: Schedule, start: datetime, end: datetime) -> float:
    """Seconds of open hours between two moments."""
    if end <= start:
        return 0.0
    total = 0.0
    for opens, closes in _intervals_from(schedule, start):
        if opens >= end:
            break
        total += (min(closes, end) - max(opens, start)).total_seconds()
    return total


def add_open_seconds(
    schedule: Schedule, start: datetime, seconds: float
) -> datetime | None:
    """The moment `seconds` of open hours after `start`; None: never open."""
    left = seconds
    for opens, closes in _intervals_from(schedule, start):
        begin = max(opens, start)
        span = (closes - begin).total_seconds()
        if left <= span:
            return begin + timedelta(seconds=left)
        left -= span
    return None


WEEKDAY_NAMES = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)


def interval_problem(intervals: list[tuple[int, time, time]]) -> str:
    """What is wrong with (weekday, opens, closes) intervals, or "" if
    nothing: each must close after it opens (00:00: midnight) and a day's
    intervals must not overlap."""
    by_day: dict[int, list[tuple[time, time]]] = {}
    for weekday, opens, closes in intervals:
        if closes != time(0, 0) and closes <= opens:
            return (
                f"{WEEKDAY_NAMES[weekday]}: {opens:%H:%M}–{closes:%H:%M} closes "
                "before it opens (00:00 means midnight)."
            )
        by_day.setdefault(weekday, []).append((opens, closes))
    for weekday, day in by_day.items():
        ends = [
            (opens, time.max if closes == time(0, 0) else closes)
            for opens, closes in sorted(day)
        ]
        for (_, first_close), (second_open, _) in itertools.pairwise(ends):
            if second_open < first_close:
                return f"{WEEKDAY_NAMES[weekday]}: opening hours overlap."
    return ""
