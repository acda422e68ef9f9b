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
WEBHOOK_SECONDS = Histogram(
    "ivr_webhook_seconds", "Time to answer a Twilio webhook, by step", ["step"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REFUSED = Counter("ivr_webhook_refused_total",
                  "Webhook requests refused before the call flow ran, by reason "
                  "(signature, too_large); not counted in ivr_webhook_seconds", ["reason"])


class DepthCollector:
    """Outbox and spool depth, read when scraped."""

    def __init__(self, outbox_depth: Callable[[], int], spool_depth: Callable[[], int]):
        self.outbox_depth = outbox_depth
        self.spool_depth = spool_depth

    def collect(self):
        try:
            outbox = float(self.outbox_depth())
        except Exception:  # the database is down: say so by omission, not by failing
            outbox = float("nan")
        yield GaugeMetricFamily("ivr_outbox_depth", "Text messages waiting to be sent", value=outbox)
        yield GaugeMetricFamily("ivr_spool_depth", "Records waiting in the outage spool",
                                value=float(self.spool_depth()))


def exposition(depths: DepthCollector) -> tuple[bytes, str]:
    """The metrics page: all workers' counters (multiprocess mode) plus the depths."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in (CALLS, VERIFICATIONS, TICKETS, SPOOLED, WEBHOOK_SECONDS, REFUSED):
            registry.register(collector)
    registry.register(depths)
    return generate_latest(registry), CONTENT_TYPE_LATEST

