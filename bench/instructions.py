"""Instructions per webhook, counted by valgrind: a figure for comparing two versions of the
code that does not move with the machine's load.

CPU time on a shared virtual machine drifts: the same commit measured 1.6 ms and then
3.0 ms of server CPU per webhook half an hour apart, and in-process timings of back-to-back
runs differ by a fifth. The number of instructions the interpreter executes for the same
calls does not depend on what else the machine is doing, so a change that saves work shows
as fewer instructions even when the clock cannot see it.

How: whole calls are played in-process (the call simulator against the Flask app, SQLite,
as bench/profile_steps.py does) under valgrind's cachegrind, twice at once: once with
--calls calls after the warm-up and once with none. The difference in instructions,
divided by the requests those calls made, is the figure. It counts the app's work for a
request and the simulator's (signing the request, reading the TwiML), which is the same
for any version of the service that gives the same replies, so a difference between two
versions is the service's. It leaves out gunicorn and the server front, which cost the
service and the bare endpoint alike, and SQLite's WAL checkpoints, which a thread runs on
the clock (until 2026-12-03 they were counted: the commit that crossed SQLite's threshold
ran them).

    .venv/bin/python bench/instructions.py              # 80 calls, about a minute
    .venv/bin/python bench/instructions.py --calls 200

Written to bench/results/instructions.txt. Needs valgrind (``apt-get install valgrind``);
prints a note and stops without it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import in_process  # noqa: E402

WARMUP = 60
OUT = Path(__file__).resolve().parent / "results" / "instructions.txt"
REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def play(calls: int) -> int:
    """Warm up, then play ``calls`` whole calls; returns the requests those calls made."""
    from ivr.sim.surge import plan_call
    from ivr.storage import engine

    # SQLite's WAL is checkpointed by a thread once a second (storage/engine.py): work
    # timed by the clock, which valgrind slows some fifty-fold, so it would be counted
    # fifty times over. It is left out of the count: no checkpoint runs while it is taken.
    engine.CHECKPOINT_SECONDS = 24 * 3600.0
    with in_process() as (app, simulator):
        counted = []
        inner = app.wsgi_app

        def counting(environ, start_response):
            counted.append(1)
            return inner(environ, start_response)

        app.wsgi_app = counting
        rng = random.Random(11)
        plans = [plan_call(n, rng) for n in range(WARMUP + calls)]
        for _kind, to, caller, digits in plans[:WARMUP]:
            simulator.call(to, caller, digits)
        counted.clear()
        for _kind, to, caller, digits in plans[WARMUP:]:
            simulator.call(to, caller, digits)
    return len(counted)


def under_valgrind(calls: int) -> subprocess.Popen:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
               "--cachegrind-out-file=/dev/null", sys.executable, __file__,
               "--inner", "--calls", str(calls)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONHASHSEED": "0"})


def counted(process: subprocess.Popen) -> tuple[int, int]:
    out, err = process.communicate()
    match = REFS.search(err)
    if process.returncode or not match:
        raise SystemExit(f"valgrind run failed ({process.returncode}):\n{err[-2000:]}")
    return int(match.group(1).replace(",", "")), int(out.split()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=80,
                        help="whole calls counted after the warm-up (default 80)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        print(play(args.calls))
        return
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind); skipped")
        return
    with_calls, without = under_valgrind(args.calls), under_valgrind(0)
    (total, requests), (base, _) = counted(with_calls), counted(without)
    per_request = (total - base) / requests
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True, cwd=OUT.parent).stdout.strip()
    line = (f"instructions per webhook, in-process on SQLite: {per_request / 1e6:.3f} million "
            f"({args.calls} calls, {requests} requests; valgrind cachegrind; commit {commit})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(line + "\n", encoding="utf-8")
    print(line)


if __name__ == "__main__":
    main()
