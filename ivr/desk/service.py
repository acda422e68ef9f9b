"""The support desk: the ticket lifecycle, time left to target, traffic and SLA figures and
ticket exports. Plain Python over the storage layer's DeskRepository; the operator
commands, the JSON API and the dashboard all go through ``Desk``.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..config import IvrConfig
from ..domain.lifecycle import (STATUSES, UNCLOSED, ForbiddenMove, TicketStatus, left_the_queue,
                                move)
from ..domain.digits import ascii_number
from ..domain.priority import RANGE_TEXT, is_level
from ..domain.phones import as_typed, callable_number, mask
from ..storage import Storage
from ..storage import helpdesk as helpdesk_jobs
from ..storage.deadlines import DeadlineQueries
from ..storage.engineers import FloorRepository, floor_details
from ..storage.models import Call, Ticket

log = logging.getLogger("ivr.desk")

EXPORT_FORMATS = ("csv", "json")
URGENT_SHARE = 0.25  # under a quarter of the target time left


class DeskError(Exception):
    """A request the desk cannot carry out; ``status`` is the matching HTTP status."""

    status = 400


class BadRequest(DeskError):
    status = 400


class NotFound(DeskError):
    status = 404


def unknown_ticket(ref: str) -> NotFound:
    """No such ticket. A ticket number is 8 digits: anything longer typed for one may be a
    caller's number or a PMI, written whole or as a phone writes it (+1 415 555 0100), and
    is shown by its last four digits; a longer text with fewer than six digits (the
    shortest number ``redact_numbers`` hides) is shown as typed."""
    ref = str(ref).strip()
    shown = repr(ref) if len(ref) <= 8 else as_typed(ref)
    return NotFound(f"no ticket with id or number {shown}")


class Conflict(DeskError):
    status = 409


# -- times and periods -------------------------------------------------------------------


# Times the desk compares with stored ones; both databases hold every moment in between.
EARLIEST = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
LATEST = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


def parse_moment(text: str, name: str, *, end: bool = False) -> dt.datetime:
    """A date (``2026-11-25``) or an ISO 8601 time; naive times are UTC. A bare date as the
    end of a range means the end of that day."""
    value = (text or "").strip()
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
            if end:  # the end of that day; the calendar's last day ends at its last moment
                moment = LATEST if day == dt.date.max else moment + dt.timedelta(days=1)
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name}: {value[:40]!r} is not a date (YYYY-MM-DD) or an ISO 8601 "
                         "time") from None
    moment = moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment
    try:
        # Stored times are UTC: a time whose UTC form leaves the calendar cannot be compared.
        in_utc = moment.astimezone(dt.timezone.utc)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise BadRequest(f"{name}: {value[:40]!r} is outside the supported range, "
                         f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)")
    return in_utc


@dataclass(frozen=True)
class Period:
    """From ``since`` (included) to ``until`` (excluded), in UTC."""

    since: dt.datetime
    until: dt.datetime

    @classmethod
    def parse(cls, since: str | None, until: str | None, now: dt.datetime,
              default_days: int = 7) -> "Period":
        """The period named by two optional dates; by default the last ``default_days``
        days including today."""
        today = dt.datetime.combine(now.date(), dt.time(), dt.timezone.utc)
        end = parse_moment(until, "until", end=True) if until else today + dt.timedelta(days=1)
        start = parse_moment(since, "since") if since else today - dt.timedelta(days=default_days - 1)
        if end <= start:
            raise BadRequest("until: the end of the period must come after its start")
        return cls(start, end)

    @property
    def first_day(self) -> dt.date:
        return self.since.date()

    @property
    def last_day(self) -> dt.date:
        return (self.until - dt.timedelta(microseconds=1)).date()


def ticket_dict(ticket) -> dict:
    """A ticket as `tickets list --json` prints it (SPEC section 3)."""
    return {
        "id": ticket.id,
        "number": ticket.number,
        "call_sid": ticket.call_sid,
        "account_id": ticket.account_id,
        "user_email": ticket.user_email,
        "priority": ticket.priority,
        "target_response_minutes": ticket.target_response_minutes,
        "region": ticket.region,
        "status": ticket.status,
        "created_at": ticket.created_at.isoformat(),
        "acknowledged_at": ticket.acknowledged_at.isoformat() if ticket.acknowledged_at else None,
    }


def helpdesk_view(session, ticket_id: int, helpdesk) -> dict:
    """Where a ticket stands in the help desk, with the link to it there."""
    state = helpdesk_jobs.HelpdeskJobRepository(session).for_ticket(ticket_id)
    state["url"] = helpdesk.ticket_url(state["id"]) if state["id"] else None
    return state


def target_at(ticket: Ticket) -> dt.datetime:
    return ticket.created_at + dt.timedelta(minutes=ticket.target_response_minutes)


def urgency(seconds_left: float, target_minutes: int) -> str:
    """'overdue', 'urgent' (under a quarter of the target left) or 'fine'."""
    if seconds_left <= 0:
        return "overdue"
    if seconds_left < URGENT_SHARE * target_minutes * 60:
        return "urgent"
    return "fine"


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- views -------------------------------------------------------------------------------


def ticket_view(ticket: Ticket, caller_number: str | None, config: IvrConfig,
                now: dt.datetime) -> dict:
    """A ticket as agents see it: the caller's number masked, the callback number whole."""
    left = (target_at(ticket) - now).total_seconds()
    view = ticket_dict(ticket)
    view.update(
        priority_name=config.priority(ticket.priority).name,
        caller=mask(caller_number),
        callback_number=ticket.callback_number,
        connected_at=_iso(ticket.connected_at),
        closed_at=_iso(ticket.closed_at),
        updated_at=_iso(ticket.updated_at),
        target_at=target_at(ticket).isoformat(),
        seconds_left=int(left),
        urgency=urgency(left, ticket.target_response_minutes),
    )
    return view


