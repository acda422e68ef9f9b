"""Callbacks that really get placed: the engineer's phone first through Twilio's REST API
(a recording HttpClient here), the summary and a key press, then the customer, with both
legs reporting through signed status callbacks."""

import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from ivr.desk.callbacks import Callbacks
from ivr.sim.simulator import new_call_sid
from ivr.storage.engineers import Assignment, CallbackAttempt, FloorRepository
from ivr.storage.models import OutboxMessage, Ticket

from ..desk_support import ADMIN_TOKEN, admin_app
from ..floor_support import (ENGINEER_PHONE, add_engineer, digits_spoken, engineer_params,
                             queued,
                             talking_on_the_line)
from ..support import (CALLER, US_LINE, Outcomes, RecordingHttpClient, pause,
                       second_waits_for_first, spoken, twiml)

ACCOUNT = "AC" + "1" * 32
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def http():
    return RecordingHttpClient()


@pytest.fixture
def app(settings, clock, http):
    app = admin_app(settings.model_copy(update={"twilio_account_sid": ACCOUNT,
                                                "public_url": "http://localhost"}), clock)
    app.extensions["twilio_http_client"] = http
    yield app
    app.extensions["ivr"].storage.dispose()


def waiting_for_callback(twilio, priority=1, to=US_LINE, caller=CALLER):
    waiting = queued(twilio, priority, to=to, caller=caller)
    root = twiml(twilio.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=1",
                             **twilio.call_params(waiting["sid"], to=to, caller=caller),
                             Digits="1"))
    assert root[0].tag == "Leave"
    return waiting


def state(ivr, number):
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
        assignment = session.get(Assignment, ticket.id)
        attempts = [(a.engineer, a.outcome) for a in session.scalars(
            select(CallbackAttempt).where(CallbackAttempt.ticket_id == ticket.id)
            .order_by(CallbackAttempt.id))]
        return ticket, assignment, attempts


def place(app, number, body=None, headers=AUTH):
    return app.test_client().post(f"/api/tickets/{number}/callback", json=body or {},
                                  headers=headers)


def leg(sid, to, caller):
    return {"CallSid": sid, "AccountSid": ACCOUNT, "From": caller, "To": to,
            "CallStatus": "in-progress", "Direction": "outbound-api",
            "ApiVersion": "2010-04-01"}


def engineer_answers_and_presses_1(twilio, attempt_id, engineer_sid):
    offer = twiml(twilio.post(f"/voice/callback/engineer?attempt={attempt_id}",
                              **leg(engineer_sid, ENGINEER_PHONE, US_LINE)))
    key = offer.find("Gather").get("action")
    return offer, twiml(twilio.post(key, **leg(engineer_sid, ENGINEER_PHONE, US_LINE),
                                    Digits="1"))


def test_a_callback_rings_the_engineer_then_dials_the_customer_who_answers(
        app, twilio, ivr, http, clock):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)

    response = place(app, waiting["ticket"], {"engineer": "aiko"})
    assert response.status_code == 201, response.get_json()
    attempt = response.get_json()
    (request,) = http.requests
    assert request["method"] == "POST"
    assert request["uri"].endswith(f"/Accounts/{ACCOUNT}/Calls.json")
    data = request["data"]
    assert (data["To"], data["From"]) == (ENGINEER_PHONE, US_LINE)
    assert data["Url"] == f"http://localhost/voice/callback/engineer?attempt={attempt['id']}"
    assert data["StatusCallback"] == ("http://localhost/voice/callback/status?"
                                      f"attempt={attempt['id']}&leg=engineer")
    assert str(data["Timeout"]) == str(ivr.config.engineers.ring_seconds)

    engineer_sid = new_call_sid()
    offer, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], engineer_sid)
    assert digits_spoken(offer) == [waiting["ticket"]]
    assert spoken(offer.find("Gather"))[-1] == "To call the customer now, press 1. To cancel, hang up."
    dial = dial_root.find("Dial")
    assert dial.get("callerId") == US_LINE  # the regional number the customer called
    number = dial.find("Number")
    assert number.text == CALLER
    assert number.get("url") == f"/voice/callback/customer?attempt={attempt['id']}"
    assert number.get("statusCallback") == (f"/voice/callback/status?attempt={attempt['id']}"
                                            "&leg=customer")

    customer_sid = new_call_sid()
    greeting = twiml(twilio.post(number.get("url"), **leg(customer_sid, CALLER, US_LINE)))
    assert spoken(greeting)[0].startswith("Hello, this is Zoom technical support calling you "
                                          "back about ticket")
    assert digits_spoken(greeting) == [waiting["ticket"]]
    assert state(ivr, waiting["ticket"])[2] == [("aiko", None)]  # answered, by whom?
    # A key: a person. The <Number url>'s TwiML ends and Twilio puts them through.
    assert list(customer_presses_a_key(twilio, greeting, customer_sid)) == []
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and ticket.connected_at == clock.now
    assert assignment.engineer == "aiko" and assignment.callback_attempts == 1
    assert attempts == [("aiko", "answered")]

    # Later reports of the same legs change nothing.
    twilio.post(number.get("statusCallback"), **{**leg(customer_sid, CALLER, US_LINE),
                                                 "CallStatus": "completed"})
    twilio.post(f"/voice/callback/status?attempt={attempt['id']}&leg=engineer",
                **{**leg(engineer_sid, ENGINEER_PHONE, US_LINE), "CallStatus": "completed"})
    assert state(ivr, waiting["ticket"])[2] == [("aiko", "answered")]
    view = app.test_client().get(f"/api/tickets/{waiting['ticket']}", headers=AUTH).get_json()
    assert view["engineer"] == "aiko" and view["callback_attempts"] == 1
    assert [(a["actor"], a["action"]) for a in view["actions"]] == [
        ("admin", "callback"), ("aiko", "callback-result")]


def customer_answers(twilio, dial_root, customer_sid):
    """The customer's phone is answered: what the leg's <Number url> plays to whoever
    answered, before they are put through to the engineer."""
    return twiml(twilio.post(dial_root.find("Dial/Number").get("url"),
                             **leg(customer_sid, CALLER, US_LINE)))


def customer_presses_a_key(twilio, greeting, customer_sid):
    """The customer, having heard the greeting, presses a key to be put through."""
    return twiml(twilio.post(greeting.find("Gather").get("action"),
                             **leg(customer_sid, CALLER, US_LINE), Digits="5"))


def customer_put_through(twilio, dial_root):
    """The customer's phone is answered and their key pressed: they are put through to
    the engineer. Returns the customer leg's SID."""
    customer_sid = new_call_sid()
    customer_presses_a_key(twilio, customer_answers(twilio, dial_root, customer_sid),
                           customer_sid)
    return customer_sid


