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
