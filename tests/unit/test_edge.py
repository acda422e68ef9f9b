"""The buffering front on its own: what reaches the WSGI app, and what never does."""

from __future__ import annotations

import asyncio

from ivr.edge import BufferingFront, is_asgi


def wsgi_echo(seen):
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        seen.append((environ.get("CONTENT_LENGTH"), body))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + str(len(body)).encode()]
    return app


def run(front, headers, messages, delay=0.0, path="/voice"):
    """Drive one request through the front; messages arrive ``delay`` seconds apart."""
    sent = []

    async def main():
        queue = list(messages)

        async def receive():
            if not queue:
                await asyncio.sleep(3600)
            await asyncio.sleep(delay)
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": path,
                 "root_path": "", "query_string": b"", "headers": headers, "scheme": "http",
                 "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 40000)}
        await front(scope, receive, send)

    asyncio.run(main())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_a_chunked_body_reaches_the_app_whole_with_its_length():
    seen = []
    front = BufferingFront(wsgi_echo(seen), max_body=100)
    status, body = run(front, [(b"transfer-encoding", b"chunked")], [
        {"type": "http.request", "body": b"a=1&", "more_body": True},
        {"type": "http.request", "body": b"b=2", "more_body": False}])
    assert (status, body) == (200, b"got 7") and seen == [("7", b"a=1&b=2")]


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_app_never_runs():
    seen = []
    front = BufferingFront(wsgi_echo(seen), max_body=100, body_seconds=0.2)
    messages = [{"type": "http.request", "body": b"a", "more_body": True}] * 50
    status, _ = run(front, [(b"content-length", b"50")], messages, delay=0.05)
    assert status == 408 and seen == []


def test_a_declared_length_over_the_cap_gets_413_without_receiving_anything():
    seen = []
    front = BufferingFront(wsgi_echo(seen), max_body=100)
    status, body = run(front, [(b"content-length", b"101")], [])
    assert status == 413 and b"larger than this service accepts" in body and seen == []
    status, _ = run(front, [(b"content-length", b"ten")], [])
    assert status == 400 and seen == []


def test_the_api_and_the_help_desk_hook_get_their_refusals_in_json_from_the_front_too():
    import json

    front = BufferingFront(wsgi_echo([]), max_body=100)
    for path in ("/hooks/zendesk", "/api/tickets/1/callback"):
        status, body = run(front, [(b"content-length", b"101")], [], path=path)
        assert status == 413 and "larger than" in json.loads(body)["error"]
    status, body = run(front, [(b"content-length", b"101")], [], path="/voice")
    assert status == 413 and body.startswith(b"The request")


def test_a_chunked_body_past_the_cap_gets_413_and_the_app_never_runs():
    seen = []
    front = BufferingFront(wsgi_echo(seen), max_body=100)
    messages = [{"type": "http.request", "body": b"a" * 60, "more_body": True}] * 3
    status, _ = run(front, [], messages)
    assert status == 413 and seen == []


def test_only_wsgi_apps_are_wrapped():
    async def asgi_app(scope, receive, send):
        pass

    assert is_asgi(asgi_app) and is_asgi(BufferingFront(wsgi_echo([])))
    assert not is_asgi(wsgi_echo([]))


def test_an_app_stuck_past_its_time_gets_503_and_its_worker_is_replaced():
    import threading

    release = threading.Event()
    stuck = []

    def hanging(environ, start_response):
        release.wait(5)
        start_response("200 OK", [])
        return [b"late"]

    front = BufferingFront(hanging, app_seconds=0.2, on_stuck=lambda: stuck.append(True))
    try:
        status, body = run(front, [(b"content-length", b"0")],
                           [{"type": "http.request", "body": b"", "more_body": False}])
    finally:
        release.set()
    assert status == 503 and stuck == [True]


