"""The migrations and the models describe the same schema."""

from __future__ import annotations

import subprocess
import sys

from ..support import ROOT

CHECK = """
import sys, tempfile
from alembic import command
from alembic.config import Config
from ivr.storage.engine import MIGRATIONS, Storage
with tempfile.TemporaryDirectory() as folder:
    url = f"sqlite:///{folder}/check.db"
    storage = Storage(url)
    storage.upgrade()
    storage.dispose()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.check(config)
"""


def test_alembic_finds_nothing_to_autogenerate_from_a_fresh_interpreter():
    """Run as an operator would (``alembic check``, nothing else imported first): every
    table the models declare, in whichever module, is seen, and none needs a change. A
    table its migration env cannot see would come out as a drop."""
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No new upgrade operations detected" in done.stdout


WHEN = "2026-11-25 12:00:00.000000"


def test_a_sqlite_database_with_tickets_from_before_the_table_rebuilds_upgrades_and_keeps_them(
        tmp_path):
    """SQLite changes a column by copying its table and dropping the old one; with a ticket
    pointing at a call, that drop must not stop the upgrade (and leave the app serving an
    old schema)."""
    from alembic import command
    from alembic.config import Config

    from ivr.storage.engine import MIGRATIONS, Storage

    storage = Storage(f"sqlite:///{tmp_path}/old.db")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with storage.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    with storage.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO calls (call_sid, dialed_number, region, language, caller_number,"
            " can_text, step, english, attempts, auth_failures, steps_reached, started_at,"
            " updated_at) VALUES ('CA1', '+18887999666', 'United States', 'en-US',"
            f" '+14155550100', 1, 'done', 0, 0, 0, '', '{WHEN}', '{WHEN}')")
        connection.exec_driver_sql(
            "INSERT INTO tickets (number, call_sid, account_id, user_email, priority,"
            " target_response_minutes, region, status, created_at) VALUES ('12345678', 'CA1',"
            f" 'acct', 'a@example.com', 1, 60, 'United States', 'in_queue', '{WHEN}')")
    storage.upgrade()
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM tickets").scalar() == 1
        assert connection.exec_driver_sql("SELECT count(*) FROM calls").scalar() == 1
        assert connection.exec_driver_sql("SELECT count(*) FROM lockouts").scalar() == 0
        # Foreign keys are enforced again on the connections that follow.
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    storage.dispose()


def _back_to(ivr, revision):
    from alembic import command
    from alembic.config import Config

    from ivr.storage.engine import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with ivr.storage.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _revision(ivr):
    with ivr.storage.engine.connect() as connection:
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _clear_pmi_counters(ivr, clock):
    """Counters as releases before 0015 kept them: a lock on a directory PMI, failures of
    a mistyped one, and a caller's, each under the digits typed."""
    import datetime as dt

    from ivr.storage.models import Lockout

    until = clock.now + dt.timedelta(minutes=15)
    with ivr.storage.transaction() as session:
        session.add_all([
            Lockout(key="pmi:5550100201", failures=0, window_started_at=clock.now,
                    lock_count=1, locked_until=until, attempts_while_locked=2,
                    updated_at=clock.now),
            Lockout(key="pmi:5550100202", failures=3, window_started_at=clock.now,
                    lock_count=0, locked_until=None, attempts_while_locked=0,
                    updated_at=clock.now),
            Lockout(key="caller:+12025550007", failures=4, window_started_at=clock.now,
                    lock_count=0, locked_until=None, attempts_while_locked=0,
                    updated_at=clock.now),
        ])
    return until


def _counters(ivr):
    from sqlalchemy import select

    from ivr.storage.models import Lockout

    with ivr.storage.reading() as session:
        return {row.key: (row.failures, row.lock_count, row.locked_until,
                          row.attempts_while_locked) for row in session.scalars(select(Lockout))}


def test_the_upgrade_hashes_pmi_counters_kept_in_clear_and_keeps_their_locks(app, ivr, clock):
    """Counters of a PMI were kept under the digits typed; the upgrade keys them by the
    keyed hash the service now looks them up by, so every lock and count goes on
    holding, and no typed PMI is left in the table."""
    _back_to(ivr, "0014")
    until = _clear_pmi_counters(ivr, clock)
    upgraded = app.test_cli_runner().invoke(args=["init-db"])
    assert upgraded.exit_code == 0, upgraded.output
    assert not [key for key in _counters(ivr) if "555010020" in key]
    from ivr.domain.phones import pmi_lockout_key

    hashed = {pmi: pmi_lockout_key(ivr.hasher.pmi_lockout_digest(pmi))
              for pmi in ("5550100201", "5550100202")}
    assert _counters(ivr) == {
        hashed["5550100201"]: (0, 1, until, 2),
        hashed["5550100202"]: (3, 0, None, 0),
        "caller:+12025550007": (4, 0, None, 0),
    }
    listed = app.test_cli_runner().invoke(args=["accounts", "locks"]).output
    assert [row.split("  ")[0] for row in listed.splitlines()[1:]] == ["PMI 5550100201"]


def test_an_upgrade_without_the_pepper_leaves_clear_pmi_counters_and_says_how(app, ivr, clock):
    """Only the app knows the pepper: an upgrade run without it (``alembic upgrade``, or
    ``Storage.upgrade()`` alone) cannot hash the counters, so it stops, changes nothing
    and names the command that can."""
    import pytest

    from ivr.storage.engine import UpgradeRefused

    _back_to(ivr, "0014")
    _clear_pmi_counters(ivr, clock)
    with pytest.raises(UpgradeRefused, match="init-db"):
        ivr.storage.upgrade()
    assert _revision(ivr) == "0014"
    assert {key for key in _counters(ivr) if key.startswith("pmi:")} == {
        "pmi:5550100201", "pmi:5550100202"}
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    assert not [key for key in _counters(ivr) if key.startswith("pmi:")]


def test_a_downgrade_below_the_hashed_counters_forgets_them_and_keeps_the_callers(
        app, ivr, clock):
    """A keyed hash cannot be turned back into the PMI it came from: going back to 0014
    drops the PMIs' counters, which that release could not find, and keeps the callers'."""
    _back_to(ivr, "0014")
    _clear_pmi_counters(ivr, clock)
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    _back_to(ivr, "0014")
    assert _counters(ivr) == {"caller:+12025550007": (4, 0, None, 0)}
