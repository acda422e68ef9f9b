"""The SMS outbox sender: runs outside any webhook and drains queued messages."""

from __future__ import annotations

import logging
import time

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.rest import Client

from .config import Settings
from .service import DATABASE_DOWN, mask
from .storage import OutboxRepository, Storage, utcnow

log = logging.getLogger("ivr.outbox")

MAX_ATTEMPTS = 5


def drain(storage: Storage, settings: Settings, *, http_client: HttpClient | None = None,
          batch: int = 50) -> dict[str, int]:
    """Send what is pending, once. Returns counts by the status each message ended in."""
    counts = {"sent": 0, "not_sent": 0, "failed": 0, "retry": 0}
    missing = [name for name, value in (("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                                        ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                                        ("IVR_SMS_FROM", settings.sms_from)) if not value]
    client = None
    if not missing:
        client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                        http_client=http_client)
    while True:
        with storage.transaction() as session:
            messages = OutboxRepository(storage, session).pending(batch)
            for message in messages:
                message.attempts += 1
                if client is None:
                    message.status = "not_sent"
                    message.reason = f"not configured: {', '.join(missing)}"
                    counts["not_sent"] += 1
                    continue
                try:
                    sent = client.messages.create(to=message.to_number, from_=settings.sms_from,
                                                  body=message.body)
                except (TwilioRestException, TwilioException, OSError) as exc:
                    message.reason = f"{type(exc).__name__}: {str(exc)[:300]}"
                    if message.attempts >= MAX_ATTEMPTS:
                        message.status = "failed"
                        counts["failed"] += 1
                    else:
                        counts["retry"] += 1
                    log.warning("sms %s to %s failed (attempt %s)", message.id,
                                mask(message.to_number), message.attempts)
                    continue
                message.status = "sent"
                message.twilio_sid = sent.sid
                message.sent_at = utcnow()
                message.reason = None
                counts["sent"] += 1
                log.info("sms %s sent to %s", message.id, mask(message.to_number))
        if len(messages) < batch or counts["retry"]:
            return counts


def watch(storage: Storage, settings: Settings, service, interval: float = 2.0) -> None:
    """The sender process beside the web workers: replay the outage spool once the
    database is back (its SMS join the outbox), then drain the outbox; forever."""
    while True:
        try:
            if service.spool.depth():
                result = service.spool.replay(service.replay, transient=DATABASE_DOWN)
                if result.read:
                    log.info("spool replayed: %s written, %s already present", result.applied,
                             result.already_present)
            drain(storage, settings)
        except Exception:  # keep the sender alive through a database outage
            log.exception("outbox or spool replay failed; retrying")
        time.sleep(interval)
