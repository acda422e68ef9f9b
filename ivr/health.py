"""HTTP: the liveness and database check, and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from . import metrics
from .extension import ivr
from .storage import schema_missing
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
    pepper = None
    try:
        with ivr().storage.unit_of_work(readonly=True) as uow:
            imported = uow.accounts.pepper_fingerprint()
        database = "ok"
        # A host whose pepper is not the one the directory was imported with rejects
        # every caller's host key: it must take no calls until the peppers agree.
        if imported is not None and imported != ivr().hasher.fingerprint():
            pepper = ("differs from the one the directory was imported with: give every "
                      "host the same IVR_HOST_KEY_PEPPER (or pepper file), or import the "
                      "directory again on this one")
    except Exception as exc:  # reported, not raised: this is the health check
        database = "no tables, or older ones: run init-db" if schema_missing(exc) \
            else f"unreachable: {type(exc).__name__}"
    status = 200 if database == "ok" and pepper is None else 503
    body = dict(status="ok" if status == 200 else "degraded", database=database,
                spool_depth=ivr().service.spool.depth(),
                spool_set_aside=ivr().service.spool.set_aside())
    if pepper is not None:
        body["pepper"] = pepper
    return jsonify(body), status



