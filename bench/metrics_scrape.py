"""/metrics read while a benchmark runs, as Prometheus would scrape it.

A thread GETs `/metrics` (with METRICS_TOKEN) every half second and keeps
each scrape's samples, so a benchmark can show the pending-events gauge
rising and falling back to zero, and compare the counters' growth with its
own counts (docs/operations.md, Metrics).
"""

import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

# What a sample is keyed by: the metric's name and its labels, sorted.
Key = tuple[str, tuple[tuple[str, str], ...]]

PENDING = "helpdesk_webhook_events_pending"
OLDEST = "helpdesk_webhook_events_oldest_pending_age_seconds"
REQUESTS = "helpdesk_webhook_requests_total"
FINISHED = "helpdesk_webhook_events_finished_total"
SENT = "helpdesk_messages_sent_total"


def samples(text: str) -> dict[Key, float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: dict[Key, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(
        figure
        for (sample, have), figure in scrape.items()
        if sample == name and wanted <= set(have)
    )


def grown(
    before: dict[Key, float], after: dict[Key, float], name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """How much each labelled series of a counter grew between two scrapes
    (the series that did not move are left out)."""
    growth = {}
    for key in before.keys() | after.keys():
        if key[0] == name:
            change = after.get(key, 0.0) - before.get(key, 0.0)
            if change:
                growth[key[1]] = change
    return growth


def rises_and_falls(series: list[tuple[float, float]]) -> dict:
    """What a gauge did over a run: its peak, when, and whether it ended at 0
    after having risen."""
    if not series:
        return {"scrapes": 0, "peak": None, "peak_at_s": None, "last": None}
    peak_at, peak = max(series, key=lambda point: point[1])
    last = series[-1][1]
    return {
        "scrapes": len(series),
        "peak": peak,
        "peak_at_s": round(peak_at, 1),
        "last": last,
        "rose_and_fell_to_zero": peak > 0 and last == 0,
    }


class Scraper:
    """GET `url` every `interval` seconds in a thread until stopped.

    `scrapes` holds (seconds since start, samples) for every answer; a
    failed scrape is counted, never fatal (the benchmark goes on).
    """

    def __init__(self, url: str, token: str, interval: float = 0.5):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.interval = interval
        self.scrapes: list[tuple[float, dict[Key, float]]] = []
        self.failures = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def scrape(self) -> dict[Key, float]:
        response = requests.get(self.url, headers=self.headers, timeout=5)
        response.raise_for_status()
        return samples(response.text)

    def start(self) -> "Scraper":
        self.started = time.monotonic()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                self.scrapes.append((began - self.started, self.scrape()))
            except (requests.RequestException, ValueError):
                self.failures += 1
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def gauge(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """(seconds, value) of a gauge over the scrapes."""
        return [(at, value(scrape, name, **labels)) for at, scrape in self.scrapes]


def _labelled(growth: dict, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(change for have, change in growth.items() if wanted <= set(have))


def timeline(series: list[tuple[float, float]], points: int = 24) -> str:
    """A gauge's course in at most `points` evenly spaced scrapes, the last
    always among them: "0.0s 0 · 2.1s 840 · ..."."""
    if not series:
        return "-"
    step = max(1, len(series) // points)
    shown = series[::step]
    if shown[-1] is not series[-1]:
        shown.append(series[-1])
    return " · ".join(f"{at:.1f}s {figure:,.0f}" for at, figure in shown)


def compare(
    scraper: Scraper,
    before: dict[Key, float],
    after: dict[Key, float],
    *,
    acknowledged: int,
    sent: dict[str, int],
) -> dict:
    """What /metrics said over a run, beside the benchmark's own counts:
    `acknowledged` webhook POSTs answered 200 (each one event stored, and
    processed by the end), `sent` messages the run sent by outcome."""
    requests_grown = grown(before, after, REQUESTS)
    finished = grown(before, after, FINISHED)
    sent_grown = grown(before, after, SENT)
    by_outcome: dict[str, float] = {}
    for labels, change in sent_grown.items():
        outcome = dict(labels).get("outcome", "")
        by_outcome[outcome] = by_outcome.get(outcome, 0) + change
    posts = _labelled(requests_grown, method="POST", status="200")
    processed = _labelled(finished, state="processed")
    pending = scraper.gauge(PENDING, state="pending")
    figures = {
        "scrapes": len(scraper.scrapes),
        "failed_scrapes": scraper.failures,
        "pending": rises_and_falls(pending),
        "pending_timeline": timeline(pending),
        "oldest_pending_age_peak_s": max(
            (figure for _, figure in scraper.gauge(OLDEST)), default=None
        ),
        "webhook_posts_200": {"metrics": posts, "benchmark": acknowledged},
        "webhook_posts_other": {
            "metrics": _labelled(requests_grown, method="POST") - posts
        },
        "events_processed": {"metrics": processed, "benchmark": acknowledged},
        "sent_by_outcome": {"metrics": by_outcome, "benchmark": dict(sent)},
    }
    figures["counts_match"] = (
        posts == acknowledged
        and processed == acknowledged
        and {k: v for k, v in by_outcome.items() if v}
        == {k: v for k, v in sent.items() if v}
    )
    return figures


def lines(figures: dict) -> list[str]:
    """The comparison as the benchmark prints it."""
    pending = figures["pending"]
    posts, processed = figures["webhook_posts_200"], figures["events_processed"]
    sent = figures["sent_by_outcome"]
    return [
        f"  /metrics scraped {figures['scrapes']} times"
        f" ({figures['failed_scrapes']} failed)",
        f"  {PENDING}{{state=pending}}: peak {pending['peak'] or 0:,.0f}"
        f" at {pending['peak_at_s']}s, last {pending['last'] or 0:,.0f}"
        f" (rose and fell back to 0: {pending.get('rose_and_fell_to_zero')})",
        f"    {figures['pending_timeline']}",
        f"  {OLDEST} peak: {figures['oldest_pending_age_peak_s']}",
        f"  {REQUESTS}{{method=POST,status=200}}: +{posts['metrics']:,.0f};"
        f" benchmark acknowledged {posts['benchmark']:,}"
        f" (other POST answers +{figures['webhook_posts_other']['metrics']:,.0f})",
        f"  {FINISHED}{{state=processed}}: +{processed['metrics']:,.0f};"
        f" benchmark stored {processed['benchmark']:,}",
        f"  {SENT} by outcome: {sent['metrics'] or '{}'};"
        f" benchmark sent {sent['benchmark'] or '{}'}",
        f"  counts match: {figures['counts_match']}",
    ]
