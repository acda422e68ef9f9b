"""Help-desk push jobs: written in the same transaction as the ticket change they carry,
delivered later by the sender (``outbox drain``), in order per ticket.

A job is ``pending`` until a sender claims it (``sending``, with a lease), then ``sent`` or
``failed``; a transient failure puts it back to ``pending`` with a later ``next_attempt_at``.
Jobs of one ticket go out one at a time in id order: a job waits while an earlier job of
its ticket is not sent (an update queued before its create went through waits for it).

The queueing functions are single INSERT statements that run on a Session or a Connection.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, aliased, mapped_column

from ..domain.digits import ascii_number
from .engineers import DeskAction
from .models import Base, Call, Ticket, UTCDateTime

# Ticket statuses an update is pushed for (a move to in_queue or back to open is not).
PUSHED_STATUSES = ("callback_requested", "connected", "closed")


class HelpdeskJob(Base):
    """One push to the help desk: the create of a ticket, or one change to it."""

    __tablename__ = "helpdesk_jobs"
    __table_args__ = (
        UniqueConstraint("ticket_id", "dedupe"),
        Index("ix_helpdesk_jobs_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "create" or "update"
    event: Mapped[str] = mapped_column(String(32))  # created, priority, callback_requested, ...
    # "create" for the create job: one per ticket however often it is queued.
    dedupe: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[str | None] = mapped_column(Text)  # JSON: the change as queued
    # JSON: the request as first built, so every retry sends the same thing.
    payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # every try
    failures: Mapped[int] = mapped_column(Integer, default=0)  # 5xx and time-outs in a row
    last_error: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(32))  # the help desk's ticket id
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class HelpdeskDelivery(Base):
    """A webhook delivery from the help desk that changed a ticket, by a hash of its
    signature. The same bytes sent again while the signature is fresh (a replay) find it
    here and change nothing; an older change never comes back over a newer one that way.
    Rows go after ``DELIVERY_MEMORY``, once the signature itself is refused as too old.

    A row keyed ``signed:<ticket id>`` (``NEWEST``) holds instead, as its time, when the
    newest delivery seen for that ticket was signed: the help desk does not deliver in
    order, and one signed before it shows a state the ticket has left there. It goes
    after the same ``DELIVERY_MEMORY``: a delivery signed before it and still fresh
    arrives well inside that."""

    __tablename__ = "helpdesk_deliveries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


DELIVERY_MEMORY = dt.timedelta(minutes=15)  # three times the signature's five minutes
# The largest push id: the column is a 32-bit integer on PostgreSQL, which refuses (with an
# error, not an empty answer) a larger number compared with it.
LARGEST_JOB_ID = 2**31 - 1


def job_id(text: str) -> int | None:
    """A push id as an operator types it ("42"), or None if it cannot be one."""
    text = text.strip()
    value = ascii_number(text, at_most=10)
    if value is None:
        return None
    return value if 1 <= value <= LARGEST_JOB_ID else None


def first_delivery(db, key: str, now: dt.datetime) -> bool:
    """Record a delivery about to be applied (inside the transaction that applies it):
    False when it was applied before. Forgets deliveries older than DELIVERY_MEMORY."""
    table = HelpdeskDelivery.__table__
    db.execute(delete(table).where(table.c.received_at < now - DELIVERY_MEMORY))
    dialect_insert = pg_insert if _dialect(db) == "postgresql" else sqlite_insert
    # RETURNING, not the row count: through the session, PostgreSQL's came back -1.
    inserted = db.execute(dialect_insert(table).values(key=key, received_at=now)
                          .on_conflict_do_nothing().returning(table.c.key))
    return inserted.first() is not None


NEWEST = "signed:{}"


def newest_delivery(db, ticket_id: int, signed_at: dt.datetime) -> bool:
    """Record that a delivery about this ticket was signed at ``signed_at``: False when
    one signed later was seen before it (this one shows an older state of the ticket
    there), True otherwise, and the newest time is kept."""
    table = HelpdeskDelivery.__table__
    key = NEWEST.format(ticket_id)
    signed_at = signed_at.astimezone(dt.timezone.utc)
    seen = db.execute(select(table.c.received_at).where(table.c.key == key)).scalar()
    if seen is not None and seen > signed_at:
        return False
    dialect_insert = pg_insert if _dialect(db) == "postgresql" else sqlite_insert
    insert_row = dialect_insert(table).values(key=key, received_at=signed_at)
    db.execute(insert_row.on_conflict_do_update(
        index_elements=[table.c.key], set_={"received_at": insert_row.excluded.received_at},
        where=table.c.received_at < insert_row.excluded.received_at))
    return True


# -- queueing (the webhook's and the desk's transaction) -----------------------------------


def _dialect(db) -> str:
    """The database of a Session or a Connection."""
    return (db.get_bind() if hasattr(db, "get_bind") else db).dialect.name


def create_statement(db, ticket_id: int, now: dt.datetime):
    """INSERT the create job of a ticket unless it has one (ON CONFLICT DO NOTHING)."""
    dialect_insert = pg_insert if _dialect(db) == "postgresql" else sqlite_insert
    return (dialect_insert(HelpdeskJob)
            .values(ticket_id=ticket_id, kind="create", event="created", dedupe="create",
                    status="pending", attempts=0, failures=0, created_at=now,
                    next_attempt_at=now)
            .on_conflict_do_nothing())


def queue_create(db, ticket_id: int, now: dt.datetime) -> None:
    """Queue the create of a ticket in the help desk (once per ticket). ``db`` is the
    caller's Session or Connection: the job commits or rolls back with the ticket."""
    db.execute(create_statement(db, ticket_id, now))


