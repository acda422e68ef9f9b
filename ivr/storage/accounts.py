"""The account directory."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from sqlalchemy import select

from .models import Account, DirectoryPepper
from .sql import Sql

if TYPE_CHECKING:
    from .uow import UnitOfWork

BY_PMI = Sql("SELECT id, account_id, user_email, plan, role, host_key_hash FROM accounts "
             "WHERE pmi = :pmi")

ID_BY_EMAIL = Sql("SELECT id FROM accounts WHERE user_email = :email")
# Values per IN (...) list of a directory import, well inside every database's limit on
# a statement's parameters.
IN_CHUNK = 5000


@dataclass(frozen=True)
class Entry:
    """What a host-key check needs of a directory entry."""

    id: int
    account_id: str
    user_email: str
    plan: str
    role: str
    host_key_hash: str


class AccountRepository:
    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    @property
    def session(self):
        return self.uow.session

    def pepper_fingerprint(self) -> str | None:
        """The fingerprint of the pepper the directory was last imported with; None before
        the first import."""
        row = self.session.get(DirectoryPepper, 1)
        return row.fingerprint if row is not None else None

    def imported_with(self, fingerprint: str, now: dt.datetime) -> None:
        row = self.session.get(DirectoryPepper, 1)
        if row is None:
            self.session.add(DirectoryPepper(id=1, fingerprint=fingerprint, imported_at=now))
        else:
            row.fingerprint, row.imported_at = fingerprint, now

    def entry_by_pmi(self, pmi: str) -> Entry | None:
        """The directory entry of a PMI, in one driver-level statement (webhook path)."""
        row = BY_PMI.run(self.uow.connection, {"pmi": pmi}).first()
        return Entry(*row) if row is not None else None

    def pmis_hashing_to(self, digests: set[str], digest: Callable[[str], str]) -> dict[str, str]:
        """The directory PMIs whose ``digest`` is one of ``digests``, by digest. A keyed
        hash cannot be turned back, so the directory is read in batches and each PMI
        hashed until all are found: an operator's look-up, never on the webhook path."""
        found: dict[str, str] = {}
        if not digests:
            return found
        with self.session.scalars(select(Account.pmi).execution_options(yield_per=2000)) \
                as pmis:
            for pmi in pmis:
                hashed = digest(pmi)
                if hashed in digests:
                    found[hashed] = pmi
                    if len(found) == len(digests):
                        break
        return found

    def id_by_email(self, email: str) -> int | None:
        return ID_BY_EMAIL.run(self.uow.connection, {"email": email}).scalar()

    def by_id(self, ref: int) -> Account | None:
        return self.session.get(Account, ref)

    def by_pmi(self, pmi: str) -> Account | None:
        return self.session.scalars(select(Account).where(Account.pmi == pmi)).first()

    def by_emails(self, emails: list[str]) -> dict[str, Account]:
        return {account.user_email: account
                for account in self._where_in(Account.user_email, emails)}

    def by_pmis(self, pmis: list[str]) -> dict[str, Account]:
        return {account.pmi: account for account in self._where_in(Account.pmi, pmis)}

    def _where_in(self, column, values: list[str]) -> list[Account]:
        """Accounts whose ``column`` is one of ``values``, asked IN_CHUNK at a time: a
        directory can hold more users than one statement may carry parameters
        (PostgreSQL's protocol stops at 65,535)."""
        found: list[Account] = []
        for start in range(0, len(values), IN_CHUNK):
            found.extend(self.session.scalars(
                select(Account).where(column.in_(values[start:start + IN_CHUNK]))))
        return found

    def add(self, account: Account) -> None:
        self.session.add(account)

