"""Failed verifications per PMI and per caller, and the locks they lead to."""

from __future__ import annotations

import datetime as dt
from typing import Callable

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .engine import Storage
from .models import Lockout


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

