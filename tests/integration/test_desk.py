"""The support desk: the ticket lifecycle, the operator commands and the dashboard."""

import csv
import io
import json

import pytest

from ivr.desk.service import BadRequest, Conflict, Desk, NotFound

from ..desk_support import (ADMIN_TOKEN, add_call, add_ticket, admin_app, at, parse_html,
                            sign_in)
from ..support import BUSINESS_OWNER, CALLER


@pytest.fixture
def desk(ivr):
    return Desk.of(ivr)


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


def routed_ticket(simulator, desk, priority=2):
    result = simulator.call("+18887999666", CALLER,
                            ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", str(priority)])
    assert result.outcome == "routed"
    return desk.ticket(result.ticket)


# -- lifecycle ---------------------------------------------------------------------------


def test_a_ticket_goes_from_open_through_the_queue_to_connected_and_closed_with_its_times(
        simulator, desk, clock):
    ticket = routed_ticket(simulator, desk)  # the call put the caller in the queue
    assert ticket["status"] == "in_queue" and ticket["connected_at"] is None
    clock.advance(minutes=3)
    view, changed = desk.update(ticket["number"], status="open")  # e.g. the caller hung up
    assert changed and view["status"] == "open" and view["updated_at"] == clock.now.isoformat()
    clock.advance(minutes=4)  # e.g. an engineer reached them another way
    view, _ = desk.update(ticket["id"], status="connected")
    assert view["connected_at"] == clock.now.isoformat()
    clock.advance(minutes=20)
    view, _ = desk.close(ticket["number"])
    assert (view["status"], view["closed_at"]) == ("closed", clock.now.isoformat())
    assert view["connected_at"] == (clock.now.replace(minute=7)).isoformat()


def test_a_waiting_caller_may_switch_to_a_callback_which_keeps_the_callback_number(ivr, desk):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), status="in_queue",
                        callback_number="+14155550123")
    view, _ = desk.update(ticket.number, status="callback_requested")
    assert view["status"] == "callback_requested" and view["callback_number"] == "+14155550123"
    assert view["caller"] == "…0100"


@pytest.mark.parametrize("start, target", [
    ("closed", "open"), ("closed", "connected"), ("connected", "in_queue"),
    ("callback_requested", "in_queue"), ("connected", "open"), ("open", "in_queue"),
])
def test_a_move_the_lifecycle_does_not_allow_is_refused_naming_the_allowed_ones(
        ivr, desk, start, target):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), status=start)
    with pytest.raises(Conflict, match=f"cannot go from {start} to {target} "
                                       rf"\(allowed from {start}: "):
        desk.update(ticket.number, status=target)
    assert desk.ticket(ticket.number)["status"] == start


def test_closing_a_closed_ticket_changes_nothing(ivr, desk, clock):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    first, _ = desk.close(ticket.number)
    clock.advance(hours=1)
    again, changed = desk.close(ticket.number)
    assert not changed and again["closed_at"] == first["closed_at"]


def test_reclassifying_a_ticket_takes_the_target_from_the_configured_priority(ivr, desk):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), priority=4)
    view, changed = desk.set_priority(ticket.number, 1)
    assert changed and (view["priority"], view["target_response_minutes"]) == (1, 60)
    assert view["priority_name"] == "urgent"
    assert view["target_at"] == at("2026-11-25 12:00").isoformat()
    assert (view["seconds_left"], view["urgency"]) == (0, "overdue")


def test_a_closed_ticket_cannot_be_reclassified(ivr, desk):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), status="closed")
    with pytest.raises(Conflict, match="is closed; its priority can no longer change"):
        desk.set_priority(ticket.number, 2)


@pytest.mark.parametrize("changes, message", [
    ({}, "nothing to change"),
    ({"status": "lost"}, "status: 'lost' is not one of open, in_queue"),
    ({"priority": 5}, "priority: 5 is not a priority from 1 to 4"),
    ({"priority": True}, "priority: True is not a priority"),
])
def test_a_bad_change_is_refused_with_the_reason(ivr, desk, changes, message):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    with pytest.raises(BadRequest, match=message):
        desk.update(ticket.number, **changes)


@pytest.mark.parametrize("ref", ["99999999", "abc", "", "1" * 40, "-1"])
def test_an_unknown_or_malformed_reference_is_not_found(desk, ref):
    with pytest.raises(NotFound, match="no ticket with id or number"):
        desk.ticket(ref)