def aiko_on_a_callback_put_through(app, twilio, ivr):
    """Two tickets wait for a callback; aiko's callback for the first is put through to
    its customer. Returns the two tickets."""
    add_engineer(ivr)
    first = waiting_for_callback(twilio)
    second = waiting_for_callback(twilio, caller="+14155550111")
    attempt = place(app, first["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_put_through(twilio, dial_root)
    return first, second


def test_a_callback_answered_by_voicemail_is_a_missed_callback_not_a_connection(
        app, twilio, ivr, http):
    """A voicemail (or an answering machine) answers the customer's phone: it hears the
    greeting and presses no key. The ticket is not connected: the attempt is a miss that
    counts like no answer, the engineer is told the customer was not reached, and the
    machine keeps a message saying how to reach us."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_sid = new_call_sid()
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "answered"})
    greeting = customer_answers(twilio, dial_root, customer_sid)
    assert state(ivr, waiting["ticket"])[0].status == "callback_requested"
    gather = greeting.find("Gather")
    assert gather is not None and gather.get("numDigits") == "1"
    assert gather.get("action") == f"/voice/callback/customer-key?attempt={attempt['id']}"
    assert spoken(gather) == [
        f"Hello, this is Zoom technical support calling you back about ticket "
        f"{waiting['ticket']}. An engineer is on the line.",
        "To speak to the engineer now, press any key."]
    assert [e.tag for e in greeting] == ["Gather", "Redirect"]

    # Nobody presses a key: the Gather times out and Twilio follows the Redirect.
    missed = twiml(twilio.post(greeting.find("Redirect").text,
                               **leg(customer_sid, CALLER, US_LINE)))
    assert [e.tag for e in missed] == ["Say", "Hangup"]
    assert spoken(missed) == [f"Sorry we missed you. You can call us back about ticket "
                              f"{waiting['ticket']} whenever suits you. Goodbye."]
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested" and ticket.connected_at is None
    assert attempts == [("aiko", "unconfirmed")] and assignment.callback_failures == 1

    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})
    told = twiml(twilio.post(dial_root.find("Dial").get("action"),
                             **leg(new_call_sid(), ENGINEER_PHONE, US_LINE),
                             DialCallStatus="completed"))
    assert spoken(told) == ["The customer couldn't be reached. The attempt has been "
                            "recorded. Goodbye."]
    assert state(ivr, waiting["ticket"])[2] == [("aiko", "unconfirmed")]
    view = app.test_client().get(f"/api/tickets/{waiting['ticket']}", headers=AUTH).get_json()
    assert view["engineer"] is None and view["callback_failures"] == 1


@pytest.mark.parametrize("report_first", ["status", "dial"])
def test_a_customer_who_hangs_up_during_the_greeting_is_not_recorded_as_reached(
        app, twilio, ivr, http, report_first):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_sid = new_call_sid()
    customer_answers(twilio, dial_root, customer_sid)

    def status():
        twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                    **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})

    def dial():
        return twiml(twilio.post(dial_root.find("Dial").get("action"),
                                 **leg(new_call_sid(), ENGINEER_PHONE, US_LINE),
                                 DialCallStatus="completed"))

    if report_first == "status":
        status()
        told = dial()
    else:
        told = dial()
        status()
    assert spoken(told) == ["The customer couldn't be reached. The attempt has been "
                            "recorded. Goodbye."]
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested"
    assert attempts == [("aiko", "unconfirmed")] and assignment.callback_failures == 1


def test_missed_callbacks_unconfirmed_by_a_key_reopen_the_ticket_with_the_text(
        app, twilio, ivr, http):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    for _ in range(ivr.config.engineers.callback_attempts):
        attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
        _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
        customer_sid = new_call_sid()
        greeting = customer_answers(twilio, dial_root, customer_sid)
        twilio.post(greeting.find("Redirect").text, **leg(customer_sid, CALLER, US_LINE))
    ticket, assignment, _ = state(ivr, waiting["ticket"])
    assert ticket.status == "open"
    assert assignment.note.startswith("3 callback attempts did not reach the customer")
    with ivr.storage.transaction() as session:
        texts = [m for m in session.scalars(select(OutboxMessage))
                 if m.template.startswith("sms_callback_missed")]
    assert [m.to_number for m in texts] == [CALLER]


def test_a_second_callback_is_refused_while_the_customer_rings_for_the_first(
        app, twilio, ivr, http, clock):
    add_engineer(ivr)
    add_engineer(ivr, "ben", phone="+14155550198")
    waiting = waiting_for_callback(twilio)
    first = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial = engineer_answers_and_presses_1(twilio, first["id"], new_call_sid())
    assert dial.find("Dial/Number").text == CALLER  # the customer's phone rings
    clock.advance(seconds=5)
    second = place(app, waiting["ticket"], {"engineer": "ben"})
    assert second.status_code == 409
    assert "already being placed by aiko" in second.get_json()["error"]
    assert len(http.requests) == 1  # ben's phone never rang

    # The customer does not answer: the attempt ends, and the next one may go.
    twilio.post(dial.find("Dial/Number").get("statusCallback"),
                **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": "no-answer"})
    assert place(app, waiting["ticket"], {"engineer": "ben"}).status_code == 201


def talking_on_the_engineer_line(app, twilio, ivr):
    """aiko takes a caller on the engineer line while another ticket waits for a callback,
    which the desk is refused: (the caller's queue entry, the waiting one, the refusal)."""
    add_engineer(ivr)
    in_queue = queued(twilio, 2, caller="+14155550111")
    waiting = waiting_for_callback(twilio)
    talking_on_the_line(twilio, new_call_sid(), in_queue)
    refused = place(app, waiting["ticket"], {"engineer": "aiko"})
    assert refused.status_code == 409
    return in_queue, waiting, refused.get_json()["error"]


def on_the_line_refusal(ticket: str) -> str:
    """What the desk is told when aiko is talking to the caller of ``ticket``."""
    return (f"aiko is talking to a caller on the engineer line (ticket {ticket}); if that "
            "call has ended, `engineers calls-ended aiko` says so")


def test_a_callback_is_refused_while_its_engineer_talks_to_a_caller_on_the_engineer_line(
        app, twilio, ivr, http, clock):
    """Ringing an engineer in a conversation would interrupt it or go to their voicemail,
    and count an attempt against the ticket: the desk is told why, and nothing rings."""
    in_queue, waiting, error = talking_on_the_engineer_line(app, twilio, ivr)
    assert error == on_the_line_refusal(in_queue["ticket"])
    assert http.requests == []
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested" and attempts == []
    assert assignment is None or assignment.callback_attempts == 0

    # The conversation ends (Twilio reports the bridged wait's result): the callback goes.
    twilio.post(f"/voice/queue-result?ticket={in_queue['ticket']}",
                **twilio.call_params(in_queue["sid"], caller=in_queue["caller"]),
                QueueResult="bridged", QueueTime="30")
    assert place(app, waiting["ticket"], {"engineer": "aiko"}).status_code == 201


def test_an_engineer_who_says_her_unreported_conversation_ended_can_be_given_a_callback(
        app, twilio, ivr, http):
    """1 at the engineer line's "if that call has ended" prompt is the engineer's word
    that her last conversation is over: the desk takes it too, rather than refusing
    callbacks with her for hours."""
    in_queue, waiting, _ = talking_on_the_engineer_line(app, twilio, ivr)
    again = new_call_sid()
    prompt = twiml(twilio.post("/voice/agent", **engineer_params(again)))
    twiml(twilio.post(prompt.find("Gather").get("action"), **engineer_params(again),
                      Digits="1"))
    assert place(app, waiting["ticket"], {"engineer": "aiko"}).status_code == 201


def test_the_desk_can_say_an_engineers_unreported_conversation_has_ended(
        app, twilio, ivr, http):
    """Only the engineer could clear a conversation whose end was never reported, by
    calling the engineer line again. The 409 says how the desk can, and
    ``engineers calls-ended NAME`` does: the callback then goes, and the caller's
    ticket keeps who said so."""
    in_queue, waiting, error = talking_on_the_engineer_line(app, twilio, ivr)
    assert error == on_the_line_refusal(in_queue["ticket"])
    ran = app.test_cli_runner().invoke(args=["engineers", "calls-ended", "aiko"])
    assert ran.exit_code == 0, ran.output
    assert in_queue["ticket"] in ran.output
    assert place(app, waiting["ticket"], {"engineer": "aiko"}).status_code == 201
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket).where(
            Ticket.number == in_queue["ticket"])).one()
        history = FloorRepository(ivr.storage, session).actions(ticket.id)
    assert [(a.actor, a.action) for a in history][-1] == ("admin", "call ended")


def test_saying_calls_ended_for_an_unknown_engineer_is_refused(app):
    ran = app.test_cli_runner().invoke(args=["engineers", "calls-ended", "nobody"])
    assert ran.exit_code != 0 and "nobody" in ran.output


def test_a_callback_placed_while_the_customer_answers_the_last_one_waits_not_deadlocks(
        app, twilio, ivr, http, monkeypatch, clock):
    """The desk places a new callback just as the customer answers a previous attempt's
    call (presses the key after its greeting) whose status reports were lost (so it no longer holds new attempts back). Both
    take the ticket's row before its assignment's, so one waits for the other rather than
    deadlocking (PostgreSQL would abort the customer's webhook: goodbye, and the answered
    callback never recorded)."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    first = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    engineer_answers_and_presses_1(twilio, first["id"], new_call_sid())  # calling_customer
    clock.advance(seconds=4 * ivr.config.engineers.ring_seconds + 60)

    # The new callback holds the ticket's row, not yet the rest.
    placing, release = pause(monkeypatch, FloorRepository, "open_attempt")
    outcomes = Outcomes()
    second = outcomes.thread("place", Callbacks.of(ivr, http).place, waiting["ticket"], "aiko",
                             "admin")
    answered = outcomes.thread("customer", ivr.floor.callback_customer_key,
                               {**leg(new_call_sid(), CALLER, US_LINE), "Digits": "1"},
                               {"attempt": str(first["id"])})
    second_waits_for_first(ivr, second, placing, release, answered, "the customer's webhook")
    assert not outcomes.errors, outcomes.errors
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and assignment.engineer == "aiko"
    assert attempts == [("aiko", "answered"), ("aiko", None)]
    assert assignment.callback_attempts == 2


def test_failed_attempts_are_counted_and_the_last_one_reopens_the_ticket_with_a_text(
        app, twilio, ivr, http):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    tries = ivr.config.engineers.callback_attempts
    for n, status in enumerate(["busy", "no-answer", "failed"][:tries], start=1):
        attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
        _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
        number = dial_root.find("Dial/Number")
        twilio.post(number.get("statusCallback"),
                    **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": status})
        told = twiml(twilio.post(dial_root.find("Dial").get("action"),
                                 **leg(new_call_sid(), ENGINEER_PHONE, US_LINE),
                                 DialCallStatus=status))
        assert spoken(told) == ["The customer couldn't be reached. The attempt has been "
                                "recorded. Goodbye."]
        ticket, assignment, attempts = state(ivr, waiting["ticket"])
        assert assignment.callback_attempts == n and attempts[-1] == ("aiko", status)
        if n < tries:
            assert ticket.status == "callback_requested"
    assert ticket.status == "open"
    assert assignment.note.startswith(f"{tries} callback attempts did not reach the customer")
    with ivr.storage.transaction() as session:
        texts = [m for m in session.scalars(select(OutboxMessage))
                 if m.template.startswith("sms_callback_missed")]
    assert [m.to_number for m in texts] == [CALLER]
    assert "we tried to call you back about ticket" in texts[0].body
    assert assignment.callback_failures == 0  # the round is over; the note keeps its count
    assert place(app, waiting["ticket"], {"engineer": "aiko"}).status_code == 409


def fail_callback(app, twilio, number, status):
    """One callback attempt on ticket ``number`` that the customer's side ends with
    ``status`` (busy, no-answer, failed)."""
    attempt = place(app, number, {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": status})
    twilio.post(dial_root.find("Dial").get("action"),
                **leg(new_call_sid(), ENGINEER_PHONE, US_LINE), DialCallStatus=status)


def test_a_ticket_asked_back_for_a_callback_gets_a_fresh_round_of_attempts_and_a_new_text(
        app, twilio, ivr, http):
    """The customer could not be reached, the ticket went back to the open pile and they
    were told by text. An engineer then asks for a callback again (the customer wrote in,
    say): that round has the full number of attempts, and if it fails too the customer
    hears about it again, by a second text."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    tries = ivr.config.engineers.callback_attempts
    for _ in range(tries):
        fail_callback(app, twilio, waiting["ticket"], "no-answer")
    ticket, assignment, _ = state(ivr, waiting["ticket"])
    assert ticket.status == "open"
    again = app.test_client().patch(f"/api/tickets/{waiting['ticket']}", headers=AUTH,
                                    json={"status": "callback_requested"})
    assert again.status_code == 200, again.get_json()

    for n in range(1, tries + 1):
        fail_callback(app, twilio, waiting["ticket"], "busy")
        ticket, assignment, _ = state(ivr, waiting["ticket"])
        if n < tries:
            assert ticket.status == "callback_requested", n
    assert ticket.status == "open"
    assert assignment.note.startswith(f"{tries} callback attempts did not reach the customer")
    assert assignment.callback_attempts == 2 * tries
    with ivr.storage.transaction() as session:
        texts = [m for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
                 if m.template.startswith("sms_callback_missed")]
    assert len(texts) == 2 and {m.to_number for m in texts} == {CALLER}
    assert all("we tried to call you back about ticket" in m.body for m in texts)


def test_a_round_the_desk_ended_early_does_not_carry_its_failures_into_the_next(
        app, twilio, ivr, http, clock):
    """Two attempts of three fail; the desk then puts the ticket back in the open pile (the
    customer wrote in) and later asks for a callback again. The new round has every
    attempt: its first miss neither reopens the ticket nor texts the customer. A failure
    reported once the ticket has left callback_requested does not count either."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    tries = ivr.config.engineers.callback_attempts
    for _ in range(tries - 1):
        fail_callback(app, twilio, waiting["ticket"], "no-answer")
    client = app.test_client()
    for status in ("open", "callback_requested"):
        response = client.patch(f"/api/tickets/{waiting['ticket']}", headers=AUTH,
                                json={"status": status})
        assert response.status_code == 200, response.get_json()
    fail_callback(app, twilio, waiting["ticket"], "busy")
    ticket, assignment, _ = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested", assignment.note
    assert assignment.callback_failures == 1
    # An attempt still ringing when the desk closes the round: its miss is not counted.
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    assert client.patch(f"/api/tickets/{waiting['ticket']}", headers=AUTH,
                        json={"status": "open"}).status_code == 200
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": "no-answer"})
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert attempts[-1] == ("aiko", "no-answer") and assignment.callback_failures == 1
    # One ringing while the desk ends the round and asks for a callback again: its miss
    # belongs to the round that ended, not to the new one.
    assert client.patch(f"/api/tickets/{waiting['ticket']}", headers=AUTH,
                        json={"status": "callback_requested"}).status_code == 200
    clock.advance(minutes=5)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    for status in ("open", "callback_requested"):
        clock.advance(seconds=1)
        assert client.patch(f"/api/tickets/{waiting['ticket']}", headers=AUTH,
                            json={"status": status}).status_code == 200
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": "busy"})
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert attempts[-1] == ("aiko", "busy") and assignment.callback_failures == 0
    assert ticket.status == "callback_requested"
    with ivr.storage.transaction() as session:
        texts = [m for m in session.scalars(select(OutboxMessage))
                 if m.template.startswith("sms_callback_missed")]
    assert texts == []


def test_a_customer_answering_a_callback_while_the_database_is_away_is_put_through(
        app, twilio, ivr, http, dead):
    """Not hung up on: the engineer is already on the line, so the customer is bridged
    to them without the greeting the database would have given."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_sid = new_call_sid()
    answered = twiml(dead.post(dial_root.find("Dial/Number").get("url"),
                               **leg(customer_sid, CALLER, US_LINE)))
    assert list(answered) == []  # an empty document: Twilio connects the two legs
    # Nobody was asked for a key, so the leg's end, reported once the database is back,
    # is Twilio's word: answered.
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})
    ticket, _, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and attempts == [("aiko", "answered")]


