"""Where a webhook's time goes, step by step: whole calls in-process (no HTTP, one thread),
the app wrapped in a WSGI middleware that times every request and, in a second pass,
profiles it with pyinstrument into one profile per step. Only the server's side is inside
the middleware (not the test client or the simulator).

For each step the time per request is split into categories (SQLAlchemy ORM, Core, the
database driver and server, Werkzeug, Flask, the signature check, TwiML, logging, metrics,
the service's own code, ...), scaled to the time measured without the profiler, so the
table reads in milliseconds per request. Written to bench/results/profile.txt (with the
pyinstrument trees) on SQLite and, when reachable, on PostgreSQL.

``--pause 0.03`` waits that long before every request (outside what is timed), as a
caller's pace does: each request then finds the caches cold, and the profile says where a
paced request's time goes (written to bench/results/profile-paced.txt)."""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session
from sqlalchemy import Engine, event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import in_process, postgres  # noqa: E402

OUT = ROOT / "bench" / "results" / "profile.txt"
OUT_PACED = ROOT / "bench" / "results" / "profile-paced.txt"
INTERVAL = 0.0002  # seconds between samples

DRIVER_CALLS = {"do_execute", "do_execute_no_params", "do_executemany", "do_commit",
                "do_rollback", "do_begin", "do_ping", "do_close"}
# (category, test on file path and function), first match wins.
DRIVER = "database driver and server (execute, commit)"
CATEGORIES = [
    (DRIVER,
     lambda path, fn: ("/sqlalchemy/engine/default.py" in path and fn in DRIVER_CALLS)
     or "/psycopg/" in path or "/psycopg_binary/" in path or "sqlite3" in path),
    ("SQLAlchemy ORM (session, identity map, flush)", lambda path, fn: "/sqlalchemy/orm/" in path),
    ("SQLAlchemy Core (statements, compile cache, rows, pool)", lambda path, fn: "/sqlalchemy/" in path),
    ("signature check (twilio RequestValidator)",
     lambda path, fn: "/twilio/request_validator" in path),
    ("TwiML building (twilio, xml.etree)", lambda path, fn: "/twilio/" in path or "/xml/" in path),
    ("Werkzeug (environ, form parsing, routing, response)", lambda path, fn: "/werkzeug/" in path),
    ("Flask (contexts, dispatch)", lambda path, fn: "/flask/" in path),
    ("metrics (prometheus_client)", lambda path, fn: "/prometheus_client/" in path),
    ("logging", lambda path, fn: "/logging/" in path),
    ("hashing (hmac, hashlib)", lambda path, fn: path.endswith(("/hmac.py", "/hashlib.py"))),
    ("phonenumbers", lambda path, fn: "/phonenumbers/" in path),
    ("pydantic", lambda path, fn: "/pydantic" in path),
    ("the service's own code (ivr/)", lambda path, fn: "/ivr/" in path),
]
OTHER = "other (standard library, json, datetime, ...)"


def category(path: str, function: str) -> str:
    for name, test in CATEGORIES:
        if test(path, function):
            return name
    return OTHER


class Steps:
    """WSGI middleware: wall and CPU time per request by path, optionally under one
    pyinstrument profiler per path."""

    def __init__(self, app, pause: float = 0.0):
        self.app = app
        self.pause = pause
        self.profile = False
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.profiler = Profiler(interval=INTERVAL)
        self.sessions: dict[str, list[Session]] = {}
        self.statements: dict[str, list[int]] = {}
        self._statements = 0
        # Every engine's statements (a class-level listener: no hold on the app's storage).
        event.listen(Engine, "before_cursor_execute", self._count)

    def _count(self, *_args) -> None:
        self._statements += 1

    def __call__(self, environ, start_response):
        step = environ.get("PATH_INFO", "")
        if self.pause:
            time.sleep(self.pause)
        if self.profile:
            self.profiler.start()
        self._statements = 0
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return list(self.app(environ, start_response))
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            if self.profile:
                # One session per request, kept apart: the profiler would otherwise merge
                # each into all the earlier ones (quadratic in the number of samples).
                self.sessions.setdefault(step, []).append(self.profiler.stop())
                self.profiler.reset()
            else:
                self.wall.setdefault(step, []).append(wall)
                self.statements.setdefault(step, []).append(self._statements)
                self.cpu.setdefault(step, []).append(cpu)


def combined(sessions: list[Session]) -> Session:
    """One session of many, merged pairwise in a balanced tree."""
    while len(sessions) > 1:
        sessions = [Session.combine(*sessions[i:i + 2]) if i + 1 < len(sessions) else sessions[i]
                    for i in range(0, len(sessions), 2)]
    return sessions[0]


DBAPI_CALLS = ("Cursor.", "Connection.", "ServerCursor.", "PGconn.", "PQ")


def split(session: Session) -> dict[str, float]:
    """Seconds of self time per category over a session's frame tree. A built-in function
    (C code) counts where its caller does, except the DB-API driver's own methods."""
    totals: dict[str, float] = {}
    root = session.root_frame()
    stack = [(root, OTHER)] if root else []
    while stack:
        frame, parent = stack.pop()
        path, function = frame.file_path or "", frame.function or ""
        if frame.is_synthetic:
            name = parent
        elif path.startswith("<built-in>"):
            name = DRIVER if function.startswith(DBAPI_CALLS) else parent
        else:
            name = category(path, function)
        stack.extend((child, name) for child in frame.children)
        if frame.is_synthetic:
            continue
        self_time = frame.total_self_time
        if self_time > 0:
            totals[name] = totals.get(name, 0.0) + self_time
    return totals


