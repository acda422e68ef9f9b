"""The outage path: answering calls while the database is unreachable, and catching up.

- A verified caller's priority prompt carries a pass signed by the service (``a``, ``f``,
  ``t`` in its action URL), so the call can still be routed if the database is gone by
  the time the caller presses a key.
- What could not be written goes to the spool (``spool.py``) as typed records with a
  format version; ``replay`` writes them once the database is back. Records written by an
  earlier release (format 1: no ``v`` field) replay too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .. import metrics
from ..config import Line
from ..domain.digits import ascii_digits
from ..domain.engineers import HEARD_AS, SYSTEM_ACTOR
from ..domain.flow import Caller, CallState, Reply, Step, TicketInfo, failures_in, tries_in
from ..domain.lifecycle import TicketStatus, routed_status
from ..storage import helpdesk as helpdesk_jobs

if TYPE_CHECKING:
    from ..storage import CallRecord, UnitOfWork
    from .service import CallRequest, CallService

log = logging.getLogger("ivr.calls")

FORMAT = 2  # the spool record format this release writes

# How long a pass stays good after the prompt that carried it was asked: the prompt, its
# time-out and a slow caller's key take a minute or two; the rest is room for clocks of
# different hosts that disagree. A copy of the signed request sent later (a caller long
# gone, the request replayed) gets the fallback like any caller not known to be verified.
PASS_LIFETIME = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class SpooledSms:
    template: str
    body: str


@dataclass(frozen=True)
class SpooledTicket:
    """A caller routed during the outage: their ticket, as they heard it."""

    call_sid: str
    account_ref: int
    number: str
    priority: int
    target_response_minutes: int
    region: str
    dialed_number: str
    caller_number: str
    can_text: bool
    english: bool
    language: str
    created_at: dt.datetime
    acknowledged_at: dt.datetime
    status: str
    sms: SpooledSms | None = None
    kind = "ticket"


@dataclass(frozen=True)
class SpooledStatus:
    """A status callback. ``to`` and ``caller`` let replay record a call the database
    never saw (answered while it was down); format 1 records have neither."""

    call_sid: str
    status: str
    duration: int | None
    sequence: int | None
    at: dt.datetime
    to: str | None = None
    caller: str | None = None
    kind = "status"


@dataclass(frozen=True)
class SpooledQueueResult:
    call_sid: str
    result: str
    queue_time: int | None
    at: dt.datetime
    kind = "queue_result"


@dataclass(frozen=True)
class SpooledCallbackAnswer:
    """A customer's key after a callback's greeting, pressed while the database was away:
    they were put through to the engineer (``Floor.answered_unrecorded``)."""

    attempt: int
    at: dt.datetime
    kind = "callback_answer"


@dataclass(frozen=True)
class SpooledCallbackStatus:
    """The end of a callback's leg (its status callback), reported while the database was
    away (``Floor.status_unrecorded``): the conversation it ends, or how the leg failed."""

    attempt: int
    leg: str
    status: str
    at: dt.datetime
    call_sid: str | None = None
    kind = "callback_status"


Record = SpooledTicket | SpooledStatus | SpooledQueueResult | SpooledCallbackAnswer \
    | SpooledCallbackStatus
KINDS: dict[str, type] = {cls.kind: cls for cls in (SpooledTicket, SpooledStatus,
                                                    SpooledQueueResult, SpooledCallbackAnswer,
                                                    SpooledCallbackStatus)}
_TIMES = ("created_at", "acknowledged_at", "at")


def encode(record: Record) -> dict[str, Any]:
    """The record as the spool's JSON line holds it."""
    data = dataclasses.asdict(record)
    for name in _TIMES:
        if name in data:
            data[name] = data[name].isoformat()
    return {"v": FORMAT, "kind": record.kind, **data}


def decode(data: Mapping[str, Any]) -> Record:
    """A spooled record of any known format; ValueError/KeyError/TypeError if unreadable."""
    version = data.get("v", 1)
    if version not in (1, FORMAT):
        raise ValueError(f"spool record format {version!r} is newer than this release")
    kind = KINDS[data.get("kind", "ticket")]
    names = {f.name for f in dataclasses.fields(kind)}
    values = {k: v for k, v in data.items() if k in names}
    for name in _TIMES:
        if name in values:
            values[name] = dt.datetime.fromisoformat(values[name])
    if kind is SpooledTicket:
        # Format 1 kept no status before the dial routes came: those tickets were open.
        values.setdefault("status", TicketStatus.OPEN.value)
        values["status"] = TicketStatus(values["status"]).value
        sms = values.get("sms")
        values["sms"] = SpooledSms(sms["template"], sms["body"]) if sms else None
        values["account_ref"] = int(values["account_ref"])
    if kind in (SpooledCallbackAnswer, SpooledCallbackStatus):
        values["attempt"] = int(values["attempt"])
    return kind(**values)