def call_view(call: Call, ticket: Ticket | None) -> dict:
    return {
        "call_sid": call.call_sid,
        "dialed_number": call.dialed_number,
        "region": call.region,
        "language": call.language,
        "caller": mask(call.caller_number),
        "account_id": call.account_id,
        "plan": call.plan,
        "role": call.role,
        "outcome": call.outcome,
        "abandoned_at_step": call.abandoned_at_step,
        "steps_reached": [s for s in call.steps_reached.split(",") if s],
        "twilio_status": call.twilio_status,
        "duration_seconds": call.duration_seconds,
        "queue_result": call.queue_result,
        "queue_seconds": call.queue_seconds,
        "started_at": call.started_at.isoformat(),
        "ended_at": _iso(call.ended_at),
        "ticket": ticket.number if ticket is not None else None,
        "priority": ticket.priority if ticket is not None else None,
    }


@dataclass
class Page:
    items: list[dict]
    page: int | None  # None for a page started after a cursor
    per_page: int
    total: int
    next: str | None = None  # the cursor of the page after this one, if there is one

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def page_cursor(moment: dt.datetime, key: object) -> str:
    """Where a page ended, for ``after``: the time a list is sorted by and the key that
    breaks its ties (a call's start and SID, a ticket's creation and id). Opaque to
    clients (URL-safe base64), so its form may change; the one codec of every list."""
    text = f"{moment.astimezone(dt.timezone.utc).isoformat()}|{key}"
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def parse_page_cursor(text: str, key: Callable[[str], Any]) -> tuple[dt.datetime, Any]:
    """The time and key a cursor names, or BadRequest; ``key`` reads the key from its
    text, None (or ValueError) when it is not one."""
    wrong = BadRequest(f"after: {text[:40]!r} is not a cursor; give the 'next' of the "
                       "page before")
    if not 0 < len(text) <= 200:
        raise wrong
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
        moment, _, key_text = raw.partition("|")
        started = dt.datetime.fromisoformat(moment)
        value = key(key_text) if key_text else None
        if value is None or started.tzinfo is None:
            raise ValueError
        # As stored, in UTC; a time whose UTC form leaves the calendar is OverflowError.
        started = started.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):  # binascii.Error, UnicodeDecodeError are ValueErrors
        raise wrong from None
    return started, value


