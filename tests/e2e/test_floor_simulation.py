"""The simulator plays engineers too: with more callers than engineers, the engineer line
serves P1 callers before P4 callers."""

import json
import random

from ivr.domain.phones import callable_number
from ivr.sim.engineers import engineer_name, engineer_phone, run_floor
from ivr.sim.simulator import WsgiTransport
from ivr.sim.surge import plan_call

from ..floor_support import add_engineer
from ..support import TOKEN


def test_with_more_callers_than_engineers_p1_callers_wait_less_than_p4_callers(app, ivr):
    for n in range(2):
        add_engineer(ivr, engineer_name(n), phone=engineer_phone(n), languages="")
    report = run_floor(WsgiTransport(app), TOKEN, calls=30, engineers=2, seed=3)
    assert report.errors == [] and report.served == 30 and report.unserved == 0
    assert report.pickups == 30
    waits = {p: report.figures(p) for p in (1, 2, 3, 4)}
    assert waits[1]["callers"] and waits[4]["callers"]
    assert waits[1]["mean"] < waits[4]["mean"]
    assert waits[1]["max"] <= waits[4]["max"]


def test_the_command_runs_callers_and_engineers_and_reports_waits_per_priority(app):
    result = app.test_cli_runner().invoke(
        args=["simulate", "--calls", "12", "--engineers", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["served"] == 12 and report["engineers"] == 2
    assert set(report["waits_seconds"]) == {"P1", "P2", "P3", "P4"}
    again = app.test_cli_runner().invoke(args=["simulate", "--calls", "4", "--engineers", "2"])
    assert again.exit_code == 0 and "mean wait" in again.output


def test_simulated_engineers_phones_are_fictional_555_01xx_numbers_of_their_own():
    """North American 555-0100 to 555-0199 are the numbers set aside for fiction: a
    simulated engineer's phone outside them may be someone's real line (callbacks and the
    engineer line dial and text what the directory holds)."""
    phones = [engineer_phone(n) for n in range(200)]  # simulate --engineers allows 200
    assert len(set(phones)) == 200
    for phone in phones:
        assert phone.startswith("+1") and len(phone) == 12, phone
        assert phone[5:10] == "55501", phone
        assert callable_number(phone) == phone
    rng = random.Random(1)
    callers = {plan_call(n, rng)[2] for n in range(2000)} | {"+14155550100"}
    assert not callers & set(phones)


# The benchmark's default run: 100 warm-up calls, 10,000 saturating and 480 paced ones,
# numbered one after another so that every call has a caller of its own.
BENCH_CALLS = 100 + 10_000 + 480


def _fictional(number: str) -> bool:
    return number.startswith("+1") and len(number) == 12 and number[5:10] == "55501"


def test_surge_callers_are_fictional_555_01xx_numbers_each_its_own_for_a_whole_bench_run():
    """A simulated call is stored in the database it runs against: its caller's number
    must be one set aside for fiction. Each caller must be distinct and a valid number
    (an invalid one counts under the withheld callers' shared lockout key): a failed_auth
    caller met again would soon be locked, and an eligible call of theirs fail."""
    rng = random.Random(1)
    callers = [plan_call(n, rng)[2] for n in range(BENCH_CALLS)]
    assert [c for c in callers if not _fictional(c)] == []
    assert len(set(callers)) == len(callers)
    assert all(callable_number(c) == c for c in callers)
    engineers = {engineer_phone(n) for n in range(200)}
    assert not (set(callers) | {"+14155550100"}) & engineers
    assert "+14155550100" not in callers  # simulate's default --from


def test_floor_callers_are_fictional_555_01xx_numbers_each_its_own(app, ivr):
    for n in range(2):
        add_engineer(ivr, engineer_name(n), phone=engineer_phone(n), languages="")
    callers = []

    class Recording(WsgiTransport):
        def post(self, path, params, headers):
            if path == "/voice":
                callers.append(params["From"])
            return super().post(path, params, headers)

    report = run_floor(Recording(app), TOKEN, calls=12, engineers=2, seed=3)
    assert report.served == 12 and len(callers) == 12
    assert [c for c in callers if not _fictional(c)] == []
    assert len(set(callers)) == 12 and all(callable_number(c) == c for c in callers)
    assert not set(callers) & {engineer_phone(n) for n in range(200)}
