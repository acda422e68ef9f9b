"""The engineer line: the most urgent caller first, a whisper naming them, then the
connection to exactly that caller."""

import threading
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from ivr.desk.service import Conflict, Desk
from ivr.sim.simulator import new_call_sid
from ivr.storage.engineers import Assignment, DeskAction, FloorRepository
from ivr.storage.models import Ticket

from ..floor_support import (add_engineer, digits_spoken, engineer_params, queued,
                             talking_on_the_line, while_the_desk_closes)
from ..support import (BUSINESS_OWNER, CALLER, Outcomes, pause, second_waits_for_first, spoken,
                       twiml)


def ticket(ivr, number):
    with ivr.storage.transaction() as session:
        return session.scalars(select(Ticket).where(Ticket.number == number)).one()


def assignment(ivr, number):
    ticket_id = ticket(ivr, number).id
    with ivr.storage.transaction() as session:
        return session.get(Assignment, ticket_id)


def test_the_engineer_gets_the_newer_p1_before_the_older_p3_and_the_whisper_names_it(
        twilio, ivr, clock):
    add_engineer(ivr)
    older_p3 = queued(twilio, 3)
    clock.advance(minutes=5)
    newer_p1 = queued(twilio, 1)
    clock.advance(minutes=2)

    agent_sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    assert [e.tag for e in root] == ["Say", "Say", "Say", "Dial"]
    assert digits_spoken(root) == [newer_p1["ticket"]]
    said = spoken(root)
    assert said[0] == (f"Ticket {newer_p1['ticket']}. Priority 1. business plan, account "
                       "demo-business, United States. The caller speaks English.")
    assert said[1] == "They have waited 2 minutes."
    assert {e.get("language") for e in root.iter("Say")} == {"en-US"}
    queue = root.find("Dial/Queue")
    # The queue dialled holds only the P1 caller: the whisper is about who answers.
    assert queue.text == newer_p1["queue"] != older_p3["queue"]
    assert queue.get("url") == f"/voice/agent/joining?ticket={newer_p1['ticket']}"
    assert root.find("Dial").get("action") == f"/voice/agent/after?ticket={newer_p1['ticket']}"

    # Twilio dequeues the P1 caller: they hear that an engineer is joining, in their language.
    caller = {**twilio.call_params(newer_p1["sid"]), "QueueSid": "QU" + "1" * 32,
              "QueueTime": "120", "DequeingCallSid": agent_sid}
    joining = twiml(twilio.post(queue.get("url"), **caller))
    assert spoken(joining) == ["An engineer is joining your call now."]
    p1 = ticket(ivr, newer_p1["ticket"])
    assert p1.status == "connected" and p1.connected_at == clock.now
    assert assignment(ivr, newer_p1["ticket"]).engineer == "aiko"
    assert ticket(ivr, older_p3["ticket"]).status == "in_queue"

    # After the conversation the engineer may take the next caller: the P3.
    after = twiml(twilio.post(root.find("Dial").get("action"),
                              **engineer_params(agent_sid), DialCallStatus="completed"))
    gather = after.find("Gather")
    assert gather.get("action") == "/voice/agent" and gather.get("numDigits") == "1"
    again = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid), Digits="1"))
    assert digits_spoken(again) == [older_p3["ticket"]]
    assert again.find("Dial/Queue").text == older_p3["queue"]


def test_the_desk_cannot_put_a_ticket_back_in_the_queue_so_no_engineer_is_whispered_a_gone_caller(
        twilio, ivr, app):
    """Only a call puts its caller in a queue. A ticket the desk moved to the open pile
    has had its caller let go (told why, then hung up): moved back to in_queue, it would
    stand among the waiting callers until Twilio's report of the hang-up arrived (or, that
    report lost, until the stranded sweep), and the engineer line would whisper it to an
    engineer and dial a queue with no one in it."""
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    desk = Desk.of(ivr)
    desk.update(waiting["ticket"], status="open", actor="aiko")
    let_go = twiml(twilio.post(waiting["wait"], **twilio.call_params(waiting["sid"])))
    assert [e.tag for e in let_go][-1] == "Hangup"
    with pytest.raises(Conflict, match="cannot go from open to in_queue"):
        desk.update(waiting["ticket"], status="in_queue", actor="aiko")
    assert ticket(ivr, waiting["ticket"]).status == "open"
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert digits_spoken(root) == [] and root.find("Dial/Queue") is None


def test_the_desk_cannot_mark_a_caller_still_holding_in_the_queue_connected(twilio, ivr, clock):
    """Only the engineer line takes a caller from the queue. Marked connected by the desk
    while they still held (an engineer's "I'm on it" before calling the line), the caller
    was no longer offered to any engineer and no longer let go either: on hold until they
    gave up, the ticket saying connected. The desk refuses, and the engineer line still
    hands the caller to the next engineer; once the caller has hung up, the desk may."""
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    desk = Desk.of(ivr)
    with pytest.raises(Conflict, match="still waiting in the queue"):
        desk.update(waiting["ticket"], status="connected", actor="aiko")
    assert ticket(ivr, waiting["ticket"]).status == "in_queue"
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert digits_spoken(root) == [waiting["ticket"]]
    assert root.find("Dial/Queue").text == waiting["queue"]

    other = queued(twilio, 2)
    # Its call ended with no word from the queue (the report lost): the desk may say so.
    twiml(twilio.post("/voice/status", **{**twilio.call_params(other["sid"]),
                                          "CallStatus": "completed", "CallDuration": "60"}))
    view, changed = desk.update(other["ticket"], status="connected", actor="aiko")
    assert changed and view["status"] == "connected"


def test_a_caller_being_put_through_while_the_database_is_away_hears_the_engineer_is_joining(
        twilio, ivr, dead):
    """Twilio bridges the two whatever the <Queue url> answers: the caller hears the usual
    words (a <Queue url> document may not hang up), and the queue result records the
    connection later."""
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    agent_sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    joining = twiml(dead.post(root.find("Dial/Queue").get("url"),
                              **twilio.call_params(waiting["sid"]), DequeingCallSid=agent_sid))
    assert [e.tag for e in joining] == ["Say"]
    assert spoken(joining) == ["An engineer is joining your call now."]


