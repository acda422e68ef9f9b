"""The caller waiting in the queue: announcements, hold audio, callbacks, queue results."""

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sqlalchemy import select

from ivr.storage.models import Call, OutboxMessage, Ticket

from ..support import BUSINESS_OWNER, CALLER, spoken, twiml

OWNER = ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "1"]


def routed(simulator, to="+18887999666", caller=CALLER):
    result = simulator.call(to, caller, OWNER)
    assert result.outcome == "routed" and result.wait_url
    return result


def routed_by(twilio, router):
    """A verified caller whose priority key ``router`` answers (``dead``: through the
    spool); their call's parameters and the waitUrl."""
    from ivr.sim.simulator import new_call_sid

    call = twilio.call_params(new_call_sid())
    twilio.post("/voice", **call)
    twilio.post("/voice/menu", **call, Digits="2")
    twilio.post("/voice/pmi", **call, Digits=BUSINESS_OWNER[0])
    prompt = twiml(twilio.post("/voice/host-key", **call, Digits=BUSINESS_OWNER[1]))
    routed = twiml(router.post(prompt.find("Gather").get("action"), **call, Digits="1"))
    return call, routed.find("Enqueue").get("waitUrl")


def ticket_of(ivr, call_sid):
    with ivr.storage.transaction() as session:
        return session.scalars(select(Ticket).where(Ticket.call_sid == call_sid)).one()


def wait(twilio, result, ivr, monkeypatch, place, estimate):
    """The waitUrl as the caller hears it when the engineer line's order puts them at
    ``place`` with ``estimate`` seconds to go (how those are counted: test_floor_dashboard).
    Twilio's own figures, sent too, describe a queue of one and are never said."""
    monkeypatch.setattr(ivr.floor, "position",
                        lambda sid: (place, estimate) if sid == result.call_sid else None)
    params = {**twilio.call_params(result.call_sid, to=result.to, caller=result.caller),
              "QueuePosition": "1", "AvgQueueTime": "999", "QueueTime": "999"}
    return twiml(twilio.post(result.wait_url, **params))


@pytest.mark.parametrize("to, language, position, known, unknown_absent", [
    ("+18887999666", "en-US", "You're number 3 in line.", "about 3 minutes", "expected wait"),
    ("+81531320070", "ja-JP", "お客様の順番は、3番目です。", "およそ3分", "見込み"),
    ("+33800946464", "fr-FR", "Vous êtes en position 3 dans la file d'attente.", "environ 3 minutes",
     "temps d'attente"),
])
def test_the_wait_url_tells_the_position_and_the_wait_when_known_in_the_line_language(
        simulator, twilio, ivr, monkeypatch, to, language, position, known, unknown_absent):
    result = routed(simulator, to)
    root = wait(twilio, result, ivr, monkeypatch, 3, 170)
    said = spoken(root)
    assert said[0] == position and known in said[1]
    assert {say.get("language") for say in root.iter("Say")} == {language}
    gather = root.find("Gather")
    assert gather.get("numDigits") == "1" and gather.get("action").startswith("/voice/wait-choice?")
    play = gather.find("Play")  # inside the Gather: the callback key works during the music
    assert play.get("loop") == "2" and play.text.endswith(".mp3")

    unknown = spoken(wait(twilio, result, ivr, monkeypatch, 3, None))
    assert unknown[0] == position and not any(unknown_absent in s for s in unknown)


def test_a_short_wait_is_one_minute_not_zero(simulator, twilio, ivr, monkeypatch):
    result = routed(simulator)
    said = spoken(wait(twilio, result, ivr, monkeypatch, 1, 20))
    assert said[1] == "The expected wait is about a minute."


def test_a_caller_with_a_withheld_number_is_not_offered_a_callback(simulator, twilio, ivr,
                                                                   monkeypatch):
    result = routed(simulator, caller="anonymous")
    root = wait(twilio, result, ivr, monkeypatch, 2, 90)
    said = spoken(root)
    assert said[-1] == "To hear your ticket number, press star."  # the only key on offer
    assert len(said) == 3 and not any("call you back" in s for s in said)


