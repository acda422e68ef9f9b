"""The unit of work: one transaction and the repositories that work inside it.

    with storage.unit_of_work() as uow:                 # BEGIN IMMEDIATE on SQLite
        call = uow.calls.load(call_sid)
        ...                                             # committed on leaving the block
    with storage.unit_of_work(readonly=True) as uow:    # plain BEGIN: never the write lock
        rows, total = uow.desk.tickets(...)

The webhook path's repositories run driver-level SQL on the unit's connection; the ORM
session (``uow.session``: desk reads, the directory import, operator commands) is opened
only when something asks for it, on the same connection and transaction.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .accounts import AccountRepository
from .calls import CallRepository
from .desk_queries import DeskRepository
from .engineers import FloorRepository
from .engine import NO_STATEMENT_LIMIT
from .lockouts import LockoutRepository
from .outbox import OutboxRepository
from .sql import Codec
from .tickets import TicketRepository

if TYPE_CHECKING:
    from .engine import Storage


class UnitOfWork:
    def __init__(self, storage: "Storage", *, readonly: bool = False,
                 long_running: bool = False):
        self.storage = storage
        self.readonly = readonly
        self.long_running = long_running
        self.dialect = storage.dialect
        self.codec = Codec(self.dialect)
        self.connection: Connection | None = None

    def __enter__(self) -> "UnitOfWork":
        for attempt in (1, 2):
            connection = self.storage.engine.connect()
            if self.readonly:
                # SQLite: a deferred BEGIN (see engine.py). PostgreSQL readers never block.
                connection.execution_options(ivr_readonly=True)
            try:
                connection.begin()
            except DBAPIError as error:
                connection.close()
                # On PostgreSQL the BEGIN is the first thing a pooled connection sends
                # (engine.py): a connection the server dropped fails here, before any work,
                # and SQLAlchemy has already discarded it and the pool's older ones.
                if attempt == 1 and error.connection_invalidated:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if self.long_running and self.dialect == "postgresql":
                try:
                    connection.exec_driver_sql(NO_STATEMENT_LIMIT)
                except BaseException:
                    connection.rollback()
                    connection.close()
                    raise
            self.connection = connection
            return self
        raise AssertionError("unreachable")

    def __exit__(self, kind, error, traceback) -> None:
        connection, self.connection = self.connection, None
        session = self.__dict__.pop("session", None)
        try:
            if error is None:
                if session is not None:
                    session.flush()
                connection.commit()
            else:
                connection.rollback()
        finally:
            if session is not None:
                session.close()
            connection.close()

    @property
    def lock_rows(self) -> bool:
        """Whether reads for an update take row locks (PostgreSQL). SQLite's write
        transaction already holds the database's one write lock."""
        return self.dialect == "postgresql" and not self.readonly

    @cached_property
    def session(self) -> Session:
        """The ORM on this unit's connection and transaction."""
        return Session(bind=self.connection, expire_on_commit=False,
                       join_transaction_mode="rollback_only")

    # -- repositories ------------------------------------------------------------------

    @cached_property
    def calls(self) -> CallRepository:
        return CallRepository(self)

    @cached_property
    def tickets(self) -> TicketRepository:
        return TicketRepository(self)

    @cached_property
    def lockouts(self) -> LockoutRepository:
        return LockoutRepository(self)

    @cached_property
    def outbox(self) -> OutboxRepository:
        return OutboxRepository(self)

    @cached_property
    def accounts(self) -> AccountRepository:
        return AccountRepository(self)

    @cached_property
    def desk(self) -> DeskRepository:
        return DeskRepository(self)

    @cached_property
    def floor(self) -> FloorRepository:
        """The queues as engineers see them (ORM, on this unit's session)."""
        return FloorRepository(self.storage, self.session)
