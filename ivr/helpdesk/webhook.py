"""POST /hooks/zendesk: what agents did in Zendesk (solved, closed, priority changed) comes
back to the phone ticket, through the desk's lifecycle rules.

The request is signed: ``X-Zendesk-Webhook-Signature`` is base64(HMAC-SHA256(secret,
timestamp + body)) with the timestamp in ``X-Zendesk-Webhook-Signature-Timestamp``. A wrong
signature or a timestamp more than 5 minutes away gets 401 and changes nothing. Only JSON
answers, errors included; a bad body gets 400 with what is wrong, never a 500. Changes that
come from here are not pushed back to Zendesk.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import HTTPException

from ..desk.service import Desk, DeskError
from ..domain.digits import ascii_digits, ascii_number
from ..domain.engineers import HELPDESK_ACTOR
from ..extension import ivr
from ..storage import DATABASE_DOWN, HelpdeskJobRepository, first_delivery, newest_delivery
from ..storage.tickets import ticket_by_number
from .zendesk import LEVELS, ticket_id

log = logging.getLogger("ivr.helpdesk")

hooks = Blueprint("hooks", __name__, url_prefix="/hooks")

MAX_BODY = 16 * 1024  # the trigger's body is a few hundred bytes
MAX_AGE = dt.timedelta(minutes=5)
CLOSING = ("solved", "closed")
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
NO_PRIORITY = ("", "-")  # a Zendesk ticket without a priority


def answer(code: int, /, **body):
    return jsonify(body), code


def database_down(exc):
    """Zendesk delivers again later: say so instead of failing."""
    log.warning("Zendesk webhook not applied: database unreachable")
    return answer(503, error="the database is unreachable; deliver again later")


for _error in DATABASE_DOWN:
    hooks.register_error_handler(_error, database_down)


@hooks.errorhandler(Exception)
def unexpected(exc: Exception):
    """Zendesk reads JSON here, errors included: never Flask's HTML error page."""
    if isinstance(exc, HTTPException):
        return answer(exc.code or 500, error=exc.description or exc.name)
    log.exception("Zendesk webhook failed")
    return answer(500, error="internal error; the server log has the details")


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + body, hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def parse_timestamp(text: str) -> dt.datetime | None:
    """Zendesk's signature timestamp: ISO 8601 (``2026-11-25T12:00:00Z``) or Unix seconds."""
    text = text.strip()
    try:
        seconds = ascii_number(text, at_most=12)
        if seconds is not None:
            return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
        moment = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment


@hooks.post("/zendesk")
def zendesk():
    settings, config = ivr().settings, ivr().config
    if config.helpdesk is None or not settings.zendesk_webhook_secret:
        return answer(404, error="the Zendesk webhook is off: configure [helpdesk] and set "
                                 "IVR_ZENDESK_WEBHOOK_SECRET")
    if request.content_length is None or request.content_length > MAX_BODY:
        return answer(413 if request.content_length else 411,
                      error=f"send a body of at most {MAX_BODY} bytes with a Content-Length")
    body = request.get_data(cache=False)
    timestamp = request.headers.get("X-Zendesk-Webhook-Signature-Timestamp", "")
    given = request.headers.get("X-Zendesk-Webhook-Signature", "")
    expected = signature_of(settings.zendesk_webhook_secret, timestamp, body)
    if not given or not hmac.compare_digest(given.encode("ascii", "replace"),
                                            expected.encode("ascii")):
        log.warning("Zendesk webhook refused: missing or wrong signature")
        return answer(401, error="X-Zendesk-Webhook-Signature is missing or does not match")
    moment = parse_timestamp(timestamp)
    if moment is None or abs(ivr().service.clock() - moment) > MAX_AGE:
        log.warning("Zendesk webhook refused: signature timestamp missing or too old")
        return answer(401, error="X-Zendesk-Webhook-Signature-Timestamp is more than 5 minutes "
                                 "from now")
    try:
        status, priority, external_id, remote_id = read_body(body)
    except ValueError as exc:
        return answer(400, error=str(exc))
    if not external_id:
        return answer(200, result="ignored", reason="not a phone ticket (no external_id)")
    return apply(external_id, remote_id, status, priority,
                 delivery=hashlib.sha256(given.encode("utf-8", "replace")).hexdigest(),
                 signed_at=moment)