def test_a_waiting_caller_can_leave_for_a_callback_end_to_end(simulator, ivr):
    result = simulator.call("+18887999666", CALLER, OWNER + ["-", "1"])
    assert result.outcome == "callback"
    assert result.said()[-1].startswith("You're no longer on hold. An engineer will call you back")
    ticket = ticket_of(ivr, result.call_sid)
    assert (ticket.status, ticket.callback_number) == ("callback_requested", CALLER)
    with ivr.storage.transaction() as session:
        call = session.get(Call, result.call_sid)
        texts = [m.template for m in session.scalars(select(OutboxMessage))]
    assert (call.queue_result, call.queue_seconds) == ("leave", 120)
    assert texts == ["sms_ticket_one_hour", "sms_callback"]  # priority 1: about an hour


def test_another_key_while_waiting_keeps_the_caller_in_the_queue(simulator, twilio, ivr):
    result = routed(simulator)
    params = twilio.call_params(result.call_sid)
    root = twiml(twilio.post(f"/voice/wait-choice?ticket={result.ticket}&priority=1",
                             **params, Digits="5"))
    assert [(e.tag, e.text) for e in root] == [
        ("Redirect", f"/voice/wait?ticket={result.ticket}&priority=1")]
    assert ticket_of(ivr, result.call_sid).status == "in_queue"


def test_a_withheld_caller_pressing_the_callback_key_keeps_waiting(twilio, ivr):
    """The key is not offered to a caller without a number: pressing it anyway is any other
    key, an explicit way back to the wait rather than a document with nothing in it."""
    from ..floor_support import queued

    waiting = queued(twilio, 1, caller="anonymous")
    params = twilio.call_params(waiting["sid"], caller="anonymous")
    path = f"/voice/wait-choice?ticket={waiting['ticket']}&priority=1"
    root = twiml(twilio.post(path, **params, Digits="1"))
    assert [(e.tag, e.text) for e in root] == [
        ("Redirect", f"/voice/wait?ticket={waiting['ticket']}&priority=1")]
    assert ticket_of(ivr, waiting["sid"]).status == "in_queue"


def test_a_callback_asked_for_while_the_database_is_down_is_kept_for_the_replay(
        twilio, dead, ivr):
    """The caller heard the callback offer, then the database went away and they pressed
    the key: they leave the queue and hear the confirmation, and the end of the wait
    (``leave``) goes to the spool. The replay makes the ticket wait for its callback, on
    the caller's number, with the text message a live press sends."""
    from ..floor_support import queued

    waiting = queued(twilio, 1)
    params = twilio.call_params(waiting["sid"])
    path = f"/voice/wait-choice?ticket={waiting['ticket']}&priority=1"
    left = twiml(dead.post(path, **params, Digits="1"))
    assert [e.tag for e in left] == ["Leave"]
    result = f"/voice/queue-result?ticket={waiting['ticket']}&priority=1"
    told = twiml(dead.post(result, **params, QueueResult="leave", QueueTime="75"))
    assert spoken(told)[0].startswith("You're no longer on hold. An engineer will call you back")
    assert [e.text for e in told.iter("say-as")] == [waiting["ticket"]]
    assert ticket_of(ivr, waiting["sid"]).status == "in_queue"  # nothing written yet

    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    ticket = ticket_of(ivr, waiting["sid"])
    assert (ticket.status, ticket.callback_number) == ("callback_requested", CALLER)
    with ivr.storage.transaction() as session:
        texts = [m.template for m in session.scalars(select(OutboxMessage))]
    assert texts == ["sms_ticket_one_hour", "sms_callback"]


def test_a_callback_asked_for_while_the_database_is_down_is_recorded_when_it_is_back(
        twilio, dead, ivr):
    """The database answers again by the time Twilio reports the end of the wait: the
    callback is recorded live, with its text message."""
    from ..floor_support import queued

    waiting = queued(twilio, 2)
    params = twilio.call_params(waiting["sid"])
    dead.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=2", **params, Digits="1")
    told = twiml(twilio.post(f"/voice/queue-result?ticket={waiting['ticket']}&priority=2",
                             **params, QueueResult="leave", QueueTime="75"))
    assert [e.text for e in told.iter("say-as")] == [waiting["ticket"]]
    ticket = ticket_of(ivr, waiting["sid"])
    assert (ticket.status, ticket.callback_number) == ("callback_requested", CALLER)
    with ivr.storage.transaction() as session:
        texts = [m.template for m in session.scalars(select(OutboxMessage))]
    assert texts == ["sms_ticket", "sms_callback"]


