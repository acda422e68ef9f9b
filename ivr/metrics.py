"""Prometheus metrics. Under gunicorn set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py does)
so every worker's counts add up in one scrape."""

from __future__ import annotations

import os
from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

CALLS = Counter("ivr_calls_total", "Calls by region and outcome, counted when the outcome is known",
                ["region", "outcome"])
VERIFICATIONS = Counter("ivr_verifications_total", "Host-key checks by result (passed, failed, locked)",
                        ["result"])
TICKETS = Counter("ivr_tickets_total", "Tickets logged by priority", ["priority"])
SPOOLED = Counter("ivr_spooled_total", "Records written to the outage spool by kind", ["kind"])
HELPDESK_PUSHES = Counter("ivr_helpdesk_pushes", "Pushes to the help desk by result (sent, "
                          "superseded, retry, rate_limited, failed)", ["result"])
WEBHOOK_SECONDS = Histogram(
    "ivr_webhook_seconds", "Time to answer a Twilio webhook, by step", ["step"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REFUSED = Counter("ivr_webhook_refused_total",
                  "Webhook requests refused before the call flow ran, by reason "
                  "(signature, too_large); not counted in ivr_webhook_seconds", ["reason"])


class DepthCollector:
    """Outbox and spool depth, read when scraped."""

    def __init__(self, outbox_depth: Callable[[], int], spool_depth: Callable[[], int],
                 spool_set_aside: Callable[[], int] = lambda: 0):
        self.outbox_depth = outbox_depth
        self.spool_depth = spool_depth
        self.spool_set_aside = spool_set_aside

    def collect(self):
        try:
            outbox = float(self.outbox_depth())
        except Exception:  # the database is down: say so by omission, not by failing
            outbox = float("nan")
        yield GaugeMetricFamily("ivr_outbox_depth", "Text messages waiting to be sent", value=outbox)
        yield GaugeMetricFamily("ivr_spool_depth", "Records waiting in the outage spool",
                                value=float(self.spool_depth()))
        yield GaugeMetricFamily("ivr_spool_set_aside", "Spool records a replay could not "
                                "apply, waiting for an operator (spool.failed.jsonl)",
                                value=float(self.spool_set_aside()))


class HelpdeskCollector:
    """Help-desk pushes waiting (pending or being sent) and failed, read when scraped."""

    def __init__(self, counts: Callable[[], dict[str, int]]):
        self.counts = counts

    def collect(self):
        try:
            counts = self.counts()
            waiting = float(counts["pending"] + counts["sending"])
            failed = float(counts["failed"])
        except Exception:  # the database is down: say so by omission, not by failing
            waiting = failed = float("nan")
        yield GaugeMetricFamily("ivr_helpdesk_queue_depth",
                                "Help-desk pushes waiting to be sent", value=waiting)
        yield GaugeMetricFamily("ivr_helpdesk_failed_pushes",
                                "Help-desk pushes that failed and wait for `helpdesk retry`",
                                value=failed)


def exposition(depths: DepthCollector, *more) -> tuple[bytes, str]:
    """The metrics page: all workers' counters (multiprocess mode) plus the depths."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in (CALLS, VERIFICATIONS, TICKETS, SPOOLED, HELPDESK_PUSHES,
                          WEBHOOK_SECONDS, REFUSED):
            registry.register(collector)
    registry.register(depths)
    for collector in more:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST

