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
# Twilio's largest page, and how many queues one round reads at most (twenty requests).
PAGE_SIZE = 1000
LIST_LIMIT = 20 * PAGE_SIZE
# How many one round deletes at most, a REST request each: the sender sends no text
# message while it deletes, so the rest wait for the next rounds.
DELETE_LIMIT = PAGE_SIZE
TICKET_QUEUE = re.compile(r"(?P<group>.+)\.(?P<ticket>[1-9][0-9]{7})")


def prune(config: IvrConfig, settings: Settings, *, http_client: HttpClient | None = None,
          now: dt.datetime | None = None, limit: int = LIST_LIMIT) -> int:
    """Delete empty, idle per-ticket queues; returns how many were deleted (0 without
    Twilio credentials). The list is read page by page, up to ``limit`` queues, so the
    empty ones behind a first page of busy or foreign queues are found too; a round
    deletes at most ``DELETE_LIMIT`` of them."""
    client = settings.rest_client(http_client)
    if client is None:
        return 0
    now = now or utcnow()
    groups = config.ticket_groups()
    idle = []
    try:
        for queue in client.queues.stream(limit=limit, page_size=min(limit, PAGE_SIZE)):
            match = TICKET_QUEUE.fullmatch(queue.friendly_name or "")
            if match is None or match["group"] not in groups or (queue.current_size or 0) > 0:
                continue
            updated = queue.date_updated
            if updated is None or now - updated >= IDLE:
                idle.append(queue.sid)
                if len(idle) >= DELETE_LIMIT:
                    break
    except (TwilioRestException, TwilioException, OSError) as exc:
        # Those found on the pages read so far still go; the rest wait for the next round.
        log.warning("could not list Twilio queues: %s", type(exc).__name__)
    deleted = 0
    for sid in idle:
        try:
            client.queues(sid).delete()
            deleted += 1
        except (TwilioRestException, TwilioException, OSError) as exc:
            log.warning("could not delete Twilio queue %s: %s", sid, type(exc).__name__)
    if deleted:
        log.info("deleted %s empty per-ticket Twilio queues", deleted)
    return deleted