@pytest.mark.parametrize("caller, offered", [(CALLER, True), ("anonymous", False)])
def test_with_the_database_down_the_wait_still_offers_a_callback_it_can_keep(
        twilio, dead, caller, offered):
    """No engineer can take a caller from the queue while the database is away, and the
    callback key now leaves for a callback kept in the spool: the wait offers it, to a
    caller with a number to call, as it does with the database."""
    params = {**twilio.call_params("CA" + "5" * 32, caller=caller), "QueuePosition": "1"}
    root = twiml(dead.post("/voice/wait?ticket=48151623&priority=1", **params))
    said = spoken(root)
    assert any("press 1" in s and "call you back" in s for s in said) is offered
    assert said[0] == "To hear your ticket number, press star."  # no position, no wait


def test_a_caller_routed_during_the_outage_can_leave_for_a_callback_before_the_replay(
        twilio, dead, ivr, monkeypatch):
    """Routed through the spool; the database is back but the ticket is not replayed yet.
    The wait offers the callback and the key leaves the queue: the end of the wait is
    stored on the call, and the replayed ticket waits for its callback, with the text."""
    call, wait_url = routed_by(twilio, dead)
    monkeypatch.setattr(ivr.floor, "position", lambda sid: None)
    waiting = twiml(twilio.post(wait_url, **call, QueuePosition="1"))
    assert any("call you back" in s for s in spoken(waiting))
    choice = waiting.find("Gather").get("action")
    assert [e.tag for e in twiml(twilio.post(choice, **call, Digits="1"))] == ["Leave"]
    number = parse_qs(urlsplit(wait_url).query)["ticket"][0]
    told = twiml(twilio.post(f"/voice/queue-result?ticket={number}&priority=1", **call,
                             QueueResult="leave", QueueTime="40"))
    assert [e.text for e in told.iter("say-as")] == [number]
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    ticket = ticket_of(ivr, call["CallSid"])
    assert (ticket.number, ticket.status, ticket.callback_number) == \
        (number, "callback_requested", CALLER)
    with ivr.storage.transaction() as session:
        texts = [m.template for m in session.scalars(select(OutboxMessage))]
    assert texts == ["sms_ticket_one_hour", "sms_callback"]


@pytest.mark.parametrize("caller, query", [
    ("anonymous", "ticket=48151623&priority=1"),  # no number to call back
    (CALLER, "priority=1"),                        # no ticket to speak of
    (CALLER, "ticket=4815%D9%A3&priority=1"),     # not a ticket number this service wrote
])
def test_with_the_database_down_the_callback_key_keeps_waiting_a_caller_who_cannot_have_one(
        twilio, dead, caller, query):
    """Without the database only the signed URL and the request tell: a caller with no
    number to call, or a URL without a ticket of ours, goes back to the wait."""
    params = twilio.call_params("CA" + "5" * 32, caller=caller)
    root = twiml(dead.post(f"/voice/wait-choice?{query}", **params, Digits="1"))
    assert [e.tag for e in root] == ["Redirect"]
    assert root[0].text.startswith("/voice/wait")
    assert dead.client.application.extensions["ivr"].service.spool.depth() == 0


