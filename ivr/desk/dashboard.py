"""The support desk's dashboard at /admin: server-rendered pages behind IVR_ADMIN_TOKEN.

The operator pastes the token once; a signed session cookie (HttpOnly, SameSite=Lax) keeps
them in. The cookie names a session kept on the server (table desk_sessions), which ends
at sign-out or 12 hours after sign-in, whichever comes first. Every POST form carries the
session's CSRF token. Changing IVR_ADMIN_TOKEN signs everyone out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.exc import ProgrammingError

from ..domain.priority import KEYS as PRIORITY_KEYS
from ..domain.priority import RANGE_TEXT
from ..extension import STREAMED_BODY, ivr
from ..storage import DATABASE_DOWN, HelpdeskJobRepository, database_unavailable
from ..storage.desk_sessions import DeskSessionRepository
from ..storage.helpdesk import helpdesk_counts, job_dict, job_id
from .api import RETRY_AFTER
from .engineers import Engineers
from .service import EXPORT_FORMATS, Desk, DeskError, Period, parse_moment

log = logging.getLogger("ivr.admin")

admin = Blueprint("admin", __name__, url_prefix="/admin")

DISABLED = "The dashboard is disabled: set IVR_ADMIN_TOKEN."
EXPIRED = ("This form has expired or did not come from this dashboard. Go back, reload the "
           "page and try again.")
PUBLIC_ENDPOINTS = ("admin.login",)
BOARD_SIZE = 500  # unclosed tickets listed on /admin/, the least time left first



def desk() -> Desk:
    return Desk.of(ivr())


@admin.record_once
def configure(state) -> None:
    """The session key derives from the pepper, so every worker shares it with no setup."""
    app = state.app
    settings = app.extensions["ivr"].settings
    app.secret_key = app.extensions["ivr"].hasher.derive("flask-session")
    app.config.update(
        SESSION_COOKIE_NAME="ivr_admin",
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Secure behind TLS: a public https URL, or trusted proxies (which terminate TLS);
        # only a plain local server (make run) sends it over http.
        SESSION_COOKIE_SECURE=(settings.public_url or "").startswith("https://")
        or settings.trusted_proxies > 0,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
    )


def _same(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def identity_for_token(token: str) -> str | None:
    """Who signs in with this token: "admin" for IVR_ADMIN_TOKEN, else None. Other kinds
    of desk token (e.g. personal ones) map to their identities here."""
    admin = ivr().settings.admin_token
    if admin and _same(token, admin):
        return "admin"
    engineer = Engineers.of(ivr()).by_token(token) if token else None  # a personal token
    return ENGINEER + engineer.name if engineer is not None else None


def credential_mark(identity: str, token: str | None = None) -> str | None:
    """A keyed hash of the credential an identity signs in with now; a session opened
    with another is no longer valid. Every mark depends on IVR_ADMIN_TOKEN, so changing
    it signs everyone out, engineers too. ``token``: at sign-in, the token presented (an
    engineer's mark is then taken from it, not read again from a row that a rotation may
    have changed since the token was checked)."""
    admin_token = ivr().settings.admin_token
    admin = operator_mark(admin_token or "")
    if identity == "admin":
        return admin if admin_token else None
    if identity.startswith(ENGINEER):  # changes when the token is rotated, gone when removed
        engineers = Engineers.of(ivr())
        own = engineers.token_mark(token) if token is not None \
            else engineers.session_mark(identity.removeprefix(ENGINEER))
        return None if own is None else \
            hmac.new(admin.encode(), own.encode(), hashlib.sha256).hexdigest()
    return None


def _sessions(db_session) -> DeskSessionRepository:
    return DeskSessionRepository(db_session, ivr().hasher.derive("desk-session-id"))


def signed_in_identity() -> str | None:
    """The identity of this request's dashboard session, if it is live on the server."""
    session_id = session.get("sid")
    if not isinstance(session_id, str):
        return None
    with ivr().storage.reading() as db_session:
        row = _sessions(db_session).find(session_id, ivr().service.clock())
        identity, credential = (row.identity, row.credential) if row else (None, "")
    expected = credential_mark(identity) if identity else None
    return identity if expected and _same(credential, expected) else None


