"""The account directory: validating and importing the accounts CSV."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from ..config import PLANS, ROLES, Lengths
from ..security import HostKeyHasher
from ..storage import Storage, utcnow
from ..storage.models import Account

HEADER = ["account_id", "plan", "user_email", "role", "pmi", "host_key"]
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ImportFailed(Exception):
    """The file was refused as a whole; ``problems`` lists each row and reason."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: nothing imported:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Row:
    line: int
    account_id: str
    plan: str
    user_email: str
    role: str
    pmi: str
    host_key: str


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int = 0  # rows the directory already held as the file has them


def is_trivial(key: str) -> bool:
    """All one digit, or a straight run up or down (123456, 987654, 901234)."""
    if len(set(key)) == 1:
        return True
    steps = {(int(b) - int(a)) % 10 for a, b in zip(key, key[1:])}
    return steps in ({1}, {9})


def header_problem(cells: list[str]) -> str:
    """What is wrong with the first row, naming only the header's own words: a file
    without its header has a PMI and a host key there, and this message reaches logs."""
    cells = [c.strip() for c in cells]
    others = sum(1 for c in cells if c not in HEADER)
    found = [c for c in cells if c in HEADER]
    said = f"row 1: header must be {','.join(HEADER)}"
    missing = [h for h in HEADER if h not in found]
    if missing:
        said += f"; missing {', '.join(missing)}"
    if others:
        said += (f"; {others} other cell{'s' if others > 1 else ''} not shown (a file without "
                 "its header has a PMI and a host key there)")
    if not missing and not others:
        said += f"; got {','.join(found)}"  # the right names, in another order or repeated
    return said


def _quoted(cell: str) -> str:
    """A cell as a row's problem may quote it. A value with digits in it is not repeated:
    a file whose columns are out of place under the right header has a PMI or a host key
    there, and the message reaches logs (as ``header_problem`` says of the first row)."""
    if any(ch.isdigit() for ch in cell):
        return "(a value with digits, not shown)"
    return repr(cell[:40])


# What the directory's columns keep: a longer value is a bad row, named, not a database
# error halfway through the import (PostgreSQL) or a value the schema says cannot be
# there (SQLite).
ACCOUNT_ID_LIMIT = Account.__table__.c.account_id.type.length
EMAIL_LIMIT = Account.__table__.c.user_email.type.length


def _rows(reader, source: str):
    """The reader's rows; a file the csv module cannot read (a field over its limit, an
    unreadable quote) stops the import with the line it reached."""
    try:
        yield from reader
    except csv.Error as exc:
        raise ImportFailed(source, [f"line {reader.line_num}: {exc}"]) from None


def parse(text: str, lengths: Lengths, source: str = "accounts CSV") -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    lines = _rows(reader, source)
    header = next(lines, None)
    if header is None or [h.strip() for h in header] != HEADER:
        raise ImportFailed(source, [header_problem(header or [])])
    problems: list[str] = []
    rows: list[Row] = []
    seen_pmi: dict[str, int] = {}
    seen_email: dict[str, int] = {}
    for number, fields in enumerate(lines, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(HEADER):
            problems.append(f"row {number}: expected {len(HEADER)} fields, got {len(fields)}")
            continue
        account_id, plan, email, role, pmi, host_key = (f.strip() for f in fields)
        plan, role, email = plan.lower(), role.lower(), email.lower()
        reasons = []
        if not account_id:
            reasons.append("account_id is empty")
        elif len(account_id) > ACCOUNT_ID_LIMIT:
            reasons.append(f"account_id is {len(account_id)} characters, more than the "
                           f"{ACCOUNT_ID_LIMIT} kept")
        if plan not in PLANS:
            reasons.append(f"plan {_quoted(plan)} is not one of {', '.join(PLANS)}")
        if role not in ROLES:
            reasons.append(f"role {_quoted(role)} is not one of {', '.join(ROLES)}")
        if not EMAIL.match(email):
            reasons.append("user_email is not an email address")
        elif len(email) > EMAIL_LIMIT:
            reasons.append(f"user_email is {len(email)} characters, more than the "
                           f"{EMAIL_LIMIT} kept")
        if not lengths.is_pmi(pmi):
            reasons.append(f"pmi must be {lengths.pmi_min} to {lengths.pmi_max} digits")
        if not lengths.is_host_key(host_key):
            reasons.append(f"host_key must be {lengths.host_key_min} to {lengths.host_key_max} digits")
        elif is_trivial(host_key):
            reasons.append("host_key is too easy to guess (one repeated digit or a straight run)")
        if pmi in seen_pmi:
            reasons.append(f"pmi repeats row {seen_pmi[pmi]}")
        if email in seen_email:
            reasons.append(f"user_email repeats row {seen_email[email]}")
        seen_pmi.setdefault(pmi, number)
        seen_email.setdefault(email, number)
        if reasons:
            problems.append(f"row {number}: " + "; ".join(reasons))
        else:
            rows.append(Row(number, account_id, plan, email, role, pmi, host_key))
    if problems:
        raise ImportFailed(source, problems)
    return rows


def import_file(path: str | Path, storage: Storage, hasher: HostKeyHasher,
                lengths: Lengths) -> ImportResult:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(str(path), [f"cannot read the file: {exc}"]) from None
    return import_rows(parse(text, lengths, str(path)), storage, hasher, str(path))


def import_rows(rows: list[Row], storage: Storage, hasher: HostKeyHasher,
                source: str) -> ImportResult:
    """Upsert by user email in one transaction: all rows or none."""
    created = updated = unchanged = 0
    now = utcnow()
    try:
        with storage.unit_of_work(long_running=True) as uow:  # the whole directory at once
            accounts = uow.accounts
            by_email = accounts.by_emails([r.user_email for r in rows])
            by_pmi = accounts.by_pmis([r.pmi for r in rows])
            in_file = {r.user_email for r in rows}
            problems = [
                f"row {r.line}: pmi is already used by another user"
                for r in rows
                if r.pmi in by_pmi and by_pmi[r.pmi].user_email not in in_file
            ]
            if problems:
                raise ImportFailed(source, problems)
            # PMIs handed on between users of the file (one moves, another takes it over,
            # or two swap): each PMI is unique at every statement, so the ones that change
            # are first given a stand-in no PMI can be.
            moving = [by_email[r.user_email] for r in rows
                      if r.user_email in by_email and by_email[r.user_email].pmi != r.pmi]
            if moving:
                for account in moving:
                    account.pmi = f"~{account.id}"
                uow.session.flush()
            for row in rows:
                account = by_email.get(row.user_email)
                fields = {"account_id": row.account_id, "plan": row.plan, "role": row.role,
                          "pmi": row.pmi, "host_key_hash": hasher.digest(row.pmi, row.host_key)}
                if account is None:
                    account = Account(user_email=row.user_email)
                    accounts.add(account)
                    created += 1
                elif all(getattr(account, name) == value for name, value in fields.items()):
                    unchanged += 1
                    continue
                else:
                    updated += 1
                for name, value in fields.items():
                    setattr(account, name, value)
                account.updated_at = now
            accounts.imported_with(hasher.fingerprint(), now)
    except IntegrityError:
        raise ImportFailed(source, ["the rows conflict with PMIs already in the directory"]) from None
    return ImportResult(created, updated, unchanged)
