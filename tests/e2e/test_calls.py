"""Whole calls through the simulator, as Twilio would make them."""

import json

import pytest
from sqlalchemy import select

from ivr.storage.models import Call, OutboxMessage, Ticket

from ..support import (BUSINESS_MEMBER, BUSINESS_OWNER, CALLER, DEMO_ACCOUNTS, FREE_OWNER,
                       PRO_OWNER)

LINES = [
    ("+1.888.799.9666", "en-US", "support-us"),
    ("+61.1800.768.027", "en-AU", "support-apac"),
    ("+33.800.94.64.64", "fr-FR", "support-emea"),
    ("+91.800.050.2040", "en-IN", "support-apac"),
    ("+81.053.132.0070", "ja-JP", "support-jp"),
    ("+64.800.475.039", "en-NZ", "support-apac"),
    ("+65.800.321.1249", "en-GB", "support-apac"),
    ("+44.800.368.7314", "en-GB", "support-emea"),
    ("+44.20.7039.8961", "en-GB", "support-emea"),
]


def owner_digits(priority, who=BUSINESS_OWNER):
    return ["2", f"{who[0]}#", f"{who[1]}#", str(priority)]


def rows(ivr, model):
    with ivr.storage.transaction() as session:
        return session.scalars(select(model)).all()


@pytest.mark.parametrize("number, language, queue", LINES)
@pytest.mark.parametrize("priority, target", [(1, 60), (2, 240), (4, 1440)])
def test_on_every_regional_number_an_eligible_owner_reaches_the_queue_with_a_ticket(
        simulator, ivr, number, language, queue, priority, target):
    result = simulator.call(number, CALLER, owner_digits(priority))
    assert result.outcome == "routed" and result.route["queue"] == f"{queue}.{result.ticket}"
    (ticket,) = rows(ivr, Ticket)
    assert (result.ticket, result.priority) == (ticket.number, priority)
    assert ticket.target_response_minutes == target and ticket.status == "in_queue"
    spoken = [e for e in result.events if e.kind == "say"]
    english_offer = [e for e in spoken if e.text.startswith("For English")]
    assert {e.language for e in spoken if e not in english_offer} == {language}
    assert " ".join(ticket.number) in " ".join(result.said())


def test_the_japan_line_switches_to_english_on_9(simulator, ivr):
    result = simulator.call("+81531320070", CALLER, ["9"] + owner_digits(1))
    assert result.outcome == "routed"
    after_switch = [e for e in result.events if e.kind == "say"][5:]
    assert after_switch and {e.language for e in after_switch} == {"en-US"}
    (call,) = rows(ivr, Call)
    assert call.language == "en-US"
    (sms,) = rows(ivr, OutboxMessage)
    assert sms.body.startswith("Zoom Support: ticket")


@pytest.mark.parametrize("who, outcome, template, link", [
    (PRO_OWNER, "rejected_web", "sms_web", "web_ticket"),
    (FREE_OWNER, "rejected_self_service", "sms_self_service", "help_center"),
    (BUSINESS_MEMBER, "rejected_self_service", "sms_self_service", "help_center"),
])
def test_each_rejected_tier_hears_its_guidance_and_gets_its_sms_but_no_ticket(
        simulator, ivr, who, outcome, template, link):
    result = simulator.call("+18887999666", CALLER, owner_digits(1, who)[:3])
    assert result.outcome == outcome and result.ticket is None
    (call,) = rows(ivr, Call)
    assert call.outcome == outcome
    (sms,) = rows(ivr, OutboxMessage)
    assert sms.template == template and getattr(ivr.config.links, link) in sms.body
    assert rows(ivr, Ticket) == []


def test_three_wrong_host_keys_hang_up_with_failed_auth(simulator, ivr):
    digits = ["2"] + [f"{BUSINESS_OWNER[0]}#", "7401935#"] * 3
    result = simulator.call("+18887999666", CALLER, digits)
    assert result.outcome == "failed_auth"
    assert rows(ivr, Call)[0].outcome == "failed_auth"


def test_a_caller_who_presses_nothing_is_reprompted_then_let_go(simulator, ivr):
    result = simulator.call("+18887999666", CALLER, ["-", "-", "-"])
    assert [e.kind for e in result.events].count("timeout") == 3
    assert result.said()[-1].startswith("We didn't get an answer we could use")
    assert rows(ivr, Call)[0].outcome == "no_input"


def test_a_caller_who_presses_only_wrong_keys_is_not_told_nothing_was_heard(simulator, ivr):
    """The goodbye after the last try holds for silence and wrong keys alike."""
    result = simulator.call("+18887999666", CALLER, ["5", "5", "5"])
    assert result.outcome == "no_input"
    goodbye = result.said()[-1]
    assert goodbye.startswith("We didn't get an answer we could use")
    assert "receive a response" not in goodbye


def test_a_caller_who_hangs_up_at_the_host_key_is_abandoned_there(simulator, ivr):
    result = simulator.call("+18887999666", CALLER, ["2", f"{BUSINESS_OWNER[0]}#"])
    assert result.outcome == "abandoned"
    call = rows(ivr, Call)[0]
    assert (call.outcome, call.abandoned_at_step) == ("abandoned", "host_key")


