"""Helpers for the support-desk tests: calls and tickets inserted with known times."""

from __future__ import annotations

import datetime as dt
import secrets

from ivr.models import Call, Ticket
from ivr.simulator import new_call_sid

from .support import CALLER, US_LINE

ADMIN_TOKEN = "desk-token-5b0c1e9a7f3d4c2b"
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