def update_statement(ticket_id: int, event: str, now: dt.datetime, data: dict):
    return insert(HelpdeskJob).values(
        ticket_id=ticket_id, kind="update", event=event, data=json.dumps(data, sort_keys=True),
        status="pending", attempts=0, failures=0, created_at=now, next_attempt_at=now)


def queue_status(db, ticket, now: dt.datetime, callback_number: str | None = None) -> None:
    """Queue an update for a ticket that just moved, if its new status is one the help
    desk hears about (callback requested, connected, closed). ``ticket`` needs ``id`` and
    ``status``; the number to call back is ``callback_number``, else the ticket's own."""
    if ticket is None or ticket.status not in PUSHED_STATUSES:
        return
    data = {"status": str(ticket.status)}
    callback_number = callback_number or getattr(ticket, "callback_number", None)
    if ticket.status == "callback_requested" and callback_number:
        data["callback_number"] = callback_number
    db.execute(update_statement(ticket.id, ticket.status, now, data))


def queue_changes(db, ticket, before: tuple[int, str], now: dt.datetime) -> None:
    """Queue what the desk changed: ``before`` is (priority, status) before the change."""
    priority, status = before
    if ticket.priority != priority:
        db.execute(update_statement(ticket.id, "priority", now, {
            "priority": ticket.priority, "previous": priority,
            "target_response_minutes": ticket.target_response_minutes}))
    if ticket.status != status:
        queue_status(db, ticket, now)


# -- the sender's side -------------------------------------------------------------------


