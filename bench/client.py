"""The benchmark's load generator: light enough to drive the bare endpoint well past what
the service serves, so the figures describe the server rather than the client.

- `LightTransport`: a raw socket per caller thread, the request written by hand (no
  `requests` or `http.client` machinery on the way).
- `drive_calls`: whole calls against the service, planned by the surge driver
  (`ivr.sim.surge.plan_call`: every kind of caller, all nine numbers) and played by the
  call simulator, which signs every request as Twilio does and follows the TwiML it gets.
  Every exchange is recorded with the pause before it.
- `replay_calls`: the same recorded calls against another server (the bare endpoint): same
  paths and forms, signed again for that server's URL, same concurrency, the same pauses
  when paced, and the reply parsed as the simulator parses one.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator

from ivr.sim.simulator import Simulator
from ivr.sim.surge import EXPECTED, HEARD, plan_call


def problem_of(kind: str, result) -> str | None:
    """"error" for an HTTP error or a reply the simulator refused, "unexpected" for a call
    whose outcome is not the one planned, else None. The load generator has no access to
    the service's database, so a call's outcome is what its caller heard (``HEARD``:
    "hangup" for the calls the service ends with words), unless the simulator could read
    the recorded one (``EXPECTED``), as the surge driver does in-process."""
    if result.outcome == "error":
        return "error"
    planned = (EXPECTED if result.recorded else HEARD)[kind]
    if result.outcome != planned or (kind == "eligible" and not result.ticket):
        return "unexpected"
    return None


@dataclass
class Exchange:
    path: str
    params: dict[str, str]
    pause: float  # seconds between the previous reply of this call and this request
    seconds: float  # request sent to reply read
    status: int


class LightTransport:
    """The simulator's transport over a raw socket: the request written by hand, the reply
    read by its Content-Length. HTTP/1.1 keep-alive when the server keeps the connection
    open; gunicorn's sync workers close it after every reply, so it reconnects."""

    def __init__(self, base_url: str, timeout: float = 15.0):
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.address = (parts.hostname, parts.port or 80)
        self.host = parts.netloc
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.exchanges: list[Exchange] = []
        self._last_call: str | None = None
        self._last_reply = 0.0

    def post(self, path: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        call = params.get("CallSid")
        started = time.perf_counter()
        pause = started - self._last_reply if call == self._last_call else 0.0
        body = urlencode(params).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\n"
                   f"Content-Length: {len(body)}\r\n{extra}\r\n").encode("latin-1") + body
        try:
            status, reply = self._exchange(request)
        except (OSError, ValueError):
            self.close()
            raise
        self._last_reply = time.perf_counter()
        self._last_call = call
        self.exchanges.append(Exchange(path, params, pause, self._last_reply - started, status))
        return status, reply.decode("utf-8", "replace")

    def _exchange(self, request: bytes) -> tuple[int, bytes]:
        reused = self.sock is not None
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.sock.sendall(request)
        data = bytearray()
        while (end := data.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                if reused and not data:  # the server had closed a kept-alive connection
                    self.close()
                    return self._exchange(request)
                raise ConnectionError("connection closed before the reply's headers")
            data += chunk
        lines = bytes(data[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        close = fields.get("connection", "").lower() == "close"
        length = fields.get("content-length")
        if length is None:  # no length: the body runs to the end of the connection
            while chunk := self.sock.recv(65536):
                data += chunk
            close, length = True, len(data) - end - 4
        length = int(length)
        while len(data) - end - 4 < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside the reply's body")
            data += chunk
        if close:
            self.close()
        return status, bytes(data[end + 4:end + 4 + length])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class Drive:
    """What one phase of load did, seen from the client."""

    calls: int
    concurrency: int
    seconds: float
    exchanges: list[Exchange] = field(default_factory=list)
    recorded: list[list[Exchange]] = field(default_factory=list)  # per call, in order
    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.exchanges)

    def timings(self) -> list[tuple[str, float]]:
        return [(e.path, e.seconds) for e in self.exchanges]

    @classmethod
    def joined(cls, drives: list["Drive"]) -> "Drive":
        """Several stretches of one phase as one: calls, requests, seconds and findings
        added up."""
        by_kind: dict[str, int] = {}
        for drive in drives:
            for kind, n in drive.by_kind.items():
                by_kind[kind] = by_kind.get(kind, 0) + n
        return cls(calls=sum(d.calls for d in drives), concurrency=drives[0].concurrency,
                   seconds=sum(d.seconds for d in drives),
                   exchanges=[e for d in drives for e in d.exchanges],
                   recorded=[c for d in drives for c in d.recorded],
                   errors=[e for d in drives for e in d.errors],
                   unexpected=[u for d in drives for u in d.unexpected], by_kind=by_kind)


def _pool(concurrency: int, make_state, work, items, spread: float = 0.0) -> list:
    """Run ``work(state, item)`` for every item on ``concurrency`` threads, each with its
    own ``state`` (a client); results in the order of the items. With ``spread``, the
    threads' first items start evenly over that many seconds instead of all at once."""
    local = threading.local()
    states = []
    lock = threading.Lock()

    def one(item):
        if not hasattr(local, "state"):
            with lock:
                place = len(states)
                local.state = make_state()
                states.append(local.state)
            if spread:
                time.sleep(spread * place / concurrency)
        return work(local.state, item)

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, items))
    return results, states


