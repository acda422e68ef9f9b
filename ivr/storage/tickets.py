"""Tickets: one per routed call, moved along the lifecycle (``domain.lifecycle``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from typing import TYPE_CHECKING, Callable

from sqlalchemy import select

from ..domain.digits import ascii_digits
from ..domain.flow import Caller, Outcome, Step
from ..domain.lifecycle import TicketStatus, can_move, move
from .calls import TicketRow
from .models import Call, Ticket
from .sql import Sql

if TYPE_CHECKING:
    from .uow import UnitOfWork

OPEN = Sql("""
    INSERT INTO tickets (number, call_sid, account_id, user_email, priority,
                         target_response_minutes, region, status, created_at, acknowledged_at,
                         queue_group)
    VALUES (:number, :call_sid, :account_id, :user_email, :priority, :minutes, :region,
            :status, :now, :acknowledged_at, :queue_group)
    ON CONFLICT DO NOTHING
    RETURNING id, number, priority, target_response_minutes, status
""")
FOR_CALL = Sql("SELECT id, number, priority, target_response_minutes, status FROM tickets "
               "WHERE call_sid = :call_sid")
BY_ID = Sql("SELECT id, number, priority, target_response_minutes, status FROM tickets "
            "WHERE id = :id")
MOVE = Sql("""
    UPDATE tickets SET status = :status, updated_at = :now,
      connected_at = CASE WHEN :connected = 1 THEN COALESCE(connected_at, :now)
                          ELSE connected_at END,
      callback_number = COALESCE(:callback_number, callback_number)
    WHERE id = :id AND status = :current
    RETURNING id
""")


class TicketRepository:
    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    def open(self, *, call_sid: str, caller: Caller, priority: int, target_minutes: int,
             region: str, status: TicketStatus, now: dt.datetime,
             acknowledged: bool, number: str | None = None,
             queue_group: str | None = None) -> TicketRow:
        """This call's ticket: created once (one statement), returned as it is on every
        later request. ``number`` is tried first; another is drawn only if it is taken.
        ``queue_group``: the queue group the caller is put in, if any."""
        codec = self.uow.codec
        for attempt in range(20):
            row = OPEN.run(self.uow.connection, {
                "number": number if number and attempt == 0 else new_ticket_number(),
                "call_sid": call_sid, "account_id": caller.account_id,
                "user_email": caller.user_email, "priority": priority, "minutes": target_minutes,
                "region": region, "status": status.value, "now": codec.time(now),
                "acknowledged_at": codec.time(now) if acknowledged else None,
                "queue_group": queue_group,
            }).first()
            if row is None:  # this call has one already, or the number was taken
                row = FOR_CALL.run(self.uow.connection, {"call_sid": call_sid}).first()
            if row is not None:
                tid, number_, level, minutes, current = row
                return TicketRow(tid, number_, level, minutes, TicketStatus(current))
        raise RuntimeError("could not allocate a unique ticket number")

    def advance(self, ticket: TicketRow,
                new: TicketStatus | Callable[[TicketStatus], TicketStatus],
                now: dt.datetime, callback_number: str | None = None) -> tuple[TicketRow, bool]:
        """Move the ticket on if the lifecycle allows it from where it stands; otherwise
        leave it there (a replayed webhook, or the desk got there first). ``new`` is the
        status, or the rule that gives it from where the ticket stands. Returns the
        ticket as it now stands, and whether this call moved it: not when the move was
        already made, by the desk or by another copy of the same request that ran while
        this one waited for the call's lock (its ``ticket`` was read before that)."""
        # The update applies only if the ticket is still where it was read (the desk may
        # have moved it meanwhile); if not, the move is judged again from where it is.
        for _ in range(3):
            target = new(ticket.status) if callable(new) else new
            if not can_move(ticket.status, target):
                return ticket, False
            status = move(ticket.status, target)
            moved = MOVE.run(self.uow.connection, {
                "id": ticket.id, "status": status.value, "now": self.uow.codec.time(now),
                "connected": int(status is TicketStatus.CONNECTED),
                "callback_number": callback_number, "current": ticket.status.value,
            }).first()
            if moved is not None:
                return dataclasses.replace(ticket, status=status), True
            ticket = self._current(ticket.id)
        raise RuntimeError(f"ticket id={ticket.id} kept changing while it was being moved")

    def _current(self, ticket_id: int) -> TicketRow:
        row = BY_ID.run(self.uow.connection, {"id": ticket_id}).first()
        return TicketRow(row[0], row[1], row[2], row[3], TicketStatus(row[4]))

    def restore(self, record, account, now: dt.datetime,
                queue_group: str | None = None) -> Ticket | None:
        """Write a ticket taken while the database was down; None if this call has one.
        ``record`` is a spooled ticket (``voice.outage.SpooledTicket``); ``queue_group``
        the queue group its caller was put in, if any."""
        session = self.uow.session
        uow = self.uow
        calls = uow.calls
        fresh = calls.new(call_sid=record.call_sid, account_sid=None,
                          dialed_number=record.dialed_number, region=record.region,
                          language=record.language, caller_number=record.caller_number,
                          can_text=record.can_text)
        calls.start(fresh, fresh.state, record.language, now)
        call = session.get(Call, record.call_sid, with_for_update=uow.lock_rows or None)
        if session.scalars(select(Ticket.id).where(Ticket.call_sid == record.call_sid)).first():
            return None
        number = record.number
        while session.scalars(select(Ticket.id).where(Ticket.number == number)).first():
            number = new_ticket_number()  # the spoken number was taken meanwhile: very rare
        ticket = Ticket(number=number, call_sid=record.call_sid,
                        account_id=account.account_id if account else "unknown",
                        user_email=account.user_email if account else "unknown",
                        priority=record.priority,
                        target_response_minutes=record.target_response_minutes,
                        region=record.region, status=record.status, created_at=now,
                        acknowledged_at=record.acknowledged_at, queue_group=queue_group)
        session.add(ticket)
        # The call as the spool knows it: its row may have been stored from a callback
        # alone (a status or queue result that reached the database before this replay),
        # with the line's own language and without the caller's number.
        call.dialed_number, call.region = record.dialed_number, record.region
        call.caller_number, call.can_text = record.caller_number, record.can_text
        call.language, call.english = record.language, record.english
        if account is not None and call.account_id is None:
            call.account_id, call.user_email = account.account_id, account.user_email
            call.plan, call.role = account.plan, account.role
        if call.outcome in (None, Outcome.ABANDONED.value):
            call.outcome, call.abandoned_at_step = Outcome.ROUTED.value, None
        call.step = Step.DONE.value
        call.steps_reached = ",".join(
            s for s in (call.steps_reached.split(",") + ["ticket", "routed", "spooled"]) if s)[:255]
        call.updated_at = now
        session.flush()
        return ticket

    def list(self, limit: int | None = None) -> list[Ticket]:
        query = select(Ticket).order_by(Ticket.created_at.desc(), Ticket.id.desc())
        if limit:
            query = query.limit(limit)
        return list(self.uow.session.scalars(query))


def new_ticket_number() -> str:
    """Eight digits, never starting with 0, so it reads back the same way it is written."""
    return str(10_000_000 + secrets.randbelow(90_000_000))


def ticket_by_number(session, number: str, *, for_update: bool = False) -> Ticket | None:
    """A ticket by the number the caller heard, through the ORM (desk-side code);
    ``for_update`` locks its row (PostgreSQL; SQLite's write transaction holds the whole
    database)."""
    if ascii_digits(number, at_most=16) is None:
        return None
    query = select(Ticket).where(Ticket.number == number)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).first()
