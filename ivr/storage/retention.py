"""Retention: personal data in call records older than the configured number of days is
anonymised or deleted (see the README's "Personal data" section for what and why)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .helpdesk import HelpdeskJob
from .models import Call, Lockout, OutboxMessage, Ticket

ANONYMISED = ""  # what an anonymised caller number reads as (masked: "…")


@dataclass
class RetentionResult:
    calls_anonymised: int = 0
    tickets_anonymised: int = 0
    messages_deleted: int = 0
    failure_counts_deleted: int = 0
    help_desk_pushes_cleared: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class RetentionRepository:
    def __init__(self, session: Session):
        self.session = session

    def _old_calls(self, cutoff: dt.datetime):
        return and_(Call.started_at < cutoff,
                    or_(Call.caller_number != ANONYMISED, Call.user_email.is_not(None),
                        Call.pending_pmi.is_not(None)))

    def _old_tickets(self, cutoff: dt.datetime):
        return and_(Ticket.created_at < cutoff, Ticket.callback_number.is_not(None))

    def _old_messages(self, cutoff: dt.datetime):
        # Pending or claimed messages are the sender's; it ends them either way.
        return and_(OutboxMessage.created_at < cutoff,
                    OutboxMessage.status.not_in(("pending", "sending")))

    def _old_failures(self, cutoff: dt.datetime, now: dt.datetime):
        return and_(Lockout.updated_at < cutoff,
                    or_(Lockout.locked_until.is_(None), Lockout.locked_until <= now))

    def _old_pushes(self, cutoff: dt.datetime):
        # A push's change as queued and its request as built copy the callback number.
        # Once sent, neither is needed again (the help desk's ticket id stays); a push that
        # failed that long ago is dropped, and a later change of its ticket sends the
        # ticket as it then stands.
        return and_(HelpdeskJob.created_at < cutoff,
                    or_(HelpdeskJob.status == "failed",
                        and_(HelpdeskJob.status == "sent",
                             or_(HelpdeskJob.data.is_not(None),
                                 HelpdeskJob.payload.is_not(None)))))

    def count(self, cutoff: dt.datetime, now: dt.datetime) -> RetentionResult:
        def n(model, where):
            return self.session.scalar(select(func.count()).select_from(model).where(where)) or 0

        return RetentionResult(n(Call, self._old_calls(cutoff)),
                               n(Ticket, self._old_tickets(cutoff)),
                               n(OutboxMessage, self._old_messages(cutoff)),
                               n(Lockout, self._old_failures(cutoff, now)),
                               n(HelpdeskJob, self._old_pushes(cutoff)))

    def apply(self, cutoff: dt.datetime, now: dt.datetime) -> RetentionResult:
        """Anonymise calls started and tickets created before ``cutoff``; delete the text
        messages and failure counts of that age. Safe to run again: it changes only what
        still holds personal data."""
        calls = self.session.execute(
            update(Call).where(self._old_calls(cutoff))
            .values(caller_number=ANONYMISED, user_email=None, pending_pmi=None, can_text=False)
            .execution_options(synchronize_session=False)).rowcount
        tickets = self.session.execute(
            update(Ticket).where(self._old_tickets(cutoff)).values(callback_number=None)
            .execution_options(synchronize_session=False)).rowcount
        messages = self.session.execute(
            delete(OutboxMessage).where(self._old_messages(cutoff))
            .execution_options(synchronize_session=False)).rowcount
        failures = self.session.execute(
            delete(Lockout).where(self._old_failures(cutoff, now))
            .execution_options(synchronize_session=False)).rowcount
        old_pushes = self._old_pushes(cutoff)
        pushes = self.session.execute(
            delete(HelpdeskJob).where(old_pushes, HelpdeskJob.status == "failed")
            .execution_options(synchronize_session=False)).rowcount or 0
        pushes += self.session.execute(
            update(HelpdeskJob).where(old_pushes, HelpdeskJob.status == "sent")
            .values(data=None, payload=None)
            .execution_options(synchronize_session=False)).rowcount or 0
        return RetentionResult(calls or 0, tickets or 0, messages or 0, failures or 0, pushes)