def test_open_tickets_come_least_time_left_first(ivr, desk):
    later = add_ticket(ivr, created=at("2026-11-25 11:50"), priority=1)   # 50 min left
    overdue = add_ticket(ivr, created=at("2026-11-25 10:00"), priority=1)  # 60 min over
    slow = add_ticket(ivr, created=at("2026-11-25 11:00"), priority=4)    # 23 h left
    add_ticket(ivr, created=at("2026-11-25 09:00"), priority=1, status="closed")
    views = desk.unclosed()
    assert [v["number"] for v in views] == [overdue.number, later.number, slow.number]
    assert [(v["seconds_left"], v["urgency"]) for v in views] == [
        (-3600, "overdue"), (3000, "fine"), (23 * 3600, "fine")]


# -- operator commands -------------------------------------------------------------------


def test_tickets_show_finds_a_ticket_by_number_or_id_and_masks_the_caller(ivr, cli):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:30"), priority=1)
    by_number = cli("tickets", "show", ticket.number)
    assert by_number.exit_code == 0, by_number.output
    lines = dict(line.split(":", 1) for line in by_number.output.splitlines())
    assert lines["status"].strip() == "open"
    assert lines["time left"].strip() == "30 min (fine)"
    assert lines["caller"].strip() == "…0100" and CALLER not in by_number.output
    as_json = json.loads(cli("tickets", "show", str(ticket.id), "--json").output)
    assert (as_json["number"], as_json["seconds_left"]) == (ticket.number, 1800)


def test_tickets_list_keeps_its_columns_under_the_headings_for_every_status(ivr, cli):
    from ivr.domain.lifecycle import TicketStatus

    for n, status in enumerate(TicketStatus):
        add_ticket(ivr, created=at(f"2026-11-25 11:{n:02d}"), status=status.value,
                   callback_number=CALLER if status.value == "callback_requested" else None)
    header, *rows = cli("tickets", "list").output.splitlines()
    created, account = header.index("created (UTC)"), header.index("account")
    assert len(rows) == len(TicketStatus)
    for row in rows:
        assert row[created:created + 10] == "2026-11-25", row
        assert row[account:] == "demo-business", row


def test_tickets_show_of_an_unknown_ticket_fails_with_a_message(cli):
    result = cli("tickets", "show", "12345678")
    assert result.exit_code == 1 and "no ticket with id or number '12345678'" in result.output


@pytest.mark.parametrize("ref, kept, shown", [
    ("+14155550100", "4155550100", "…0100"),  # the caller's number, to find their ticket
    ("5550100201", "5550100201", "…0201"),    # a PMI pasted in the wrong place
    ("+1 415 555 0100", "415 555", "…0100"),  # the number as a phone or a page writes it
    ("(415) 555-0100", "555-", "…0100"),
    ("555 010 0201", "555 010", "…0201"),
])
def test_an_unknown_ticket_named_by_a_phone_number_or_a_pmi_is_not_echoed_in_full(
        cli, ref, kept, shown):
    for command in (["tickets", "show", ref], ["tickets", "close", ref],
                    ["tickets", "set-priority", ref, "2"],
                    ["tickets", "callback", ref, "--engineer", "aiko"]):
        result = cli(*command)
        assert result.exit_code == 1
        (line,) = result.output.strip().splitlines()
        assert kept not in line and shown in line, line


def test_tickets_close_and_set_priority_change_the_ticket(ivr, cli, desk):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:30"), priority=3)
    result = cli("tickets", "set-priority", ticket.number, "2")
    assert result.exit_code == 0
    assert result.output.strip() == f"Ticket {ticket.number} is now P2 high (target 240 min)."
    assert cli("tickets", "close", str(ticket.id)).output.strip() == f"Ticket {ticket.number} closed."
    result = cli("tickets", "set-priority", ticket.number, "1")
    assert result.exit_code == 1 and "is closed" in result.output
    assert cli("tickets", "set-priority", ticket.number, "7").exit_code == 2
    view = desk.ticket(ticket.number)
    assert (view["status"], view["priority"]) == ("closed", 2)