def test_engineers_holding_for_callers_stay_on_the_line_through_a_database_blip(
        twilio, ivr, dead):
    """The line looks for callers every poll_seconds; one look, or the end of a call,
    meeting an unreachable database holds the engineer and looks again instead of saying
    goodbye and hanging up."""
    add_engineer(ivr)
    sid = new_call_sid()
    first = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    again = first.find("Redirect").text
    for path in (again, "/voice/agent/after?ticket=12345678"):
        held = twiml(dead.post(path, **engineer_params(sid)))
        assert held.find("Hangup") is None, path
        assert [e.tag for e in held] == ["Pause", "Redirect"], path
        assert held.find("Redirect").text == again
    caller = queued(twilio, 1)
    found = twiml(twilio.post(again, **engineer_params(sid)))
    assert found.find("Dial/Queue").text == caller["queue"]


def test_any_failure_while_a_caller_is_put_through_still_says_an_engineer_is_joining(
        twilio, ivr, monkeypatch):
    from ivr.voice.floor import Floor

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    add_engineer(ivr)
    waiting = queued(twilio, 1)
    agent_sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    monkeypatch.setattr(Floor, "_record_joining", broken)
    joining = twiml(twilio.post(root.find("Dial/Queue").get("url"),
                                **twilio.call_params(waiting["sid"]), DequeingCallSid=agent_sid))
    assert [e.tag for e in joining] == ["Say"]
    assert spoken(joining) == ["An engineer is joining your call now."]


def test_the_pick_up_is_recorded_with_who_and_when(twilio, ivr, clock):
    add_engineer(ivr)
    waiting = queued(twilio, 2)
    agent_sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    twilio.post(root.find("Dial/Queue").get("url"),
                **twilio.call_params(waiting["sid"]), DequeingCallSid=agent_sid)
    with ivr.storage.transaction() as session:
        actions = [(a.actor, a.action, a.at) for a in session.scalars(
            select(DeskAction).order_by(DeskAction.id))]
    assert actions == [("aiko", "pick-up", clock.now), ("aiko", "connected", clock.now)]


