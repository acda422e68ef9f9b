"""The database goes away mid-call: verified callers are still routed, their tickets are
spooled to disk and replayed exactly once when the database is back."""

import contextlib
import datetime as dt
import logging
import threading
import time

import pytest
from sqlalchemy import func, select

from ivr.storage.models import Call, OutboxMessage, Ticket
from ivr.sim.simulator import new_call_sid

from ..support import BUSINESS_OWNER, postgres_admin, twiml


def verified(twilio, sid):
    """A call driven up to the priority prompt; returns that prompt's action URL."""
    params = twilio.call_params(sid)
    twilio.post("/voice", **params)
    twilio.post("/voice/menu", **params, Digits="2")
    twilio.post("/voice/pmi", **params, Digits=BUSINESS_OWNER[0])
    root = twiml(twilio.post("/voice/host-key", **params, Digits=BUSINESS_OWNER[1]))
    return root.find("Gather").get("action")


def count(ivr, model):
    with ivr.storage.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_verified_callers_are_routed_and_their_tickets_replayed_once(app, ivr, twilio, dead):
    spoken = {}
    for _ in range(3):
        sid = new_call_sid()
        action = verified(twilio, sid)
        started = time.monotonic()
        response = dead.post(action, **twilio.call_params(sid), Digits="1")
        assert time.monotonic() - started < 10  # well inside Twilio's 15 s
        root = twiml(response)
        spoken[sid] = [e.text for e in root.iter("say-as")][0]
        assert root.find("Enqueue").text == f"support-us.{spoken[sid]}"
        queue = {**twilio.call_params(sid), "QueueResult": "bridged", "QueueTime": "30"}
        after = twiml(dead.post(f"/voice/queue-result?ticket={spoken[sid]}&priority=1", **queue))
        assert after[-1].tag == "Hangup"
        dead.post("/voice/status", **{**twilio.call_params(sid), "CallStatus": "completed",
                                      "CallDuration": "95", "SequenceNumber": "4"})
    spool = ivr.service.spool
    assert spool.depth() == 9 and count(ivr, Ticket) == 0

    result = app.test_cli_runner().invoke(args=["spool", "replay"])
    assert "Replayed 9 records: 9 written, 0 already present" in result.output
    assert spool.depth() == 0
    with ivr.storage.transaction() as session:
        tickets = {t.call_sid: t for t in session.scalars(select(Ticket))}
        calls = {c.call_sid: c for c in session.scalars(select(Call))}
        texts = session.scalars(select(OutboxMessage)).all()
    assert {sid: t.number for sid, t in tickets.items()} == spoken
    for sid, ticket in tickets.items():
        assert (ticket.priority, ticket.target_response_minutes) == (1, 60)
        assert ticket.account_id == "demo-business" and ticket.acknowledged_at is not None
        assert ticket.status == "connected"  # in the queue, then answered, all while spooled
        # The queue the caller was put in, kept for the engineer line to dial.
        assert f"{ticket.queue_group}.{ticket.number}" == f"support-us.{spoken[sid]}"
        call = calls[sid]
        assert (call.outcome, call.twilio_status, call.duration_seconds) == ("routed", "completed", 95)
        assert (call.queue_result, call.queue_seconds) == ("bridged", 30)
        assert "spooled" in call.steps_reached
    assert len(texts) == 3 and all(t.body.startswith("Zoom Support: ticket") for t in texts)


def test_a_replay_cut_short_is_run_again_without_doubling_anything(app, ivr, twilio, dead):
    sid = new_call_sid()
    dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="2")
    spool = ivr.service.spool
    saved = spool.path.read_bytes()
    assert spool.replay(ivr.service.replay).applied == 1
    # As if the process had died after writing to the database but before deleting the file.
    spool.replaying.write_bytes(saved)
    again = spool.replay(ivr.service.replay)
    assert (again.read, again.applied, again.already_present) == (1, 0, 1)
    assert count(ivr, Ticket) == 1 and count(ivr, OutboxMessage) == 1


def test_a_caller_not_yet_verified_gets_the_fallback_during_an_outage(ivr, twilio, dead):
    root = twiml(dead.post("/voice", **twilio.call_params(new_call_sid())))
    assert [e.tag for e in root] == ["Say", "Enqueue"]
    assert ivr.service.spool.depth() == 0