def read_body(body: bytes) -> tuple[str | None, int | None, str, str | None]:
    """(status, priority level, external id, Zendesk id) of the trigger's JSON body, or
    ValueError saying what is wrong with it."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # the last: nested too deeply
        raise ValueError('the body is not JSON; expected {"ticket": {"id": ..., "external_id": '
                         '..., "status": ..., "priority": ...}}') from None
    ticket = data.get("ticket") if isinstance(data, dict) else None
    if not isinstance(ticket, dict):
        raise ValueError('expected a JSON object with a "ticket" object')
    values = {}
    for name in ("id", "external_id", "status", "priority"):
        value = ticket.get(name)
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int))):
            raise ValueError(f"ticket.{name}: expected a string")
        values[name] = str(value).strip() if value is not None else ""
    remote_id = values["id"] or None
    if remote_id is not None and ticket_id(remote_id) is None:
        raise ValueError(f"ticket.id: {remote_id[:30]!r} is not a Zendesk ticket id")
    external_id = values["external_id"]
    if external_id and ascii_digits(external_id, at_most=16) is None:
        raise ValueError(f"ticket.external_id: {external_id[:30]!r} is not a phone ticket "
                         "number")
    # Zendesk fills placeholders with display names ("Solved", "Urgent").
    status = values["status"].lower()
    if status and status not in STATUSES:
        raise ValueError(f"ticket.status: {values['status'][:30]!r} is not one of "
                         f"{', '.join(STATUSES)}")
    priority_name = values["priority"].lower()
    if priority_name not in NO_PRIORITY and priority_name not in LEVELS:
        raise ValueError(f"ticket.priority: {values['priority'][:30]!r} is not one of "
                         f"{', '.join(LEVELS)}")
    return status or None, LEVELS.get(priority_name), external_id, remote_id


def apply(number: str, remote_id: str | None, status: str | None, priority: int | None,
          delivery: str, signed_at: dt.datetime):
    """Close and/or reprioritise the ticket with this number, as the desk would.
    ``delivery`` names this delivery (a hash of its signature): one applied before, sent
    again, changes nothing, so a replay cannot bring an older change back. Nor can a
    delivery signed before one already seen for the ticket (``signed_at``): Zendesk does
    not deliver in order, and its body shows the ticket as it was when it was signed."""
    storage = ivr().storage
    with storage.transaction() as session:
        # Locked while it is judged and its signing time kept: an older delivery being
        # applied meanwhile either lands before this one reads the ticket, or waits and
        # then finds this one newer.
        found = ticket_by_number(session, number, for_update=True)
        if found is None:
            return answer(404, error=f"no phone ticket {number}")
        jobs = HelpdeskJobRepository(session)
        known = jobs.remote_id(found.id)
        other = known is not None and remote_id is not None and known != remote_id
        # Another Zendesk ticket's delivery says nothing of how this one stands there.
        newest = other or newest_delivery(session, found.id, signed_at)
        current_status, current_priority = found.status, found.priority
        echo = priority is not None and priority != current_priority \
            and jobs.echoes_own_push(found.id, current_priority, priority, HELPDESK_ACTOR,
                                     closing=status in CLOSING)
    if other:
        return answer(409, error=f"phone ticket {number} belongs to Zendesk ticket {known}, "
                                 f"not {remote_id}")
    if not newest:
        log.info("Zendesk delivery for ticket %s signed before one already seen; not applied",
                 number)
        return answer(200, result="unchanged", ticket=number, status=current_status,
                      priority=current_priority,
                      reason="signed before a delivery already received for this ticket")
    if echo:
        # Applied, it would put the older priority back here and cancel the newer push.
        log.info("Zendesk echoed ticket %s's pushed priority P%s; the desk's P%s is on its way",
                 number, priority, current_priority)
        priority = None
    elif priority == current_priority:
        # The level the ticket already has: no change asked. Kept, it would make a desk
        # change to the priority made while this is applied stop the close below.
        priority = None
    closing = "closed" if status in CLOSING else None
    now = ivr().service.clock()
    if current_status == "closed" or (closing is None and priority is None):
        # Remembered all the same: sent again after the desk's next change has been
        # pushed, it would no longer read as an echo and would undo that change.
        with storage.transaction() as session:
            first_delivery(session, delivery, now)
        return answer(200, result="unchanged", ticket=number, status=current_status,
                      priority=current_priority)

    def first_time(session) -> bool:
        # Under the ticket's lock: a delivery whose field (status or priority) the desk
        # changed since it was judged above (an echo taken for news, or news about an
        # older state) changes nothing; the desk's own change goes to Zendesk and both
        # sides agree again. A change to the other field does not stop it.
        if not first_delivery(session, delivery, now):
            return False
        ticket = ticket_by_number(session, number)
        if not newest_delivery(session, ticket.id, signed_at):  # a newer one came meanwhile
            return False
        return (closing is None or ticket.status == current_status) \
            and (priority is None or ticket.priority == current_priority)

    try:
        view, changed = Desk.of(ivr()).update(
            number, status=closing, priority=priority, push=False, actor=HELPDESK_ACTOR,
            first_time=first_time)
    except DeskError as exc:
        return answer(exc.status, error=str(exc))
    if changed:
        log.info("Zendesk changed ticket %s: status=%s priority=P%s", number, view["status"],
                 view["priority"])
    return answer(200, result="changed" if changed else "unchanged", ticket=number,
                  status=view["status"], priority=view["priority"])
