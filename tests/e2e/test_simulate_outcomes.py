"""`simulate` says what the service decided for the call, as the calls table, the desk and
`tickets list` show it, for every plan and role of the demo directory and every way a
call ends; its text and its --json agree."""

import contextlib
import csv
import json
import re
import threading

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from ivr import create_app
from ivr.desk.directory import import_file
from ivr.sim.simulator import Simulator, WsgiTransport
from ivr.storage.models import Call, Ticket

from ..support import CALLER, DEMO_ACCOUNTS, TOKEN, US_LINE
from ..integration.test_routes import app_with

with open(DEMO_ACCOUNTS, newline="", encoding="utf-8") as f:
    USERS = list(csv.DictReader(f))

WRONG_KEY = "7401935#"


def decision(plan, role):
    """The channel policy of config/ivr.toml, as the README states it."""
    if role == "member" or plan == "free":
        return "rejected_self_service"
    if plan == "pro":
        return "rejected_web"
    return "routed"


def simulate(app, digits, *extra):
    """The outcome printed by the transcript and by --json, each with its call SID."""
    runner = app.test_cli_runner()
    text = runner.invoke(args=["simulate", "--to", US_LINE, "--digits", digits, *extra])
    assert text.exit_code == 0, text.output
    (sid,) = re.findall(r"^Call (CA[0-9a-f]{32}) ", text.output, re.M)
    (printed,) = re.findall(r"^Outcome: ([a-z_]+)", text.output, re.M)
    as_json = runner.invoke(args=["simulate", "--to", US_LINE, "--digits", digits, "--json",
                                  *extra])
    assert as_json.exit_code == 0, as_json.output
    result = json.loads(as_json.output)
    return (sid, printed, text.output), (result["call_sid"], result["outcome"], result)


def stored(ivr, sid):
    with ivr.storage.transaction() as session:
        call = session.scalars(select(Call).where(Call.call_sid == sid)).one()
        ticket = session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one_or_none()
        return call.outcome, ticket.status if ticket else None


@pytest.mark.parametrize("user", USERS, ids=[f"{u['plan']}-{u['role']}" for u in USERS])
def test_simulate_prints_the_services_decision_for_every_plan_and_role(app, ivr, user):
    expected = decision(user["plan"], user["role"])
    digits = f"2 {user['pmi']}# {user['host_key']}#" + (" 1" if expected == "routed" else "")
    for sid, printed, _ in simulate(app, digits):
        assert printed == expected, (user, printed)
        assert stored(ivr, sid)[0] == expected


@pytest.mark.parametrize("digits, expected", [
    ("2 5550100201# " + " ".join([WRONG_KEY, "5550100201#"] * 2) + " " + WRONG_KEY,
     "failed_auth"),
    ("- - -", "no_input"),
    ("5 5 5", "no_input"),
    ("2 5550100201# 12#  12# 12#", "no_input"),
    ("2 5550100201#", "abandoned"),
    ("2 5550100201# 9164023#", "abandoned"),
    ("", "abandoned"),
])
def test_simulate_prints_how_a_call_that_never_reached_a_decision_of_policy_ended(
        app, ivr, digits, expected):
    for sid, printed, _ in simulate(app, digits):
        assert printed == expected
        assert stored(ivr, sid)[0] == expected


def test_a_locked_pmi_is_a_failed_verification_even_with_the_right_key(app, ivr):
    wrong = " ".join(["5550100201#", WRONG_KEY] * 3)
    for _ in range(2):  # six failures: the PMI is locked
        app.test_cli_runner().invoke(args=["simulate", "--to", US_LINE, "--digits", "2 " + wrong])
    right = "2 " + " ".join(["5550100201#", "9164023#"] * 3)
    for sid, printed, _ in simulate(app, right):
        assert printed == "failed_auth"
        assert stored(ivr, sid) == ("failed_auth", None)


def test_a_routed_call_names_its_ticket_as_tickets_list_shows_it(app, ivr):
    (sid, printed, text), (json_sid, outcome, result) = simulate(app, "2 5550100201# 9164023# 2")
    assert (printed, outcome) == ("routed", "routed")
    listed = {t["call_sid"]: t for t in json.loads(app.test_cli_runner().invoke(
        args=["tickets", "list", "--json"]).output)}
    assert f"ticket {listed[sid]['number']}, priority 2" in text
    assert (result["ticket"], result["priority"]) == (listed[json_sid]["number"], 2)
    assert stored(ivr, sid) == ("routed", "in_queue")


def test_a_caller_who_asks_for_a_callback_is_told_apart_from_one_put_through(app, ivr):
    for sid, printed, _ in simulate(app, "2 5550100201# 9164023# 1 - 1"):
        assert printed == "callback"
        assert stored(ivr, sid) == ("routed", "callback_requested")
    for sid, printed, _ in simulate(app, "2 5550100201# 9164023# 1 -"):
        assert printed == "routed"
        assert stored(ivr, sid) == ("routed", "connected")