@pytest.mark.parametrize("ticket", ["\u0663" * 8, "\u00b2" * 8, "4" * 5000])
def test_with_the_database_down_a_queue_result_reads_back_only_a_ticket_number_of_its_shape(
        twilio, dead, ticket):
    """Without the database the ticket number is read from the action URL, which the
    service wrote: eight ASCII digits. Other digits ('\u0663', Arabic-Indic three, or
    '\u00b2') or thousands of them are not a number it gave, and are not read out to the
    caller, as the wait's repeat key already refuses them; the caller still hears the
    call end, and the result is kept for the replay."""
    from urllib.parse import quote

    params = {**twilio.call_params("CA" + "6" * 32), "QueueResult": "queue-full"}
    root = twiml(dead.post(f"/voice/queue-result?ticket={quote(ticket)}&priority=1",
                           **params))
    assert [e.text for e in root.iter("say-as")] == []
    assert root[-1].tag == "Hangup"
    written = twiml(dead.post("/voice/queue-result?ticket=48151623&priority=1", **params))
    assert [e.text for e in written.iter("say-as")] == ["48151623"]


def test_an_answered_caller_connects_the_ticket(simulator, ivr, clock):
    result = simulator.call("+18887999666", CALLER, OWNER + ["-"])
    assert result.outcome == "routed"
    ticket = ticket_of(ivr, result.call_sid)
    assert ticket.status == "connected" and ticket.connected_at == clock.now


@pytest.mark.parametrize("queue_result, status, hears_kept", [
    ("hangup", "open", False), ("queue-full", "callback_requested", True),
    ("error", "callback_requested", True), ("system-error", "callback_requested", True),
])
def test_queue_results_move_the_ticket_and_tell_the_caller_what_happens(
        simulator, twilio, ivr, queue_result, status, hears_kept):
    result = routed(simulator)
    params = {**twilio.call_params(result.call_sid), "QueueResult": queue_result, "QueueTime": "42"}
    root = twiml(twilio.post(f"/voice/queue-result?ticket={result.ticket}&priority=1", **params))
    said = " ".join(spoken(root)).replace(" ", "")
    assert (result.ticket in said) is hears_kept and root[-1].tag == "Hangup"
    ticket = ticket_of(ivr, result.call_sid)
    assert ticket.status == status
    if hears_kept:
        assert ticket.callback_number == CALLER
    with ivr.storage.transaction() as session:
        assert session.get(Call, result.call_sid).queue_seconds == 42


@pytest.mark.parametrize("queue_result, status", [
    ("bridging-in-process", "connected"), ("redirected", "open"),
    ("redirected-from-bridged", "connected"),
])
def test_a_wait_handed_over_elsewhere_neither_promises_a_callback_nor_ends_the_call(
        simulator, twilio, ivr, queue_result, status):
    """Twilio's other ways out of the queue: being bridged to an engineer right now, or
    redirected out of the queue (or out of a conversation) to other instructions. The
    caller is in other hands: they hear nothing from us, the call is not hung up under
    them, and the ticket goes where that end sends it, never to the callback pile."""
    result = routed(simulator)
    params = {**twilio.call_params(result.call_sid), "QueueResult": queue_result,
              "QueueTime": "42"}
    root = twiml(twilio.post(f"/voice/queue-result?ticket={result.ticket}&priority=1",
                             **params))
    assert list(root) == []
    ticket = ticket_of(ivr, result.call_sid)
    assert (ticket.status, ticket.callback_number) == (status, None)
    again = twiml(twilio.post(f"/voice/queue-result?ticket={result.ticket}&priority=1",
                              **params))
    assert list(again) == [] and ticket_of(ivr, result.call_sid).status == status


@pytest.mark.parametrize("to, language", [("+18887999666", "en-US"),
                                          ("+81531320070", "ja-JP"),
                                          ("+33800946464", "fr-FR")])
@pytest.mark.parametrize("queue_result", ["queue-full", "error"])
def test_a_full_queue_for_a_withheld_number_opens_the_ticket_and_promises_no_call(
        simulator, twilio, ivr, queue_result, to, language):
    """No callback can be placed without a number: the ticket goes to the open pile (not
    a callback list where it would wait for ever) and the caller hears it is kept and
    answered by email."""
    result = routed(simulator, to, caller="anonymous")
    params = {**twilio.call_params(result.call_sid, to=to, caller="anonymous"),
              "QueueResult": queue_result}
    root = twiml(twilio.post(f"/voice/queue-result?ticket={result.ticket}&priority=1",
                             **params))
    ticket = ticket_of(ivr, result.call_sid)
    assert (ticket.status, ticket.callback_number) == ("open", None)
    (said,) = spoken(root)
    expected = ivr.catalogues[language].text("queue_unavailable_no_callback",
                                             {"ticket": result.ticket})
    assert said.replace(" ", "") == expected.replace(" ", "")
    assert root[-1].tag == "Hangup"