def test_cli_simulate_and_tickets_list_json(app, ivr):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["simulate", "--to", "+33800946464", "--digits",
                              " ".join(owner_digits(2)), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["outcome"] == "routed"
    listed = runner.invoke(args=["tickets", "list", "--json"])
    (ticket,) = json.loads(listed.output)
    assert ticket["number"] == result["ticket"] and ticket["region"] == "France"
    for key in ("id", "number", "call_sid", "account_id", "user_email", "priority",
                "target_response_minutes", "region", "status", "created_at", "acknowledged_at"):
        assert key in ticket


def test_cli_simulate_prints_a_readable_transcript(app):
    out = app.test_cli_runner().invoke(
        args=["simulate", "--to", "+81531320070", "--digits", " ".join(owner_digits(1))])
    assert out.exit_code == 0
    assert "[ja-JP Polly.Mizuki]" in out.output and "caller presses 2 at menu" in out.output
    assert "Outcome: routed; ticket" in out.output


def test_init_db_is_idempotent(app):
    runner = app.test_cli_runner()
    for _ in range(2):
        result = runner.invoke(args=["init-db"])
        assert result.exit_code == 0 and "up to date" in result.output


def test_a_bad_accounts_csv_is_refused_naming_the_row_and_nothing_is_imported(app, ivr, tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text("account_id,plan,user_email,role,pmi,host_key\n"
                    "a1,business,new.one@example.com,owner,5551234567,740193\n"
                    "a2,platinum,new.two@example.com,owner,5551234568,740193\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["accounts", "import", str(path)])
    assert result.exit_code != 0
    assert "row 3: plan 'platinum' is not one of" in result.output
    with ivr.storage.transaction() as session:
        from ivr.storage.models import Account
        assert session.scalars(select(Account).where(Account.user_email == "new.one@example.com")).first() is None


def test_importing_again_updates_users_and_stores_only_keyed_hashes(app, ivr, tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text("account_id,plan,user_email,role,pmi,host_key\n"
                    f"demo-business,enterprise,owner.business@example.com,owner,{BUSINESS_OWNER[0]},5820461\n",
                    encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["accounts", "import", str(path)])
    assert "0 created, 1 updated" in result.output
    from ivr.storage.models import Account
    with ivr.storage.transaction() as session:
        account = session.scalars(select(Account).where(Account.pmi == BUSINESS_OWNER[0])).one()
    assert account.plan == "enterprise" and "5820461" not in account.host_key_hash
    assert len(account.host_key_hash) == 64


def test_importing_the_same_directory_again_says_nothing_changed(app, ivr, tmp_path):
    """make run imports the demo directory at every start: rows that are already there
    as the file has them are unchanged, not updated."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["accounts", "import", str(DEMO_ACCOUNTS)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Imported {DEMO_ACCOUNTS}: 0 created, 0 updated, 18 unchanged."
    lines = DEMO_ACCOUNTS.read_text(encoding="utf-8-sig").splitlines()
    first = lines[1].split(",")
    first[1] = "enterprise"  # the plan
    changed = [lines[0], ",".join(first), *lines[2:]]
    path = tmp_path / "accounts.csv"
    path.write_text("\n".join(changed) + "\n", encoding="utf-8")
    result = runner.invoke(args=["accounts", "import", str(path)])
    assert result.output.strip() == f"Imported {path}: 0 created, 1 updated, 17 unchanged."


def test_the_surge_simulator_drives_a_mix_of_calls_and_reports_per_step_latency(app):
    out = app.test_cli_runner().invoke(
        args=["simulate", "--calls", "60", "--concurrency", "4", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output[out.output.index("{"):])
    assert report["calls"] == 60 and report["error_count"] == 0 and report["unexpected_count"] == 0
    assert set(report["by_kind"]) == {"eligible", "rejected_web", "rejected_self_service",
                                      "failed_auth", "abandoned"}
    assert {"/voice", "/voice/menu", "/voice/pmi", "/voice/host-key", "/voice/priority",
            "/voice/status"} <= set(report["latency_ms"])
    # every request the calls made is in the per-step table once, and in its "all" row
    steps = {step: figures for step, figures in report["latency_ms"].items() if step != "all"}
    assert sum(figures["count"] for figures in steps.values()) \
        == report["latency_ms"]["all"]["count"] == report["requests"] > 60


def test_the_surge_simulator_flags_unexpected_outcomes(app, ivr):
    # With the directory emptied, the eligible callers cannot be verified.
    with ivr.storage.transaction() as session:
        from sqlalchemy import delete

        from ivr.storage.models import Account
        session.execute(delete(Account))
    out = app.test_cli_runner().invoke(args=["simulate", "--calls", "20", "--concurrency", "2"])
    assert out.exit_code == 1
    assert "unexpected outcomes: 0" not in out.output and "eligible call" in out.output


@pytest.mark.parametrize("chunk", [5000, 1])
def test_a_file_that_hands_pmis_on_between_its_users_imports(app, ivr, tmp_path, monkeypatch,
                                                             chunk):
    """Two users swap PMIs, and a third takes over a PMI that a fourth gives up for a new
    one: every PMI is unique in the file and in the directory afterwards. A directory
    larger than one statement's parameters is looked up in parts (``IN_CHUNK``; here also
    one user at a time), and every part counts."""
    from ivr.storage import accounts
    from ivr.storage.models import Account

    monkeypatch.setattr(accounts, "IN_CHUNK", chunk)

    with ivr.storage.transaction() as session:
        before = dict(session.execute(select(Account.user_email, Account.pmi)).all())
    a, b, c, d = "owner.business@example.com", "admin.business@example.com", \
        "owner.free@example.com", "admin.free@example.com"
    rows = [(a, before[b]), (b, before[a]), (c, before[d]), (d, "5559876543")]
    path = tmp_path / "accounts.csv"
    path.write_text("account_id,plan,user_email,role,pmi,host_key\n" + "".join(
        f"x,business,{email},owner,{pmi},740193\n" for email, pmi in rows), encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["accounts", "import", str(path)])
    assert result.exit_code == 0, result.output
    with ivr.storage.transaction() as session:
        after = dict(session.execute(select(Account.user_email, Account.pmi)).all())
    assert [after[email] for email, _ in rows] == [pmi for _, pmi in rows]
