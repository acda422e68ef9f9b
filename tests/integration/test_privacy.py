"""Data at rest: the SQLite files are private to their owner, and the retention command
anonymises personal data older than the configured number of days."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from ivr import create_app
from ivr.storage.models import Call, Lockout, OutboxMessage, Ticket

from ..desk_support import add_ticket
from ..support import CALLER, postgres_admin


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_sqlite_file_and_its_wal_and_shm_are_created_readable_by_the_owner_only(
        tmp_path, settings, clock):
    old_umask = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path}/fresh/ivr.db"
        app = create_app(settings.model_copy(update={"database_url": url,
                                                     "instance_path": tmp_path / "inst"}),
                         clock=clock)
        ivr = app.extensions["ivr"]
        ivr.storage.upgrade()
        add_ticket(ivr, created=clock.now)  # a write: the WAL and shared-memory files exist
        database = tmp_path / "fresh" / "ivr.db"
        files = [database, database.with_name("ivr.db-wal"), database.with_name("ivr.db-shm")]
        assert all(path.exists() for path in files)
        assert [mode(path) for path in files] == [0o600] * 3
        assert mode(tmp_path / "inst") == 0o700
        ivr.storage.dispose()
    finally:
        os.umask(old_umask)


def test_the_spool_and_the_records_a_replay_sets_aside_are_readable_by_the_owner_only(
        tmp_path):
    """Both hold callers' numbers, the set-aside ones until an operator deals with them."""
    from ivr.voice.spool import Spool

    old_umask = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "spool")
        spool.append({"kind": "ticket", "caller_number": "+14155550100"})
        spool.replay(lambda record: 1 / 0)  # not applicable: set aside
        assert (mode(spool.path.parent / "spool.failed.jsonl"), spool.set_aside()) == \
            (0o600, 1)
    finally:
        os.umask(old_umask)


def test_an_existing_world_readable_database_is_tightened_at_start(tmp_path, settings, clock):
    database = tmp_path / "old.db"
    database.touch(mode=0o644)
    database.chmod(0o644)
    wal = tmp_path / "old.db-wal"
    wal.touch()
    wal.chmod(0o644)
    app = create_app(settings.model_copy(update={"database_url": f"sqlite:///{database}"}),
                     clock=clock)
    assert (mode(database), mode(wal)) == (0o600, 0o600)
    app.extensions["ivr"].storage.dispose()


@pytest.fixture
def aged(app, clock):
    """A ticket, a text message and a failure count from 100 days ago, and the same today."""
    ivr = app.extensions["ivr"]
    old = clock.now - dt.timedelta(days=100)
    tickets = [add_ticket(ivr, created=moment, callback_number="+14155550123", caller=CALLER)
               for moment in (old, clock.now)]
    with ivr.storage.transaction() as session:
        for ticket, moment in zip(tickets, (old, clock.now)):
            session.get(Call, ticket.call_sid).user_email = "owner.business@example.com"
            session.add(OutboxMessage(call_sid=ticket.call_sid, template="ticket",
                                      to_number=CALLER, body="Your ticket", status="sent",
                                      created_at=moment))
            session.add(Lockout(key=f"caller:{CALLER}{moment.day}", failures=2,
                                window_started_at=moment, updated_at=moment))
    return tickets


def rows(app, model):
    with app.extensions["ivr"].storage.transaction() as session:
        return session.scalars(select(model)).all()


def test_retention_anonymises_old_calls_and_tickets_and_deletes_old_messages(app, aged):
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["retention", "apply", "--dry-run"])
    assert dry.exit_code == 0 and "calls anonymised: 1" in dry.output
    assert {c.caller_number for c in rows(app, Call)} == {CALLER}  # the dry run changed nothing
    result = runner.invoke(args=["retention", "apply"])
    assert result.exit_code == 0, result.output
    assert ("calls anonymised: 1, tickets anonymised: 1, messages deleted: 1, "
            "failure counts deleted: 1") in result.output
    old, new = aged
    calls = {c.call_sid: c for c in rows(app, Call)}
    assert (calls[old.call_sid].caller_number, calls[old.call_sid].user_email) == ("", None)
    assert calls[new.call_sid].caller_number == CALLER
    assert calls[old.call_sid].region == "United States"  # the statistics stay
    tickets = {t.number: t for t in rows(app, Ticket)}
    assert tickets[old.number].callback_number is None
    assert tickets[old.number].user_email == "owner.business@example.com"  # the ticket stays
    assert tickets[new.number].callback_number == "+14155550123"
    assert [m.call_sid for m in rows(app, OutboxMessage)] == [new.call_sid]
    assert len(rows(app, Lockout)) == 1
    again = runner.invoke(args=["retention", "apply"])
    assert "calls anonymised: 0, tickets anonymised: 0, messages deleted: 0" in again.output


