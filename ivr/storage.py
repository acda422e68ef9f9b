"""Storage: engine, transactions, migrations and the repositories of calls, tickets,
accounts and the SMS outbox. All SQL of the service lives here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import weakref
from pathlib import Path
from typing import Callable, Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Engine,
    case,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .flow import Caller, CallState, Outcome, Step, TicketInfo
from .lifecycle import can_move
from .models import Account, Call, Lockout, OutboxMessage, Ticket

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Storage:
    """One engine per process; sessions are short and each is one transaction."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = make_url(url)
        self.engine = _create_engine(self.url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # A worker forked from a process that already connected (gunicorn --preload) must
        # open its own connections rather than share the parent's sockets or SQLite handles.
        engine = weakref.ref(self.engine)
        os.register_at_fork(after_in_child=lambda: engine() and engine().dispose(close=False))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration (idempotent)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(select(1))

    def insert(self, table):
        """An INSERT that can say ON CONFLICT DO NOTHING on this database."""
        return (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url, echo: bool) -> Engine:
    if url.get_backend_name() != "sqlite":
        # A short connect timeout: a caller must hear something within Twilio's 15 seconds.
        return create_engine(url, echo=echo, hide_parameters=True, pool_pre_ping=True,
                             pool_size=5, max_overflow=5,
                             connect_args={"connect_timeout": 3})
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # hide_parameters: an SQL error in a log never shows the PMI, numbers or message bodies.
    engine = create_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 5})

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE itself: write transactions
        # take the lock up front instead of failing to upgrade a read lock later.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # Wait for another worker's write at most 5 s: Twilio gives up on a webhook at 15 s.
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# -- calls -------------------------------------------------------------------------------


