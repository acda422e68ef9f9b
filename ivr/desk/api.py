"""The support desk's JSON API, behind ``Authorization: Bearer $IVR_ADMIN_TOKEN``.

Off (404 with the reason) while IVR_ADMIN_TOKEN is unset. Every answer is JSON, errors
included: 400 bad filter or body, 401 missing or wrong token (429 past ten a minute or
fifty an hour from one address; a right token is always served), 404 unknown ticket, 409 a
move the ticket lifecycle does not allow, 503 (with Retry-After) while the database cannot
be reached or stays locked; placing a callback adds 403, 502 and 503 (this server lacks
the Twilio settings callbacks need).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Callable

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..domain.digits import ascii_number
from ..domain.flow import Outcome
from ..domain.priority import HIGHEST, LOWEST
from ..extension import ivr
from ..storage import database_unavailable
from ..storage.helpdesk import status_report
from .engineers import Engineers
from .service import (STATUSES, BadRequest, Desk, DeskError, call_key, parse_moment,
                      parse_page_cursor, ticket_key)

log = logging.getLogger("ivr.api")

api = Blueprint("api", __name__, url_prefix="/api")

DISABLED = "the admin API is disabled: set IVR_ADMIN_TOKEN"
DATABASE_AWAY = "the database is unreachable or busy; try again shortly"
RETRY_AFTER = "5"  # seconds: a database restarting, or a write lock held past its wait
PER_PAGE, MAX_PER_PAGE = 50, 200
CALL_STATUSES = ("queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer",
                 "canceled")
PAGING = ("page", "per_page", "after")
TICKET_FILTERS = ("status", "priority", "region", "since", "until") + PAGING
CALL_FILTERS = ("outcome", "status", "priority", "region", "since", "until") + PAGING



def error(status: int, message: str):
    return jsonify(error=message), status


def json_object(example: str, *, optional: bool = False) -> dict:
    """The request's body, which must be a JSON object; ``optional`` lets an empty body
    stand for ``{}``. Anything else present (not JSON, JSON sent as text/plain, a form, a
    list) is a 400 rather than an empty body: an empty body can mean a default the sender
    never asked for, such as a callback placed for the token's owner."""
    if optional and not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest(f"send a JSON object with Content-Type: application/json, e.g. "
                         f"{example}")
    return body


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@api.before_request
def authorise():
    expected = ivr().settings.admin_token
    if not expected:
        return error(404, DISABLED)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    g.actor, g.engineer = "admin", None
    if scheme.lower() == "bearer" and not token_matches(given.strip(), expected):
        engineer = Engineers.of(ivr()).by_token(given.strip())  # a personal desk token
        if engineer is not None:
            g.actor = g.engineer = engineer.name
            return None
    if scheme.lower() != "bearer" or not token_matches(given.strip(), expected):
        wait = ivr().token_refusals.count()
        if wait is not None:  # past the limit: answered, but no longer logged one by one
            response, status = error(429, "too many wrong or missing tokens from this "
                                          f"address; try again in {wait} s")
            response.headers["Retry-After"] = str(wait)
            return response, status
        log.warning("API request %s %s refused: missing or wrong bearer token", request.method,
                    request.path)
        response, status = error(401, "missing or wrong token: send the header "
                                      "'Authorization: Bearer <IVR_ADMIN_TOKEN>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="ivr-admin"'
        return response, status
    return None


# -- query parameters --------------------------------------------------------------------


def _one(name: str) -> str | None:
    values = request.args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"{name}: give it once (a comma-separated list where several "
                         "values are allowed)")
    return values[0].strip() if values else None


