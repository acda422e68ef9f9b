"""The support desk's dashboard at /admin: server-rendered pages behind IVR_ADMIN_TOKEN.

The operator pastes the token once; a signed session cookie (HttpOnly, SameSite=Lax) keeps
them in. Every POST form carries the session's CSRF token. Changing IVR_ADMIN_TOKEN signs
everyone out.
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
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from ..extension import ivr
from .engineers import Engineers
from .service import EXPORT_FORMATS, Desk, DeskError, Period, parse_moment

log = logging.getLogger("ivr.admin")

admin = Blueprint("admin", __name__, url_prefix="/admin")

DISABLED = "The dashboard is disabled: set IVR_ADMIN_TOKEN."
EXPIRED = ("This form has expired or did not come from this dashboard. Go back, reload the "
           "page and try again.")
PUBLIC_ENDPOINTS = ("admin.login",)



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


@admin.before_request
def guard():
    token = ivr().settings.admin_token
    if not token:
        return message(404, DISABLED)
    if request.method == "POST" and not _same(request.form.get("csrf_token", ""),
                                              session.get("csrf", "")):
        log.warning("dashboard POST %s refused: missing or wrong CSRF token", request.path)
        return message(400, EXPIRED)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _same(session.get("operator", ""), operator_mark(token)):
        return None
    name = session.get("engineer")
    if name and _same(session.get("engineer_mark", ""),
                      Engineers.of(ivr()).session_mark(name) or ""):
        return None
    return redirect(url_for("admin.login"))


def actor() -> str:
    """Who is signed in: 'admin' for IVR_ADMIN_TOKEN, else the engineer's name."""
    return session.get("engineer") or "admin"


@admin.errorhandler(DeskError)
def desk_error(exc: DeskError):
    return message(exc.status, str(exc))


# -- signing in and out ------------------------------------------------------------------


@admin.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("admin/login.html")
    given = request.form.get("token", "").strip()
    engineer = None
    if not _same(given, ivr().settings.admin_token):
        engineer = Engineers.of(ivr()).by_token(given)  # a personal desk token
        if engineer is None:
            log.warning("dashboard sign-in refused: wrong token")
            return render_template("admin/login.html",
                                   error="That is not the admin token or a desk token."), 401
        session.clear()
        session.permanent = True
        session["engineer"] = engineer.name
        session["engineer_mark"] = Engineers.of(ivr()).session_mark(engineer.name)
        session["csrf"] = secrets.token_urlsafe(32)
        log.info("dashboard sign-in by engineer %s", engineer.name)
        return redirect(url_for("admin.tickets"))
    session.clear()
    session.permanent = True
    session["operator"] = operator_mark(ivr().settings.admin_token)
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("dashboard sign-in")
    return redirect(url_for("admin.tickets"))


@admin.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("admin.login"))


# -- tickets -----------------------------------------------------------------------------


@admin.get("/")
def tickets():
    views = desk().unclosed()
    counts = {name: sum(v["urgency"] == name for v in views) for name in ("overdue", "urgent",
                                                                          "fine")}
    today = ivr().service.clock().date()
    return render_template("admin/tickets.html", tickets=views, counts=counts,
                           export_since=(today - dt.timedelta(days=30)).isoformat(),
                           formats=EXPORT_FORMATS)


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
    if text not in ("1", "2", "3", "4"):
        return message(400, f"priority: {text[:20]!r} is not a priority from 1 to 4")
    view, changed = desk().set_priority(ref, int(text), actor=actor())
    flash(f"Ticket {view['number']} {'is now' if changed else 'was already'} "
          f"P{view['priority']} {view['priority_name']}.")
    return redirect(url_for("admin.ticket", ref=view["number"]))


@admin.get("/export")
def export():
    fmt = request.args.get("format", "csv")
    since_text = request.args.get("since", "").strip()
    since = parse_moment(since_text, "since") if since_text else None
    body = desk().export(fmt, since)
    name = f"tickets-since-{since:%Y-%m-%d}" if since else "tickets"
    mimetype = "text/csv" if fmt == "csv" else "application/json"
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
