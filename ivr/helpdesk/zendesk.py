"""Zendesk: the help desk behind the vendor's support site, through its Tickets API.

Basic auth as ``{email}/token:{api_token}``; every request has a time-out, from connecting
to its answer's last byte, and no answer is read past MAX_ANSWER_BYTES. A create carries an
``Idempotency-Key`` derived from the ticket number, so a retried create returns the ticket
the first one made. Zendesk keeps idempotency keys for a couple of hours, so a create
retried later than that first looks the ticket up by ``external_id``. A retried update
first checks whether its note is already on the ticket.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import time

import requests
import urllib3

from ..deadline import Deadline, hang_up_at_deadlines
from ..domain.digits import ascii_digits
from .base import HelpDesk, NewTicket, Result, TicketChange

log = logging.getLogger("ivr.helpdesk")

PRIORITIES = {1: "urgent", 2: "high", 3: "normal", 4: "low"}
LEVELS = {name: level for level, name in PRIORITIES.items()}
# Zendesk forgets an idempotency key after about two hours; look up well before that.
IDEMPOTENCY_WINDOW = 3600.0
# Refusals that will not change on their own: the job fails with Zendesk's explanation.
PERMANENT = (400, 401, 403, 404, 410, 413, 422)
MAX_RETRY_AFTER = 86400.0
CLOSED_IN_ZENDESK = "closed prevents ticket update"
READ_SIZE = 64 * 1024
# An answer about one ticket is a few kilobytes; the largest this client asks for, a page
# of a ticket's comments (up to 100, each body in three forms), stays well under a
# megabyte. Reading stops past this many bytes (once decoded), so a server that answers
# without end, or a small gzip that inflates to gigabytes, cannot fill the sender's memory.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


def idempotency_key(external_id: str) -> str:
    return f"phone-ticket-{external_id}"


def ticket_id(value: object) -> str | None:
    """A Zendesk ticket id as this service keeps it and puts it in request paths: a whole
    number (JSON's, or written in ASCII digits), at most 20 digits; None for anything
    else (null, true, '../9001', '\u0663'), which no Zendesk answer carries."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return ascii_digits(text, at_most=20)


class Zendesk(HelpDesk):
    name = "Zendesk"

    def __init__(self, base_url: str, email: str, api_token: str, *, timeout: float = 10.0,
                 custom_fields: dict[str, int] | None = None,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(timeout, 5.0), timeout)  # connect, read
        self.custom_fields = dict(custom_fields or {})
        self.http = hang_up_at_deadlines(session or requests.Session())
        self.http.auth = (f"{email}/token", api_token)
        self.http.headers.update({"Accept": "application/json"})

    @classmethod
    def from_config(cls, helpdesk, api_token: str) -> "Zendesk":
        return cls(helpdesk.base_url, helpdesk.email, api_token,
                   timeout=helpdesk.timeout_seconds, custom_fields=helpdesk.custom_fields)

    # -- the interface -----------------------------------------------------------------

    def create(self, ticket: NewTicket, *, retried: bool, first_try_age: float) -> Result:
        if retried and first_try_age >= IDEMPOTENCY_WINDOW:
            found = self._find(ticket.external_id)
            if found.outcome != "ok" or found.remote_id is not None:
                return found
        return self._request("POST", "/api/v2/tickets.json", self.ticket_body(ticket),
                             headers={"Idempotency-Key": idempotency_key(ticket.external_id)})[0]

    def update(self, remote_id: str, change: TicketChange, *, retried: bool) -> Result:
        if retried and change.note:
            looked, seen = self._has_note(remote_id, change.marker)
            if looked.outcome != "ok":
                return looked
            if seen:
                change = TicketChange(**{**change.__dict__, "note": None})
        body = self.change_body(change)
        if not body["ticket"]:
            return Result.ok(remote_id)
        result = self._request("PUT", f"/api/v2/tickets/{remote_id}.json", body)[0]
        if result.outcome == "failed" and CLOSED_IN_ZENDESK in (result.message or ""):
            # Closed there is final: nothing more can be added, and nothing needs to be.
            log.info("Zendesk ticket %s is closed; change not applied", remote_id)
            return Result.ok(remote_id)
        return Result.ok(remote_id) if result.outcome == "ok" else result

    # -- request bodies ----------------------------------------------------------------

    def ticket_body(self, ticket: NewTicket) -> dict:
        body = {
            "external_id": ticket.external_id,
            "subject": ticket.subject,
            "comment": {"body": ticket.note, "public": False},
            "priority": PRIORITIES[ticket.priority],
            "tags": list(ticket.tags),
        }
        if ticket.status:
            body["status"] = ticket.status
        if ticket.requester_email:
            body["requester"] = {"email": ticket.requester_email,
                                 "name": ticket.requester_email}
        fields = self._fields(ticket.fields)
        if fields:
            body["custom_fields"] = fields
        return {"ticket": body}

    def change_body(self, change: TicketChange) -> dict:
        body: dict = {}
        if change.note:
            body["comment"] = {"body": change.note, "public": False}
        if change.priority is not None:
            body["priority"] = PRIORITIES[change.priority]
        if change.status is not None:
            body["status"] = change.status
        if change.add_tags:
            body["additional_tags"] = list(change.add_tags)
        if change.remove_tags:
            body["remove_tags"] = list(change.remove_tags)
        fields = self._fields(change.fields)
        if fields:
            body["custom_fields"] = fields
        return {"ticket": body}

    def _fields(self, values: dict[str, str]) -> list[dict]:
        return [{"id": field_id, "value": values[name]}
                for name, field_id in sorted(self.custom_fields.items()) if name in values]

    # -- HTTP --------------------------------------------------------------------------

    def _find(self, external_id: str) -> Result:
        """The ticket already made for this external id: ok with its id, or ok with None."""
        result, body = self._request("GET", "/api/v2/tickets.json",
                                     params={"external_id": external_id})
        if result.outcome != "ok":
            return result
        tickets = body.get("tickets")
        if tickets == []:
            return Result.ok(None)
        first = tickets[0] if isinstance(tickets, list) else None
        found = ticket_id(first.get("id")) if isinstance(first, dict) else None
        if found is None:  # not Zendesk's answer: a second ticket must not follow from it
            return Result.retry(f"the lookup's answer from {self.base_url} holds no "
                                "Zendesk ticket with an id")
        return Result("ok", remote_id=found, found=True)

    def _has_note(self, remote_id: str, marker: str) -> tuple[Result, bool]:
        """Whether a comment of the ticket already carries the marker."""
        result, body = self._request("GET", f"/api/v2/tickets/{remote_id}/comments.json",
                                     params={"sort_order": "desc"})
        if result.outcome != "ok":
            return result, False
        comments = body.get("comments")
        if not isinstance(comments, list):
            return Result.retry(f"the comments' answer from {self.base_url} holds no list "
                                "of comments"), False
        return result, any(isinstance(text, str) and marker in text
                           for c in comments if isinstance(c, dict)
                           for text in (c.get("body"), c.get("plain_body")))

    def _request(self, method: str, path: str, body: dict | None = None, *,
                 params: dict | None = None,
                 headers: dict | None = None) -> tuple[Result, dict | None]:
        """One request: its result, and the answer's JSON object when it succeeded. All of
        it, from connecting to the answer's last byte, must be over by the time-out from
        the start: requests' read time-out is per read, so an answer trickled a byte at a
        time, its status line and headers as much as its body, would hold the sender past
        its lease (for ever, from a server that never stops). A Deadline hangs up the
        connection at the time-out, whatever it is waiting for, the body included."""
        deadline = time.monotonic() + self.timeout[1]
        with Deadline(deadline) as watch:
            try:
                response = self.http.request(method, self.base_url + path, json=body,
                                             params=params, headers=headers,
                                             timeout=self.timeout, allow_redirects=False,
                                             stream=True)
            except requests.Timeout:
                return Result.retry(self._too_slow()), None
            except requests.RequestException as exc:
                if watch.passed:
                    return Result.retry(self._too_slow()), None
                return Result.retry(f"{type(exc).__name__}: could not reach "
                                    f"{self.base_url}"), None
            with response:
                try:
                    content = read_up_to(response, MAX_ANSWER_BYTES + 1)
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                    return Result.retry(self._too_slow()), None
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    if watch.passed:
                        return Result.retry(self._too_slow()), None
                    return Result.retry(f"{type(exc).__name__}: the answer from "
                                        f"{self.base_url} broke off"), None
            if watch.passed:  # what was read may have been cut short
                return Result.retry(self._too_slow()), None
        status = response.status_code
        if len(content) > MAX_ANSWER_BYTES:
            if 200 <= status < 300:  # its ticket id cannot be trusted from half a body
                return Result.retry(f"HTTP {status}: the answer was larger than "
                                    f"{MAX_ANSWER_BYTES} bytes, more than any ticket's"), None
            content = content[:MAX_ANSWER_BYTES]  # a refusal: its start says enough
        if 200 <= status < 300:
            try:
                answer = json.loads(content)
            except (ValueError, RecursionError):  # the last: nested too deeply
                return Result.retry(f"HTTP {status}: the answer was not JSON"), None
            if not isinstance(answer, dict):
                return Result.retry(f"HTTP {status}: the answer was not a JSON object"), None
            ticket = answer.get("ticket")
            return Result.ok(ticket_id(ticket.get("id")) if isinstance(ticket, dict)
                             else None), answer
        message = error_message(status, content)
        if status == 429:
            return Result.retry(message, retry_after(response), rate_limited=True), None
        if status in PERMANENT:
            return Result.failed(message), None
        # 409 (the ticket was being updated), 5xx: worth another try.
        return Result.retry(message, retry_after(response)), None

    def _too_slow(self) -> str:
        return f"no answer within {self.timeout[1]:g} s"


def read_up_to(response: requests.Response, limit: int) -> bytes:
    """The body of a streamed answer, decoded, up to ``limit`` bytes (a longer one is cut
    there, the rest never read: closing the response closes its connection, and the next
    request opens another). Its time is bounded by the request's ``Deadline``, which hangs
    up the connection when the time-out is over."""
    raw = response.raw
    chunks, size = [], 0
    while size < limit:
        chunk = raw.read1(min(READ_SIZE, limit - size), decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), bounded."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
        if not math.isfinite(seconds):  # "NaN", "inf": not a delay, so none was given
            return None
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def error_message(status: int, content: bytes) -> str:
    """Zendesk's explanation of a refusal: its error, description and field details."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        text = " ".join(content.decode("utf-8", "replace").split())[:200]
        return f"HTTP {status}" + (f": {text}" if text else "")
    parts: list[str] = []
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            parts += [str(error.get("title") or ""), str(error.get("message") or "")]
        elif error:
            parts.append(str(error))
        if body.get("description"):
            parts.append(str(body["description"]))
        details = body.get("details")
        if isinstance(details, dict):
            for name, items in details.items():
                for item in items if isinstance(items, list) else [items]:
                    text = item.get("description") if isinstance(item, dict) else item
                    parts.append(f"{name}: {text}")
        errors = body.get("errors")
        for item in errors if isinstance(errors, list) else [errors] if errors else []:
            if isinstance(item, dict):
                parts.append(str(item.get("detail") or item.get("title") or item))
            else:
                parts.append(str(item))
    text = "; ".join(p for p in parts if p and p != "None")
    return (f"HTTP {status}: {text}" if text else f"HTTP {status}")[:500]
