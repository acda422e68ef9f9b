"""Shared fixtures: an app on a fresh SQLite database with the demo directory loaded,
a controllable clock, a Twilio-signing client and the call simulator."""

from __future__ import annotations

import datetime as dt

import pytest

from ivr import create_app
from ivr.accounts import import_file
from ivr.config import Settings, load_config
from ivr.simulator import Simulator, WsgiTransport, new_call_sid

from .support import CONFIG, DEMO_ACCOUNTS, TOKEN, Clock, TwilioClient


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        config_path=CONFIG,
        database_url=f"sqlite:///{tmp_path}/ivr.db",
        instance_path=tmp_path / "instance",
        twilio_auth_token=TOKEN,
        host_key_pepper="test-pepper",
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
    return Simulator(WsgiTransport(app), TOKEN)


@pytest.fixture
def call_sid() -> str:
    return new_call_sid()