class Outage:
    def __init__(self, service: "CallService"):
        self.service = service

    # -- the signed pass -----------------------------------------------------------------

    def _tag(self, call_sid: str, account_ref: str, flags: str, expires: str) -> str:
        key = self.service.hasher.derive("verified-call")
        return hmac.new(key, f"{call_sid}|{account_ref}|{flags}|{expires}".encode(),
                        hashlib.sha256).hexdigest()[:32]

    def _pass(self, call_sid: str, account_ref: str, flags: str) -> dict[str, str]:
        expires = str(int((self.service.clock() + PASS_LIFETIME).timestamp()))
        return {"a": account_ref, "f": flags, "e": expires,
                "t": self._tag(call_sid, account_ref, flags, expires)}

    def verified_pass(self, uow: "UnitOfWork", record: "CallRecord",
                      reply: Reply) -> dict[str, str] | None:
        """Query parameters for the priority prompt of a verified caller: proof, signed by
        the service, that lets the call be routed even if the database is gone by then,
        good for ``PASS_LIFETIME`` (``e``: when it ends, in seconds since the epoch)."""
        state = record.state
        if reply.ask is None or reply.ask.step is not Step.PRIORITY or state.caller is None:
            return None
        ref = state.caller.ref
        if ref is None:  # a re-prompt: the caller was verified by an earlier request
            ref = uow.accounts.id_by_email(state.caller.user_email)
            if ref is None:
                return None
        return self._pass(record.call_sid, str(ref),
                          f"{int(record.can_text)}{int(state.english)}")

    def check_pass(self, call_sid: str, query: Mapping[str, str]) -> tuple[int, bool, bool] | None:
        """The account and flags a pass vouches for; None for a pass that is forged, of
        another call, or past its time."""
        ref, flags, tag = query.get("a", ""), query.get("f", ""), query.get("t", "")
        expires = query.get("e", "")
        if ascii_digits(ref, at_most=20) is None or flags not in ("00", "01", "10", "11") \
                or ascii_digits(expires, at_most=12) is None:
            return None
        # As bytes: compare_digest refuses a str with anything but ASCII in it.
        if not hmac.compare_digest(tag.encode("utf-8"),
                                   self._tag(call_sid, ref, flags, expires).encode("utf-8")):
            return None
        if int(expires) < self.service.clock().timestamp():
            log.warning("call %s: a pass past its time is refused", call_sid)
            return None
        return int(ref), flags[0] == "1", flags[1] == "1"

    def ticket_number(self, call_sid: str) -> str:
        """A ticket number derived from the call, like new_ticket_number() in form."""
        digest = hmac.new(self.service.hasher.derive("outage-ticket"), call_sid.encode(),
                          hashlib.sha256)
        return str(10_000_000 + int.from_bytes(digest.digest()[:8], "big") % 90_000_000)

    # -- answering without the database --------------------------------------------------

    def route(self, request: "CallRequest", digits: str, verified: tuple[int, bool, bool],
              query: Mapping[str, str]) -> str:
        """Route a verified caller without the database; the ticket goes to the spool."""
        service = self.service
        account_ref, can_text, english = verified
        line = service.config.line_for(request.to)
        state = CallState(request.call_sid, can_text=can_text, step=Step.PRIORITY,
                          english=english, caller=Caller("", "", "", ""),
                          attempts=tries_in(query.get("p")),
                          auth_failures=failures_in(query.get("p")))
        ports = _SpoolPorts(service, request.call_sid, line, english)
        reply = service._flow(line).handle(state, Step.PRIORITY.value, digits, ports)
        if reply.route is None or ports.ticket is None:
            # Asked again: the next prompt carries a pass of its own, as it would from the
            # database path, so a slow caller's last key is not refused as too late.
            renewed = self._pass(request.call_sid, str(account_ref),
                                 f"{int(can_text)}{int(english)}")
            return service.renderer.reply(reply, line, {**query, **renewed})
        now = service.clock()
        dialled = service.config.route_for(line).kind == "dial"
        self._append(SpooledTicket(
            call_sid=request.call_sid, account_ref=account_ref, number=ports.ticket.number,
            priority=ports.ticket.priority,
            target_response_minutes=ports.ticket.target_response_minutes,
            region=line.region if line is not None else "unknown",
            dialed_number=line.number if line is not None else request.to,
            caller_number=request.caller, can_text=can_text, english=english,
            language=service.renderer.voices(line)[1 if english else 0].language,
            created_at=now, acknowledged_at=now, sms=ports.sms,
            status=routed_status(dialled).value))
        metrics.SPOOLED.labels("ticket").inc()  # once kept: an append can fail (a full disk)
        log.warning("database unreachable: call %s routed, its ticket spooled", request.call_sid)
        return service.renderer.reply(reply, line)

    def spool_status(self, request: "CallRequest", status: str, duration: int | None,
                     sequence: int | None) -> None:
        self._append(SpooledStatus(request.call_sid, status, duration, sequence,
                                   self.service.clock(), request.to, request.caller))
        metrics.SPOOLED.labels("status").inc()
        log.warning("database unreachable: status of call %s spooled", request.call_sid)

    def spool_queue_result(self, request: "CallRequest", result: str,
                           queue_time: int | None) -> None:
        self._append(SpooledQueueResult(request.call_sid, result, queue_time,
                                        self.service.clock()))
        metrics.SPOOLED.labels("queue_result").inc()
        log.warning("database unreachable: queue result of call %s spooled", request.call_sid)

    def _append(self, record: Record) -> None:
        self.service.spool.append(encode(record))

    # -- catching up -----------------------------------------------------------------------

    def replay(self, data: Mapping[str, Any]) -> bool:
        """Write one spooled record; False if the database already had it."""
        record = decode(data)
        service = self.service
        if isinstance(record, SpooledCallbackAnswer):
            return service.floor.replay_answer(record.attempt, record.at)
        if isinstance(record, SpooledCallbackStatus):
            return service.floor.replay_leg_status(record)
        with service.storage.unit_of_work() as uow:
            if isinstance(record, SpooledStatus):
                return self._replay_status(uow, record)
            if isinstance(record, SpooledQueueResult):
                return self._replay_queue_result(uow, record)
            account = uow.accounts.by_id(record.account_ref)
            config = service.config
            restored = uow.tickets.restore(
                record, account, record.created_at,
                config.queue_group(config.line_for(record.dialed_number), record.priority))
            if restored is not None and service.config.helpdesk:  # help desk push (issue 9)
                helpdesk_jobs.queue_create(uow.session, restored.id, service.clock())
            renumbered = restored is not None and restored.number != record.number
            if renumbered:
                log.warning("ticket %s, spoken during the outage, is stored as %s: another "
                            "ticket took that number meanwhile", record.number, restored.number)
                # The caller waits in the queue named after the number they heard, and
                # may quote it: the ticket's history keeps it (``Floor.agent_call``).
                uow.floor.record(
                    restored.id, SYSTEM_ACTOR, HEARD_AS, record.number, service.clock())
            if restored is not None and record.sms is not None:
                # The text gives the number the ticket really has, whatever was spoken.
                body = record.sms.body.replace(record.number, restored.number) \
                    if renumbered else record.sms.body
                uow.outbox.queue(call_sid=record.call_sid, template=record.sms.template,
                                 to_number=record.caller_number, body=body,
                                 now=service.clock())
            if restored is not None:  # after the ticket's text: a callback's text follows it
                self._after_live_queue_result(uow, record)
        if restored is not None:
            # The call's outcome is known now: counted once, as a routing stored live is
            # (the outage path itself counts only ivr_spooled_total).
            metrics.CALLS.labels(record.region, "routed").inc()
            metrics.TICKETS.labels(str(record.priority)).inc()
        return restored is not None

    def _after_live_queue_result(self, uow: "UnitOfWork", record: SpooledTicket) -> None:
        """The caller's wait ended, and was stored live, before this replay: the ticket
        goes where that end sends it, not stay as spooled, and at the time the wait ended
        (routed, plus the seconds the caller waited)."""
        call = uow.calls.load(record.call_sid)
        if call is None or not call.queue_result:
            return
        waited = max(call.queue_seconds or 0, 0)
        ended = min(record.created_at + dt.timedelta(seconds=waited), self.service.clock())
        self.service.ticket_after_queue(uow, call, call.queue_result, ended)

    def _replay_queue_result(self, uow: "UnitOfWork", record: SpooledQueueResult) -> bool:
        """Apply a spooled queue result; False if the call already had it."""
        before = uow.calls.load(record.call_sid)
        if before is None:
            self.service.meet(uow, record.call_sid, None, None, record.at)
        after = self.service.apply_queue_result(uow, record.call_sid, record.result,
                                                record.queue_time, record.at)
        if before is None:
            return True
        moved = before.ticket is not None and after.ticket.status is not before.ticket.status
        return moved or before.queue_result != record.result

    def _replay_status(self, uow: "UnitOfWork", record: SpooledStatus) -> bool:
        """Apply a spooled status (a call the database never saw is stored first)."""
        applied, *_ = self.service.apply_status(uow, record.call_sid, record.status,
                                                record.duration, record.at, record.sequence,
                                                record.to, record.caller)
        return applied


class _SpoolPorts:
    """The flow's side effects while the database is unreachable: kept for the spool."""

    def __init__(self, service: "CallService", call_sid: str, line: Line | None, english: bool):
        self.service = service
        self.call_sid = call_sid
        self.line = line
        self.english = english
        self.ticket: TicketInfo | None = None
        self.sms: SpooledSms | None = None

    def verify(self, pmi: str, host_key: str) -> Caller | None:
        return None  # never asked: only verified callers are routed during an outage

    def open_ticket(self, caller: Caller, priority: int, target_minutes: int) -> TicketInfo:
        # The same number for the same call, however often Twilio repeats the request.
        self.ticket = TicketInfo(self.service.outage.ticket_number(self.call_sid), priority,
                                 target_minutes)
        return self.ticket

    def send_sms(self, template: str, params: dict[str, object]) -> None:
        body = self.service.catalogue_for(self.line, self.english).text(template, params)
        self.sms = SpooledSms(template, body)
