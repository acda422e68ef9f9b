"""Helpers for the support-desk tests: calls and tickets inserted with known times."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets

from ivr.storage.models import Call, Ticket
from ivr.sim.simulator import new_call_sid

from .support import CALLER, US_LINE

ADMIN_TOKEN = "desk-token-5b0c1e9a7f3d4c2b-8e6a0d1f3c5b7a9e"
UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    """A UTC time written as '2026-11-25 09:30'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_call(ivr, *, started: dt.datetime, region: str = "United States",
             outcome: str | None = "routed", caller: str = CALLER) -> str:
    sid = new_call_sid()
    with ivr.storage.transaction() as session:
        session.add(Call(call_sid=sid, dialed_number=US_LINE, region=region, language="en-US",
                         caller_number=caller, can_text=True, step="done", english=False,
                         attempts=0, auth_failures=0, steps_reached="menu,pmi,host_key",
                         outcome=outcome, started_at=started, updated_at=started))
    return sid


def add_ticket(ivr, *, created: dt.datetime, priority: int = 1, region: str = "United States",
               acknowledged: dt.datetime | None = None, status: str = "open",
               caller: str = CALLER, callback_number: str | None = None) -> Ticket:
    sid = add_call(ivr, started=created, region=region, caller=caller)
    ticket = Ticket(
        number=str(10_000_000 + secrets.randbelow(90_000_000)), call_sid=sid,
        account_id="demo-business", user_email="owner.business@example.com", priority=priority,
        target_response_minutes=ivr.config.priority(priority).target_response_minutes,
        region=region, status=status, created_at=created, acknowledged_at=acknowledged,
        callback_number=callback_number)
    with ivr.storage.transaction() as session:
        session.add(ticket)
    return ticket


def admin_app(settings, clock, token: str | None = ADMIN_TOKEN):
    """The app with the admin API and dashboard on (or off with token=None), demo
    directory loaded."""
    from ivr import create_app
    from ivr.desk.directory import import_file

    from .support import DEMO_ACCOUNTS

    app = create_app(settings.model_copy(update={"admin_token": token}), clock=clock)
    ivr = app.extensions["ivr"]
    ivr.storage.upgrade()
    import_file(DEMO_ACCOUNTS, ivr.storage, ivr.hasher, ivr.config.lengths)
    return app


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    def text(self) -> str:
        return " ".join(" ".join(self.parts_deep()).split())

    def parts_deep(self):
        for part in self.parts:
            yield part if isinstance(part, str) else part.text()

    def iter(self, tag: str | None = None):
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def find(self, id: str) -> "Element":
        found = [e for e in self.iter() if e.attrs.get("id") == id]
        assert len(found) == 1, f"expected one element with id {id!r}, found {len(found)}"
        return found[0]

    def has(self, id: str) -> bool:
        return any(e.attrs.get("id") == id for e in self.iter())

    def field(self, name: str) -> str | None:
        for e in self.iter():
            if e.tag in ("input", "select", "button") and e.attrs.get("name") == name:
                return e.attrs.get("value")
        return None

    def rows(self) -> list[tuple[dict, list[str]]]:
        """(attributes, cell texts) of each body row of a table."""
        body = next(self.iter("tbody"))
        return [(tr.attrs, [c.text() for c in tr.children if c.tag in ("td", "th")])
                for tr in body.iter("tr")]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "rect", "line"}


def parse_html(text: str) -> Element:
    """The document as a tree of Elements (html.parser), for asserting on structure."""
    from html.parser import HTMLParser

    root = Element("#document", {})
    stack = [root]

    class Builder(HTMLParser):
        def handle_starttag(self, tag, attrs):
            element = Element(tag, {k: v or "" for k, v in attrs})
            stack[-1].children.append(element)
            stack[-1].parts.append(element)
            if tag not in VOID:
                stack.append(element)

        def handle_startendtag(self, tag, attrs):
            element = Element(tag, {k: v or "" for k, v in attrs})
            stack[-1].children.append(element)
            stack[-1].parts.append(element)

        def handle_endtag(self, tag):
            if tag in VOID:
                return
            while len(stack) > 1:
                if stack.pop().tag == tag:
                    break

        def handle_data(self, data):
            stack[-1].parts.append(data)

    Builder(convert_charrefs=True).feed(text)
    return root



def sign_in(client, token: str = ADMIN_TOKEN):
    """Posts the dashboard's sign-in form (with its CSRF token) and returns the response."""
    form = parse_html(client.get("/admin/login").get_data(as_text=True)).find("login")
    return client.post("/admin/login", data={"csrf_token": form.field("csrf_token"),
                                             "token": token})


def signed_in(app, token: str = ADMIN_TOKEN):
    """A test client signed in to the dashboard with the token (the admin's by default)."""
    client = app.test_client()
    response = sign_in(client, token)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


class RowsRead:
    """Rows the database handed to Python, per statement."""

    def __init__(self):
        self.per_statement: dict[int, int] = {}
        self._cursors = []  # kept alive, so no two statements share an id

    def count(self, cursor) -> None:
        key = id(cursor)
        if key not in self.per_statement:
            self._cursors.append(cursor)
            self.per_statement[key] = 0
        self.per_statement[key] += 1

    @property
    def total(self) -> int:
        return sum(self.per_statement.values())

    @property
    def most(self) -> int:
        return max(self.per_statement.values(), default=0)


@contextlib.contextmanager
def rows_read(storage):
    """Counts every row fetched on the storage's connections while the block runs (the
    driver's row factory sees each one), whatever layer asked for it."""
    from sqlalchemy import event

    seen = RowsRead()
    if storage.dialect == "sqlite":
        def factory(cursor, row):
            seen.count(cursor)
            return row

        def plain():
            return None
    else:
        from psycopg.rows import tuple_row

        def factory(cursor):
            make = tuple_row(cursor)

            def row(values):
                seen.count(cursor)
                return make(values)
            return row

        def plain():
            return tuple_row

    def checkout(dbapi_connection, record, proxy):
        dbapi_connection.row_factory = factory

    def checkin(dbapi_connection, record):
        if dbapi_connection is not None:
            dbapi_connection.row_factory = plain()

    event.listen(storage.engine, "checkout", checkout)
    event.listen(storage.engine, "checkin", checkin)
    try:
        yield seen
    finally:
        event.remove(storage.engine, "checkout", checkout)
        event.remove(storage.engine, "checkin", checkin)