class HelpdeskJobRepository:
    def __init__(self, session):
        self.session = session

    def claim(self, limit: int, now: dt.datetime, lease: dt.timedelta) -> list[HelpdeskJob]:
        """Up to ``limit`` due jobs, each the oldest unsent job of its ticket, marked
        ``sending``; a job claimed longer ago than ``lease`` (its sender died) is due again."""
        earlier = aliased(HelpdeskJob)
        blocked = exists().where(earlier.ticket_id == HelpdeskJob.ticket_id,
                                 earlier.id < HelpdeskJob.id, earlier.status != "sent")
        due = or_(and_(HelpdeskJob.status == "pending", HelpdeskJob.next_attempt_at <= now),
                  and_(HelpdeskJob.status == "sending", HelpdeskJob.claimed_at < now - lease))
        query = (select(HelpdeskJob).where(due, ~blocked).order_by(HelpdeskJob.id).limit(limit))
        if _dialect(self.session) == "postgresql":
            query = query.with_for_update(skip_locked=True, of=HelpdeskJob)
        jobs = list(self.session.scalars(query))
        for job in jobs:
            job.status, job.claimed_at = "sending", now
            job.attempts += 1
            job.first_attempt_at = job.first_attempt_at or now
        return jobs

    def context(self, ticket_id: int) -> tuple[Ticket, Call]:
        """The ticket and its call, to build a push from."""
        return self.session.execute(
            select(Ticket, Call).join(Call, Call.call_sid == Ticket.call_sid)
            .where(Ticket.id == ticket_id)).one()

    def remote_id(self, ticket_id: int) -> str | None:
        return self.session.scalar(
            select(HelpdeskJob.remote_id).where(HelpdeskJob.ticket_id == ticket_id,
                                                HelpdeskJob.dedupe == "create"))

    def echoes_own_push(self, ticket_id: int, current: int, shown: int, their_name: str,
                        closing: bool = False) -> bool:
        """Whether a help desk showing priority ``shown`` is only echoing a priority the
        phone line itself pushed, while a newer desk change, the ticket's ``current``
        priority, still waits to be pushed.

        Every priority change pushed counts: Zendesk's trigger fires on the phone line's
        own updates too, and its delivery can come late, after later pushes. The create's
        priority counts only in a delivery that solves or closes the ticket (``closing``;
        the trigger may have fired for the status alone) and while the create is the
        newest push sent: the priority the help desk still has until the waiting change
        gets there. A create fires no "ticket updated" trigger, so otherwise its priority
        shown again is an agent's choice. Only pushes sent since the help desk itself
        (``their_name`` in the history) last changed the priority count: its agent may
        have set one of those levels back."""
        waiting = self._newest_priority_job(ticket_id, HelpdeskJob.status.in_(
            ("pending", "sending")))
        if waiting != current:
            return False
        changed_there = self.session.scalar(
            select(func.max(DeskAction.at)).where(DeskAction.ticket_id == ticket_id,
                                                  DeskAction.actor == their_name,
                                                  DeskAction.action == "priority"))
        rows = self.session.execute(
            select(HelpdeskJob.dedupe, HelpdeskJob.data, HelpdeskJob.payload,
                   HelpdeskJob.sent_at)
            .where(HelpdeskJob.ticket_id == ticket_id, HelpdeskJob.status == "sent",
                   HelpdeskJob.last_error.is_(None),
                   or_(HelpdeskJob.event == "priority", HelpdeskJob.dedupe == "create"))
            .order_by(HelpdeskJob.id)).all()
        pushed = set()
        for row in rows:
            if row.sent_at is None or (changed_there is not None
                                       and row.sent_at <= changed_there):
                continue
            if row.dedupe != "create":
                pushed.add(_level(row.data))
            elif closing and row is rows[-1]:
                pushed.add(_level(row.payload))
        return shown in pushed

    def _newest_priority_job(self, ticket_id: int, *where) -> int | None:
        """The level the newest priority change of this ticket matching ``where`` sets."""
        return _level(self.session.scalar(
            select(HelpdeskJob.data)
            .where(HelpdeskJob.ticket_id == ticket_id, HelpdeskJob.event == "priority", *where)
            .order_by(HelpdeskJob.id.desc()).limit(1)))

    def has_create(self, ticket_id: int) -> bool:
        return self.session.scalar(
            select(HelpdeskJob.id).where(HelpdeskJob.ticket_id == ticket_id,
                                         HelpdeskJob.dedupe == "create")) is not None

    def defer_pending(self, until: dt.datetime) -> int:
        """Hold every pending job until ``until`` at the earliest (the help desk asked for
        a pause); how many moved."""
        return self.session.execute(
            update(HelpdeskJob)
            .where(HelpdeskJob.status == "pending", HelpdeskJob.next_attempt_at < until)
            .values(next_attempt_at=until)).rowcount

    def priority_of(self, ticket_id: int) -> int | None:
        return self.session.scalar(select(Ticket.priority).where(Ticket.id == ticket_id))

    def renew(self, job_id: int, claimed_at: dt.datetime, now: dt.datetime) -> bool:
        """Renew this sender's claim on one job (taken at ``claimed_at``) to ``now``, just
        before pushing it: False if another sender has taken it since, and nothing is
        written."""
        return self._while_held(job_id, claimed_at, {"claimed_at": now})

    def record(self, job_id: int, claimed_at: dt.datetime | None, **values) -> bool:
        """Store a result, unless another sender has claimed the job since (its lease ran
        out): False then, and nothing is written."""
        return self._while_held(job_id, claimed_at, values)

    def _while_held(self, job_id: int, claimed_at: dt.datetime | None, values: dict) -> bool:
        result = self.session.execute(
            update(HelpdeskJob)
            .where(HelpdeskJob.id == job_id, HelpdeskJob.status == "sending",
                   HelpdeskJob.claimed_at == claimed_at)
            .values(**values).execution_options(synchronize_session=False))
        return result.rowcount == 1

    def retry(self, job_id: int | None, now: dt.datetime) -> int:
        """Put failed jobs (one, or all with ``job_id`` None) back in the queue, due now."""
        where = [HelpdeskJob.status == "failed"]
        if job_id is not None:
            where.append(HelpdeskJob.id == job_id)
        result = self.session.execute(
            update(HelpdeskJob).where(*where)
            .values(status="pending", failures=0, next_attempt_at=now, claimed_at=None)
            .execution_options(synchronize_session=False))
        return result.rowcount

    def get(self, job_id: int) -> HelpdeskJob | None:
        return self.session.get(HelpdeskJob, job_id)

    # -- what operators see ------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        rows = self.session.execute(
            select(HelpdeskJob.status, func.count()).group_by(HelpdeskJob.status))
        counts = {"pending": 0, "sending": 0, "sent": 0, "failed": 0}
        counts.update({status: n for status, n in rows})
        return counts

    def listing(self, statuses: tuple[str, ...], limit: int = 100,
                newest_first: bool = False) -> list[tuple[HelpdeskJob, str]]:
        """Jobs in these statuses with their tickets' numbers."""
        order = HelpdeskJob.id.desc() if newest_first else HelpdeskJob.id.asc()
        return [(job, number) for job, number in self.session.execute(
            select(HelpdeskJob, Ticket.number).join(Ticket, Ticket.id == HelpdeskJob.ticket_id)
            .where(HelpdeskJob.status.in_(statuses)).order_by(order).limit(limit))]

    def report(self, ticket_url, limit: int = 50) -> dict:
        """Counts, pending and failed pushes (with the help desk's error) and the latest
        sent, each sent create linked with ``ticket_url(remote_id)``."""
        report = {
            "counts": self.counts(),
            "pending": [job_dict(j, n) for j, n in self.listing(("pending", "sending"), limit)],
            "failed": [job_dict(j, n) for j, n in self.listing(("failed",), limit)],
            "sent": [job_dict(j, n) for j, n in self.listing(("sent",), 10, newest_first=True)],
        }
        for job in report["sent"]:
            job["url"] = ticket_url(job["remote_id"]) if job["remote_id"] else None
        return report

    def for_ticket(self, ticket_id: int) -> dict:
        """A ticket's standing in the help desk: its remote id, the create's status and
        error, and how many pushes wait or failed."""
        jobs = list(self.session.scalars(
            select(HelpdeskJob).where(HelpdeskJob.ticket_id == ticket_id)
            .order_by(HelpdeskJob.id)))
        create = next((j for j in jobs if j.dedupe == "create"), None)
        failed = [j for j in jobs if j.status == "failed"]
        return {
            "id": create.remote_id if create is not None else None,
            "status": create.status if create is not None else "not_queued",
            "pending": sum(j.status in ("pending", "sending") for j in jobs),
            "failed": len(failed),
            "error": failed[0].last_error if failed else None,
        }