def test_tickets_export_writes_csv_since_a_date_oldest_first_with_callback_numbers_masked(
        ivr, cli):
    add_ticket(ivr, created=at("2026-11-20 08:00"))
    first = add_ticket(ivr, created=at("2026-11-24 08:00"), callback_number="+14155550123")
    second = add_ticket(ivr, created=at("2026-11-25 08:00"), priority=2, region="Japan")
    result = cli("tickets", "export", "--format", "csv", "--since", "2026-11-24")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("\ufeff")  # UTF-8 as a spreadsheet recognises it
    rows = list(csv.DictReader(io.StringIO(result.output.removeprefix("\ufeff"))))
    assert [r["number"] for r in rows] == [first.number, second.number]
    assert rows[0]["callback_number"] == "…0123" and "+14155550123" not in result.output
    assert (rows[1]["priority"], rows[1]["region"], rows[1]["target_response_minutes"]) == (
        "2", "Japan", "240")


def test_tickets_export_as_json_matches_the_csv(ivr, cli):
    add_ticket(ivr, created=at("2026-11-24 08:00"))
    as_json = json.loads(cli("tickets", "export", "--format", "json").output)
    as_csv = list(csv.DictReader(io.StringIO(
        cli("tickets", "export").output.removeprefix("\ufeff"))))
    assert len(as_json) == 1 and as_json[0]["number"] == as_csv[0]["number"]
    assert set(as_json[0]) == set(as_csv[0])


def test_tickets_export_refuses_a_bad_date(cli):
    result = cli("tickets", "export", "--since", "last week")
    assert result.exit_code == 1 and "--since: 'last week' is not a date" in result.output


# -- dashboard ---------------------------------------------------------------------------


@pytest.fixture
def dashboard(desk_app):
    return desk_app


@pytest.fixture
def browser(dashboard):
    return dashboard.test_client()


def page(response, status=200):
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    return parse_html(response.get_data(as_text=True))


@pytest.fixture
def signed_in(browser):
    response = sign_in(browser)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    return browser


def csrf(browser, path="/admin/"):
    return next(f for f in page(browser.get(path)).iter("form")
                if f.field("csrf_token")).field("csrf_token")


def test_without_an_admin_token_the_dashboard_is_off_and_says_so(settings, clock):
    app = admin_app(settings, clock, token=None)
    for path in ("/admin/", "/admin/login"):
        doc = page(app.test_client().get(path), 404)
        assert doc.find("message").text() == "The dashboard is disabled: set IVR_ADMIN_TOKEN."


def test_every_page_sends_a_visitor_who_is_not_signed_in_to_the_login_form(browser):
    for path in ("/admin/", "/admin/calls", "/admin/sla", "/admin/tickets/1",
                 "/admin/export?format=csv"):
        response = browser.get(path)
        assert (response.status_code, response.headers["Location"]) == (302, "/admin/login")


def test_signing_in_sets_an_httponly_samesite_cookie_for_the_dashboard_only(browser):
    response = sign_in(browser)
    assert response.status_code == 302
    (cookie,) = response.headers.getlist("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower(): part.strip()
                  for part in cookie.split(";")[1:]}
    assert cookie.startswith("ivr_admin=") and ADMIN_TOKEN not in cookie
    assert "httponly" in attributes and attributes["samesite"] == "SameSite=Lax"
    assert attributes["path"] == "Path=/admin"
    assert page(browser.get("/admin/")).has("export")


@pytest.mark.parametrize("update, secure", [
    ({}, False),                                          # a plain local server
    ({"trusted_proxies": 1}, True),                       # behind a TLS proxy
    ({"public_url": "https://ivr.example.com"}, True),
])
def test_the_session_cookie_is_secure_whenever_tls_is_in_front(settings, clock, update, secure):
    app = admin_app(settings.model_copy(update=update), clock)
    response = sign_in(app.test_client())
    (cookie,) = response.headers.getlist("Set-Cookie")
    assert ("secure" in [p.strip().lower() for p in cookie.split(";")]) is secure
    app.extensions["ivr"].storage.dispose()


def test_a_wrong_token_is_refused_and_a_login_without_the_form_token_is_refused(browser):
    doc = page(sign_in(browser, token="guess"), 401)
    assert doc.find("login").text().endswith("That is not the admin token or a desk token. Sign in")
    response = browser.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert page(response, 400).find("message").text().startswith("This form has expired")
    assert browser.get("/admin/").status_code == 302