class CallRepository:
    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def get(self, call_sid: str, *, for_update: bool = True) -> Call | None:
        """The call, locked for this transaction on PostgreSQL (SQLite's BEGIN IMMEDIATE
        already holds the write lock)."""
        lock = for_update and self.storage.dialect == "postgresql"
        return self.session.get(Call, call_sid, with_for_update=lock or None)

    def start(self, *, call_sid: str, account_sid: str | None, dialed_number: str, region: str,
              language: str, caller_number: str, can_text: bool, now: dt.datetime) -> Call:
        """The call's record, created by the first webhook that sees it."""
        self.session.execute(
            self.storage.insert(Call)
            .values(
                call_sid=call_sid, account_sid=account_sid, dialed_number=dialed_number,
                region=region, language=language, caller_number=caller_number,
                can_text=can_text, step=Step.MENU.value, english=False, attempts=0,
                auth_failures=0, steps_reached="", started_at=now, updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        call = self.get(call_sid)
        assert call is not None
        return call

    @staticmethod
    def state(call: Call, ticket: Ticket | None) -> CallState:
        caller = None
        if call.account_id is not None:
            caller = Caller(call.account_id, call.user_email or "", call.plan or "", call.role or "")
        return CallState(
            call_sid=call.call_sid,
            can_text=call.can_text,
            step=Step(call.step),
            english=call.english,
            attempts=call.attempts,
            auth_failures=call.auth_failures,
            pmi=call.pending_pmi,
            caller=caller,
            outcome=Outcome(call.outcome) if call.outcome else None,
            ticket=ticket_info(ticket) if ticket is not None else None,
            transfer_to=call.transfer_to,
            steps_reached=[s for s in call.steps_reached.split(",") if s],
        )

    @staticmethod
    def save(call: Call, state: CallState, now: dt.datetime) -> None:
        call.step = state.step.value
        call.english = state.english
        call.attempts = state.attempts
        call.auth_failures = state.auth_failures
        call.pending_pmi = state.pmi
        if state.caller is not None:
            call.account_id = state.caller.account_id
            call.user_email = state.caller.user_email
            call.plan = state.caller.plan
            call.role = state.caller.role
        if state.outcome is not None and call.outcome in (None, Outcome.ABANDONED.value):
            call.outcome = state.outcome.value
            call.abandoned_at_step = None
        call.transfer_to = state.transfer_to
        call.steps_reached = ",".join(state.steps_reached)[:255]
        call.updated_at = now

    def record_status(self, call_sid: str, status: str, duration: int | None,
                      now: dt.datetime, sequence: int | None = None) -> tuple[Call | None, bool]:
        """Apply a status callback, unless it is older than one already applied: callbacks
        may arrive out of order and a call never moves backwards. Returns the call and
        whether this callback marked it abandoned."""
        call = self.get(call_sid)
        if call is None:
            return None, False
        if sequence is not None and call.status_sequence is not None \
                and sequence <= call.status_sequence:
            return call, False
        if call.twilio_status in FINAL_STATUSES and status not in FINAL_STATUSES:
            return call, False
        abandoned = False
        if sequence is not None:
            call.status_sequence = sequence
        call.twilio_status = status
        if duration is not None:
            call.duration_seconds = duration
        if status in FINAL_STATUSES:
            call.ended_at = call.ended_at or now
            if call.outcome is None:
                call.outcome = Outcome.ABANDONED.value
                call.abandoned_at_step = call.step
                abandoned = True
        call.updated_at = now
        return call, abandoned

    def record_queue_result(self, call_sid: str, result: str, seconds: int | None,
                            now: dt.datetime) -> Call | None:
        call = self.get(call_sid)
        if call is None:
            return None
        call.queue_result = result
        call.queue_seconds = seconds
        call.updated_at = now
        return call


FINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")


# -- tickets -----------------------------------------------------------------------------


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


def ticket_info(ticket: Ticket) -> TicketInfo:
    return TicketInfo(ticket.number, ticket.priority, ticket.target_response_minutes)


# -- accounts ----------------------------------------------------------------------------


class AccountRepository:
    def __init__(self, session: Session):
        self.session = session

    def by_id(self, ref: int) -> Account | None:
        return self.session.get(Account, ref)

    def by_pmi(self, pmi: str) -> Account | None:
        return self.session.scalars(select(Account).where(Account.pmi == pmi)).first()

    def by_emails(self, emails: list[str]) -> dict[str, Account]:
        found = self.session.scalars(select(Account).where(Account.user_email.in_(emails)))
        return {account.user_email: account for account in found}

    def by_pmis(self, pmis: list[str]) -> dict[str, Account]:
        found = self.session.scalars(select(Account).where(Account.pmi.in_(pmis)))
        return {account.pmi: account for account in found}

    def add(self, account: Account) -> None:
        self.session.add(account)


# -- lockouts ----------------------------------------------------------------------------


class LockoutRepository:
    """Failed verifications per PMI and per caller, counted atomically in the database."""

    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def locked(self, keys: list[str], now: dt.datetime) -> bool:
        return self.session.scalar(
            select(func.count()).select_from(Lockout)
            .where(Lockout.key.in_(keys), Lockout.locked_until > now)
        ) > 0

    def fail(self, key: str, now: dt.datetime, *, threshold: int,
             window: dt.timedelta | None, lock_for: Callable[[int], dt.timedelta]) -> bool:
        """Count one failure; lock the key when it reaches the threshold. True if it did."""
        insert = self.storage.insert(Lockout).values(
            key=key, failures=1, window_started_at=now, lock_count=0, attempts_while_locked=0,
            updated_at=now)
        if window is None:
            failures = Lockout.failures + 1
            started = Lockout.window_started_at
        else:
            expired = Lockout.window_started_at <= now - window
            failures = case((expired, 1), else_=Lockout.failures + 1)
            started = case((expired, now), else_=Lockout.window_started_at)
        row = self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[Lockout.key],
                set_={"failures": failures, "window_started_at": started, "updated_at": now},
            ).returning(Lockout.failures, Lockout.lock_count)
        ).one()
        if row.failures < threshold:
            return False
        # Only the request that finds the count still at or over the threshold locks it.
        locked = self.session.execute(
            update(Lockout)
            .where(Lockout.key == key, Lockout.failures >= threshold)
            .values(failures=0, lock_count=Lockout.lock_count + 1,
                    locked_until=now + lock_for(row.lock_count), window_started_at=now)
            .returning(Lockout.locked_until)
        ).first()
        return locked is not None

    def attempt_while_locked(self, key: str, now: dt.datetime) -> None:
        """Count a try refused by a lock. The same upsert as a failure's, so a refusal for
        a lock costs what a refusal for a wrong key costs."""
        self.session.execute(
            self.storage.insert(Lockout).values(
                key=key, failures=0, window_started_at=now, lock_count=0,
                attempts_while_locked=1, updated_at=now,
            ).on_conflict_do_update(
                index_elements=[Lockout.key],
                set_={"attempts_while_locked": Lockout.attempts_while_locked + 1,
                      "updated_at": now},
            ).returning(Lockout.failures, Lockout.lock_count)
        ).one()

    def clear(self, key: str) -> bool:
        return self.session.execute(delete(Lockout).where(Lockout.key == key)).rowcount > 0

    def purge(self, before: dt.datetime, now: dt.datetime) -> int:
        """Forget failure counts untouched since ``before`` that hold no lock now."""
        return self.session.execute(
            delete(Lockout).where(Lockout.updated_at < before,
                                  or_(Lockout.locked_until.is_(None), Lockout.locked_until <= now))
        ).rowcount

    def current(self, now: dt.datetime) -> list[Lockout]:
        return list(self.session.scalars(
            select(Lockout).where(Lockout.locked_until > now).order_by(Lockout.locked_until)
        ))