def test_each_webhook_met_by_an_outage_logs_one_line_not_a_traceback(twilio, dead, caplog):
    """Every caller's step fails while the database is away: the operator reading the
    log gets a line per webhook saying so and why, not a stack trace each, as the
    engineer line and the sender already log it."""
    caplog.set_level(logging.INFO, logger="ivr")
    params = twilio.call_params(new_call_sid())
    for path, digits in (("/voice", None), ("/voice/menu", "2"), ("/voice/pmi", "5550100201")):
        root = twiml(dead.post(path, **params, **({"Digits": digits} if digits else {})))
        assert [e.tag for e in root] == ["Say", "Enqueue"]
    failed = [r for r in caplog.records if r.name == "ivr.http"]
    assert len(failed) == 3 and not [r for r in failed if r.exc_info or r.levelno >= logging.ERROR]
    assert all("database unreachable" in r.getMessage() for r in failed)
    assert not any("5550100201" in r.getMessage() for r in caplog.records)


def test_a_forged_pass_is_not_routed_through_the_spool(ivr, twilio, dead):
    sid = new_call_sid()
    action = verified(twilio, sid)
    forged = action.replace("&t=", "&t=0")
    root = twiml(dead.post(forged[:forged.index("&t=") + 35], **twilio.call_params(sid), Digits="1"))
    assert [e.tag for e in root] == ["Say", "Enqueue"]  # the plain fallback
    assert root.find("Enqueue").text == ivr.config.service.fallback_queue
    assert ivr.service.spool.depth() == 0


def test_healthz_reports_the_spool_depth(app, ivr, twilio, dead):
    sid = new_call_sid()
    dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="3")
    body = app.test_client().get("/healthz").get_json()
    assert (body["spool_depth"], body["spool_set_aside"]) == (1, 0)
    unhealthy = dead.client.get("/healthz")
    assert unhealthy.status_code == 503 and unhealthy.get_json()["database"].startswith("unreachable")


def test_a_repeated_priority_webhook_during_an_outage_keeps_the_spoken_number(app, ivr, twilio,
                                                                             dead):
    sid = new_call_sid()
    action = verified(twilio, sid)
    numbers = set()
    for _ in range(2):
        root = twiml(dead.post(action, **twilio.call_params(sid), Digits="1"))
        numbers.add(root.find(".//say-as").text)
    # ... and a worker that has the database again answers with the same number too.
    root = twiml(twilio.post(action, **twilio.call_params(sid), Digits="1"))
    numbers.add(root.find(".//say-as").text)
    assert len(numbers) == 1
    result = ivr.service.spool.replay(ivr.service.replay)
    assert (result.read, result.already_present) == (2, 2)
    with ivr.storage.transaction() as session:
        assert session.scalars(select(Ticket.number)).all() == list(numbers)


def test_a_record_that_cannot_be_applied_is_set_aside_and_the_rest_replayed(app, ivr, twilio, dead):
    sid = new_call_sid()
    dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="1")
    spool = ivr.service.spool
    spool.append({"kind": "ticket", "call_sid": "CA" + "e" * 32})  # fields missing
    with open(spool.path, "a") as handle:
        handle.write('{"kind": "tick')  # cut short by a crash
    result = spool.replay(ivr.service.replay)
    assert (result.read, result.applied, result.unreadable) == (3, 1, 2)
    assert len(spool.failed.read_text().splitlines()) == 2 and spool.depth() == 0
    assert count(ivr, Ticket) == 1
    # Set aside is not forgotten: the health check, the metrics and the command say so.
    assert app.test_client().get("/healthz").get_json()["spool_set_aside"] == 2
    scraped = app.test_client().get("/metrics").get_data(as_text=True)
    assert "\nivr_spool_set_aside 2.0\n" in scraped and "\nivr_spool_depth 0.0\n" in scraped
    status = app.test_cli_runner().invoke(args=["spool", "status"]).output
    assert "0 records waiting" in status and "2 records set aside" in status
    assert str(spool.failed) in status