def test_two_engineers_never_get_the_same_caller(twilio, ivr):
    add_engineer(ivr, "aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    first = queued(twilio, 2)
    second = queued(twilio, 2)
    one = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    two = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550188")))
    assert digits_spoken(one) == [first["ticket"]] and digits_spoken(two) == [second["ticket"]]
    # A third engineer finds nobody free: both callers are claimed.
    add_engineer(ivr, "chen", phone="+14155550177")
    three = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550177")))
    assert three.find("Dial") is None and three.find("Redirect") is not None


def test_a_claim_that_never_connects_is_freed_for_the_next_engineer(twilio, ivr, clock):
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    agent_sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    # The caller hung up during the whisper: the queue was empty and the Dial timed out.
    missed = twiml(twilio.post(root.find("Dial").get("action"), **engineer_params(agent_sid),
                               DialCallStatus="no-answer"))
    assert spoken(missed) == ["That caller is no longer waiting. Looking for the next one."]
    assert missed[-1].tag == "Redirect" and missed[-1].text == "/voice/agent?missed=1"
    assert assignment(ivr, waiting["ticket"]).claimed_at is None


def test_a_stale_claim_lets_another_engineer_take_the_caller(twilio, ivr, clock):
    add_engineer(ivr, "aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    waiting = queued(twilio, 1)
    twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    clock.advance(seconds=ivr.config.engineers.claim_seconds + 1)
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550188")))
    assert digits_spoken(root) == [waiting["ticket"]]


def test_a_close_the_desk_commits_while_the_engineer_is_bridged_in_is_not_undone(twilio, ivr):
    """Twilio bridges the caller to the engineer while the desk closes their ticket: the
    bridge waits for the ticket's row and, once the close commits, leaves it closed."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the desk's close and the bridge one after "
                    "the other")
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    agent_sid = new_call_sid()
    twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    caller = {**twilio.call_params(waiting["sid"]), "DequeingCallSid": agent_sid}
    bridged = []
    bridge = threading.Thread(target=lambda: bridged.append(ivr.floor.joining(caller, {})))
    while_the_desk_closes(ivr, waiting["ticket"], bridge, "the bridge")
    assert len(bridged) == 1  # the caller heard the engineer joining
    assert ticket(ivr, waiting["ticket"]).status == "closed"


def test_a_pick_up_of_a_stale_claim_while_its_caller_is_bridged_in_waits_not_deadlocks(
        twilio, ivr, clock, monkeypatch):
    """aiko's claim has gone stale when Twilio bridges her caller in, just as ben's line
    looks for a caller. Both take the ticket's row before its assignment's, so ben's
    pick-up waits for the bridge rather than deadlocking with it (PostgreSQL would abort
    one), then finds the caller connected to aiko."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the bridge and the pick-up one after the other")
    add_engineer(ivr, "aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    waiting = queued(twilio, 1)
    aiko_sid = new_call_sid()
    twiml(twilio.post("/voice/agent", **engineer_params(aiko_sid)))
    clock.advance(seconds=ivr.config.engineers.claim_seconds + 1)

    # The bridge holds the ticket's row, not yet the rest.
    bridging, release = pause(monkeypatch, FloorRepository, "assignment", before=True)
    outcomes = Outcomes()
    caller = {**twilio.call_params(waiting["sid"]), "DequeingCallSid": aiko_sid}
    bridge = outcomes.thread("bridge", ivr.floor.joining, caller, {})
    pick_up = outcomes.thread("pick-up", ivr.floor.agent_call,
                              engineer_params(new_call_sid(), "+14155550188"), {})
    second_waits_for_first(ivr, bridge, bridging, release, pick_up, "ben's pick-up")
    assert not outcomes.errors, outcomes.errors
    assert "<Dial" not in outcomes.results["pick-up"]  # nobody else waiting for ben
    assert ticket(ivr, waiting["ticket"]).status == "connected"
    taken = assignment(ivr, waiting["ticket"])
    assert (taken.engineer, taken.engineer_call_sid) == ("aiko", aiko_sid)


def test_nobody_waiting_the_engineer_hears_so_and_holds_for_the_next_caller(twilio, ivr):
    add_engineer(ivr)
    sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    assert [e.tag for e in root] == ["Say", "Pause", "Redirect"]
    assert spoken(root)[0].startswith("Nobody is waiting right now.")
    assert root.find("Redirect").text == "/voice/agent?wait=1"
    holding = twiml(twilio.post("/voice/agent?wait=1", **engineer_params(sid)))
    assert [e.tag for e in holding] == ["Pause", "Redirect"]  # no repeated announcement
    waiting = queued(twilio, 4)
    found = twiml(twilio.post("/voice/agent?wait=1", **engineer_params(sid)))
    assert digits_spoken(found) == [waiting["ticket"]]


def test_an_unknown_number_is_politely_refused(twilio, ivr):
    queued(twilio, 1)
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550111")))
    assert [e.tag for e in root] == ["Say", "Hangup"]
    assert spoken(root)[0].startswith("This phone isn't registered for the engineer line.")


def test_a_client_app_is_recognised_by_its_identity(twilio, ivr):
    add_engineer(ivr, phone=None, client="aiko-laptop")
    waiting = queued(twilio, 3)
    root = twiml(twilio.post("/voice/agent",
                             **engineer_params(new_call_sid(), "client:aiko-laptop")))
    assert digits_spoken(root) == [waiting["ticket"]]


def test_an_engineer_takes_only_the_languages_and_queues_they_serve(twilio, ivr):
    add_engineer(ivr, "hana", phone="+81312345678", languages="ja", queues="support-jp")
    english = queued(twilio, 1)
    japanese = queued(twilio, 4, to="+81531320070", caller="+819012345678")
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+81312345678")))
    assert digits_spoken(root) == [japanese["ticket"]]
    assert {e.get("language") for e in root.iter("Say")} == {"ja-JP"}
    assert "お客様の言語は日本語です" in spoken(root)[0]
    assert ticket(ivr, english["ticket"]).status == "in_queue"


def test_a_caller_who_switched_to_english_counts_as_english(twilio, ivr):
    add_engineer(ivr, "hana", phone="+81312345678", languages="ja")
    add_engineer(ivr, "ben", phone="+14155550188", languages="en")
    switched = queued(twilio, 1, to="+81531320070", caller="+819012345678", english=True)
    hana = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+81312345678")))
    assert hana.find("Dial") is None
    ben = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550188")))
    assert digits_spoken(ben) == [switched["ticket"]]


def test_the_engineer_line_refuses_an_unsigned_request(twilio, ivr):
    add_engineer(ivr)
    response = twilio.post("/voice/agent", signed=False, **engineer_params(new_call_sid()))
    assert response.status_code == 403


def test_a_caller_waiting_hears_their_place_in_the_engineers_order(twilio, ivr, clock):
    first_p4 = queued(twilio, 4)
    clock.advance(minutes=1)
    later_p1 = queued(twilio, 1)
    for waiting, place in ((later_p1, 1), (first_p4, 2)):
        params = {**twilio.call_params(waiting["sid"]), "QueuePosition": "1",
                  "AvgQueueTime": "0"}
        root = twiml(twilio.post(f"/voice/wait?ticket={waiting['ticket']}&priority=1",
                                 **params))
        assert spoken(root)[0] == f"You're number {place} in line."


def test_the_expected_wait_comes_from_recent_pick_ups_not_the_one_caller_queue(
        twilio, ivr, clock):
    add_engineer(ivr)
    waiting = queued(twilio, 2)
    params = {**twilio.call_params(waiting["sid"]), "QueuePosition": "1", "AvgQueueTime": "600"}
    path = f"/voice/wait?ticket={waiting['ticket']}&priority=2"
    # Twilio's figure for a queue of one is this caller's own wait: not an expectation.
    said = spoken(twiml(twilio.post(path, **params)))
    assert said[0] == "You're number 1 in line."
    assert not any("minute" in line for line in said)
    for _ in range(3):  # three callers taken from the same group in the last half hour
        taken = queued(twilio, 1)
        sid = new_call_sid()
        root = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
        twilio.post(root.find("Dial/Queue").get("url"), **twilio.call_params(taken["sid"]),
                    DequeingCallSid=sid)
        clock.advance(minutes=1)
        twilio.post(f"/voice/queue-result?ticket={taken['ticket']}&priority=1",
                    **twilio.call_params(taken["sid"]), QueueResult="bridged", QueueTime="5")
    said = spoken(twiml(twilio.post(path, **params)))
    assert said[:2] == ["You're number 1 in line.", "The expected wait is about 10 minutes."]


def test_every_waiting_callers_place_and_estimate_match_the_engineers_order(ivr, clock):
    """The wait URL counts in the database; a crowd of callers over every line, priority
    and state gets the same place and estimate as the engineer line's rule applied to
    everyone waiting (``domain.engineers.position``)."""
    import datetime as dt
    import random

    from ivr.domain.engineers import position
    from ivr.storage.engineers import FloorRepository
    from ivr.storage.models import Call
    from ivr.voice.floor import ESTIMATE_WINDOW, group_for, waiting_of

    rng = random.Random(8)
    now = clock.now
    numbers = [line.number for line in ivr.config.lines] + ["+15005550006"]  # and no line
    sids = []
    with ivr.storage.transaction() as session:
        for n in range(120):
            sid = new_call_sid()
            sids.append(sid)
            created = now - dt.timedelta(minutes=rng.choice([5, 10, 10, 20, 40]))  # ties too
            session.add(Call(
                call_sid=sid, dialed_number=rng.choice(numbers), region="r", language="en-US",
                caller_number="+14155550100", can_text=True, step="done", english=False,
                attempts=0, auth_failures=0, steps_reached="", outcome="routed",
                started_at=created, updated_at=created,
                ended_at=now if rng.random() < 0.1 else None,
                queue_result="hangup" if rng.random() < 0.1 else None))
            session.flush()
            ticket = Ticket(
                number=str(20_000_000 + n), call_sid=sid, account_id="a", user_email="e",
                priority=rng.choice([1, 2, 3, 4]), target_response_minutes=60, region="r",
                status=rng.choice(["in_queue"] * 6 + ["open", "connected"]),
                created_at=created,
                acknowledged_at=created + dt.timedelta(minutes=1) if rng.random() < 0.3
                else None)
            session.add(ticket)
            session.flush()
            if rng.random() < 0.3:
                session.add(Assignment(ticket_id=ticket.id, callback_attempts=0,
                                       callback_failures=0, updated_at=now,
                                       connected_at=now - dt.timedelta(
                                           minutes=rng.choice([1, 10, 29, 31, 90]))))
    floor = ivr.floor
    since = now - ESTIMATE_WINDOW
    with ivr.storage.transaction() as session:
        repository = FloorRepository(ivr.storage, session)
        rows = repository.waiting()
        recent = repository.connected_since(since)
    everyone = {call.call_sid: waiting_of(ivr.config, t, call) for t, call, _ in rows}
    checked = 0
    for sid in sids:
        me = everyone.get(sid)
        if me is None:
            assert floor.position(sid) is None
            continue
        place = position(me, everyone.values())
        taken = sum(1 for t, c in recent if group_for(ivr.config, c, t.priority) == me.group)
        expected = (place, None if taken < 2 else
                    int(place * ESTIMATE_WINDOW.total_seconds() / taken))
        assert floor.position(sid) == expected, sid
        checked += 1
    assert checked > 60 and len({place for place, _ in map(floor.position, everyone)}) > 5


def test_the_statements_that_place_a_caller_in_line_are_built_once_per_configuration(
        twilio, ivr):
    """Every hold-music poll of every waiting caller asks for their place; building its two
    statements anew for the nine lines' groups took milliseconds each time."""
    from ivr.storage.engineers import _line_queries

    waiting = queued(twilio, 1)
    ivr.floor.position(waiting["sid"])
    before = _line_queries.cache_info()
    for _ in range(3):
        ivr.floor.position(waiting["sid"])
    after = _line_queries.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)


def test_a_caller_who_hung_up_before_the_engineer_joined_is_not_marked_connected(twilio, ivr):
    """The hang-up's queue result and status arrived first; the late "engineer joining"
    request must not connect a conversation that never happened."""
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    agent_sid = new_call_sid()
    twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    params = twilio.call_params(waiting["sid"])
    twiml(twilio.post(f"/voice/queue-result?ticket={waiting['ticket']}&priority=1", **params,
                      QueueResult="hangup", QueueTime="30"))
    twilio.post("/voice/status", **{**params, "CallStatus": "completed", "CallDuration": "40"})
    assert ticket(ivr, waiting["ticket"]).status == "open"
    ivr.floor.joining({**params, "DequeingCallSid": agent_sid}, {})
    assert ticket(ivr, waiting["ticket"]).status == "open"
    assert assignment(ivr, waiting["ticket"]).connected_at is None


def test_a_repeated_engineer_line_request_gets_the_same_caller_and_hides_no_other(
        twilio, ivr, settings, clock):
    """Twilio retries a request, or delivers it twice at once: each copy from the same
    engineer call names the same caller, and the next caller stays free for the others."""
    from concurrent.futures import ThreadPoolExecutor

    from ivr import create_app

    from ..support import TwilioClient

    add_engineer(ivr, "aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    first, second = queued(twilio, 1), queued(twilio, 2)
    other = create_app(settings, clock=clock)
    clients = [twilio, TwilioClient(other)]
    aiko = engineer_params(new_call_sid())
    barrier = threading.Barrier(2)

    def copy(i):
        barrier.wait()
        return twiml(clients[i].post("/voice/agent", **aiko))

    with ThreadPoolExecutor(2) as pool:
        copies = list(pool.map(copy, range(2)))
    retried = twiml(twilio.post("/voice/agent", **aiko))
    assert [digits_spoken(root) for root in copies + [retried]] == [[first["ticket"]]] * 3
    ben = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550188")))
    other.extensions["ivr"].storage.dispose()
    assert digits_spoken(ben) == [second["ticket"]]


def test_a_priority_changed_on_the_desk_while_the_caller_waits_still_dials_the_callers_queue(
        tmp_path, settings, clock):
    """With `{priority}` in the queue name, the caller waits in the queue of the priority
    they chose; the desk (or Zendesk) raising it must not send engineers to another."""
    from ivr.desk.service import Desk

    from ..support import TwilioClient
    from .test_routes import app_with

    app = app_with(tmp_path, settings, clock, 'queue = "support-us"',
                   'queue = "support-us-p{priority}"')
    ivr = app.extensions["ivr"]
    twilio = TwilioClient(app)
    add_engineer(ivr)
    waiting = queued(twilio, 3)
    assert waiting["queue"] == f"support-us-p3.{waiting['ticket']}"
    with app.app_context():
        Desk.of(ivr).set_priority(waiting["ticket"], 1)
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert root.find("Dial/Queue").text == waiting["queue"]


def test_an_engineer_calling_back_after_a_dropped_call_gets_the_caller_their_old_call_claimed(
        twilio, ivr, clock):
    """aiko's call drops during the whisper (no Dial action ever comes); she calls the
    engineer line again at once. Her own dead call's claim must not hide the caller from
    her: she is the one engineer, and the caller is waiting."""
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    first = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert digits_spoken(first) == [waiting["ticket"]]
    clock.advance(seconds=5)
    again = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert again.find("Dial/Queue") is not None, spoken(again)
    assert again.find("Dial/Queue").text == waiting["queue"]


@pytest.mark.parametrize("status", ["failed", "no-answer"])
def test_a_missed_caller_is_not_handed_back_to_the_same_engineer_call_in_a_loop(
        twilio, ivr, clock, status):
    """The chosen caller is not in their queue (Twilio never reported their hang-up, or
    the queue is gone): the Dial ends without a bridge and the engineer hears "no longer
    waiting, looking for the next one". The next look reaches the next caller instead of
    whispering the same missing one again, for ever; another engineer may still try them."""
    add_engineer(ivr)
    add_engineer(ivr, "ben", phone="+14155550188")
    ghost = queued(twilio, 1)
    clock.advance(minutes=1)
    real = queued(twilio, 2)
    sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    assert digits_spoken(root) == [ghost["ticket"]]
    missed = twiml(twilio.post(root.find("Dial").get("action"), **engineer_params(sid),
                               DialCallStatus=status))
    assert missed.find("Redirect").text == "/voice/agent?missed=1"
    again = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    assert digits_spoken(again) == [real["ticket"]]
    other = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(),
                                                                "+14155550188")))
    assert digits_spoken(other) == [ghost["ticket"]]