def _choices(name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    text = _one(name)
    if text is None:
        return ()
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    wrong = [v for v in values if v not in allowed]
    if wrong or not values:
        raise BadRequest(f"{name}: {(wrong or [text])[0][:40]!r} is not one of {', '.join(allowed)}")
    return values


def _integer(name: str, low: int, high: int | None, default: int | None) -> int | None:
    text = _one(name)
    if text is None:
        return default
    bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
    value = ascii_number(text, at_most=9)
    if value is None or value < low or (high is not None and value > high):
        raise BadRequest(f"{name}: {text[:20]!r} is not a whole number {bound}")
    return value


def _filters(allowed: tuple[str, ...], statuses: tuple[str, ...],
             key: Callable[[str], Any]) -> dict:
    """The list's filters and paging: ``page``, or ``after`` (a cursor whose tie-breaking
    key ``key`` reads) instead of it, and ``per_page``."""
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise BadRequest(f"{unknown[0][:40]!r} is not a filter here; expected some of "
                         f"{', '.join(allowed)}")
    regions = tuple(sorted({line.region for line in ivr().config.lines} | {"unknown"}))
    region = _choices("region", regions)
    if len(region) > 1:
        raise BadRequest("region: give one region")
    since, until = _one("since"), _one("until")
    filters = {
        "statuses": _choices("status", statuses),
        "priority": _integer("priority", HIGHEST, LOWEST, None),
        "region": region[0] if region else None,
        "since": parse_moment(since, "since") if since else None,
        "until": parse_moment(until, "until", end=True) if until else None,
    }
    if filters["since"] and filters["until"] and filters["until"] <= filters["since"]:
        raise BadRequest("until: the end of the range must come after its start")
    filters["page"] = _integer("page", 1, None, 1)
    filters["per_page"] = _integer("per_page", 1, MAX_PER_PAGE, PER_PAGE)
    after = _one("after")
    if after is not None:
        if "page" in request.args:
            raise BadRequest("after: give page or after, not both")
        filters["after"] = parse_page_cursor(after, key)
    return filters


def _page(name: str, page) -> dict:
    return {name: page.items, "page": page.page, "per_page": page.per_page,
            "total": page.total, "pages": page.pages, "next": page.next}


# -- endpoints ---------------------------------------------------------------------------


@api.get("/tickets")
def tickets():
    """Tickets, newest first: ?status=open,in_queue&priority=1&region=Japan&since=&until=
    &page=&per_page= (at most 200), or &after= (a page's ``next``) instead of page."""
    filters = _filters(TICKET_FILTERS, STATUSES, ticket_key)
    return jsonify(_page("tickets", Desk.of(ivr()).tickets(**filters)))


@api.get("/calls")
def calls():
    """Calls, newest first: ?outcome=routed,abandoned&status=completed&priority=&region=
    &since=&until=&page=&per_page=, or &after= (a page's ``next``) instead of page."""
    filters = _filters(CALL_FILTERS, CALL_STATUSES, call_key)
    filters["outcomes"] = _choices("outcome", tuple(o.value for o in Outcome))
    return jsonify(_page("calls", Desk.of(ivr()).calls(**filters)))


@api.get("/tickets/<ref>")
def ticket(ref: str):
    return jsonify(Desk.of(ivr()).ticket(ref))


@api.patch("/tickets/<ref>")
def update_ticket(ref: str):
    """Body: {"status": "closed"} and/or {"priority": 2}."""
    body = json_object('{"status": "closed"} or {"priority": 2}')
    unknown = sorted(set(body) - {"status", "priority"})
    if unknown:
        raise BadRequest(f"{unknown[0][:40]!r} cannot be changed; expected status or priority")
    if "status" in body and not isinstance(body["status"], str):
        raise BadRequest(f"status: {body['status']!r} is not one of {', '.join(STATUSES)}")
    view, _ = Desk.of(ivr()).update(ref, status=body.get("status"),
                                    priority=body.get("priority"), actor=g.actor)
    return jsonify(view)


@api.get("/helpdesk")
def helpdesk():
    """Help-desk pushes: counts, pending, failed (with the help desk's error), latest sent."""
    return jsonify(status_report(ivr().storage, ivr().config.helpdesk))


# -- errors ------------------------------------------------------------------------------


@api.errorhandler(DeskError)
def desk_error(exc: DeskError):
    return error(exc.status, str(exc))


@api.errorhandler(Exception)
def unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return error(exc.code or 500, exc.description or exc.name)
    if database_unavailable(exc):  # not a fault of the request or of the service
        log.warning("API %s %s not served: database unreachable or busy", request.method,
                    request.path)
        response, status = error(503, DATABASE_AWAY)
        response.headers["Retry-After"] = RETRY_AFTER
        return response, status
    log.exception("API %s %s failed", request.method, request.path)
    return error(500, "internal error; the server log has the details")


@api.app_errorhandler(HTTPException)
def http_error(exc: HTTPException):
    """Errors raised before a view is chosen (unknown path, wrong method) under /api."""
    if request.path == "/api" or request.path.startswith("/api/"):
        return error(exc.code or 500, exc.description or exc.name)
    return exc
