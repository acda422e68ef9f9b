"""Twilio queues of one caller each, deleted once they are empty and idle.

Every caller waits in a queue named after their ticket (``support-jp.12345678``) so that
the engineer line connects exactly the caller it chose. Twilio keeps queues until they are
deleted, so the sender (``outbox drain``) removes the empty ones now and then through the
REST API: only queues named like a ticket's queue of a configured group, empty, and idle
for a while. It runs outside any webhook, with a time-out.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient

from .config import IvrConfig, Settings
from .domain.clock import utcnow

log = logging.getLogger("ivr.queues")

IDLE = dt.timedelta(minutes=10)
TICKET_QUEUE = re.compile(r"(?P<group>.+)\.(?P<ticket>[1-9][0-9]{7})")


def prune(config: IvrConfig, settings: Settings, *, http_client: HttpClient | None = None,
          now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Delete empty, idle per-ticket queues; returns how many were deleted (0 without
    Twilio credentials)."""
    client = settings.rest_client(http_client)
    if client is None:
        return 0
    now = now or utcnow()
    groups = config.ticket_groups()
    deleted = 0
    try:
        queues = client.queues.list(limit=limit, page_size=min(limit, 1000))
    except (TwilioRestException, TwilioException, OSError) as exc:
        log.warning("could not list Twilio queues: %s", type(exc).__name__)
        return 0
    for queue in queues:
        match = TICKET_QUEUE.fullmatch(queue.friendly_name or "")
        if match is None or match["group"] not in groups or (queue.current_size or 0) > 0:
            continue
        updated = queue.date_updated
        if updated is not None and now - updated < IDLE:
            continue
        try:
            client.queues(queue.sid).delete()
            deleted += 1
        except (TwilioRestException, TwilioException, OSError) as exc:
            log.warning("could not delete Twilio queue %s: %s", queue.sid, type(exc).__name__)
    if deleted:
        log.info("deleted %s empty per-ticket Twilio queues", deleted)
    return deleted
