"""Database tables (SQLAlchemy 2). Schema changes go through Alembic in
ivr/storage/migrations."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            value = value.astimezone(dt.timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    """One user of the account directory. The host key is kept only as a keyed hash."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    plan: Mapped[str] = mapped_column(String(16))
    user_email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    pmi: Mapped[str] = mapped_column(String(16), unique=True)
    host_key_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class DirectoryPepper(Base):
    """Which pepper the directory's host-key hashes were made with, as a fingerprint
    (``HostKeyHasher.fingerprint``: a one-way value, no use to anyone without the pepper).
    One row, written by every import (migration 0014). A host whose own pepper gives
    another fingerprint cannot verify any caller, and its health check says so."""

    __tablename__ = "directory_pepper"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Call(Base):
    """Every call, from the first webhook to its final status."""

    __tablename__ = "calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_sid: Mapped[str | None] = mapped_column(String(64))
    dialed_number: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    caller_number: Mapped[str] = mapped_column(String(64))
    can_text: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[str] = mapped_column(String(16))
    english: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    auth_failures: Mapped[int] = mapped_column(Integer, default=0)
    # The PMI typed at this call's PMI prompt, until the host key is checked.
    pending_pmi: Mapped[str | None] = mapped_column(String(16))
    account_id: Mapped[str | None] = mapped_column(String(64))
    user_email: Mapped[str | None] = mapped_column(String(254))
    plan: Mapped[str | None] = mapped_column(String(16))
    role: Mapped[str | None] = mapped_column(String(16))
    transfer_to: Mapped[str | None] = mapped_column(String(128))
    steps_reached: Mapped[str] = mapped_column(String(255), default="")
    outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    abandoned_at_step: Mapped[str | None] = mapped_column(String(16))
    twilio_status: Mapped[str | None] = mapped_column(String(32))
    # SequenceNumber of the newest status callback applied; older ones are ignored.
    status_sequence: Mapped[int | None] = mapped_column(BigInteger)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    queue_result: Mapped[str | None] = mapped_column(String(32))
    queue_seconds: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Ticket(Base):
    """A support ticket: exactly one per eligible call."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.call_sid"), unique=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    user_email: Mapped[str] = mapped_column(String(254))
    priority: Mapped[int] = mapped_column(Integer)
    target_response_minutes: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="open", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Lifecycle: open -> callback_requested | in_queue -> connected -> closed.
    callback_number: Mapped[str | None] = mapped_column(String(32))
    connected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The queue group the caller was put in when routed (migration 0013): the engineer
    # line dials that queue whatever the priority has become. None for a dial or
    # TaskRouter route, and for tickets from before the column.
    queue_group: Mapped[str | None] = mapped_column(String(64))


class OutboxMessage(Base):
    """A text message waiting to be sent (or sent, or given up) by the outbox sender."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("call_sid", "template"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    twilio_sid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Set when a sender takes the message ("sending"); a stale claim is taken again.
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # After a failure that may pass (Twilio unreachable, 5xx, 429): not tried before then.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Lockout(Base):
    """Failed verifications of one PMI or one caller number, across calls and workers."""

    __tablename__ = "lockouts"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "pmi-hash:…" or "caller:…"
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    lock_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    attempts_while_locked: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
