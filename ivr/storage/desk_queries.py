"""The support desk's read queries."""

from __future__ import annotations

import datetime as dt

from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Integer, and_, case, cast, func, literal, or_, select

from ..domain.digits import ascii_digits
from .models import Call, Ticket, UTCDateTime

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
                oldest_first: bool = False, after: tuple[dt.datetime, int] | None = None
                ) -> tuple[list[tuple[Ticket, str | None]], int]:
        """Tickets created in [since, until) matching the filters, newest first (then by
        id), with their callers' numbers; and how many match in all. ``after`` (a
        ticket's created_at and id) starts the list after that ticket, newest first, where
        an index range starts, not an OFFSET."""
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
        page_where = list(where)
        if after is not None:
            if oldest_first:
                raise ValueError("after pages tickets newest first only")
            created, ticket_id = after
            page_where += [Ticket.created_at <= created,  # one bound the index range ends at
                           or_(Ticket.created_at < created, Ticket.id < ticket_id)]
        query = (select(Ticket, Call.caller_number).join(Call, Call.call_sid == Ticket.call_sid)
                 .where(*page_where).order_by(*order).offset(offset))
        if limit is not None:
            query = query.limit(limit)
        total = self.session.scalar(select(func.count()).select_from(Ticket).where(*where)) or 0
        return [(ticket, caller) for ticket, caller in self.session.execute(query)], total

    def tickets_from(self, since: dt.datetime | None, after: tuple[dt.datetime, int] | None,
                     limit: int) -> list[tuple[Ticket, str | None]]:
        """At most ``limit`` tickets created since ``since``, oldest first (then by id),
        with their callers' numbers: those after the ticket ``after`` (its created_at and
        id) in that order, so an export reads the next batch without an OFFSET."""
        where = []
        start = since
        if after is not None:
            created, ticket_id = after
            start = created if since is None else max(since, created)
            # Tickets of that same time come after it by id.
            where.append(or_(Ticket.created_at > created, Ticket.id > ticket_id))
        if start is not None:  # one lower bound, where the index range starts
            where.append(Ticket.created_at >= start)
        query = (select(Ticket, Call.caller_number).join(Call, Call.call_sid == Ticket.call_sid)
                 .where(*where).order_by(Ticket.created_at.asc(), Ticket.id.asc()).limit(limit))
        return [(ticket, caller) for ticket, caller in self.session.execute(query)]

    def calls(self, *, outcomes: tuple[str, ...] = (), statuses: tuple[str, ...] = (),
              priority: int | None = None, region: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None,
              offset: int = 0, limit: int | None = None,
              after: tuple[dt.datetime, str] | None = None
              ) -> tuple[list[tuple[Call, Ticket | None]], int]:
        """Calls started in [since, until) matching the filters (outcome, Twilio status,
        region, their ticket's priority), newest first (then by call SID), with their
        tickets; and the count. ``after`` (a call's started_at and SID) starts the list
        after that call in this order, where an index range starts, not an OFFSET."""
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
        page_where = list(where)
        if after is not None:
            started, call_sid = after
            page_where += [Call.started_at <= started,  # one bound the index range ends at
                           or_(Call.started_at < started, Call.call_sid > call_sid)]
        query = (joined.where(*page_where).order_by(Call.started_at.desc(), Call.call_sid)
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

    def sla_counts(self, since: dt.datetime, until: dt.datetime, now: dt.datetime
                   ) -> list[tuple[int, str, str, int]]:
        """(priority, region, verdict, tickets) for tickets created in [since, until):
        the verdict 'met' (acknowledged within target), 'missed' (acknowledged late, or
        not acknowledged and past target) or 'pending', decided by the database."""
        verdict = self._verdict(now)
        rows = self.session.execute(
            select(Ticket.priority, Ticket.region, verdict, func.count())
            .where(Ticket.created_at >= since, Ticket.created_at < until)
            .group_by(Ticket.priority, Ticket.region, verdict))
        return [(priority, region, v, count) for priority, region, v, count in rows]

    def slowest(self, since: dt.datetime, until: dt.datetime, now: dt.datetime,
                limit: int) -> list[Ticket]:
        """The ``limit`` tickets created in [since, until) with the longest response in
        whole seconds (to acknowledgement, or waited until ``now``), then by number."""
        # Whole seconds as int() counts them: integers divided in SQL (SQLAlchemy's //
        # on integers), which both databases truncate towards zero.
        seconds = self._elapsed(now) // 1_000_000
        return list(self.session.scalars(
            select(Ticket).where(Ticket.created_at >= since, Ticket.created_at < until)
            .order_by(seconds.desc(), Ticket.number.asc()).limit(limit)))

    def _elapsed(self, now: dt.datetime):
        """Microseconds from creation to acknowledgement, or to ``now`` when there is none."""
        dialect = self.uow.dialect
        answered = func.coalesce(Ticket.acknowledged_at, literal(now, UTCDateTime()))
        if dialect == "postgresql":
            return cast(func.extract("epoch", answered - Ticket.created_at) * 1_000_000,
                        BigInteger)
        return microseconds(answered) - microseconds(Ticket.created_at)

    def _verdict(self, now: dt.datetime):
        target = cast(Ticket.target_response_minutes, BigInteger) * 60_000_000
        elapsed = self._elapsed(now)
        acknowledged = Ticket.acknowledged_at.is_not(None)
        return case((and_(acknowledged, elapsed <= target), "met"),
                    (acknowledged, "missed"),
                    (elapsed > target, "missed"),
                    else_="pending")


def microseconds(column):
    """SQLite: a stored UTC time ("2026-11-25 09:05:00.123456") as whole microseconds
    since 1970, exactly: whole seconds from its first 19 characters, the microseconds from
    its text (SQLite's date functions round fractions to the millisecond)."""
    return (cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger) * 1_000_000
            + cast(func.substr(column, 21, 6), BigInteger))


def hour_of_day(dialect: str, column):
    """A stored time's hour in UTC. SQLite keeps UTC text ("2026-11-25 09:05:00.000000"),
    whose hour is read from the text itself: its date functions round to the millisecond,
    which would put 09:59:59.9999 in hour 10."""
    if dialect == "postgresql":
        return cast(func.extract("hour", func.timezone("UTC", column)), Integer)
    return cast(func.substr(column, 12, 2), Integer)