def customer_greeted(app, twilio, ivr):
    """aiko's callback rings the customer, who answers and hears the greeting. Returns
    the ticket, the engineer's <Dial>, the customer leg's SID and the greeting."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_sid = new_call_sid()
    return waiting, dial_root, customer_sid, customer_answers(twilio, dial_root, customer_sid)


def test_a_key_after_the_greeting_while_the_database_is_away_still_puts_the_customer_through(
        app, twilio, ivr, http, dead):
    """The customer pressed a key: they are there, and the engineer is on the line. No
    key (a voicemail) ends the customer's leg, as it would with the database up."""
    waiting, dial_root, customer_sid, greeting = customer_greeted(app, twilio, ivr)
    pressed = twiml(dead.post(greeting.find("Gather").get("action"),
                              **leg(customer_sid, CALLER, US_LINE), Digits="1"))
    assert list(pressed) == []
    silent = twiml(dead.post(greeting.find("Redirect").text,
                             **leg(customer_sid, CALLER, US_LINE)))
    assert [e.tag for e in silent] == ["Hangup"]


@pytest.mark.parametrize("database_back", [True, False],
                         ids=["the legs end live", "the legs end unheard"])
def test_a_key_pressed_after_the_greeting_while_the_database_is_away_is_an_answered_callback(
        app, twilio, ivr, http, dead, database_back):
    """The customer pressed the key and talked to the engineer: the key's request met the
    database away, so it goes to the spool. However the legs' ends are heard (once the
    database is back, before the replay; or not at all), the replay records the callback
    answered and the ticket connected: not "unconfirmed", a miss that would have the
    customer called again, and after the last attempt told by text that they could not
    be reached."""
    waiting, dial_root, customer_sid, greeting = customer_greeted(app, twilio, ivr)
    pressed = twiml(dead.post(greeting.find("Gather").get("action"),
                              **leg(customer_sid, CALLER, US_LINE), Digits="1"))
    assert list(pressed) == []  # put through to the engineer
    assert ivr.service.spool.depth() == 1
    ends = twilio if database_back else dead
    ends.post(dial_root.find("Dial/Number").get("statusCallback"),
              **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})
    ends.post(dial_root.find("Dial").get("action"),
              **leg(new_call_sid(), ENGINEER_PHONE, US_LINE), DialCallStatus="completed")
    # The key, and (unheard) the end of the customer's leg, spooled too.
    assert ivr.service.spool.replay(ivr.service.replay).applied == (1 if database_back else 2)
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and attempts == [("aiko", "answered")]
    assert assignment.callback_failures == 0


