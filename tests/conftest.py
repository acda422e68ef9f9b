"""Shared fixtures: an app on a fresh SQLite database with the demo directory loaded,
a controllable clock, a Twilio-signing client and the call simulator."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from ivr import create_app
from ivr.desk.directory import import_file
from ivr.config import Settings, load_config
from ivr.sim.simulator import Simulator, WsgiTransport, new_call_sid

from .support import (CONFIG, DEMO_ACCOUNTS, PEPPER, TOKEN, Clock, TwilioClient, postgres_schema,
                      unreachable_database_url)


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc))


POSTGRES_URL = os.environ.get("IVR_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Each test's own database: a SQLite file, or a fresh PostgreSQL schema dropped after.

    Every test that stores anything runs on both when IVR_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ivr.db"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need IVR_TEST_POSTGRES_URL "
                    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    with postgres_schema(POSTGRES_URL) as url:
        yield url


@pytest.fixture
def short_statements(monkeypatch, database_url):
    """PostgreSQL only: the app made after this cancels a statement still running after
    1 s instead of STATEMENT_SECONDS (ask for it before ``app``)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's statement_timeout")
    from ivr.storage import engine

    monkeypatch.setattr(engine, "STATEMENT_SECONDS", 1.0)


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(
        config_path=CONFIG,
        database_url=database_url,
        instance_path=tmp_path / "instance",
        twilio_auth_token=TOKEN,
        host_key_pepper=PEPPER,
    )


@pytest.fixture
def app(settings, clock):
    app = create_app(settings, clock=clock)
    ivr = app.extensions["ivr"]
    ivr.storage.upgrade()
    import_file(DEMO_ACCOUNTS, ivr.storage, ivr.hasher, ivr.config.lengths)
    yield app
    ivr.storage.dispose()


@pytest.fixture
def desk_app(settings, clock):
    """The app with the support desk's API and dashboard on."""
    from .desk_support import admin_app

    app = admin_app(settings, clock)
    yield app
    app.extensions["ivr"].storage.dispose()


@pytest.fixture
def ivr(app):
    return app.extensions["ivr"]


@pytest.fixture
def config():
    return load_config(CONFIG)


@pytest.fixture
def twilio(app) -> TwilioClient:
    return TwilioClient(app)


@pytest.fixture
def simulator(app) -> Simulator:
    """The simulator as `simulate` runs it: its outcome is the service's record of the call."""
    from ivr.cli import recorded_outcome

    return Simulator(WsgiTransport(app), TOKEN,
                     recorded=recorded_outcome(app.extensions["ivr"].storage))


@pytest.fixture
def dead(settings, clock, database_url, tmp_path) -> TwilioClient:
    """Another worker of the same deployment whose database cannot be reached."""
    url = unreachable_database_url(database_url, tmp_path)
    return TwilioClient(create_app(settings.model_copy(update={"database_url": url}),
                                   clock=clock))


@pytest.fixture
def call_sid() -> str:
    return new_call_sid()


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    postgres = [r for r in skipped if "IVR_TEST_POSTGRES_URL" in str(r.longrepr)]
    if postgres:
        terminalreporter.write_line(
            f"{len(postgres)} PostgreSQL variants skipped: set IVR_TEST_POSTGRES_URL "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run them.")
    others = [r for r in skipped if r not in postgres]
    for report in others:
        terminalreporter.write_line(f"SKIPPED {report.nodeid}: {report.longrepr[-1]}")