def test_the_retention_period_comes_from_the_configuration_or_the_command_line(app, aged):
    assert app.extensions["ivr"].config.retention.days == 90
    result = app.test_cli_runner().invoke(args=["retention", "apply", "--days", "200"])
    assert "calls anonymised: 0" in result.output
    assert {c.caller_number for c in rows(app, Call)} == {CALLER}


def slower_than_the_statement_limit(app, change, table):
    """Each statement that makes ``change`` (UPDATE, DELETE) on ``table`` takes 1.5 s, past
    the tests' short statement limit (``short_statements``)."""
    with postgres_admin(app.extensions["ivr"].storage.engine.url) as admin:
        admin.exec_driver_sql(f"""
            CREATE FUNCTION slow_statement() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
            CREATE TRIGGER slow AFTER {change} ON {table} FOR EACH STATEMENT
            EXECUTE FUNCTION slow_statement();""")


def test_retention_slower_than_a_webhooks_statement_limit_still_runs_to_its_end(
        short_statements, app, aged):
    """A webhook's statement is cancelled past STATEMENT_SECONDS; retention over a year of
    calls may take longer, and is not cut short by that limit."""
    slower_than_the_statement_limit(app, "UPDATE", "calls")
    result = app.test_cli_runner().invoke(args=["retention", "apply"])
    assert result.exit_code == 0, result.output
    assert "calls anonymised: 1" in result.output


def test_the_desk_shows_an_anonymised_caller_as_withheld(app, aged, clock):
    from ivr.desk.service import Desk

    app.test_cli_runner().invoke(args=["retention", "apply"])
    view = Desk.of(app.extensions["ivr"]).ticket(aged[0].number)
    assert view["caller"] == "…" and view["callback_number"] is None


def captured_log(monkeypatch):
    """What the service's log handler writes, from here to the end of the test."""
    import io
    import logging

    stream = io.StringIO()
    monkeypatch.setattr(logging.getLogger("ivr").handlers[0], "stream", stream)
    return stream


def failing_on_a_row_quoting_numbers(statement: str, column: str, more: str = ""):
    """A repository method failing as PostgreSQL fails on a NOT NULL column: its error
    quotes the row, with a caller's number and a PMI in it."""
    from sqlalchemy.exc import IntegrityError

    def failing(*_args, **_kwargs):
        raise IntegrityError(statement, {}, Exception(
            f"null value in column \"{column}\" violates not-null constraint\nDETAIL:  "
            f"Failing row contains (CA77, +14155550123, 912345678{more})."))

    return failing


def test_a_failing_webhook_logs_its_error_without_the_numbers_the_database_quoted(
        twilio, ivr, call_sid, monkeypatch):
    """PostgreSQL quotes a failing row in its error ("Failing row contains (...)"): the
    caller's number and a PMI would reach the log with the traceback. The log's formatter
    keeps the last four digits of every long number in an error's text."""
    from ivr.storage.calls import CallRepository

    stream = captured_log(monkeypatch)
    monkeypatch.setattr(CallRepository, "save", failing_on_a_row_quoting_numbers(
        "INSERT INTO calls ...", "step", ", 2026-11-25 12:00:00.123456"))
    twilio.post("/voice", **twilio.call_params(call_sid))
    answer = twilio.post("/voice/menu", **{**twilio.call_params(call_sid), "Digits": "2"})
    assert answer.status_code == 200  # the caller still hears the fallback
    logged = stream.getvalue()
    assert "webhook /voice/menu failed" in logged and "Failing row contains" in logged
    assert "4155550123" not in logged and "912345678" not in logged
    assert "…0123" in logged and "…5678" in logged


