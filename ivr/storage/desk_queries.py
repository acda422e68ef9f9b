"""The support desk's read queries."""

from __future__ import annotations

import datetime as dt

from typing import TYPE_CHECKING

from sqlalchemy import Integer, cast, func, select

from ..domain.digits import ascii_digits
from .models import Call, Ticket

if TYPE_CHECKING:
    from .uow import UnitOfWork


class DeskRepository:
    """The support desk's queries: tickets and calls by filter and page, report figures."""

    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    @property
    def session(self):
        return self.uow.session

    def ticket(self, ref: str, *, for_update: bool = False) -> tuple[Ticket, str | None] | None:
        """A ticket by its 8-digit number, else by its id, with its caller's number."""
        if ascii_digits(ref, at_most=16) is None:
            return None
        base = select(Ticket, Call.caller_number).join(Call, Call.call_sid == Ticket.call_sid)
        if for_update and self.uow.lock_rows:
            base = base.with_for_update(of=Ticket)
        row = self.session.execute(base.where(Ticket.number == ref)).first()
        if row is None and int(ref) < 2**31:
            row = self.session.execute(base.where(Ticket.id == int(ref))).first()
        return (row[0], row[1]) if row is not None else None

    def tickets(self, *, statuses: tuple[str, ...] = (), priority: int | None = None,
                region: str | None = None, since: dt.datetime | None = None,
                until: dt.datetime | None = None, offset: int = 0, limit: int | None = None,
                oldest_first: bool = False) -> tuple[list[tuple[Ticket, str | None]], int]:
        """Tickets created in [since, until) matching the filters, newest first, with
        their callers' numbers; and how many match in all."""
        where = []
        if statuses:
            where.append(Ticket.status.in_(statuses))
        if priority is not None:
            where.append(Ticket.priority == priority)
        if region is not None:
            where.append(Ticket.region == region)
        if since is not None:
            where.append(Ticket.created_at >= since)
        if until is not None:
            where.append(Ticket.created_at < until)
        order = ((Ticket.created_at.asc(), Ticket.id.asc()) if oldest_first
                 else (Ticket.created_at.desc(), Ticket.id.desc()))
        query = (select(Ticket, Call.caller_number).join(Call, Call.call_sid == Ticket.call_sid)
                 .where(*where).order_by(*order).offset(offset))
        if limit is not None:
            query = query.limit(limit)
        total = self.session.scalar(select(func.count()).select_from(Ticket).where(*where)) or 0
        return [(ticket, caller) for ticket, caller in self.session.execute(query)], total

    def calls(self, *, outcomes: tuple[str, ...] = (), statuses: tuple[str, ...] = (),
              priority: int | None = None, region: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None,
              offset: int = 0, limit: int | None = None
              ) -> tuple[list[tuple[Call, Ticket | None]], int]:
        """Calls started in [since, until) matching the filters (outcome, Twilio status,
        region, their ticket's priority), newest first, with their tickets; and the count."""
        where = []
        if outcomes:
            where.append(Call.outcome.in_(outcomes))
        if statuses:
            where.append(Call.twilio_status.in_(statuses))
        if priority is not None:
            where.append(Ticket.priority == priority)
        if region is not None:
            where.append(Call.region == region)
        if since is not None:
            where.append(Call.started_at >= since)
        if until is not None:
            where.append(Call.started_at < until)
        joined = select(Call, Ticket).outerjoin(Ticket, Ticket.call_sid == Call.call_sid)
        query = (joined.where(*where).order_by(Call.started_at.desc(), Call.call_sid)
                 .offset(offset))
        if limit is not None:
            query = query.limit(limit)
        total = self.session.scalar(
            select(func.count()).select_from(Call)
            .outerjoin(Ticket, Ticket.call_sid == Call.call_sid).where(*where)) or 0
        return [(call, ticket) for call, ticket in self.session.execute(query)], total

    def calls_by_region_and_outcome(self, since: dt.datetime, until: dt.datetime
                                    ) -> list[tuple[str, str | None, int]]:
        """(region, outcome, calls) for calls started in [since, until)."""
        rows = self.session.execute(
            select(Call.region, Call.outcome, func.count())
            .where(Call.started_at >= since, Call.started_at < until)
            .group_by(Call.region, Call.outcome)
        )
        return [(region, outcome, count) for region, outcome, count in rows]

    def calls_by_hour(self, since: dt.datetime, until: dt.datetime) -> list[tuple[int, int]]:
        """(hour of day in UTC, calls) for calls started in [since, until), counted by the
        database: a year of calls is 24 rows, not a row per call."""
        hour = hour_of_day(self.uow.dialect, Call.started_at)
        rows = self.session.execute(
            select(hour, func.count())
            .where(Call.started_at >= since, Call.started_at < until)
            .group_by(hour))
        return [(int(h), count) for h, count in rows]


def hour_of_day(dialect: str, column):
    """A stored time's hour in UTC. SQLite keeps UTC text ("2026-11-25 09:05:00.000000"),
    whose hour is read from the text itself: its date functions round to the millisecond,
    which would put 09:59:59.9999 in hour 10."""
    if dialect == "postgresql":
        return cast(func.extract("hour", func.timezone("UTC", column)), Integer)
    return cast(func.substr(column, 12, 2), Integer)