CALL_SID_LIMIT = 64  # characters, as calls.call_sid is kept


def call_key(text: str) -> str | None:
    """A call's key in a cursor: its SID, printable ASCII a call's SID column holds (not a
    NUL, which PostgreSQL refuses in any text)."""
    if len(text) > CALL_SID_LIMIT or not (text.isascii() and text.isprintable()):
        return None
    return text


def ticket_key(text: str) -> int | None:
    """A ticket's key in a cursor: its id, a whole number a database integer holds."""
    value = ascii_number(text, at_most=10)
    return value if value is not None and value < 2**31 else None


# -- SLA ---------------------------------------------------------------------------------


@dataclass
class SlaLine:
    """Tickets of one priority or region: met (acknowledged within target), missed
    (acknowledged late, or not acknowledged and past target) and pending (neither yet)."""

    key: str
    met: int = 0
    missed: int = 0
    pending: int = 0

    @property
    def tickets(self) -> int:
        return self.met + self.missed + self.pending

    @property
    def share(self) -> float | None:
        """Met out of the decided tickets; None while none is decided."""
        decided = self.met + self.missed
        return self.met / decided if decided else None

    def as_dict(self) -> dict:
        return {"key": self.key, "tickets": self.tickets, "met": self.met,
                "missed": self.missed, "pending": self.pending, "share": self.share}


@dataclass
class SlaReport:
    overall: SlaLine
    by_priority: list[SlaLine]
    by_region: list[SlaLine]
    slowest: list[dict] = field(default_factory=list)


def sla_verdict(ticket, now: dt.datetime) -> str:
    """'met', 'missed' or 'pending' for one ticket."""
    target = dt.timedelta(minutes=ticket.target_response_minutes)
    if ticket.acknowledged_at is not None:
        return "met" if ticket.acknowledged_at - ticket.created_at <= target else "missed"
    return "missed" if now - ticket.created_at > target else "pending"


def sla_report(counts: Iterable[tuple[int, str, str, int]], slowest: Iterable,
               now: dt.datetime) -> SlaReport:
    """Share of tickets acknowledged within their target, per priority and per region,
    from tickets counted by (priority, region, verdict); and the slowest responses (time
    to acknowledgement, or time waited so far) of the tickets given, slowest first."""
    overall = SlaLine("all")
    priorities: dict[int, SlaLine] = {}
    regions: dict[str, SlaLine] = {}
    for priority, region, verdict, count in counts:
        for line in (overall, priorities.setdefault(priority, SlaLine(f"P{priority}")),
                     regions.setdefault(region, SlaLine(region))):
            setattr(line, verdict, getattr(line, verdict) + count)
    responses = []
    for ticket in slowest:
        answered = ticket.acknowledged_at or now
        responses.append({
            "id": ticket.id, "number": ticket.number, "priority": ticket.priority,
            "region": ticket.region, "created_at": ticket.created_at.isoformat(),
            "acknowledged_at": _iso(ticket.acknowledged_at),
            "response_seconds": int((answered - ticket.created_at).total_seconds()),
            "target_response_minutes": ticket.target_response_minutes,
            "verdict": sla_verdict(ticket, now),
        })
    responses.sort(key=lambda r: (-r["response_seconds"], r["number"]))
    return SlaReport(overall, [priorities[p] for p in sorted(priorities)],
                     [regions[r] for r in sorted(regions)], responses)


# -- traffic -----------------------------------------------------------------------------


IN_PROGRESS = "in_progress"


@dataclass
class Traffic:
    """Calls of a period by region and outcome, and by hour of day (UTC)."""

    outcomes: list[str]
    regions: list[str]
    counts: dict[tuple[str, str], int]
    by_hour: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def region_total(self, region: str) -> int:
        return sum(n for (r, _), n in self.counts.items() if r == region)

    def outcome_total(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)