def test_a_line_break_from_a_request_cannot_forge_a_line_of_the_log(desk_app, monkeypatch):
    """A refused API request logs its path; a %0A in it must not start a new entry that
    reads like the service's own."""
    stream = captured_log(monkeypatch)
    forged = "2026-11-25 12:00:00,000 INFO ivr.dashboard: dashboard sign-in (admin)"
    response = desk_app.test_client().get("/api/tickets/1%0A" + forged.replace(" ", "%20"),
                                     headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    logged = stream.getvalue()
    assert "dashboard sign-in" in logged  # the path is logged...
    assert not any(line.startswith(forged) for line in logged.splitlines())  # ...on its own line
    assert "\\n2026-11-25" in logged


def test_the_senders_line_about_a_database_that_does_not_answer_cuts_the_numbers_in_its_text(
        ivr, monkeypatch):
    """`outbox drain --watch` says in one line, not a traceback, why the database does not
    answer, and that line quotes the driver's error: the error's text is not the service's
    own, so a long number in it is cut to its last four digits, as in a traceback."""
    from sqlalchemy.exc import OperationalError

    from ivr import outbox

    class Stop(Exception):
        pass

    def down(*_args, **_kwargs):
        raise OperationalError("UPDATE outbox ...", {}, Exception(
            "could not serialize access: row (7, +14155550123, 912345678) was changed"))

    def sleep(_seconds):
        raise Stop

    stream = captured_log(monkeypatch)
    monkeypatch.setattr(outbox, "drain_all", down)
    monkeypatch.setattr(outbox.time, "sleep", sleep)
    with pytest.raises(Stop):
        outbox.watch(ivr.storage, ivr.settings, ivr.service, ivr.floor)
    logged = stream.getvalue()
    assert "waiting for the database" in logged and "could not serialize" in logged
    assert "4155550123" not in logged and "912345678" not in logged


def test_a_command_that_fails_unexpectedly_shows_its_traceback_without_the_numbers_quoted(
        ivr, app, monkeypatch):
    """`retention apply` runs daily from cron, whose mail carries what a command writes to
    standard error. A command that failed on an error nobody foresaw printed Python's own
    traceback, and with it the row PostgreSQL quoted in full; the traceback now goes
    through the log's formatter, as a webhook's does, and the command exits with 1."""
    from ivr.storage.retention import RetentionRepository

    stream = captured_log(monkeypatch)
    monkeypatch.setattr(RetentionRepository, "apply",
                        failing_on_a_row_quoting_numbers("UPDATE calls ...", "region"))
    result = app.test_cli_runner().invoke(args=["retention", "apply"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result
    logged = stream.getvalue()
    assert "retention apply failed" in logged and "Failing row contains" in logged
    assert "4155550123" not in logged + result.output and "912345678" not in logged
    assert "…0123" in logged


def test_a_command_stopped_by_the_statement_limit_says_so_and_how_to_lift_it(
        short_statements, app, settings, clock):
    """A command whose statement runs past STATEMENT_SECONDS is not told the database is
    unreachable (it answered): the line names the limit and how to lift it for one run,
    and running it so then works."""
    slower_than_the_statement_limit(app, "DELETE", "lockouts")
    unlock = ["accounts", "unlock", "--caller", CALLER]
    result = app.test_cli_runner().invoke(args=unlock)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "unreachable" not in line
    assert "statement_timeout=0" in line and "IVR_DATABASE_URL" in line
    url = make_url(settings.database_url)
    lifted = url.update_query_dict({"options": url.query["options"] + " -c statement_timeout=0"})
    patient = create_app(settings.model_copy(update={
        "database_url": lifted.render_as_string(hide_password=False)}), clock=clock)
    try:
        result = patient.test_cli_runner().invoke(args=unlock)
    finally:
        patient.extensions["ivr"].storage.dispose()
    assert result.exit_code == 0, result.output
