"""Unclosed tickets by their target time (created_at + target_response_minutes), in SQL,
so the dashboard sorts and counts every unclosed ticket, not only the newest few hundred."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, and_, cast, func, literal, select
from sqlalchemy.orm import Session

from .models import Call, Ticket
from .sql import Codec


def target_expression(dialect: str):
    """When a ticket's target response time runs out, as a value both the ORDER BY and the
    comparison with now can use: a timestamp on PostgreSQL, a Julian day on SQLite (which
    keeps times as ISO text)."""
    if dialect == "postgresql":
        return Ticket.created_at + func.make_interval(0, 0, 0, 0, 0,
                                                      Ticket.target_response_minutes)
    return func.julianday(Ticket.created_at) + cast(Ticket.target_response_minutes, Float) / 1440.0


def _now_value(dialect: str, now: dt.datetime):
    value = Codec(dialect).time(now)  # on SQLite, the text SQLAlchemy stores
    return literal(value) if dialect == "postgresql" else func.julianday(value)


class DeadlineQueries:
    def __init__(self, dialect: str, session: Session):
        self.dialect = dialect
        self.session = session

    def unclosed(self, statuses: tuple[str, ...], limit: int
                 ) -> list[tuple[Ticket, str | None]]:
        """At most ``limit`` tickets in these statuses, least time left first (most overdue
        at the top), with their callers' numbers."""
        target = target_expression(self.dialect)
        query = (select(Ticket, Call.caller_number)
                 .join(Call, Call.call_sid == Ticket.call_sid)
                 .where(Ticket.status.in_(statuses))
                 .order_by(target.asc(), Ticket.id.asc()).limit(limit))
        return [(ticket, caller) for ticket, caller in self.session.execute(query)]

    def counts(self, statuses: tuple[str, ...], now: dt.datetime, urgent_share: float
               ) -> dict[str, int]:
        """How many of all tickets in these statuses are overdue, urgent (under
        ``urgent_share`` of their target left) and fine."""
        target = target_expression(self.dialect)
        now_value = _now_value(self.dialect, now)
        if self.dialect == "postgresql":
            share = func.make_interval(0, 0, 0, 0, 0, 0,
                                       Ticket.target_response_minutes * 60.0 * urgent_share)
            urgent_from = target - share
        else:
            urgent_from = target - cast(Ticket.target_response_minutes, Float) * urgent_share / 1440.0
        overdue = func.count().filter(target <= now_value)
        urgent = func.count().filter(and_(target > now_value, urgent_from < now_value))
        row = self.session.execute(
            select(func.count(), overdue, urgent).select_from(Ticket)
            .where(Ticket.status.in_(statuses))).one()
        total, late, close = (int(v or 0) for v in row)
        return {"overdue": late, "urgent": close, "fine": total - late - close, "total": total}
