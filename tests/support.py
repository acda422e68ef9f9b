"""Helpers shared by the tests: demo callers, a Twilio-signing client, TwiML parsing."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "ivr.toml"
DEMO_ACCOUNTS = ROOT / "config" / "demo-accounts.csv"
TOKEN = "test-auth-token-0123456789abcdef"
PEPPER = "test-pepper-of-thirty-two-chars!"  # IVR_HOST_KEY_PEPPER: 32 characters at least
CALLER = "+14155550100"  # a US number that can receive text messages
US_LINE = "+18887999666"

# From the demo directory (config/demo-accounts.csv).
BUSINESS_OWNER = ("5550100201", "9164023")
PRO_OWNER = ("5550100101", "3917462")
FREE_OWNER = ("5550100001", "482913")
BUSINESS_MEMBER = ("5550100221", "8539201")


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += dt.timedelta(**delta)


class TwilioClient:
    """Posts webhooks signed exactly as Twilio signs them."""

    def __init__(self, app, token: str = TOKEN, base: str = "http://localhost"):
        self.client = app.test_client()
        self.validator = RequestValidator(token)
        self.base = base

    def post(self, path: str, signed: bool = True, signature: str | None = None, **params):
        return self.post_form(path, params, signed, signature)

    def post_form(self, path: str, form: dict, signed: bool = True,
                  signature: str | None = None):
        """``post`` for a form whose field names are arbitrary (they could be "path")."""
        headers = {}
        if signed:
            headers["X-Twilio-Signature"] = signature or self.validator.compute_signature(
                self.base + path, form)
        return self.client.post(path, data=form, headers=headers)

    def call_params(self, call_sid: str, to: str = US_LINE, caller: str = CALLER) -> dict:
        return {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": caller, "To": to,
                "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01"}


def unreachable_database_url(database_url: str, tmp_path: Path) -> str:
    """A URL of the same kind of database as ``database_url`` that cannot be reached: a
    closed port, or a directory where SQLite expects its file."""
    if database_url.startswith("postgresql"):
        return "postgresql+psycopg://postgres@127.0.0.1:1/test"
    (tmp_path / "gone.db").mkdir()
    return f"sqlite:///{tmp_path}/gone.db"


@contextlib.contextmanager
def postgres_admin(url):
    """A connection of its own to a PostgreSQL server, outside the app's pool, each
    statement committed as it runs (to create and drop schemas, watch and end backends)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            yield connection
    finally:
        admin.dispose()


@contextlib.contextmanager
def postgres_schema(server_url: str):
    """A URL whose connections live in a new, empty schema; the schema is dropped after,
    and any connection a test left open to it is closed first."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    with postgres_admin(server_url) as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    url = make_url(server_url).update_query_dict(
        {"options": f"-csearch_path={name}", "application_name": name})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with postgres_admin(server_url) as connection:
            end_backends(connection, name)
            connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))


def end_backends(admin, application_name: str) -> int:
    """Terminate, on the server, every backend of an application but the admin's own."""
    from sqlalchemy import text

    return admin.execute(text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = :name AND pid <> pg_backend_pid()"),
        {"name": application_name}).scalar()


def until_waiting_for_a_lock(ivr, thread, what: str) -> None:
    """PostgreSQL: return once one of the app's connections waits for a lock (what
    ``thread`` is about to do); fail if ``thread`` ends first or 10 s pass."""
    from sqlalchemy import text

    name = ivr.storage.engine.url.query["application_name"]
    deadline = time.monotonic() + 10
    with postgres_admin(ivr.storage.engine.url) as connection:
        while not connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                "AND wait_event_type = 'Lock'"), {"name": name}).scalar():
            assert thread.is_alive() and time.monotonic() < deadline, \
                f"{what} never waited for a lock"
            time.sleep(0.02)


def pause(monkeypatch, owner, name: str, *, before: bool = False,
          thread: str | None = None) -> tuple[threading.Event, threading.Event]:
    """Make ``owner.name`` (a class's method or an object's) stop the first time it is
    called (in the thread named ``thread``, if given), once it has run, or just before
    with ``before``: ``reached`` is set then, and it goes on once ``release`` is set.
    Returns (reached, release)."""
    original = getattr(owner, name)
    reached, release = threading.Event(), threading.Event()

    def paused(*args, **kwargs):
        mine = not reached.is_set() and (
            thread is None or threading.current_thread().name == thread)
        if mine and before:
            reached.set()
            assert release.wait(20)
        result = original(*args, **kwargs)
        if mine and not before:
            reached.set()
            assert release.wait(20)
        return result

    monkeypatch.setattr(owner, name, paused)
    return reached, release


def second_waits_for_first(ivr, first: threading.Thread, reached: threading.Event,
                           release: threading.Event, second: threading.Thread,
                           what: str) -> None:
    """Start ``first`` and let it reach its pause (``pause``), then start ``second`` and
    return once it waits for a lock (the one ``first`` holds, PostgreSQL); then let
    ``first`` go on and await both."""
    if not first.is_alive():
        first.start()
    assert reached.wait(10), "the first never reached its pause"
    second.start()
    until_waiting_for_a_lock(ivr, second, what)
    release.set()
    first.join(15)
    second.join(15)


class Outcomes:
    """Handlers run in threads, each one's result or error kept under its name (a
    database error as the driver's own, first line only)."""

    def __init__(self):
        self.results: dict = {}
        self.errors: dict = {}

    def thread(self, name: str, handler, *args) -> threading.Thread:
        def run():
            try:
                self.results[name] = handler(*args)
            except Exception as error:  # noqa: BLE001  reported by the test's assertion
                cause = getattr(error, "orig", None) or error
                self.errors[name] = f"{type(cause).__name__}: {str(cause).splitlines()[0]}"

        return threading.Thread(name=name, target=run)


def twiml(response) -> ET.Element:
    """The response's TwiML, parsed; fails the test if it is not a TwiML document."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_data())
    assert root.tag == "Response"
    return root


def spoken(root: ET.Element) -> list[str]:
    """Every <Say> text in document order, digits read back joined."""
    out = []
    for say in root.iter("Say"):
        out.append("".join(say.itertext()).strip())
    return out


class RecordingHttpClient:
    """Stands in for Twilio's REST API at the HTTP boundary: records each request and
    answers with the queued responses (status, JSON body), 201 with a message SID by default."""

    def __init__(self, responses=None):
        import logging

        from twilio.http import HttpClient

        self._base = HttpClient(logging.getLogger("tests.twilio"), is_async=False)
        self.requests: list[dict] = []
        self.responses = list(responses or [])

    def request(self, method, uri, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        import json

        from twilio.http.response import Response

        self.requests.append({"method": method, "uri": uri, "data": dict(data or {}),
                              "auth": auth})
        status, body = self.responses.pop(0) if self.responses else (
            201, {"sid": f"SM{len(self.requests):032d}", "status": "queued"})
        return Response(status, json.dumps(body))
