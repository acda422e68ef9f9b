"""Dashboard sign-ins kept on the server: a session cookie names one row here, by a keyed
hash of its random id, so signing out (deleting the row) ends that session everywhere,
even for a copy of the cookie."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Base, UTCDateTime


class DeskSession(Base):
    __tablename__ = "desk_sessions"

    # HMAC-SHA256 of the session id the cookie carries; the id itself is never stored.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(128))
    # Which credential opened it (a keyed hash): a changed admin token ends the session.
    credential: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class DeskSessionRepository:
    def __init__(self, session: Session, key: bytes):
        self.session = session
        self.key = key

    def _hash(self, session_id: str) -> str:
        return hmac.new(self.key, session_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def start(self, identity: str, credential: str, now: dt.datetime,
              lifetime: dt.timedelta) -> str:
        """A new session; returns the id for the cookie (shown once, stored hashed)."""
        session_id = secrets.token_urlsafe(32)
        self.session.add(DeskSession(id_hash=self._hash(session_id), identity=identity,
                                     credential=credential, created_at=now,
                                     expires_at=now + lifetime))
        return session_id

    def find(self, session_id: str, now: dt.datetime) -> DeskSession | None:
        """The live session with this id, or None (unknown, ended or expired)."""
        if not session_id or len(session_id) > 128:
            return None
        row = self.session.get(DeskSession, self._hash(session_id))
        if row is None or row.expires_at <= now:
            return None
        return row

    def end(self, session_id: str) -> bool:
        result = self.session.execute(
            delete(DeskSession).where(DeskSession.id_hash == self._hash(session_id or "")))
        return bool(result.rowcount)

    def purge(self, now: dt.datetime) -> int:
        result = self.session.execute(delete(DeskSession).where(DeskSession.expires_at <= now))
        return result.rowcount or 0
