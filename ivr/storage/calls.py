"""Calls: one record per call, its state between webhooks and how it ended.

The webhook path's repository: a call's record and state are loaded by one statement
(with its ticket, if any) and saved by one, as driver-level SQL (see ``sql.py``).

A call's state (``domain.flow.CallState``) maps to its columns in ONE declaration,
``STATE`` below: the load, the first insert and the save are all generated from it. Adding
a field to the state means: the field, its column (model and migration), one line here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
from typing import TYPE_CHECKING, Any, Callable

from ..domain.flow import Caller, CallState, Outcome, Step, TicketInfo
from ..domain.lifecycle import TicketStatus
from .sql import Codec, Sql, clamp_int

if TYPE_CHECKING:
    from .uow import UnitOfWork

FINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")


@dataclasses.dataclass(frozen=True)
class Mapped:
    """One field of a call's state and the column(s) that keep it. ``load`` turns what the
    columns hold into the field's value and ``dump`` the other way: one value for one
    column, a tuple for several; None leaves the value as it is."""

    field: str
    columns: tuple[str, ...]
    load: Callable[[Any], Any] | None = None
    dump: Callable[[Any], Any] | None = None
    saved: bool = True  # False: fixed when the call starts, never written again

    @classmethod
    def column(cls, field: str, column: str | None = None, load: Callable | None = None,
               dump: Callable | None = None, saved: bool = True) -> "Mapped":
        return cls(field, (column or field,), load, dump, saved)


def _caller(values: tuple) -> Caller | None:
    account_id, email, plan, role = values
    return None if account_id is None else Caller(account_id, email or "", plan or "", role or "")


def _caller_columns(caller: Caller | None) -> tuple:
    if caller is None:
        return (None, None, None, None)
    return (caller.account_id, caller.user_email, caller.plan, caller.role)


# CallState field <-> calls columns. ``outcome`` is loaded here but saved by its own rule
# (an outcome, once reached, is final; only "abandoned" may be replaced), and ``ticket``
# comes from the tickets table.
STATE: tuple[Mapped, ...] = (
    Mapped.column("call_sid", saved=False),
    Mapped.column("can_text", load=bool, saved=False),
    Mapped.column("step", load=Step, dump=lambda step: step.value),
    Mapped.column("english", load=bool),
    Mapped.column("attempts"),
    Mapped.column("auth_failures"),
    Mapped.column("pmi", "pending_pmi"),
    Mapped("caller", ("account_id", "user_email", "plan", "role"), _caller, _caller_columns),
    Mapped.column("transfer_to"),
    Mapped.column("steps_reached", load=lambda text: [s for s in (text or "").split(",") if s],
                  dump=lambda steps: ",".join(steps)[:255]),
    Mapped.column("outcome", load=lambda v: Outcome(v) if v else None, saved=False),
)
# What loading and saving a state run for each field, worked out once (a webhook does
# both): (field, a getter of its column or columns from a row's values, load) and
# (field, its one column or None, its columns, dump).
_READERS = tuple((m.field, operator.itemgetter(*m.columns), m.load) for m in STATE)
_ALL_WRITERS = tuple((m.field, m.columns[0] if len(m.columns) == 1 else None, m.columns,
                      m.dump) for m in STATE)
_WRITERS = tuple(w for w, m in zip(_ALL_WRITERS, STATE) if m.saved)
# Columns the service reads besides the state's.
RECORD = ("dialed_number", "region", "language", "caller_number", "abandoned_at_step",
          "twilio_status", "queue_result", "queue_seconds")
TICKET = ("id", "number", "priority", "target_response_minutes", "status")

_STATE_COLUMNS = tuple(c for m in STATE for c in m.columns)
_SAVED = tuple(c for m in STATE if m.saved for c in m.columns)
_COLUMNS = _STATE_COLUMNS + RECORD
_SELECT = ("SELECT " + ", ".join(f"c.{c}" for c in _COLUMNS) + ", "
           + ", ".join(f"t.{c}" for c in TICKET)
           + " FROM calls c LEFT OUTER JOIN tickets t ON t.call_sid = c.call_sid"
           " WHERE c.call_sid = :call_sid")
_TICKET_AT, _OUTCOME_AT = len(_COLUMNS), _COLUMNS.index("outcome")
LOAD = Sql(_SELECT)
LOAD_FOR_UPDATE = Sql(_SELECT, _SELECT + " FOR UPDATE OF c")
SAVE = Sql("UPDATE calls SET " + ", ".join(f"{c} = :{c}" for c in
                                          _SAVED + ("outcome", "abandoned_at_step", "language",
                                                    "updated_at"))
           + " WHERE call_sid = :call_sid")
_INSERTED = ("call_sid", "account_sid", "dialed_number", "region", "language", "caller_number",
             "can_text") + tuple(c for c in _SAVED) + ("outcome", "started_at", "updated_at")
START = Sql("INSERT INTO calls (" + ", ".join(_INSERTED) + ") VALUES ("
            + ", ".join(f":{c}" for c in _INSERTED) + ") ON CONFLICT (call_sid) DO NOTHING")

# A status callback: applied unless older than one already applied (callbacks may come
# out of order; a call never moves backwards). The first final status of a call without
# an outcome also marks it abandoned at the step it had reached: ABANDON, tried only for a
# final status that STATUS left alone, so a routed call's end costs one statement.
_STATUS_SET = """
      status_sequence = COALESCE(CAST(:sequence AS BIGINT), status_sequence),
      twilio_status = :status,
      duration_seconds = COALESCE(CAST(:duration AS INTEGER), duration_seconds),
      ended_at = CASE WHEN :final = 1 THEN COALESCE(ended_at, :now) ELSE ended_at END,
      pending_pmi = CASE WHEN :final = 1 THEN NULL ELSE pending_pmi END,
      updated_at = :now"""
_STATUS_WHERE = """
    WHERE call_sid = :call_sid
      AND (CAST(:sequence AS BIGINT) IS NULL OR status_sequence IS NULL
           OR status_sequence < CAST(:sequence AS BIGINT))
      AND (:final = 1 OR twilio_status IS NULL OR twilio_status NOT IN
           ('completed', 'busy', 'failed', 'no-answer', 'canceled'))"""
STATUS = Sql("UPDATE calls SET" + _STATUS_SET + _STATUS_WHERE
             + " AND (:final = 0 OR outcome IS NOT NULL) RETURNING region, outcome")
ABANDON = Sql("UPDATE calls SET" + _STATUS_SET + ", outcome = 'abandoned', "
              "abandoned_at_step = step" + _STATUS_WHERE
              + " AND outcome IS NULL RETURNING region, outcome, queue_result")
QUEUE_RESULT = Sql("UPDATE calls SET queue_result = :result, queue_seconds = :seconds, "
                   "updated_at = :now WHERE call_sid = :call_sid")


@dataclasses.dataclass(frozen=True)
class TicketRow:
    id: int
    number: str
    priority: int
    target_response_minutes: int
    status: TicketStatus

    @property
    def info(self) -> TicketInfo:
        return TicketInfo(self.number, self.priority, self.target_response_minutes)


class CallRecord:
    """A call's row as loaded (``record.region``...), its state and its ticket."""

    __slots__ = ("values", "state", "ticket")

    def __init__(self, values: dict[str, Any], state: CallState, ticket: TicketRow | None):
        self.values = values
        self.state = state
        self.ticket = ticket

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__getattribute__("values")[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def ended(self) -> bool:
        """Whether Twilio has reported the end of the call itself."""
        return self.values["twilio_status"] in FINAL_STATUSES

    @property
    def finished(self) -> bool:
        """Whether Twilio has told how the call or its wait in the queue ended."""
        return self.ended or bool(self.values["queue_result"])


def _put(writers: tuple, state: CallState, into: dict[str, Any]) -> None:
    """The state's fields, as their columns hold them, into ``into``."""
    for field, column, columns, dump in writers:
        value = getattr(state, field)
        if dump is not None:
            value = dump(value)
        if column is not None:
            into[column] = value
        else:
            into.update(zip(columns, value))


def _state(values: dict[str, Any]) -> CallState:
    kwargs = {}
    for field, get, load in _READERS:
        value = get(values)
        kwargs[field] = value if load is None else load(value)
    return CallState(**kwargs)


class CallRepository:
    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow
        self.codec: Codec = uow.codec

    def load(self, call_sid: str, *, lock: bool = True) -> CallRecord | None:
        """The call with its state and ticket, in one statement; on PostgreSQL the call's
        row is locked for this transaction when ``lock`` (SQLite's write transaction
        already holds the lock)."""
        statement = LOAD_FOR_UPDATE if lock and self.uow.lock_rows else LOAD
        row = statement.run(self.uow.connection, {"call_sid": call_sid}).first()
        if row is None:
            return None
        if statement is LOAD_FOR_UPDATE and row[_TICKET_AT] is None \
                and row[_OUTCOME_AT] == Outcome.ROUTED.value:
            # The row lock was granted after another request routed the call: PostgreSQL
            # rechecked the call's row but not the join, made before that ticket existed.
            # The lock is ours now, so a second look sees both as they are.
            row = statement.run(self.uow.connection, {"call_sid": call_sid}).first()
        values = dict(zip(_COLUMNS, row[:len(_COLUMNS)]))
        values["can_text"] = bool(values["can_text"])
        values["english"] = bool(values["english"])
        ticket = None
        if row[len(_COLUMNS)] is not None:
            tid, number, priority, minutes, status = row[len(_COLUMNS):]
            ticket = TicketRow(tid, number, priority, minutes, TicketStatus(status))
        state = _state(values)
        # Only a finished call replays its ticket; no other step needs it.
        if ticket is not None and state.step is Step.DONE:
            state.ticket = ticket.info
        return CallRecord(values, state, ticket)

    def new(self, *, call_sid: str, account_sid: str | None, dialed_number: str, region: str,
            language: str, caller_number: str, can_text: bool) -> CallRecord:
        """A call not stored yet, as its first webhook finds it."""
        values: dict[str, Any] = {
            "call_sid": call_sid, "account_sid": account_sid, "dialed_number": dialed_number,
            "region": region, "language": language, "caller_number": caller_number,
            "can_text": can_text, "abandoned_at_step": None, "twilio_status": None,
            "queue_result": None, "queue_seconds": None,
        }
        state = CallState(call_sid=call_sid, can_text=can_text)
        _put(_ALL_WRITERS, state, values)
        return CallRecord(values, state, None)

    def _state_values(self, record: CallRecord, state: CallState, language: str,
                      now: dt.datetime) -> dict[str, Any]:
        params: dict[str, Any] = {"call_sid": record.call_sid}
        _put(_WRITERS, state, params)
        outcome, abandoned_at = record.outcome, record.abandoned_at_step
        if state.outcome is not None and outcome in (None, Outcome.ABANDONED.value):
            outcome, abandoned_at = state.outcome.value, None
        params.update(outcome=outcome, abandoned_at_step=abandoned_at, language=language,
                      updated_at=self.codec.time(now))
        return params

    def start(self, record: CallRecord, state: CallState, language: str,
              now: dt.datetime) -> bool:
        """Store a new call with the state its first webhook left it in; False if another
        request stored it first (then load it and run the step again)."""
        params = self._state_values(record, state, language, now)
        params.update(account_sid=record.account_sid, dialed_number=record.dialed_number,
                      region=record.region, caller_number=record.caller_number,
                      can_text=record.can_text,
                      started_at=params["updated_at"])
        params.pop("abandoned_at_step")
        return START.run(self.uow.connection, params).rowcount == 1

    def save(self, record: CallRecord, state: CallState, language: str,
             now: dt.datetime) -> str | None:
        """Store the call's new state; returns its outcome as stored."""
        params = self._state_values(record, state, language, now)
        SAVE.run(self.uow.connection, params)
        return params["outcome"]

    def record_status(self, call_sid: str, status: str, duration: int | None,
                      now: dt.datetime, sequence: int | None = None
                      ) -> tuple[bool, str | None, str | None, bool]:
        """Apply a status callback: one statement, two for the end of a call without an
        outcome, three on PostgreSQL for a final status that neither fits. Returns (applied,
        region, outcome, whether this callback marked the call abandoned by its caller);
        applied is False for an unknown call or an out-of-date callback. A call without an
        outcome that waited in a queue was routed through the outage spool (a call routed
        live has its outcome): marked abandoned until the replay gives it its ticket, it
        is not one its caller abandoned."""
        final = status in FINAL_STATUSES
        params = {
            "call_sid": call_sid, "status": status, "final": int(final),
            "now": self.codec.time(now),
            # Twilio's counters, kept within their columns: anything larger is held at the
            # bound rather than refused (BIGINT for the sequence, INTEGER for seconds).
            "duration": clamp_int(duration), "sequence": clamp_int(sequence, 0, 2**63 - 1),
        }
        connection = self.uow.connection
        row = STATUS.run(connection, params).first()
        if row is None and final:
            row = ABANDON.run(connection, params).first()
            if row is not None:
                return True, row[0], row[1], row[2] is None
            if self.uow.lock_rows:
                # On PostgreSQL, ABANDON may have waited for the row lock of a step that
                # gave the call its outcome and committed, after STATUS had passed the row
                # over for lacking one. Asked again, STATUS sees that outcome. (An unknown
                # call or an out-of-date callback costs this third statement too.)
                row = STATUS.run(connection, params).first()
        if row is not None:
            return True, row[0], row[1], False
        return False, None, None, False

    def exists(self, call_sid: str) -> bool:
        return LOAD.run(self.uow.connection, {"call_sid": call_sid}).first() is not None

    def record_queue_result(self, call_sid: str, result: str, seconds: int | None,
                            now: dt.datetime) -> None:
        QUEUE_RESULT.run(self.uow.connection, {
            "call_sid": call_sid, "result": result, "seconds": clamp_int(seconds),
            "now": self.codec.time(now)})