def test_a_repeated_callback_press_leaves_the_queue_again(twilio, ivr):
    from ..floor_support import queued

    waiting = queued(twilio, 1)
    params = {**twilio.call_params(waiting["sid"]), "Digits": "1"}
    path = f"/voice/wait-choice?ticket={waiting['ticket']}&priority=1"
    first, again = twiml(twilio.post(path, **params)), twiml(twilio.post(path, **params))
    assert [e.tag for e in first] == [e.tag for e in again] == ["Leave"]
    with ivr.storage.transaction() as session:
        assert len(session.scalars(select(OutboxMessage)).all()) == 2  # ticket + one callback


def test_star_in_the_queue_says_the_ticket_number_again_and_the_caller_keeps_waiting(
        simulator, ivr):
    result = simulator.call("+18887999666", CALLER, OWNER + ["*", "-"])
    digits = " ".join(result.ticket)
    assert result.said().count(f"Your ticket number is {digits}. Once more: {digits}.") == 1
    assert result.outcome == "routed"  # still in the queue until an engineer answered
    assert ticket_of(ivr, result.call_sid).status == "connected"


def test_the_ticket_number_again_is_in_the_language_the_caller_chose(simulator):
    result = simulator.call("+81531320070", CALLER, ["9"] + OWNER + ["*"])
    again = [e for e in result.events if e.kind == "say" and "Once more" in e.text]
    assert len(again) == 1 and again[0].language == "en-US"


@pytest.mark.parametrize("query, heard", [
    ("ticket=48151623&priority=2", ["チケット番号は、48151623です。繰り返します。48151623です。"]),
    ("ticket=48151623&priority=2&en=1",
     ["Your ticket number is 48151623. Once more: 48151623."]),
    ("ticket=4815abc&priority=2", []),
])
def test_the_ticket_number_again_needs_no_database(twilio, ivr, monkeypatch, query, heard):
    # Read from the signed action URL: the call need not even be stored.
    monkeypatch.setattr(ivr.service, "wait_choice", lambda *a: pytest.fail("database used"))
    params = twilio.call_params("CA" + "7" * 32, to="+81531320070")
    root = twiml(twilio.post(f"/voice/wait-choice?{query}", **params, Digits="*"))
    assert spoken(root) == heard
    if heard:
        assert root.find("Gather").get("action").startswith(f"/voice/wait-choice?{query[:15]}")


@pytest.mark.parametrize("priority", ["\u00b2", "\u0662", "7", "22"])
def test_the_ticket_number_again_carries_on_only_a_priority_level(twilio, ivr, priority):
    """The repeat key's next wait URL keeps the priority only when it is one of the levels
    (ASCII '1' to '4'): '\u00b2' passes isdigit(), and the URL is read back by whoever
    follows it."""
    params = twilio.call_params("CA" + "7" * 32, to="+18887999666")
    for level, kept in ((priority, False), ("2", True)):
        query = urlencode({"ticket": "48151623", "priority": level})
        root = twiml(twilio.post(f"/voice/wait-choice?{query}", **params, Digits="*"))
        action = parse_qs(urlsplit(root.find("Gather").get("action")).query)
        assert action["ticket"] == ["48151623"]
        assert action.get("priority") == ([level] if kept else None), level


def test_a_hang_up_reported_after_the_callback_key_keeps_the_callback(twilio, ivr):
    """The caller pressed the callback key and hung up before the <Leave> played: Twilio's
    Enqueue action then says hangup, and the callback promised stays promised."""
    from ..floor_support import queued

    waiting = queued(twilio, 2)
    params = twilio.call_params(waiting["sid"])
    number = waiting["ticket"]
    root = twiml(twilio.post(f"/voice/wait-choice?ticket={number}&priority=2", **params,
                             Digits="1"))
    assert [e.tag for e in root] == ["Leave"]
    twiml(twilio.post(f"/voice/queue-result?ticket={number}&priority=2", **params,
                      QueueResult="hangup", QueueTime="30"))
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
    assert (ticket.status, ticket.callback_number) == ("callback_requested",
                                                       params["From"])