def test_after_a_real_conversation_the_engineer_is_offered_the_next_caller_not_told_they_missed(
        twilio, ivr, clock, dead):
    """The <Queue url> request met a database blip (the caller still hears the engineer
    joining and Twilio bridges them). Twilio's Dial action then says the call completed
    after five minutes: the engineer talked, and must not hear that the caller "is no
    longer waiting" and be sent straight on to another whisper."""
    add_engineer(ivr)
    first = queued(twilio, 1)
    sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    joining = twiml(dead.post(root.find("Dial/Queue").get("url"),
                              **twilio.call_params(first["sid"]), DequeingCallSid=sid))
    assert spoken(joining) == ["An engineer is joining your call now."]
    clock.advance(minutes=5)
    after = twiml(twilio.post(root.find("Dial").get("action"), **engineer_params(sid),
                              DialCallStatus="completed", DialCallDuration="300"))
    assert after.find("Gather") is not None, spoken(after)


def test_an_engineer_whose_queues_match_no_configured_group_is_refused_or_served(
        tmp_path, settings, clock):
    """With `support-us-p{priority}` configured, `engineers add --queues
    support-us-p{priority}` (braces are accepted by the name check) must either be refused
    or take those callers; it must not leave the engineer hearing "nobody is waiting"
    while a caller of that group waits."""
    from ivr.desk.service import BadRequest

    from ..support import TwilioClient
    from .test_routes import app_with

    app = app_with(tmp_path, settings, clock, 'queue = "support-us"',
                   'queue = "support-us-p{priority}"')
    ivr = app.extensions["ivr"]
    twilio = TwilioClient(app)
    try:
        add_engineer(ivr, queues="support-us-p{priority}")
    except BadRequest:
        return  # refused with a reason: fine
    waiting = queued(twilio, 2)
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert digits_spoken(root) == [waiting["ticket"]], spoken(root)


