"""Personal data: the log's formatter (every long number in a traceback cut to its last
four digits, control characters escaped), the SQLite file readable by its owner only, and
the retention command that anonymises old call records (``flask --app app retention
apply``)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy.engine import make_url

from .domain.phones import redact_numbers
from .extension import ivr
from .storage.desk_sessions import DeskSessionRepository
from .storage.retention import RetentionRepository

# The longest period a command takes in days: a century. Far longer ones overflow the
# date arithmetic (datetime stops at the year 9999) before they mean anything.
MAX_DAYS = 36_500

# Line breaks and other control characters (C0, DEL, C1, the Unicode line and paragraph
# separators), shown escaped.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class RedactingFormatter(logging.Formatter):
    """The log's formatter. The service's own messages show numbers through ``mask``; an
    error's text is not the service's: a database quotes the row it refused ("Failing row
    contains (..., +14155550123, ..., 912345678, ...)"), so the traceback keeps only the last
    four digits of every long number in it."""

    def formatMessage(self, record) -> str:
        # One entry, one line: a value taken from a request (a path holding %0A, a name)
        # would otherwise start a line of its own that reads like one of the service's.
        if not record.message.isprintable():
            record.message = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return redact_numbers(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact_numbers(super().formatStack(stack_info))


PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def protect_data_files(database_url: str, instance_path: Path) -> None:
    """Create the instance folder 0700 and the SQLite file 0600 before SQLite opens it
    (SQLite gives its -wal, -shm and -journal files the database file's mode); tighten
    files an earlier version created more open. Caller numbers and PMIs live there."""
    protect_instance_folder(instance_path)
    protect_database_file(database_url)


def protect_instance_folder(instance_path: Path) -> None:
    """The instance folder, made 0700 (tightened if an earlier version left it open)."""
    instance_path.mkdir(parents=True, exist_ok=True)
    _tighten(instance_path, PRIVATE_FOLDER)


def protect_database_file(database_url: str) -> None:
    """A SQLite database's file made 0600 before SQLite opens it, and its companions."""
    url = make_url(database_url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:") or url.query.get("uri"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _tighten(companion, PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 & ~mode:
            path.chmod(mode)
    except PermissionError:  # not ours: say nothing, the operator set it up
        pass


retention_cli = AppGroup("retention", help="Keep personal data only as long as configured.")


@retention_cli.command("apply")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=None,
              help="Override [retention] days of config/ivr.toml.")
@click.option("--dry-run", is_flag=True, help="Count what would change; change nothing.")
def retention_apply(days, dry_run):
    """Anonymise call records (caller numbers, e-mail, typed PMI) and ticket callback
    numbers older than the retention period; delete text messages and failure counts of
    that age. Tickets themselves are kept. Safe to run daily (e.g. from cron)."""
    days = days or ivr().config.retention.days
    now = ivr().service.clock()
    cutoff = now - dt.timedelta(days=days)
    with ivr().storage.transaction(long_running=True) as session:  # a year of calls at once
        repository = RetentionRepository(session)
        result = repository.count(cutoff, now) if dry_run else repository.apply(cutoff, now)
        if not dry_run:
            DeskSessionRepository(session, b"").purge(now)  # expired dashboard sign-ins
    verb = "Would change" if dry_run else "Changed"
    click.echo(f"{verb} records older than {days} days (before {cutoff:%Y-%m-%d %H:%M} UTC): "
               + ", ".join(f"{name.replace('_', ' ')}: {count}"
                           for name, count in result.as_dict().items()))
