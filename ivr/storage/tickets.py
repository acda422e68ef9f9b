"""Tickets: one per routed call, moved along the lifecycle."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..domain.flow import Caller, Outcome, Step
from ..domain.lifecycle import can_move
from .calls import CallRepository
from .engine import Storage
from .models import Account, Ticket


class TicketRepository:
    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def for_call(self, call_sid: str) -> Ticket | None:
        return self.session.scalars(select(Ticket).where(Ticket.call_sid == call_sid)).first()

    def open(self, *, call_sid: str, caller: Caller, priority: int, target_minutes: int,
             region: str, now: dt.datetime, number: str | None = None) -> Ticket:
        """This call's ticket: created once, returned as it is on every later request.
        ``number`` is tried first; another is drawn only if it is taken."""
        for attempt in range(20):
            existing = self.for_call(call_sid)
            if existing is not None:
                return existing
            self.session.execute(
                self.storage.insert(Ticket)
                .values(
                    number=number if number and attempt == 0 else new_ticket_number(),
                    call_sid=call_sid, account_id=caller.account_id,
                    user_email=caller.user_email, priority=priority,
                    target_response_minutes=target_minutes, region=region, status="open",
                    created_at=now,
                )
                .on_conflict_do_nothing()
            )
        raise RuntimeError("could not allocate a unique ticket number")

    def restore(self, record: dict, account: Account | None, now: dt.datetime) -> Ticket | None:
        """Write a ticket taken while the database was down; None if this call has one."""
        calls = CallRepository(self.storage, self.session)
        call = calls.start(
            call_sid=record["call_sid"], account_sid=None, dialed_number=record["dialed_number"],
            region=record["region"], language=record["language"],
            caller_number=record["caller_number"], can_text=record["can_text"], now=now)
        if self.for_call(record["call_sid"]) is not None:
            return None
        number = record["number"]
        while self.session.scalars(select(Ticket.id).where(Ticket.number == number)).first():
            number = new_ticket_number()  # the spoken number was taken meanwhile: very rare
        self.session.execute(
            self.storage.insert(Ticket)
            .values(number=number, call_sid=record["call_sid"],
                    account_id=account.account_id if account else "unknown",
                    user_email=account.user_email if account else "unknown",
                    priority=record["priority"],
                    target_response_minutes=record["target_response_minutes"],
                    region=record["region"], status=record.get("status", "open"),
                    created_at=now,
                    acknowledged_at=dt.datetime.fromisoformat(record["acknowledged_at"]))
            .on_conflict_do_nothing(index_elements=["call_sid"])
        )
        ticket = self.for_call(record["call_sid"])
        if account is not None and call.account_id is None:
            call.account_id, call.user_email = account.account_id, account.user_email
            call.plan, call.role = account.plan, account.role
        if call.outcome in (None, Outcome.ABANDONED.value):
            call.outcome, call.abandoned_at_step = Outcome.ROUTED.value, None
        call.step = Step.DONE.value
        call.steps_reached = ",".join(
            s for s in (call.steps_reached.split(",") + ["ticket", "routed", "spooled"]) if s)[:255]
        call.updated_at = now
        return ticket

    def move(self, call_sid: str, status: str, now: dt.datetime,
             callback_number: str | None = None) -> Ticket | None:
        """Move this call's ticket along the lifecycle; None if there is no ticket or the
        move is not allowed from where it is (a repeated request changes nothing)."""
        query = select(Ticket).where(Ticket.call_sid == call_sid)
        if self.storage.dialect == "postgresql":
            query = query.with_for_update()
        ticket = self.session.scalars(query).first()
        if ticket is None or not can_move(ticket.status, status):
            return None
        ticket.status = status
        ticket.updated_at = now
        if status == "connected":
            ticket.connected_at = ticket.connected_at or now
        if callback_number:
            ticket.callback_number = callback_number
        return ticket

    def acknowledge(self, call_sid: str, now: dt.datetime) -> None:
        """Record when the caller was first told the ticket number."""
        self.session.execute(
            update(Ticket)
            .where(Ticket.call_sid == call_sid, Ticket.acknowledged_at.is_(None))
            .values(acknowledged_at=now)
            .execution_options(synchronize_session=False)
        )

    def list(self, limit: int | None = None) -> list[Ticket]:
        query = select(Ticket).order_by(Ticket.created_at.desc(), Ticket.id.desc())
        if limit:
            query = query.limit(limit)
        return list(self.session.scalars(query))


def new_ticket_number() -> str:
    """Eight digits, never starting with 0, so it reads back the same way it is written."""
    return str(10_000_000 + secrets.randbelow(90_000_000))