@pytest.mark.parametrize("status, caller, words", [
    ("callback_requested", CALLER, "callback_confirmed"),
    ("callback_requested", "anonymous", "queue_unavailable_no_callback"),
    ("closed", CALLER, "queue_ticket_closed"),
    ("open", CALLER, "queue_unavailable")])
def test_a_caller_still_on_hold_when_the_desk_moves_their_ticket_is_told_why_and_let_go(
        twilio, ivr, dead, status, caller, words):
    """The desk moves a waiting caller's ticket (decides to call them back, closes a
    duplicate, puts it back in the open pile) while they are still in their Twilio queue.
    No engineer takes them from the queue now, so the next wait request tells them what
    the move means and ends the call. The hang-up Twilio then reports, even to a worker
    that cannot reach the database, says nothing more and leaves the ticket where the
    desk put it, with the number to call back when there is one."""
    from ivr.desk.service import Desk

    add_engineer(ivr)
    waiting = queued(twilio, 1, caller=caller)
    Desk.of(ivr).update(waiting["ticket"], status=status)
    engineer = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert engineer.find("Dial") is None
    params = twilio.call_params(waiting["sid"], caller=caller)
    query = f"ticket={waiting['ticket']}&priority=1"
    hold = twiml(twilio.post(f"/voice/wait?{query}", **params, QueuePosition="1",
                             AvgQueueTime="0"))
    expected = ivr.catalogues["en-US"].text(words, {"ticket": waiting["ticket"]})
    assert [e.tag for e in hold] == ["Say", "Hangup"]
    assert [s.replace(" ", "") for s in spoken(hold)] == [expected.replace(" ", "")]
    for worker in (dead, twilio):
        after = twiml(worker.post(f"/voice/queue-result?{query}", **params,
                                  QueueResult="hangup", QueueTime="40"))
        assert [e.tag for e in after] == ["Hangup"]
    with ivr.storage.reading() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == waiting["ticket"])).one()
    assert ticket.status == status
    callable_ = status == "callback_requested" and caller == CALLER
    assert ticket.callback_number == (CALLER if callable_ else None)


def test_in_a_surge_an_engineer_of_a_small_group_still_finds_the_callers_they_serve(
        twilio, ivr, clock):
    """More callers wait in the US queue, at P1, than the engineer line reads at a time.
    hana takes only Japanese callers of support-jp: the P4 caller of that group waits
    behind all of them in the overall order, yet is the first caller *hana* serves. She
    must be whispered that caller, not told that nobody is waiting while the caller hears
    "you're number 1 in line"."""
    from ..floor_support import crowd_waiting

    add_engineer(ivr, "hana", phone="+81312345678", languages="ja", queues="support-jp")
    # More than one read of the waiting callers takes.
    from ivr.storage.engineers import WAITING_READ

    crowd_waiting(ivr, WAITING_READ + 5, clock.now)
    clock.advance(minutes=1)
    japanese = queued(twilio, 4, to="+81531320070", caller="+819012345678")
    params = {**twilio.call_params(japanese["sid"], to="+81531320070",
                                   caller="+819012345678"),
              "QueuePosition": "1", "AvgQueueTime": "0"}
    hold = twiml(twilio.post(f"/voice/wait?ticket={japanese['ticket']}&priority=4", **params))
    # First in their group's line, as the engineers of that group will take them.
    assert spoken(hold)[0] == ivr.catalogues["ja-JP"].text("queue_position", {"position": 1})

    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+81312345678")))
    assert root.find("Dial/Queue") is not None, spoken(root)
    assert root.find("Dial/Queue").text == japanese["queue"]
    assert digits_spoken(root) == [japanese["ticket"]]


