"""Storage: the engine, the models and migrations, one repository per aggregate and the
unit of work that opens a transaction and hands them out (``storage.unit_of_work()``).

All SQL of the service lives in this package. What the rest of the app may use is
re-exported here.
"""

from .accounts import AccountRepository
from .calls import FINAL_STATUSES, CallRecord, CallRepository, TicketRow
from .desk_queries import DeskRepository
from .engine import (
    DATABASE_DOWN,
    Storage,
    UpgradeRefused,
    database_error,
    database_unavailable,
    schema_missing,
    statement_cancelled,
    utcnow,
)
from .helpdesk import (HelpdeskDelivery, HelpdeskJob, HelpdeskJobRepository, first_delivery,
                       newest_delivery)
from .lockouts import LockoutRepository
from .outbox import OutboxRepository
from .tickets import TicketRepository, new_ticket_number
from .uow import UnitOfWork

__all__ = [
    "DATABASE_DOWN", "FINAL_STATUSES", "AccountRepository", "CallRecord", "CallRepository",
    "DeskRepository", "HelpdeskDelivery", "HelpdeskJob", "HelpdeskJobRepository",
    "LockoutRepository", "OutboxRepository", "Storage", "TicketRepository", "TicketRow",
    "UnitOfWork", "UpgradeRefused", "database_error", "database_unavailable",
    "first_delivery", "new_ticket_number", "newest_delivery", "schema_missing", "statement_cancelled",
    "utcnow",
]
