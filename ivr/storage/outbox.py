"""The outbox: messages written in the webhook's transaction, sent later."""

from __future__ import annotations

import datetime as dt

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select

from .models import OutboxMessage
from .sql import Sql

if TYPE_CHECKING:
    from .uow import UnitOfWork

QUEUE = Sql("""
    INSERT INTO outbox (call_sid, template, to_number, body, status, attempts, created_at)
    VALUES (:call_sid, :template, :to_number, :body, 'pending', 0, :now)
    ON CONFLICT DO NOTHING
""")
# A sender renews its claim on one message just before sending it, and records the result,
# only while the claim it took is still the message's: not once another sender has taken
# the message again (the first one's claim ran out).
RENEW = Sql("""
    UPDATE outbox SET claimed_at = :now
    WHERE id = :id AND status = 'sending' AND claimed_at = :claimed_at
    RETURNING id
""")
RECORD = Sql("""
    UPDATE outbox SET status = :status, reason = :reason, twilio_sid = :twilio_sid,
                      sent_at = :sent_at, next_attempt_at = :next_attempt_at
    WHERE id = :id AND status = 'sending' AND claimed_at = :claimed_at
""")


class OutboxRepository:
    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    @property
    def session(self):
        return self.uow.session

    def queue(self, *, call_sid: str, template: str, to_number: str, body: str,
              now: dt.datetime) -> None:
        """Queue a message once per call and template, however often it is asked for."""
        QUEUE.run(self.uow.connection, {"call_sid": call_sid, "template": template,
                                        "to_number": to_number, "body": body,
                                        "now": self.uow.codec.time(now)})

    def withdraw(self, call_sid: str, template: str) -> bool:
        """Take back a message not sent yet (pending, not claimed by a sender); False if
        there is none, or it is already being sent or sent."""
        result = self.session.execute(
            delete(OutboxMessage).where(OutboxMessage.call_sid == call_sid,
                                        OutboxMessage.template == template,
                                        OutboxMessage.status == "pending")
            .execution_options(synchronize_session=False))
        return bool(result.rowcount)

    def claim(self, limit: int, now: dt.datetime, stale_after: dt.timedelta) -> list[OutboxMessage]:
        """Take up to ``limit`` messages to send, marking them "sending": pending ones that
        are due (not waiting after a failure that may pass), and ones a sender claimed
        longer ago than ``stale_after`` (it died mid-send)."""
        due = or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now)
        waiting = or_((OutboxMessage.status == "pending") & due,
                      (OutboxMessage.status == "sending")
                      & (OutboxMessage.claimed_at < now - stale_after))
        query = select(OutboxMessage).where(waiting).order_by(OutboxMessage.id).limit(limit)
        if self.uow.lock_rows:
            query = query.with_for_update(skip_locked=True)
        messages = list(self.session.scalars(query))
        for message in messages:
            message.status, message.claimed_at = "sending", now
            message.attempts += 1
        return messages

    def renew(self, message_id: int, claimed_at: dt.datetime,
              now: dt.datetime) -> dt.datetime | None:
        """Renew this sender's claim on one message (taken at ``claimed_at``) just before
        sending it: the new claim time, or None if another sender has taken it since."""
        codec = self.uow.codec
        renewed = RENEW.run(self.uow.connection, {"id": message_id, "now": codec.time(now),
                                                  "claimed_at": codec.time(claimed_at)})
        return now if renewed.rows else None

    def record(self, message_id: int, claimed_at: dt.datetime, *, status: str,
               reason: str | None = None, twilio_sid: str | None = None,
               sent_at: dt.datetime | None = None,
               next_attempt_at: dt.datetime | None = None) -> bool:
        """Store a result, unless another sender has claimed the message since (this
        sender's claim ran out): False then, and nothing is written."""
        codec = self.uow.codec
        return RECORD.run(self.uow.connection, {
            "id": message_id, "claimed_at": codec.time(claimed_at), "status": status,
            "reason": reason, "twilio_sid": twilio_sid, "sent_at": codec.time(sent_at),
            "next_attempt_at": codec.time(next_attempt_at),
        }).rowcount == 1

    def for_call(self, call_sid: str) -> list[OutboxMessage]:
        return list(self.session.scalars(
            select(OutboxMessage).where(OutboxMessage.call_sid == call_sid).order_by(OutboxMessage.id)
        ))

    def depth(self) -> int:
        return self.session.scalar(
            select(func.count()).select_from(OutboxMessage)
            .where(OutboxMessage.status.in_(("pending", "sending")))
        ) or 0

