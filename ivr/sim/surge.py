"""The surge simulator: many whole calls at once, with a realistic mix of callers, and
the figures an engineer watches during a surge."""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from .simulator import CallResult, Simulator, Transport

NUMBERS = ["+18887999666", "+611800768027", "+33800946464", "+918000502040", "+81531320070",
           "+64800475039", "+658003211249", "+448003687314", "+442070398961"]

# From the demo directory (config/demo-accounts.csv): PMI and host key by kind of caller.
ELIGIBLE = [("5550100201", "9164023"), ("5550100211", "41720586"), ("5550100301", "27461930"),
            ("5550100311", "6093174"), ("5550100401", "7719304"), ("5550100411", "3640582"),
            ("5550100501", "9037415"), ("5550100511", "1476208")]
WEB = [("5550100101", "3917462"), ("5550100111", "60481275")]
SELF_SERVICE = [("5550100001", "482913"), ("5550100021", "58204917"), ("5550100221", "8539201")]

# Share of calls of each kind, and the outcome the service must record for it (EXPECTED),
# or, when its record cannot be read, the outcome the caller must hear (HEARD).
MIX = {"eligible": 0.55, "rejected_web": 0.10, "rejected_self_service": 0.15,
       "failed_auth": 0.10, "abandoned": 0.10}
EXPECTED = {"eligible": "routed", "rejected_web": "rejected_web",
            "rejected_self_service": "rejected_self_service", "failed_auth": "failed_auth",
            "abandoned": "abandoned"}
HEARD = {"eligible": "routed", "rejected_web": "hangup", "rejected_self_service": "hangup",
         "failed_auth": "hangup", "abandoned": "abandoned"}
# Callers' numbers: North American 555-0100 to 555-0199, the only ones set aside for
# fiction (a simulated call is stored in the database it runs against, and texted), a
# hundred in each of these US area codes: 15,000 callers, each a valid number of its own
# (an invalid one would count under the lockout key withheld callers share), enough for
# a whole benchmark run (10,580 calls). Not 415 (simulate's default caller, +1 415 555
# 0100) nor the simulated engineers' area codes (engineers.ENGINEER_AREAS).
CALLER_AREAS = """
    201 202 203 205 206 207 208 209 210 212 213 214 215 216 217 218 219 220 223 224 225
    227 228 229 231 234 235 239 240 248 251 252 253 254 256 260 262 267 269 270 272 274
    276 279 281 283 301 302 303 304 305 307 308 309 310 312 313 314 315 316 317 318 319
    320 321 323 324 325 326 327 329 330 331 332 334 336 337 339 341 346 347 350 351 352
    353 360 361 363 364 369 380 385 386 401 402 404 405 406 407 409 410 412 413 414 417
    419 423 424 425 430 432 434 435 440 442 443 445 447 448 458 463 464 469 470 472 475
    478 479 480 484 501 502 503 504 505 507 508 509 512 513 515 516 517 518 520 530 531
    534 539 540""".split()
DISTINCT_CALLERS = 100 * len(CALLER_AREAS)


def caller_phone(n: int) -> str:
    """The number of simulated caller n: fictional, distinct from the others' up to
    ``DISTINCT_CALLERS``, then met again in the same order."""
    n %= DISTINCT_CALLERS
    return f"+1{CALLER_AREAS[n // 100]}55501{n % 100:02d}"