def test_changing_the_admin_token_signs_everyone_out(signed_in, dashboard):
    ivr = dashboard.extensions["ivr"]
    ivr.settings = ivr.settings.model_copy(update={"admin_token": "a-new-token-0000"})
    assert signed_in.get("/admin/").headers["Location"] == "/admin/login"


def test_open_tickets_are_listed_least_time_left_first_coloured_by_urgency(signed_in, ivr):
    overdue = add_ticket(ivr, created=at("2026-11-25 10:00"), priority=1)
    urgent = add_ticket(ivr, created=at("2026-11-25 11:10"), priority=1, region="Japan")
    fine = add_ticket(ivr, created=at("2026-11-25 11:00"), priority=2)
    add_ticket(ivr, created=at("2026-11-25 11:59"), priority=1, status="closed")
    doc = page(signed_in.get("/admin/"))
    rows = doc.find("tickets").rows()
    assert [(attrs["data-ticket"], attrs["class"]) for attrs, _ in rows] == [
        (overdue.number, "overdue"), (urgent.number, "urgent"), (fine.number, "fine")]
    assert [cells[1:5] for _, cells in rows] == [
        ["P1 urgent", "overdue by 1 h 00 min", "open", "United States"],
        ["P1 urgent", "10 min left", "open", "Japan"],
        ["P2 high", "3 h 00 min left", "open", "United States"],
    ]
    assert [cells[6] for _, cells in rows] == ["…0100"] * 3


def test_a_ticket_page_closes_and_reclassifies_through_forms_with_the_csrf_token(signed_in, ivr):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), priority=3,
                        callback_number="+14155550123")
    path = f"/admin/tickets/{ticket.number}"
    doc = page(signed_in.get(path))
    assert "Call back on +14155550123" in doc.find("ticket").text()
    token = doc.find("set-priority").field("csrf_token")
    response = signed_in.post(f"{path}/priority", data={"csrf_token": token, "priority": "1"})
    assert response.headers["Location"] == path
    doc = page(signed_in.get(path))
    assert "Priority P1 urgent (target 60 min)" in doc.find("ticket").text()
    assert next(doc.iter("p")).text() == f"Ticket {ticket.number} is now P1 urgent."
    signed_in.post(f"{path}/close", data={"csrf_token": token})
    doc = page(signed_in.get(path))
    assert "Status closed" in doc.find("ticket").text()
    assert not doc.has("close") and not doc.has("set-priority")


@pytest.mark.parametrize("token", [None, "", "forged"])
def test_a_form_post_without_the_sessions_csrf_token_changes_nothing(signed_in, ivr, token):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    data = {} if token is None else {"csrf_token": token}
    response = signed_in.post(f"/admin/tickets/{ticket.number}/close", data=data)
    assert page(response, 400).find("message").text().startswith("This form has expired")
    assert Desk.of(ivr).ticket(ticket.number)["status"] == "open"


def test_a_priority_set_from_a_page_another_agent_has_overtaken_is_refused_not_overwritten(
        dashboard, signed_in, ivr):
    """Two agents open the same P3 ticket; the first sets P1. The second, still looking at
    P3, chooses P2: that choice was made on what the page showed, so it is refused with a
    409 saying what the ticket is now, and the first agent's P1 stays."""
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), priority=3)
    path = f"/admin/tickets/{ticket.number}"
    other = dashboard.test_client()
    sign_in(other)
    first, second = page(signed_in.get(path)), page(other.get(path))
    for doc in (first, second):
        assert doc.find("set-priority").field("shown_priority") == "3"

    def choose(client, doc, level):
        form = doc.find("set-priority")
        return client.post(f"{path}/priority", data={
            "csrf_token": form.field("csrf_token"), "shown_priority": form.field("shown_priority"),
            "priority": level})

    assert choose(signed_in, first, "1").status_code == 302
    doc = page(choose(other, second, "2"), 409)
    assert doc.find("message").text() == (
        f"ticket {ticket.number} was changed to P1 urgent after this page showed P3; "
        "nothing was changed. Reload the ticket and choose again.")
    assert Desk.of(ivr).ticket(ticket.number)["priority"] == 1
    # Choosing what the other agent already chose is no conflict; a fresh page may change it.
    assert page(other.get(f"{path}")).find("set-priority").field("shown_priority") == "1"
    assert choose(other, second, "1").status_code == 302
    assert choose(other, page(other.get(path)), "2").status_code == 302
    assert Desk.of(ivr).ticket(ticket.number)["priority"] == 2


