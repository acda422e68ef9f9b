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