def test_with_the_database_down_a_waiting_caller_is_not_told_their_own_wait_as_the_expected_one(
        twilio, dead):
    """Each caller waits in a queue of their own, so Twilio's AvgQueueTime is the caller's
    own wait so far and its QueuePosition always 1: neither is said when the service cannot
    read the engineers' order."""
    call, wait_url = routed_by(twilio, twilio)
    params = {**call, "QueuePosition": "1", "AvgQueueTime": "600", "QueueTime": "600"}
    live = spoken(twiml(twilio.post(wait_url, **params)))
    assert not any("expected wait" in s for s in live), live
    down = spoken(twiml(dead.post(wait_url, **params)))
    assert not any("expected wait" in s or "in line" in s for s in down), down
    assert any("ticket number" in s for s in down), down


def test_a_caller_routed_through_the_spool_is_not_told_their_own_wait_once_the_database_is_back(
        twilio, dead):
    """Routed during the outage; the database answers again before the spool is replayed.
    The caller still waits alone in their queue, so Twilio's AvgQueueTime is their own
    wait so far: it must not be announced as the expected wait."""
    call, wait_url = routed_by(twilio, dead)
    params = {**call, "QueuePosition": "1", "AvgQueueTime": "600", "QueueTime": "600"}
    said = spoken(twiml(twilio.post(wait_url, **params)))  # the database is back
    assert not any("expected wait" in s for s in said), said


def left_for_a_callback_then_reopened(twilio, ivr):
    """A caller who left the queue for a callback and hung up; the desk then put the
    ticket back in the open pile (an engineer answered by email). Their call's
    parameters, and the wait-choice and queue-result paths Twilio was given."""
    from ivr.desk.service import Desk

    from ..floor_support import queued

    waiting = queued(twilio, 2)
    params = twilio.call_params(waiting["sid"])
    query = f"ticket={waiting['ticket']}&priority=2"
    choice, result = f"/voice/wait-choice?{query}", f"/voice/queue-result?{query}"
    assert [e.tag for e in twiml(twilio.post(choice, **params, Digits="1"))] == ["Leave"]
    twiml(twilio.post(result, **params, QueueResult="leave", QueueTime="40"))
    twilio.post("/voice/status", **{**params, "CallStatus": "completed",
                                    "CallDuration": "95", "SequenceNumber": "4"})
    Desk.of(ivr).update(waiting["ticket"], status="open")
    assert ticket_of(ivr, waiting["sid"]).status == "open"
    return params, choice, result


def test_a_replayed_queue_result_does_not_undo_what_the_desk_did_since(twilio, ivr):
    """Twilio reports how a wait ended once: the same report again (a late retry, or the
    signed request replayed) must not move the ticket a second time, here back to waiting
    for a callback the desk has already dealt with."""
    params, _, result = left_for_a_callback_then_reopened(twilio, ivr)
    again = twiml(twilio.post(result, **params, QueueResult="leave", QueueTime="40"))
    assert again[-1].tag == "Hangup" and again.find("Enqueue") is None
    assert ticket_of(ivr, params["CallSid"]).status == "open"


def test_a_callback_key_replayed_after_the_wait_ended_changes_nothing(twilio, ivr):
    """Once Twilio has said how the wait ended, a callback press sent again (a late retry,
    or the signed request replayed) is answered with a hang-up and leaves the ticket
    where the desk put it, with no second text."""
    params, choice, _ = left_for_a_callback_then_reopened(twilio, ivr)
    again = twiml(twilio.post(choice, **params, Digits="1"))
    assert [e.tag for e in again] == ["Hangup"]
    assert ticket_of(ivr, params["CallSid"]).status == "open"
    with ivr.storage.transaction() as session:
        assert len(session.scalars(select(OutboxMessage)).all()) == 2  # ticket + callback
