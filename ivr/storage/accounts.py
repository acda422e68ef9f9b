"""The account directory."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Account


class AccountRepository:
    def __init__(self, session: Session):
        self.session = session

    def by_id(self, ref: int) -> Account | None:
        return self.session.get(Account, ref)

    def by_pmi(self, pmi: str) -> Account | None:
        return self.session.scalars(select(Account).where(Account.pmi == pmi)).first()

    def by_emails(self, emails: list[str]) -> dict[str, Account]:
        found = self.session.scalars(select(Account).where(Account.user_email.in_(emails)))
        return {account.user_email: account for account in found}

    def by_pmis(self, pmis: list[str]) -> dict[str, Account]:
        found = self.session.scalars(select(Account).where(Account.pmi.in_(pmis)))
        return {account.pmi: account for account in found}

    def add(self, account: Account) -> None:
        self.session.add(account)