def test_a_caller_whose_tokens_run_out_in_the_queue_is_shown_answered_by_an_engineer(app):
    """As the README says: the transcript showed the caller's silence and then a hang-up,
    as if the service had hung up on them, and never that an engineer answered."""
    (_, _, text), (_, _, result) = simulate(app, "2 5550100201# 9164023# 1 -")
    lines = [line.strip() for line in text.splitlines()]
    waited = lines.index("caller presses nothing at wait-choice (prompt times out)")
    assert lines[waited + 1:waited + 3] == [
        "(an engineer answers)", "(hangup)"]
    kinds = [event["kind"] for event in result["events"]]
    assert kinds[-2:] == ["answered", "hangup"]
    left, _ = simulate(app, "2 5550100201# 9164023# 1 - 1")
    assert "engineer answers" not in left[2]


def test_a_transfer_to_another_extension_is_transferred(tmp_path, settings, clock):
    app = app_with(tmp_path, settings, clock, 'repeat_key = "*"',
                   'repeat_key = "*"\nextensions = [{ key = "1", dial = "+1.888.799.0125" }]')
    for sid, printed, _ in simulate(app, "1"):
        assert printed == "transferred"
        assert stored(app.extensions["ivr"], sid)[0] == "transferred"
    app.extensions["ivr"].storage.dispose()


def test_without_the_services_record_the_simulator_says_only_what_the_caller_heard(app):
    """Against a server whose database this process cannot read (simulate --url with
    another IVR_DATABASE_URL), the decision is unknown: the outcome is what was heard, and
    says so, rather than passing a guess for the service's decision."""
    result = Simulator(WsgiTransport(app), TOKEN, recorded=lambda sid: None).call(
        US_LINE, CALLER, ["2", "5550100101#", "3917462#"])
    assert (result.outcome, result.recorded) == ("hangup", False)
    result = Simulator(WsgiTransport(app), TOKEN).call(
        US_LINE, CALLER, ["2", "5550100101#", "3917462#"])
    assert (result.outcome, result.recorded) == ("hangup", False)


@contextlib.contextmanager
def served(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_simulate_url_reads_the_decision_from_the_database_the_server_shares(app, ivr):
    with served(app) as url:
        for sid, printed, text in simulate(app, "2 5550100101# 3917462#", "--url", url):
            assert printed == "rejected_web" and "as the caller heard it" not in text
            assert stored(ivr, sid)[0] == "rejected_web"


def test_simulate_url_against_another_database_says_the_outcome_is_only_what_was_heard(
        app, tmp_path, settings, clock):
    other = create_app(settings.model_copy(update={
        "database_url": f"sqlite:///{tmp_path}/other.db",
        "instance_path": tmp_path / "other"}), clock=clock)
    other_ivr = other.extensions["ivr"]
    other_ivr.storage.upgrade()
    import_file(DEMO_ACCOUNTS, other_ivr.storage, other_ivr.hasher, other_ivr.config.lengths)
    try:
        with served(other) as url:
            (_, printed, text), (_, outcome, result) = simulate(
                app, "2 5550100101# 3917462#", "--url", url)
    finally:
        other_ivr.storage.dispose()
    assert (printed, outcome, result["recorded"]) == ("hangup", "hangup", False)
    assert "as the caller heard it" in text and "IVR_DATABASE_URL" in text


def test_the_surge_checks_each_kind_of_call_against_the_services_record(
        tmp_path, settings, clock):
    """Pro owners sent to the help centre instead of the web form hear words and a hang-up
    as before; only the service's record shows the policy went wrong."""
    app = app_with(tmp_path, settings, clock, 'web = { plans = ["pro"]',
                   'web = { plans = ["education"]')
    out = app.test_cli_runner().invoke(args=["simulate", "--calls", "40", "--concurrency", "2",
                                             "--json"])
    app.extensions["ivr"].storage.dispose()
    assert out.exit_code == 1
    report = json.loads(out.output[out.output.index("{"):])
    assert report["by_kind"]["rejected_web"] and report["unexpected"]
    assert all(u.startswith("rejected_web call") and u.endswith(": rejected_self_service")
               for u in report["unexpected"])


def test_a_call_the_database_could_not_take_is_sent_to_the_fallback_queue_not_transferred(
        settings, clock, database_url, tmp_path):
    """With the database unreachable, /voice answers with the fallback: the caller goes to
    the fallback queue without a ticket. That is no transfer to another extension."""
    from ..support import unreachable_database_url

    dead = create_app(settings.model_copy(update={
        "database_url": unreachable_database_url(database_url, tmp_path)}), clock=clock)
    runner = dead.test_cli_runner()
    text = runner.invoke(args=["simulate", "--to", US_LINE, "--digits", "2"])
    as_json = runner.invoke(args=["simulate", "--to", US_LINE, "--digits", "2", "--json"])
    dead.extensions["ivr"].storage.dispose()
    assert text.exit_code == 0, text.output
    (printed,) = re.findall(r"^Outcome: ([a-z_]+)", text.output, re.M)
    result = json.loads(as_json.output[as_json.output.index("{"):])
    assert printed == result["outcome"] == "fallback"
    assert result["recorded"] is False and result["ticket"] is None


def test_the_transcript_and_json_show_the_callers_number_only_by_its_last_four_digits(app):
    """As the desk shows callers: the number given with --from may be a real phone (to get
    the text messages), and a transcript is pasted into tickets and chats."""
    runner = app.test_cli_runner()
    for extra in ([], ["--json"]):
        out = runner.invoke(args=["simulate", "--to", US_LINE, "--from", "+15105550177",
                                  "--digits", "2 5550100201# 9164023# 1", *extra])
        assert out.exit_code == 0, out.output
        assert "5105550177" not in out.output and "…0177" in out.output
