"""The support desk: the ticket lifecycle and the operator commands."""

import csv
import io
import json

import pytest

from ivr.desk import BadRequest, Conflict, Desk, NotFound

from ..desk_support import add_ticket, at
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
    ticket = routed_ticket(simulator, desk)
    assert ticket["status"] == "open" and ticket["connected_at"] is None
    clock.advance(minutes=3)
    view, changed = desk.update(ticket["number"], status="in_queue")
    assert changed and view["status"] == "in_queue" and view["updated_at"] == clock.now.isoformat()
    clock.advance(minutes=4)
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
    ("callback_requested", "in_queue"), ("connected", "open"), ("in_queue", "open"),
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


def test_tickets_show_of_an_unknown_ticket_fails_with_a_message(cli):
    result = cli("tickets", "show", "12345678")
    assert result.exit_code == 1 and "no ticket with id or number '12345678'" in result.output


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
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["number"] for r in rows] == [first.number, second.number]
    assert rows[0]["callback_number"] == "…0123" and "+14155550123" not in result.output
    assert (rows[1]["priority"], rows[1]["region"], rows[1]["target_response_minutes"]) == (
        "2", "Japan", "240")


def test_tickets_export_as_json_matches_the_csv(ivr, cli):
    add_ticket(ivr, created=at("2026-11-24 08:00"))
    as_json = json.loads(cli("tickets", "export", "--format", "json").output)
    as_csv = list(csv.DictReader(io.StringIO(cli("tickets", "export").output)))
    assert len(as_json) == 1 and as_json[0]["number"] == as_csv[0]["number"]
    assert set(as_json[0]) == set(as_csv[0])


def test_tickets_export_refuses_a_bad_date(cli):
    result = cli("tickets", "export", "--since", "last week")
    assert result.exit_code == 1 and "--since: 'last week' is not a date" in result.output
