"""The help-desk interface: what the sender needs from any help desk (create a ticket,
update it), and what a push can end in. Zendesk is one implementation (zendesk.py);
another help desk is one more module with the same two methods.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class NewTicket:
    """A phone ticket as the help desk should show it, independent of any help desk."""

    external_id: str  # the ticket number the caller heard
    subject: str
    note: str  # private: agents only
    priority: int  # 1 (urgent) .. 4 (low)
    requester_email: str | None
    tags: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)  # named values for custom fields
    status: str | None = None  # "solved" for a ticket already closed when it is created

    def as_dict(self) -> dict:
        return {**asdict(self), "tags": list(self.tags)}

    @classmethod
    def from_dict(cls, data: dict) -> "NewTicket":
        return cls(**{**data, "tags": tuple(data.get("tags", ()))})


@dataclass(frozen=True)
class TicketChange:
    """A change to a ticket already in the help desk. Every field sets a value (never
    "add one"), so sending the same change twice leaves the ticket as sending it once;
    the note carries ``marker`` so a repeated send can tell it is already there."""

    marker: str
    note: str | None = None
    priority: int | None = None
    status: str | None = None  # "solved"
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**asdict(self), "add_tags": list(self.add_tags),
                "remove_tags": list(self.remove_tags)}

    @classmethod
    def from_dict(cls, data: dict) -> "TicketChange":
        return cls(**{**data, "add_tags": tuple(data.get("add_tags", ())),
                      "remove_tags": tuple(data.get("remove_tags", ()))})


@dataclass(frozen=True)
class Result:
    """How one push went.

    ``ok``: done (``remote_id`` the help desk's ticket id on a create; ``found`` when a
    create found the ticket already made and sent nothing);
    ``retry``: worth trying again later (time-out, 5xx, rate limit; ``retry_after`` in
    seconds when the help desk said how long to wait);
    ``failed``: the help desk refused it and will refuse it again (bad credentials, no
    permission, invalid ticket): ``message`` is its explanation."""

    outcome: str  # "ok", "retry" or "failed"
    remote_id: str | None = None
    message: str | None = None
    retry_after: float | None = None
    rate_limited: bool = False
    tried: bool = True  # False: put off without a request (does not count as a failure)
    found: bool = False

    @classmethod
    def ok(cls, remote_id: str | None = None) -> "Result":
        return cls("ok", remote_id=remote_id)

    @classmethod
    def retry(cls, message: str, retry_after: float | None = None,
              rate_limited: bool = False) -> "Result":
        return cls("retry", message=message, retry_after=retry_after, rate_limited=rate_limited)

    @classmethod
    def failed(cls, message: str) -> "Result":
        return cls("failed", message=message)


class HelpDesk(abc.ABC):
    """A help desk the sender pushes phone tickets to."""

    name: str = "help desk"

    @abc.abstractmethod
    def create(self, ticket: NewTicket, *, retried: bool, first_try_age: float) -> Result:
        """Create the ticket once: a create retried (``retried``; the first try was
        ``first_try_age`` seconds ago) must find the ticket it made, not make another."""

    @abc.abstractmethod
    def update(self, remote_id: str, change: TicketChange, *, retried: bool) -> Result:
        """Apply a change; a retried change must not repeat its note."""