def test_an_answer_replayed_after_its_miss_ended_the_round_withdraws_the_text_not_sent_yet(
        app, twilio, ivr, http, dead):
    """The round's last attempt: the legs' ends, heard before the replay with no key
    recorded, ended the round (the ticket back in the open pile, a text saying we could
    not reach the customer queued). The customer was in fact talking to the engineer: the
    replay connects the ticket and withdraws that text, which the sender (replaying
    before it sends) has not sent yet."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    for _ in range(ivr.config.engineers.callback_attempts - 1):
        fail_callback(app, twilio, waiting["ticket"], "no-answer")
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_sid = new_call_sid()
    greeting = customer_answers(twilio, dial_root, customer_sid)
    dead.post(greeting.find("Gather").get("action"), **leg(customer_sid, CALLER, US_LINE),
              Digits="1")
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})
    assert state(ivr, waiting["ticket"])[0].status == "open"  # the round ended, wrongly

    def missed_texts():
        with ivr.storage.transaction() as session:
            return [m.template for m in session.scalars(select(OutboxMessage))
                    if m.template.startswith("sms_callback_missed")]

    assert missed_texts() == [f"sms_callback_missed.{attempt['id']}"]
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    ticket, _, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and attempts[-1] == ("aiko", "answered")
    assert missed_texts() == []


def test_an_engineer_who_does_not_answer_leaves_the_ticket_waiting_for_its_callback(
        app, twilio, ivr, http):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    twilio.post(f"/voice/callback/status?attempt={attempt['id']}&leg=engineer",
                **{**leg(new_call_sid(), ENGINEER_PHONE, US_LINE), "CallStatus": "no-answer"})
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested"
    assert (assignment.callback_attempts, assignment.callback_failures) == (1, 0)
    assert attempts == [("aiko", "engineer-no-answer")]


def test_an_engineer_who_hangs_up_without_pressing_1_declines_the_attempt(app, twilio, ivr):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    offer = twiml(twilio.post(f"/voice/callback/engineer?attempt={attempt['id']}",
                              **leg(new_call_sid(), ENGINEER_PHONE, US_LINE)))
    assert offer[-1].tag == "Hangup"
    twiml(twilio.post(offer.find("Gather").get("action"),
                      **leg(new_call_sid(), ENGINEER_PHONE, US_LINE), Digits="9"))
    assert state(ivr, waiting["ticket"])[2] == [("aiko", "engineer-declined")]


def test_a_rest_error_is_reported_and_recorded_and_changes_no_status(app, twilio, ivr, http):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    http.responses.append((400, {"code": 21215, "message": "Geo permission", "status": 400}))
    response = place(app, waiting["ticket"], {"engineer": "aiko"})
    assert response.status_code == 502
    assert "Twilio did not place the call" in response.get_json()["error"]
    ticket, _, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested" and attempts == [("aiko", "error")]


def test_a_personal_token_places_the_callback_for_its_owner_only(app, twilio, ivr, http):
    token = add_engineer(ivr)
    add_engineer(ivr, "ben", phone="+14155550188")
    waiting = waiting_for_callback(twilio)
    mine = {"Authorization": f"Bearer {token}"}
    assert place(app, waiting["ticket"], {"engineer": "ben"}, headers=mine).status_code == 403
    response = place(app, waiting["ticket"], headers=mine)
    assert response.status_code == 201 and response.get_json()["engineer"] == "aiko"
    view = app.test_client().get(f"/api/tickets/{waiting['ticket']}", headers=mine).get_json()
    assert view["actions"][0]["actor"] == "aiko"


@pytest.mark.parametrize("body, status", [
    ({}, 400), ({"engineer": "nobody"}, 404), ({"engineer": 7}, 400),
    ({"engineer": "ai\x00ko"}, 404), ({"engineer": "x" * 5000}, 404),
    ({"engineer": "aiko", "extra": 1}, 400),
])
def test_a_bad_callback_request_gets_a_clear_error_and_places_nothing(
        app, twilio, ivr, http, body, status):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    response = place(app, waiting["ticket"], body)
    assert response.status_code == status and response.get_json()["error"]
    assert http.requests == []


def test_a_ticket_not_waiting_for_a_callback_is_refused(app, twilio, ivr, http):
    add_engineer(ivr)
    waiting = queued(twilio, 2)
    response = place(app, waiting["ticket"], {"engineer": "aiko"})
    assert response.status_code == 409 and "not waiting for a callback" in response.get_json()["error"]
    assert http.requests == []


def test_the_command_places_a_callback(app, twilio, ivr, http):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    result = app.test_cli_runner().invoke(args=["tickets", "callback", waiting["ticket"],
                                                "--engineer", "aiko"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Callback attempt 1 placed: ringing aiko first.")
    assert len(http.requests) == 1


def test_callback_webhooks_refuse_unsigned_requests(app, twilio, ivr):
    for path in ("/voice/callback/engineer?attempt=1", "/voice/callback/status?attempt=1",
                 "/voice/callback/customer?attempt=1", "/voice/callback/customer-key?attempt=1",
                 "/voice/agent/joining?ticket=1"):
        assert twilio.post(path, signed=False, CallSid=new_call_sid()).status_code == 403


@pytest.mark.parametrize("ref", ["\u00b2", "\u2460", "\u0661"])
def test_a_callback_for_a_ticket_reference_in_other_digits_is_a_clean_404(
        app, twilio, ivr, http, ref):
    add_engineer(ivr)
    waiting_for_callback(twilio)  # ticket id 1 exists, and '١' must not reach it
    assert app.test_client().get(f"/api/tickets/{ref}", headers=AUTH).status_code == 404
    response = place(app, ref, {"engineer": "aiko"})
    assert response.status_code == 404, response.status_code
    assert http.requests == []


@pytest.mark.parametrize("ref", ["\u0661", "\u00b2", "\uff11"])
@pytest.mark.parametrize("path", ["/voice/callback/engineer", "/voice/callback/customer",
                                  "/voice/callback/customer-key",
                                  "/voice/callback/dialled"])
def test_a_callback_attempt_named_in_other_digits_reaches_no_attempt(
        app, twilio, ivr, http, caplog, path, ref):
    """The attempt id comes back in the legs' URLs, which Twilio signs. Only the ASCII
    digits this service wrote name an attempt: '\u0661' (Arabic-Indic one) or a full-width
    one must not act on attempt 1, nor '\u00b2', which passes isdigit() but not int(), end
    in an error. Each gets the polite end of an attempt it does not know."""
    from urllib.parse import quote

    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    assert attempt["id"] == 1
    before = state(ivr, waiting["ticket"])
    caplog.clear()
    root = twiml(twilio.post(f"{path}?attempt={quote(ref)}&leg=customer",
                             **leg(new_call_sid(), CALLER, US_LINE),
                             DialCallStatus="busy"))
    assert [child.tag for child in root] in ([], ["Hangup"])
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    after = state(ivr, waiting["ticket"])
    assert (after[0].status, after[2]) == (before[0].status, before[2]) == (
        "callback_requested", [("aiko", None)])
    with ivr.storage.transaction() as session:
        assert session.get(CallbackAttempt, 1).status == "calling_engineer"


def test_answered_callbacks_are_not_pick_ups_from_the_queue_in_a_callers_expected_wait(
        app, twilio, ivr, http, clock):
    """The expected wait counts callers engineers took from the queue; three answered
    callbacks and no pick-up leave nothing to estimate it from."""
    add_engineer(ivr)
    for _ in range(3):
        wanted = waiting_for_callback(twilio, 1)
        attempt = place(app, wanted["ticket"], {"engineer": "aiko"}).get_json()
        engineer_sid = new_call_sid()
        _, dial = engineer_answers_and_presses_1(twilio, attempt["id"], engineer_sid)
        customer_sid = new_call_sid()
        customer_presses_a_key(twilio, customer_answers(twilio, dial, customer_sid),
                               customer_sid)
        assert state(ivr, wanted["ticket"])[0].status == "connected"
        clock.advance(minutes=1)
        engineer_leg_ends(twilio, attempt["id"], engineer_sid, "status")
    waiting = queued(twilio, 2)
    params = {**twilio.call_params(waiting["sid"]), "QueuePosition": "1", "AvgQueueTime": "0"}
    said = spoken(twiml(twilio.post(f"/voice/wait?ticket={waiting['ticket']}&priority=2",
                                    **params)))
    assert said[0] == "You're number 1 in line."
    assert not any("expected wait" in line for line in said), said


def test_callbacks_due_are_listed_by_priority_then_time_left(app, twilio, ivr, clock):
    from ivr.desk.callbacks import Callbacks

    p3 = waiting_for_callback(twilio, 3)
    clock.advance(minutes=10)
    p1_later = waiting_for_callback(twilio, 1)
    due = Callbacks.of(ivr).due()
    assert [d["number"] for d in due] == [p1_later["ticket"], p3["ticket"]]
    assert due[0]["seconds_left"] == 3600 and due[1]["seconds_left"] == 1430 * 60


@pytest.mark.parametrize("path", [
    "/voice/agent", "/voice/agent?wait=x", "/voice/agent/joining", "/voice/agent/joining?ticket=x",
    "/voice/agent/after?ticket=99999999999999999999", "/voice/callback/engineer?attempt=abc",
    "/voice/callback/engineer-key?attempt=99999999999", "/voice/callback/customer?attempt=-1",
    "/voice/callback/customer-key?attempt=", "/voice/callback/customer-key?attempt=1",
    "/voice/callback/dialled", "/voice/callback/status?attempt=1&leg=sideways",
])
@pytest.mark.parametrize("params", [
    {}, {"CallSid": "not-a-sid", "From": "\x00\ufffd", "Digits": "1" * 500},
    {"CallSid": "CA" + "f" * 32, "From": "client:", "DialCallStatus": "completed"},
])
def test_odd_requests_on_the_engineer_and_callback_paths_get_twiml_not_an_error(
        app, twilio, ivr, path, params):
    add_engineer(ivr)
    response = twilio.post(path, **params)
    assert response.status_code == 200 and response.mimetype == "text/xml"


def test_a_rest_time_out_after_twilio_placed_the_call_does_not_undo_the_answered_callback(
        app, twilio, ivr, http):
    """Twilio created the engineer's call but its answer to the REST request was lost (a
    time-out): meanwhile aiko answered, pressed 1 and the customer picked up. The time-out
    must not mark that attempt as an error over its answer."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    real_request = http.request

    def slow_twilio(method, uri, **kwargs):
        real_request(method, uri, **kwargs)
        attempt_id = kwargs["data"]["Url"].rsplit("=", 1)[1]
        _, dial = engineer_answers_and_presses_1(twilio, attempt_id, new_call_sid())
        customer_sid = new_call_sid()
        customer_presses_a_key(twilio, customer_answers(twilio, dial, customer_sid),
                               customer_sid)
        raise OSError("read timed out")

    http.request = slow_twilio
    place(app, waiting["ticket"], {"engineer": "aiko"})
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected"
    assert attempts == [("aiko", "answered")]


