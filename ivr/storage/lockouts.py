"""Failed verifications per PMI and per caller, and the locks they lead to.

A PMI's counter is kept under the keyed hash of the digits typed, never the digits
(``ivr.domain.phones.pmi_lockout_key``); a caller's under the number in E.164.

A host key is judged only after the counters of its PMI and of its caller have been
claimed: ``claim`` upserts both rows and returns them, and from that statement until the
transaction ends no other request can read or change them (PostgreSQL locks the rows;
SQLite's write transaction holds the database). So every request sees the count left by
the one before it, and at most the threshold's number of keys is judged per lock period,
however many arrive at once. ``settle`` writes the verdict in one more statement.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING, Callable

from sqlalchemy import delete, or_, select

from .models import Lockout
from .sql import Codec, Sql

if TYPE_CHECKING:
    from .uow import UnitOfWork

# Both keys in one statement, in a fixed order ("caller:" sorts before "pmi-hash:") so
# two requests never wait for each other's rows in opposite orders.
CLAIM = Sql("""
    INSERT INTO lockouts (key, failures, window_started_at, lock_count, locked_until,
                          attempts_while_locked, updated_at)
    VALUES (:first, 0, :now, 0, NULL, 0, :now), (:second, 0, :now, 0, NULL, 0, :now)
    ON CONFLICT (key) DO UPDATE SET updated_at = lockouts.updated_at
    RETURNING key, failures, window_started_at, lock_count, locked_until,
              attempts_while_locked
""")
_SETTLE = """
    UPDATE lockouts SET
      failures = CASE WHEN key = :first THEN :failures_1 ELSE :failures_2 END,
      window_started_at = CASE WHEN key = :first THEN :window_1 ELSE :window_2 END,
      lock_count = CASE WHEN key = :first THEN :lock_count_1 ELSE :lock_count_2 END,
      locked_until = CASE WHEN key = :first THEN :locked_until_1 ELSE :locked_until_2 END,
      attempts_while_locked = CASE WHEN key = :first THEN :attempts_1 ELSE :attempts_2 END,
      updated_at = :now
    WHERE key IN (:first, :second)
"""
# PostgreSQL cannot tell the type of a parameter that is NULL in both arms of a CASE.
SETTLE = Sql(_SETTLE, re.sub(r":(window|locked_until)_(\d)", r"CAST(:\1_\2 AS TIMESTAMPTZ)",
                             _SETTLE))


@dataclasses.dataclass
class Counter:
    """One key's row, as claimed, changed by the verdict, then settled."""

    key: str
    failures: int
    window_started_at: dt.datetime
    lock_count: int
    locked_until: dt.datetime | None
    attempts_while_locked: int

    def locked(self, now: dt.datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def attempt_while_locked(self) -> None:
        self.attempts_while_locked += 1

    def fail(self, now: dt.datetime, *, threshold: int, window: dt.timedelta | None,
             lock_for: Callable[[int], dt.timedelta]) -> bool:
        """Count one failure; lock the key when it reaches the threshold. True if it did."""
        if window is not None and self.window_started_at <= now - window:
            self.failures, self.window_started_at = 0, now
        self.failures += 1
        if self.failures < threshold:
            return False
        self.locked_until = now + lock_for(self.lock_count)
        self.failures, self.lock_count, self.window_started_at = 0, self.lock_count + 1, now
        return True

    def clear(self, now: dt.datetime) -> None:
        """Forget the key's failures and locks, as if it had never failed."""
        self.failures, self.lock_count, self.locked_until = 0, 0, None
        self.attempts_while_locked, self.window_started_at = 0, now


class LockoutRepository:
    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    def claim(self, first: str, second: str, now: dt.datetime) -> dict[str, Counter]:
        """The counters of two keys, created if new and held for this transaction."""
        first, second = sorted((first, second))
        if first == second:
            raise ValueError("two different keys are claimed together")
        rows = CLAIM.run(self.uow.connection, {"first": first, "second": second,
                                                "now": self.uow.codec.time(now)}).all()
        return {key: Counter(key, failures, Codec.read_time(started), lock_count,
                             Codec.read_time(until), attempts)
                for key, failures, started, lock_count, until, attempts in rows}

    def settle(self, counters: dict[str, Counter], now: dt.datetime) -> None:
        """Write both claimed counters back, in one statement."""
        time = self.uow.codec.time
        first, second = sorted(counters)
        params = {"first": first, "second": second, "now": time(now)}
        for n, key in ((1, first), (2, second)):
            c = counters[key]
            params.update({f"failures_{n}": c.failures, f"window_{n}": time(c.window_started_at),
                           f"lock_count_{n}": c.lock_count,
                           f"locked_until_{n}": time(c.locked_until),
                           f"attempts_{n}": c.attempts_while_locked})
        SETTLE.run(self.uow.connection, params)

    # -- operators ---------------------------------------------------------------------

    def clear(self, key: str) -> bool:
        """Forget the key's counter; whether it held a failure or a lock, now or before
        (a verified caller leaves a counter with neither, which is no lock to clear)."""
        removed = self.uow.session.execute(
            delete(Lockout).where(Lockout.key == key).returning(
                Lockout.failures, Lockout.lock_count, Lockout.locked_until,
                Lockout.attempts_while_locked)).all()
        return any(any(value for value in row) for row in removed)

    def purge(self, before: dt.datetime, now: dt.datetime) -> int:
        """Forget failure counts untouched since ``before`` that hold no lock now."""
        return self.uow.session.execute(
            delete(Lockout).where(Lockout.updated_at < before,
                                  or_(Lockout.locked_until.is_(None), Lockout.locked_until <= now))
        ).rowcount

    def current(self, now: dt.datetime) -> list[Lockout]:
        return list(self.uow.session.scalars(
            select(Lockout).where(Lockout.locked_until > now).order_by(Lockout.locked_until)
        ))
