"""`make bench`: the surge simulator against gunicorn (workers = cores) on SQLite, and on
PostgreSQL when one is reachable, next to a bare Flask endpoint driven by the same client
with the same request count and concurrency. Writes bench/results/*.json and the table in
bench/README.md. Not part of `make test`: figures here are measurements, not assertions."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.sim.simulator import HttpTransport  # noqa: E402
from ivr.sim.surge import percentiles, run_surge  # noqa: E402

TOKEN = "bench-auth-token"
RESULTS = ROOT / "bench" / "results"
TARGETS = {"min_ratio": 0.5, "max_p99_ms": 50.0}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    def __init__(self, target: str, env: dict, workers: int, extra: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), "--log-level", "warning", *extra, target],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{target} did not start")

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.seek(0)
        return self.log.read()


def drive_bare(url: str, count: int, concurrency: int) -> dict:
    """The same HTTP client as the simulator, posting the same kind of form."""
    local = threading.local()
    params = {"CallSid": "CA" + "0" * 32, "AccountSid": "AC" + "0" * 32, "From": "+12025550100",
              "To": "+18887999666", "CallStatus": "in-progress", "Direction": "inbound",
              "ApiVersion": "2010-04-01"}

    def one(_):
        if not hasattr(local, "transport"):
            local.transport = HttpTransport(url)
        started = time.perf_counter()
        status, _body = local.transport.post("/voice", params, {"X-Twilio-Signature": "x"})
        return status, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(one, range(count)))
    seconds = time.perf_counter() - started
    errors = sum(1 for status, _ in outcomes if status != 200)
    return {"requests": count, "seconds": round(seconds, 3),
            "requests_per_second": round(count / seconds, 1), "errors": errors,
            "latency_ms": percentiles([t for _, t in outcomes])}


def prepare(env: dict) -> None:
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    for args in (["init-db"], ["accounts", "import", "config/demo-accounts.csv"]):
        subprocess.run(flask + args, cwd=ROOT, env=env, check=True, capture_output=True)


def postgres_url() -> str | None:
    url = os.environ.get("IVR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        from sqlalchemy import create_engine, text

        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS ivr_bench CASCADE"))
            connection.execute(text("CREATE SCHEMA ivr_bench"))
        admin.dispose()
    except Exception as exc:
        print(f"PostgreSQL not used: {type(exc).__name__}: {exc}".splitlines()[0])
        return None
    from sqlalchemy.engine import make_url

    return make_url(url).update_query_dict({"options": "-csearch_path=ivr_bench"}).render_as_string(
        hide_password=False)


def run_backend(name: str, database_url: str, calls: int, concurrency: int, workers: int,
                instance: Path, think: float, paced_calls: int) -> dict:
    env = {**os.environ, "IVR_DATABASE_URL": database_url, "TWILIO_AUTH_TOKEN": TOKEN,
           "IVR_INSTANCE_PATH": str(instance), "IVR_HOST_KEY_PEPPER": "bench-pepper",
           "PYTHONWARNINGS": "ignore"}
    env.pop("IVR_PUBLIC_URL", None)
    prepare(env)
    print(f"[{name}] surge: {calls} calls at concurrency {concurrency}, {workers} workers")
    full = Gunicorn("app:app", env, workers)
    try:
        run_surge(lambda: HttpTransport(full.url), TOKEN, min(100, calls), concurrency, seed=99)
        # Saturation: every caller answers at once, so the service never waits for anyone.
        surge = run_surge(lambda: HttpTransport(full.url), TOKEN, calls, concurrency, seed=7)
        print(surge.table())
        # Callers' pace: each listens `think` seconds before answering a prompt.
        paced = run_surge(lambda: HttpTransport(full.url), TOKEN, paced_calls, concurrency,
                          seed=8, think=think)
        print(paced.table())
    finally:
        log = full.stop()
    bare = Gunicorn("bare:app", env, workers, ["--pythonpath", "bench"])
    try:
        drive_bare(bare.url, min(500, surge.requests), concurrency)
        baseline = drive_bare(bare.url, surge.requests, concurrency)
    finally:
        bare.stop()
    ratio = surge.requests_per_second / baseline["requests_per_second"]
    p99 = paced.latency_ms["all"]["p99"]
    verdict = {
        "ratio": round(ratio, 3),
        "ratio_meets_target": ratio >= TARGETS["min_ratio"],
        "paced_p99_ms": p99,
        "paced_p99_meets_target": p99 < TARGETS["max_p99_ms"],
        "saturated_p99_ms": surge.latency_ms["all"]["p99"],
        "no_errors": not (surge.errors or surge.unexpected or paced.errors or paced.unexpected),
        "database_locked_in_log": log.count("database is locked"),
    }
    print(f"[{name}] bare endpoint: {baseline['requests_per_second']} requests/s; "
          f"ratio {ratio:.2f}; p99 at callers' pace {p99} ms")
    return {"backend": name, "workers": workers, "surge": surge.as_dict(),
            "paced": paced.as_dict(), "bare": baseline, "verdict": verdict}


def write_readme(result: dict) -> None:
    readme = ROOT / "bench" / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    marker = "<!-- results -->"
    head = text.split(marker)[0] if marker in text else "# Benchmark\n"
    rows = ["| backend | workers | concurrent calls | calls/s | requests/s | bare requests/s "
            "| ratio (target ≥ 0.5) | saturated p50 / p99 ms | paced p50 / p95 / p99 ms "
            "(target p99 < 50) | errors |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        s, p, b, v = run["surge"], run["paced"], run["bare"], run["verdict"]
        errors = s["error_count"] + s["unexpected_count"] + p["error_count"] + p["unexpected_count"]
        rows.append(f"| {run['backend']} | {run['workers']} | {s['concurrency']} "
                    f"| {s['calls_per_second']} | {s['requests_per_second']} "
                    f"| {b['requests_per_second']} | {v['ratio']} "
                    f"| {s['latency_ms']['all']['p50']} / {s['latency_ms']['all']['p99']} "
                    f"| {p['latency_ms']['all']['p50']} / {p['latency_ms']['all']['p95']} / "
                    f"{p['latency_ms']['all']['p99']} | {errors} |")
    stamp = f"Last run {result['finished']} on {result['machine']['cpus']} CPUs " \
            f"({result['machine']['python']}); raw figures in `results/latest.json`."
    readme.write_text(head.rstrip() + f"\n\n{marker}\n{stamp}\n\n" + "\n".join(rows) + "\n",
                      encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--think", type=float, default=0.25,
                        help="seconds a paced caller listens before each answer")
    parser.add_argument("--paced-calls", type=int, default=600)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(calls=args.calls, concurrency=args.concurrency, workers=args.workers,
                      think=args.think, paced_calls=args.paced_calls)
        runs.append(run_backend("sqlite", f"sqlite:///{tmp}/bench.db",
                                instance=Path(tmp) / "instance-sqlite", **common))
        pg = None if args.no_postgres else postgres_url()
        if pg:
            runs.append(run_backend("postgresql", pg, instance=Path(tmp) / "instance-pg", **common))
    result = {
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "targets": TARGETS, "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    body = json.dumps(result, indent=2)
    (RESULTS / f"bench-{result['finished'][:19].replace(':', '')}.json").write_text(body)
    (RESULTS / "latest.json").write_text(body)
    write_readme(result)
    print(f"Wrote {RESULTS / 'latest.json'} and bench/README.md")


if __name__ == "__main__":
    main()