@pytest.mark.parametrize("data, content_type", [
    ('{"engineer": "ben",}', "application/json"),   # trailing comma: not JSON
    ('{"engineer": "ben"}', "text/plain"),           # JSON sent with the wrong type
    ("engineer=ben", "application/x-www-form-urlencoded"),
])
def test_a_callback_request_whose_body_is_not_a_json_object_is_refused_and_rings_nobody(
        app, twilio, ivr, http, data, content_type):
    token = add_engineer(ivr)  # aiko
    add_engineer(ivr, "ben", phone="+14155550188")
    waiting = waiting_for_callback(twilio)
    response = app.test_client().post(
        f"/api/tickets/{waiting['ticket']}/callback", data=data, content_type=content_type,
        headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and response.get_json()["error"]
    assert http.requests == []  # nobody's phone rang
    assert state(ivr, waiting["ticket"])[2] == []  # no attempt recorded


@pytest.mark.parametrize("data, content_type", [("", None), ("", "application/json")])
def test_an_empty_callback_request_with_a_personal_token_still_places_it_for_its_owner(
        app, twilio, ivr, http, data, content_type):
    token = add_engineer(ivr)  # aiko
    waiting = waiting_for_callback(twilio)
    response = app.test_client().post(
        f"/api/tickets/{waiting['ticket']}/callback", data=data, content_type=content_type,
        headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201 and response.get_json()["engineer"] == "aiko"
    assert len(http.requests) == 1


@pytest.fixture
def unconfigured(settings, clock, http):
    """Another worker on the same database with no TWILIO_ACCOUNT_SID or IVR_PUBLIC_URL."""
    app = admin_app(settings, clock)
    app.extensions["twilio_http_client"] = http
    yield app
    app.extensions["ivr"].storage.dispose()


def test_without_the_twilio_settings_a_callback_is_503_naming_them_and_rings_nobody(
        unconfigured, twilio, ivr, http):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    response = place(unconfigured, waiting["ticket"], {"engineer": "aiko"})
    assert response.status_code == 503, response.get_json()
    error = response.get_json()["error"]
    assert "TWILIO_ACCOUNT_SID" in error and "IVR_PUBLIC_URL" in error
    assert "TWILIO_AUTH_TOKEN" not in error  # that one is set
    assert http.requests == []
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "callback_requested" and attempts == []
    assert assignment is None or assignment.callback_attempts == 0


@pytest.mark.parametrize("number, body, status", [
    ("99999999", {"engineer": "aiko"}, 404),
    (None, {"engineer": "nobody"}, 404),
    (None, {"engineer": 7}, 400),
])
def test_without_the_twilio_settings_a_bad_callback_request_still_gets_its_own_error(
        unconfigured, twilio, ivr, http, number, body, status):
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    response = place(unconfigured, number or waiting["ticket"], body)
    assert response.status_code == status, response.get_json()
    assert http.requests == []


def test_the_engineer_answering_while_the_desk_records_the_call_is_not_undone(
        app, twilio, ivr, http, monkeypatch):
    """Twilio's answer to the desk's request to ring the engineer is slow, and the engineer
    picks up just as the desk writes down the call it placed (PostgreSQL, two transactions
    at once): the attempt stays as the engineer's answer left it, not put back to ringing,
    which would let the end of the engineer's leg end an attempt whose customer is being
    dialled."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    import threading
    import time

    from ..support import postgres_admin

    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    # The desk has placed the call and is about to record it.
    recording, release = pause(monkeypatch, FloorRepository, "attempt", thread="desk")
    outcomes = Outcomes()
    desk = outcomes.thread("desk", Callbacks.of(ivr, http).place, waiting["ticket"], "aiko",
                           "admin")
    desk.start()
    assert recording.wait(10)
    with ivr.storage.transaction() as session:
        (attempt_id,) = session.scalars(select(CallbackAttempt.id)).all()
    answered = threading.Thread(target=lambda: outcomes.results.setdefault(
        "engineer", ivr.floor.callback_engineer(leg(new_call_sid(), ENGINEER_PHONE, US_LINE),
                                                {"attempt": str(attempt_id)})))
    answered.start()
    # Let the engineer's webhook run until it is done or waits for the desk's lock.
    name = ivr.storage.engine.url.query["application_name"]
    deadline = time.monotonic() + 10
    with postgres_admin(ivr.storage.engine.url) as admin:
        from sqlalchemy import text

        while answered.is_alive() and time.monotonic() < deadline and not admin.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                "AND wait_event_type = 'Lock'"), {"name": name}).scalar():
            time.sleep(0.02)
    release.set()
    desk.join(15)
    answered.join(15)
    assert not outcomes.errors, outcomes.errors
    offer = ET.fromstring(outcomes.results["engineer"])
    assert offer.find("Gather") is not None  # the summary, then "press 1"
    with ivr.storage.transaction() as session:
        attempt = session.get(CallbackAttempt, attempt_id)
        assert (attempt.status, attempt.outcome) == ("engineer_answered", None)
        assert attempt.engineer_call_sid is not None


def test_the_engineers_first_request_replayed_while_the_customer_rings_changes_nothing(
        app, twilio, ivr, http):
    """The engineer leg's first request sent again (the signed request replayed) once the
    engineer has pressed 1 must not put the attempt back to "engineer answered": the end
    of the engineer's leg would then end it as the engineer's doing, and the customer who
    did not answer would not be counted as a missed callback."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    engineer_sid = new_call_sid()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], engineer_sid)
    number = dial_root.find("Dial/Number")
    twilio.post(f"/voice/callback/engineer?attempt={attempt['id']}",
                **leg(engineer_sid, ENGINEER_PHONE, US_LINE))  # the replay
    # The engineer gives up while the customer's phone rings, and it rings out.
    twilio.post(f"/voice/callback/status?attempt={attempt['id']}&leg=engineer",
                **{**leg(engineer_sid, ENGINEER_PHONE, US_LINE), "CallStatus": "completed"})
    twilio.post(number.get("statusCallback"), **{**leg(new_call_sid(), CALLER, US_LINE),
                                                 "CallStatus": "no-answer"})
    _, assignment, attempts = state(ivr, waiting["ticket"])
    assert attempts == [("aiko", "no-answer")]
    assert assignment.callback_failures == 1


def engineer_leg_ends(twilio, attempt_id, engineer_sid, how):
    """The engineer's leg of an answered callback ends: Twilio reports it through the
    leg's status callback, or through the engineer's <Dial> action."""
    if how == "status":
        twilio.post(f"/voice/callback/status?attempt={attempt_id}&leg=engineer",
                    **{**leg(engineer_sid, ENGINEER_PHONE, US_LINE), "CallStatus": "completed"})
    else:
        twiml(twilio.post(f"/voice/callback/dialled?attempt={attempt_id}",
                          **leg(engineer_sid, ENGINEER_PHONE, US_LINE),
                          DialCallStatus="completed"))


@pytest.mark.parametrize("ended_by", ["status", "dial"])
def test_an_engineer_on_a_callback_is_not_handed_a_waiting_caller_on_her_other_device(
        app, twilio, ivr, http, ended_by):
    """aiko's Client identity is signed in on her laptop and her mobile. She takes a
    callback on the laptop; while she listens to its summary, while the customer's phone
    rings and while she talks to the customer, the mobile calling the engineer line must
    not be bridged to the caller waiting in the queue: she hears she is on another call.
    Once the callback's call has ended, the next call takes that caller."""
    add_engineer(ivr, phone=None, client="aiko")
    waiting = waiting_for_callback(twilio)
    in_queue = queued(twilio, 2, caller="+14155550111")
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    laptop = new_call_sid()

    def mobile_calls_the_line():
        return twiml(twilio.post("/voice/agent",
                                 **engineer_params(new_call_sid(), "client:aiko")))

    def refused(root):
        assert root.find("Dial") is None, spoken(root)
        assert spoken(root.find("Gather")) == [
            ivr.catalogues["en-US"].text("agent_on_another_call", {})]

    offer = twiml(twilio.post(f"/voice/callback/engineer?attempt={attempt['id']}",
                              **leg(laptop, ENGINEER_PHONE, US_LINE)))
    refused(mobile_calls_the_line())  # listening to the summary
    dial_root = twiml(twilio.post(offer.find("Gather").get("action"),
                                  **leg(laptop, ENGINEER_PHONE, US_LINE), Digits="1"))
    refused(mobile_calls_the_line())  # the customer's phone rings
    customer_put_through(twilio, dial_root)
    assert state(ivr, waiting["ticket"])[0].status == "connected"
    refused(mobile_calls_the_line())  # talking to the customer
    assert state(ivr, in_queue["ticket"])[0].status == "in_queue"

    engineer_leg_ends(twilio, attempt["id"], laptop, ended_by)
    assert digits_spoken(mobile_calls_the_line()) == [in_queue["ticket"]]


def test_a_callback_is_not_placed_with_an_engineer_already_on_another_callback(
        app, twilio, ivr, http):
    """Two tickets wait for a callback. While aiko's phone rings for the first, and while
    she talks to its customer, the second is refused with why (409): ringing her again
    would interrupt her and count an attempt against the second ticket."""
    add_engineer(ivr)
    first = waiting_for_callback(twilio)
    second = waiting_for_callback(twilio, caller="+14155550111")
    attempt = place(app, first["ticket"], {"engineer": "aiko"}).get_json()

    refused = place(app, second["ticket"], {"engineer": "aiko"})
    assert refused.status_code == 409
    assert refused.get_json()["error"] == (f"aiko is on a callback for ticket "
                                           f"{first['ticket']}")
    assert len(http.requests) == 1  # rung once, for the first ticket

    engineer_sid = new_call_sid()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], engineer_sid)
    customer_put_through(twilio, dial_root)
    assert place(app, second["ticket"], {"engineer": "aiko"}).status_code == 409
    ticket, assignment, attempts = state(ivr, second["ticket"])
    assert attempts == [] and (assignment is None or assignment.callback_attempts == 0)

    engineer_leg_ends(twilio, attempt["id"], engineer_sid, "status")
    assert place(app, second["ticket"], {"engineer": "aiko"}).status_code == 201
    assert len(http.requests) == 2


