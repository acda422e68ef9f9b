"""A call's end, whichever order the requests around it arrive in: a hang-up reported
before the call is stored (its first webhook still in its transaction, or a call answered
during an outage not yet replayed) is kept, and a step's request that arrives after the
end changes nothing."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select

from ivr import metrics
from ivr.storage.calls import CallRepository
from ivr.storage.models import Call, Ticket
from ivr.storage.tickets import TicketRepository

from ..support import BUSINESS_OWNER, ROOT, pause, second_waits_for_first, twiml
from .test_storage import step

# A ticket logged during an outage, as the spool keeps it (the format's sample).
SPOOLED = json.loads((ROOT / "tests/data/spool/format-2.jsonl").read_text().splitlines()[0])


def hang_up(twilio, sid, duration="4", sequence="2", **call):
    return {**twilio.call_params(sid, **call), "CallStatus": "completed",
            "CallDuration": duration, "SequenceNumber": sequence}


def stored(ivr, sid) -> Call:
    with ivr.storage.transaction() as session:
        return session.get(Call, sid)


def status_meanwhile(ivr, holder: threading.Thread, reached: threading.Event,
                     release: threading.Event, params) -> None:
    """The status callback sent while ``holder`` is paused inside its transaction."""
    second_waits_for_first(ivr, holder, reached, release,
                           threading.Thread(target=ivr.service.status, args=(params,)),
                           "the status callback")


def test_a_hang_up_reported_before_the_outage_replay_is_kept_and_the_ticket_joins_it(
        twilio, ivr):
    """Answered and routed while the database was down; the database is back and Twilio
    reports the end before the sender has replayed the spool."""
    sid = SPOOLED["call_sid"]
    abandoned = metrics.CALLS.labels("Japan", "abandoned")
    before = abandoned._value.get()
    ivr.service.status(hang_up(twilio, sid, "90", "5", to=SPOOLED["dialed_number"],
                               caller=SPOOLED["caller_number"]))
    call = stored(ivr, sid)
    assert (call.twilio_status, call.duration_seconds, call.region) == ("completed", 90, "Japan")
    assert (call.outcome, call.steps_reached) == ("abandoned", "")
    assert abandoned._value.get() == before  # nobody knows yet what this caller heard
    assert ivr.service.replay(SPOOLED)
    call = stored(ivr, sid)
    assert (call.outcome, call.twilio_status) == ("routed", "completed")
    # The call as the caller had it, not as the status callback alone could tell.
    assert (call.language, call.english, call.can_text) == ("en-US", True, True)


def test_a_hang_up_during_the_first_webhook_still_ends_the_call(twilio, ivr, call_sid,
                                                                 monkeypatch):
    """The caller hangs up while the first webhook's transaction, which stores the call,
    is still open: the status waits for it, then applies."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    inserted, release = pause(monkeypatch, CallRepository, "start", thread="first-voice")
    first = threading.Thread(name="first-voice", target=ivr.service.incoming,
                             args=(twilio.call_params(call_sid),))
    status_meanwhile(ivr, first, inserted, release, hang_up(twilio, call_sid))
    call = stored(ivr, call_sid)
    assert (call.twilio_status, call.duration_seconds, call.outcome) == \
        ("completed", 4, "abandoned")
    assert call.ended_at is not None


def test_a_hang_up_while_the_replay_restores_the_call_still_ends_it(twilio, ivr,
                                                                     monkeypatch):
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    sid = SPOOLED["call_sid"]
    restored, release = pause(monkeypatch, TicketRepository, "restore")
    replay = threading.Thread(target=ivr.service.replay, args=(SPOOLED,))
    status_meanwhile(ivr, replay, restored, release, hang_up(
        twilio, sid, "90", "5", to=SPOOLED["dialed_number"], caller=SPOOLED["caller_number"]))
    call = stored(ivr, sid)
    assert (call.outcome, call.twilio_status, call.duration_seconds) == \
        ("routed", "completed", 90)


def test_a_pmi_that_arrives_after_the_hang_up_is_not_kept(twilio, ivr, call_sid):
    """Twilio's request for the PMI step comes after the status callback that ended the
    call: the PMI is not stored in the ended call's record, and the reply hangs up."""
    step(twilio, call_sid, "/voice")
    step(twilio, call_sid, "/voice/menu", "2")
    step(twilio, call_sid, "/voice/status", CallStatus="completed", CallDuration="20",
         SequenceNumber="3")
    answer = twiml(step(twilio, call_sid, "/voice/pmi", BUSINESS_OWNER[0]))
    assert [verb.tag for verb in answer] == ["Hangup"]
    call = stored(ivr, call_sid)
    assert (call.pending_pmi, call.step, call.outcome, call.abandoned_at_step) == \
        (None, "pmi", "abandoned", "pmi")


def test_a_priority_chosen_after_the_hang_up_opens_no_ticket_and_enqueues_no_one(
        twilio, ivr, call_sid):
    step(twilio, call_sid, "/voice")
    step(twilio, call_sid, "/voice/menu", "2")
    step(twilio, call_sid, "/voice/pmi", BUSINESS_OWNER[0])
    step(twilio, call_sid, "/voice/host-key", BUSINESS_OWNER[1])
    step(twilio, call_sid, "/voice/status", CallStatus="completed", CallDuration="20",
         SequenceNumber="3")
    answer = twiml(step(twilio, call_sid, "/voice/priority", "2"))
    assert [verb.tag for verb in answer] == ["Hangup"]
    with ivr.storage.transaction() as session:
        tickets = session.scalars(select(Ticket).where(Ticket.call_sid == call_sid)).all()
    assert (stored(ivr, call_sid).outcome, tickets) == ("abandoned", [])