def test_a_client_that_does_not_take_its_answer_holds_neither_the_app_nor_the_worker():
    """The answer is sent once the app has made it whole: a client that never reads (its
    send never completes) leaves the app's thread free for the next request, and is let
    go after the send time-out without restarting the worker."""
    stuck, served = [], []

    async def main():
        front = BufferingFront(wsgi_echo([]), app_seconds=2, send_seconds=0.3,
                               on_stuck=lambda: stuck.append(True))
        scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/voice",
                 "root_path": "", "query_string": b"", "headers": [(b"content-length", b"0")],
                 "scheme": "http", "server": ("127.0.0.1", 5000),
                 "client": ("127.0.0.1", 40000)}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def never_taken(message):
            if message["type"] == "http.response.body":
                await asyncio.sleep(3600)  # the transport's buffer is full, for good

        async def send(message):
            served.append(message)

        blocked = asyncio.create_task(front(scope, receive, never_taken))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(front(scope, receive, send), 1.0)
        await asyncio.wait_for(blocked, 1.0)  # given up after send_seconds

    asyncio.run(main())
    assert served[0]["type"] == "http.response.start" and served[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in served[1:]) == b"got 0"
    assert stuck == []


class HeldTransport:
    """A socket whose peer reads nothing: what is written stays in its buffer."""

    def __init__(self):
        self.written, self.closed, self.aborted = b"", False, False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5000)}.get(
            name, default)

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.written += data

    def get_write_buffer_size(self):
        return len(self.written)

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass

    def close(self):
        self.closed = True  # asyncio keeps the socket until the buffer is sent

    def abort(self):
        self.aborted = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def test_a_connection_closed_on_a_client_that_reads_nothing_does_not_keep_its_socket():
    """gunicorn closes a connection gracefully: asyncio then keeps the socket until the
    client has taken what is still buffered for it, so a client that never reads kept
    the worker's file descriptor for good. It is aborted after linger_seconds."""
    import logging
    import types

    from gunicorn.config import Config

    from ivr.edge import HeadDeadline

    async def main():
        cfg = Config()
        cfg.set("keepalive", 1)
        worker = types.SimpleNamespace(cfg=cfg, log=logging.getLogger("test"), asgi=None,
                                       loop=asyncio.get_running_loop(), nr_conns=0,
                                       alive=True, nr=0, max_requests=1000)
        connection = HeadDeadline(worker)
        connection.linger_seconds = 0.2
        transport = HeldTransport()
        connection.connection_made(transport)
        connection.data_received(b"POST /voice HTTP/1.1\r\nHost: ivr.exam")
        await asyncio.sleep(1.1)
        assert transport.written.startswith(b"HTTP/1.1 408") and transport.closed
        assert not transport.aborted  # the client has a while to take the answer
        await asyncio.sleep(0.3)
        return transport

    assert asyncio.run(main()).aborted