def profile_backend(name: str, database_url: str, calls: int, seed: int,
                    pause: float = 0.0) -> str:
    from ivr.sim.surge import plan_call

    with in_process(database_url) as (app, simulator):
        steps = Steps(app.wsgi_app)
        app.wsgi_app = steps
        rng = random.Random(seed)
        plans = [plan_call(n, rng) for n in range(50 + 2 * calls)]
        for _kind, to, caller, digits in plans[:50]:  # warm up: caches, connections
            simulator.call(to, caller, digits)
        steps.wall.clear()
        steps.cpu.clear()
        steps.pause = pause
        for _kind, to, caller, digits in plans[50:50 + calls]:
            result = simulator.call(to, caller, digits)
            if result.outcome is None or result.outcome == "error":
                raise SystemExit(f"profile: a call to {to} ended in {result.outcome!r}: "
                                 "the app refused it, so there is nothing to profile")
        steps.profile = True
        for _kind, to, caller, digits in plans[50 + calls:]:
            simulator.call(to, caller, digits)
    return report(name, steps)


def report(name: str, steps: Steps) -> str:
    order = sorted(steps.wall, key=lambda s: (-len(steps.wall[s]), s))
    plain = {s: 1000 * sum(steps.wall[s]) / len(steps.wall[s]) for s in order}
    cpu = {s: 1000 * sum(steps.cpu[s]) / len(steps.cpu[s]) for s in order}
    requests = {s: len(steps.wall[s]) for s in order}
    statements = {s: sum(steps.statements[s]) / len(steps.statements[s]) for s in order}
    total_requests = sum(requests.values())
    plain["all"] = sum(plain[s] * requests[s] for s in order) / total_requests
    cpu["all"] = sum(cpu[s] * requests[s] for s in order) / total_requests
    statements["all"] = sum(statements[s] * requests[s] for s in order) / total_requests
    sessions = {s: combined(steps.sessions[s]) for s in order if steps.sessions.get(s)}
    shares: dict[str, dict[str, float]] = {}
    for step, session in sessions.items():
        totals = split(session)
        whole = sum(totals.values()) or 1.0
        # Categories scaled to the time measured without the profiler, in ms per request.
        shares[step] = {k: plain[step] * v / whole for k, v in totals.items()}
    every = {}
    for step in shares:
        for k, v in shares[step].items():
            every[k] = every.get(k, 0.0) + v * requests[step] / total_requests
    shares["all"] = every
    columns = [*order, "all"]
    width = max(len(c) for c in columns) + 2
    label = 56
    paced = f", {steps.pause * 1000:g} ms before each" if steps.pause else ""
    lines = [f"== {name}: {total_requests} requests in-process without the profiler "
             f"(then as many again under it){paced} ==", "",
             f"{'ms per request':<{label}}" + "".join(f"{c:>{width}}" for c in columns),
             f"{'requests':<{label}}" + "".join(
                 f"{requests.get(c, total_requests):>{width}}" for c in columns),
             f"{'wall time in the app, no profiler':<{label}}" + "".join(
                 f"{plain[c]:>{width}.2f}" for c in columns),
             f"{'CPU time in the app, no profiler':<{label}}" + "".join(
                 f"{cpu[c]:>{width}.2f}" for c in columns),
             f"{'SQL statements per request (SQLite: with BEGIN)':<{label}}" + "".join(
                 f"{statements[c]:>{width}.1f}" for c in columns),
             f"{'of which (profiled shares, scaled to the wall time):':<{label}}"]
    names = sorted(every, key=lambda k: -every[k])
    lines[2] += f"{'% of all':>{width}}"
    for k in names:
        lines.append(f"  {k[:label - 2]:<{label - 2}}" + "".join(
            f"{shares.get(c, {}).get(k, 0.0):>{width}.2f}" for c in columns)
            + f"{100 * every[k] / (plain['all'] or 1):>{width}.1f}")
    lines.append("")
    for step in order:
        if step not in sessions:
            continue
        text = ConsoleRenderer(unicode=False, color=False, show_all=False).render(sessions[step])
        body = "\n".join(line for line in text.splitlines()[7:] if line.strip())
        lines += [f"-- {name} {step}: pyinstrument, {len(steps.sessions[step])} requests, "
                  f"interval {INTERVAL * 1000:g} ms --", body, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400,
                        help="whole calls timed, then as many profiled (default 400)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds to wait before every request, as a caller's pace does "
                             "(default 0: back to back)")
    args = parser.parse_args(argv)
    out = OUT_PACED if args.pause else OUT
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in backends:
            sections.append(profile_backend("sqlite", f"sqlite:///{tmp}/profile.db",
                                            args.calls, seed=5, pause=args.pause))
        database = postgres("ivr_bench_profile") if "postgresql" in backends else None
        if database:
            try:
                sections.append(profile_backend("postgresql", database.url, args.calls,
                                                seed=5, pause=args.pause))
            finally:
                database.drop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(__doc__.split("\n\n")[0] + "\n\n" + "\n".join(sections), encoding="utf-8")
    for section in sections:
        print("\n".join(section.split("\n-- ")[0].splitlines()))
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
