"""The service layer: one webhook = one transaction around the call flow.

Loads the call, runs the flow with ports backed by the database, stores the new state and
hands the reply to the TwiML renderer. Nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from .. import metrics
from ..config import IvrConfig, Line
from ..domain.flow import Caller, CallFlow, CallState, Reply, Step, TicketInfo, waiting
from ..domain.phones import callable_number, can_receive_sms, lockout_keys, mask
from ..security import HostKeyHasher
from ..storage import (
    DATABASE_DOWN,
    AccountRepository,
    CallRepository,
    LockoutRepository,
    OutboxRepository,
    Storage,
    TicketRepository,
    ticket_info,
    utcnow,
)
from ..storage.models import Call, Ticket
from .prompts import Catalogue
from .spool import Spool
from .twiml import SERVED, Renderer

log = logging.getLogger("ivr.calls")


@dataclass(frozen=True)
class CallRequest:
    """The parts of a Twilio voice request the service uses."""

    call_sid: str
    account_sid: str | None
    to: str
    caller: str

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "CallRequest | None":
        """None unless the request names a call the way Twilio does (CA + 32 hex digits)."""
        sid = params.get("CallSid") or ""
        if not CALL_SID.fullmatch(sid):
            return None
        account = params.get("AccountSid") or ""
        return cls(sid, account if ACCOUNT_SID.fullmatch(account) else None,
                   _printable(params.get("To"), 32), _printable(params.get("From"), 64))


CALL_SID = re.compile(r"CA[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")


def _printable(value: str | None, limit: int) -> str:
    """A caller-supplied field as it may be stored: printable characters, bounded length."""
    return "".join(ch for ch in (value or "")[: limit * 4] if ch.isprintable())[:limit]


class CallService:
    def __init__(self, config: IvrConfig, catalogues: dict[str, Catalogue], storage: Storage,
                 hasher: HostKeyHasher, renderer: Renderer, spool: Spool,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.spool = spool
        self.config = config
        self.catalogues = catalogues
        self.storage = storage
        self.hasher = hasher
        self.renderer = renderer
        self.clock = clock

    # -- webhooks ----------------------------------------------------------------------

    def incoming(self, params: Mapping[str, str]) -> str:
        request = CallRequest.from_params(params)
        if request is None:
            return self.renderer.hangup()
        with self.storage.transaction() as session:
            call, state, line = self._load(session, request)
            reply = self._flow(line).start(state)
            self._save(session, call, state, reply)
        return self.renderer.reply(reply, line)

    def gather(self, step: str, params: Mapping[str, str],
               query: Mapping[str, str] | None = None) -> str:
        request = CallRequest.from_params(params)
        if request is None:
            return self.renderer.hangup()
        digits = (params.get("Digits") or "")[:64]
        try:
            with self.storage.transaction() as session:
                call, state, line = self._load(session, request)
                ports = _Ports(self, session, call, state)
                reply = self._flow(line).handle(state, step, digits, ports)
                self._save(session, call, state, reply)
                action_query = self._verified_pass(session, call, state, reply)
        except DATABASE_DOWN:
            verified = self._check_pass(request.call_sid, query or {})
            if step != Step.PRIORITY.value or verified is None:
                raise
            return self._route_during_outage(request, digits, verified, query or {})
        return self.renderer.reply(reply, line, action_query)

    def status(self, params: Mapping[str, str]) -> None:
        request = CallRequest.from_params(params)
        if request is None:
            return
        status = _printable(params.get("CallStatus"), 32)
        duration = _int(params.get("CallDuration"))
        sequence = _int(params.get("SequenceNumber"))
        try:
            with self.storage.transaction() as session:
                call, abandoned = CallRepository(self.storage, session).record_status(
                    request.call_sid, status, duration, self.clock(), sequence=sequence)
                if abandoned:
                    metrics.CALLS.labels(call.region, call.outcome).inc()
                if call is not None:
                    log.info("call %s status=%s outcome=%s duration=%s", call.call_sid, status,
                             call.outcome, duration)
        except DATABASE_DOWN:
            metrics.SPOOLED.labels("status").inc()
            self.spool.append({"kind": "status", "call_sid": request.call_sid, "status": status,
                               "duration": duration, "sequence": sequence,
                               "at": self.clock().isoformat()})
            log.warning("database unreachable: status of call %s spooled", request.call_sid)

    def queue_result(self, params: Mapping[str, str], ticket_number: str | None) -> str:
        """Twilio's request after <Enqueue> or <Dial> ends: record how it ended and how long
        the caller waited, move the ticket on, and tell the caller what happens next."""
        request = CallRequest.from_params(params)
        if request is None:
            return self.renderer.hangup()
        result = _printable(params.get("QueueResult") or params.get("DialCallStatus"), 32)
        queue_time = _int(params.get("QueueTime"))
        line, english = self.config.line_for(request.to), False
        try:
            with self.storage.transaction() as session:
                call, ticket = self._apply_queue_result(session, request.call_sid, result,
                                                        queue_time, self.clock())
                if call is not None:
                    english, line = call.english, self.config.line_for(call.dialed_number)
                ticket_number = ticket.number if ticket is not None else None
        except DATABASE_DOWN:
            # The ticket number came back in the action URL; trust only its shape.
            ticket_number = ticket_number if (ticket_number or "").isdigit() else None
            metrics.SPOOLED.labels("queue_result").inc()
            self.spool.append({"kind": "queue_result", "call_sid": request.call_sid,
                               "result": result, "queue_time": queue_time,
                               "at": self.clock().isoformat()})
            log.warning("database unreachable: queue result of call %s spooled",
                        request.call_sid)
        log.info("call %s queue result=%s", request.call_sid, result)
        return self.renderer.after_queue(line, ticket_number, result, english)

    def _apply_queue_result(self, session: Session, call_sid: str, result: str,
                            queue_time: int | None, now: dt.datetime):
        """Record how the wait ended and move the ticket on: (call, ticket)."""
        call = CallRepository(self.storage, session).record_queue_result(
            call_sid, result, queue_time, now)
        if call is None:
            return None, None
        tickets = TicketRepository(self.storage, session)
        if result == "hangup":  # gave up waiting: back to the open pile
            ticket = tickets.move(call_sid, "open", now)
        elif result in SERVED:
            ticket = tickets.move(call_sid, "connected", now)
        else:  # left for a callback, or the queue or desk could not take the call
            ticket = tickets.move(call_sid, "callback_requested", now,
                                  callback_number=callable_number(call.caller_number))
        return call, ticket or tickets.for_call(call_sid)

    def wait(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The waitUrl: position, expected wait and the callback offer, then hold audio."""
        request = CallRequest.from_params(params)
        line = self.config.line_for((request.to if request else None) or params.get("To"))
        english, offer = False, False
        if request is not None:
            try:
                with self.storage.transaction() as session:
                    call = CallRepository(self.storage, session).get(request.call_sid,
                                                                     for_update=False)
                    ticket = TicketRepository(self.storage, session).for_call(request.call_sid)
                    if call is not None:
                        english, line = call.english, self.config.line_for(call.dialed_number)
                        offer = ticket is not None and ticket.status in ("open", "in_queue") \
                            and callable_number(call.caller_number) is not None
            except DATABASE_DOWN:  # keep the caller waiting; a callback cannot be recorded
                log.warning("database unreachable: wait of call %s without callback offer",
                            request.call_sid)
        speech = waiting(_int(params.get("QueuePosition")), _int(params.get("AvgQueueTime")),
                         self.config.queue.callback_key if offer else None)
        ticket_query = urlencode({k: query[k] for k in ("ticket", "priority") if k in query})
        return self.renderer.wait(speech, line, english, ticket_query, offer)

    def wait_choice(self, params: Mapping[str, str],
                    query: Mapping[str, str] | None = None) -> str:
        """A key pressed while waiting: the callback key leaves the queue for a callback."""
        request = CallRequest.from_params(params)
        if request is None or (params.get("Digits") or "") != self.config.queue.callback_key:
            query = query or {}
            return self.renderer.back_to_wait(
                urlencode({k: query[k] for k in ("ticket", "priority") if k in query}))
        try:
            with self.storage.transaction() as session:
                now = self.clock()
                call = CallRepository(self.storage, session).get(request.call_sid)
                number = callable_number(call.caller_number) if call is not None else None
                tickets = TicketRepository(self.storage, session)
                ticket = tickets.move(request.call_sid, "callback_requested", now,
                                      callback_number=number) if number else None
                if ticket is None:
                    # A repeated press (the ticket already waits for its callback) leaves too.
                    ticket = tickets.for_call(request.call_sid)
                    if ticket is not None and ticket.status == "callback_requested":
                        return self.renderer.leave()
                    return self.renderer.empty()
                if call.can_text:
                    self.queue_sms(session, call, call.english, "sms_callback",
                                   {"brand": self.config.service.brand, "ticket": ticket.number})
        except DATABASE_DOWN:
            log.warning("database unreachable: callback for call %s not recorded; "
                        "caller stays in the queue", request.call_sid)
            return self.renderer.empty()
        log.info("call %s left the queue for a callback (ticket id=%s)", request.call_sid, ticket.id)
        return self.renderer.leave()

    def fallback(self, params: Mapping[str, str]) -> str:
        line = self.config.line_for(params.get("To"))
        request = CallRequest.from_params(params)  # only a well-formed SID reaches the log
        log.warning("fallback answered call %s to %s", request.call_sid if request else "?",
                    mask(params.get("To")))
        return self.renderer.fallback(line)

    # -- database outage ---------------------------------------------------------------

    def _pass_tag(self, call_sid: str, account_ref: str, flags: str) -> str:
        key = self.hasher.derive("verified-call")
        return hmac.new(key, f"{call_sid}|{account_ref}|{flags}".encode(), hashlib.sha256).hexdigest()[:32]

    def _verified_pass(self, session: Session, call: Call, state: CallState,
                       reply: Reply) -> dict[str, str] | None:
        """Query parameters for the priority prompt of a verified caller: proof, signed by
        the service, that lets the call be routed even if the database is gone by then."""
        if reply.ask is None or reply.ask.step is not Step.PRIORITY or state.caller is None:
            return None
        ref = state.caller.ref
        if ref is None:  # a re-prompt: the caller was verified by an earlier request
            account = AccountRepository(session).by_emails([state.caller.user_email]).get(
                state.caller.user_email)
            if account is None:
                return None
            ref = account.id
        ref, flags = str(ref), f"{int(call.can_text)}{int(state.english)}"
        return {"a": ref, "f": flags, "t": self._pass_tag(call.call_sid, ref, flags)}

    def outage_ticket_number(self, call_sid: str) -> str:
        """A ticket number derived from the call, like new_ticket_number() in form."""
        digest = hmac.new(self.hasher.derive("outage-ticket"), call_sid.encode(), hashlib.sha256)
        return str(10_000_000 + int.from_bytes(digest.digest()[:8], "big") % 90_000_000)

    def _check_pass(self, call_sid: str, query: Mapping[str, str]) -> tuple[int, bool, bool] | None:
        ref, flags, tag = query.get("a", ""), query.get("f", ""), query.get("t", "")
        if not (ref.isdigit() and flags in ("00", "01", "10", "11")):
            return None
        if not hmac.compare_digest(tag, self._pass_tag(call_sid, ref, flags)):
            return None
        return int(ref), flags[0] == "1", flags[1] == "1"

    def _route_during_outage(self, request: CallRequest, digits: str,
                             verified: tuple[int, bool, bool], query: Mapping[str, str]) -> str:
        """Route a verified caller without the database; the ticket goes to the spool."""
        account_ref, can_text, english = verified
        line = self.config.line_for(request.to)
        state = CallState(request.call_sid, can_text=can_text, step=Step.PRIORITY,
                          english=english, caller=Caller("", "", "", ""))
        ports = _SpoolPorts(self, request.call_sid, line, english)
        reply = self._flow(line).handle(state, Step.PRIORITY.value, digits, ports)
        if reply.route is None or ports.ticket is None:
            return self.renderer.reply(reply, line, dict(query))
        now = self.clock().isoformat()
        metrics.SPOOLED.labels("ticket").inc()
        self.spool.append({
            "kind": "ticket", "call_sid": request.call_sid, "account_ref": account_ref,
            "number": ports.ticket.number, "priority": ports.ticket.priority,
            "target_response_minutes": ports.ticket.target_response_minutes,
            "region": line.region if line is not None else "unknown",
            "dialed_number": line.number if line is not None else request.to,
            "caller_number": request.caller, "can_text": can_text, "english": english,
            "language": self.renderer.voices(line)[1 if english else 0].language,
            "created_at": now, "acknowledged_at": now, "sms": ports.sms,
            "status": "open" if self.config.route_for(line).kind == "dial" else "in_queue",
        })
        log.warning("database unreachable: call %s routed, its ticket spooled", request.call_sid)
        return self.renderer.reply(reply, line)

    def replay(self, record: dict) -> bool:
        """Apply one spooled record; False if the database already had it."""
        with self.storage.transaction() as session:
            if record.get("kind") == "status":
                CallRepository(self.storage, session).record_status(
                    record["call_sid"], record["status"], record.get("duration"),
                    dt.datetime.fromisoformat(record["at"]), sequence=record.get("sequence"))
                return True
            if record.get("kind") == "queue_result":
                self._apply_queue_result(session, record["call_sid"], record["result"],
                                         record.get("queue_time"),
                                         dt.datetime.fromisoformat(record["at"]))
                return True
            account = AccountRepository(session).by_id(record["account_ref"])
            restored = TicketRepository(self.storage, session).restore(
                record, account, dt.datetime.fromisoformat(record["created_at"]))
            if restored is not None and record.get("sms"):
                OutboxRepository(self.storage, session).queue(
                    call_sid=record["call_sid"], template=record["sms"]["template"],
                    to_number=record["caller_number"], body=record["sms"]["body"],
                    now=self.clock())
            return restored is not None

    # -- helpers -----------------------------------------------------------------------

    def _flow(self, line: Line | None) -> CallFlow:
        return CallFlow(self.config, line, self.clock().date())

    def _load(self, session: Session, request: CallRequest) -> tuple[Call, CallState, Line | None]:
        """The call's record and state (created on its first webhook), and its line."""
        calls = CallRepository(self.storage, session)
        call = calls.get(request.call_sid)
        if call is None:
            line = self.config.line_for(request.to)
            if line is None:
                log.warning("call %s to unconfigured number %s answered in %s", request.call_sid,
                            mask(request.to), self.config.service.default_language)
            voice = line.speech if line is not None else self.config.service.speech
            call = calls.start(
                call_sid=request.call_sid,
                account_sid=request.account_sid,
                dialed_number=line.number if line is not None else request.to,
                region=line.region if line is not None else "unknown",
                language=voice.language,
                caller_number=request.caller,
                can_text=can_receive_sms(request.caller),
                now=self.clock(),
            )
            log.info("call %s started region=%s from=%s", call.call_sid, call.region,
                     mask(request.caller))
        # Only a finished call replays its ticket; no other step needs to read it.
        ticket = TicketRepository(self.storage, session).for_call(call.call_sid) \
            if call.step == Step.DONE.value else None
        return call, calls.state(call, ticket), self.config.line_for(call.dialed_number)

    def _save(self, session: Session, call: Call, state: CallState, reply: Reply) -> None:
        now = self.clock()
        before = call.outcome
        if state.english:
            line = self.config.line_for(call.dialed_number)
            if line is not None and line.english is not None:
                call.language = line.english.language
        CallRepository.save(call, state, now)
        if reply.route is not None:
            # The caller is about to hear the number: that is the acknowledgement.
            tickets = TicketRepository(self.storage, session)
            tickets.acknowledge(call.call_sid, now)
            if self.config.route_for(self.config.line_for(call.dialed_number)).kind != "dial":
                tickets.move(call.call_sid, "in_queue", now)
        if call.outcome != before:
            log.info("call %s outcome=%s steps=%s", call.call_sid, call.outcome, call.steps_reached)
            metrics.CALLS.labels(call.region, call.outcome).inc()
            if state.ticket is not None and call.outcome == "routed":
                metrics.TICKETS.labels(str(state.ticket.priority)).inc()

    def catalogue_for(self, line: Line | None, english: bool) -> Catalogue:
        own, alternative = self.renderer.voices(line)
        return self.catalogues[(alternative if english else own).catalogue_name]

    def queue_sms(self, session: Session, call: Call, english: bool, template: str,
                  params: dict[str, object]) -> None:
        """Queue a text message to the caller, in the call's language (once per template)."""
        line = self.config.line_for(call.dialed_number)
        OutboxRepository(self.storage, session).queue(
            call_sid=call.call_sid, template=template, to_number=call.caller_number,
            body=self.catalogue_for(line, english).text(template, params), now=self.clock())

    def outbox_depth(self) -> int:
        with self.storage.transaction() as session:
            return OutboxRepository(self.storage, session).depth()


