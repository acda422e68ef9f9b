"""HTTP requests with a deadline on the whole of each, not on each read.

requests' time-out (and urllib3's, and a socket's) bounds each wait for the next byte: a
server, or a proxy before it, that sends its answer a byte at a time, each inside the
time-out, holds the caller for as long as it goes on, headers included. Requests to
Zendesk and to Twilio's REST API run inside a ``Deadline``: a timer that shuts the
request's socket down when the time is up, ending whatever wait it is in.
"""

from __future__ import annotations

import socket
import threading
import time

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_watching = threading.local()


class Deadline:
    """Hangs up the connection of this thread's request at ``deadline`` (a
    ``time.monotonic()`` reading), whatever it is doing: connecting, sending, or waiting
    for a byte of the answer. A socket's time-out bounds each wait for the next byte, and
    nothing inside requests bounds the whole; a timer thread shuts the socket down, which
    ends any wait on it at once (the read then sees the connection closed, and ``passed``
    says why). The connection is not used again: urllib3 drops a connection whose request
    failed, or finds it closed before reusing it, and a streamed answer given up on is
    closed by its reader (``Zendesk._request``)."""

    def __init__(self, deadline: float):
        self.passed = False
        self._connection = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._hang_up)
        self._timer.daemon = True

    def __enter__(self) -> "Deadline":
        _watching.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _watching.deadline = None
        with self._lock:
            self._connection = None  # a timer firing late touches nothing

    def watch(self, connection) -> None:
        """The connection this thread's request now uses; hung up at once if the deadline
        passed before it had a socket (while connecting)."""
        with self._lock:
            self._connection = connection
            if self.passed:
                _shut(connection)

    def _hang_up(self) -> None:
        with self._lock:
            self.passed = True
            if self._connection is not None:
                _shut(self._connection)


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    # TLS inside TLS (an https:// proxy): urllib3's SSLTransport wraps the socket that
    # carries it, and is no socket itself.
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    if sock is not None:
        try:  # the plain socket's shutdown, under TLS too: no TLS goodbye to wait for
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Watched:
    """A urllib3 connection that tells this thread's Deadline which socket to hang up:
    once connected (the TLS handshake included), and at each request (a connection
    reused from the pool connects no more)."""

    def connect(self) -> None:
        deadline = getattr(_watching, "deadline", None)
        if deadline is not None:
            deadline.watch(self)  # hung up mid-handshake if need be: the socket is set first
        super().connect()
        if deadline is not None:
            deadline.watch(self)

    def request(self, *args, **kwargs):
        deadline = getattr(_watching, "deadline", None)
        if deadline is not None:
            deadline.watch(self)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections a Deadline can hang up (through an HTTP
    proxy too, spoken to over TLS or not; a SOCKS proxy keeps its own connections, bounded per read only)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if isinstance(manager, urllib3.ProxyManager):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def hang_up_at_deadlines(session: requests.Session) -> requests.Session:
    """The session, its connections made so that a Deadline can hang them up."""
    session.mount("http://", DeadlineAdapter())
    session.mount("https://", DeadlineAdapter())
    return session


def twilio_http_client(timeout: float):
    """Twilio's HTTP client, each request ended ``timeout`` seconds after it began: one
    still going then fails with ``requests.Timeout`` (an OSError, as its other errors)."""
    from twilio.http.http_client import TwilioHttpClient

    class Client(TwilioHttpClient):
        def request(self, *args, **kwargs):
            limit = kwargs.get("timeout") or timeout
            with Deadline(time.monotonic() + limit) as watch:
                try:
                    response = super().request(*args, **kwargs)
                except requests.RequestException as exc:
                    if watch.passed:
                        raise requests.Timeout(f"no answer within {limit:g} s") from exc
                    raise
                if watch.passed:  # an answer without a length, cut off: not all of it
                    raise requests.Timeout(f"no answer within {limit:g} s")
                return response

    client = Client(timeout=timeout)
    hang_up_at_deadlines(client.session)
    return client