@pytest.mark.parametrize("queues, languages", [
    ((), ()), (("support-jp",), ()), ((), ("ja",)), ((), ("en", "fr")),
    (("support-apac", "support-emea"), ("en",)), (("support-us",), ("ja",))])
def test_the_callers_the_database_reads_for_an_engineer_are_those_the_choice_rule_serves(
        ivr, clock, queues, languages):
    """The engineer line lets the database narrow the waiting callers to those an engineer
    serves; over a crowd on every line, in every language and state, that narrowing keeps
    exactly the callers, in the order, that ``domain.engineers.ranked`` would choose from."""
    import datetime as dt
    import random

    from ivr.domain.engineers import Serves, ranked
    from ivr.storage.models import Call
    from ivr.voice.floor import waiting_of

    rng = random.Random(len(queues) * 7 + len(languages))
    now = clock.now
    numbers = [line.number for line in ivr.config.lines] + ["+15005550006"]
    with ivr.storage.transaction() as session:
        for n in range(150):
            sid = new_call_sid()
            created = now - dt.timedelta(minutes=rng.choice([5, 10, 20]))
            session.add(Call(
                call_sid=sid, dialed_number=rng.choice(numbers), region="r",
                language=rng.choice(["en-US", "en-GB", "ja-JP", "fr-FR", "EN-au", "ja", "eng"]),
                caller_number="+14155550100", can_text=True, step="done", english=False,
                attempts=0, auth_failures=0, steps_reached="", outcome="routed",
                started_at=created, updated_at=created,
                ended_at=now if rng.random() < 0.1 else None))
            session.flush()
            session.add(Ticket(
                number=str(40_000_000 + n), call_sid=sid, account_id="a", user_email="e",
                priority=rng.choice([1, 2, 3, 4]), target_response_minutes=60, region="r",
                status=rng.choice(["in_queue"] * 5 + ["open"]), created_at=created,
                acknowledged_at=created if rng.random() < 0.7 else None))
    serves = Serves(queues, languages)
    with ivr.storage.transaction() as session:
        repository = FloorRepository(ivr.storage, session)
        everyone = [waiting_of(ivr.config, t, c) for t, c, _ in repository.waiting()]
        narrowed = [waiting_of(ivr.config, t, c) for t, c, _ in
                    repository.waiting_served(serves, ivr.floor.groups, None)]
    expected = [w.ticket_id for w in ranked(serves, everyone)]
    assert [w.ticket_id for w in narrowed] == expected
    assert expected or queues == ("support-us",)


def test_an_engineer_talking_to_a_caller_on_one_device_is_not_given_a_second_caller_on_another(
        twilio, ivr, clock):
    """aiko's Client identity is signed in on her laptop and her mobile. She is talking to
    a caller on the laptop when the mobile calls the engineer line too: the next caller
    must not be bridged to a phone she is not listening to, their ticket marked connected
    and their place in line gone. She hears why and the mobile's call ends; once the
    conversation has ended, the next call takes the next caller."""
    add_engineer(ivr, phone=None, client="aiko")
    aiko = "client:aiko"
    first, second = queued(twilio, 1), queued(twilio, 2)
    laptop = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(laptop, aiko)))
    assert digits_spoken(root) == [first["ticket"]]
    twiml(twilio.post(root.find("Dial/Queue").get("url"), **twilio.call_params(first["sid"]),
                      DequeingCallSid=laptop))
    assert ticket(ivr, first["ticket"]).status == "connected"

    mobile = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), aiko)))
    assert mobile.find("Dial") is None, spoken(mobile)
    assert [e.tag for e in mobile] == ["Gather", "Say", "Hangup"]  # no key: goodbye
    assert spoken(mobile.find("Gather")) == [
        ivr.catalogues["en-US"].text("agent_on_another_call", {})]
    assert ticket(ivr, second["ticket"]).status == "in_queue"
    assert assignment(ivr, second["ticket"]) is None  # nobody claimed them

    # The conversation ends: Twilio reports the bridged wait's result.
    clock.advance(minutes=4)
    twiml(twilio.post(f"/voice/queue-result?ticket={first['ticket']}&priority=1",
                      **twilio.call_params(first["sid"]), QueueResult="bridged",
                      QueueTime="30"))
    again = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), aiko)))
    assert digits_spoken(again) == [second["ticket"]]


def _refused_while_talking_on_her_laptop(twilio, ivr):
    """aiko (a Client identity) takes a caller on her laptop; the conversation ends, but
    neither its queue result nor the caller's status arrives. A new call of hers to the
    engineer line: its SID and the refusal it hears."""
    add_engineer(ivr, phone=None, client="aiko")
    first = queued(twilio, 1)
    laptop = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(laptop, "client:aiko")))
    twiml(twilio.post(root.find("Dial/Queue").get("url"), **twilio.call_params(first["sid"]),
                      DequeingCallSid=laptop))
    again = new_call_sid()
    return again, twiml(twilio.post("/voice/agent", **engineer_params(again, "client:aiko")))


def test_an_engineer_whose_finished_call_was_never_reported_can_say_so_and_take_the_next(
        twilio, ivr):
    """Twilio's reports of a conversation's end can be lost (the database was away when
    they came): the service would then think aiko is still talking to her last caller,
    for up to four hours. She knows better, and says so with a key: her call takes the
    next caller."""
    second = queued(twilio, 2)
    again, refused = _refused_while_talking_on_her_laptop(twilio, ivr)
    gather = refused.find("Gather")
    assert (gather.get("numDigits"), refused.find("Dial")) == ("1", None)
    for key, heard in (("7", None), ("1", second["ticket"])):
        answer = twiml(twilio.post(gather.get("action"), **engineer_params(again, "client:aiko"),
                                   Digits=key))
        assert digits_spoken(answer) == ([heard] if heard else []), key
    assert answer.find("Dial/Queue").text == second["queue"]
    assert assignment(ivr, second["ticket"]).engineer == "aiko"