def operator_mark(token: str) -> str:
    """What the session keeps to say "signed in with this token" (never the token itself)."""
    key = ivr().hasher.derive("admin-session-token")
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@admin.context_processor
def template_helpers():
    return {"csrf_token": csrf_token}


def message(status: int, text: str):
    return render_template("admin/message.html", message=text, status=status), status


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # what reads; everything else needs CSRF


@admin.before_request
def guard():
    token = ivr().settings.admin_token
    if not token:
        return message(404, DISABLED)
    if request.method not in SAFE_METHODS and not _same(request.form.get("csrf_token", ""),
                                              session.get("csrf", "")):
        log.warning("dashboard POST %s refused: missing or wrong CSRF token", request.path)
        return message(400, EXPIRED)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    identity = signed_in_identity()
    if identity is None:
        return redirect(url_for("admin.login"))
    g.desk_identity = identity
    return None


ENGINEER = "engineer:"  # identities of engineers signed in with their personal token


def actor() -> str:
    """Who is signed in: 'admin' for IVR_ADMIN_TOKEN, else the engineer's name."""
    identity = g.get("desk_identity") or "admin"
    return identity.removeprefix(ENGINEER)


@admin.errorhandler(429)
def too_many(exc):
    log.warning("dashboard sign-in refused: too many attempts from one address")
    return message(429, "Too many sign-in attempts from this address. Wait a minute and try "
                        "again.")


@admin.errorhandler(DeskError)
def desk_error(exc: DeskError):
    return message(exc.status, str(exc))


def database_away(exc):
    """A page the database could not serve (unreachable, its write lock held past the
    wait, or no tables yet) is to be loaded again shortly: 503, not the 500 of a fault."""
    if not database_unavailable(exc):  # a ProgrammingError of another kind: a fault
        raise exc
    log.warning("dashboard %s %s not served: database unreachable or busy", request.method,
                request.path)
    page, status = message(503, "The database cannot be reached just now. Try again in a "
                                "few seconds.")
    return page, status, {"Retry-After": RETRY_AFTER}


for _error in (*DATABASE_DOWN, ProgrammingError):  # PostgreSQL's "relation does not exist"
    admin.register_error_handler(_error, database_away)


# -- signing in and out ------------------------------------------------------------------


@admin.route("/login", methods=["GET", "POST"])
def login():  # rate-limited per client address (ivr/web.py)
    if request.method != "POST":  # GET, or HEAD (its headers): only POST signs in
        return render_template("admin/login.html")
    token = request.form.get("token", "").strip()
    identity = identity_for_token(token)
    if identity is None:
        log.warning("dashboard sign-in refused: wrong token")
        return render_template("admin/login.html",
                               error="That is not the admin token or a desk token."), 401
    now = ivr().service.clock()
    lifetime = current_app.permanent_session_lifetime
    earlier = session.get("sid")
    with ivr().storage.transaction() as db_session:
        sessions = _sessions(db_session)
        sessions.purge(now)
        if isinstance(earlier, str):
            # Signing in over a session ends it: a copy of the old cookie opens nothing.
            sessions.end(earlier)
        session_id = sessions.start(identity, credential_mark(identity, token), now, lifetime)
    session.clear()
    session.permanent = True
    session["sid"] = session_id
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("dashboard sign-in (%s)", identity)
    return redirect(url_for("admin.tickets"))