def plan_call(n: int, rng: random.Random) -> tuple[str, str, str, list[str]]:
    """(kind, dialled number, caller number, digits) of the n-th call."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    to = NUMBERS[n % len(NUMBERS)]
    caller = caller_phone(n)
    if kind == "eligible":
        pmi, key = rng.choice(ELIGIBLE)
        digits = ["2", f"{pmi}#", f"{key}#", str(rng.randint(1, 4))]
    elif kind in ("rejected_web", "rejected_self_service"):
        pmi, key = rng.choice(WEB if kind == "rejected_web" else SELF_SERVICE)
        digits = ["2", f"{pmi}#", f"{key}#"]
    elif kind == "failed_auth":  # unknown PMIs, so no real account gets locked
        digits = ["2"] + [f"59{rng.randrange(10**8):08d}#", "8203517#"] * 3
    else:
        digits = ["2", f"{rng.choice(ELIGIBLE)[0]}#"][: rng.randint(0, 2)]
    return kind, to, caller, digits


@dataclass
class SurgeReport:
    calls: int
    concurrency: int
    think: float
    seconds: float
    requests: int
    by_kind: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    listening: dict = field(default_factory=dict)  # seconds of speech before the queue

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "calls": self.calls, "concurrency": self.concurrency, "think_seconds": self.think,
            "seconds": round(self.seconds, 3), "requests": self.requests,
            "calls_per_second": round(self.calls_per_second, 1),
            "requests_per_second": round(self.requests_per_second, 1),
            "by_kind": self.by_kind, "latency_ms": self.latency_ms,
            "errors": self.errors[:50], "error_count": len(self.errors),
            "unexpected": self.unexpected[:50], "unexpected_count": len(self.unexpected),
            "listening_seconds": self.listening,
        }

    def table(self) -> str:
        lines = [
            f"{self.calls} calls at concurrency {self.concurrency} (think {self.think:g} s) "
            f"in {self.seconds:.1f} s: "
            f"{self.calls_per_second:.1f} calls/s, {self.requests_per_second:.1f} requests/s",
            f"{'step':<22} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
        ]
        for step, figures in self.latency_ms.items():
            lines.append(f"{step:<22} {int(figures['count']):>9} {figures['p50']:>8.1f} "
                         f"{figures['p95']:>8.1f} {figures['p99']:>8.1f}")
        routed = self.listening.get("routed")
        if routed:
            lines.append(f"speech before the queue (routed calls, estimated): mean "
                         f"{routed['mean']:.1f} s, longest {routed['longest']:.1f} s "
                         f"(to {routed['longest_to']})")
        every = self.listening.get("all")
        if every:
            lines.append(f"speech heard before the queue or the end (all calls): mean "
                         f"{every['mean']:.1f} s, longest {every['longest']:.1f} s "
                         f"(to {every['longest_to']})")
        lines.append(f"errors: {len(self.errors)}; unexpected outcomes: {len(self.unexpected)}")
        lines.extend(f"  {problem}" for problem in (self.errors + self.unexpected)[:10])
        return "\n".join(lines)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return {"count": len(ordered), "p50": round(at(0.50), 2), "p95": round(at(0.95), 2),
            "p99": round(at(0.99), 2), "mean": round(statistics.fmean(ordered) * 1000, 2)}


def run_surge(make_transport: Callable[[], Transport], auth_token: str, calls: int,
              concurrency: int, *, signing_base: str | None = None, seed: int = 1,
              think: float = 0.0, progress: Callable[[int], None] | None = None,
              recorded: Callable[[str], str | None] | None = None) -> SurgeReport:
    """Drive ``calls`` whole calls, ``concurrency`` at a time, each thread its own client.
    ``think`` is the pause before each answer (a caller listening to the prompt); 0 sends
    the next request at once, which measures throughput rather than a caller's pace.
    ``recorded`` reads the service's outcome of a call (``Simulator``)."""
    rng = random.Random(seed)
    plans = [plan_call(n, rng) for n in range(calls)]
    local = threading.local()

    def one(plan) -> tuple[str, CallResult | None, str | None]:
        kind, to, caller, digits = plan
        if not hasattr(local, "simulator"):
            local.simulator = Simulator(make_transport(), auth_token, signing_base=signing_base,
                                        think=think, recorded=recorded)
        try:
            return kind, local.simulator.call(to, caller, digits), None
        except Exception as exc:  # a refused connection or a timeout is a result here
            return kind, None, f"{kind} call to {to}: {type(exc).__name__}: {exc}"

    started = time.perf_counter()
    results = []
    with ThreadPoolExecutor(concurrency) as pool:
        for outcome in pool.map(one, plans):
            results.append(outcome)
            if progress:
                progress(1)
    seconds = time.perf_counter() - started

    timings: dict[str, list[float]] = {}
    errors, unexpected, by_kind, requests = [], [], {}, 0
    for kind, result, error in results:
        by_kind[kind] = by_kind.get(kind, 0) + 1
        if error:
            errors.append(error)
            continue
        requests += result.requests
        for path, took in result.timings:
            timings.setdefault(path, []).append(took)
        if result.outcome == "error":
            errors.append(f"{kind} call {result.call_sid}: " + "; ".join(
                e.text for e in result.events if e.kind == "http_error"))
        elif result.outcome != (EXPECTED if result.recorded else HEARD)[kind] or (
                kind == "eligible" and not result.ticket):
            unexpected.append(f"{kind} call {result.call_sid}: {result.outcome}")
    finished = [result for _, result, error in results if result is not None and not error]
    listening = {"all": listening_summary(finished),
                 "routed": listening_summary([r for r in finished if r.outcome == "routed"])}
    latency = {step: percentiles(values) for step, values in sorted(timings.items())}
    every = [t for values in timings.values() for t in values]
    if every:
        latency["all"] = percentiles(every)
    return SurgeReport(calls, concurrency, think, seconds, requests, by_kind, latency, errors,
                       unexpected, {k: v for k, v in listening.items() if v})


def listening_summary(results: list[CallResult]) -> dict:
    """Mean and longest estimated seconds of speech before the queue (or the call's end)."""
    if not results:
        return {}
    longest = max(results, key=lambda r: r.seconds_before_queue)
    return {"calls": len(results),
            "mean": round(statistics.fmean(r.seconds_before_queue for r in results), 1),
            "longest": round(longest.seconds_before_queue, 1), "longest_to": longest.to}
