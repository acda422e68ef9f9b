"""The server front: gunicorn's asyncio (ASGI) worker reads each request whole before the
Flask app sees it, so a client that sends its body one byte a second holds a coroutine,
not the worker.

With gunicorn's sync workers, a worker reads the body while it serves the request: two
clients trickling bodies stall two workers until gunicorn's time-out kills them, and the
webhooks behind them wait. Here the event loop receives bodies from any number of slow
clients at once; a body that is not complete within BODY_SECONDS gets 408, one longer
than ``web.MAX_BODY_BYTES`` gets 413 as soon as that is known (from Content-Length,
before reading it, or once a chunked body passes the cap). Only complete requests reach
the app, which runs on a thread of its own (asgiref's WsgiToAsgi), one request at a time
per worker as before. The app's answer is kept whole, then sent from the event loop: a
client that does not read it (its socket's buffers full) holds its connection for at most
SEND_SECONDS per piece of the answer, never the app's thread and so never the requests of
other clients. The one exception is an answer its view marks as made while it is sent
(``extension.STREAMED_BODY``, the ticket export): its pieces are made on the worker's one
thread for them (``_PIECES``), each once the client has taken the one before.

``gunicorn.conf.py`` selects the worker, wraps whatever WSGI app gunicorn loads
(``app:app``) in ``BufferingFront`` and has the worker's connections keep a deadline on
the first request's head (``HeadDeadline``) as gunicorn already does on later ones.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor

from asgiref.wsgi import WsgiToAsgi
from gunicorn.asgi.protocol import ASGIProtocol

from . import metrics
from .extension import STREAMED_BODY
from .web import MAX_BODY_BYTES, TOO_LARGE

log = logging.getLogger("ivr.edge")

# Twilio sends a webhook body at once; a body still arriving after this is not Twilio's.
# Well inside Twilio's 15 s wait and gunicorn's 30 s time-out.
BODY_SECONDS = 10.0
# A request the app has not answered by then is stuck; its worker is replaced (gunicorn's
# own time-out, 30 s, no longer applies: the event loop keeps the worker's heartbeat).
APP_SECONDS = 25.0
# The answer is made whole before a byte of it is sent, then a client has this long to take
# each piece of it: one that does not read holds its connection, never the app's thread.
SEND_SECONDS = 10.0


def _restart_worker() -> None:
    """Ask gunicorn to replace this worker: SIGTERM starts its graceful stop, and the
    master kills it after graceful_timeout if the stuck thread never returns."""
    os.kill(os.getpid(), signal.SIGTERM)


class HeadDeadline(ASGIProtocol):
    """gunicorn's connection, with a deadline on the first request's head as well.

    gunicorn closes a kept-alive connection whose next request head is not complete
    ``keepalive`` seconds after the last answer, but waited for ever on a new connection's
    first request: sockets opened and left silent, or fed a header byte at a time, were
    held until the worker ran out of file descriptors, and then no webhook was accepted.
    Now a connection that has not sent a whole request head within ``keepalive`` seconds
    of opening is closed too (with 408 when part of a head arrived). Twilio sends a
    webhook's head at once.

    gunicorn closes a connection gracefully, and asyncio then keeps the socket until the
    client has taken every byte still buffered for it: a client that reads nothing (a
    408, or an answer BufferingFront gave up sending) kept a file descriptor for good.
    Such a connection is aborted ``linger_seconds`` after it was closed.

    gunicorn's parser copies what a client has sent ahead of the request being served
    (up to 256 KB) once more for every request it serves: a client pipelining at full
    speed cost the worker CPU and memory in proportion to how far ahead it ran, and the
    webhooks of every other caller waited. Reading from a connection now pauses once it
    holds more than ``pipelined_limit`` bytes the app has not taken (gunicorn's limit was
    256 KB), and one holding that much beyond its current request is answered with
    ``Connection: close``: the rest is never parsed. Twilio sends one request
    at a time; clients that send a few requests ahead keep their connection."""

    linger_seconds = SEND_SECONDS
    pipelined_limit = 32 * 1024

    def connection_made(self, transport):
        self._max_buffer_size = self.pipelined_limit  # gunicorn stops reading past it
        self._head_timer = None
        self._head_started = False
        super().connection_made(transport)
        if self._callback_parser is not None and self._keepalive > 0:  # HTTP/1 only
            self._head_timer = self.worker.loop.call_later(self._keepalive, self._head_late)

    def data_received(self, data):
        self._head_started = True
        super().data_received(data)

    def _on_headers_complete(self):
        self._stop_head_timer()
        return super()._on_headers_complete()

    def _will_close(self, request, response_requires_close):
        return (super()._will_close(request, response_requires_close)
                or (self._callback_parser is not None
                    and self._http1_buffered() > self.pipelined_limit))

    def connection_lost(self, exc):
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _close_transport(self):
        transport = self.transport
        lingering = transport is not None and not self._closed
        super()._close_transport()
        if lingering and transport.get_write_buffer_size():
            self.worker.loop.call_later(self.linger_seconds, self._abort, transport)

    def _abort(self, transport):
        if not self._conn_lost_handled:  # the client has still not taken the rest
            transport.abort()

    def _head_late(self):
        self._head_timer = None
        if self._closed or self._current_request is not None:
            return
        if self._head_started:
            self._send_error_response(408, "The request head did not arrive in time.")
        self._close_transport()
        self._request_ready.set()  # the connection's task sees it closed and ends


def install_head_deadline() -> None:
    """Make gunicorn's asyncio worker of this process open its connections as HeadDeadline
    (it names ASGIProtocol when it starts serving, after post_worker_init)."""
    from gunicorn.workers import gasgi

    gasgi.ASGIProtocol = HeadDeadline


def is_asgi(app) -> bool:
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__")
    return inspect.iscoroutinefunction(call)


# The body of this request's answer when its view marked it as made while it is sent
# (STREAMED_BODY): set by the front for each request, filled on the app's thread.
_streamed: contextvars.ContextVar[list | None] = contextvars.ContextVar("ivr_streamed",
                                                                         default=None)


def _streams_handed_over(wsgi_app):
    """The WSGI app, handing the body of an answer its view marked as streamed to the front
    instead of to asgiref, which would make it whole on the app's thread."""
    def app(environ, start_response):
        body = wsgi_app(environ, start_response)
        held = _streamed.get() if STREAMED_BODY in environ else None
        if held is not None:
            held.append(body)
            return []
        return body
    return app