class _Ports:
    """The flow's side effects, inside the webhook's transaction."""

    def __init__(self, service: CallService, session: Session, call: Call, state: CallState):
        self.service = service
        self.session = session
        self.call = call
        self.state = state

    def verify(self, pmi: str, host_key: str) -> Caller | None:
        """Check the host key, within the lockout limits. Every refusal looks the same to
        the caller and costs the same work: the keyed hash is computed even for an unknown
        PMI, and a locked PMI or caller is refused even with the right key."""
        service, sid, now = self.service, self.call.call_sid, self.service.clock()
        policy = service.config.lockout
        account = AccountRepository(self.session).by_pmi(pmi)
        stored = account.host_key_hash if account is not None else None
        matches = service.hasher.matches(pmi, host_key, stored)
        lockouts = LockoutRepository(service.storage, self.session)
        pmi_key, caller_key = lockout_keys(pmi, self.call.caller_number)
        if lockouts.locked([pmi_key, caller_key], now):
            lockouts.attempt_while_locked(pmi_key, now)
            lockouts.attempt_while_locked(caller_key, now)
            metrics.VERIFICATIONS.labels("locked").inc()
            log.info("call %s verification refused: PMI or caller locked", sid)
            return None
        if matches and account is not None:
            lockouts.clear(pmi_key)
            metrics.VERIFICATIONS.labels("passed").inc()
            log.info("call %s verification passed", sid)
            return Caller(account.account_id, account.user_email, account.plan, account.role,
                          account.id)
        metrics.VERIFICATIONS.labels("failed").inc()
        log.info("call %s verification failed", sid)
        if lockouts.fail(pmi_key, now, threshold=policy.pmi_failures, window=None,
                         lock_for=policy.duration):
            log.warning("call %s: a PMI reached %s failures and is locked (see `accounts locks`)",
                        sid, policy.pmi_failures)
        if lockouts.fail(caller_key, now, threshold=policy.caller_failures,
                         window=dt.timedelta(minutes=policy.caller_window_minutes),
                         lock_for=policy.duration):
            log.warning("caller %s reached %s failures within %s minutes and is locked",
                        mask(self.call.caller_number), policy.caller_failures,
                        policy.caller_window_minutes)
        return None

    def open_ticket(self, caller: Caller, priority: int, target_minutes: int) -> TicketInfo:
        ticket: Ticket = TicketRepository(self.service.storage, self.session).open(
            call_sid=self.call.call_sid, caller=caller, priority=priority,
            target_minutes=target_minutes, region=self.call.region, now=self.service.clock(),
            # The number this call would get during an outage too, so both paths agree.
            number=self.service.outage_ticket_number(self.call.call_sid))
        log.info("call %s ticket id=%s priority=%s", self.call.call_sid, ticket.id, ticket.priority)
        return ticket_info(ticket)

    def send_sms(self, template: str, params: dict[str, object]) -> None:
        self.service.queue_sms(self.session, self.call, self.state.english, template, params)


class _SpoolPorts:
    """The flow's side effects while the database is unreachable: kept for the spool."""

    def __init__(self, service: CallService, call_sid: str, line: Line | None, english: bool):
        self.service = service
        self.call_sid = call_sid
        self.line = line
        self.english = english
        self.ticket: TicketInfo | None = None
        self.sms: dict | None = None

    def verify(self, pmi: str, host_key: str) -> Caller | None:
        return None  # never asked: only verified callers are routed during an outage

    def open_ticket(self, caller: Caller, priority: int, target_minutes: int) -> TicketInfo:
        # The same number for the same call, however often Twilio repeats the request.
        self.ticket = TicketInfo(self.service.outage_ticket_number(self.call_sid), priority,
                                 target_minutes)
        return self.ticket

    def send_sms(self, template: str, params: dict[str, object]) -> None:
        body = self.service.catalogue_for(self.line, self.english).text(template, params)
        self.sms = {"template": template, "body": body}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None

