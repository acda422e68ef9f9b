"""Operator commands on a database whose schema is not this version's: none yet
(`init-db` not run) or an older one (the code deployed, the upgrade not run). Each stops
before doing anything, in one line that says what to run, with no traceback; a command
that can work without the database (`spool status`) still does."""

import json

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from ivr import create_app
from ivr.storage.engine import MIGRATIONS

from ..support import US_LINE

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()

# Every operator command that reads or writes the database, with arguments it accepts.
COMMANDS = [
    ["accounts", "import", "config/demo-accounts.csv"],
    ["accounts", "locks"],
    ["accounts", "unlock", "5550100201"],
    ["accounts", "unlock", "--caller", "+14155550100"],
    ["accounts", "purge-failures"],
    ["tickets", "list"],
    ["tickets", "list", "--json"],
    ["tickets", "show", "1"],
    ["tickets", "close", "1"],
    ["tickets", "set-priority", "1", "2"],
    ["tickets", "export"],
    ["tickets", "callback", "1", "--engineer", "aiko"],
    ["outbox", "drain"],
    ["retention", "apply", "--dry-run"],
    ["retention", "apply"],
    ["engineers", "add", "aiko", "--phone", "+15105550111"],
    ["engineers", "rotate-token", "aiko"],
    ["simulate", "--to", US_LINE, "--digits", "2 5550100201# 9164023# 1"],
    ["simulate", "--calls", "2", "--concurrency", "1"],
]


@pytest.fixture
def bare(settings, clock):
    """The app on a database at the revision the test asks for (None: no tables)."""
    made = []

    def at(revision):
        app = create_app(settings, clock=clock)
        made.append(app)
        if revision is not None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            with app.extensions["ivr"].storage.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        return app

    yield at
    for app in made:
        app.extensions["ivr"].storage.dispose()


def tables(app):
    with app.extensions["ivr"].storage.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        else:
            rows = connection.execute(text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"))
        return {name for (name,) in rows}


def counts(app, names):
    with app.extensions["ivr"].storage.engine.connect() as connection:
        return {name: connection.execute(text(f"SELECT count(*) FROM {name}")).scalar()
                for name in names}


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_on_an_older_schema_every_command_stops_saying_to_run_init_db(bare, args):
    app = bare("0010")
    before = counts(app, sorted(tables(app) - {"alembic_version"}))
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: the database's schema is at revision 0010, older than "
                           f"this version's {HEAD}"), line
    assert line.endswith("run `flask --app app init-db` first")
    assert counts(app, before) == before
    assert not list((app.extensions["ivr"].settings.instance_path / "spool").glob("*.jsonl"))


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_on_a_database_without_tables_every_command_stops_saying_to_run_init_db(bare, args):
    app = bare(None)
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: the database has no tables yet"), line
    assert line.endswith("run `flask --app app init-db` first")
    assert tables(app) == set()
    # simulate made no call: nothing was spooled as if the database were down
    assert not list((app.extensions["ivr"].settings.instance_path / "spool").glob("*.jsonl"))


def test_init_db_brings_an_older_schema_up_and_the_commands_run_again(bare):
    app = bare("0010")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    result = runner.invoke(args=["tickets", "list"])
    assert result.exit_code == 0 and result.output.strip() == "No tickets."


def test_engineers_list_and_remove_run_on_the_older_schema_an_upgrade_refused(bare):
    """The upgrade that makes names unique in any case stops on 'Aiko' and 'aiko' and asks
    for `engineers remove NAME`: that, and seeing who is there, work before it."""
    app = bare("0011")
    with app.extensions["ivr"].storage.engine.begin() as connection:
        for name in ("aiko", "Aiko"):
            connection.execute(text(
                "INSERT INTO engineers (name, phone, languages, queues, token_hash, "
                "token_rotated_at, created_at) VALUES (:name, NULL, '', '', :token, :at, :at)"),
                {"name": name, "token": name.encode().hex().ljust(64, "0"),
                 "at": "2026-11-25 12:00:00"})
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 1
    listed = runner.invoke(args=["engineers", "list", "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.output)) == 2
    assert runner.invoke(args=["engineers", "remove", "Aiko"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).exit_code == 0


def test_spool_status_reads_no_database_and_answers_on_any_schema(bare):
    for app in (bare(None), bare("0010")):
        result = app.test_cli_runner().invoke(args=["spool", "status"])
        assert result.exit_code == 0 and "0 records waiting" in result.output


class Stop(Exception):
    pass


def test_the_sender_waits_for_the_schema_with_one_line_a_state_not_a_traceback_a_round(
        bare, caplog, monkeypatch):
    """`outbox drain --watch` on a database without its tables (a restore under way,
    init-db not run) keeps waiting, as for a database that does not answer; it says so in
    one line when it starts and once more when the database is back, not with a driver's
    traceback every two seconds."""
    import logging

    from ivr import outbox

    app = bare(None)
    ivr = app.extensions["ivr"]
    rounds = []

    def sleep(seconds):
        rounds.append(seconds)
        if len(rounds) == 3:
            ivr.storage.upgrade()  # init-db run meanwhile
        if len(rounds) == 5:
            raise Stop

    monkeypatch.setattr(outbox.time, "sleep", sleep)
    caplog.set_level(logging.INFO, logger="ivr.outbox")
    with pytest.raises(Stop):
        outbox.watch(ivr.storage, ivr.settings, ivr.service, ivr.floor)
    records = [r for r in caplog.records if r.name == "ivr.outbox"]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]
    messages = [r.getMessage() for r in records]
    assert len(messages) == 2, messages
    assert "init-db" in messages[0] and "no tables" in messages[0]
    assert "back" in messages[1]
