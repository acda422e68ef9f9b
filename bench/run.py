"""`make bench`: what a webhook costs the server, next to a bare endpoint, on SQLite and on
PostgreSQL. See bench/README.md for what is measured and how to read it.

For each database: gunicorn serves the app (2 workers by default, signatures checked);
the load generator in bench/client.py plays whole calls (all nine numbers, every kind of
caller) first at saturation (callers answer at once) and then at a caller's pace (32 calls
in progress, each caller answering 1 s after every prompt). A second gunicorn serves
bench/bare.py and the same recorded calls are replayed against it, with the same client,
concurrency and pauses: at saturation the two servers take turns in rounds, so a drift in
the machine's speed meets both alike. Around every stretch the CPU seconds of the gunicorn master and
workers (and of the PostgreSQL backends serving the bench's own database), of the load
generator and of the whole machine are read, and the workers' resident memory before and
after the saturating phase. Figures go to bench/results/ and the table in bench/README.md.
Not part of `make test`: figures here are measurements, not assertions."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import logging
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from client import Drive, drive_calls, replay_calls  # noqa: E402
from measure import (  # noqa: E402
    CpuSnapshot, by_step, cpu_delta, gunicorn_pids, machine_busy, per_request_ms, process_cpu,
    limited_by, process_rss, settle, worker_stats,
)

TOKEN = "bench-auth-token"
RESULTS = ROOT / "bench" / "results"
TARGETS = {"cpu_ratio_goal": 0.5, "cpu_ratio_min_sqlite": 0.33, "cpu_ratio_min_postgresql": 0.25,
           "paced_p99_max_times_bare": 2.0}
BENCH_DATABASE = "ivr_bench"
MB = 1024 * 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """gunicorn with the project's gunicorn.conf.py and the bench's hooks
    (bench/gunicorn_bench.py), no access log, warnings only."""

    def __init__(self, target: str, env: dict, workers: int, extra: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")
        self.stats = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "bench/gunicorn_bench.py",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             "--log-level", "warning", *extra, target],
            cwd=ROOT, env={**env, "IVR_BENCH_WORKER_STATS": self.stats.name}, stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._healthy() and len(self.pids()[1]) == workers:
                return
            time.sleep(0.2)
        print(self.stop())
        raise SystemExit(f"{target} did not start")

    def _healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def pids(self) -> tuple[int, list[int]]:
        return gunicorn_pids(self.process.pid)

    def stop(self) -> str:
        """Stop; the log. The workers' own notes are then in ``self.records``."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self.records = [json.loads(path.read_text())
                        for path in Path(self.stats.name).glob("*.json")]
        self.stats.cleanup()
        self.log.seek(0)
        return self.log.read()


def add_worker_stats(figures: dict, records: list[dict]) -> None:
    """The workers' view of a phase: time inside a worker per step, garbage collections."""
    start, end = figures.pop("window")
    figures["in_worker"] = worker_stats(records, start, end)


class Postgres:
    """A database of the bench's own on the PostgreSQL server, so the backends serving
    the run are exactly the ones connected to it."""

    def __init__(self, admin_url: str, name: str = BENCH_DATABASE):
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self.text = text
        self.name = name
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
        with self.admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {name}"))
            self.version = connection.execute(text("SHOW server_version")).scalar()
        self.url = make_url(admin_url).set(database=name).render_as_string(
            hide_password=False)

    def backends(self) -> list[int]:
        with self.admin.connect() as connection:
            return list(connection.execute(self.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                {"name": self.name}).scalars())

    def drop(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(self.text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))
        self.admin.dispose()


