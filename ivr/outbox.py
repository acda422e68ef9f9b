"""The sender (``outbox drain [--watch]``): runs outside any webhook. Each round sends the
queued text messages, pushes tickets to the help desk when one is configured, reopens
tickets stranded in a queue after their calls ended and, now and then, deletes empty
per-ticket Twilio queues; with ``--watch`` it also replays the outage spool once the
database answers."""

from __future__ import annotations

import datetime as dt
import logging
import time

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.rest import Client

from . import queues
from .config import Settings
from .domain.phones import mask
from .helpdesk.sender import Sender
from .storage import Storage, database_error, database_unavailable, schema_missing, utcnow

log = logging.getLogger("ivr.outbox")

# A failure that may pass (Twilio unreachable or answering 5xx or 429) is tried again
# after 1, 2, 4 ... minutes: the eighth try comes about two hours after the first. A
# message Twilio refuses (an invalid or unsubscribed number, a number that cannot take
# texts: any other 4xx) is given up at once.
MAX_ATTEMPTS = 8
RETRY_AFTER = dt.timedelta(minutes=1)
# A message's claim, renewed just before it is sent: one a sender died holding is sent again.
STALE_CLAIM = dt.timedelta(minutes=10)
QUEUE_PRUNE_SECONDS = 300  # how often the sender deletes empty per-ticket Twilio queues


def drain(storage: Storage, settings: Settings, *, http_client: HttpClient | None = None,
          batch: int = 50) -> dict[str, int]:
    """Send what is pending, once. Messages are claimed in one short transaction, then
    sent one at a time with no transaction open (a slow Twilio API never holds up a
    webhook). A batch may take longer than a claim lasts, so each message's claim is
    renewed just before it is sent (one another sender has taken meanwhile is left to
    it) and its result recorded just after, while the claim is still this sender's.
    Returns counts by the status each message ended in."""
    counts = {"sent": 0, "not_sent": 0, "failed": 0, "retry": 0}
    missing = sms_settings_missing(settings)
    client = None if missing else settings.rest_client(http_client)
    while True:
        claimed_at = utcnow()
        with storage.unit_of_work() as uow:
            claimed = [(m.id, m.to_number, m.body, m.attempts) for m in
                       uow.outbox.claim(batch, claimed_at, STALE_CLAIM)]
        for message_id, to_number, body, attempts in claimed:
            with storage.unit_of_work() as uow:
                held = uow.outbox.renew(message_id, claimed_at, utcnow())
            if held is None:
                log.info("sms %s was taken by another sender; not sent here", message_id)
                continue
            outcome, fields = _send(client, settings, missing, message_id, to_number, body,
                                    attempts)
            with storage.unit_of_work() as uow:
                if not uow.outbox.record(message_id, held, **fields):
                    log.warning("sms %s was taken by another sender while it was sent; "
                                "result not recorded", message_id)
            counts[outcome] += 1
        if len(claimed) < batch or counts["retry"]:
            return counts


def sms_settings_missing(settings: Settings) -> list[str]:
    """The variables text messages need that are not set: without them each message is
    marked not_sent with their names."""
    return settings.unset("twilio_account_sid", "twilio_auth_token", "sms_from")


def _send(client: Client | None, settings: Settings, missing: list[str], message_id: int,
          to_number: str, body: str, attempts: int) -> tuple[str, dict]:
    """Send one message: the outcome counted and the fields its record gets."""
    if client is None:
        return "not_sent", {"status": "not_sent",
                            "reason": f"not configured: {', '.join(missing)}"}
    try:
        sent = client.messages.create(to=to_number, body=body,
                                      **settings.sms_sender_params())
    except (TwilioRestException, TwilioException, OSError, ValueError) as exc:
        # (ValueError: an answer that is not Twilio's JSON, e.g. a proxy's error page.)
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        status = getattr(exc, "status", None)
        refused = isinstance(status, int) and 400 <= status < 500 and status != 429
        log.warning("sms %s to %s failed (attempt %s%s)", message_id, mask(to_number), attempts,
                    f", refused with HTTP {status}: given up" if refused else "")
        if refused or attempts >= MAX_ATTEMPTS:
            return "failed", {"status": "failed", "reason": reason}
        return "retry", {"status": "pending", "reason": reason,
                         "next_attempt_at": utcnow() + RETRY_AFTER * 2 ** (attempts - 1)}
    log.info("sms %s sent to %s", message_id, mask(to_number))
    return "sent", {"status": "sent", "twilio_sid": sent.sid, "sent_at": utcnow()}


def drain_all(storage: Storage, settings: Settings, service, floor,
              prune_queues: bool = True) -> dict[str, dict[str, int] | int]:
    """One round of the sender's work: text messages, help-desk pushes (when a help desk
    is configured), tickets stranded in a queue after their calls ended put back to open,
    and (``prune_queues``) empty per-ticket Twilio queues deleted. What each part did."""
    done: dict[str, dict[str, int] | int] = {"sms": drain(storage, settings)}
    if service.config.helpdesk:
        done["helpdesk"] = Sender(storage, service.config, settings, clock=service.clock).drain()
    done["reopened"] = floor.sweep_stranded()
    done["queues_deleted"] = queues.prune(service.config, settings) if prune_queues else 0
    return done


def watch(storage: Storage, settings: Settings, service, floor, interval: float = 2.0) -> None:
    """The sender process beside the web workers: replay the outage spool once the
    database is back (its SMS join the outbox), then ``drain_all``, forever; empty
    per-ticket Twilio queues are looked for every few minutes, not every round."""
    pruned_at = 0.0
    waiting = False  # for the database: said once, not with a traceback every round
    while True:
        try:
            if service.spool.depth():
                result = service.spool.replay(service.replay, transient=database_unavailable)
                if result.read:
                    log.info("spool replayed: %s written, %s already present", result.applied,
                             result.already_present)
            prune = time.monotonic() - pruned_at > QUEUE_PRUNE_SECONDS
            if prune:
                pruned_at = time.monotonic()
            drain_all(storage, settings, service, floor, prune_queues=prune)
            if waiting:
                waiting = False
                log.info("the database is back; sending again")
        except Exception as exc:  # keep the sender alive through a database outage
            if not database_unavailable(exc):
                log.exception("outbox or spool replay failed; retrying")
            elif not waiting:
                waiting = True
                log.warning("waiting for the database: %s; retrying every %g s", _why(exc),
                            interval)
        time.sleep(interval)


def _why(exc: BaseException) -> str:
    """A database's state in one line, its error's long numbers cut (``database_error``)."""
    cause, reason = database_error(exc)
    if schema_missing(exc):
        return f"it has no tables yet, or older ones ({reason}): run init-db"
    return f"it does not answer ({cause}: {reason})"