def test_a_long_answer_taken_piece_by_piece_is_sent_whole():
    """The send deadline is on each piece of the answer, not on the whole of it: a
    download of many pieces (the ticket export) that a client takes steadily, one piece
    at a time, is not cut off once its whole takes longer than send_seconds."""
    pieces = [b"x" * 100] * 6

    def export(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/csv")])
        return iter(pieces)

    sent = []

    async def main():
        front = BufferingFront(export, send_seconds=0.3)
        scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": "/admin/export",
                 "root_path": "", "query_string": b"", "headers": [], "scheme": "http",
                 "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 40000)}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def taken_steadily(message):
            if message.get("body"):
                await asyncio.sleep(0.1)  # the client reads a piece in a tenth of a second
            sent.append(message)

        await front(scope, receive, taken_steadily)

    asyncio.run(main())
    assert b"".join(m.get("body", b"") for m in sent) == b"".join(pieces)
    assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body")


class ReadingTransport(HeldTransport):
    """A socket whose peer takes every answer at once, and whose reading can be paused."""

    def __init__(self):
        super().__init__()
        self.paused = False

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def is_closing(self):
        return self.closed


def serve_connection(sends: list[bytes], pause: float = 0.0) -> ReadingTransport:
    """Feed one HeadDeadline connection ``sends`` (each as the socket would deliver it,
    waiting while reading is paused and ``pause`` seconds after each) until the last is
    sent or the server closes the connection (``closed_by_server``); an ASGI app answers
    every request with 200."""
    import types

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from ivr.edge import HeadDeadline

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        cfg = Config()
        worker = types.SimpleNamespace(cfg=cfg, log=Logger(cfg), asgi=ok,
                                       loop=asyncio.get_running_loop(), nr_conns=0,
                                       alive=True, nr=0, max_requests=10**9)
        connection = HeadDeadline(worker)
        transport = ReadingTransport()
        connection.connection_made(transport)
        requests = sum(data.count(b" HTTP/1.1\r\n") for data in sends)
        for data in sends:
            while transport.paused and not transport.closed:
                await asyncio.sleep(0.001)
            if transport.closed:
                break
            connection.data_received(data)
            await asyncio.sleep(pause)
        for _ in range(500):  # the answers still due
            await asyncio.sleep(0.01)
            if transport.closed or transport.written.count(b"HTTP/1.1 ") == requests:
                break
        transport.closed_by_server = transport.closed
        connection.connection_lost(None)
        return transport

    return asyncio.run(main())


def answers(transport) -> list[bytes]:
    return [b"HTTP/1.1 " + part for part in transport.written.split(b"HTTP/1.1 ")[1:]]


def test_a_client_sending_far_ahead_of_its_answers_is_closed_after_the_one_being_served():
    """gunicorn's parser copied what a client had sent ahead (up to 256 KB) once more for
    every request it served: three clients pipelining at full speed took a worker's CPU
    and 250 MB more of its memory, and signed webhooks waited 170 ms instead of 10. A
    connection holding more than pipelined_limit bytes beyond its current request is
    answered with Connection: close, and what it sent ahead is never parsed."""
    request = (b"GET /healthz HTTP/1.1\r\nHost: ivr.example.com\r\nX-Pad: "
               + b"p" * 900 + b"\r\n\r\n")
    flood = request * (1024 * 1024 // len(request))
    transport = serve_connection([flood[i:i + 65536] for i in range(0, len(flood), 65536)])
    sent = answers(transport)
    assert transport.closed_by_server and 1 <= len(sent) <= 3, len(sent)
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in sent)
    assert b"connection: close" in sent[-1].lower()


def test_requests_one_after_another_or_a_few_pipelined_keep_their_connection_alive():
    """The limit is on how far ahead a client runs, not on pipelining as such."""
    request = b"GET /healthz HTTP/1.1\r\nHost: ivr.example.com\r\n\r\n"
    transport = serve_connection([request, request, request * 3, request], pause=0.05)
    sent = answers(transport)
    assert len(sent) == 6 and not transport.closed_by_server
    assert all(answer.startswith(b"HTTP/1.1 200") and b"connection: close" not in answer.lower()
               for answer in sent)


def export_scope(path: str = "/admin/export") -> dict:
    return {"type": "http", "http_version": "1.1", "method": "GET", "path": path,
            "root_path": "", "query_string": b"", "headers": [], "scheme": "http",
            "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 40000)}


async def nothing_more():
    return {"type": "http.request", "body": b"", "more_body": False}


def streaming_app(pieces, before_piece=lambda index: None):
    """A WSGI app whose /admin/export answer is made piece by piece as the view marks it
    (the ticket export); ``before_piece(i)`` runs as piece i is asked for. Any other path
    answers at once."""
    from ivr.extension import STREAMED_BODY

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/admin/export":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"webhook answered"]
        environ[STREAMED_BODY] = True
        start_response("200 OK", [("Content-Type", "text/csv")])

        def body():
            for index, piece in enumerate(pieces):
                before_piece(index)
                yield piece
        return body()
    return app


def test_an_export_is_made_while_it_is_sent_not_held_whole_in_the_workers_memory():
    """A streamed answer (the ticket export) goes to the client a piece at a time as it
    is made: the next piece is not asked for before the last one has been taken, so a
    year of tickets is never kept whole in the worker's memory."""
    pieces = [b"row %d\n" % i for i in range(5)]
    taken, taken_when_asked = [], []
    front = BufferingFront(streaming_app(pieces, lambda i: taken_when_asked.append(len(taken))))

    sent = []

    async def client(message):
        sent.append(message)
        if message.get("body"):
            taken.append(message["body"])

    asyncio.run(front(export_scope(), nothing_more, client))
    assert b"".join(m.get("body", b"") for m in sent) == b"".join(pieces)
    assert sent[0]["status"] == 200 and not sent[-1].get("more_body")
    assert taken_when_asked == [0, 1, 2, 3, 4]


def test_a_webhook_is_answered_while_an_export_on_the_same_worker_is_still_being_made():
    """The app's thread serves one request at a time: an export made whole there before a
    byte was sent held every webhook of that worker behind it (past Twilio's 15 s, and
    past the front's own deadline, which restarted the worker). The export's pieces are
    made off that thread, so a webhook arriving meanwhile is answered at once."""
    import threading

    more = threading.Event()

    def wait_for_the_webhook(index):
        if index == 1:
            assert more.wait(10), "the webhook was not served while the export was made"

    front = BufferingFront(streaming_app([b"first\n", b"second\n"], wait_for_the_webhook))
    exported, answered = [], []

    async def main():
        async def to_exporter(message):
            exported.append(message)

        async def to_twilio(message):
            answered.append(message)

        export = asyncio.create_task(front(export_scope(), nothing_more, to_exporter))
        for _ in range(500):  # the export's first piece is on its way
            if any(m.get("body") for m in exported) or export.done():
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(front(export_scope("/voice"), nothing_more, to_twilio), 5)
        more.set()
        await asyncio.wait_for(export, 5)

    try:
        asyncio.run(main())
    finally:
        more.set()
    assert b"".join(m.get("body", b"") for m in answered) == b"webhook answered"
    assert b"".join(m.get("body", b"") for m in exported) == b"first\nsecond\n"


def test_an_export_that_fails_half_way_ends_its_connection_without_the_end_of_the_file():
    """A piece that cannot be made (the database went away between batches) leaves the
    download visibly broken, not a file that looks whole with tickets missing."""
    def away(index):
        if index == 1:
            raise OSError("database unreachable")

    front = BufferingFront(streaming_app([b"first\n", b"second\n"], away))
    sent = []

    async def client(message):
        sent.append(message)

    asyncio.run(front(export_scope(), nothing_more, client))
    assert sent[0]["status"] == 200
    assert [m.get("body") for m in sent[1:]] == [b"first\n"] and sent[-1]["more_body"]


def test_exports_made_at_once_on_one_worker_make_their_pieces_one_at_a_time():
    """The pieces of an export are Python work (reading a batch, rendering it) that holds
    the interpreter's lock: several exports at once, each on a thread of the event loop's
    pool, took it in turns with the app's thread, and a caller's webhook on that worker
    waited seconds (ten exports of 30,000 tickets: p90 0.75 s, up to 2.5 s, from 5 ms).
    The pieces of every export of the worker are made on one thread, one at a time."""
    import threading
    import time

    lock, making, most = threading.Lock(), [0], [0]

    def made(index):
        with lock:
            making[0] += 1
            most[0] = max(most[0], making[0])
        time.sleep(0.05)
        with lock:
            making[0] -= 1

    front = BufferingFront(streaming_app([b"a\n", b"b\n", b"c\n"], made))
    sent = [[] for _ in range(4)]

    async def main():
        async def client(n):
            async def taken(message):
                sent[n].append(message)
            await front(export_scope(), nothing_more, taken)
        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(4))), 10)

    asyncio.run(main())
    assert all(b"".join(m.get("body", b"") for m in answer) == b"a\nb\nc\n" for answer in sent)
    assert most[0] == 1


def test_an_export_taken_steadily_on_a_slow_link_is_not_cut_off():
    """A piece of the export is a batch of 1000 tickets (about 500 KB in JSON), and the
    send deadline was on each piece: a client taking the file steadily at 40 KB/s was
    closed after 10 s, every time. The deadline is on each slice of at most 64 KB."""
    piece = b"x" * (256 * 1024)
    front = BufferingFront(streaming_app([piece, piece]), send_seconds=0.2)
    sent = []

    async def at_one_megabyte_a_second(message):
        await asyncio.sleep(len(message.get("body", b"")) / 1_000_000)
        sent.append(message)

    asyncio.run(front(export_scope(), nothing_more, at_one_megabyte_a_second))
    assert b"".join(m.get("body", b"") for m in sent) == piece * 2
    assert not sent[-1].get("more_body")