def test_an_engineer_who_said_her_last_call_ended_holds_for_the_next_caller_undisturbed(
        twilio, ivr):
    """aiko's last conversation was never reported ended, and nobody else waits when she
    presses 1 to say it has: she hears that nobody is waiting and holds. The line's next
    look must not ask her again (a prompt she does not expect while holding, that hangs up
    on her without a key): it keeps her holding, and gives her the next caller who comes."""
    again, refused = _refused_while_talking_on_her_laptop(twilio, ivr)
    holding = twiml(twilio.post(refused.find("Gather").get("action"),
                                **engineer_params(again, "client:aiko"), Digits="1"))
    for _ in range(2):
        assert [e.tag for e in holding][-2:] == ["Pause", "Redirect"], spoken(holding)
        holding = twiml(twilio.post(holding.find("Redirect").text,
                                    **engineer_params(again, "client:aiko")))
        assert holding.find("Gather") is None, spoken(holding)
    second = queued(twilio, 2)
    taken = twiml(twilio.post(holding.find("Redirect").text,
                              **engineer_params(again, "client:aiko")))
    assert digits_spoken(taken) == [second["ticket"]]
    assert taken.find("Dial/Queue").text == second["queue"]


def test_an_engineer_calling_again_gets_back_the_caller_their_other_call_claimed_first(
        twilio, ivr):
    """aiko's laptop was whispered a P2 caller; a P1 caller arrives as her mobile (or a
    new call after the laptop's dropped) reaches the engineer line. That call takes back
    the caller she was told about rather than a second one, so she is never dialled to
    two callers at once and the P2 caller does not wait for her claim to go stale; the P1
    caller is free for ben."""
    add_engineer(ivr, phone=None, client="aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    p2 = queued(twilio, 2)
    laptop = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "client:aiko")))
    assert digits_spoken(laptop) == [p2["ticket"]]
    p1 = queued(twilio, 1)
    mobile = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "client:aiko")))
    assert digits_spoken(mobile) == [p2["ticket"]]
    assert mobile.find("Dial/Queue").text == p2["queue"]
    ben = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid(), "+14155550188")))
    assert digits_spoken(ben) == [p1["ticket"]]


def test_when_the_other_device_dequeues_the_caller_it_is_the_one_recorded_as_talking(
        twilio, ivr):
    """aiko's laptop and mobile were both told about the same caller (the mobile took the
    laptop's claim back). Twilio hands the caller to the laptop, whose Dial came first;
    the mobile's Dial finds the queue empty. The mobile must hear that the caller is no
    longer waiting, not be offered the next caller as if it had talked, and its next
    look must not bridge a second caller while the laptop talks."""
    add_engineer(ivr, phone=None, client="aiko")
    first, second = queued(twilio, 1), queued(twilio, 2)
    laptop, mobile = new_call_sid(), new_call_sid()
    on_laptop = twiml(twilio.post("/voice/agent", **engineer_params(laptop, "client:aiko")))
    on_mobile = twiml(twilio.post("/voice/agent", **engineer_params(mobile, "client:aiko")))
    assert digits_spoken(on_laptop) == digits_spoken(on_mobile) == [first["ticket"]]
    twiml(twilio.post(on_laptop.find("Dial/Queue").get("url"),
                      **twilio.call_params(first["sid"]), DequeingCallSid=laptop))

    missed = twiml(twilio.post(on_mobile.find("Dial").get("action"),
                               **engineer_params(mobile, "client:aiko"),
                               DialCallStatus="no-answer"))
    assert missed.find("Gather") is None
    assert spoken(missed) == ["That caller is no longer waiting. Looking for the next one."]
    again = twiml(twilio.post(missed.find("Redirect").text,
                              **engineer_params(mobile, "client:aiko")))
    assert again.find("Dial") is None
    assert spoken(again.find("Gather")) == [
        ivr.catalogues["en-US"].text("agent_on_another_call", {})]
    assert ticket(ivr, second["ticket"]).status == "in_queue"


