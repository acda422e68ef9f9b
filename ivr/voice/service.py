"""The service layer: one webhook = one unit of work around the call flow.

Loads the call (one statement), runs the flow with ports backed by the database, stores
the new state (one statement) and hands the reply to the TwiML renderer. Nothing here
knows about HTTP; the outage path (signed pass, spool, replay) is ``outage.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from .. import metrics
from ..config import IvrConfig, Line
from ..domain.flow import Caller, CallFlow, CallState, Reply, Step, TicketInfo, waiting
from ..domain.lifecycle import (
    TicketStatus,
    after_queue,
    routed_status,
    waiting_ended_by_the_desk,
)
from ..domain.phones import callable_number, can_receive_sms, lockout_keys, mask
from ..security import HostKeyHasher
from ..storage import DATABASE_DOWN, CallRecord, Storage, UnitOfWork, utcnow
from ..storage import helpdesk as helpdesk_jobs
from .outage import Outage
from .prompts import Catalogue
from .spool import Spool
from .twiml import Renderer, english_chosen, queue_query, ticket_in

if TYPE_CHECKING:
    from .floor import Floor

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


class _Raced(Exception):
    """Another request stored this new call first: load it and run the step again."""


class CallService:
    def __init__(self, config: IvrConfig, catalogues: dict[str, Catalogue], storage: Storage,
                 hasher: HostKeyHasher, renderer: Renderer, spool: Spool, floor: "Floor",
                 clock: Callable[[], dt.datetime] = utcnow):
        self.spool = spool
        self.floor = floor  # replays the callback answers it spooled
        self.config = config
        self.catalogues = catalogues
        self.storage = storage
        self.hasher = hasher
        self.renderer = renderer
        self.clock = clock
        self.outage = Outage(self)

    # -- webhooks ----------------------------------------------------------------------

    def incoming(self, params: Mapping[str, str]) -> str:
        request = CallRequest.from_params(params)
        if request is None:
            return self.renderer.hangup()
        with self.storage.unit_of_work() as uow:
            reply, line, _ = self._step(uow, request, lambda uow, record, flow:
                                        flow.start(record.state))
        return self.renderer.hangup() if reply is None else self.renderer.reply(reply, line)

    def gather(self, step: str, params: Mapping[str, str],
               query: Mapping[str, str] | None = None) -> str:
        request = CallRequest.from_params(params)
        if request is None:
            return self.renderer.hangup()
        digits = (params.get("Digits") or "")[:64]

        prompt = (query or {}).get("p")

        def handle(uow: UnitOfWork, record: CallRecord, flow: CallFlow) -> Reply:
            return flow.handle(record.state, step, digits, _Ports(self, uow, record), prompt)

        try:
            with self.storage.unit_of_work() as uow:
                reply, line, record = self._step(uow, request, handle)
                action_query = None if reply is None else \
                    self.outage.verified_pass(uow, record, reply)
        except DATABASE_DOWN:
            verified = self.outage.check_pass(request.call_sid, query or {})
            if step != Step.PRIORITY.value or verified is None:
                raise
            return self.outage.route(request, digits, verified, query or {})
        if reply is None:
            return self.renderer.hangup()
        return self.renderer.reply(reply, line, action_query)

    def status(self, params: Mapping[str, str]) -> None:
        request = CallRequest.from_params(params)
        if request is None:
            return
        status = _printable(params.get("CallStatus"), 32)
        duration = _int(params.get("CallDuration"))
        sequence = _int(params.get("SequenceNumber"))
        try:
            with self.storage.unit_of_work() as uow:
                applied, region, outcome, abandoned = self.apply_status(
                    uow, request.call_sid, status, duration, self.clock(), sequence,
                    request.to, request.caller)
        except DATABASE_DOWN:
            self.outage.spool_status(request, status, duration, sequence)
            return
        if abandoned:
            metrics.CALLS.labels(region, outcome).inc()
        if applied:
            log.info("call %s status=%s outcome=%s duration=%s", request.call_sid, status,
                     outcome, duration)

    def apply_status(self, uow: UnitOfWork, call_sid: str, status: str, duration: int | None,
                     at: dt.datetime, sequence: int | None, to: str | None,
                     caller: str | None) -> tuple[bool, str | None, str | None, bool]:
        """Apply a status callback (live or replayed from the spool); see
        ``CallRepository.record_status`` for what it returns. A call the database has not
        seen is stored first, so its end is kept rather than dropped: one answered while
        the database was down and not replayed yet, one whose first webhook is still in
        its transaction (on PostgreSQL the insert waits for that one's, then finds it), or
        one whose first webhook failed and was answered by the fallback. A call stored
        this way is abandoned with no step reached, and not counted as abandoned by a
        caller (``abandoned`` is False): nobody knows what its caller heard."""
        calls = uow.calls
        result = calls.record_status(call_sid, status, duration, at, sequence=sequence)
        if result[0] or calls.exists(call_sid):
            return result  # applied, or older than a callback already applied
        met = self.meet(uow, call_sid, to, caller, at)  # False: its first webhook stored it
        if met:
            log.info("call %s stored from its status callback (its first webhook not seen)",
                     call_sid)
        applied, region, outcome, abandoned = calls.record_status(call_sid, status, duration,
                                                                  at, sequence=sequence)
        return applied, region, outcome, abandoned and not met

    def meet(self, uow: UnitOfWork, call_sid: str, to: str | None, caller: str | None,
             at: dt.datetime) -> bool:
        """Store a call known only from a callback; False if it was stored meanwhile."""
        record = self._new_record(uow, call_sid, None, to or "", caller or "")
        return uow.calls.start(record, record.state, record.language, at)

    def _new_record(self, uow: UnitOfWork, call_sid: str, account_sid: str | None, to: str,
                    caller: str) -> CallRecord:
        """A call not stored yet, on the line it was made to (the default voice and an
        "unknown" region for a number that is not one of the lines)."""
        line = self.config.line_for(to)
        voice = line.speech if line is not None else self.config.service.speech
        return uow.calls.new(call_sid=call_sid, account_sid=account_sid,
                             dialed_number=line.number if line is not None else to,
                             region=line.region if line is not None else "unknown",
                             language=voice.language, caller_number=caller,
                             can_text=can_receive_sms(caller))

    def queue_result(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """Twilio's request after <Enqueue> or <Dial> ends: record how it ended and how long
        the caller waited, move the ticket on, and tell the caller what happens next.
        ``query`` is the action URL's (the ticket, and ``en`` for a caller who chose
        English): what the caller hears when the database cannot say."""
        request = CallRequest.from_params(params)
        if request is None:
            return self.renderer.hangup()
        result = _printable(params.get("QueueResult") or params.get("DialCallStatus"), 32)
        queue_time = _int(params.get("QueueTime"))
        ticket_number = query.get("ticket")
        line, english = self.config.line_for(request.to), english_chosen(query)
        try:
            with self.storage.unit_of_work() as uow:
                record = self.apply_queue_result(uow, request.call_sid, result, queue_time,
                                                 self.clock())
                if record is not None:
                    english, line = record.english, self.config.line_for(record.dialed_number)
                if record is not None and record.ticket is not None:
                    ticket_number = record.ticket.number
                elif ticket_number != self.outage.ticket_number(request.call_sid):
                    # Only a ticket routed through the spool, not replayed yet, has no
                    # row: its number, derived from the call, is the one the caller heard.
                    ticket_number = None
        except DATABASE_DOWN:
            # The ticket number came back in the action URL; trust only its shape.
            ticket_number = ticket_in(query)
            self.outage.spool_queue_result(request, result, queue_time)
        log.info("call %s queue result=%s", request.call_sid, result)
        return self.renderer.after_queue(line, ticket_number, result, english,
                                         can_call_back=callable_number(request.caller)
                                         is not None)

    def apply_queue_result(self, uow: UnitOfWork, call_sid: str, result: str,
                           queue_time: int | None, now: dt.datetime) -> CallRecord | None:
        """Record how the wait ended and move the ticket where that result sends it
        (``lifecycle.after_queue``); a ticket already past that point stays where it is.
        Returns the call, its ticket as it now stands. Twilio reports the end of a wait
        once: a copy of that report (a late retry, the signed request replayed, a spool
        replayed twice) changes nothing, or it would move the ticket again from wherever
        the desk has put it since."""
        record = uow.calls.load(call_sid)
        if record is None or record.queue_result:
            return record
        uow.calls.record_queue_result(call_sid, result, queue_time, now)
        self.ticket_after_queue(uow, record, result, now)
        return record

    def ticket_after_queue(self, uow: UnitOfWork, record: CallRecord, result: str,
                           now: dt.datetime) -> None:
        """Move the call's ticket where the end of its wait sends it (``record.ticket`` is
        then the ticket as it now stands)."""
        ticket = record.ticket
        if ticket is None:
            return
        number = callable_number(record.caller_number)
        can_call_back = number is not None
        if after_queue(result, can_call_back) is not TicketStatus.CALLBACK_REQUESTED:
            number = None
        record.ticket, moved = uow.tickets.advance(
            ticket, lambda current: after_queue(result, can_call_back, current), now,
            callback_number=number)
        if self.config.helpdesk and moved:
            helpdesk_jobs.queue_status(uow.connection, record.ticket, now, number)  # issue 9
        if moved and result == "leave" and record.can_text \
                and record.ticket.status is TicketStatus.CALLBACK_REQUESTED:
            # The callback key pressed while the database was down (``wait_choice``): the
            # end of the wait records the callback, with the text a live press sends.
            self.queue_sms(uow, record, record.english, "sms_callback",
                           {"brand": self.config.service.brand, "ticket": record.ticket.number})

    def wait(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The waitUrl: position, expected wait and the callback offer, then hold audio."""
        request = CallRequest.from_params(params)
        line = self.config.line_for((request.to if request else None) or params.get("To"))
        english, offer = english_chosen(query), False
        if request is not None:
            try:
                with self.storage.unit_of_work(readonly=True) as uow:
                    record = uow.calls.load(request.call_sid, lock=False)
                if record is not None and record.ticket is not None \
                        and waiting_ended_by_the_desk(record.ticket.status):
                    log.info("call %s let go from the queue: its ticket is %s",
                             request.call_sid, record.ticket.status)
                    return self.renderer.let_go(
                        self.config.line_for(record.dialed_number), record.english,
                        record.ticket.number, record.ticket.status,
                        can_call_back=callable_number(record.caller_number) is not None)
                if record is not None:
                    english, line = record.english, self.config.line_for(record.dialed_number)
                    waits = record.ticket.status in (TicketStatus.OPEN, TicketStatus.IN_QUEUE) \
                        if record.ticket is not None else self._spooled_ticket(request, query)
                    offer = waits and callable_number(record.caller_number) is not None
            except DATABASE_DOWN:
                # The callback key leaves all the same: the end of the wait records the
                # callback, or is spooled (``wait_choice``).
                offer = ticket_in(query) is not None \
                    and callable_number(request.caller) is not None
        speech = waiting(_int(params.get("QueuePosition")), _int(params.get("AvgQueueTime")),
                         self.config.queue.callback_key if offer else None,
                         offer_ticket="ticket" in query)
        return self.renderer.wait(speech, line, english, queue_query(query, english), offer)

    def wait_choice(self, params: Mapping[str, str],
                    query: Mapping[str, str] | None = None) -> str:
        """A key pressed while waiting: the callback key leaves the queue for a callback."""
        request = CallRequest.from_params(params)
        # Any key that does not leave for a callback goes back to the wait explicitly.
        keep_waiting = self.renderer.back_to_wait(queue_query(query or {}))
        if request is None or (params.get("Digits") or "") != self.config.queue.callback_key:
            return keep_waiting
        try:
            with self.storage.unit_of_work() as uow:
                now = self.clock()
                record = uow.calls.load(request.call_sid)
                ticket = record.ticket if record is not None else None
                if ticket is None:
                    # Routed through the spool, not replayed yet: the end of the wait,
                    # stored on the call, sends the replayed ticket to its callback.
                    if record is not None and not record.finished \
                            and self._spooled_ticket(request, query or {}) \
                            and callable_number(record.caller_number) is not None:
                        return self.renderer.leave()
                    return keep_waiting
                if record.finished:
                    # Twilio has said how the wait or the call ended: a late or replayed
                    # press changes nothing (the desk may have moved the ticket since).
                    return self.renderer.hangup()
                number = callable_number(record.caller_number)
                moved = False
                if number is not None:  # a withheld caller is not offered the key
                    ticket, moved = uow.tickets.advance(
                        ticket, TicketStatus.CALLBACK_REQUESTED, now, callback_number=number)
                if not moved:
                    # A repeated press (the ticket already waits for its callback) leaves too.
                    if ticket.status is TicketStatus.CALLBACK_REQUESTED:
                        return self.renderer.leave()
                    return keep_waiting
                if self.config.helpdesk:  # help desk push (issue 9)
                    helpdesk_jobs.queue_status(uow.connection, ticket, now, number)
                if record.can_text:
                    self.queue_sms(uow, record, record.english, "sms_callback",
                                   {"brand": self.config.service.brand, "ticket": ticket.number})
        except DATABASE_DOWN:
            # The caller heard the offer before the database went away. They leave the
            # queue; Twilio then reports the wait's end (``leave``) to queue_result, which
            # records the callback, or spools it while the database is still away. Only
            # a caller with a number to call, holding a ticket this service wrote.
            if ticket_in(query or {}) is not None \
                    and callable_number(request.caller) is not None:
                log.warning("database unreachable: call %s leaves the queue for a callback, "
                            "recorded with the end of its wait", request.call_sid)
                return self.renderer.leave()
            log.warning("database unreachable: callback for call %s not recorded; "
                        "caller stays in the queue", request.call_sid)
            return keep_waiting
        log.info("call %s left the queue for a callback (ticket id=%s)", request.call_sid, ticket.id)
        return self.renderer.leave()

    def _spooled_ticket(self, request: CallRequest, query: Mapping[str, str]) -> bool:
        """Whether the queue URL names the ticket this call was given through the outage
        spool (its number is derived from the call): one not in the database yet."""
        return ticket_in(query) == self.outage.ticket_number(request.call_sid)

    def fallback(self, params: Mapping[str, str],
                 query: Mapping[str, str] | None = None) -> str:
        line = self.config.line_for(params.get("To"))
        request = CallRequest.from_params(params)  # only a well-formed SID reaches the log
        log.warning("fallback answered call %s to %s", request.call_sid if request else "?",
                    mask(params.get("To")))
        return self.renderer.fallback(line, english_chosen(query or {}))

    def replay(self, record: dict) -> bool:
        """Apply one spooled record; False if the database already had it."""
        return self.outage.replay(record)

    # -- helpers -----------------------------------------------------------------------

    def _flow(self, line: Line | None) -> CallFlow:
        return CallFlow(self.config, line, self.clock().date())

    def _step(self, uow: UnitOfWork, request: CallRequest,
              run: Callable[[UnitOfWork, CallRecord, CallFlow], Reply]
              ) -> tuple[Reply | None, Line | None, CallRecord]:
        """Load the call (or meet it), run one step of the flow, store what changed.
        The reply is None for a request about a finished call: Twilio has said how the
        call ended (whatever step it had reached) or how its wait in the queue ended, so a
        late or replayed request changes nothing."""
        for attempt in (1, 2):
            record, created = self._load(uow, request)
            line = self.config.line_for(record.dialed_number)
            if record.ended or (record.state.step is Step.DONE and record.finished):
                return None, line, record
            state = record.state
            before = dataclasses.replace(state, steps_reached=list(state.steps_reached))
            reply = run(uow, record, self._flow(line))
            try:
                self._save(uow, record, before, reply, line, created)
            except _Raced:
                if attempt == 2:
                    raise
                continue
            return reply, line, record
        raise AssertionError("unreachable")

    def _load(self, uow: UnitOfWork, request: CallRequest) -> tuple[CallRecord, bool]:
        """The call's record and state, and whether this webhook is its first."""
        record = uow.calls.load(request.call_sid)
        if record is not None:
            return record, False
        if self.config.line_for(request.to) is None:
            log.warning("call %s to unconfigured number %s answered in %s", request.call_sid,
                        mask(request.to), self.config.service.default_language)
        record = self._new_record(uow, request.call_sid, request.account_sid, request.to,
                                  request.caller)
        log.info("call %s started region=%s from=%s", record.call_sid, record.region,
                 mask(request.caller))
        return record, True

    def _save(self, uow: UnitOfWork, record: CallRecord, before: CallState, reply: Reply,
              line: Line | None, created: bool) -> None:
        state = record.state
        if state == before and not created:
            return  # a repeated request: nothing to write
        now = self.clock()
        language = record.language
        if state.english and line is not None and line.english is not None:
            language = line.english.language
        if created:
            if not uow.calls.start(record, state, language, now):
                raise _Raced
            outcome = state.outcome.value if state.outcome is not None else None
        else:
            outcome = uow.calls.save(record, state, language, now)
        if outcome != record.outcome:
            log.info("call %s outcome=%s steps=%s", record.call_sid, outcome,
                     ",".join(state.steps_reached))
            metrics.CALLS.labels(record.region, outcome).inc()
            if state.ticket is not None and outcome == "routed":
                metrics.TICKETS.labels(str(state.ticket.priority)).inc()

    def catalogue_for(self, line: Line | None, english: bool) -> Catalogue:
        own, alternative = self.renderer.voices(line)
        return self.catalogues[(alternative if english else own).catalogue_name]

    def queue_sms(self, uow: UnitOfWork, record: CallRecord, english: bool, template: str,
                  params: dict[str, object]) -> None:
        """Queue a text message to the caller, in the call's language (once per template)."""
        line = self.config.line_for(record.dialed_number)
        uow.outbox.queue(
            call_sid=record.call_sid, template=template, to_number=record.caller_number,
            body=self.catalogue_for(line, english).text(template, params), now=self.clock())

    def outbox_depth(self) -> int:
        with self.storage.unit_of_work(readonly=True) as uow:
            return uow.outbox.depth()


