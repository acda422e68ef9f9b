"""The floor simulator: callers and engineers together, in simulated time.

Callers arrive, go through the IVR to a queue and wait; engineers call the engineer line
(``/voice/agent``), hear whom they get, are bridged (the simulator plays Twilio: it asks
the ``<Queue url>`` for the dequeued caller), talk a while, finish and take the next
caller. Every request is a real signed webhook against the app; only the clock between
them is simulated, so a run of an hour of traffic takes seconds. The report gives the
waits per priority.
"""

from __future__ import annotations

import heapq
import random
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from .simulator import Simulator, Transport, new_call_sid
from .surge import ELIGIBLE, NUMBERS, caller_phone

ENGINEER_LINE = "+15005550006"


# Area codes no simulated caller uses (surge.CALLER_AREAS, simulate's default 415).
ENGINEER_AREAS = ("510", "408")


def engineer_phone(n: int) -> str:
    """The phone of simulated engineer n: a fictional 555-01xx number (the only ones set
    aside for fiction), a hundred per area code, none a simulated caller's."""
    return f"+1{ENGINEER_AREAS[n // 100]}55501{n % 100:02d}"


def engineer_name(n: int) -> str:
    return f"sim-engineer-{n + 1}"


@dataclass
class Caller:
    call_sid: str
    to: str
    caller: str
    priority: int
    arrived: float
    ticket: str | None = None
    queue: str | None = None
    queue_action: str | None = None
    enqueued: float | None = None
    answered: float | None = None
    engineer: str | None = None


