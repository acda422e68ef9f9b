"""The tables `make bench` writes under the results marker of bench/README.md."""

from __future__ import annotations

from pathlib import Path

try:
    from measure import limited_by
except ImportError:  # imported as bench.report
    from .measure import limited_by

MARKER = "<!-- results -->"


def _ms(summary: dict, key: str) -> str:
    value = summary.get(key)
    return "–" if value is None else f"{value:g}"


def _cores(figures: dict) -> str:
    c = figures["cores"]
    side = figures.get("limited_by") or limited_by(c)
    return f"{c['server']} / {c['database']} / {c['client']} / {c['rest_of_machine']} ({side})"


def tables(result: dict) -> str:
    m = result["machine"]
    s = result["settings"]
    label = f" — **{result['label']}**" if result.get("label") else ""
    lines = [
        f"Last run {result['finished']}{label} ({result.get('duration_seconds', '?')} s), "
        f"commit `{m.get('commit', '')}`; raw figures in `results/latest.json`.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Python "
        f"{m['python']}, SQLite {m['sqlite']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f"; load average at start {m['load_average_at_start']}.",
        "",
        f"Settings: {s['workers']} gunicorn workers, {s['concurrency']} calls in progress, "
        f"{s['calls']} calls at saturation against the service ({s['bare_calls']} of them "
        f"replayed against the bare endpoint"
        + (f", in {s['rounds']} alternating rounds" if s.get("rounds") else "")
        + f"), {s['paced_calls']} calls at a caller's pace "
        + (f"in {s['paced_rounds']} alternating rounds " if s.get("paced_rounds") else "")
        + f"({s['think']:g} s before every answer; "
        + (f"the first calls arriving spread over {s['think']:g} s"
           if s.get("arrivals", "together") == "spread" else "all calls starting at once")
        + ") against each.",
    ]
    if result.get("note"):
        lines += ["", f"Note: {result['note']}"]
    lines += [
        "",
        "| database | server CPU per webhook: service / bare (ms) | ratio bare ÷ service "
        "(minimum; goal 0.5) | requests/s: service / bare | cores service: server / db / "
        "client / rest of machine (limited by) | cores bare: same | paced p99 service / bare (ms) "
        "(target ≤ 2×) | memory per worker (MB): after warm-up → after the saturating calls "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        sv, bare, v = run["service"], run["bare"], run["verdict"]
        memory = run["memory_mb_per_worker"]
        after_key = next(k for k in memory if k.startswith("after_") and k != "after_warmup")
        rss = ", ".join(f"{memory['after_warmup'].get(pid, '?')} → {mb}"
                        for pid, mb in memory[after_key].items())
        service_ms = sv["saturated"]["server_cpu_ms_per_request"]
        if run["backend"] == "postgresql":
            service_ms = (f"{service_ms} ({sv['saturated']['gunicorn_cpu_ms_per_request']} "
                          f"gunicorn + {sv['saturated']['database_cpu_ms_per_request']} "
                          "PostgreSQL)")
        met = "meets" if v["cpu_ratio_meets_minimum"] else "below"
        lines.append(
            f"| {run['backend']} | {service_ms} / {bare['saturated']['server_cpu_ms_per_request']} "
            f"| **{v['cpu_ratio']}** ({met} {v['cpu_ratio_minimum']}) "
            f"| {sv['saturated']['requests_per_second']} / {bare['saturated']['requests_per_second']} "
            f"| {_cores(sv['saturated'])} | {_cores(bare['saturated'])} "
            f"| {v['paced_p99_ms']} / {v['bare_paced_p99_ms']} ({v['paced_p99_times_bare']}×) "
            f"| {rss} | {v['errors']} |")
    # Each phase run in turns, its rounds: (phase, heading, one round's figures).
    in_rounds = (
        ("saturated", "Saturation in rounds, {}: service / bare ms per webhook (ratio) in each "
         "round, the two servers taking turns: ",
         lambda r: f"{r['service_ms']} / {r['bare_ms']} ({r['ratio']})"),
        ("paced", "At a caller's pace in rounds, {}: p99 service / bare (ms) in each round, "
         "the same callers on both: ",
         lambda r: f"{r['service_p99']} / {r['bare_p99']} ({r['times']}×)"
         + (f", bare with one transaction {r['floor_p99']} ({r['floor_times']}×)"
            if "floor_p99" in r else "")),
    )
    for run in result["runs"]:
        for phase, heading, figures in in_rounds:
            rounds = run["service"][phase].get("rounds")
            if rounds:
                lines += ["", heading.format(run["backend"])
                          + "; ".join(figures(r) for r in rounds) + "."]
    for run in result["runs"]:
        floor = run.get("bare_with_transaction", {}).get("paced")
        if floor:
            v, f = run["verdict"], floor["latency_ms"]["all"]
            lines += ["", f"At a caller's pace, {run['backend']}: the bare endpoint running "
                      "one webhook-shaped transaction per request (`bench/bare.py`: BEGIN, the "
                      "call's row read with a lock, written, COMMIT) answered in p50 / p95 / p99 "
                      f"{_ms(f, 'p50')} / {_ms(f, 'p95')} / {_ms(f, 'p99')} ms, "
                      f"{v['floor_paced_p99_times_bare']}× the bare endpoint's p99 "
                      f"(the service: {v['paced_p99_times_bare']}×), with "
                      f"{floor['server_cpu_ms_per_request']} ms of server CPU per request "
                      "(its PostgreSQL backends included)."]
    for run in result["runs"]:
        service, bare_run = run["service"]["paced"], run["bare"]["paced"]
        sv, bare = service["latency_ms"], bare_run["latency_ms"]
        floor = run.get("bare_with_transaction", {}).get("paced", {}).get("latency_ms")
        inside = service.get("in_worker", {}).get("latency_ms", {})
        lines += ["", f"At a caller's pace, {run['backend']} (ms; {service['requests']} requests "
                  f"to each server). \"Inside a worker\" is the service's own time from request "
                  "parsed to response written; the rest of what the client saw is waiting for a "
                  "free worker (and for a core):", "",
                  "| step | requests | service p50 / p95 / p99 | of it inside a worker p50 / "
                  "p99 | bare p50 / p95 / p99 |"
                  + (" bare with one transaction p50 / p95 / p99 |" if floor else ""),
                  "|---|---|---|---|---|" + ("---|" if floor else "")]
        for step in sorted(sv, key=lambda k: (k == "all", k)):
            b, i = bare.get(step, {}), inside.get(step, {})
            f = floor.get(step, {}) if floor else None
            lines.append(f"| {step} | {sv[step]['count']} "
                         f"| {_ms(sv[step], 'p50')} / {_ms(sv[step], 'p95')} / {_ms(sv[step], 'p99')} "
                         f"| {_ms(i, 'p50')} / {_ms(i, 'p99')} "
                         f"| {_ms(b, 'p50')} / {_ms(b, 'p95')} / {_ms(b, 'p99')} |"
                         + (f" {_ms(f, 'p50')} / {_ms(f, 'p95')} / {_ms(f, 'p99')} |"
                            if f is not None else ""))
        lines += ["", "Garbage collection in the service's workers: " + "; ".join(
            f"{phase} {g['collections']} collections (generation 2: "
            f"{g['by_generation'].get('2', 0)}), {g['total_ms']} ms in all, longest {g['max_ms']} ms"
            for phase, g in ((phase, run["service"][phase].get("in_worker", {}).get("gc"))
                             for phase in ("saturated", "paced")) if g) + "."]
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, result: dict) -> None:
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmark\n"
    head = text.split(MARKER)[0]
    readme.write_text(head.rstrip() + f"\n\n{MARKER}\n{tables(result)}", encoding="utf-8")
