"""Storage: the engine, the models and migrations, and one repository per aggregate.

All SQL of the service lives in this package. What the rest of the app may use is
re-exported here.
"""

from .accounts import AccountRepository
from .calls import FINAL_STATUSES, CallRepository, ticket_info
from .desk_queries import DeskRepository
from .engine import DATABASE_DOWN, Storage, utcnow
from .helpdesk import HelpdeskJob, HelpdeskJobRepository
from .lockouts import LockoutRepository
from .outbox import OutboxRepository
from .tickets import TicketRepository, new_ticket_number

__all__ = [
    "DATABASE_DOWN", "FINAL_STATUSES", "AccountRepository", "CallRepository", "DeskRepository",
    "HelpdeskJob", "HelpdeskJobRepository",
    "LockoutRepository", "OutboxRepository", "Storage", "TicketRepository", "new_ticket_number",
    "ticket_info", "utcnow",
]
