"""What a phone ticket and its changes look like in the help desk, in the agents'
language (English): subject, private note, tags and named field values.

Personal data that leaves the service this way: the account id and user email
(requester), the caller's number masked to its last four digits, and the callback number
whole when the caller asked to be called back.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from ..config import IvrConfig
from ..domain.phones import mask
from ..domain.priority import LEVELS
from .base import NewTicket, TicketChange

LANGUAGES = {
    "en-US": "English (US)", "en-GB": "English (UK)", "en-AU": "English (Australia)",
    "en-IN": "English (India)", "en-NZ": "English (New Zealand)", "fr-FR": "French",
    "ja-JP": "Japanese",
}
PRIORITY_TAGS = tuple(f"priority_p{level}" for level in LEVELS)


def tag(prefix: str, value: str | None) -> str:
    """A Zendesk tag: lower case, words joined by underscores."""
    slug = re.sub(r"[^a-z0-9]+", "_", (value or "unknown").lower()).strip("_") or "unknown"
    return f"{prefix}_{slug}"[:80]


def language_name(code: str | None) -> str:
    return f"{LANGUAGES[code]} ({code})" if code in LANGUAGES else (code or "unknown")


def new_ticket(ticket, call, config: IvrConfig) -> NewTicket:
    """The create of a phone ticket; ``ticket`` and ``call`` as stored."""
    priority = config.priority(ticket.priority)
    line = config.line_for(call.dialed_number)
    region = line.region if line is not None else ticket.region
    plan = (call.plan or "unknown").capitalize()
    target = ticket.created_at + dt.timedelta(minutes=ticket.target_response_minutes)
    rows = [
        ("Priority", f"P{ticket.priority} {priority.name} (target response "
                     f"{ticket.target_response_minutes} min, by {target:%Y-%m-%d %H:%M} UTC)"),
        ("Region", region),
        ("Line dialled", call.dialed_number),
        ("Language", language_name(call.language)),
        ("Plan", plan),
        ("Role", call.role or "unknown"),
        ("Account", f"{ticket.account_id} ({ticket.user_email})"),
        ("Call SID", call.call_sid),
        ("Caller", mask(call.caller_number)),
        ("Logged", f"{ticket.created_at:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    if ticket.callback_number:
        rows.append(("Call back on", ticket.callback_number))
    note = (f"Phone ticket {ticket.number}, logged by the support line.\n\n"
            + "\n".join(f"{name}: {value}" for name, value in rows))
    email = ticket.user_email if "@" in (ticket.user_email or "") else None
    return NewTicket(
        external_id=ticket.number,
        subject=f"Phone: P{ticket.priority} {priority.name}, {plan} ({region} line)",
        note=note,
        priority=ticket.priority,
        requester_email=email,
        tags=("phone", tag("region", region), tag("plan", call.plan),
              tag("language", call.language), f"priority_p{ticket.priority}"),
        fields={"region": region, "line": call.dialed_number,
                "language": call.language or "unknown", "plan": call.plan or "unknown",
                "role": call.role or "unknown", "account": ticket.account_id,
                "call_sid": call.call_sid,
                "target_response_minutes": str(ticket.target_response_minutes)},
        status="solved" if ticket.status == "closed" else None,
    )


def as_it_stands(ticket: NewTicket, job_id: int) -> TicketChange:
    """The update that brings a ticket found already made in the help desk, by a create
    the phone line never heard back from, to what a create now would make of it."""
    marker = f"Ref: phone-change-{job_id}"
    return TicketChange(marker=marker, note=f"{ticket.note}\n\n{marker}",
                        priority=ticket.priority, status=ticket.status,
                        add_tags=ticket.tags,
                        remove_tags=tuple(t for t in PRIORITY_TAGS if t not in ticket.tags),
                        fields=dict(ticket.fields))


def change(job_id: int, event: str, data_json: str | None, at: dt.datetime,
           config: IvrConfig) -> TicketChange:
    """The update a queued change becomes."""
    data = json.loads(data_json or "{}")
    marker = f"Ref: phone-change-{job_id}"
    when = f"{at:%Y-%m-%d %H:%M} UTC"
    if event == "priority":
        level = int(data["priority"])
        before = data.get("previous")
        was = f"P{before} {config.priority(before).name} -> " if before else ""
        minutes = data.get("target_response_minutes",
                           config.priority(level).target_response_minutes)
        note = (f"Priority changed on the phone desk at {when}: {was}P{level} "
                f"{config.priority(level).name} (target response {minutes} min).")
        return TicketChange(marker=marker, note=f"{note}\n\n{marker}", priority=level,
                            add_tags=(f"priority_p{level}",),
                            remove_tags=tuple(t for t in PRIORITY_TAGS
                                              if t != f"priority_p{level}"),
                            fields={"target_response_minutes": str(minutes)})
    if event == "callback_requested":
        number = data.get("callback_number")
        note = (f"The caller left the queue at {when} and asked to be called back"
                + (f" on {number}." if number else "; no number to call back was received."))
        return TicketChange(marker=marker, note=f"{note}\n\n{marker}",
                            add_tags=("phone_callback",))
    if event == "connected":
        # No status: a late "connected" must not reopen a ticket an agent already solved.
        return TicketChange(marker=marker, add_tags=("phone_connected",),
                            note=f"The caller was connected to an engineer at {when}."
                                 f"\n\n{marker}")
    if event == "closed":
        return TicketChange(marker=marker, status="solved",
                            note=f"Closed on the phone desk at {when}.\n\n{marker}")
    raise ValueError(f"unknown help-desk change {event!r}")