# The pieces of streamed answers (the ticket export) are made here, one at a time for the
# whole worker: each is Python work that holds the interpreter's lock, and several exports
# at once on threads of their own took it in turns with the app's thread, so that a
# webhook of the worker waited seconds. Exports at once take turns here instead.
_PIECES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivr-streamed")
# A streamed answer is sent in slices of at most this much, each with SEND_SECONDS to go.
SEND_SLICE = 64 * 1024


def _close_quietly(close, scope) -> None:
    try:
        close()
    except Exception:
        log.exception("%s %s: closing the answer failed", scope.get("method"),
                      scope.get("path"))


class BufferingFront:
    """An ASGI app that buffers a bounded request body, then runs the WSGI app on it.

    An answer whose view marks it as made while it is sent (``STREAMED_BODY``: the ticket
    export, a year of tickets read a batch at a time) is the exception to making the answer
    whole on the app's thread: that thread would be held, and every webhook of the worker
    with it, for as long as the whole file took to make (past APP_SECONDS, the worker was
    replaced and the export never arrived), and the file kept whole in memory. Its pieces
    are made on another thread, each when the client has taken the one before."""

    def __init__(self, wsgi_app, max_body: int = MAX_BODY_BYTES,
                 body_seconds: float = BODY_SECONDS, app_seconds: float = APP_SECONDS,
                 send_seconds: float = SEND_SECONDS, on_stuck=None):
        self.wsgi_app = wsgi_app
        self.inner = WsgiToAsgi(_streams_handed_over(wsgi_app))
        self.max_body = max_body
        self.body_seconds = body_seconds
        self.app_seconds = app_seconds
        self.send_seconds = send_seconds
        self.on_stuck = on_stuck or _restart_worker

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here: the connection is closed unanswered
        length = _content_length(scope)
        if length == -1:
            await _answer(send, 400, "The Content-Length header is not a number.")
            return
        if length is not None and length > self.max_body:
            await self._too_large(scope, send)
            return
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._too_large(scope, send)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            log.warning("%s %s: request body not complete after %.0f s; answered 408",
                        scope.get("method"), scope.get("path"), self.body_seconds)
            await _answer(send, 408, "The request body did not arrive in time.",
                          json_body=_answers_json(scope))
            return
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        answer, streamed = [], []

        async def keep(message):
            answer.append(message)

        handed_over = _streamed.set(streamed)
        try:
            async with asyncio.timeout(self.app_seconds):
                await self.inner(_with_length(scope, len(body)), replay, keep)
        except TimeoutError:
            # The app's thread is stuck (a database that never answers): as gunicorn's
            # time-out does for sync workers, this worker gives way to a fresh one.
            log.error("%s %s: no answer after %.0f s; restarting this worker",
                      scope.get("method"), scope.get("path"), self.app_seconds)
            answer = None
            self.on_stuck()
        finally:
            _streamed.reset(handed_over)
        try:
            if answer is None:
                answer = []
                async with asyncio.timeout(self.send_seconds):
                    await _answer(send, 503, "The service did not answer in time.")
            # The deadline is on each piece: a long answer (the ticket export) that a
            # client takes steadily is not cut off because its whole takes longer.
            for message in answer:
                if streamed and message["type"] == "http.response.body":
                    await self._send_streamed(scope, streamed[0], send)
                    return
                async with asyncio.timeout(self.send_seconds):
                    await send(message)
        except TimeoutError:
            # Only this connection waits on a client that does not read its answer; the
            # app's thread has long gone on to other requests. Left unfinished, the
            # answer is not kept alive: gunicorn closes the connection.
            log.warning("%s %s: the client took no piece of its answer in %g s; "
                        "connection closed", scope.get("method"), scope.get("path"),
                        self.send_seconds)

    async def _send_streamed(self, scope, body, send) -> None:
        """Send a streamed answer's body (its head is sent): each piece made on the
        worker's thread for them (``_PIECES``), not the app's, once the client has taken
        the last. A piece not made within APP_SECONDS (a database that stopped answering),
        or one whose making fails, ends the connection without the answer's end, so the
        client sees the download broken rather than a file cut short."""
        loop = asyncio.get_running_loop()
        pieces = iter(body)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.app_seconds):
                        piece = await loop.run_in_executor(_PIECES, next, pieces, None)
                except Exception as exc:  # the connection is what is left to end
                    # A time-out says enough; anything else is logged with where it came from.
                    log.error("%s %s: the answer's next piece could not be made (%s); "
                              "connection closed", scope.get("method"), scope.get("path"),
                              type(exc).__name__, exc_info=not isinstance(exc, TimeoutError))
                    return
                if piece is None:
                    break
                # The deadline is on each slice: a batch of the export is hundreds of KB,
                # more than a client on a slow link takes in SEND_SECONDS.
                for start in range(0, len(piece), SEND_SLICE):
                    async with asyncio.timeout(self.send_seconds):
                        await send({"type": "http.response.body",
                                    "body": piece[start:start + SEND_SLICE], "more_body": True})
            async with asyncio.timeout(self.send_seconds):
                await send({"type": "http.response.body"})
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                # On the same thread, so after any piece still being made (one left behind
                # by a time-out): never while it runs, and never awaited here.
                _PIECES.submit(_close_quietly, close, scope)

    async def _too_large(self, scope, send):
        if scope.get("path", "").startswith("/voice"):
            metrics.REFUSED.labels("too_large").inc()
        await _answer(send, 413, TOO_LARGE, json_body=_answers_json(scope))

    @staticmethod
    async def _lifespan(receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _content_length(scope) -> int | None:
    """The declared length; None when absent (chunked), -1 when not a number."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() and len(text) < 19 else -1
    return None


def _with_length(scope, length: int) -> dict:
    """The scope of the buffered request: a chunked one now has a known length."""
    headers = [(k, v) for k, v in scope.get("headers", ())
               if k.lower() not in (b"content-length", b"transfer-encoding")]
    headers.append((b"content-length", str(length).encode("ascii")))
    return {**scope, "headers": headers}


async def _answer(send, status: int, text: str, json_body: bool = False) -> None:
    body = (json.dumps({"error": text}) if json_body else text + "\n").encode("utf-8")
    kind = b"application/json" if json_body else b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


def _answers_json(scope) -> bool:
    """The desk's API and the help desk's webhook answer in JSON, even from here."""
    return scope.get("path", "").startswith(("/api/", "/hooks/"))