def _level(text: str | None) -> int | None:
    """The priority a job's JSON (a change as queued, or a create's request) carries."""
    try:
        level = json.loads(text).get("priority") if text else None
    except (ValueError, AttributeError):
        level = None
    return level if isinstance(level, int) and not isinstance(level, bool) else None


def job_dict(job: HelpdeskJob, number: str) -> dict:
    def iso(moment):
        return moment.isoformat() if moment is not None else None

    return {"id": job.id, "ticket": number, "kind": job.kind, "event": job.event,
            "status": job.status, "attempts": job.attempts, "error": job.last_error,
            "remote_id": job.remote_id, "created_at": iso(job.created_at),
            "next_attempt_at": iso(job.next_attempt_at) if job.status == "pending" else None,
            "sent_at": iso(job.sent_at)}


# -- what the desk, the API, the CLI and /metrics show -------------------------------------


def helpdesk_counts(storage) -> dict[str, int]:
    """Pushes by status, read without the write lock."""
    with storage.reading() as session:
        return HelpdeskJobRepository(session).counts()


def status_report(storage, config, limit: int = 50) -> dict:
    """The help desk's state for the API and ``helpdesk status``: whether one is
    connected, and then its kind, address and ``HelpdeskJobRepository.report``."""
    if config is None:
        return {"connected": False}
    with storage.reading() as session:
        report = HelpdeskJobRepository(session).report(config.ticket_url, limit)
    return {"connected": True, "kind": config.kind, "url": config.base_url, **report}
