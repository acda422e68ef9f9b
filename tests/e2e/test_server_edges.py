"""The server under gunicorn as deployed (gunicorn.conf.py): slow clients do not stall
calls, oversized bodies are refused unread, forwarded headers are not trusted by default,
and a master killed with -9 takes its workers with it so a new server binds at once."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from twilio.request_validator import RequestValidator

from ivr.sim.simulator import HttpTransport, Simulator, new_call_sid

from ..support import BUSINESS_OWNER, CALLER, TOKEN, US_LINE
from .servers import Gunicorn as Server, alive, prepare_database

HOST = "ivr.example.com"


def Gunicorn(tmp_path: Path, database_url: str, **options) -> Server:
    """The server pinned to HOST (no IVR_PUBLIC_URL): signatures are checked against the
    Host header, which must be one of the allowed hosts."""
    return Server(tmp_path, database_url,
                  **{"IVR_ALLOWED_HOSTS": f"{HOST},127.0.0.1", **options})


@pytest.fixture
def database(database_url):
    prepare_database(database_url).dispose()
    return database_url


@pytest.fixture
def server(tmp_path, database):
    running = Gunicorn(tmp_path, database)
    yield running
    running.stop()


class SlowClient(threading.Thread):
    """Sends a webhook's headers, then its body one byte a second."""

    def __init__(self, port: int, length: int = 120):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(
            f"POST /voice HTTP/1.1\r\nHost: {HOST}\r\nX-Twilio-Signature: x\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\n\r\n".encode())
        self.length = length
        self.stop = threading.Event()
        self.sent = 0
        self.answer = b""

    def run(self):
        try:
            while not self.stop.is_set() and self.sent < self.length:
                self.sock.sendall(b"a")
                self.sent += 1
                self.stop.wait(1)
        except OSError:
            pass

    def close(self) -> bytes:
        self.stop.set()
        self.join(5)
        self.sock.settimeout(0.5)
        try:
            self.answer = self.sock.recv(4096)
        except OSError:
            pass
        self.sock.close()
        return self.answer


def test_callers_are_answered_within_a_second_while_slow_clients_trickle_bodies(server):
    slow = [SlowClient(server.port) for _ in range(8)]  # four times the workers
    for client in slow:
        client.start()
    time.sleep(2)  # every worker has a slow body by now, were it a sync worker
    simulator = Simulator(HttpTransport(server.url), TOKEN, signing_base=f"http://{HOST}")
    simulator.transport.session.headers["Host"] = HOST
    timings = []
    original = simulator.transport.post

    def timed(*args, **kwargs):
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            timings.append(time.monotonic() - started)

    simulator.transport.post = timed
    result = simulator.call(US_LINE, CALLER, ["2", f"{BUSINESS_OWNER[0]}#",
                                              f"{BUSINESS_OWNER[1]}#", "1"])
    health = requests.get(server.url + "/healthz", timeout=5)
    still_sending = [c.is_alive() and c.sent < c.length for c in slow]
    answers = [c.close() for c in slow]
    assert result.outcome == "routed" and health.status_code == 200
    assert len(timings) >= 4 and max(timings) < 1.0, timings
    assert all(still_sending)  # the call was served while every slow body was unfinished
    assert not any(answer.startswith(b"HTTP/1.1 200") for answer in answers)


def raw_request(port, head: bytes, body_chunks=(), timeout=5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed before the body was sent
            pass
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except (socket.timeout, ConnectionResetError):
            pass
        return data


def test_the_server_refuses_an_oversized_body_from_its_length_without_waiting_for_it(server):
    head = (f"POST /voice HTTP/1.1\r\nHost: {HOST}\r\nX-Twilio-Signature: forged\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {1024 ** 3}\r\nConnection: close\r\n\r\n").encode()
    started = time.monotonic()
    answer = raw_request(server.port, head)  # not one byte of the gigabyte is sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 4


def test_the_server_cuts_a_chunked_body_off_at_the_limit(server):
    head = (f"POST /voice HTTP/1.1\r\nHost: {HOST}\r\nX-Twilio-Signature: forged\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunk = b"a" * 16384
    chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(64)]  # 1 MB
    answer = raw_request(server.port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_forwarded_proto_from_loopback_is_not_trusted_by_default(server):
    sid = new_call_sid()
    params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": CALLER, "To": US_LINE,
              "CallStatus": "ringing", "Direction": "inbound"}
    validator = RequestValidator(TOKEN)
    forged = requests.post(server.url + "/voice", data=params, timeout=5, headers={
        "Host": HOST, "X-Forwarded-Proto": "https",
        "X-Twilio-Signature": validator.compute_signature(f"https://{HOST}/voice", params)})
    assert forged.status_code == 403
    plain = requests.post(server.url + "/voice", data=params, timeout=5, headers={
        "Host": HOST, "X-Twilio-Signature": validator.compute_signature(f"http://{HOST}/voice",
                                                                        params)})
    assert plain.status_code == 200
    other = requests.post(server.url + "/voice", data=params, timeout=5, headers={
        "Host": "other-app.example.com",
        "X-Twilio-Signature": validator.compute_signature("http://other-app.example.com/voice",
                                                          params)})
    assert other.status_code == 400


def test_after_kill_9_of_the_master_its_workers_exit_and_a_new_server_binds_the_port(
        tmp_path, database):
    first = Gunicorn(tmp_path, database, workers=3)
    workers = first.workers()
    assert len(workers) == 3 and int(first.pidfile.read_text()) == first.process.pid
    load = threading.Event()

    def keep_busy():
        while not load.is_set():
            try:
                requests.get(first.url + "/healthz", timeout=1)
            except requests.RequestException:
                pass

    busy = [threading.Thread(target=keep_busy, daemon=True) for _ in range(4)]
    for thread in busy:
        thread.start()
    time.sleep(0.5)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=5)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    load.set()
    assert not any(alive(pid) for pid in workers), first.output()[-2000:]
    second = Gunicorn(tmp_path, database, port=first.port, workers=1)
    try:
        assert requests.get(second.url + "/healthz", timeout=5).json()["status"] == "ok"
        assert int(second.pidfile.read_text()) == second.process.pid
    finally:
        second.stop()