def test_two_callbacks_placed_with_one_engineer_at_once_ring_her_once(
        app, twilio, ivr, http, monkeypatch):
    """The desk places callbacks for two tickets with aiko at the same moment (two
    operators, or a double click on two rows): the second waits for the first's attempt to
    be written, then is refused; her phone rings once."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    add_engineer(ivr)
    first = waiting_for_callback(twilio)
    second = waiting_for_callback(twilio, caller="+14155550111")
    written, release = pause(monkeypatch, FloorRepository, "new_attempt", thread="first")
    outcomes = Outcomes()
    one = outcomes.thread("first", Callbacks.of(ivr, http).place, first["ticket"], "aiko",
                          "admin")
    two = outcomes.thread("second", Callbacks.of(ivr, http).place, second["ticket"], "aiko",
                          "admin")
    second_waits_for_first(ivr, one, written, release, two, "the second callback")
    assert set(outcomes.results) == {"first"}
    assert outcomes.errors == {"second": f"Conflict: aiko is on a callback for ticket "
                                         f"{first['ticket']}"}
    assert len(http.requests) == 1
    assert state(ivr, second["ticket"])[2] == []


def test_an_engineer_whose_callbacks_end_was_never_reported_can_say_so_on_the_engineer_line(
        app, twilio, ivr, http):
    """The database was away when aiko's answered callback ended: none of its legs' reports
    was kept, and the service would think her on that call for up to four hours, refusing
    the desk's next callback with her. On the engineer line she hears she is on another
    call and presses 1: that call has ended, and the desk's callback goes to her again."""
    first, second = aiko_on_a_callback_put_through(app, twilio, ivr)
    assert place(app, second["ticket"], {"engineer": "aiko"}).status_code == 409

    line = new_call_sid()
    refused = twiml(twilio.post("/voice/agent", **engineer_params(line)))
    gather = refused.find("Gather")
    assert spoken(gather) == [ivr.catalogues["en-US"].text("agent_on_another_call", {})]
    held = twiml(twilio.post(gather.get("action"), **engineer_params(line), Digits="1"))
    assert held.find("Dial") is None and held.find("Redirect") is not None  # nobody waits
    assert place(app, second["ticket"], {"engineer": "aiko"}).status_code == 201