@admin.post("/logout")
def logout():
    """Ends the session on the server: a copy of the cookie no longer signs anyone in."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        with ivr().storage.transaction() as db_session:
            _sessions(db_session).end(session_id)
    session.clear()
    return redirect(url_for("admin.login"))


# -- tickets -----------------------------------------------------------------------------


@admin.get("/")
def tickets():
    views, counts = desk().unclosed_board(BOARD_SIZE)
    today = ivr().service.clock().date()
    return render_template("admin/tickets.html", tickets=views, counts=counts,
                           export_since=(today - dt.timedelta(days=30)).isoformat(),
                           formats=EXPORT_FORMATS, helpdesk=_helpdesk_counts())


@admin.get("/tickets/<ref>")
def ticket(ref: str):
    return render_template("admin/ticket.html", ticket=desk().ticket(ref),
                           priorities=ivr().config.priorities)


@admin.post("/tickets/<ref>/close")
def close(ref: str):
    view, changed = desk().close(ref, actor=actor())
    flash(f"Ticket {view['number']} {'closed' if changed else 'was already closed'}.")
    return redirect(url_for("admin.ticket", ref=view["number"]))


@admin.post("/tickets/<ref>/priority")
def set_priority(ref: str):
    text = request.form.get("priority", "")
    if text not in PRIORITY_KEYS:
        return message(400, f"priority: {text[:20]!r} is not a priority {RANGE_TEXT}")
    # The priority the page showed: another agent's change since then is not overwritten.
    shown = request.form.get("shown_priority")
    if shown is not None and shown not in PRIORITY_KEYS:
        return message(400, f"shown_priority: {shown[:20]!r} is not a priority {RANGE_TEXT}")
    view, changed = desk().set_priority(ref, int(text), actor=actor(),
                                        shown=int(shown) if shown is not None else None)
    flash(f"Ticket {view['number']} {'is now' if changed else 'was already'} "
          f"P{view['priority']} {view['priority_name']}.")
    return redirect(url_for("admin.ticket", ref=view["number"]))


# -- the help desk (Zendesk) -------------------------------------------------------------


def _helpdesk_counts() -> dict | None:
    """Pushes by status, or None when no help desk is connected."""
    if ivr().config.helpdesk is None:
        return None
    return helpdesk_counts(ivr().storage)


@admin.get("/helpdesk")
def helpdesk():
    config = ivr().config.helpdesk
    if config is None:
        return render_template("admin/helpdesk.html", helpdesk=None)
    with ivr().storage.reading() as session:
        jobs = HelpdeskJobRepository(session)
        counts = jobs.counts()
        failed = [job_dict(j, n) for j, n in jobs.listing(("failed",), 200)]
        pending = [job_dict(j, n) for j, n in jobs.listing(("pending", "sending"), 200)]
    return render_template("admin/helpdesk.html", helpdesk=config, counts=counts,
                           failed=failed, pending=pending)


@admin.post("/helpdesk/retry")
def helpdesk_retry():
    """Queue failed pushes again: one (``job``) or all of them."""
    if ivr().config.helpdesk is None:
        return message(404, "No help desk is connected.")
    text = request.form.get("job", "").strip()
    job = job_id(text) if text else None
    if text and job is None:
        return message(400, f"job: {text[:20]!r} is not a push id")
    with ivr().storage.transaction() as session:
        count = HelpdeskJobRepository(session).retry(job, ivr().service.clock())
    flash(f"{count} failed push{'es' if count != 1 else ''} queued again.")
    return redirect(url_for("admin.helpdesk"))


@admin.get("/export")
def export():
    fmt = request.args.get("format", "csv")
    since_text = request.args.get("since", "").strip()
    since = parse_moment(since_text, "since") if since_text else None
    body = desk().export(fmt, since)
    name = f"tickets-since-{since:%Y-%m-%d}" if since else "tickets"
    mimetype = "text/csv" if fmt == "csv" else "application/json"
    # Its first batch is read here, so a database away is a 503 page; the server front
    # asks for the rest as the download goes, off the app's thread (ivr/edge.py).
    request.environ[STREAMED_BODY] = True
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})


# -- reports -----------------------------------------------------------------------------


def period() -> Period:
    return Period.parse(request.args.get("since"), request.args.get("until"),
                        ivr().service.clock())


@admin.get("/calls")
def calls():
    chosen = period()
    traffic = desk().traffic(chosen)
    peak = max(traffic.by_hour) or 1
    bars = [{"hour": hour, "calls": count, "height": round(100 * count / peak, 1)}
            for hour, count in enumerate(traffic.by_hour)]
    return render_template("admin/calls.html", period=chosen, traffic=traffic, bars=bars,
                           peak=max(traffic.by_hour))


@admin.get("/sla")
def sla():
    chosen = period()
    return render_template("admin/sla.html", period=chosen, report=desk().sla(chosen))


# -- template filters --------------------------------------------------------------------


@admin.app_template_filter("duration")
def duration(seconds: int) -> str:
    """3725 -> '1 h 02 min'; 90000 -> '1 d 1 h'."""
    minutes = abs(int(seconds)) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


@admin.app_template_filter("when")
def when(iso: str | None) -> str:
    if not iso:
        return "–"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


@admin.app_template_filter("share")
def share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"
