"""The status-storm benchmark's /metrics reading (bench/metrics_scrape.py):
Prometheus' text read back into figures, and compared with its own counts."""

from bench import metrics_scrape as m

BEFORE = """\
# HELP helpdesk_webhook_requests_total Webhook requests by answer.
# TYPE helpdesk_webhook_requests_total counter
helpdesk_webhook_requests_total{method="POST",status="200"} 3.0
helpdesk_webhook_requests_total{method="GET",status="200"} 1.0
# HELP helpdesk_webhook_events_pending Stored events not processed yet.
# TYPE helpdesk_webhook_events_pending gauge
helpdesk_webhook_events_pending{state="pending"} 0.0
helpdesk_webhook_events_pending{state="failed"} 2.0
# HELP helpdesk_webhook_events_finished_total Stored events finished.
# TYPE helpdesk_webhook_events_finished_total counter
helpdesk_webhook_events_finished_total{state="processed"} 3.0
"""

AFTER = """\
# TYPE helpdesk_webhook_requests_total counter
helpdesk_webhook_requests_total{method="POST",status="200"} 13.0
helpdesk_webhook_requests_total{method="POST",status="503"} 1.0
helpdesk_webhook_requests_total{method="GET",status="200"} 1.0
# TYPE helpdesk_webhook_events_finished_total counter
helpdesk_webhook_events_finished_total{state="processed"} 13.0
# TYPE helpdesk_messages_sent_total counter
helpdesk_messages_sent_total{code="",outcome="sent"} 4.0
helpdesk_messages_sent_total{code="131048",outcome="failed"} 1.0
"""


def test_samples_are_keyed_by_name_and_labels_and_summed_by_label():
    scrape = m.samples(BEFORE)
    key = ("helpdesk_webhook_events_pending", (("state", "failed"),))
    assert scrape[key] == 2.0
    assert m.value(scrape, m.REQUESTS, status="200") == 4.0
    assert m.value(scrape, m.REQUESTS, method="POST") == 3.0
    assert m.value(scrape, "helpdesk_not_there") == 0


def test_a_counters_growth_per_series_leaves_out_what_did_not_move():
    growth = m.grown(m.samples(BEFORE), m.samples(AFTER), m.REQUESTS)
    assert growth == {
        (("method", "POST"), ("status", "200")): 10.0,
        (("method", "POST"), ("status", "503")): 1.0,
    }


def test_a_gauge_that_rose_and_ended_at_zero_is_told_from_one_still_up():
    assert m.rises_and_falls([(0.0, 0), (0.5, 40), (1.0, 7), (1.5, 0)]) == {
        "scrapes": 4,
        "peak": 40,
        "peak_at_s": 0.5,
        "last": 0,
        "rose_and_fell_to_zero": True,
    }
    assert not m.rises_and_falls([(0.0, 0), (0.5, 40)])["rose_and_fell_to_zero"]
    assert not m.rises_and_falls([(0.0, 0), (0.5, 0)])["rose_and_fell_to_zero"]


class Scraped:
    """A Scraper's results without a server."""

    def __init__(self, texts):
        self.scrapes = [(i * 0.5, m.samples(text)) for i, text in enumerate(texts)]
        self.failures = 0

    gauge = m.Scraper.gauge


def test_the_counts_match_only_when_every_counter_grew_as_the_benchmark_counted():
    before, after = m.samples(BEFORE), m.samples(AFTER)
    scraper = Scraped([BEFORE, AFTER])
    sent = {"sent": 4, "failed": 1}
    figures = m.compare(scraper, before, after, acknowledged=10, sent=sent)
    assert figures["counts_match"]
    assert figures["webhook_posts_other"] == {"metrics": 1.0}
    assert figures["sent_by_outcome"]["metrics"] == {"sent": 4.0, "failed": 1.0}
    assert not m.compare(scraper, before, after, acknowledged=11, sent=sent)[
        "counts_match"
    ]
    assert not m.compare(scraper, before, after, acknowledged=10, sent={})[
        "counts_match"
    ]
    assert any("counts match: True" in line for line in m.lines(figures))
