"""What the benchmark reads and how it adds it up: CPU seconds and resident memory of the
server's processes (gunicorn master and workers, PostgreSQL backends), the machine's busy
time, and latency percentiles. Pure helpers, so tests/unit/test_bench_measure.py can check
them without starting a server."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterable

import psutil

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat_cpu(text: str, ticks: int = TICKS) -> float:
    """User + system CPU seconds from the text of /proc/<pid>/stat (fields 14 and 15).
    The command name (field 2) may hold spaces and parentheses, so fields are counted from
    the last ')'."""
    after = text[text.rindex(")") + 2:].split()
    # after[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(after[11]) + int(after[12])) / ticks


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds a process has used, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return proc_stat_cpu(stat.read())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system


def process_rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


@dataclass
class CpuSnapshot:
    """CPU seconds (user + system) of each process of one role at one moment."""

    by_pid: dict[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, pids: Iterable[int]) -> "CpuSnapshot":
        readings = {pid: process_cpu(pid) for pid in pids}
        return cls({pid: cpu for pid, cpu in readings.items() if cpu is not None})


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict:
    """CPU seconds spent between two snapshots. A process that appeared in between counts
    in full (it started during the phase); one that vanished is reported, since the CPU it
    used after ``before`` cannot be read any more."""
    seconds = 0.0
    for pid, cpu in after.by_pid.items():
        seconds += cpu - before.by_pid.get(pid, 0.0)
    return {"seconds": round(seconds, 4), "processes": len(after.by_pid),
            "appeared": sorted(set(after.by_pid) - set(before.by_pid)),
            "vanished": sorted(set(before.by_pid) - set(after.by_pid))}


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, everything but idle and
    iowait), to show how much the rest of the machine took during a phase."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) \
        - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


QUIET_CORES = 0.15  # busy cores under which the machine counts as quiet
QUIET_WINDOW = 0.5  # seconds each look at the machine lasts
QUIET_LIMIT = 15.0  # seconds to wait for quiet at most


def settle(busy=machine_busy, clock=time.monotonic, sleep=time.sleep) -> float:
    """Wait until the machine is quiet (under QUIET_CORES busy cores over QUIET_WINDOW
    seconds), QUIET_LIMIT seconds at most; returns how long it waited. A turn of load
    started at once would share the cores with the work the turn before left running
    (PostgreSQL's WAL writer, checkpoints, autovacuum after a turn of writes)."""
    start = clock()
    while True:
        before, since = busy(), clock()
        sleep(QUIET_WINDOW)
        cores = (busy() - before) / max(clock() - since, 1e-9)
        if cores < QUIET_CORES or clock() - start >= QUIET_LIMIT:
            return clock() - start


def gunicorn_pids(master: int) -> tuple[int, list[int]]:
    """The master and its live workers."""
    try:
        workers = [child.pid for child in psutil.Process(master).children()]
    except psutil.Error:
        workers = []
    return master, sorted(workers)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``share`` of the values at
    or below it (p99 of 100 values is the 99th smallest, not an interpolation)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict:
    """count, p50/p95/p99, max and mean in milliseconds."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)
    ms = lambda value: round(value * 1000, 2)  # noqa: E731
    return {"count": len(ordered), "p50": ms(percentile(ordered, 0.50)),
            "p95": ms(percentile(ordered, 0.95)), "p99": ms(percentile(ordered, 0.99)),
            "max": ms(ordered[-1]), "mean": ms(sum(ordered) / len(ordered))}


def step_of(path: str) -> str:
    """The webhook step a request path stands for: the path without its query string."""
    return path.split("?", 1)[0]


def by_step(timings: Iterable[tuple[str, float]]) -> dict[str, dict]:
    """Latency summaries per step and over all requests ("all")."""
    steps: dict[str, list[float]] = {}
    every: list[float] = []
    for path, seconds in timings:
        steps.setdefault(step_of(path), []).append(seconds)
        every.append(seconds)
    summary = {step: latency_summary(values) for step, values in sorted(steps.items())}
    summary["all"] = latency_summary(every)
    return summary


def per_request_ms(cpu_seconds: float, requests: int) -> float | None:
    return round(1000 * cpu_seconds / requests, 3) if requests else None


def worker_stats(records: list[dict], start: float, end: float) -> dict:
    """What the workers noted (bench/gunicorn_bench.py) between two wall-clock times: the
    time each request spent inside a worker, by step, and the garbage collections."""
    timings: list[tuple[str, float]] = []
    collections: list[tuple[int, float]] = []
    for record in records:
        names = {number: path for path, number in record.get("paths", {}).items()}
        values = record.get("requests", [])
        for i in range(0, len(values) - 2, 3):
            at, seconds, path = values[i:i + 3]
            if start <= at <= end:
                timings.append((names.get(int(path), "?"), seconds))
        for at, generation, seconds in record.get("collections", []):
            if start <= at <= end:
                collections.append((int(generation), seconds))
    pauses = [seconds for _, seconds in collections]
    return {
        "latency_ms": by_step(timings),
        "gc": {"collections": len(collections),
               "by_generation": {str(g): sum(1 for gen, _ in collections if gen == g)
                                 for g in (0, 1, 2)},
               "total_ms": round(1000 * sum(pauses), 2),
               "max_ms": round(1000 * max(pauses), 2) if pauses else 0.0,
               "ms_per_request": round(1000 * sum(pauses) / len(timings), 4)
               if timings else None},
    }


def limited_by(cores: dict) -> str:
    """Which side kept a phase from going faster, from the cores each side kept busy:
    the server (with its database) using nearly every core; the one-process client using
    nearly one; the cores all busy, with the server taking what the client left it (on a
    small machine the two share the cores) or other processes taking a real share; or
    nothing (the requests were waiting: paced callers, locks, disk)."""
    cpus = cores["machine"]
    server = cores["server"] + cores["database"]
    if server >= 0.85 * cpus:
        return "server"
    if cores["client"] >= 0.85:
        return "client"
    if server + cores["client"] + cores["rest_of_machine"] >= 0.85 * cpus:
        if cores["rest_of_machine"] >= 0.25 * cpus:
            return "other processes"
        return "server (sharing the cores with the client)"
    return "nothing: waiting"