def test_the_replay_command_names_the_set_aside_file_only_when_it_set_something_aside(app, ivr):
    spool = ivr.service.spool
    runner = app.test_cli_runner()
    result = runner.invoke(args=["spool", "replay"])
    assert result.exit_code == 0
    assert result.output.strip() == "Replayed 0 records: 0 written, 0 already present, 0 set aside."
    assert not spool.failed.exists()
    spool.append({"kind": "ticket", "call_sid": "CA" + "e" * 32})  # fields missing
    result = runner.invoke(args=["spool", "replay"])
    assert result.output.strip() == ("Replayed 1 records: 0 written, 0 already present, "
                                     f"1 set aside (see {spool.failed}).")
    assert len(spool.failed.read_text().splitlines()) == 1


def test_a_replay_while_the_database_is_still_away_keeps_every_record(ivr, twilio, dead, app):
    from ivr.storage import DATABASE_DOWN, database_unavailable

    sid = new_call_sid()
    dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="1")
    dead_service = dead.client.application.extensions["ivr"].service
    with pytest.raises(DATABASE_DOWN):
        dead_service.spool.replay(dead_service.replay, transient=database_unavailable)
    assert ivr.service.spool.depth() == 1
    # The operator's command says so in a line, without a traceback.
    result = dead.client.application.test_cli_runner().invoke(args=["spool", "replay"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "the database is unreachable" in result.output and "stays in the spool" in result.output
    assert ivr.service.spool.depth() == 1
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1


def test_a_record_cut_short_by_a_crash_does_not_take_the_next_one_with_it(ivr, twilio, dead):
    spool = ivr.service.spool
    spool.folder.mkdir(parents=True, exist_ok=True)
    with open(spool.path, "a") as handle:  # a worker killed half-way through its write
        handle.write('{"kind": "ticket", "call_sid": "CA')
    sid = new_call_sid()
    root = twiml(dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="1"))
    assert root.find("Enqueue") is not None
    result = spool.replay(ivr.service.replay)
    assert (result.applied, result.unreadable) == (1, 1)
    with ivr.storage.transaction() as session:
        assert session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one()


def test_a_write_that_falls_short_is_finished_or_undone_never_half_kept(ivr, twilio, dead,
                                                                       monkeypatch):
    from ivr.voice import spool as spool_module

    write = spool_module.os.write
    sid = new_call_sid()
    action = verified(twilio, sid)
    # A disk filling up: each write takes half of what it is given.
    monkeypatch.setattr(spool_module.os, "write", lambda fd, data: write(fd, data[:len(data) // 2 or 1]))
    root = twiml(dead.post(action, **twilio.call_params(sid), Digits="1"))
    heard = root.find(".//say-as").text
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    with ivr.storage.transaction() as session:
        assert session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one().number == heard

    # A full disk: nothing is written, the file is left whole, the caller is not told a number.
    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", full)
    other = new_call_sid()
    action = verified(twilio, other)
    before = ivr.service.spool.path.read_bytes() if ivr.service.spool.path.exists() else b""
    root = twiml(dead.post(action, **twilio.call_params(other), Digits="1"))
    assert root.find(".//say-as") is None  # the fallback's answer, with no ticket number
    after = ivr.service.spool.path.read_bytes() if ivr.service.spool.path.exists() else b""
    assert after == before


@pytest.mark.parametrize("result, status", [("hangup", "open"), ("queue-full", "callback_requested"),
                                            ("bridged", "connected")])
def test_a_wait_that_ended_before_the_replay_moves_the_replayed_ticket(ivr, twilio, dead,
                                                                      clock, result, status):
    """The database is back before the spool is replayed (or the spool is on another
    host): the end of the caller's wait is stored live on a call with no ticket yet. The
    replayed ticket then goes where that end sends it, not stay in the queue for good."""
    sid = new_call_sid()
    root = twiml(dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="1"))
    number = root.find(".//say-as").text
    twilio.post(f"/voice/queue-result?ticket={number}&priority=1", **twilio.call_params(sid),
                QueueResult=result, QueueTime="40")
    clock.advance(hours=3)  # the replay comes hours later
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one()
        assert (ticket.number, ticket.status) == (number, status)
        assert session.get(Call, sid).queue_result == result
        if status == "connected":  # when the wait ended, not when the replay ran
            assert ticket.connected_at == ticket.created_at + dt.timedelta(seconds=40)


def test_a_call_row_locked_past_the_limit_routes_the_caller_through_the_spool(
        app, ivr, twilio, database_url):
    """A transaction stuck holding a call's row (a worker whose connection hung mid-
    webhook) must not hold the caller past Twilio's 15 s: after the lock wait the
    database counts as unreachable, as SQLite's busy timeout makes it, and the verified
    caller is routed with the ticket spooled."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's lock wait has a test of its own (test_sqlite_locks.py)")
    sid = new_call_sid()
    action = verified(twilio, sid)
    holder = ivr.storage.engine.connect()
    answers = []
    webhook = threading.Thread(target=lambda: answers.append(
        twilio.post(action, **twilio.call_params(sid), Digits="1")))
    try:
        holder.begin()
        holder.exec_driver_sql("SELECT 1 FROM calls WHERE call_sid = %(sid)s FOR UPDATE",
                               {"sid": sid})
        webhook.start()
        webhook.join(10)  # well inside Twilio's 15 s
        answered_in_time = bool(answers)
    finally:
        holder.rollback()
        holder.close()
        webhook.join(30)
    assert answered_in_time, "the webhook was still waiting for the row lock"
    root = twiml(answers[0])
    number = [e.text for e in root.iter("say-as")][0]
    assert root.find("Enqueue").text == f"support-us.{number}"
    assert ivr.service.spool.depth() == 1 and count(ivr, Ticket) == 0
    result = app.test_cli_runner().invoke(args=["spool", "replay"])
    assert "1 written" in result.output
    with ivr.storage.transaction() as session:
        assert [t.number for t in session.scalars(select(Ticket))] == [number]


def test_a_full_queue_met_after_the_database_is_back_but_before_the_replay_keeps_the_ticket(
        ivr, twilio, dead):
    """Routed during the outage, the caller's ticket is still in the spool when the
    database answers again and the queue turns out full: they are told their ticket is
    kept, with the number they heard, as they would have been a moment earlier."""
    sid = new_call_sid()
    params = twilio.call_params(sid)
    routed = twiml(dead.post(verified(twilio, sid), **params, Digits="1"))
    number = [e.text for e in routed.iter("say-as")][0]
    result = routed.find("Enqueue").get("action")
    full = {**params, "QueueResult": "queue-full", "QueueTime": "3"}
    during = twiml(dead.post(result, **full))
    after = twiml(twilio.post(result, **full))
    assert [e.text for e in after.iter("say-as")] == [e.text for e in during.iter("say-as")]
    assert number in [e.text for e in after.iter("say-as")]
    # A number the spool did not derive from this call is not read back.
    other = twiml(twilio.post(result.replace(number, "12345678"), **full))
    assert "12345678" not in [e.text for e in other.iter("say-as")]


JAPAN = "+81531320070"


def english_caller_routed_on_the_japan_line(twilio, sid):
    """A caller on the Japan line who chose English (key 9), routed; the routing reply."""
    params = twilio.call_params(sid, to=JAPAN)
    twilio.post("/voice", **params)
    twilio.post("/voice/menu?p=0-0-0", **params, Digits="9")
    for path, digits in (("/voice/menu", "2"), ("/voice/pmi", BUSINESS_OWNER[0])):
        twilio.post(path, **params, Digits=digits)
    root = twiml(twilio.post("/voice/host-key", **params, Digits=BUSINESS_OWNER[1]))
    return params, twiml(twilio.post(root.find("Gather").get("action"), **params, Digits="1"))


def languages(root):
    return {e.get("language") for e in root.iter("Say")}


def test_a_caller_who_chose_english_keeps_it_in_the_queue_while_the_database_is_away(
        twilio, dead):
    params, routed = english_caller_routed_on_the_japan_line(twilio, new_call_sid())
    assert languages(routed) == {"en-US"}
    enqueue = routed.find("Enqueue")
    position = {**params, "QueuePosition": "1", "AvgQueueTime": "0"}
    waiting = twiml(dead.post(enqueue.get("waitUrl"), **position))
    assert languages(waiting) == {"en-US"}
    number = waiting.find("Gather").get("action")
    again = twiml(dead.post(number, **params, Digits="*"))  # the ticket number once more
    assert languages(again) == {"en-US"}
    other_key = twiml(dead.post(number, **params, Digits="5"))
    assert languages(twiml(dead.post(other_key.find("Redirect").text, **position))) == {"en-US"}
    full = twiml(dead.post(enqueue.get("action"), **params, QueueResult="queue-full",
                           QueueTime="3"))
    assert languages(full) == {"en-US"}


@pytest.mark.parametrize("digits", ["7", None], ids=["wrong key", "silence"])
def test_wrong_keys_or_silence_at_the_priority_prompt_end_the_call_during_an_outage(
        ivr, twilio, dead, digits):
    """Without the database the action URL counts the tries: after the configured number
    the call ends politely, as it does with the database, instead of asking for ever."""
    sid = new_call_sid()
    action = verified(twilio, sid)
    tries = ivr.config.retries.prompt_attempts
    for n in range(1, tries + 2):
        extra = {"Digits": digits} if digits else {}
        root = twiml(dead.post(action, **twilio.call_params(sid), **extra))
        if root.find("Gather") is None:
            break
        action = root.find("Gather").get("action") if digits else root.find("Redirect").text
    assert n == tries and root[-1].tag == "Hangup"


@pytest.mark.parametrize("query", [
    {"a": "٢", "f": "10", "t": "x"},                  # a digit, but not an ASCII one
    {"a": "2", "f": "10", "t": "é" * 16},             # a tag with non-ASCII characters
    {"a": "2", "f": "10", "t": ""},
    {"a": "2", "f": "10", "e": "١٧٩٩٩٩٩٩٩٩", "t": "0" * 32},  # a time in other digits
    {"a": "2", "f": "10", "e": "9" * 40, "t": "0" * 32},      # a time past any clock
])
def test_a_signed_pass_with_characters_it_never_carries_is_no_pass_not_an_error(ivr, query):
    assert ivr.service.outage.check_pass("CA" + "0" * 32, query) is None


def test_a_priority_pressed_once_the_database_is_back_is_taken_after_a_wrong_key_during_the_outage(
        ivr, twilio, dead):
    sid = new_call_sid()
    params = twilio.call_params(sid)
    again = twiml(dead.post(verified(twilio, sid), **params, Digits="7"))  # asked again
    root = twiml(twilio.post(again.find("Gather").get("action"), **params, Digits="1"))
    assert root.find("Enqueue") is not None, [e.tag for e in root]


def test_a_replay_stopped_by_the_database_going_away_again_sets_no_record_aside_twice(
        ivr, twilio, dead):
    from sqlalchemy.exc import OperationalError

    from ivr.storage import DATABASE_DOWN, database_unavailable

    spool = ivr.service.spool
    spool.append({"kind": "ticket", "call_sid": "CA" + "e" * 32})  # fields missing
    sid = new_call_sid()
    dead.post(verified(twilio, sid), **twilio.call_params(sid), Digits="1")
    flaps = []

    def apply(record):  # the database drops once more while the good ticket is written
        if record.get("call_sid") == sid and not flaps:
            flaps.append(record)
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return ivr.service.replay(record)

    with pytest.raises(DATABASE_DOWN):
        spool.replay(apply, transient=database_unavailable)
    assert spool.replay(apply, transient=database_unavailable).applied == 1
    assert spool.set_aside() == 1


def test_a_caller_who_chose_english_hears_the_outage_apology_in_english(twilio, dead):
    params = twilio.call_params(new_call_sid(), to=JAPAN)
    twiml(twilio.post("/voice", **params))
    menu = twiml(twilio.post("/voice/menu?p=0-0-0", **params, Digits="9"))
    assert languages(menu) == {"en-US"}
    root = twiml(dead.post(menu.find("Gather").get("action"), **params, Digits="2"))
    assert [e.tag for e in root] == ["Say", "Enqueue"]
    assert languages(root) == {"en-US"}


def test_a_replay_into_a_database_without_tables_keeps_the_spool(settings, clock):
    """`spool replay` (or the sender) against a database with no schema yet (a restore
    under way, init-db not run) stops and keeps every record, saying what to run; the
    records are not set aside for the operator to enter again by hand."""
    from ivr import create_app

    app = create_app(settings, clock=clock)  # no upgrade: no tables
    spool = app.extensions["ivr"].service.spool
    spool.append({"v": 2, "kind": "status", "call_sid": "CA" + "0" * 32,
                  "status": "completed", "duration": 30, "sequence": 3,
                  "at": "2026-11-25T12:00:00+00:00", "to": "+18887999666",
                  "caller": "+14155550100"})
    result = app.test_cli_runner().invoke(args=["spool", "replay"])
    assert result.exit_code == 1 and "run `flask --app app init-db` first" in result.output
    assert (spool.set_aside(), spool.depth()) == (0, 1)
    app.extensions["ivr"].storage.dispose()


def test_a_priority_request_replayed_long_after_its_call_ended_routes_nobody_during_an_outage(
        ivr, twilio, dead, clock):
    """The pass proves a verified caller is at the priority prompt now, not once: a copy of
    that signed request sent an hour after the caller hung up, while the database is away,
    gets the plain fallback. Routed, it would put a ticket for a call that ended without
    one in the spool, and its replay would text the caller about it."""
    sid = new_call_sid()
    action = verified(twilio, sid)
    twilio.post("/voice/status", **{**twilio.call_params(sid), "CallStatus": "completed",
                                    "CallDuration": "40", "SequenceNumber": "3"})
    clock.advance(hours=1)
    root = twiml(dead.post(action, **twilio.call_params(sid), Digits="1"))
    assert [e.tag for e in root] == ["Say", "Enqueue"]
    assert root.find("Enqueue").text == ivr.config.service.fallback_queue
    assert ivr.service.spool.depth() == 0
    ivr.service.spool.replay(ivr.service.replay)
    assert count(ivr, Ticket) == 0 and count(ivr, OutboxMessage) == 0


def test_a_caller_asked_again_during_an_outage_gets_a_pass_of_its_own(ivr, twilio, dead, clock):
    """Each prompt's pass is good from when that prompt was asked: a caller who presses a
    wrong key now and then is still routed when the right one comes, however long ago the
    database asked first."""
    sid = new_call_sid()
    action = verified(twilio, sid)
    for _ in range(2):
        clock.advance(minutes=10)
        root = twiml(dead.post(action, **twilio.call_params(sid), Digits="7"))
        action = root.find("Gather").get("action")
    clock.advance(minutes=10)
    root = twiml(dead.post(action, **twilio.call_params(sid), Digits="1"))
    assert root.find("Enqueue").text.startswith("support-us.")
    assert ivr.service.spool.depth() == 1


def test_a_caller_who_failed_verification_once_is_routed_by_a_key_pressed_after_the_outage(
        ivr, twilio, dead):
    """The prompt asked during the outage names the failed verifications the database
    holds for the call, so the answer to it is taken when the database is back, not
    dropped as a stale request and the priority menu played once more."""
    sid = new_call_sid()
    params = twilio.call_params(sid)
    twilio.post("/voice", **params)
    twilio.post("/voice/menu", **params, Digits="2")
    twilio.post("/voice/pmi", **params, Digits=BUSINESS_OWNER[0])
    twilio.post("/voice/host-key", **params, Digits="1111111")  # a wrong key first
    twilio.post("/voice/pmi", **params, Digits=BUSINESS_OWNER[0])
    root = twiml(twilio.post("/voice/host-key", **params, Digits=BUSINESS_OWNER[1]))
    again = twiml(dead.post(root.find("Gather").get("action"), **params, Digits="7"))
    root = twiml(twilio.post(again.find("Gather").get("action"), **params, Digits="1"))
    assert root.find("Enqueue") is not None, [e.tag for e in root]


def calls_counted(outcome):
    from ivr import metrics

    return metrics.CALLS.labels("United States", outcome)._value.get()


@pytest.mark.parametrize("database_back", [True, False],
                         ids=["the end reported live", "the end spooled too"])
def test_a_call_routed_through_the_spool_is_counted_routed_not_abandoned(
        ivr, twilio, dead, database_back):
    """Routed during the outage, the caller waits, is answered and hangs up. With the
    database back before the spool is replayed, the end of the call is stored live on a
    call with no outcome yet: that caller did not abandon the call, and
    ``ivr_calls_total`` must not tell an operator looking at the outage that they did.
    The replay, which gives the call its outcome, counts it routed, once."""
    sid = new_call_sid()
    params = twilio.call_params(sid)
    routed = twiml(dead.post(verified(twilio, sid), **params, Digits="1"))
    abandoned, routed_before = calls_counted("abandoned"), calls_counted("routed")
    after = twilio if database_back else dead
    after.post(routed.find("Enqueue").get("action"), **params, QueueResult="bridged",
               QueueTime="30")
    after.post("/voice/status", **{**params, "CallStatus": "completed", "CallDuration": "95",
                                   "SequenceNumber": "4"})
    ivr.service.spool.replay(ivr.service.replay)
    ivr.service.spool.replay(ivr.service.replay)  # nothing left: nothing counted again
    with ivr.storage.transaction() as session:
        call = session.get(Call, sid)
        assert (call.outcome, call.twilio_status, call.queue_result) == \
            ("routed", "completed", "bridged")
    assert calls_counted("abandoned") == abandoned
    assert calls_counted("routed") == routed_before + 1


@contextlib.contextmanager
def every_connection_taken(ivr, monkeypatch):
    """Every connection of the process's pool in use (other requests' slow statements):
    a request waits the pool's time-out for one, here 0.2 s, then is refused one."""
    pool = ivr.storage.engine.pool
    monkeypatch.setattr(pool, "_timeout", 0.2)
    held = [ivr.storage.engine.connect() for _ in range(pool.size() + pool._max_overflow)]
    try:
        yield
    finally:
        for connection in held:
            connection.close()


def routed_through_the_spool(app, ivr, root):
    """The verified caller was told a ticket number and queued under it, with the ticket
    spooled, not stored; the replay stores it under that number."""
    numbers = [e.text for e in root.iter("say-as")]
    assert numbers, "the caller was not told a ticket number"
    assert root.find("Enqueue").text == f"support-us.{numbers[0]}"
    assert ivr.service.spool.depth() == 1 and count(ivr, Ticket) == 0
    assert "1 written" in app.test_cli_runner().invoke(args=["spool", "replay"]).output
    with ivr.storage.transaction() as session:
        assert [t.number for t in session.scalars(select(Ticket))] == [numbers[0]]


def test_a_status_callback_met_by_a_full_connection_pool_is_spooled_not_lost(
        ivr, twilio, call_sid, monkeypatch):
    twilio.post("/voice", **twilio.call_params(call_sid))
    params = {**twilio.call_params(call_sid), "CallStatus": "completed", "CallDuration": "9"}
    with every_connection_taken(ivr, monkeypatch):
        assert twilio.post("/voice/status", **params).status_code == 200
    assert ivr.service.spool.depth() == 1
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    with ivr.storage.unit_of_work(readonly=True) as uow:
        assert uow.calls.load(call_sid, lock=False).values["twilio_status"] == "completed"


def test_a_verified_caller_met_by_a_full_connection_pool_is_routed_through_the_spool(
        app, ivr, twilio, monkeypatch):
    sid = new_call_sid()
    action = verified(twilio, sid)
    with every_connection_taken(ivr, monkeypatch):
        root = twiml(twilio.post(action, **twilio.call_params(sid), Digits="1"))
    routed_through_the_spool(app, ivr, root)


SLOW_TICKETS = """
CREATE FUNCTION slow_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(4); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION slow_ticket();
"""


def test_a_statement_slower_than_the_limit_routes_the_caller_through_the_spool(
        short_statements, app, ivr, twilio):
    """A database that answers too slowly must not hold a caller past Twilio's 15 s:
    Twilio then plays its own fallback while the transaction goes on to commit a ticket
    the caller never heard. The statement is cancelled at the limit and the verified
    caller is routed with the ticket spooled, as for a database that does not answer."""
    sid = new_call_sid()
    action = verified(twilio, sid)
    with postgres_admin(ivr.storage.engine.url) as admin:
        admin.exec_driver_sql(SLOW_TICKETS)
    try:
        root = twiml(twilio.post(action, **twilio.call_params(sid), Digits="1"))
    finally:
        with postgres_admin(ivr.storage.engine.url) as admin:
            admin.exec_driver_sql("DROP TRIGGER slow ON tickets")
    routed_through_the_spool(app, ivr, root)


def test_a_pass_from_one_call_routes_no_other_call_during_an_outage(ivr, twilio, dead):
    """The pass vouches for the call it was given to: an unverified call posting a
    verified call's priority URL (its pass and all) while the database is away gets the
    plain fallback, and nothing reaches the spool in the verified account's name."""
    action = verified(twilio, new_call_sid())
    stranger = new_call_sid()
    root = twiml(dead.post(action, **twilio.call_params(stranger, caller="+12025550177"),
                           Digits="1"))
    assert [e.tag for e in root] == ["Say", "Enqueue"]
    assert root.find("Enqueue").text == ivr.config.service.fallback_queue
    assert ivr.service.spool.depth() == 0
