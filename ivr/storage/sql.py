"""Driver-level SQL for the webhook path: one string per dialect, written once.

The webhook path runs a handful of fixed statements per request. Building and compiling
them through the ORM or Core costs more than the database round trip itself, so the hot
repositories pass these strings straight to the driver through SQLAlchemy's connection
(``exec_driver_sql``). Statements are written with ``:name`` parameters (sqlite3's named
style) and translated once to ``%(name)s`` for psycopg. Values cross the driver as the
ORM's column types store them, which ``Codec`` reproduces.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import Connection

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_UTC = dt.timezone.utc


class Sql:
    """One statement, in each dialect's parameter style."""

    __slots__ = ("sqlite", "postgresql")

    def __init__(self, text: str, postgresql: str | None = None):
        self.sqlite = " ".join(text.split())
        pg = " ".join((postgresql or text).split())
        self.postgresql = _PARAM.sub(r"%(\1)s", pg)

    def run(self, connection: Connection, params: dict):
        name = connection.dialect.name
        return connection.exec_driver_sql(self.postgresql if name == "postgresql" else self.sqlite,
                                          params)


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

    @staticmethod
    def read_bool(value) -> bool:
        return bool(value)


def clamp_int(value: int | None, low: int = -(2**31), high: int = 2**31 - 1) -> int | None:
    """A caller-supplied count as an INTEGER column can hold it (PostgreSQL's is 32-bit)."""
    if value is None:
        return None
    return max(low, min(high, value))