def traffic(grouped: Iterable[tuple[str, str | None, int]],
            by_hour: Iterable[tuple[int, int]]) -> Traffic:
    """From calls counted by (region, outcome) and by hour of day (UTC)."""
    counts: dict[tuple[str, str], int] = {}
    for region, outcome, count in grouped:
        key = (region, outcome or IN_PROGRESS)
        counts[key] = counts.get(key, 0) + count
    hours = Counter()
    for hour, count in by_hour:
        hours[hour] += count
    return Traffic(sorted({o for _, o in counts}), sorted({r for r, _ in counts}), counts,
                   [hours.get(h, 0) for h in range(24)])


# -- exports -----------------------------------------------------------------------------


EXPORT_FIELDS = ("id", "number", "call_sid", "account_id", "user_email", "priority",
                 "priority_name", "target_response_minutes", "region", "status", "created_at",
                 "acknowledged_at", "connected_at", "closed_at", "target_at", "callback_number")


EXPORT_BATCH = 1000  # tickets an export reads per transaction


def export_rows(views: Iterable[dict]) -> list[dict]:
    """Exported tickets: bulk files leave the desk, so the callback number goes masked."""
    return [{name: (mask(view[name]) if name == "callback_number" and view[name] else view[name])
             for name in EXPORT_FIELDS} for view in views]


def render_export(batches: Iterable[list[dict]], fmt: str) -> Iterator[str]:
    """The export file, a piece per batch of rows: the same text as the whole list
    rendered at once (``json.dumps(rows, indent=2)``, or the CSV)."""
    if fmt == "json":
        empty = True
        for rows in batches:
            if rows:  # "[\n  {...},\n  {...}\n]": the items, as the whole list has them
                items = json.dumps(rows, ensure_ascii=False, indent=2)[2:-2]
                yield ("[\n" if empty else ",\n") + items
                empty = False
        yield "[]\n" if empty else "\n]\n"
        return
    # UTF-8 with a byte-order mark: without it a spreadsheet reads the file in the
    # system's code page, and every masked number ('…0123') and accent comes out garbled.
    out = io.StringIO("\ufeff")
    out.seek(0, io.SEEK_END)
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rows in batches:
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue()