@pytest.mark.parametrize("when", ["before the summary", "before the key"])
def test_an_engineer_whose_callback_the_desk_closed_meanwhile_hears_why_nothing_is_dialled(
        app, twilio, ivr, http, when):
    """The desk closes the ticket while aiko's phone rings for its callback, or while she
    listens to the summary. Pressing 1 then dials nobody, and she hears why, not a bare
    goodbye that leaves her thinking the customer is being called; the attempt records
    it."""
    add_engineer(ivr, languages="ja,en")
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    engineer_sid = new_call_sid()

    def close():
        assert app.test_client().patch(f"/api/tickets/{waiting['ticket']}", headers=AUTH,
                                       json={"status": "closed"}).status_code == 200

    if when == "before the summary":
        close()
    offer = twiml(twilio.post(f"/voice/callback/engineer?attempt={attempt['id']}",
                              **leg(engineer_sid, ENGINEER_PHONE, US_LINE)))
    if when == "before the key":
        close()
    gather = offer.find("Gather")
    told = offer if gather is None else twiml(twilio.post(
        gather.get("action"), **leg(engineer_sid, ENGINEER_PHONE, US_LINE), Digits="1"))
    assert told.find("Dial") is None
    assert [e.tag for e in told] == ["Say", "Hangup"]
    assert {e.get("language") for e in told.iter("Say")} == {"ja-JP"}
    assert spoken(told) == [ivr.catalogues["ja-JP"].text("callback_not_needed", {})]
    assert state(ivr, waiting["ticket"])[2] == [("aiko", "error")]


def test_the_engineers_key_replayed_after_the_customer_answered_still_asks_them_for_theirs(
        app, twilio, ivr, http):
    """The engineer's 1 sent again (the signed request replayed) once the customer's phone
    has been answered and asked for a key must not put the attempt back to "calling the
    customer": a customer who then hangs up during the greeting, having pressed nothing,
    would be recorded as reached and the ticket connected, and nobody would call them
    again."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    engineer_sid = new_call_sid()
    offer, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], engineer_sid)
    customer_sid = new_call_sid()
    customer_answers(twilio, dial_root, customer_sid)
    twiml(twilio.post(offer.find("Gather").get("action"),
                      **leg(engineer_sid, ENGINEER_PHONE, US_LINE), Digits="1"))  # the replay
    twilio.post(dial_root.find("Dial/Number").get("statusCallback"),
                **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert attempts == [("aiko", "unconfirmed")]
    assert ticket.status == "callback_requested" and assignment.callback_failures == 1


def test_the_desk_told_an_engineer_is_on_a_callback_put_through_learns_how_to_clear_it(
        app, twilio, ivr, http):
    """The database was away when aiko's answered callback ended, so its end was never
    kept. The desk's next callback with her is refused naming that ticket and, as for a
    conversation on the engineer line, how to say it has ended; the command says which
    callback it ended, and the next callback goes."""
    first, second = aiko_on_a_callback_put_through(app, twilio, ivr)
    refused = place(app, second["ticket"], {"engineer": "aiko"})
    assert refused.status_code == 409
    assert refused.get_json()["error"] == (
        f"aiko is on a callback for ticket {first['ticket']}; if that call has ended, "
        "`engineers calls-ended aiko` says so")
    ran = app.test_cli_runner().invoke(args=["engineers", "calls-ended", "aiko"])
    assert ran.exit_code == 0, ran.output
    assert ran.output.strip() == (f"aiko is no longer counted as on the callback of ticket "
                                  f"{first['ticket']}.")
    assert place(app, second["ticket"], {"engineer": "aiko"}).status_code == 201


def test_a_callback_still_ringing_its_engineer_is_refused_without_a_way_round(
        app, twilio, ivr, http):
    """While aiko's phone rings for one callback, the desk's next with her is refused
    naming that ticket; ``engineers calls-ended`` would not end a callback nobody has
    answered, so the refusal does not send the desk there."""
    add_engineer(ivr)
    first = waiting_for_callback(twilio)
    second = waiting_for_callback(twilio, caller="+14155550111")
    place(app, first["ticket"], {"engineer": "aiko"})
    refused = place(app, second["ticket"], {"engineer": "aiko"})
    assert refused.get_json()["error"] == f"aiko is on a callback for ticket {first['ticket']}"


def test_a_callback_that_ended_while_the_database_was_away_does_not_keep_its_engineer_busy(
        app, twilio, ivr, http, dead, clock):
    """The customer pressed the key and talked to aiko, and the call ended, all while the
    database was away: the key and the legs' ends go to the spool. Once replayed, the
    callback is answered and over, ended when its legs said: aiko is free for the desk's
    next callback and the engineer line, not held "on a callback" for four hours."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    other = waiting_for_callback(twilio, caller="+14155550111")
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    engineer_sid = new_call_sid()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], engineer_sid)
    customer_sid = new_call_sid()
    greeting = customer_answers(twilio, dial_root, customer_sid)
    dead.post(greeting.find("Gather").get("action"), **leg(customer_sid, CALLER, US_LINE),
              Digits="1")
    clock.advance(minutes=6)
    ended = clock.now
    dead.post(dial_root.find("Dial/Number").get("statusCallback"),
              **{**leg(customer_sid, CALLER, US_LINE), "CallStatus": "completed"})
    dead.post(f"/voice/callback/status?attempt={attempt['id']}&leg=engineer",
              **{**leg(engineer_sid, ENGINEER_PHONE, US_LINE), "CallStatus": "completed"})
    clock.advance(minutes=10)
    ivr.service.spool.replay(ivr.service.replay)
    ticket, _, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and attempts == [("aiko", "answered")]
    with ivr.storage.transaction() as session:
        assert session.get(CallbackAttempt, attempt["id"]).ended_at == ended
    assert place(app, other["ticket"], {"engineer": "aiko"}).status_code == 201


