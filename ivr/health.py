"""HTTP: the liveness and database check, and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import metrics
from .extension import ivr
from .storage.helpdesk import helpdesk_counts

health = Blueprint("health", __name__)


@health.get("/metrics")
def prometheus_metrics():
    service = ivr().service
    more = [metrics.HelpdeskCollector(lambda: helpdesk_counts(ivr().storage))] \
        if ivr().config.helpdesk else []
    body, content_type = metrics.exposition(
        metrics.DepthCollector(service.outbox_depth, service.spool.depth,
                               service.spool.set_aside), *more)
    return Response(body, content_type=content_type)


@health.get("/healthz")
def healthz():
    try:
        ivr().storage.ping()
        database = "ok"
    except Exception as exc:  # reported, not raised: this is the health check
        database = f"unreachable: {type(exc).__name__}"
    status = 200 if database == "ok" else 503
    return jsonify(status="ok" if status == 200 else "degraded", database=database,
                   spool_depth=ivr().service.spool.depth(),
                   spool_set_aside=ivr().service.spool.set_aside()), status