@dataclass
class FloorReport:
    calls: int
    engineers: int
    simulated_seconds: float
    waits: dict[int, list[float]]
    served: int
    unserved: int
    pickups: int
    empty_polls: int
    errors: list[str] = field(default_factory=list)

    def figures(self, priority: int) -> dict[str, float]:
        waits = self.waits.get(priority) or []
        if not waits:
            return {"callers": 0, "mean": 0.0, "median": 0.0, "max": 0.0}
        return {"callers": len(waits), "mean": round(statistics.fmean(waits), 1),
                "median": round(statistics.median(waits), 1), "max": round(max(waits), 1)}

    def as_dict(self) -> dict:
        return {"calls": self.calls, "engineers": self.engineers,
                "simulated_seconds": round(self.simulated_seconds, 1), "served": self.served,
                "unserved": self.unserved, "pickups": self.pickups,
                "empty_polls": self.empty_polls,
                "waits_seconds": {f"P{p}": self.figures(p) for p in (1, 2, 3, 4)},
                "errors": self.errors[:50]}

    def table(self) -> str:
        lines = [f"{self.calls} callers, {self.engineers} engineers: {self.served} served in "
                 f"{self.simulated_seconds / 60:.1f} simulated minutes "
                 f"({self.unserved} not served, {self.empty_polls} empty looks)",
                 f"{'priority':<9} {'callers':>8} {'mean wait':>10} {'median':>8} {'max':>8}"]
        for p in (1, 2, 3, 4):
            f = self.figures(p)
            lines.append(f"P{p:<8} {f['callers']:>8} {_mmss(f['mean']):>10} "
                         f"{_mmss(f['median']):>8} {_mmss(f['max']):>8}")
        lines.extend(f"error: {e}" for e in self.errors[:10])
        return "\n".join(lines)


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class FloorSimulation:
    def __init__(self, transport: Transport, auth_token: str, *, calls: int, engineers: int,
                 seed: int = 1, signing_base: str | None = None, arrival_gap: float = 30.0,
                 talk: tuple[float, float] = (120.0, 480.0), wrap_up: float = 10.0):
        self.sim = Simulator(transport, auth_token, signing_base=signing_base)
        self.rng = random.Random(seed)
        self.calls = calls
        self.engineers = engineers
        self.arrival_gap = arrival_gap
        self.talk = talk
        self.wrap_up = wrap_up
        self.events: list[tuple[float, int, str, object]] = []
        self.counter = 0
        self.by_queue: dict[str, Caller] = {}
        self.errors: list[str] = []
        self.pickups = 0
        self.empty_polls = 0

    # -- plumbing ----------------------------------------------------------------------

    def at(self, when: float, kind: str, data: object) -> None:
        self.counter += 1
        heapq.heappush(self.events, (when, self.counter, kind, data))

    def post(self, path: str, params: dict[str, str]) -> ET.Element | None:
        status, body = self.sim.post(path, params)
        if status != 200:
            self.errors.append(f"HTTP {status} from {path}")
            return None
        return ET.fromstring(body.encode("utf-8"))

    @staticmethod
    def params(sid: str, caller: str, to: str, **extra: str) -> dict[str, str]:
        return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": caller, "To": to,
                "CallStatus": "in-progress", "Direction": "inbound",
                "ApiVersion": "2010-04-01", **extra}

    # -- callers -----------------------------------------------------------------------

    def arrive(self, caller: Caller, now: float) -> None:
        """Through the IVR to the queue, at once (the prompts take no simulated time)."""
        pmi, key = self.rng.choice(ELIGIBLE)
        root = self.post("/voice", self.params(caller.call_sid, caller.caller, caller.to))
        steps = [("/voice/menu", "2"), ("/voice/pmi", pmi), ("/voice/host-key", key),
                 ("/voice/priority", str(caller.priority))]
        for path, digits in steps:
            if root is None:
                return
            root = self.post(path, self.params(caller.call_sid, caller.caller, caller.to,
                                               Digits=digits))
        enqueue = root.find("Enqueue") if root is not None else None
        if enqueue is None or not (enqueue.text or "").strip():
            self.errors.append(f"caller {caller.call_sid} was not queued")
            return
        caller.queue = enqueue.text.strip()
        caller.queue_action = enqueue.get("action")
        caller.ticket = (parse_qs(urlsplit(caller.queue_action or "").query).get("ticket")
                         or [None])[0]
        caller.enqueued = now
        self.by_queue[caller.queue] = caller

    # -- engineers ---------------------------------------------------------------------

    def engineer_turn(self, data: tuple[int, str, str | None], now: float) -> None:
        n, sid, path = data
        phone = engineer_phone(n)
        extra = {"Digits": "1"} if path == "next" else {}
        root = self.post("/voice/agent?wait=1" if path == "wait" else "/voice/agent",
                         self.params(sid, phone, ENGINEER_LINE, **extra))
        if root is None:
            return
        dial = root.find("Dial")
        queue = dial.find("Queue") if dial is not None else None
        if queue is None:
            if root.find("Redirect") is None:
                self.errors.append(f"engineer {n + 1} got neither a caller nor a hold")
                return
            self.empty_polls += 1
            pause = root.find("Pause")
            wait = float(pause.get("length", "15")) if pause is not None else 15.0
            if self.by_queue or any(kind == "arrive" for _, _, kind, _ in self.events):
                self.at(now + wait, "engineer", (n, sid, "wait"))
            return
        caller = self.by_queue.pop((queue.text or "").strip(), None)
        if caller is None:  # the queue named nobody we know: Twilio's Dial would time out
            after = self.post(dial.get("action"), self.params(sid, phone, ENGINEER_LINE,
                                                              DialCallStatus="no-answer"))
            if after is not None:
                self.at(now + 1, "engineer", (n, sid, None))
            return
        self.pickups += 1
        waited = now - (caller.enqueued or now)
        self.post(queue.get("url"), self.params(caller.call_sid, caller.caller, caller.to,
                                                QueueSid="QU" + "0" * 32,
                                                QueueTime=str(int(waited)),
                                                DequeingCallSid=sid))
        caller.answered, caller.engineer = now, engineer_name(n)
        talk = self.rng.uniform(*self.talk)
        self.at(now + talk, "hang-up", (n, sid, dial.get("action"), caller))

    def hang_up(self, data, now: float) -> None:
        n, sid, action, caller = data
        waited = int((caller.answered or now) - (caller.enqueued or now))
        self.post(caller.queue_action, self.params(caller.call_sid, caller.caller, caller.to,
                                                   QueueResult="bridged", QueueTime=str(waited)))
        self.post("/voice/status", self.params(caller.call_sid, caller.caller, caller.to,
                                               CallStatus="completed",
                                               CallDuration=str(int(now - caller.arrived))))
        root = self.post(action, self.params(sid, engineer_phone(n), ENGINEER_LINE,
                                             DialCallStatus="completed"))
        if root is not None and root.find("Gather") is not None:
            self.at(now + self.wrap_up, "engineer", (n, sid, "next"))

    # -- the run -----------------------------------------------------------------------

    def run(self) -> FloorReport:
        callers = []
        clock = 0.0
        for i in range(self.calls):
            clock += self.rng.expovariate(1 / self.arrival_gap)
            caller = Caller(new_call_sid(), NUMBERS[0], caller_phone(i),
                            self.rng.randint(1, 4), clock)
            callers.append(caller)
            self.at(clock, "arrive", caller)
        for n in range(self.engineers):
            self.at(0.0, "engineer", (n, new_call_sid(), None))
        now = 0.0
        while self.events:
            now, _, kind, data = heapq.heappop(self.events)
            if kind == "arrive":
                self.arrive(data, now)
            elif kind == "engineer":
                self.engineer_turn(data, now)
            else:
                self.hang_up(data, now)
        waits: dict[int, list[float]] = {1: [], 2: [], 3: [], 4: []}
        served = 0
        for caller in callers:
            if caller.answered is not None and caller.enqueued is not None:
                waits[caller.priority].append(caller.answered - caller.enqueued)
                served += 1
        return FloorReport(self.calls, self.engineers, now, waits, served,
                           self.calls - served, self.pickups, self.empty_polls, self.errors)


def run_floor(transport: Transport, auth_token: str, calls: int, engineers: int, *,
              seed: int = 1, signing_base: str | None = None) -> FloorReport:
    return FloorSimulation(transport, auth_token, calls=calls, engineers=engineers, seed=seed,
                           signing_base=signing_base).run()


def ensure_engineers(count: int) -> None:
    """The simulated engineers in this app's database (added once, any language, any
    queue), inside a Flask app context."""
    from ..desk.engineers import Engineers
    from ..desk.service import DeskError
    from ..extension import ivr

    engineers = Engineers.of(ivr())
    known = {e.name for e in engineers.list()}
    for n in range(count):
        if engineer_name(n) not in known:
            try:
                engineers.add(engineer_name(n), phone=engineer_phone(n))
            except DeskError as exc:
                raise SystemExit(f"cannot add simulated engineer {engineer_name(n)}: {exc}")