class _Ports:
    """The flow's side effects, inside the webhook's unit of work."""

    def __init__(self, service: CallService, uow: UnitOfWork, record: CallRecord):
        self.service = service
        self.uow = uow
        self.record = record

    def verify(self, pmi: str, host_key: str) -> Caller | None:
        """Check the host key, within the lockout limits. The PMI's and the caller's
        counters are claimed (held for this transaction) before the key is judged, so
        parallel requests are judged one after another against exact counts. Every
        refusal looks the same to the caller and costs the same work: the keyed hash is
        computed even for an unknown PMI, and a locked PMI or caller is refused even with
        the right key. The PMI's counter is found by the keyed hash of the digits typed,
        which are never stored there."""
        service, sid, now = self.service, self.record.call_sid, self.service.clock()
        policy = service.config.lockout
        uow = self.uow
        account = uow.accounts.entry_by_pmi(pmi)
        pmi_key, caller_key = lockout_keys(service.hasher.pmi_lockout_digest(pmi),
                                           self.record.caller_number)
        counters = uow.lockouts.claim(pmi_key, caller_key, now)
        pmi_count, caller_count = counters[pmi_key], counters[caller_key]
        matches = service.hasher.matches(pmi, host_key,
                                         account.host_key_hash if account is not None else None)
        if pmi_count.locked(now) or caller_count.locked(now):
            pmi_count.attempt_while_locked()
            caller_count.attempt_while_locked()
            uow.lockouts.settle(counters, now)
            metrics.VERIFICATIONS.labels("locked").inc()
            log.info("call %s verification refused: PMI or caller locked", sid)
            return None
        if matches and account is not None:
            pmi_count.clear(now)
            uow.lockouts.settle(counters, now)
            metrics.VERIFICATIONS.labels("passed").inc()
            log.info("call %s verification passed", sid)
            return Caller(account.account_id, account.user_email, account.plan, account.role,
                          account.id)
        metrics.VERIFICATIONS.labels("failed").inc()
        log.info("call %s verification failed", sid)
        if pmi_count.fail(now, threshold=policy.pmi_failures, window=None,
                          lock_for=policy.duration):
            log.warning("call %s: a PMI reached %s failures and is locked (see `accounts locks`)",
                        sid, policy.pmi_failures)
        if caller_count.fail(now, threshold=policy.caller_failures,
                             window=dt.timedelta(minutes=policy.caller_window_minutes),
                             lock_for=policy.duration):
            log.warning("caller %s reached %s failures within %s minutes and is locked",
                        mask(self.record.caller_number), policy.caller_failures,
                        policy.caller_window_minutes)
        uow.lockouts.settle(counters, now)
        return None

    def open_ticket(self, caller: Caller, priority: int, target_minutes: int) -> TicketInfo:
        """The call's ticket, created as the caller is routed: acknowledged (the caller is
        about to hear its number) and already where a routed ticket starts."""
        service, record = self.service, self.record
        config = service.config
        line = config.line_for(record.dialed_number)
        ticket = self.uow.tickets.open(
            call_sid=record.call_sid, caller=caller, priority=priority,
            target_minutes=target_minutes, region=record.region, now=service.clock(),
            status=routed_status(config.route_for(line).kind == "dial"), acknowledged=True,
            # The number this call would get during an outage too, so both paths agree.
            number=service.outage.ticket_number(record.call_sid),
            queue_group=config.queue_group(line, priority))
        record.ticket = ticket
        log.info("call %s ticket id=%s priority=%s", record.call_sid, ticket.id, ticket.priority)
        if service.config.helpdesk:  # help desk push, same transaction (issue 9)
            helpdesk_jobs.queue_create(self.uow.connection, ticket.id, service.clock())
        return ticket.info

    def send_sms(self, template: str, params: dict[str, object]) -> None:
        self.service.queue_sms(self.uow, self.record, self.record.state.english, template, params)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") and len(value) <= 40 else None
    except (TypeError, ValueError):
        return None
