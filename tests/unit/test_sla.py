"""SLA figures, urgency and periods, against hand-computed fixtures."""

import datetime as dt

import pytest

from ivr.desk.service import BadRequest, Desk, Period, sla_verdict, urgency

from ..desk_support import add_ticket, at

# The clock fixture says 2026-11-25 12:00 UTC. Targets: P1 60 min, P2 240, P4 1440.
FIXTURE = [
    # name, priority, region, created, acknowledged -> verdict (response)
    ("A", 1, "United States", "2026-11-25 09:00", "2026-11-25 09:30"),  # met, 30 min
    ("B", 1, "United States", "2026-11-25 09:00", "2026-11-25 10:00"),  # met, exactly 60
    ("C", 1, "Japan", "2026-11-25 08:00", "2026-11-25 09:01"),          # missed, 61
    ("D", 1, "Japan", "2026-11-25 11:30", None),                        # pending, 30 so far
    ("E", 2, "Japan", "2026-11-24 06:00", "2026-11-24 11:00"),          # missed, 300
    ("F", 2, "United States", "2026-11-24 20:00", None),                # missed, 16 h waiting
    ("G", 2, "United Kingdom", "2026-11-25 10:00", "2026-11-25 10:05"),  # met, 5
    ("H", 4, "United Kingdom", "2026-11-24 13:00", "2026-11-25 11:00"),  # met, 22 h
    ("I", 1, "United States", "2026-11-20 09:00", None),                # before the period
]


@pytest.fixture
def report(ivr):
    numbers = {}
    for name, priority, region, created, acknowledged in FIXTURE:
        ticket = add_ticket(ivr, created=at(created), priority=priority, region=region,
                            acknowledged=at(acknowledged) if acknowledged else None)
        numbers[ticket.number] = name
    period = Period.parse("2026-11-24", "2026-11-25", ivr.service.clock())
    return Desk.of(ivr).sla(period), numbers


def figures(lines):
    return {line.key: (line.met, line.missed, line.pending, line.share) for line in lines}


def test_the_share_per_priority_counts_met_against_decided_tickets(report):
    sla, _ = report
    assert figures(sla.by_priority) == {
        "P1": (2, 1, 1, 2 / 3),
        "P2": (1, 2, 0, 1 / 3),
        "P4": (1, 0, 0, 1.0),
    }


def test_the_share_per_region_counts_met_against_decided_tickets(report):
    sla, _ = report
    assert figures(sla.by_region) == {
        "Japan": (0, 2, 1, 0.0),
        "United Kingdom": (2, 0, 0, 1.0),
        "United States": (2, 1, 0, 2 / 3),
    }


def test_the_overall_share_leaves_out_tickets_created_outside_the_period(report):
    sla, _ = report
    assert (sla.overall.tickets, sla.overall.met, sla.overall.missed, sla.overall.share) == (
        8, 4, 3, 4 / 7)


def test_the_slowest_responses_come_first_with_waiting_time_for_unacknowledged_ones(report):
    sla, numbers = report
    slowest = [(numbers[r["number"]], r["response_seconds"], r["verdict"]) for r in sla.slowest[:4]]
    assert slowest == [("H", 22 * 3600, "met"), ("F", 16 * 3600, "missed"),
                       ("E", 5 * 3600, "missed"), ("C", 61 * 60, "missed")]


def test_a_ticket_acknowledged_exactly_at_its_target_meets_it():
    class T:
        target_response_minutes = 60
        created_at = at("2026-11-25 09:00")
        acknowledged_at = at("2026-11-25 10:00")

    assert sla_verdict(T, at("2026-11-26 00:00")) == "met"
    T.acknowledged_at = None
    assert sla_verdict(T, at("2026-11-25 10:00")) == "pending"
    assert sla_verdict(T, at("2026-11-25 10:00:01")) == "missed"


@pytest.mark.parametrize("seconds_left, expected", [
    (-1, "overdue"), (0, "overdue"), (1, "urgent"), (899, "urgent"), (900, "fine"), (3600, "fine"),
])
def test_urgency_is_overdue_then_urgent_under_a_quarter_of_the_target_left(seconds_left, expected):
    assert urgency(seconds_left, 60) == expected


def test_a_period_of_dates_runs_from_the_first_midnight_to_the_end_of_the_last_day():
    period = Period.parse("2026-11-01", "2026-11-25", at("2026-11-25 12:00"))
    assert (period.since, period.until) == (at("2026-11-01 00:00"), at("2026-11-26 00:00"))
    assert (period.first_day, period.last_day) == (dt.date(2026, 11, 1), dt.date(2026, 11, 25))


def test_the_default_period_is_the_last_seven_days_including_today():
    period = Period.parse(None, None, at("2026-11-25 12:00"))
    assert (period.since, period.until) == (at("2026-11-19 00:00"), at("2026-11-26 00:00"))


@pytest.mark.parametrize("since, until, message", [
    ("yesterday", None, "since: 'yesterday' is not a date"),
    ("2026-11-25", "2026-11-24", "until: the end of the period must come after its start"),
    ("2026-13-01", None, "since: '2026-13-01' is not a date"),
])
def test_a_bad_period_is_refused_with_the_reason(since, until, message):
    with pytest.raises(BadRequest, match=message):
        Period.parse(since, until, at("2026-11-25 12:00"))
