"""The database engine: connections tuned per database, transactions and migrations."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Callable, Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Engine,
    create_engine,
    event,
)
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from ..domain.clock import utcnow  # noqa: F401  re-exported for the storage layer
from ..domain.phones import redact_numbers
from .sql import driver_error

log = logging.getLogger("ivr.storage")

MIGRATIONS = Path(__file__).parent / "migrations"

# How long a write waits for another worker's (SQLite's busy timeout): a caller must hear
# something within Twilio's 15 s, and past this the service takes the outage path.
LOCK_WAIT_SECONDS = 5.0

# SQLite's WAL is copied back into the database file (a checkpoint, with an fsync) by a
# thread of each process every CHECKPOINT_SECONDS, not by whichever webhook's commit
# happens to cross SQLite's threshold: that commit paid 5-50 ms for it. A connection still
# checkpoints by itself past WAL_LIMIT_PAGES (40 MB), should that thread ever stop.
CHECKPOINT_SECONDS = 1.0
WAL_LIMIT_PAGES = 10_000

# A statement still running after this is cancelled (PostgreSQL's statement_timeout) and
# the database counts as unreachable. Twilio waits 15 s for a webhook's answer, then plays
# its own fallback, while the transaction could still go on to commit a ticket that caller
# never heard; cancelled, the webhook takes the outage path in time (a verified caller is
# routed with the ticket spooled). Longer than LOCK_WAIT_SECONDS, so a lock wait is still
# reported as one. Operator work that may run long lifts it (``long_running``).
STATEMENT_SECONDS = 8.0

# Errors that mean the database cannot be reached or written, not that a request was bad:
# a connection of the process's pool not had within LOCK_WAIT_SECONDS (every one busy with
# a slow statement) is one too, so a status callback is spooled, not lost.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)


def schema_missing(exc: BaseException) -> bool:
    """Whether an error says the database has no tables yet, or older ones (``init-db``
    not run, a restore under way): SQLite's "no such table", PostgreSQL's "relation ...
    does not exist" or a missing column."""
    reason = str(getattr(exc, "orig", None) or exc)
    return isinstance(exc, (OperationalError, ProgrammingError)) and (
        "no such table" in reason or "no such column" in reason
        or ("does not exist" in reason and ("relation" in reason or "column" in reason)))


def statement_cancelled(exc: BaseException) -> bool:
    """Whether an error is PostgreSQL cancelling a statement that ran past its time limit
    (``statement_timeout``, STATEMENT_SECONDS unless the URL's options say otherwise): the
    database answered, but too slowly for the limit, which is not its being unreachable."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(exc, OperationalError) and code == "57014" \
        and "statement timeout" in str(orig)


def database_error(exc: BaseException) -> tuple[str, str]:
    """An error of the database as an operator's line may quote it: the driver's error
    class and the first line of its text, at most 200 characters, with every long number
    cut to its last four digits (the text is the database's, not the service's own, and may
    quote a row's caller number or PMI; the log's formatter cuts numbers only in
    tracebacks)."""
    error = getattr(exc, "orig", None) or exc
    lines = str(error).strip().splitlines()
    return type(error).__name__, redact_numbers(lines[0][:200]) if lines else ""


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error is the database's state rather than the work asked of it: it
    cannot be reached, or it has no schema yet. Work that meets it is to be done again
    later, not given up."""
    return isinstance(exc, DATABASE_DOWN) or schema_missing(exc)


# Sent in a long-running transaction on PostgreSQL: its statements have no time limit.
NO_STATEMENT_LIMIT = "SET LOCAL statement_timeout = 0"


class UpgradeRefused(RuntimeError):
    """The schema upgrade stopped on data only the operator can set right; nothing was
    changed, and the message says what to do."""