def test_a_customer_who_did_not_answer_while_the_database_was_away_counts_as_missed(
        app, twilio, ivr, http, dead):
    """The customer's phone rang out while the database was away: the end of the leg goes
    to the spool, and once replayed the attempt is a miss like any other, counted towards
    the round, and the desk may place the next one."""
    add_engineer(ivr)
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    dead.post(dial_root.find("Dial/Number").get("statusCallback"),
              **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": "no-answer"})
    dead.post(dial_root.find("Dial/Number").get("statusCallback"),
              **{**leg(new_call_sid(), CALLER, US_LINE), "CallStatus": "ringing"})
    assert ivr.service.spool.depth() == 1  # only a leg's end is kept
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    ticket, assignment, attempts = state(ivr, waiting["ticket"])
    assert attempts == [("aiko", "no-answer")] and assignment.callback_failures == 1
    assert ticket.status == "callback_requested"
    assert place(app, waiting["ticket"], {"engineer": "aiko"}).status_code == 201


def test_an_engineer_who_says_her_unfinished_callback_ended_holds_without_being_asked_again(
        app, twilio, ivr, http):
    """aiko answered a callback's first leg on her laptop and the customer's phone was
    being dialled when the legs' reports stopped coming. Her mobile calls the engineer
    line, hears she is on another call and presses 1: nobody waits, so she holds, and
    the line's next look does not ask her again (a prompt that hangs up on a holding
    engineer who presses nothing); the next caller who comes is hers."""
    add_engineer(ivr, phone=None, client="aiko")
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    mobile = new_call_sid()
    refused = twiml(twilio.post("/voice/agent", **engineer_params(mobile, "client:aiko")))
    holding = twiml(twilio.post(refused.find("Gather").get("action"),
                                **engineer_params(mobile, "client:aiko"), Digits="1"))
    assert [e.tag for e in holding][-2:] == ["Pause", "Redirect"], spoken(holding)
    look = twiml(twilio.post(holding.find("Redirect").text,
                             **engineer_params(mobile, "client:aiko")))
    assert look.find("Gather") is None, spoken(look)
    caller = queued(twilio, 2, caller="+14155550111")
    taken = twiml(twilio.post(look.find("Redirect").text,
                              **engineer_params(mobile, "client:aiko")))
    assert taken.find("Dial/Queue").text == caller["queue"]


def test_a_customer_put_through_after_the_engineer_said_her_callback_ended_keeps_her_busy(
        app, twilio, ivr, http):
    """aiko's laptop is dialling a callback's customer. Her mobile calls the engineer line,
    hears she is on another call and presses 1 (that call has ended, she says), and holds.
    The customer then answers and presses the key: they are put through to her laptop, a
    conversation that began after what she said. Her mobile's next look must not bridge a
    caller to a phone she is not listening to, nor the desk ring her for another callback."""
    add_engineer(ivr, phone=None, client="aiko")
    waiting = waiting_for_callback(twilio)
    other = waiting_for_callback(twilio, caller="+14155550111")
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    mobile = new_call_sid()
    refused = twiml(twilio.post("/voice/agent", **engineer_params(mobile, "client:aiko")))
    holding = twiml(twilio.post(refused.find("Gather").get("action"),
                                **engineer_params(mobile, "client:aiko"), Digits="1"))
    assert holding.find("Dial") is None and holding.find("Redirect") is not None
    customer_put_through(twilio, dial_root)
    assert state(ivr, waiting["ticket"])[2] == [("aiko", "answered")]
    caller = queued(twilio, 2, caller="+14155550122")
    look = twiml(twilio.post(holding.find("Redirect").text,
                             **engineer_params(mobile, "client:aiko")))
    assert look.find("Dial") is None, digits_spoken(look)
    assert spoken(look.find("Gather")) == [
        ivr.catalogues["en-US"].text("agent_on_another_call", {})]
    refused = place(app, other["ticket"], {"engineer": "aiko"})
    assert refused.status_code == 409
    assert refused.get_json()["error"].startswith(
        f"aiko is on a callback for ticket {waiting['ticket']}")
    with ivr.storage.transaction() as session:
        assert session.scalars(select(Ticket).where(Ticket.number == caller["ticket"])) \
            .one().status == "in_queue"


def test_an_answer_replayed_after_the_engineer_said_her_callback_ended_keeps_it_ended(
        app, twilio, ivr, http, dead):
    """The customer pressed the key while the database was away (the answer is spooled),
    and the legs' ends were never heard. aiko's mobile, told she is on another call, says
    it has ended and holds. The answer replayed afterwards connects the ticket, and the
    conversation stays ended when she said: the next caller is hers."""
    add_engineer(ivr, phone=None, client="aiko")
    waiting = waiting_for_callback(twilio)
    attempt = place(app, waiting["ticket"], {"engineer": "aiko"}).get_json()
    _, dial_root = engineer_answers_and_presses_1(twilio, attempt["id"], new_call_sid())
    customer_sid = new_call_sid()
    greeting = customer_answers(twilio, dial_root, customer_sid)
    dead.post(greeting.find("Gather").get("action"), **leg(customer_sid, CALLER, US_LINE),
              Digits="1")
    mobile = new_call_sid()
    refused = twiml(twilio.post("/voice/agent", **engineer_params(mobile, "client:aiko")))
    holding = twiml(twilio.post(refused.find("Gather").get("action"),
                                **engineer_params(mobile, "client:aiko"), Digits="1"))
    assert holding.find("Dial") is None and holding.find("Redirect") is not None
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    ticket, _, attempts = state(ivr, waiting["ticket"])
    assert ticket.status == "connected" and attempts == [("aiko", "answered")]
    caller = queued(twilio, 2, caller="+14155550122")
    look = twiml(twilio.post(holding.find("Redirect").text,
                             **engineer_params(mobile, "client:aiko")))
    assert look.find("Dial/Queue").text == caller["queue"]