# -- outbox ------------------------------------------------------------------------------


class OutboxRepository:
    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def queue(self, *, call_sid: str, template: str, to_number: str, body: str,
              now: dt.datetime) -> None:
        """Queue a message once per call and template, however often it is asked for."""
        self.session.execute(
            self.storage.insert(OutboxMessage)
            .values(call_sid=call_sid, template=template, to_number=to_number, body=body,
                    status="pending", attempts=0, created_at=now)
            .on_conflict_do_nothing()
        )

    def claim(self, limit: int, now: dt.datetime, stale_after: dt.timedelta) -> list[OutboxMessage]:
        """Take up to ``limit`` messages to send, marking them "sending"; messages a sender
        claimed longer ago than ``stale_after`` (it died mid-send) are taken again."""
        waiting = or_(OutboxMessage.status == "pending",
                      (OutboxMessage.status == "sending")
                      & (OutboxMessage.claimed_at < now - stale_after))
        query = select(OutboxMessage).where(waiting).order_by(OutboxMessage.id).limit(limit)
        if self.storage.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        messages = list(self.session.scalars(query))
        for message in messages:
            message.status, message.claimed_at = "sending", now
            message.attempts += 1
        return messages

    def record(self, message_id: int, *, status: str, reason: str | None = None,
               twilio_sid: str | None = None, sent_at: dt.datetime | None = None) -> None:
        self.session.execute(
            update(OutboxMessage).where(OutboxMessage.id == message_id)
            .values(status=status, reason=reason, twilio_sid=twilio_sid, sent_at=sent_at)
        )

    def for_call(self, call_sid: str) -> list[OutboxMessage]:
        return list(self.session.scalars(
            select(OutboxMessage).where(OutboxMessage.call_sid == call_sid).order_by(OutboxMessage.id)
        ))

    def depth(self) -> int:
        return self.session.scalar(
            select(func.count()).select_from(OutboxMessage)
            .where(OutboxMessage.status.in_(("pending", "sending")))
        ) or 0


# -- support desk ------------------------------------------------------------------------


class DeskRepository:
    """The support desk's queries: tickets and calls by filter and page, report figures."""

    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def ticket(self, ref: str, *, for_update: bool = False) -> tuple[Ticket, str | None] | None:
        """A ticket by its 8-digit number, else by its id, with its caller's number."""
        if not ref.isdigit() or len(ref) > 16:
            return None
        base = select(Ticket, Call.caller_number).join(Call, Call.call_sid == Ticket.call_sid)
        if for_update and self.storage.dialect == "postgresql":
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

    def call_start_times(self, since: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
        """When each call of [since, until) started (bucketed by the caller, so every
        database reads hours in UTC alike)."""
        return list(self.session.scalars(
            select(Call.started_at).where(Call.started_at >= since, Call.started_at < until)
        ))