def test_forbidden_moves_and_bad_input_on_the_dashboard_answer_with_the_reason(signed_in, ivr):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), status="closed")
    token = csrf(signed_in)
    doc = page(signed_in.post(f"/admin/tickets/{ticket.number}/priority",
                              data={"csrf_token": token, "priority": "2"}), 409)
    assert doc.find("message").text().endswith("is closed; its priority can no longer change")
    doc = page(signed_in.post(f"/admin/tickets/{ticket.number}/priority",
                              data={"csrf_token": token, "priority": "9"}), 400)
    assert doc.find("message").text() == "priority: '9' is not a priority from 1 to 4"
    page(signed_in.get("/admin/tickets/87654321"), 404)
    page(signed_in.get("/admin/sla?since=someday"), 400)
    page(signed_in.get("/admin/export?format=xml"), 400)


def test_the_calls_page_counts_calls_by_region_and_outcome_and_per_hour(signed_in, ivr):
    add_call(ivr, started=at("2026-11-25 09:05"), outcome="routed")
    add_call(ivr, started=at("2026-11-25 09:55"), outcome="abandoned")
    add_call(ivr, started=at("2026-11-24 14:00"), region="Japan", outcome="routed")
    add_call(ivr, started=at("2026-11-25 11:00"), region="Japan", outcome=None)
    add_call(ivr, started=at("2026-11-01 09:00"), outcome="routed")  # before the period
    doc = page(signed_in.get("/admin/calls?since=2026-11-24&until=2026-11-25"))
    table = doc.find("outcomes")
    header = [th.text() for th in next(table.iter("thead")).iter("th")]
    assert header == ["Region", "abandoned", "in progress", "routed", "total"]
    assert [cells for _, cells in table.rows()] == [
        ["Japan", "0", "1", "1", "2"], ["United States", "1", "0", "1", "2"]]
    bars = {int(g.attrs["data-hour"]): int(g.attrs["data-calls"])
            for g in doc.find("per-hour").iter("g")}
    assert len(bars) == 24 and {h: n for h, n in bars.items() if n} == {9: 2, 11: 1, 14: 1}


def test_the_sla_page_shows_the_share_met_per_priority_and_region(signed_in, ivr):
    add_ticket(ivr, created=at("2026-11-25 09:00"), acknowledged=at("2026-11-25 09:10"))
    add_ticket(ivr, created=at("2026-11-25 08:00"), acknowledged=at("2026-11-25 10:00"),
               region="Japan")
    add_ticket(ivr, created=at("2026-11-25 09:00"), priority=2,
               acknowledged=at("2026-11-25 09:01"), region="Japan")
    doc = page(signed_in.get("/admin/sla?since=2026-11-25"))
    assert doc.find("overall").text() == "66.7 %"
    assert [cells[:5] for _, cells in doc.find("by-priority").rows()] == [
        ["P1", "50.0 %", "1", "1", "0"], ["P2", "100.0 %", "1", "0", "0"]]
    assert [cells[:2] for _, cells in doc.find("by-region").rows()] == [
        ["Japan", "50.0 %"], ["United States", "100.0 %"]]
    assert doc.find("slowest").rows()[0][1][3:] == ["2 h 00 min", "1 h 00 min", "missed"]