def _cell(value):
    """Keep a spreadsheet from reading a text cell as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# -- the desk ----------------------------------------------------------------------------


class Desk:
    """What agents do with tickets, each operation one transaction."""

    def __init__(self, storage: Storage, config: IvrConfig, clock: Callable[[], dt.datetime]):
        self.storage = storage
        self.config = config
        self.clock = clock

    @classmethod
    def of(cls, ivr) -> "Desk":
        """The desk of an app's ``extensions['ivr']``, on the app's clock."""
        return cls(ivr.storage, ivr.config, ivr.service.clock)

    # -- one ticket --------------------------------------------------------------------

    def ticket(self, ref: str | int) -> dict:
        with self.storage.unit_of_work(readonly=True) as uow:
            ticket, caller = self._find(uow, ref)
            view = ticket_view(ticket, caller, self.config, self.clock())
            view.update(floor_details(self.storage, uow.session, ticket.id))
            if self.config.helpdesk:  # the ticket in the help desk (issue 9)
                view["helpdesk"] = helpdesk_view(uow.session, ticket.id, self.config.helpdesk)
            return view

    def close(self, ref: str | int, actor: str = "admin") -> tuple[dict, bool]:
        return self.update(ref, status="closed", actor=actor)

    def set_priority(self, ref: str | int, level: int, actor: str = "admin",
                     shown: int | None = None) -> tuple[dict, bool]:
        """``shown``: the priority the agent saw when choosing (a dashboard page); a ticket
        whose priority has changed since, to another than ``level``, is refused (409)
        rather than overwritten with a choice made on what is no longer so."""
        return self.update(ref, priority=level, actor=actor, priority_shown=shown)

    def update(self, ref: str | int, *, status: str | None = None,
               priority: int | None = None, push: bool = True,
               actor: str = "admin",
               first_time: Callable[[Any], bool] | None = None,
               priority_shown: int | None = None) -> tuple[dict, bool]:
        """Reclassify and/or move a ticket on; returns its view and whether it changed.
        Asking for the status or priority it already has changes nothing. ``push=False``
        for a change that came from the help desk (it is not pushed back there).
        ``first_time(session)``, called in the change's transaction before anything is
        changed, says whether this request is new; False (a replay): nothing changes."""
        if status is None and priority is None:
            raise BadRequest("nothing to change: give a status or a priority")
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        if priority is not None and not is_level(priority):
            raise BadRequest(f"priority: {priority!r} is not a priority {RANGE_TEXT}")
        now = self.clock()
        with self.storage.unit_of_work() as uow:
            ticket, caller = self._find(uow, ref, for_update=True)
            changed, before = False, (ticket.priority, ticket.status)
            if first_time is not None and not first_time(uow.session):
                status = priority = None  # applied before: answer as things stand
            if priority is not None and priority != ticket.priority:
                if ticket.status == "closed":
                    raise Conflict(f"ticket {ticket.number} is closed; its priority can no "
                                   "longer change")
                if priority_shown is not None and priority_shown != ticket.priority:
                    raise Conflict(
                        f"ticket {ticket.number} was changed to P{ticket.priority} "
                        f"{self.config.priority(ticket.priority).name} after this page showed "
                        f"P{priority_shown}; nothing was changed. Reload the ticket and choose "
                        "again.")
                log.info("ticket id=%s priority %s -> %s", ticket.id, ticket.priority, priority)
                FloorRepository(self.storage, uow.session).record(
                    ticket.id, actor, "priority", f"P{ticket.priority} -> P{priority}", now)
                ticket.priority = priority
                ticket.target_response_minutes = self.config.priority(priority).target_response_minutes
                changed = True
            if status is not None and status != ticket.status:
                try:
                    new = move(ticket.status, status)
                except ForbiddenMove as forbidden:
                    raise Conflict(f"ticket {ticket.number} {forbidden}") from None
                if new is TicketStatus.CONNECTED and ticket.status == TicketStatus.IN_QUEUE:
                    # Only the engineer line takes a caller from the queue: marked
                    # connected, one still holding would be offered to no engineer and
                    # never let go, and their hang-up would leave the ticket connected.
                    call = uow.session.get(Call, ticket.call_sid)
                    if call is not None and not left_the_queue(call.queue_result,
                                                               call.ended_at is not None):
                        raise Conflict(
                            f"ticket {ticket.number}: its caller is still waiting in the "
                            "queue, and only the engineer line connects them (an engineer "
                            "calls it and is put through); to end their wait, set a "
                            "callback or close the ticket")
                log.info("ticket id=%s status %s -> %s", ticket.id, ticket.status, new)
                FloorRepository(self.storage, uow.session).record(
                    ticket.id, actor, "close" if status == "closed" else "status",
                    f"{ticket.status} -> {status}", now)
                ticket.status = new.value
                if new is TicketStatus.CALLBACK_REQUESTED:
                    FloorRepository(self.storage, uow.session).new_callback_round(ticket.id, now)
                    # The number to call, as when the caller asks for it themselves (none
                    # for a withheld number: an engineer replies by email).
                    ticket.callback_number = ticket.callback_number or callable_number(caller)
                if status == "connected":
                    ticket.connected_at = ticket.connected_at or now
                if status == "closed":
                    ticket.closed_at = now
                changed = True
            if changed:
                ticket.updated_at = now
                if push and self.config.helpdesk:  # help desk push (issue 9)
                    helpdesk_jobs.queue_changes(uow.session, ticket, before, now)
            uow.session.flush()
            view = ticket_view(ticket, caller, self.config, now)
            view.update(floor_details(self.storage, uow.session, ticket.id))
            return view, changed

    def _find(self, uow, ref, for_update: bool = False):
        ref = str(ref).strip()
        found = uow.desk.ticket(ref, for_update=for_update)
        if found is None:
            raise unknown_ticket(ref)
        return found

    # -- lists -------------------------------------------------------------------------

    def tickets(self, *, page: int = 1, per_page: int = 50,
                after: tuple[dt.datetime, int] | None = None, **filters) -> Page:
        """A page of tickets by number (``page``), or the one after a cursor (``after``,
        read from a page's ``next``), as ``calls`` pages."""
        now = self.clock()
        with self.storage.unit_of_work(readonly=True) as uow:
            rows, total = uow.desk.tickets(
                offset=0 if after else (page - 1) * per_page, limit=per_page + 1,
                after=after, **filters)
            more, rows = len(rows) > per_page, rows[:per_page]
            items = [ticket_view(t, caller, self.config, now) for t, caller in rows]
        last = rows[-1][0] if more else None
        return Page(items, None if after else page, per_page, total,
                    next=page_cursor(last.created_at, last.id) if last else None)

    def calls(self, *, page: int = 1, per_page: int = 50,
              after: tuple[dt.datetime, str] | None = None, **filters) -> Page:
        """A page of calls by number (``page``), or the one after a cursor (``after``,
        read from a page's ``next``): deep in a year of calls, a cursor reads only its
        page, where an OFFSET reads every call before it."""
        with self.storage.unit_of_work(readonly=True) as uow:
            rows, total = uow.desk.calls(
                offset=0 if after else (page - 1) * per_page, limit=per_page + 1,
                after=after, **filters)
            more, rows = len(rows) > per_page, rows[:per_page]
            items = [call_view(call, ticket) for call, ticket in rows]
        last = rows[-1][0] if more else None
        return Page(items, None if after else page, per_page, total,
                    next=page_cursor(last.started_at, last.call_sid) if last else None)

    def unclosed(self, limit: int = 500) -> list[dict]:
        """Tickets not closed yet, least time left to their target first: the first
        ``limit`` of all of them, sorted by the database."""
        return self.unclosed_board(limit)[0]

    def unclosed_board(self, limit: int = 500) -> tuple[list[dict], dict[str, int]]:
        """The first ``limit`` unclosed tickets by time left, and the counts (overdue,
        urgent, fine, total) over every unclosed ticket."""
        now = self.clock()
        with self.storage.unit_of_work(readonly=True) as uow:
            queries = DeadlineQueries(self.storage.dialect, uow.session)
            rows = queries.unclosed(UNCLOSED, limit)
            counts = queries.counts(UNCLOSED, now, URGENT_SHARE)
            views = [ticket_view(t, caller, self.config, now) for t, caller in rows]
        return views, counts

    # -- reports -----------------------------------------------------------------------

    def sla(self, period: Period, slowest: int = 10) -> SlaReport:
        """Counted by the database, so a year of tickets costs a few rows, not a year."""
        now = self.clock()
        with self.storage.unit_of_work(readonly=True) as uow:
            counts = uow.desk.sla_counts(period.since, period.until, now)
            tickets = uow.desk.slowest(period.since, period.until, now, slowest)
            return sla_report(counts, tickets, now)

    def traffic(self, period: Period) -> Traffic:
        with self.storage.unit_of_work(readonly=True) as uow:
            desk = uow.desk
            return traffic(desk.calls_by_region_and_outcome(period.since, period.until),
                           desk.calls_by_hour(period.since, period.until))

    def export(self, fmt: str, since: dt.datetime | None = None) -> Iterator[str]:
        """Tickets created since a time, oldest first, as CSV or JSON: the one export of
        the operator command and the dashboard. The file comes in pieces, read
        ``EXPORT_BATCH`` tickets at a time, each batch in its own short read transaction:
        a year of tickets is never held in memory whole, and a slow download holds no
        transaction open. A format it does not know, or a database it cannot read, is an
        error here, before any of the file is sent."""
        if fmt not in EXPORT_FORMATS:
            raise BadRequest(f"format: {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        batches = self._export_batches(since)
        first = next(batches)
        return render_export(itertools.chain([first], batches), fmt)

    def _export_batches(self, since: dt.datetime | None) -> Iterator[list[dict]]:
        now = self.clock()
        after = None
        while True:
            size = EXPORT_BATCH
            with self.storage.unit_of_work(readonly=True) as uow:
                rows = uow.desk.tickets_from(since, after, size)
                views = export_rows(ticket_view(t, caller, self.config, now)
                                    for t, caller in rows)
                if rows:
                    after = (rows[-1][0].created_at, rows[-1][0].id)
            yield views
            if len(rows) < size:
                return
