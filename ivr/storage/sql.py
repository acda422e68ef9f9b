"""Driver-level SQL for the webhook path: one string per dialect, written once.

The webhook path runs a handful of fixed statements per request. Building and compiling
them through the ORM or Core costs more than the database round trip itself, and even
SQLAlchemy's ``exec_driver_sql`` builds an execution context and result metadata for every
statement (about 50 microseconds each on SQLite, against 4 for the statement itself). So
the hot repositories run these strings on the DB-API cursor of the unit of work's own
connection, inside the transaction SQLAlchemy began, and keep what SQLAlchemy would add
that the service relies on:

- errors arrive as SQLAlchemy's exceptions (``OperationalError`` and the rest, which the
  outage path catches as ``DATABASE_DOWN``), parameters hidden;
- a connection the server dropped is invalidated, so the pool never hands it out again;
- ``before_cursor_execute`` listeners still see every statement (the statement budget's
  test and the profiler count them there).

Statements are written with ``:name`` parameters (sqlite3's named style) and translated
once to ``%(name)s`` for psycopg. Values cross the driver as the ORM's column types store
them, which ``Codec`` reproduces.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_UTC = dt.timezone.utc


class Sql:
    """One statement, in each dialect's parameter style."""

    __slots__ = ("sqlite", "postgresql", "returns_rows")

    def __init__(self, text: str, postgresql: str | None = None):
        self.sqlite = " ".join(text.split())
        pg = " ".join((postgresql or text).split())
        self.postgresql = _PARAM.sub(r"%(\1)s", pg)
        # Known from the text, not asked of the cursor after each run: psycopg answers
        # ``cursor.description`` by building a Column object for every column returned.
        self.returns_rows = _returns_rows(self.sqlite)
        if _returns_rows(self.postgresql) != self.returns_rows:
            raise ValueError(f"the two dialects' statements differ in what they return: {text}")

    def run(self, connection: Connection, params: dict) -> "Rows":
        """Run on ``connection``'s DB-API connection, in its transaction; every row read."""
        dialect = connection.dialect
        statement = self.postgresql if dialect.name == "postgresql" else self.sqlite
        dbapi_connection = connection.connection.dbapi_connection
        cursor = None
        try:
            cursor = dbapi_connection.cursor()  # fails too on a connection already closed
            listeners = connection.dispatch.before_cursor_execute
            if listeners:
                listeners(connection, cursor, statement, params, None, False)
            cursor.execute(statement, params)
            rows = cursor.fetchall() if self.returns_rows else []
            return Rows(rows, cursor.rowcount)
        except dialect.loaded_dbapi.Error as error:
            dropped = dialect.is_disconnect(error, dbapi_connection, cursor)
            if dropped:
                connection.invalidate(error)
            raise driver_error(statement, params, error, dialect, dropped=dropped) from error
        finally:
            if cursor is not None:
                cursor.close()


def driver_error(statement: str, params, error: Exception, dialect, *,
                 dropped: bool = False) -> DBAPIError:
    """A driver's error as SQLAlchemy reports the driver's errors everywhere else
    (``OperationalError`` and the rest, which the outage path catches), parameters hidden."""
    return DBAPIError.instance(statement, params, error, dialect.loaded_dbapi.Error,
                               hide_parameters=True, dialect=dialect,
                               connection_invalidated=dropped)


def _returns_rows(statement: str) -> bool:
    """Whether a statement gives rows back: a SELECT, or a change with RETURNING."""
    words = statement.upper().split()
    return words[0] == "SELECT" or "RETURNING" in words


class Rows:
    """What a statement returned: its rows (tuples) and how many it changed."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list, rowcount: int):
        self.rows = rows
        self.rowcount = rowcount

    def first(self):
        return self.rows[0] if self.rows else None

    def scalar(self):
        return self.rows[0][0] if self.rows else None

    def all(self) -> list:
        return self.rows


class Codec:
    """Python values <-> what the driver stores, as SQLAlchemy's types do: SQLite keeps
    datetimes as UTC text and booleans as 0/1; psycopg takes both natively."""

    def __init__(self, dialect: str):
        self.sqlite = dialect == "sqlite"

    def time(self, value: dt.datetime | None):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(_UTC)
        # SQLAlchemy's SQLite DateTime text, "2026-11-25 12:00:00.000000" (isoformat is
        # several times cheaper than strftime, and this runs for every timestamp written).
        return value.replace(tzinfo=None).isoformat(" ", "microseconds") if self.sqlite \
            else value

    @staticmethod
    def read_time(value) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def clamp_int(value: int | None, low: int = -(2**31), high: int = 2**31 - 1) -> int | None:
    """A caller-supplied count as an INTEGER column can hold it (PostgreSQL's is 32-bit)."""
    if value is None:
        return None
    return max(low, min(high, value))