@pytest.mark.parametrize("fmt, mimetype", [("csv", "text/csv"), ("json", "application/json")])
def test_the_dashboard_export_is_the_same_file_as_the_command(signed_in, ivr, cli, fmt, mimetype):
    add_ticket(ivr, created=at("2026-11-20 08:00"))
    add_ticket(ivr, created=at("2026-11-24 08:00"), callback_number="+14155550123")
    response = signed_in.get(f"/admin/export?format={fmt}&since=2026-11-24")
    assert response.status_code == 200 and response.mimetype == mimetype
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="tickets-since-2026-11-24.{fmt}"')
    command = cli("tickets", "export", "--format", fmt, "--since", "2026-11-24")
    assert response.get_data(as_text=True) == command.output
    # A spreadsheet opens the CSV as UTF-8 (its byte-order mark) and shows '…0123'.
    assert response.data.startswith(b"\xef\xbb\xbf") == (fmt == "csv")
    assert "…0123".encode() in response.data


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_values_from_outside_are_shown_as_text_never_as_markup(signed_in, ivr):
    """The directory's account and e-mail, a region, an engineer's name and a filter typed
    into the address bar reach the pages as text: no element, attribute or script of
    theirs appears, and the words are there as written."""
    from ivr.desk.engineers import Engineers
    from ivr.storage.models import Ticket

    Engineers.of(ivr).add("O'Neil", client="oneil")
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), region="Japan" + HOSTILE)
    with ivr.storage.transaction() as session:
        row = session.get(Ticket, ticket.id)
        row.account_id, row.user_email = "acct" + HOSTILE, "x" + HOSTILE + "@example.com"
    pages = [page(signed_in.get(path)) for path in (
        "/admin/", f"/admin/tickets/{ticket.number}", "/admin/sla?since=2026-11-20",
        "/admin/floor")]
    pages.append(page(signed_in.get("/admin/calls?since=" + HOSTILE.replace("&", "%26")
                                    .replace("#", "%23")), 400))
    for doc in pages:
        assert not list(doc.iter("script")) and not list(doc.iter("img"))
        assert not [e for e in doc.iter() if any(a.startswith("on") for a in e.attrs)]
    assert "acct" + HOSTILE in pages[0].find("tickets").text()
    assert "x" + HOSTILE + "@example.com" in pages[1].find("ticket").text()
    assert pages[2].find("by-region").rows()[0][0]["data-key"] == "Japan" + HOSTILE
    assert pages[4].find("message").text().startswith(f"since: {HOSTILE[:40]!r}")


def test_no_page_uses_what_its_content_security_policy_blocks(signed_in, ivr):
    """The policy allows scripts, styles and images from this origin only, with nothing
    inline: a page that used an inline script or style, or a resource from elsewhere,
    would break in the browser though every test of its HTML passed."""
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), status="callback_requested",
                        callback_number="+14155550123")
    paths = ["/admin/", f"/admin/tickets/{ticket.number}", "/admin/floor", "/admin/calls",
             "/admin/sla", "/admin/helpdesk", "/admin/tickets/87654321"]
    responses = [signed_in.get(path) for path in paths]
    responses.append(signed_in.application.test_client().get("/admin/login"))
    for response in responses:
        policy = dict(part.strip().split(" ", 1) for part in
                      response.headers["Content-Security-Policy"].split(";"))
        assert policy["default-src"] == "'self'" and "unsafe" not in str(policy)
        # No page runs a script: none may run, not even one of this origin's own answers
        # (an export or an API reply holding text from callers) loaded by injected markup.
        assert policy["script-src"] == "'none'"
        doc = parse_html(response.get_data(as_text=True))
        assert not list(doc.iter("script")) and not list(doc.iter("style"))
        for element in doc.iter():
            assert "style" not in element.attrs and not any(
                name.startswith("on") for name in element.attrs), element.tag
            for name in ("src", "action") + (("href",) if element.tag == "link" else ()):
                if name in element.attrs:
                    assert element.attrs[name].startswith("/"), element.attrs[name]


@pytest.mark.parametrize("page", ["/admin/", "/admin/floor", "/admin/calls", "/admin/sla",
                                  "/admin/helpdesk", "/admin/export?format=csv"])
def test_a_signed_in_desk_page_answers_while_a_call_holds_the_write_lock(desk_app, signed_in,
                                                                         page):
    """The dashboard's session check and its pages read without the write lock, so an
    operator's page neither waits for a webhook's transaction nor makes one wait (the
    Floor page reloads itself every few seconds in every open tab)."""
    import threading

    browser = signed_in
    storage = desk_app.extensions["ivr"].storage
    held, release = threading.Event(), threading.Event()

    def writer():
        with storage.unit_of_work() as uow:
            uow.calls.load("CA" + "0" * 32)  # inside a write transaction
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(10)
        assert browser.get(page).status_code == 200
        assert thread.is_alive()  # answered while the write was still open
    finally:
        release.set()
        thread.join()