def postgres(name: str = BENCH_DATABASE) -> Postgres | None:
    """The bench's own database on IVR_BENCH_POSTGRES_URL's server (default: the local one),
    or None when it cannot be reached."""
    url = os.environ.get("IVR_BENCH_POSTGRES_URL",
                         "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        return Postgres(url, name)
    except Exception as exc:
        print(f"PostgreSQL not used: {type(exc).__name__}: {exc}".splitlines()[0])
        return None


@dataclass
class Sample:
    """One stretch of load and the CPU every side spent on it."""

    drive: Drive
    window: list[float]
    server_cpu: dict
    db_cpu: dict
    client_cpu: float
    busy: float


def sample(server: Gunicorn, database: Postgres | None, load) -> Sample:
    """Run ``load()`` and read every process's CPU around it."""
    me = os.getpid()
    master, workers = server.pids()
    backends = database.backends() if database else []
    before = (CpuSnapshot.of([master, *workers]), CpuSnapshot.of(backends), process_cpu(me),
              machine_busy())
    window = [time.time()]
    drive = load()
    window.append(time.time())
    master, workers = server.pids()
    backends = database.backends() if database else []
    after = (CpuSnapshot.of([master, *workers]), CpuSnapshot.of(backends), process_cpu(me),
             machine_busy())
    return Sample(drive, window, cpu_delta(before[0], after[0]), cpu_delta(before[1], after[1]),
                  after[2] - before[2], after[3] - before[3])


def _added(deltas: list[dict]) -> dict:
    return {"seconds": round(sum(d["seconds"] for d in deltas), 4),
            "processes": max(d["processes"] for d in deltas),
            "appeared": sorted({p for d in deltas for p in d["appeared"]}),
            "vanished": sorted({p for d in deltas for p in d["vanished"]})}


def figures_of(samples: list[Sample], database: Postgres | None) -> tuple[Drive, dict]:
    """The figures of a phase, from one stretch of load or several (added up)."""
    drive = Drive.joined([s.drive for s in samples])
    wall = drive.seconds
    server_cpu = _added([s.server_cpu for s in samples])
    db_cpu = _added([s.db_cpu for s in samples])
    client_cpu = sum(s.client_cpu for s in samples)
    busy = sum(s.busy for s in samples)
    total = server_cpu["seconds"] + db_cpu["seconds"]
    figures = {
        "window": [samples[0].window[0], samples[-1].window[1]],
        "calls": drive.calls, "concurrency": drive.concurrency, "requests": drive.requests,
        "seconds": round(wall, 3),
        "requests_per_second": round(drive.requests / wall, 1) if wall else None,
        "server_cpu_ms_per_request": per_request_ms(total, drive.requests),
        "gunicorn_cpu_ms_per_request": per_request_ms(server_cpu["seconds"], drive.requests),
        "database_cpu_ms_per_request": per_request_ms(db_cpu["seconds"], drive.requests)
        if database else None,
        "gunicorn_cpu": server_cpu, "database_cpu": db_cpu if database else None,
        # Cores busy on average: 2.0 for the server means both cores were its; 1.0 for the
        # client means the load generator (one Python process) was the limit.
        "cores": {"server": round(server_cpu["seconds"] / wall, 2),
                  "database": round(db_cpu["seconds"] / wall, 2),
                  "client": round(client_cpu / wall, 2),
                  "rest_of_machine": round((busy - total - client_cpu) / wall, 2),
                  "machine": psutil.cpu_count()},
        "client_cpu_ms_per_request": per_request_ms(client_cpu, drive.requests),
        "limited_by": None,
        "latency_ms": by_step(drive.timings()),
        "error_count": len(drive.errors), "errors": drive.errors[:20],
        "unexpected_count": len(drive.unexpected), "unexpected": drive.unexpected[:20],
    }
    figures["limited_by"] = limited_by(figures["cores"])
    if drive.by_kind:
        figures["by_kind"] = drive.by_kind
    return drive, figures


def measured(server: Gunicorn, database: Postgres | None, load) -> tuple[Drive, dict]:
    """Run ``load()`` and read every process's CPU around it."""
    return figures_of([sample(server, database, load)], database)


def _round_figures(service: Sample, bare: Sample, database: Postgres | None) -> dict:
    """One round's CPU per webhook on each side, and their ratio."""
    _, ours = figures_of([service], database)
    _, theirs = figures_of([bare], None)
    mine, yard = ours["server_cpu_ms_per_request"], theirs["server_cpu_ms_per_request"]
    return {"service_ms": mine, "bare_ms": yard,
            "ratio": round(yard / mine, 3) if mine and yard else None}


def _paced_round_figures(service: Sample, bare: Sample, floor: Sample | None = None) -> dict:
    """One paced round's p99 on each side, and how many times the bare endpoint's the
    service's is; with ``floor`` (the bare endpoint running one transaction per request),
    its p99 and multiple too."""
    mine = by_step(service.drive.timings())["all"].get("p99")
    yard = by_step(bare.drive.timings())["all"].get("p99")
    figures = {"service_p99": mine, "bare_p99": yard,
               "times": round(mine / yard, 2) if mine and yard else None}
    if floor is not None:
        least = by_step(floor.drive.timings())["all"].get("p99")
        figures.update(floor_p99=least,
                       floor_times=round(least / yard, 2) if least and yard else None)
    return figures


def take_turns(service: Gunicorn, database: Postgres | None, calls: int, rounds: int, serve,
               yardsticks: list[tuple[Gunicorn, Postgres | None, object]], quiet=settle
               ) -> tuple[list[Sample], list[list[Sample]]]:
    """``calls`` whole calls in ``rounds`` turns, each server's turn starting on a quiet
    machine (``measure.settle``): a round's calls against the service (``serve(number,
    calls, done)``, ``done`` the calls of the rounds before), then the same calls replayed
    against each yardstick in turn (``(server, database, replay)``: ``replay(drive)``,
    with the CPU of ``database``'s backends counted when it is not None). The samples of
    the service, and of each yardstick, by round."""
    served: list[Sample] = []
    replayed: list[list[Sample]] = [[] for _ in yardsticks]
    per_round = -(-calls // rounds)
    done = 0
    for number in range(rounds):
        count = min(per_round, calls - done)
        if count <= 0:
            break
        quiet()
        ran = sample(service, database, lambda: serve(number, count, done))
        served.append(ran)
        for (server, its_database, replay), samples in zip(yardsticks, replayed):
            quiet()
            samples.append(sample(server, its_database, lambda: replay(ran.drive)))
        done += count
    return served, replayed


def with_transaction(env: dict, workers: int, database: Postgres) -> Gunicorn:
    """The bare endpoint with one webhook-shaped transaction per request on the bench's
    database (bench/bare.py), its table made first."""
    import psycopg
    from sqlalchemy.engine import make_url

    from bare import TABLE_DDL

    libpq = make_url(database.url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as connection:
        connection.execute(TABLE_DDL)
    return Gunicorn("bare:app", {**env, "BENCH_BARE_TRANSACTION_URL": libpq}, workers,
                    ["--pythonpath", "bench"])


def rss_by_worker(server: Gunicorn) -> dict[str, float]:
    _, workers = server.pids()
    return {str(pid): round(process_rss(pid) / MB, 1) for pid in workers
            if process_rss(pid) is not None}


def show(name: str, phase: str, figures: dict) -> None:
    c = figures["cores"]
    print(f"[{name}] {phase}: {figures['requests']} requests in {figures['seconds']:.1f} s, "
          f"{figures['requests_per_second']} requests/s, server CPU "
          f"{figures['server_cpu_ms_per_request']} ms/request; cores: server {c['server']}, "
          f"database {c['database']}, client {c['client']}, rest of machine "
          f"{c['rest_of_machine']} (limited by {figures['limited_by']}); "
          f"p50/p99 {figures['latency_ms']['all'].get('p50')} / "
          f"{figures['latency_ms']['all'].get('p99')} ms; errors {figures['error_count']}, "
          f"unexpected {figures['unexpected_count']}", flush=True)


def app_env(database_url: str, instance: Path) -> dict:
    """The environment the app is served with: signatures checked, no public URL, the
    loopback host pinned."""
    env = {**os.environ, "IVR_DATABASE_URL": database_url, "TWILIO_AUTH_TOKEN": TOKEN,
           "IVR_VALIDATE_SIGNATURES": "true", "IVR_INSTANCE_PATH": str(instance),
           "IVR_HOST_KEY_PEPPER": "bench-pepper-of-thirty-two-chars", "PYTHONWARNINGS": "ignore",
           # Signatures are checked against the request's own URL: pin the host it uses.
           "IVR_ALLOWED_HOSTS": "127.0.0.1"}
    for variable in ("IVR_PUBLIC_URL", "IVR_ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(variable, None)
    return env


def prepare(env: dict) -> None:
    """A fresh schema and the demo directory, through the app's own commands."""
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    for args in (["init-db"], ["accounts", "import", "config/demo-accounts.csv"]):
        done = subprocess.run(flask + args, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def in_process(database_url: str | None = None):
    """The app in this process (no HTTP, no gunicorn) and a simulator calling it, on a
    fresh schema with the demo directory; ``None`` gives it a SQLite file of its own. The
    app logs to /dev/null through a handler made for this app: one kept from an earlier
    app would write to that app's closed stream and print a traceback per log line."""
    from ivr.sim.simulator import Simulator, WsgiTransport

    with tempfile.TemporaryDirectory() as tmp:
        # The simulator calls http://localhost: pin that host, not the server's.
        env = {**app_env(database_url or f"sqlite:///{tmp}/bench.db", Path(tmp) / "instance"),
               "IVR_ALLOWED_HOSTS": "localhost"}
        prepare(env)
        logger = logging.getLogger("ivr")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        saved = dict(os.environ)
        os.environ.update(env)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            try:
                from ivr import create_app

                app = create_app()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            try:
                yield app, Simulator(WsgiTransport(app), TOKEN)
            finally:
                app.extensions["ivr"].storage.dispose()


def run_backend(name: str, database_url: str, database: Postgres | None, args,
                instance: Path) -> dict:
    env = app_env(database_url, instance)
    prepare(env)
    # Callers ring at different moments: the paced calls' first requests arrive spread
    # over one think time, not as 32 at the same instant (--arrivals together does that).
    spread = args.think if args.arrivals == "spread" else 0.0
    print(f"[{name}] service: {args.calls} calls at saturation, {args.paced_calls} at a "
          f"caller's pace ({args.think:g} s), concurrency {args.concurrency}, "
          f"{args.workers} workers", flush=True)
    service = Gunicorn("app:app", env, args.workers)
    bare = floor = floor_paced = None
    try:
        warm = drive_calls(service.url, TOKEN, args.warmup, args.concurrency, seed=1)
        bare = Gunicorn("bare:app", env, args.workers, ["--pythonpath", "bench"])
        replay_calls(bare.url, TOKEN, warm.recorded, args.concurrency, paced=False)
        rss_before = rss_by_worker(service)
        # Saturation in rounds that alternate between the two servers: each round's calls
        # against the service, then the first of them replayed against the bare endpoint.
        # The machine's speed drifts (bench/README.md), and both sides then meet it alike.
        bare_per_round = -(-args.bare_calls // args.rounds)
        service_samples, (bare_samples,) = take_turns(
            service, database, args.calls, args.rounds,
            lambda number, calls, done: drive_calls(
                service.url, TOKEN, calls, args.concurrency, seed=7 + number,
                first=args.warmup + done),
            [(bare, None, lambda drive: replay_calls(
                bare.url, TOKEN, drive.recorded[:bare_per_round], args.concurrency,
                paced=False))])
        rounds = [_round_figures(ran, base, database)
                  for ran, base in zip(service_samples, bare_samples)]
        saturated, service_saturated = figures_of(service_samples, database)
        rss_after = rss_by_worker(service)
        show(name, "service saturated", service_saturated)
        print(f"[{name}] ratio by round: "
              + ", ".join(str(r["ratio"]) for r in rounds), flush=True)
        _, bare_saturated = figures_of(bare_samples, None)
        show(name, "bare saturated", bare_saturated)
        # At a caller's pace the servers take turns too, with the same callers: a p99 is
        # read from the slowest hundredth of the requests, and on this host the slowest
        # stretches come and go within seconds (bench/README.md).
        # On PostgreSQL a third server joins the paced turns: the bare endpoint running one
        # webhook-shaped transaction per request (bench/bare.py), the least a webhook that
        # keeps its state there can cost a caller.
        if database is not None:
            floor = with_transaction(env, args.workers, database)
            replay_calls(floor.url, TOKEN, warm.recorded, args.concurrency, paced=False)

        def paced_replay(server):
            return lambda drive: replay_calls(server.url, TOKEN, drive.recorded,
                                              args.concurrency, paced=True, spread=spread)

        yardsticks = [(bare, None, paced_replay(bare))]
        if floor is not None:
            yardsticks.append((floor, database, paced_replay(floor)))
        paced_samples, (bare_paced_samples, *floor_samples) = take_turns(
            service, database, args.paced_calls, args.paced_rounds,
            lambda number, calls, done: drive_calls(
                service.url, TOKEN, calls, args.concurrency, seed=100 + number,
                think=args.think, first=args.warmup + args.calls + done, spread=spread),
            yardsticks)
        floor_samples = floor_samples[0] if floor_samples else [None] * len(paced_samples)
        paced_rounds = [_paced_round_figures(ran, base, least) for ran, base, least
                        in zip(paced_samples, bare_paced_samples, floor_samples)]
        _, service_paced = figures_of(paced_samples, database)
        show(name, "service paced", service_paced)
        _, bare_paced = figures_of(bare_paced_samples, None)
        show(name, "bare paced", bare_paced)
        if floor is not None:
            _, floor_paced = figures_of(floor_samples, database)
            show(name, "bare with one transaction, paced", floor_paced)
        print(f"[{name}] paced p99 by round, service / bare"
              + (" / bare with one transaction" if floor is not None else "") + ": "
              + ", ".join(f"{r['service_p99']} / {r['bare_p99']}"
                          + (f" / {r['floor_p99']}" if "floor_p99" in r else "")
                          + f" ({r['times']}×)" for r in paced_rounds), flush=True)
    finally:
        log = service.stop()
        for yardstick in (bare, floor):
            if yardstick is not None:
                yardstick.stop()
    for figures in (service_saturated, service_paced):
        add_worker_stats(figures, service.records)
    for figures in (bare_saturated, bare_paced):
        add_worker_stats(figures, bare.records)
    if floor is not None:
        add_worker_stats(floor_paced, floor.records)
    service_saturated["rounds"] = rounds
    service_paced["rounds"] = paced_rounds

    ratio = bare_saturated["server_cpu_ms_per_request"] / service_saturated[
        "server_cpu_ms_per_request"]
    p99, bare_p99 = service_paced["latency_ms"]["all"]["p99"], bare_paced["latency_ms"]["all"]["p99"]
    floor_p99 = floor_paced["latency_ms"]["all"]["p99"] if floor_paced is not None else None
    minimum = TARGETS[f"cpu_ratio_min_{name}"]
    errors = sum(f["error_count"] + f["unexpected_count"] for f in
                 (service_saturated, service_paced, bare_saturated, bare_paced, floor_paced)
                 if f is not None)
    verdict = {
        "cpu_ratio": round(ratio, 3),
        "cpu_ratio_meets_goal": ratio >= TARGETS["cpu_ratio_goal"],
        "cpu_ratio_meets_minimum": ratio >= minimum, "cpu_ratio_minimum": minimum,
        "requests_per_second_ratio": round(service_saturated["requests_per_second"]
                                           / bare_saturated["requests_per_second"], 3),
        "paced_p99_ms": p99, "bare_paced_p99_ms": bare_p99,
        "paced_p99_times_bare": round(p99 / bare_p99, 2) if bare_p99 else None,
        "paced_p99_meets_target": p99 <= TARGETS["paced_p99_max_times_bare"] * bare_p99,
        "errors": errors,
        **({"floor_paced_p99_ms": floor_p99,
            "floor_paced_p99_times_bare": round(floor_p99 / bare_p99, 2) if bare_p99 else None}
           if floor_paced is not None else {}),
        "log": {"database is locked": log.count("database is locked"),
                "Traceback": log.count("Traceback"), "WORKER TIMEOUT": log.count("WORKER TIMEOUT")},
    }
    print(f"[{name}] CPU per webhook: service {service_saturated['server_cpu_ms_per_request']} ms, "
          f"bare {bare_saturated['server_cpu_ms_per_request']} ms: ratio {ratio:.3f} "
          f"(minimum {minimum}, goal {TARGETS['cpu_ratio_goal']}); paced p99 {p99} ms vs bare "
          f"{bare_p99} ms; errors {errors}", flush=True)
    return {"backend": name, "workers": args.workers, "database_version": database.version
            if database else sqlite3.sqlite_version,
            "memory_mb_per_worker": {"after_warmup": rss_before,
                                     f"after_{args.calls}_calls": rss_after,
                                     "calls_between": args.calls},
            "service": {"saturated": service_saturated, "paced": service_paced},
            "bare": {"saturated": bare_saturated, "paced": bare_paced},
            **({"bare_with_transaction": {"paced": floor_paced}} if floor_paced else {}),
            "verdict": verdict}


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("Flask", "Werkzeug", "SQLAlchemy", "gunicorn", "psycopg", "twilio", "psutil"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"nproc": len(os.sched_getaffinity(0)), "cpus": psutil.cpu_count(),
            "cpu_model": model, "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "sqlite": sqlite3.sqlite_version, "packages": versions, "commit": commit,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000,
                        help="whole calls at saturation against the service; the workers' "
                             "memory is read before and after them (default 10000)")
    parser.add_argument("--bare-calls", type=int, default=3_000,
                        help="how many of those calls are replayed against the bare endpoint "
                             "(default 3000: its CPU per request settles well before)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the saturating calls alternate between the service and the "
                             "bare endpoint in this many rounds, so a drift in the "
                             "machine's speed meets both alike (default 5)")
    parser.add_argument("--paced-calls", type=int, default=480,
                        help="whole calls at a caller's pace, on each server (default 480)")
    parser.add_argument("--paced-rounds", type=int, default=4,
                        help="the paced calls alternate between the two servers in this "
                             "many rounds, the same callers on both (default 4)")
    parser.add_argument("--think", type=float, default=1.0,
                        help="seconds a paced caller listens before every answer (default 1)")
    parser.add_argument("--arrivals", choices=("spread", "together"), default="spread",
                        help="paced phase: the first calls start spread evenly over one "
                             "think time (default), or all at the same instant, which keeps "
                             "the callers answering in bursts of --concurrency at once")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=100, help="calls before measuring")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--label", default="", help="a word for the README table, e.g. before")
    parser.add_argument("--note", default="", help="a sentence kept with the figures")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.paced_rounds < 1:
        parser.error("--rounds and --paced-rounds must be at least 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    # A terminated run still stops its servers and drops its database (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = dt.datetime.now(dt.timezone.utc)
    result = {"label": args.label, "note": args.note,
              "started": started.isoformat(timespec="seconds"), "machine": machine(),
              "settings": {k: v for k, v in vars(args).items() if k not in ("label", "note")},
              "targets": TARGETS, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in backends:
            result["runs"].append(run_backend("sqlite", f"sqlite:///{tmp}/bench.db", None, args,
                                              Path(tmp) / "instance-sqlite"))
        database = postgres() if "postgresql" in backends else None
        if database:
            try:
                result["runs"].append(run_backend("postgresql", database.url, database, args,
                                                  Path(tmp) / "instance-pg"))
            finally:
                database.drop()
    finished = dt.datetime.now(dt.timezone.utc)
    result["finished"] = finished.isoformat(timespec="seconds")
    result["duration_seconds"] = round((finished - started).total_seconds())
    RESULTS.mkdir(parents=True, exist_ok=True)
    body = json.dumps(result, indent=2)
    stamp = result["finished"][:19].replace(":", "")
    (RESULTS / f"bench-{stamp}{'-' + args.label if args.label else ''}.json").write_text(body)
    (RESULTS / "latest.json").write_text(body)
    from report import write_readme

    write_readme(ROOT / "bench" / "README.md", result)
    print(f"Wrote {RESULTS / 'latest.json'} and bench/README.md "
          f"({result['duration_seconds']} s)")


if __name__ == "__main__":
    main()