def test_with_one_trusted_proxy_the_forwarded_public_url_is_the_one_checked(tmp_path, database):
    behind = Gunicorn(tmp_path, database, workers=1, IVR_TRUSTED_PROXIES="1")
    try:
        params = {"CallSid": new_call_sid(), "AccountSid": "AC" + "0" * 32, "From": CALLER,
                  "To": US_LINE, "CallStatus": "ringing", "Direction": "inbound"}
        validator = RequestValidator(TOKEN)
        response = requests.post(behind.url + "/voice", data=params, timeout=5, headers={
            "Host": "127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": HOST,
            "X-Twilio-Signature": validator.compute_signature(f"https://{HOST}/voice", params)})
        assert response.status_code == 200
    finally:
        behind.stop()


def test_servers_of_one_user_share_no_control_socket(tmp_path, database):
    """gunicorn's control socket defaults to one path per user ($XDG_RUNTIME_DIR or
    ~/.gunicorn): a second server on the host took it over, and stopping either one
    deleted the socket the other was using. The service is run by its pid file and
    signals (Makefile), so the project's settings open none."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
    first = Gunicorn(tmp_path, database, workers=1, name="first", **env)
    second = Gunicorn(tmp_path, database, workers=1, name="second", **env)
    try:
        assert requests.get(first.url + "/healthz", timeout=5).status_code == 200
        assert requests.get(second.url + "/healthz", timeout=5).status_code == 200
        assert sorted(p.name for p in home.rglob("*.ctl")) == []
    finally:
        first.stop()
        second.stop()


def test_a_client_that_never_reads_its_answers_does_not_hold_up_the_webhooks(tmp_path, database):
    """A client pipelining requests on one connection and reading none of the answers
    once filled the socket's buffers (about 3 s here); the app's thread then waited to
    hand over an answer, and every webhook of that worker waited behind it for 25 s, until
    the worker was replaced."""
    server = Gunicorn(tmp_path, database, workers=1)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        hog.connect(("127.0.0.1", server.port))
        hog.sendall(f"GET /nowhere HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() * 20000)
        # Not a timing: every call must be answered at all, within a time-out of 10 s
        # (the worker stalled for 25 s), however slow a loaded machine is.
        simulator = Simulator(HttpTransport(server.url, timeout=10), TOKEN,
                              signing_base=f"http://{HOST}")
        simulator.transport.session.headers["Host"] = HOST
        failed, calls = [], 0
        until = time.monotonic() + 5
        while time.monotonic() < until:
            calls += 1
            try:
                if simulator.call(US_LINE, CALLER, ["2"]).outcome == "error":
                    failed.append("error")
            except requests.RequestException as exc:
                failed.append(type(exc).__name__)
            time.sleep(0.2)
        assert calls > 1 and not failed, failed
    finally:
        hog.close()
        server.stop()


def test_a_connection_that_sends_no_whole_request_head_is_closed_after_the_keepalive(
        tmp_path, database):
    """gunicorn's asyncio worker closed an idle kept-alive connection after `keepalive`
    seconds, but waited for ever on a new connection's first request: a thousand sockets
    opened and left silent (or fed a header byte at a time) per worker used up its file
    descriptors, and then no webhook was accepted at all. The first request's head now
    has the same deadline as any later one's."""
    server = Gunicorn(tmp_path, database, workers=1, GUNICORN_CMD_ARGS="--keep-alive 1")
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=4)
        trickling = socket.create_connection(("127.0.0.1", server.port), timeout=4)
        trickling.sendall(f"POST /voice HTTP/1.1\r\nHost: {HOST}\r\nX-Twilio-Sig".encode())
        started = time.monotonic()
        assert silent.recv(100) == b""
        answer = trickling.recv(100)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 3
        silent.close()
        trickling.close()
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()