def drive_calls(base_url: str, auth_token: str, calls: int, concurrency: int, *,
                seed: int, think: float = 0.0, first: int = 0, spread: float = 0.0) -> Drive:
    """``calls`` whole calls to the service, ``concurrency`` at a time. ``think`` is the
    pause before every answer (0 answers at once: the service never waits for a caller).
    ``first`` numbers the calls (and so their caller numbers) after earlier phases'.
    ``spread``: seconds over which the first ``concurrency`` calls arrive (0: together)."""
    rng = random.Random(seed)
    plans = [plan_call(first + n, rng) for n in range(calls)]

    def make():
        transport = LightTransport(base_url)
        return transport, Simulator(transport, auth_token, think=think)

    def work(state, plan):
        transport, simulator = state
        kind, to, caller, digits = plan
        start = len(transport.exchanges)
        try:
            result = simulator.call(to, caller, digits)
        except Exception as exc:  # a refused connection or a timeout is a result here
            return kind, transport.exchanges[start:], f"{kind} call to {to}: " \
                f"{type(exc).__name__}: {exc}", None
        problem = problem_of(kind, result)
        message = None
        if problem:
            detail = "; ".join(e.text for e in result.events if e.kind == "http_error")
            message = f"{kind} call {result.call_sid}: {result.outcome}" + \
                (f" ({detail})" if detail else "")
        return kind, transport.exchanges[start:], message, problem

    started = time.perf_counter()
    results, states = _pool(concurrency, make, work, plans, spread)
    seconds = time.perf_counter() - started
    for transport, _ in states:
        transport.close()
    drive = Drive(calls, concurrency, seconds)
    for kind, exchanges, message, problem in results:
        drive.by_kind[kind] = drive.by_kind.get(kind, 0) + 1
        drive.recorded.append(exchanges)
        drive.exchanges.extend(exchanges)
        if message:
            (drive.unexpected if problem == "unexpected" else drive.errors).append(message)
    return drive


def replay_calls(base_url: str, auth_token: str, recorded: list[list[Exchange]],
                 concurrency: int, *, paced: bool, spread: float = 0.0) -> Drive:
    """The recorded calls again, against ``base_url``. When ``paced``, each request waits
    the pause the caller took before it in the recording; ``spread`` as for
    ``drive_calls``."""

    def make():
        return LightTransport(base_url), RequestValidator(auth_token)

    def work(state, call):
        transport, validator = state
        errors = []
        start = len(transport.exchanges)
        for exchange in call:
            if paced and exchange.pause > 0:
                time.sleep(exchange.pause)
            signature = validator.compute_signature(transport.base_url + exchange.path,
                                                    exchange.params)
            try:
                status, body = transport.post(exchange.path, exchange.params,
                                              {"X-Twilio-Signature": signature})
            except Exception as exc:
                errors.append(f"{exchange.path}: {type(exc).__name__}: {exc}")
                break
            if status != 200:
                errors.append(f"HTTP {status} from {exchange.path}")
                break
            ET.fromstring(body.encode("utf-8"))  # the simulator parses every reply
        return transport.exchanges[start:], errors

    started = time.perf_counter()
    results, states = _pool(concurrency, make, work, recorded, spread)
    seconds = time.perf_counter() - started
    for transport, _ in states:
        transport.close()
    drive = Drive(len(recorded), concurrency, seconds)
    for exchanges, errors in results:
        drive.exchanges.extend(exchanges)
        drive.errors.extend(errors)
    return drive