def test_an_engineer_whose_stale_claim_another_call_fulfilled_is_not_kept_off_the_line(
        twilio, ivr, clock):
    """aiko's whisper outlasted her claim and ben took the caller over; aiko's Dial then
    reached the caller first. Nothing says which engineer's call that was, so ben, whose
    Dial found the queue empty, must not be told he is talking to a caller on another
    phone: he takes the next caller."""
    add_engineer(ivr, "aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    first, second = queued(twilio, 1), queued(twilio, 2)
    aiko, ben = new_call_sid(), new_call_sid()
    to_aiko = twiml(twilio.post("/voice/agent", **engineer_params(aiko)))
    clock.advance(seconds=ivr.config.engineers.claim_seconds + 1)
    to_ben = twiml(twilio.post("/voice/agent", **engineer_params(ben, "+14155550188")))
    assert digits_spoken(to_aiko) == digits_spoken(to_ben) == [first["ticket"]]
    twiml(twilio.post(to_aiko.find("Dial/Queue").get("url"),
                      **twilio.call_params(first["sid"]), DequeingCallSid=aiko))
    after = twiml(twilio.post(to_ben.find("Dial").get("action"),
                              **engineer_params(ben, "+14155550188"),
                              DialCallStatus="no-answer"))
    look = after.find("Redirect").text if after.find("Redirect") is not None else "/voice/agent"
    again = twiml(twilio.post(look, **engineer_params(ben, "+14155550188"),
                              **({} if after.find("Redirect") is not None else {"Digits": "1"})))
    assert digits_spoken(again) == [second["ticket"]], spoken(again)


def test_two_engineers_calling_at_the_same_instant_for_one_caller_never_both_get_them(
        twilio, ivr, monkeypatch):
    """One caller waits; aiko's and ben's calls reach the engineer line at the same
    instant. aiko's claim is written and not yet committed when ben's looks: ben's waits
    for it, then finds the caller taken and holds. One caller, one engineer, never two."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    add_engineer(ivr, "aiko")
    add_engineer(ivr, "ben", phone="+14155550188")
    waiting = queued(twilio, 1)
    aiko_sid, ben_sid = new_call_sid(), new_call_sid()
    claimed, release = pause(monkeypatch, FloorRepository, "claim", thread="aiko")
    outcomes = Outcomes()
    aiko = outcomes.thread("aiko", ivr.floor.agent_call, engineer_params(aiko_sid), {})
    ben = outcomes.thread("ben", ivr.floor.agent_call,
                          engineer_params(ben_sid, "+14155550188"), {})
    second_waits_for_first(ivr, aiko, claimed, release, ben, "ben's pick-up")
    assert not outcomes.errors, outcomes.errors
    heard = {name: ET.fromstring(outcomes.results[name]) for name in ("aiko", "ben")}
    assert digits_spoken(heard["aiko"]) == [waiting["ticket"]]
    assert heard["aiko"].find("Dial/Queue").text == waiting["queue"]
    assert heard["ben"].find("Dial") is None and heard["ben"].find("Redirect") is not None
    taken = assignment(ivr, waiting["ticket"])
    assert (taken.engineer, taken.engineer_call_sid) == ("aiko", aiko_sid)


def test_an_engineer_pressing_1_for_the_next_caller_during_a_database_blip_holds(
        twilio, ivr, dead):
    """After a conversation aiko presses 1 to take the next caller just as the database is
    away for a moment: she is on the line and asking for work, so she holds and the line
    looks again, as it does for an engineer holding or back from a call, instead of being
    told goodbye and hung up on."""
    add_engineer(ivr)
    first = queued(twilio, 1)
    sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    twiml(twilio.post(root.find("Dial/Queue").get("url"), **twilio.call_params(first["sid"]),
                      DequeingCallSid=sid))
    after = twiml(twilio.post(root.find("Dial").get("action"), **engineer_params(sid),
                              DialCallStatus="completed"))
    gather = after.find("Gather")
    held = twiml(dead.post(gather.get("action"), **engineer_params(sid), Digits="1"))
    assert held.find("Hangup") is None, spoken(held)
    assert [e.tag for e in held] == ["Pause", "Redirect"]
    second = queued(twilio, 2)
    found = twiml(twilio.post(held.find("Redirect").text, **engineer_params(sid)))
    assert found.find("Dial/Queue").text == second["queue"]


def test_an_engineer_holding_after_saying_her_call_ended_is_not_bridged_while_talking_elsewhere(
        twilio, ivr):
    """aiko's mobile was told she was on another call, she pressed 1 (that call had ended,
    unreported) and holds, nobody waiting. She then takes a caller on her laptop. What she
    said at the press was about the call before: the mobile's next look must not bridge a
    second caller to a phone she is not listening to."""
    again, refused = _refused_while_talking_on_her_laptop(twilio, ivr)
    holding = twiml(twilio.post(refused.find("Gather").get("action"),
                                **engineer_params(again, "client:aiko"), Digits="1"))
    assert holding.find("Dial") is None
    on_laptop = queued(twilio, 1)
    talking_on_the_line(twilio, new_call_sid(), on_laptop, "client:aiko")
    waiting = queued(twilio, 2)
    look = twiml(twilio.post(holding.find("Redirect").text,
                             **engineer_params(again, "client:aiko")))
    assert look.find("Dial") is None, digits_spoken(look)
    assert spoken(look.find("Gather")) == [
        ivr.catalogues["en-US"].text("agent_on_another_call", {})]
    assert ticket(ivr, waiting["ticket"]).status == "in_queue"
    assert assignment(ivr, waiting["ticket"]) is None


def test_a_caller_routed_during_an_outage_whose_number_was_taken_meanwhile_can_be_reached(
        twilio, ivr, dead):
    """A caller routed while the database was away waits in the queue named after the
    number they heard. Another ticket took that number before the replay, so theirs is
    stored under a new one: the engineer line must still dial the queue they are in, not
    one named after the new number, which holds nobody (every engineer would miss them,
    and they would wait until they gave up)."""
    add_engineer(ivr)
    sid = new_call_sid()
    call = twilio.call_params(sid)
    twilio.post("/voice", **call)
    twilio.post("/voice/menu", **call, Digits="2")
    twilio.post("/voice/pmi", **call, Digits=BUSINESS_OWNER[0])
    prompt = twiml(twilio.post("/voice/host-key", **call, Digits=BUSINESS_OWNER[1]))
    routed = twiml(dead.post(prompt.find("Gather").get("action"), **call, Digits="1"))
    their_queue = routed.find("Enqueue").text
    heard = digits_spoken(routed)[0]
    other = queued(twilio, 4, caller="+14155550111")
    with ivr.storage.transaction() as session:
        session.scalars(select(Ticket).where(Ticket.number == other["ticket"])).one() \
            .number = heard  # the number the spooled caller heard, taken meanwhile
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    with ivr.storage.transaction() as session:
        stored = session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one().number
    assert stored != heard
    root = twiml(twilio.post("/voice/agent", **engineer_params(new_call_sid())))
    assert digits_spoken(root) == [stored]
    assert root.find("Dial/Queue").text == their_queue


def test_an_engineer_who_missed_a_caller_holds_through_a_database_blip(twilio, ivr, dead):
    """The caller aiko was put through to had gone: she hears "looking for the next one"
    and the line looks again at once. That look meeting an unreachable database holds her
    and looks again later, as any look does, instead of saying goodbye and hanging up."""
    add_engineer(ivr)
    queued(twilio, 1)
    sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(sid)))
    missed = twiml(twilio.post(root.find("Dial").get("action"), **engineer_params(sid),
                               DialCallStatus="no-answer"))
    assert spoken(missed) == ["That caller is no longer waiting. Looking for the next one."]
    held = twiml(dead.post(missed.find("Redirect").text, **engineer_params(sid)))
    assert held.find("Hangup") is None, spoken(held)
    assert [e.tag for e in held] == ["Pause", "Redirect"]
    second = queued(twilio, 2)
    found = twiml(twilio.post(held.find("Redirect").text, **engineer_params(sid)))
    assert found.find("Dial/Queue").text == second["queue"]
