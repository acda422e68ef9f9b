"""A fake Zendesk on loopback (pytest-httpserver) that holds to the Tickets API's contract:
Basic auth as ``{email}/token:{api_token}``, the ticket JSON shape and the allowed
priorities (422 otherwise), Idempotency-Key replays answering with the first ticket, and
on demand 429 with Retry-After, 500s and answers slower than the client waits."""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time

from werkzeug import Request, Response

EMAIL = "phone-line@example.com"
API_TOKEN = "zendesk-api-token-for-tests"
PRIORITIES = ("urgent", "high", "normal", "low")
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
CREATE_KEYS = {"external_id", "subject", "comment", "priority", "tags", "requester",
               "custom_fields", "status"}
UPDATE_KEYS = {"comment", "priority", "status", "additional_tags", "remove_tags",
               "custom_fields"}


def invalid(field: str, text: str) -> Response:
    return Response(json.dumps({"error": "RecordInvalid", "description": "Record validation errors",
                                "details": {field: [{"description": text}]}}),
                    status=422, content_type="application/json")


class FakeZendesk:
    def __init__(self, server, email: str = EMAIL, token: str = API_TOKEN):
        self.server = server
        self.auth = "Basic " + base64.b64encode(f"{email}/token:{token}".encode()).decode()
        self.tickets: dict[int, dict] = {}
        self.keys: dict[str, tuple[str, int]] = {}  # Idempotency-Key -> (body, ticket id)
        self.requests: list[dict] = []  # every request that reached the API, in order
        self.failures: list[tuple[int, dict]] = []  # queued error answers (status, headers)
        self.delay = 0.0  # seconds before answering (after doing the work)
        self.down = False  # answer everything with 503
        self.lock = threading.Lock()
        self.ids = itertools.count(9001)
        server.expect_request(re.compile(r"^/api/v2/.*$")).respond_with_handler(self.handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def fail_next(self, count: int, status: int = 500, headers: dict | None = None) -> None:
        self.failures += [(status, headers or {})] * count

    # -- the API -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self.lock:
            response = self._handle(request)
        if self.delay:
            time.sleep(self.delay)
        return response

    def _handle(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        self.requests.append({"method": request.method, "path": request.path,
                              "args": dict(request.args), "headers": dict(request.headers),
                              "json": json.loads(body) if body else None})
        if request.headers.get("Authorization") != self.auth:
            return self.json({"error": "Couldn't authenticate you"}, 401)
        if self.down:
            return self.json({"error": "ServiceUnavailable"}, 503)
        if self.failures:
            status, headers = self.failures.pop(0)
            return self.json({"error": f"HTTP {status}"}, status, headers)
        path = request.path
        if path == "/api/v2/tickets.json" and request.method == "POST":
            return self.create(request, body)
        if path == "/api/v2/tickets.json" and request.method == "GET":
            found = [t for t in self.tickets.values()
                     if t["external_id"] == request.args.get("external_id")]
            return self.json({"tickets": found, "count": len(found)})
        match = re.fullmatch(r"/api/v2/tickets/(\d+)\.json", path)
        if match and request.method == "PUT":
            return self.update(int(match.group(1)), request)
        match = re.fullmatch(r"/api/v2/tickets/(\d+)/comments\.json", path)
        if match and request.method == "GET":
            ticket = self.tickets.get(int(match.group(1)))
            if ticket is None:
                return self.json({"error": "RecordNotFound"}, 404)
            comments = list(reversed(ticket["comments"])) \
                if request.args.get("sort_order") == "desc" else ticket["comments"]
            return self.json({"comments": comments})
        return self.json({"error": "InvalidEndpoint"}, 404)

    def create(self, request: Request, body: str) -> Response:
        if request.content_type != "application/json":
            return self.json({"error": "Unsupported Media Type"}, 415)
        key = request.headers.get("Idempotency-Key")
        if key and key in self.keys:
            first_body, ticket_id = self.keys[key]
            if first_body != body:
                return self.json({"error": "IdempotentRequestError",
                                  "description": "the request differs from the first one "
                                                 "with this key"}, 400)
            return self.json({"ticket": self.tickets[ticket_id]}, 201,
                             {"x-idempotency-lookup": "hit"})
        data = json.loads(body)
        ticket = data.get("ticket") if isinstance(data, dict) else None
        if not isinstance(ticket, dict):
            return self.json({"error": "InvalidValue", "description": "ticket is required"}, 400)
        if set(ticket) - CREATE_KEYS:
            return invalid(sorted(set(ticket) - CREATE_KEYS)[0], "is not a ticket field")
        comment = ticket.get("comment")
        if not isinstance(comment, dict) or not isinstance(comment.get("body"), str) \
                or not isinstance(comment.get("public"), bool):
            return invalid("comment", "Comment: body and public are required")
        if ticket.get("priority") not in PRIORITIES:
            return invalid("priority", "Priority: is invalid")
        if not isinstance(ticket.get("subject"), str) or not ticket["subject"]:
            return invalid("subject", "Subject: cannot be blank")
        if not all(isinstance(t, str) and " " not in t for t in ticket.get("tags", [])):
            return invalid("tags", "Tags: are invalid")
        requester = ticket.get("requester", {})
        if requester and "@" not in str(requester.get("email", "")):
            return invalid("requester", "Requester: Email is invalid")
        for item in ticket.get("custom_fields", []):
            if not isinstance(item.get("id"), int):
                return invalid("custom_fields", "Custom fields: id is invalid")
        if ticket.get("status", "new") not in STATUSES:
            return invalid("status", "Status: is invalid")
        ticket_id = next(self.ids)
        stored = {"id": ticket_id, "external_id": ticket.get("external_id"),
                  "subject": ticket["subject"], "priority": ticket["priority"],
                  "status": ticket.get("status", "new"),
                  "tags": list(ticket.get("tags", [])), "requester": requester,
                  "custom_fields": list(ticket.get("custom_fields", [])),
                  "comments": [{"id": ticket_id * 100, "body": comment["body"],
                                "public": comment["public"]}]}
        self.tickets[ticket_id] = stored
        if key:
            self.keys[key] = (body, ticket_id)
        return self.json({"ticket": stored}, 201, {"x-idempotency-lookup": "miss"} if key else {})

    def update(self, ticket_id: int, request: Request) -> Response:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return self.json({"error": "RecordNotFound", "description": "Not found"}, 404)
        if ticket["status"] == "closed":
            return invalid("status", "Status: closed prevents ticket update")
        data = request.get_json(silent=True)
        change = data.get("ticket") if isinstance(data, dict) else None
        if not isinstance(change, dict) or set(change) - UPDATE_KEYS:
            return invalid("ticket", "is not a ticket update")
        if "priority" in change and change["priority"] not in PRIORITIES:
            return invalid("priority", "Priority: is invalid")
        if "status" in change and change["status"] not in STATUSES:
            return invalid("status", "Status: is invalid")
        if "comment" in change:
            ticket["comments"].append({"id": ticket_id * 100 + len(ticket["comments"]),
                                       "body": change["comment"]["body"],
                                       "public": change["comment"]["public"]})
        for name in ("priority", "status"):
            if name in change:
                ticket[name] = change[name]
        ticket["tags"] = [t for t in ticket["tags"] if t not in change.get("remove_tags", [])]
        ticket["tags"] += [t for t in change.get("additional_tags", []) if t not in ticket["tags"]]
        for item in change.get("custom_fields", []):
            ticket["custom_fields"] = [f for f in ticket["custom_fields"] if f["id"] != item["id"]]
            ticket["custom_fields"].append(item)
        return self.json({"ticket": ticket})

    @staticmethod
    def json(body: dict, status: int = 200, headers: dict | None = None) -> Response:
        return Response(json.dumps(body), status=status, headers=headers or {},
                        content_type="application/json")

    # -- what tests look at ------------------------------------------------------------

    def writes(self) -> list[dict]:
        """The POSTs and PUTs that reached the API, in order."""
        return [r for r in self.requests if r["method"] in ("POST", "PUT")]


class TricklingProxy:
    """A proxy on loopback in front of the fake that passes each request on whole, then
    sends the answer's head (status line and headers) back a byte at a time, ``pause``
    seconds apart, while ``trickle`` is on: Zendesk or a proxy before it that keeps the
    connection alive without ever getting to the body. It notes whether each head went
    out whole or the client hung up first."""

    def __init__(self, target: str, pause: float = 0.05):
        import http.client
        import socket
        import urllib.parse

        self.target = urllib.parse.urlsplit(target)
        self.pause = pause
        self.trickle = True
        self.heads = {"whole": 0, "hung_up": 0}
        self.handlers: list[threading.Thread] = []
        self._http, self._socket = http.client, socket
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def wait(self, seconds: float = 60.0) -> None:
        """Until every answer begun has gone out whole or been hung up on."""
        for handler in list(self.handlers):
            handler.join(seconds)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            handler = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self.handlers.append(handler)
            handler.start()

    def _serve(self, client) -> None:
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = client.recv(65536)
                if not piece:
                    return
                data += piece
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:])
            length = int(headers.get("Content-Length", 0))
            while len(body) < length:
                body += client.recv(65536)
            upstream = self._http.HTTPConnection(self.target.hostname, self.target.port,
                                                 timeout=30)
            headers["Connection"] = "close"
            upstream.request(method, path, body or None, headers)
            answer = upstream.getresponse()
            content = answer.read()
            upstream.close()
            kept = [(k, v) for k, v in answer.getheaders()
                    if k.lower() not in ("connection", "content-length", "transfer-encoding")]
            head = (f"HTTP/1.1 {answer.status} {answer.reason}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in kept)
                    + f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n").encode()
            try:
                if self.trickle:
                    for index in range(len(head)):
                        time.sleep(self.pause)
                        client.sendall(head[index:index + 1])
                else:
                    client.sendall(head)
                client.sendall(content)
            except OSError:
                self.heads["hung_up"] += 1
                return
            self.heads["whole"] += 1


class TlsTunnel:
    """An HTTPS origin that sends its answer's head a byte at a time, ``pause`` seconds
    apart, behind a proxy that is itself spoken to over TLS (``HTTPS_PROXY=https://...``)
    and tunnels to it with CONNECT: the client's connection is then TLS inside TLS. Both
    use a certificate for 127.0.0.1 made with the ``openssl`` command (``cert``, to be
    trusted through ``REQUESTS_CA_BUNDLE``). ``heads`` notes whether the answer's head
    went out whole or the client hung up first."""

    def __init__(self, folder, pause: float = 0.05):
        import shutil
        import socket
        import ssl
        import subprocess

        if shutil.which("openssl") is None:
            import pytest

            pytest.skip("the openssl command is needed to make a test certificate")
        self.cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", self.cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key)
        self.pause = pause
        self.heads = {"whole": 0, "hung_up": 0}
        self.handlers: list[threading.Thread] = []
        self._socket = socket
        self.listeners = []
        self.origin_port = self._listen(self._origin)
        self.proxy_url = f"https://127.0.0.1:{self._listen(self._proxy)}"
        self.origin_url = f"https://127.0.0.1:{self.origin_port}"

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    def wait(self, seconds: float = 60.0) -> None:
        for handler in list(self.handlers):
            handler.join(seconds)

    def _listen(self, serve) -> int:
        listener = self._socket.create_server(("127.0.0.1", 0))
        self.listeners.append(listener)

        def accept():
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                handler = threading.Thread(target=serve, args=(client,), daemon=True)
                self.handlers.append(handler)
                handler.start()

        threading.Thread(target=accept, daemon=True).start()
        return listener.getsockname()[1]

    def _head_of_request(self, conn) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                raise OSError("closed before the request's head")
            data += piece
        return data

    def _origin(self, client) -> None:
        try:
            with self.context.wrap_socket(client, server_side=True) as conn:
                self._head_of_request(conn)
                head = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\n\r\n")
                for index in range(len(head)):
                    time.sleep(self.pause)
                    conn.sendall(head[index:index + 1])
                conn.sendall(b"{}")
        except OSError:
            self.heads["hung_up"] += 1
            return
        self.heads["whole"] += 1

    def _proxy(self, client) -> None:
        socket = self._socket
        try:
            conn = self.context.wrap_socket(client, server_side=True)
            self._head_of_request(conn)
            upstream = socket.create_connection(("127.0.0.1", self.origin_port))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        except OSError:
            return

        def pipe(source, sink):
            try:
                while piece := source.recv(65536):
                    sink.sendall(piece)
            except OSError:
                pass
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        back = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
        back.start()
        pipe(conn, upstream)
        back.join()
        conn.close()
        upstream.close()
