"""The engineer side of the line: the engineer line's webhooks and the callback legs.

How an engineer is connected to the right caller: every caller waits alone in a Twilio
queue named after their ticket (``support-jp.12345678``). When an engineer reaches
``/voice/agent``, the service chooses the most urgent waiting caller they serve (priority
first, then the longest wait), claims them in the database so no other engineer takes
the same caller, whispers the summary to the engineer with <Say>, then <Dial><Queue>s
that caller's own queue. <Queue url> plays to the dequeued caller (an engineer is joining)
and tells the service the two are bridged. No REST call runs inside a webhook.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable, Mapping

from .. import metrics
from ..config import IvrConfig, Voice
from ..domain.digits import ascii_number
from ..domain.engineers import (
    ANSWERED,
    CUSTOMER_FAILURES,
    LONGEST_CONVERSATION,
    SYSTEM_ACTOR,
    UNCONFIRMED,
    UNKNOWN_ENGINEER,
    EngineerInfo,
    attempt_window,
    Waiting,
    customer_leg_ended,
    engineer_outcome,
    queue_name,
    ranked,
)
from ..domain.lifecycle import bridged, left_the_queue, reopened_when_stranded
from ..domain.phones import can_receive_sms, mask
from ..storage import DATABASE_DOWN, Storage
from ..storage import helpdesk as helpdesk_jobs
from ..domain.priority import LEVELS
from ..storage.engineers import (
    Assignment,
    CallbackAttempt,
    WAITING_READ,
    QueueGroups,
    EngineerRepository,
    FloorRepository,
    engineer_info,
    move_ticket,
    ticket_for_call,
)
from ..storage.models import Call, Ticket
from ..storage.tickets import ticket_by_number
from .outage import SpooledCallbackAnswer, SpooledCallbackStatus, encode
from .prompts import Catalogue
from .service import CALL_SID
from .spool import Spool
from .twiml import AgentRenderer, Renderer, SpokenLine

log = logging.getLogger("ivr.floor")

ESTIMATE_WINDOW = dt.timedelta(minutes=30)  # pick-ups counted for a waiting caller's estimate


def group_for(config: IvrConfig, call: Call, priority: int) -> str | None:
    """The configured queue (group) of a ticket's caller at a priority: the engineers who
    serve it take the caller; None for dial and TaskRouter routes, which engineers do not
    take from here."""
    return config.queue_group(config.line_for(call.dialed_number), priority)


def queue_groups(config: IvrConfig) -> QueueGroups:
    """``group_for`` as a table the database can use: the group of every configured line
    at every priority level, then of any other number by level."""
    pairs = tuple(((line.number, level), config.queue_group(line, level))
                  for line in config.lines for level in LEVELS)
    others = tuple((level, config.queue_group(None, level)) for level in LEVELS)
    return pairs, others


def waiting_of(config: IvrConfig, ticket: Ticket, call: Call) -> Waiting:
    return Waiting(ticket.id, ticket.priority, ticket.acknowledged_at or ticket.created_at,
                   group_for(config, call, ticket.priority), call.language)


def _sid(params: Mapping[str, str], name: str = "CallSid") -> str | None:
    sid = params.get(name) or ""
    return sid if CALL_SID.fullmatch(sid) else None


def _taken_by(assignment: Assignment | None, stale: dt.datetime) -> str | None:
    """Who has a waiting caller: the engineer connected to them, or one whose claim is
    fresh (made since ``stale``). None: the engineer line hands the caller to anyone."""
    if assignment is None or (assignment.connected_at is None and (
            assignment.claimed_at is None or assignment.claimed_at < stale)):
        return None
    return assignment.engineer or UNKNOWN_ENGINEER


def _missed_by(assignment: Assignment | None, engineer_call_sid: str) -> bool:
    """Whether this engineer call dialled the caller and did not find them: its claim was
    released (``FloorRepository.release``, the one way a claim is given up) and names it."""
    return assignment is not None and assignment.claimed_at is None \
        and assignment.connected_at is None \
        and assignment.engineer_call_sid == engineer_call_sid


# A callback attempt whose customer leg was answered and asked for a key (the greeting).
ASKED_FOR_A_KEY = "customer_answered"
# A callback leg's final statuses, as its status callback reports them.
LEG_ENDED = ("completed", "busy", "no-answer", "failed", "canceled")


def _minutes(seconds: float) -> int:
    return max(0, int(seconds // 60))


class Floor:
    """The engineer line and the callback legs, one transaction per webhook."""

    def __init__(self, config: IvrConfig, catalogues: dict[str, Catalogue], storage: Storage,
                 renderer: Renderer, spool: Spool, clock: Callable[[], dt.datetime]):
        self.spool = spool
        self.config = config
        self.catalogues = catalogues
        self.storage = storage
        self.renderer = renderer
        self.agent = AgentRenderer(config, catalogues)
        self.clock = clock
        self.groups = queue_groups(config)

    # -- helpers -----------------------------------------------------------------------

    def caller_voice(self, call: Call | None) -> Voice:
        line = self.config.line_for(call.dialed_number) if call is not None else None
        own, english = self.renderer.voices(line)
        return english if call is not None and call.english else own

    def engineer_voice(self, engineer: EngineerInfo | None) -> Voice:
        return self.agent.voice_for_languages(engineer.languages if engineer else ())

    def summary(self, voice: Voice, ticket: Ticket, call: Call, waited: float | None) -> list[SpokenLine]:
        """What an engineer hears about a caller before they are connected."""
        lines: list[SpokenLine] = [("agent_whisper", {
            "ticket": ticket.number, "priority": ticket.priority,
            "plan": call.plan or "?", "account": ticket.account_id, "region": ticket.region,
            "language": self.agent.language_name(voice, call.language)})]
        if waited is not None:
            minutes = _minutes(waited)
            lines.append(("agent_waited_minutes", {"minutes": minutes}) if minutes
                         else ("agent_waited_under_minute", {}))
        return lines

    def waiting(self) -> tuple[list[tuple[Ticket, Call, Waiting, str | None]], int]:
        """Callers in the queues now, the most urgent first (as many as the desk lists),
        with the engineer who has each (None for a caller the engineer line would hand to
        anyone); and how many wait in all."""
        stale = self._stale_claims_before()
        with self.storage.unit_of_work(readonly=True) as uow:
            floor = uow.floor
            rows = floor.waiting()
            total = floor.waiting_count() if len(rows) >= WAITING_READ else len(rows)
            return [(t, c, waiting_of(self.config, t, c), _taken_by(a, stale))
                    for t, c, a in rows], total

    def _stale_claims_before(self) -> dt.datetime:
        return self.clock() - dt.timedelta(seconds=self.config.engineers.claim_seconds)

    def position(self, call_sid: str) -> tuple[int, int | None] | None:
        """Where a waiting caller stands in their queue group, as engineers will take them,
        and the expected wait in seconds: their place times the time between pick-ups from
        that group over the last half hour (None without enough of them to tell)."""
        since = self.clock() - ESTIMATE_WINDOW
        with self.storage.unit_of_work(readonly=True) as uow:
            found = uow.floor.place_in_line(
                call_sid, self.groups, since)
        if found is None:
            return None
        ahead, taken = found
        place = ahead + 1
        if taken < 2:
            return place, None
        return place, int(place * ESTIMATE_WINDOW.total_seconds() / taken)

    def with_position(self, params: Mapping[str, str],
                      query: Mapping[str, str] | None = None) -> Mapping[str, str]:
        """A waitUrl request with QueuePosition and AvgQueueTime replaced by the caller's
        place in the engineer line's order and the service's estimate; neither said with
        the database down, nor for a ticket the database does not hold yet (routed during
        an outage, its spool not replayed); unchanged for a caller not waiting with a
        ticket (a shared queue, where Twilio's figures mean what they say)."""
        call_sid = _sid(params)
        if call_sid is None:
            return params
        # Twilio's AvgQueueTime of a one-caller queue is this caller's own wait so far,
        # not an expectation, and its QueuePosition always 1: replace them with the
        # service's place and estimate, or say neither ("0") when the database is away.
        values = params.to_dict() if hasattr(params, "to_dict") else dict(params)
        unknown = {**values, "QueuePosition": "0", "AvgQueueTime": "0"}
        try:
            found = self.position(call_sid)
        except DATABASE_DOWN:
            return unknown
        if found is None:
            # A ticket in the waitUrl means a queue of the caller's own, whatever the
            # database knows of it yet.
            return unknown if (query or {}).get("ticket") else params
        place, estimate = found
        return {**values, "QueuePosition": str(place), "AvgQueueTime": str(estimate or 0)}

    # -- the engineer line -------------------------------------------------------------

    def agent_call(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """POST /voice/agent: who is calling, and the most urgent caller they serve."""
        call_sid = _sid(params)
        with self.storage.unit_of_work() as uow:
            session = uow.session
            found = EngineerRepository(self.storage, session).for_caller(params.get("From"))
            engineer = engineer_info(found) if found is not None else None
        if engineer is None or call_sid is None:
            log.info("engineer line: refused a call from %s", mask(params.get("From")))
            return self.agent.refuse(self.config.service.speech)
        voice = self.engineer_voice(engineer)
        digits = (params.get("Digits") or "").strip()
        if digits and digits != "1":
            return self.agent.goodbye(voice)
        now = self.clock()
        stale = self._stale_claims_before()
        with self.storage.unit_of_work() as uow:
            session = uow.session
            floor = FloorRepository(self.storage, session)
            # Copies of one request (Twilio's retries, or two at once) run one after the
            # other, and a copy finds the caller its engineer call already claimed.
            EngineerRepository(self.storage, session).hold(engineer.name)
            # One engineer, one caller at a time: a second device of theirs (a Client
            # identity signed in twice) is not bridged to a caller nobody listens to.
            # The engineer may know better: Twilio's reports of that conversation's end
            # can be lost, and "1" pressed at the refusal ("anyway") says it has ended.
            # A callback counts too: its call is another of theirs (an engineer may be rung
            # on their laptop while their mobile holds here).
            anyway = query.get("anyway") == "1" and digits == "1"
            if anyway:
                # Recorded now, so the hold's next looks find her free without being told
                # again; a call she takes on another device later is looked for as ever.
                floor.calls_ended(engineer.name, engineer.name, "said on the engineer line",
                                  now, other_than=call_sid)
            busy = not anyway and (
                floor.talking_elsewhere(engineer.name, call_sid, now - LONGEST_CONVERSATION)
                or floor.on_a_callback(
                    engineer.name, now - attempt_window(self.config.engineers.ring_seconds),
                    now - LONGEST_CONVERSATION, picked_up=True) is not None)
            rows = {} if busy else {t.id: (t, c, a) for t, c, a in floor.waiting_served(
                engineer.serves, self.groups, call_sid)}
            mine = next((t.id for t, _, a in rows.values() if a is not None
                         and a.engineer_call_sid == call_sid
                         and _taken_by(a, stale) is not None), None)
            # Callers nobody holds, and those this engineer's earlier call claimed: that
            # call dropped before the bridge, or they would not be calling again.
            # Not those this call already dialled and missed: they were not in their queue,
            # and until Twilio says why, this engineer moves on to the next caller.
            free = [waiting_of(self.config, t, c) for t, c, a in rows.values()
                    if _taken_by(a, stale) in (None, engineer.name)
                    and not _missed_by(a, call_sid)]
            ticket = call = choice = None
            if mine is not None:
                ticket, call, _ = rows[mine]
                choice = waiting_of(self.config, ticket, call)
            else:
                # A caller another call of theirs claimed first (that call dropped during
                # the whisper, or is another device of theirs): they were told about that
                # caller, who would otherwise wait for the claim to go stale.
                options = ranked(engineer.serves, free)
                held = [o for o in options if _taken_by(rows[o.ticket_id][2], stale)
                        == engineer.name]
                for option in held + [o for o in options if o not in held]:
                    if floor.claim(option.ticket_id, engineer.name, call_sid, now, stale):
                        choice = option
                        ticket, call, _ = rows[choice.ticket_id]
                        floor.record(ticket.id, engineer.name, "pick-up",
                                     f"chosen on the engineer line (P{ticket.priority})", now)
                        break
            # The caller's queue is named after the number they heard: for one routed
            # during an outage, perhaps not the one their ticket was stored under.
            heard = (floor.heard_as(ticket.id) or ticket.number) if ticket is not None \
                else None
        if busy:
            log.info("engineer %s called the engineer line while on a call with a caller",
                     engineer.name)
            return self.agent.on_another_call(voice)
        if ticket is None:
            return self.agent.nobody(voice, announce=query.get("wait") != "1")
        log.info("engineer %s takes ticket id=%s (P%s)", engineer.name, ticket.id, ticket.priority)
        whisper = self.summary(voice, ticket, call, (now - choice.since).total_seconds())
        # The queue the caller was put in, named when they were routed: the desk may have
        # changed the priority since, and with it the group (``support-p{priority}``).
        return self.agent.connect(voice, whisper,
                                  queue_name(ticket.queue_group or choice.group, heard),
                                  ticket.number)

    def joining(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """<Queue url>: played to the dequeued caller as the engineer is bridged in. The
        ticket records the engineer and the moment and moves to connected."""
        call_sid = _sid(params)
        call = self._record_joining(params, call_sid, self.clock()) if call_sid else None
        return self.agent.joining(self.caller_voice(call))

    def joining_unrecorded(self, params: Mapping[str, str]) -> str:
        """<Queue url> when the connection could not be recorded (the database away, a
        failure): Twilio bridges the two whatever this answers, so the caller still hears
        that an engineer is joining, in their line's language. The ticket moves to
        connected with the queue result (spooled if need be); who picked up, and when,
        goes unrecorded."""
        own, _ = self.renderer.voices(self.config.line_for(params.get("To")))
        return self.agent.joining(own)

    def _record_joining(self, params: Mapping[str, str], call_sid: str,
                        now: dt.datetime) -> Call | None:
        """The ticket of the caller being bridged in moves to connected, with who and
        when; the caller's call (for the voice they hear)."""
        with self.storage.unit_of_work() as uow:
            session = uow.session
            call = session.get(Call, call_sid)
            # The ticket's row first, then its assignment: the order of every writer (the
            # desk's callbacks too), so two of them never deadlock.
            ticket = ticket_for_call(session, call_sid, for_update=True)
            if ticket is None:
                return call
            if call is not None:
                # As it stands once the ticket is ours: a hang-up may have been written
                # while this request waited for that lock.
                session.refresh(call)
                if left_the_queue(call.queue_result, call.ended_at is not None):
                    log.warning("ticket id=%s: its caller left the queue before the engineer "
                                "joined; not connected", ticket.id)
                    return call
            floor = FloorRepository(self.storage, session)
            assignment = floor.assignment(ticket.id, now, for_update=True)
            self._pushed(session, move_ticket(session, call_sid, "connected", now), now)
            if assignment.connected_at is None:
                assignment.connected_at = now
                assignment.updated_at = now
                dequeuer = _sid(params, "DequeingCallSid")
                if dequeuer and assignment.engineer_call_sid not in (None, dequeuer):
                    log.warning("ticket id=%s bridged to a call that did not claim it",
                                ticket.id)
                    # A call whose claim another call took over reached the caller
                    # first. If every claim was this engineer's (a second device of
                    # theirs), that call is theirs and the one that talks: on record, its
                    # end offers the next caller and the other call hears it missed them.
                    # Otherwise nothing says whose it was, and the record stays.
                    if floor.picked_up_only_by(ticket.id, assignment.engineer):
                        assignment.engineer_call_sid = dequeuer
                floor.record(ticket.id, assignment.engineer or UNKNOWN_ENGINEER,
                             "connected", "engineer line", now)
            return call

    def after(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The engineer's <Dial> ended: after a conversation, offer the next caller; if the
        chosen caller had gone, free the claim and look again at once."""
        call_sid = _sid(params)
        number = query.get("ticket") or ""
        with self.storage.unit_of_work() as uow:
            session = uow.session
            found = EngineerRepository(self.storage, session).for_caller(params.get("From"))
            engineer = engineer_info(found) if found is not None else None
            ticket = ticket_by_number(session, number)
            talked = False
            if ticket is not None and call_sid is not None:
                floor = FloorRepository(self.storage, session)
                assignment = floor.find_assignment(ticket.id)
                # Bridged: recorded as this call's, or said by Twilio (the <Queue url>
                # request may have met the database away and gone unrecorded).
                talked = (assignment is not None and assignment.connected_at is not None
                          and assignment.engineer_call_sid == call_sid) \
                    or bridged(params.get("DialCallStatus"))
                if not talked:
                    floor.release(ticket.id, call_sid, self.clock())
        voice = self.engineer_voice(engineer)
        if engineer is None:
            return self.agent.goodbye(voice)
        return self.agent.next_caller(voice) if talked else self.agent.missed(voice)

    # -- callbacks ---------------------------------------------------------------------

    def _attempt(self, session, query: Mapping[str, str], *, for_update: bool = True):
        attempt_id = ascii_number(query.get("attempt"), at_most=9)  # as the URL was written
        if attempt_id is None:
            return None, None, None, None
        floor = FloorRepository(self.storage, session)
        attempt = floor.attempt(attempt_id, for_update=for_update)
        if attempt is None:
            return None, None, None, None
        # The ticket's row is locked before the assignment's (``_finish``), the order the
        # desk's ``Callbacks.place`` takes them in: a callback placed while the customer
        # answers the last one waits for this webhook, or this webhook for it, never both.
        lock = for_update and self.storage.dialect == "postgresql"
        ticket = session.get(Ticket, attempt.ticket_id, with_for_update=lock or None,
                             populate_existing=lock)
        call = session.get(Call, ticket.call_sid)
        engineer = EngineerRepository(self.storage, session).named(attempt.engineer)
        return attempt, ticket, call, engineer_info(engineer) if engineer else None

    def callback_engineer(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The engineer answered the callback's first leg: the summary, then press 1."""
        with self.storage.unit_of_work() as uow:
            session = uow.session
            attempt, ticket, call, engineer = self._attempt(session, query)
            if attempt is None or attempt.outcome is not None:
                return self.agent.hangup()
            voice = self.engineer_voice(engineer)
            # Not once the customer is being dialled (a copy of this request replayed).
            dialling = attempt.status not in ("placing", "calling_engineer", "engineer_answered")
            if not dialling and not self._still_wanted(uow, attempt, ticket, call):
                return self.agent.callback_not_needed(voice)
            if attempt.status in ("placing", "calling_engineer"):
                # Not once the engineer has pressed 1: a copy of this request (replayed)
                # must not hand the attempt's end back to the engineer's leg.
                attempt.status = "engineer_answered"
            summary = self.summary(voice, ticket, call, None)
            attempt_id = attempt.id
        return self.agent.callback_offer(voice, summary, attempt_id)

    def callback_key(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        with self.storage.unit_of_work() as uow:
            session = uow.session
            attempt, ticket, call, engineer = self._attempt(session, query)
            if attempt is None or attempt.outcome is not None:
                return self.agent.hangup()
            voice = self.engineer_voice(engineer)
            if (params.get("Digits") or "") != "1":
                self._finish(uow, attempt, ticket, call, "engineer-declined")
                return self.agent.goodbye(voice)
            if not self._still_wanted(uow, attempt, ticket, call):
                return self.agent.callback_not_needed(voice)
            if attempt.status in ("placing", "calling_engineer", "engineer_answered"):
                # Not once the customer's phone was answered: a copy of this request
                # (replayed) must not forget that the greeting asked them for a key.
                attempt.status = "calling_customer"
            return self.agent.callback_dial(voice, attempt.id, ticket.callback_number,
                                            call.dialed_number)

    def _still_wanted(self, uow, attempt: CallbackAttempt, ticket: Ticket, call: Call) -> bool:
        """Whether the ticket still waits for this callback; if the desk moved it on while
        the engineer's phone rang (closed, back to open), the attempt ends here."""
        if ticket.status == "callback_requested" and ticket.callback_number:
            return True
        self._finish(uow, attempt, ticket, call, "error", f"ticket is {ticket.status} now")
        return False

    def callback_customer(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """<Number url>: the customer's phone was answered, by them or by a voicemail.
        Whoever answered hears who is calling and is asked to press a key to be put
        through; only that key says the customer was reached (``callback_customer_key``)."""
        with self.storage.unit_of_work() as uow:
            session = uow.session
            attempt, ticket, call, _ = self._attempt(session, query)
            if attempt is None:
                return self.agent.empty()
            attempt.customer_call_sid = _sid(params) or attempt.customer_call_sid
            if attempt.outcome is None:
                attempt.status = ASKED_FOR_A_KEY
            return self.agent.callback_greeting(self.caller_voice(call), ticket.number,
                                                attempt.id)

    def callback_customer_key(self, params: Mapping[str, str],
                              query: Mapping[str, str]) -> str:
        """After the greeting: a key pressed puts the customer through to the engineer
        and the ticket is connected; none (the Gather ended, a voicemail listening) is a
        missed callback, counted like no answer."""
        with self.storage.unit_of_work() as uow:
            session = uow.session
            attempt, ticket, call, _ = self._attempt(session, query)
            if attempt is None:
                return self.agent.hangup()
            if (params.get("Digits") or "").strip():
                self._finish(uow, attempt, ticket, call, ANSWERED)
                return self.agent.empty()  # the <Number url> ends: Twilio bridges the two
            self._finish(uow, attempt, ticket, call, UNCONFIRMED,
                         "answered, but no key was pressed after the greeting")
            return self.agent.callback_customer_missed(self.caller_voice(call), ticket.number)

    def answered_unrecorded(self, params: Mapping[str, str], query: Mapping[str, str]) -> None:
        """A key after the greeting whose request met the database away: the customer is
        put through all the same (``agent_error``), and the answer goes to the spool, or
        the legs' ends, heard with no key recorded, would make the callback "unconfirmed"
        (a miss: the customer called again, and after the last attempt told by text that
        they could not be reached)."""
        attempt_id = ascii_number(query.get("attempt"), at_most=9)
        if attempt_id is None or not (params.get("Digits") or "").strip():
            return
        try:
            self.spool.append(encode(SpooledCallbackAnswer(attempt_id, self.clock())))
        except OSError:  # a full disk: the customer is put through all the same
            log.exception("callback attempt %s answered by the customer while the database "
                          "was unreachable; the answer could not be spooled", attempt_id)
            return
        metrics.SPOOLED.labels("callback_answer").inc()
        log.warning("database unreachable: callback attempt %s answered by the customer; "
                    "the answer is spooled", attempt_id)

    def replay_answer(self, attempt_id: int, at: dt.datetime) -> bool:
        """Record a spooled answer (``answered_unrecorded``); False if the attempt already
        had it, or ended otherwise. The legs' ends may have been heard before this replay,
        with no key recorded: that "unconfirmed" is corrected, and its miss no longer
        counts (the ticket still waiting for the callback, in the same round), or, if it
        ended the round, its text not sent yet is withdrawn. The conversation, if its end
        was heard, stays ended."""
        with self.storage.unit_of_work() as uow:
            session = uow.session
            attempt, ticket, call, _ = self._attempt(session, {"attempt": str(attempt_id)})
            if attempt is None or attempt.outcome not in (None, UNCONFIRMED):
                return False
            ended = attempt.ended_at
            if attempt.outcome == UNCONFIRMED:
                assignment = FloorRepository(self.storage, session).assignment(
                    ticket.id, self.clock(), for_update=True)
                earlier_round = assignment.round_started_at is not None \
                    and attempt.created_at < assignment.round_started_at
                if ticket.status == "callback_requested" and not earlier_round \
                        and assignment.callback_failures:
                    assignment.callback_failures -= 1
                # Its miss may have ended the round: the text saying we could not reach
                # the customer is taken back if the sender has not sent it yet.
                if uow.outbox.withdraw(call.call_sid, f"sms_callback_missed.{attempt.id}"):
                    log.info("callback attempt %s: the text saying the customer could not "
                             "be reached is withdrawn", attempt_id)
                attempt.outcome = None
            self._finish(uow, attempt, ticket, call, ANSWERED)
            attempt.ended_at = ended
            log.info("callback attempt %s: the customer's answer, pressed at %s while the "
                     "database was away, is recorded", attempt_id, at.isoformat())
            return True

    def callback_dialled(self, params: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The engineer leg's <Dial> ended: record a failure, tell the engineer."""
        status = (params.get("DialCallStatus") or "")[:32]
        with self.storage.unit_of_work() as uow:
            session = uow.session
            attempt, ticket, call, engineer = self._attempt(session, query)
            if attempt is None:
                return self.agent.hangup()
            outcome = customer_leg_ended(status, attempt.status == ASKED_FOR_A_KEY) or "failed"
            self._finish(uow, attempt, ticket, call, outcome)
            if attempt.outcome == ANSWERED:
                self._conversation_ended(attempt)
                return self.agent.hangup()
            return self.agent.callback_not_reached(self.engineer_voice(engineer))

    def callback_status(self, params: Mapping[str, str], query: Mapping[str, str]) -> None:
        """Status callbacks of both legs (leg=engineer from the REST call, leg=customer
        from the <Number>)."""
        status = (params.get("CallStatus") or "")[:32]
        with self.storage.unit_of_work() as uow:
            self._leg_status(uow, query, query.get("leg"), status, _sid(params), self.clock())

    def _leg_status(self, uow, query: Mapping[str, str], leg: str | None, status: str,
                    call_sid: str | None, now: dt.datetime) -> bool:
        """A leg's status, reported at ``now``; whether it changed the attempt."""
        attempt, ticket, call, _ = self._attempt(uow.session, query)
        if attempt is None:
            return False
        before = (attempt.outcome, attempt.ended_at)
        if leg == "customer":
            attempt.customer_call_sid = call_sid or attempt.customer_call_sid
            # "answered" alone is not the customer: a voicemail answers too. The key
            # after the greeting says who it was; the leg's end, with none pressed,
            # that nobody was reached.
            outcome = customer_leg_ended(status, attempt.status == ASKED_FOR_A_KEY)
            if status not in ("answered", "in-progress") and outcome is not None:
                self._finish(uow, attempt, ticket, call, outcome, now=now)
                self._conversation_ended(attempt, now)
        elif leg == "engineer" and status in LEG_ENDED:
            if attempt.status in ("placing", "calling_engineer", "engineer_answered"):
                self._finish(uow, attempt, ticket, call, engineer_outcome(status), now=now)
            self._conversation_ended(attempt, now)
        return (attempt.outcome, attempt.ended_at) != before

    def status_unrecorded(self, params: Mapping[str, str], query: Mapping[str, str]) -> None:
        """The end of a callback's leg reported while the database was away: to the spool,
        or an answered callback whose call has ended would keep its engineer "on a
        callback" for hours once its answer is replayed, and a leg that failed would
        count as no attempt."""
        attempt_id = ascii_number(query.get("attempt"), at_most=9)
        leg, status = query.get("leg"), (params.get("CallStatus") or "")[:32]
        if attempt_id is None or leg not in ("engineer", "customer") \
                or status not in LEG_ENDED:
            return
        try:
            self.spool.append(encode(SpooledCallbackStatus(attempt_id, leg, status,
                                                           self.clock(), _sid(params))))
        except OSError:  # a full disk: the desk or the engineer can say the call ended
            log.exception("callback attempt %s: the end of its %s leg, reported while the "
                          "database was unreachable, could not be spooled", attempt_id, leg)
            return
        metrics.SPOOLED.labels("callback_status").inc()
        log.warning("database unreachable: the end of callback attempt %s's %s leg is "
                    "spooled", attempt_id, leg)

    def replay_leg_status(self, record: SpooledCallbackStatus) -> bool:
        """Record a spooled leg's end (``status_unrecorded``) at the time it was reported;
        False if it changes nothing (the attempt had its outcome and end already)."""
        with self.storage.unit_of_work() as uow:
            return self._leg_status(uow, {"attempt": str(record.attempt)}, record.leg,
                                    record.status, record.call_sid, record.at)

    def _conversation_ended(self, attempt: CallbackAttempt,
                            now: dt.datetime | None = None) -> None:
        """Either leg of an answered callback has ended, and with it the conversation: the
        engineer is free for the engineer line and the next callback."""
        if attempt.outcome == ANSWERED and attempt.ended_at is None:
            attempt.ended_at = now or self.clock()

    def _finish(self, uow, attempt: CallbackAttempt, ticket: Ticket, call: Call,
                outcome: str, detail: str | None = None, now: dt.datetime | None = None) -> None:
        """Record how an attempt ended (once), at ``now`` (when it was reported). Answered:
        the ticket is connected. After the configured number of failures on the customer's
        side the ticket goes back to the open pile with a note, and the customer gets a
        text saying we tried."""
        if attempt.outcome is not None:
            return
        now = now or self.clock()
        session = uow.session
        floor = FloorRepository(self.storage, session)
        assignment = floor.assignment(ticket.id, now, for_update=True)
        # An answered attempt ends with its call (``_conversation_ended``): until then its
        # engineer is talking to the customer.
        attempt.outcome, attempt.status = outcome, "done"
        # An end said while the customer's phone rang (``FloorRepository.callbacks_ended``)
        # was said before this answer: the conversation begins now. (A replayed answer,
        # ``replay_answer``, keeps an end heard or said after it.)
        attempt.ended_at = None if outcome == ANSWERED else now
        attempt.detail = detail
        floor.record(ticket.id, attempt.engineer, "callback-result", outcome, now)
        log.info("callback attempt %s for ticket id=%s: %s", attempt.id, ticket.id, outcome)
        if outcome == ANSWERED:
            if self._pushed(session, move_ticket(session, ticket.call_sid, "connected", now),
                            now):
                assignment.engineer, assignment.connected_at = attempt.engineer, now
                assignment.updated_at = now
            return
        earlier_round = assignment.round_started_at is not None \
            and attempt.created_at < assignment.round_started_at
        if outcome not in CUSTOMER_FAILURES or ticket.status != "callback_requested" \
                or earlier_round:
            return  # a miss of a round the desk ended counts in none
        assignment.callback_failures += 1
        assignment.updated_at = now
        if assignment.callback_failures < self.config.engineers.callback_attempts:
            return
        move_ticket(session, ticket.call_sid, "open", now)
        assignment.note = (f"{assignment.callback_failures} callback attempts did not reach "
                           f"the customer; back in the open pile")
        # The round is over. Asked back for a callback later, the ticket starts a new
        # round with every attempt to come; the note and the history keep this one.
        assignment.callback_failures = 0
        floor.record(ticket.id, SYSTEM_ACTOR, "reopened", assignment.note, now)
        number = ticket.callback_number
        if number and can_receive_sms(number):
            catalogue = self.catalogues[self.caller_voice(call).catalogue_name]
            # One text per round that failed: the outbox queues a call's message once per
            # template, so the attempt that ended the round names it.
            uow.outbox.queue(
                call_sid=call.call_sid, template=f"sms_callback_missed.{attempt.id}",
                to_number=number,
                body=catalogue.text("sms_callback_missed", {"brand": self.config.service.brand,
                                                            "ticket": ticket.number}),
                now=now)

    def _pushed(self, session, moved, now):
        """A ticket the engineers' side just connected is pushed to the help desk too."""
        if moved is not None and self.config.helpdesk:  # help desk push (issue 9)
            helpdesk_jobs.queue_status(session, moved, now)
        return moved

    # -- the sweep ---------------------------------------------------------------------

    def sweep_stranded(self) -> int:
        """Tickets left in_queue after their calls ended with no queue result from Twilio
        (its request to the Enqueue action failed or was lost) go back to the open pile."""
        now = self.clock()
        grace = dt.timedelta(seconds=self.config.engineers.stranded_after_seconds)
        moved = 0
        with self.storage.unit_of_work() as uow:
            session = uow.session
            floor = FloorRepository(self.storage, session)
            for ticket in floor.stranded(now - grace):
                if move_ticket(session, ticket.call_sid, "open", now,
                               when=reopened_when_stranded) is not None:
                    floor.record(ticket.id, SYSTEM_ACTOR, "reopened",
                                 "the call ended while queued and Twilio sent no queue result",
                                 now)
                    moved += 1
        if moved:
            log.warning("%s tickets left in a queue after their calls ended went back to open",
                        moved)
        return moved
