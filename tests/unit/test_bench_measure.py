"""The benchmark's own arithmetic and plumbing (bench/measure.py, bench/client.py): how CPU
time is read and added up, how percentiles are taken, and that the load generator's raw
HTTP client reads replies correctly. No timings are asserted here."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from bench.client import Exchange, LightTransport, problem_of, replay_calls
from bench.measure import (
    CpuSnapshot, by_step, cpu_delta, latency_summary, limited_by, percentile, proc_stat_cpu,
    process_cpu, worker_stats,
)


def test_proc_stat_cpu_adds_user_and_system_ticks_even_when_the_command_holds_parentheses():
    fields = ["S"] + ["0"] * 10 + ["250", "150"] + ["0"] * 30  # utime 250, stime 150 ticks
    line = "4242 (gunicorn: worker (app) x) " + " ".join(fields)

    assert proc_stat_cpu(line, ticks=100) == pytest.approx(4.0)


def test_process_cpu_of_this_process_agrees_with_psutil():
    mine = psutil.Process().cpu_times()

    assert process_cpu(os.getpid()) == pytest.approx(mine.user + mine.system, abs=0.1)


def test_process_cpu_of_a_process_that_is_gone_is_none():
    gone = max(psutil.pids()) + 100_000

    assert process_cpu(gone) is None


def test_cpu_delta_counts_new_processes_in_full_and_reports_vanished_ones():
    before = CpuSnapshot({1: 10.0, 2: 5.0, 3: 1.0})
    after = CpuSnapshot({1: 12.5, 2: 5.25, 4: 0.75})

    delta = cpu_delta(before, after)

    assert delta["seconds"] == pytest.approx(2.5 + 0.25 + 0.75)
    assert delta["appeared"] == [4]
    assert delta["vanished"] == [3]


def test_percentile_is_nearest_rank():
    values = [float(n) for n in range(100, 0, -1)]

    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_latency_summary_is_in_milliseconds():
    summary = latency_summary([0.001, 0.002, 0.003, 0.004])

    assert summary == {"count": 4, "p50": 2.0, "p95": 4.0, "p99": 4.0, "max": 4.0, "mean": 2.5}
    assert latency_summary([]) == {"count": 0}


def test_by_step_groups_paths_without_their_query_and_adds_all():
    summary = by_step([("/voice", 0.01), ("/voice/queue-wait?ticket=T1", 0.02),
                       ("/voice/queue-wait?ticket=T2", 0.04)])

    assert summary["/voice"]["count"] == 1
    assert summary["/voice/queue-wait"]["count"] == 2
    assert summary["all"]["count"] == 3
    assert list(summary)[-1] == "all"


@pytest.fixture
def echo_server():
    """A loopback WSGI server that echoes the form back, keeping the connection open
    unless asked to close it."""
    seen = []

    @Request.application
    def app(request):
        seen.append((request.path, dict(request.form), request.headers.get("X-Twilio-Signature")))
        body = "<Response><Say>" + ",".join(f"{k}={v}" for k, v in sorted(request.form.items())) \
            + "</Say></Response>"
        return Response(body, mimetype="text/xml", status=200 if request.path != "/missing" else 404)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_light_transport_reads_status_and_body_and_records_each_exchange(echo_server):
    url, _seen = echo_server
    transport = LightTransport(url)

    status, body = transport.post("/voice", {"CallSid": "CA1", "Digits": "2#"}, {})
    time.sleep(0.05)  # the caller listens before answering: recorded as the pause
    missing, _ = transport.post("/missing", {"CallSid": "CA1"}, {})
    transport.close()

    assert status == 200
    assert body == "<Response><Say>CallSid=CA1,Digits=2#</Say></Response>"
    assert missing == 404
    assert [e.path for e in transport.exchanges] == ["/voice", "/missing"]
    assert transport.exchanges[0].pause == 0.0
    assert 0.05 <= transport.exchanges[1].pause < 1.0


def test_replay_signs_every_request_for_the_server_it_is_sent_to(echo_server):
    url, seen = echo_server
    params = {"CallSid": "CA9", "To": "+18887999666", "Digits": "1"}
    recorded = [[Exchange("/voice", params, 0.0, 0.0, 200), Exchange("/voice/menu", params, 0.0,
                                                                      0.0, 200)]]

    drive = replay_calls(url, "token", recorded, concurrency=1, paced=False)

    assert drive.errors == []
    assert drive.requests == 2
    validator = RequestValidator("token")
    assert len(seen) == 2
    for path, form, signature in seen:
        assert validator.validate(url + path, form, signature)


def test_worker_stats_keep_only_what_happened_inside_the_phase():
    record = {"paths": {"/voice": 0, "/voice/menu": 1},
              "requests": [100.0, 0.004, 0, 105.0, 0.002, 1, 105.5, 0.008, 1, 200.0, 0.5, 0],
              "collections": [[99.0, 2, 0.3], [104.0, 0, 0.001], [106.0, 2, 0.012]]}

    stats = worker_stats([record], start=101.0, end=110.0)

    assert stats["latency_ms"]["/voice/menu"]["count"] == 2
    assert "/voice" not in stats["latency_ms"]
    assert stats["latency_ms"]["all"]["max"] == 8.0
    assert stats["gc"]["collections"] == 2
    assert stats["gc"]["by_generation"] == {"0": 1, "1": 0, "2": 1}
    assert stats["gc"]["max_ms"] == 12.0
    assert stats["gc"]["total_ms"] == 13.0


@pytest.mark.parametrize("cores, side", [
    ({"server": 1.8, "database": 0.0, "client": 0.2, "rest_of_machine": 0.0}, "server"),
    ({"server": 1.2, "database": 0.6, "client": 0.2, "rest_of_machine": 0.0}, "server"),
    ({"server": 0.9, "database": 0.0, "client": 0.95, "rest_of_machine": 0.0}, "client"),
    ({"server": 0.3, "database": 0.0, "client": 0.1, "rest_of_machine": 1.5},
     "other processes"),
    ({"server": 1.52, "database": 0.0, "client": 0.2, "rest_of_machine": 0.04},
     "server (sharing the cores with the client)"),
    ({"server": 1.26, "database": 0.21, "client": 0.14, "rest_of_machine": 0.14},
     "server (sharing the cores with the client)"),
    ({"server": 0.2, "database": 0.0, "client": 0.05, "rest_of_machine": 0.1}, "nothing: waiting"),
])
def test_limited_by_names_the_side_that_kept_the_cores_busy(cores, side):
    assert limited_by({**cores, "machine": 2}) == side


def test_a_phase_run_in_rounds_adds_its_stretches_up_before_dividing():
    from bench.client import Drive
    from bench.run import Sample, figures_of

    def stretch(requests: int, seconds: float, server_cpu: float, start: float) -> Sample:
        exchanges = [Exchange("/voice", {}, 0.0, 0.001 * (n + 1), 200) for n in range(requests)]
        drive = Drive(calls=requests // 2, concurrency=4, seconds=seconds, exchanges=exchanges,
                      by_kind={"eligible": 1})
        delta = {"seconds": server_cpu, "processes": 3, "appeared": [], "vanished": []}
        none = {"seconds": 0.0, "processes": 0, "appeared": [], "vanished": []}
        return Sample(drive, [start, start + seconds], delta, none, 0.1 * seconds,
                      server_cpu + 0.1 * seconds)

    drive, figures = figures_of([stretch(100, 1.0, 0.2, 10.0), stretch(300, 2.0, 0.9, 20.0)],
                                None)
    assert (drive.requests, drive.calls, drive.by_kind) == (400, 200, {"eligible": 2})
    # (0.2 + 0.9) s over 400 requests, not the mean of 2 ms and 3 ms per request
    assert figures["server_cpu_ms_per_request"] == 2.75
    assert figures["cores"]["server"] == round(1.1 / 3.0, 2)
    assert figures["window"] == [10.0, 22.0]
    assert figures["latency_ms"]["all"]["count"] == 400


class FakeMachine:
    """A clock and a busy-CPU counter: ``loads`` are the busy cores of each look."""

    def __init__(self, loads: list[float]):
        self.now, self.busy_seconds, self.loads = 0.0, 0.0, list(loads)

    def clock(self) -> float:
        return self.now

    def busy(self) -> float:
        return self.busy_seconds

    def sleep(self, seconds: float) -> None:
        load = self.loads.pop(0) if self.loads else 2.0
        self.now += seconds
        self.busy_seconds += load * seconds


def test_settle_waits_for_a_quiet_look_and_no_longer():
    from bench.measure import settle

    machine = FakeMachine([1.2, 0.6, 0.1, 0.0])
    assert settle(machine.busy, machine.clock, machine.sleep) == 1.5  # the third look
    assert machine.loads == [0.0]


def test_settle_gives_up_on_a_machine_that_stays_busy():
    from bench.measure import QUIET_LIMIT, settle

    machine = FakeMachine([])
    waited = settle(machine.busy, machine.clock, machine.sleep)
    assert QUIET_LIMIT <= waited < QUIET_LIMIT + 1


def test_the_two_servers_take_turns_on_a_quiet_machine_with_the_same_calls():
    from bench.client import Drive
    from bench.run import take_turns

    class Server:  # this process stands in for a server's master; no workers
        def pids(self):
            return os.getpid(), []

    order = []

    def serve(number, calls, done):
        order.append(("service", number, calls, done))
        return Drive(calls=calls, concurrency=4, seconds=0.01,
                     recorded=[[f"call {done + n}"] for n in range(calls)])

    def replay(drive):
        order.append(("bare", [c[0] for c in drive.recorded]))
        return Drive(calls=drive.calls, concurrency=4, seconds=0.01)

    def other(drive):
        order.append(("other", len(drive.recorded)))
        return Drive(calls=drive.calls, concurrency=4, seconds=0.01)

    served, (replayed, others) = take_turns(
        Server(), None, 10, 3, serve, [(Server(), None, replay), (Server(), None, other)],
        quiet=lambda: order.append("quiet"))
    assert order == [
        "quiet", ("service", 0, 4, 0), "quiet", ("bare", [f"call {n}" for n in range(4)]),
        "quiet", ("other", 4),
        "quiet", ("service", 1, 4, 4), "quiet", ("bare", [f"call {n}" for n in range(4, 8)]),
        "quiet", ("other", 4),
        "quiet", ("service", 2, 2, 8), "quiet", ("bare", ["call 8", "call 9"]),
        "quiet", ("other", 2),
    ]
    assert [s.drive.calls for s in served] == [4, 4, 2]
    assert [s.drive.calls for s in replayed] == [4, 4, 2]
    assert [s.drive.calls for s in others] == [4, 4, 2]
    # more rounds than calls: no empty round
    order.clear()
    served, _ = take_turns(Server(), None, 2, 5, serve, [(Server(), None, replay)],
                           quiet=lambda: None)
    assert [s.drive.calls for s in served] == [1, 1]


def test_a_paced_round_compares_the_p99_of_each_side():
    from bench.client import Drive
    from bench.run import Sample, _paced_round_figures

    def stretch(milliseconds: list[float]) -> Sample:
        exchanges = [Exchange("/voice/menu", {}, 1.0, ms / 1000, 200) for ms in milliseconds]
        none = {"seconds": 0.0, "processes": 0, "appeared": [], "vanished": []}
        return Sample(Drive(calls=1, concurrency=1, seconds=1.0, exchanges=exchanges),
                      [0.0, 1.0], none, none, 0.0, 0.0)

    service = stretch([2.0] * 98 + [9.0, 30.0])  # nearest rank: the 99th of 100 is 9 ms
    bare = stretch([1.0] * 99 + [20.0])
    assert _paced_round_figures(service, bare) == {"service_p99": 9.0, "bare_p99": 1.0,
                                                   "times": 9.0}
    floor = stretch([1.5] * 99 + [40.0])
    assert _paced_round_figures(service, bare, floor) == {
        "service_p99": 9.0, "bare_p99": 1.0, "times": 9.0, "floor_p99": 1.5, "floor_times": 1.5}


@pytest.mark.parametrize("kind, outcome, recorded, problem", [
    ("rejected_web", "hangup", False, None),        # heard over HTTP: words, then a hang-up
    ("rejected_web", "rejected_web", True, None),   # read from the service's record
    ("rejected_web", "hangup", True, "unexpected"),
    ("failed_auth", "routed", False, "unexpected"),
    ("eligible", "error", False, "error"),
])
def test_the_load_generator_judges_a_call_by_what_it_could_know_of_its_outcome(
        kind, outcome, recorded, problem):
    """The load generator drives a server over HTTP without its database: a call the
    service ends with words is judged by what the caller heard, not by a record it
    cannot read (every web-ticket, help-centre and failed call was "unexpected")."""
    from ivr.sim.simulator import CallResult

    result = CallResult(call_sid="CA" + "1" * 32, to="+18887999666", caller="+12015550100",
                        outcome=outcome, recorded=recorded)
    assert problem_of(kind, result) == problem