class Storage:
    """One engine per process; sessions are short and each is one transaction."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = make_url(url)
        self.engine = _create_engine(self.url, echo=echo)
        self.checkpointer = _Checkpointer.for_engine(self.engine)
        if self.checkpointer is not None:  # a storage dropped without dispose() stops it too
            weakref.finalize(self, self.checkpointer.stop)
        # A worker forked from a process that already connected (gunicorn --preload) must
        # open its own connections rather than share the parent's sockets or SQLite handles.
        engine = weakref.ref(self.engine)
        os.register_at_fork(after_in_child=lambda: engine() and engine().dispose(close=False))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(self, *, readonly: bool = False, long_running: bool = False):
        """One transaction and the repositories working in it (see ``uow.py``). A
        read-only one never takes SQLite's write lock, so it cannot delay a webhook. A
        ``long_running`` one (operator commands over the whole database) has no
        STATEMENT_SECONDS limit; it costs one statement more on PostgreSQL."""
        from .uow import UnitOfWork

        return UnitOfWork(self, readonly=readonly, long_running=long_running)

    @contextlib.contextmanager
    def transaction(self, *, long_running: bool = False) -> Iterator[Session]:
        """An ORM session in one write unit of work: committed at the end, rolled back on an
        error, and begun like every unit of work (a connection the server dropped is
        replaced before any work)."""
        with self.unit_of_work(long_running=long_running) as uow:
            yield uow.session

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """An ORM session in a read-only unit of work: never SQLite's write lock, so a
        desk page or a scrape cannot delay a webhook."""
        with self.unit_of_work(readonly=True) as uow:
            yield uow.session

    def upgrade(self, pmi_lockout_digest: Callable[[str], str] | None = None) -> None:
        """Create or upgrade the schema to the newest migration (idempotent).
        ``pmi_lockout_digest`` is the pepper's keyed hash of a PMI
        (``HostKeyHasher.pmi_lockout_digest``): migration 0015 needs it to rekey failure
        counters kept under clear PMIs, and refuses to go on without it when there are
        any."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["pmi_lockout_digest"] = pmi_lockout_digest
        sqlite = self.dialect == "sqlite"
        with self.engine.connect() as connection:
            # SQLite changes a column by copying the table and dropping the old one, which
            # its foreign keys refuse while any row points at it. They are turned off for
            # the upgrade (only possible outside a transaction), checked at its end, and
            # turned on again before the connection goes back to the pool.
            raw = connection.connection.dbapi_connection if sqlite else None
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    if self.dialect == "postgresql":  # a table rewritten may take minutes
                        connection.exec_driver_sql(NO_STATEMENT_LIMIT)
                    cfg.attributes["connection"] = connection
                    command.upgrade(cfg, "head")
                    if raw is not None:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise UpgradeRefused(f"the upgrade left rows whose foreign "
                                                 f"keys point nowhere: {broken[:5]}")
            finally:
                if raw is not None:
                    raw.execute("PRAGMA foreign_keys=ON")

    def schema_revisions(self) -> tuple[str | None, str, bool]:
        """The database's schema revision (None: no schema yet), the newest migration's,
        and whether the database's is one of this version's migrations (False: a newer
        version has upgraded it)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        scripts = ScriptDirectory.from_config(cfg)
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        known = current is None or any(s.revision == current for s in scripts.walk_revisions())
        return current, scripts.get_current_head(), known

    def insert(self, table):
        """An INSERT that can say ON CONFLICT DO NOTHING on this database."""
        return (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()


class _PsycopgDialect(PGDialect_psycopg):
    """psycopg, with the transaction begun by SQLAlchemy's ``begin`` rather than by the
    driver. Left to itself, psycopg sends BEGIN as its own round trip just before a
    transaction's first statement, where a connection the server has dropped (a restart,
    an idle timeout) fails halfway through a webhook. Here the connection stays in the
    driver's autocommit mode and ``Connection.begin()`` sends the BEGIN: the same round
    trip, taken where ``UnitOfWork`` can still retry on a fresh connection, so it serves as
    the liveness check that ``pool_pre_ping`` would otherwise add as one more round trip
    (and about 0.4 ms of CPU on each side) to every request. Isolation levels and read-only
    set through SQLAlchemy are honoured in that BEGIN; AUTOCOMMIT sends none."""

    supports_statement_cache = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._without_transactions: weakref.WeakSet = weakref.WeakSet()

    def on_connect(self):
        configure = super().on_connect()

        def connect(dbapi_connection):
            configure(dbapi_connection)
            dbapi_connection.autocommit = True

        return connect

    def set_isolation_level(self, dbapi_connection, level):
        super().set_isolation_level(dbapi_connection, level)
        if level == "AUTOCOMMIT":
            self._without_transactions.add(dbapi_connection)
        else:
            self._without_transactions.discard(dbapi_connection)
        dbapi_connection.autocommit = True

    def do_begin(self, dbapi_connection):
        # SQLAlchemy hands ``set_isolation_level`` the driver's connection but ``do_begin``
        # the pool's proxy of it: the set holds the former.
        if getattr(dbapi_connection, "dbapi_connection", dbapi_connection) \
                in self._without_transactions:
            return
        statement = "BEGIN"
        if dbapi_connection.isolation_level is not None:
            statement += " ISOLATION LEVEL " + \
                dbapi_connection.isolation_level.name.replace("_", " ")
        if dbapi_connection.read_only is not None:
            statement += " READ ONLY" if dbapi_connection.read_only else " READ WRITE"
        dbapi_connection.execute(statement.encode())


registry.register("postgresql.ivr_psycopg", __name__, "_PsycopgDialect")


def _create_engine(url, echo: bool) -> Engine:
    if url.get_backend_name() != "sqlite":
        if url.get_driver_name() == "psycopg":
            url = url.set(drivername="postgresql+ivr_psycopg")
        # A caller must hear something within Twilio's 15 seconds: a short connect
        # timeout, and a lock not granted within LOCK_WAIT_SECONDS or a statement not done
        # within STATEMENT_SECONDS is an error (as SQLite's busy timeout makes a lock
        # wait), which the service answers through its outage path instead of waiting on
        # a stuck transaction or a slow database for as long as it lasts. Set as the
        # connection opens: no statement more for any request. They come before the
        # URL's own options: PostgreSQL keeps the last of a setting given twice, so an
        # operator's own -c lock_timeout= or -c statement_timeout= there is the one in force.
        options = " ".join(filter(None, (
            f"-c lock_timeout={int(LOCK_WAIT_SECONDS * 1000)}",
            f"-c statement_timeout={int(STATEMENT_SECONDS * 1000)}",
            url.query.get("options"))))
        return create_engine(url, echo=echo, hide_parameters=True,
                             pool_pre_ping=url.get_driver_name() != "ivr_psycopg",
                             pool_size=5, max_overflow=5, pool_timeout=LOCK_WAIT_SECONDS,
                             connect_args={"connect_timeout": 3, "options": options})
    database = _sqlite_file(url)
    if database is not None:
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
        cursor.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_SECONDS * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_LIMIT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):
        # A write transaction takes the write lock at once; a read-only one (desk pages,
        # exports, /metrics, /healthz) reads a WAL snapshot and never blocks a writer.
        # Sent straight to the driver: it is transaction control, not a statement of the
        # service's (the statement budget does not count it).
        begin = "BEGIN" if connection.get_execution_options().get("ivr_readonly") \
            else "BEGIN IMMEDIATE"
        try:
            connection.connection.driver_connection.execute(begin)
        except sqlite3.Error as error:
            # Reported as SQLAlchemy reports the driver's errors everywhere else: "database
            # is locked" after LOCK_WAIT_SECONDS is an OperationalError, which the service
            # takes for a database it cannot reach (a bare sqlite3 error raised here ended
            # in the generic fallback, and a status callback was lost, not spooled).
            raise driver_error(begin, None, error, connection.dialect) from error

    return engine


def _sqlite_file(url) -> str | None:
    """The path of a SQLite URL's database file; None for an in-memory or URI database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class _Checkpointer:
    """Checkpoints a SQLite database's WAL from a thread of its own, in each process that
    uses the database (started with the process's first connection, so a forked worker
    starts its own), and stops with ``Storage.dispose``. A PASSIVE checkpoint never
    waits for or blocks a writer or a reader; the database file's fsync happens here."""

    def __init__(self, database: str):
        self.database = database
        self.runs = 0
        self._pid: int | None = None
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> "_Checkpointer | None":
        database = _sqlite_file(engine.url) if engine.dialect.name == "sqlite" else None
        if database is None:
            return None
        checkpointer = cls(database)
        event.listen(engine, "connect", lambda *_: checkpointer.start())
        return checkpointer

    def start(self) -> None:
        if self._pid == os.getpid() or self._stop.is_set():
            return
        self._pid = os.getpid()
        self.thread = threading.Thread(target=self._loop, name="sqlite-checkpoint", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames checkpointed)."""
        # mode=rw: a database file that has gone away is not created again here.
        connection = sqlite3.connect(f"{Path(self.database).resolve().as_uri()}?mode=rw",
                                     uri=True, timeout=LOCK_WAIT_SECONDS)
        try:
            busy, frames, done = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            connection.close()
        self.runs += 1
        return busy, frames, done

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(CHECKPOINT_SECONDS):
            if not os.path.exists(self.database):
                return  # the database was deleted (a test's, or a file moved away)
            try:
                self.run_once()
                failing = False
            except sqlite3.Error as error:  # the next turn tries again
                if not failing:
                    log.warning("SQLite WAL checkpoint failed: %s", error)
                failing = True
