"""The edges every HTTP request passes: body size limits, the accepted host names, the
sign-in rate limit and the desk's security headers, with the app, request, JSON and
session classes they work through. ``install(app)`` wires them; ``create_app`` calls it
once.

Twilio's webhooks are form posts of a few kilobytes (about 40 fields at most, none longer
than a few hundred characters); the desk's forms and JSON bodies are smaller still. So
every request body is capped well above that and far below what could hurt a worker, and
an oversized one is refused with 413 from its Content-Length before a byte is read. A
chunked body without a length is read only up to the cap. The same limits are enforced
again, before any buffering, by the server front in ``ivr.edge``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import time
from urllib.parse import parse_qsl

from flask import Flask, Request, Response, abort, request
from werkzeug.sansio.utils import host_is_trusted
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_talisman import Talisman
from limits import parse_many
from werkzeug.wsgi import get_content_length

from . import metrics

MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
TOO_LARGE = (f"The request body is larger than this service accepts ({MAX_BODY_BYTES} bytes "
             f"and {MAX_FORM_FIELDS} form fields at most).")

# The desk's pages and answers: never framed, never sniffed, never cached.
DESK_PREFIXES = ("/admin", "/api")
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    # No page runs a script, so none may: not even an answer of this origin (an export
    # or an API reply holding callers' text) that injected markup might load as one.
    "script-src": "'none'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


# Sign-in attempts per client address, counted per worker process in memory: a limit of
# N per worker is at most N x workers per address, still far below any guessing pace (the
# admin token has at least 32 characters); it keeps a script from flooding the log.
SIGN_IN_LIMIT = "10 per minute; 50 per hour"
RATE_LIMITED_ENDPOINTS = ("admin.login",)
# Wrong or missing tokens on the desk's JSON API, counted the same way. Guessing a token
# is hopeless anyway; the limit stops a flood of them from filling the log. Only refusals
# count, and a right token is served whatever the count (TokenRefusals).
WRONG_TOKEN_LIMIT = SIGN_IN_LIMIT
UNLIMITED_BLUEPRINTS = ("voice", "agent", "health", "hooks")
TWIML_BLUEPRINTS = ("voice", "agent")
HSTS_MAX_AGE = 31556926  # a year, in seconds: Strict-Transport-Security on desk pages


FORM = "application/x-www-form-urlencoded"
SYNC_CACHE_SIZE = 1024


class App(Flask):
    """Flask, remembering which views and hooks are plain functions. Flask asks
    ``ensure_sync`` about every hook and view on every request, and each answer takes an
    ``inspect.iscoroutinefunction`` (about 1 % of a webhook's instructions); the functions
    are registered once, so the answer is kept, for a bounded number of them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync: dict = {}

    def ensure_sync(self, func):
        try:
            return self._sync[func]
        except KeyError:
            sync = super().ensure_sync(func)
            if len(self._sync) < SYNC_CACHE_SIZE:
                self._sync[func] = sync
            return sync
        except TypeError:  # not hashable: asked afresh each time
            return super().ensure_sync(func)


HOST_FREE_PATHS = frozenset({"/healthz", "/metrics"})


class WebRequest(Request):
    """Flask's request, with a URL-encoded form (every Twilio webhook) parsed straight from
    the body ``_limit_body`` has already read, the way Werkzeug's form parser parses it:
    ``parse_qsl`` keeping blank values, a malformed escape kept as written, a body that is
    not UTF-8 an empty form. Werkzeug's way first builds a form parser and reads the content
    type's options again: 2 % of a webhook's instructions."""

    # IVR_ALLOWED_HOSTS (Flask's TRUSTED_HOSTS) does not apply to the health check and the
    # metrics: load balancers' probes and Prometheus name an instance by its address, and
    # neither answer builds a URL from the Host header or changes anything.
    @property
    def trusted_hosts(self) -> list[str] | None:
        return None if self.path in HOST_FREE_PATHS else self.__dict__.get("_trusted_hosts")

    @trusted_hosts.setter
    def trusted_hosts(self, value: list[str] | None) -> None:
        self.__dict__["_trusted_hosts"] = value

    def _load_form_data(self) -> None:
        if "form" in self.__dict__ or self.mimetype != FORM:
            return super()._load_form_data()
        try:
            items = parse_qsl(self.get_data(cache=True).decode(), keep_blank_values=True,
                              errors="werkzeug.url_quote")
        except ValueError:  # Werkzeug's parser is silent about a body it cannot decode
            items = []
        self.__dict__["form"] = self.parameter_storage_class(items)
        self.__dict__["files"] = self.parameter_storage_class()


class BoundedJSONProvider(DefaultJSONProvider):
    """JSON nested deeper than the parser's recursion reaches (a few thousand levels fit
    in the body limit) is invalid JSON, a 400 like any other, never a RecursionError."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signer built only for a request that
    brings a session cookie. Twilio and Zendesk never send one, and Flask's own interface
    derives the signing key on every request before it looks (about 3 % of a webhook's
    CPU); a new session is signed when it is saved, as before."""

    def open_session(self, app, request):
        # No Cookie header at all (every webhook): nothing to parse or look up.
        if app.secret_key and (not request.environ.get("HTTP_COOKIE")
                               or not request.cookies.get(self.get_cookie_name(app))):
            return self.session_class()
        return super().open_session(app, request)


def accepted_hosts(settings) -> list[str] | None:
    """The host names requests may carry (Flask's TRUSTED_HOSTS), or None for any.

    With IVR_PUBLIC_URL set, signatures are checked against that URL whatever the Host
    header says, so the proxy in front may pass any Host; IVR_ALLOWED_HOSTS narrows it
    further when given. Without IVR_PUBLIC_URL the signed URL is built from the Host
    header, so production mode requires IVR_ALLOWED_HOSTS (see Settings.from_env)."""
    return list(settings.allowed_hosts) or None


def _port_check(allowed: list[str]):
    """A before-request hook refusing a request whose port is not the one its host name
    was allowed with (IVR_ALLOWED_HOSTS=ivr.example.com:8443): Flask's TRUSTED_HOSTS
    compares names only, and a request another port was signed for must not pass. None
    when no entry names a port."""
    pinned = [(name, port) for name, _, port in (h.partition(":") for h in allowed)]
    if not any(port for _, port in pinned):
        return None

    def check():
        if request.path in HOST_FREE_PATHS:
            return None
        # Only a port the Host header names is compared: proxies commonly pass the name
        # alone, and the scheme seen behind one says nothing about the port Twilio used.
        # The names are matched by werkzeug's own rule (subdomains, IDNA), as Flask does.
        if ":" not in request.host:
            return None
        port = request.host.rpartition(":")[2]
        names = [n for n, p in pinned if not p or (port.isdigit() and int(p) == int(port))]
        if not names or not host_is_trusted(request.host, names):  # empty: it trusts any
            return Response(f"Host {request.host[:80]!r} is not one this service answers "
                            "(IVR_ALLOWED_HOSTS)\n", 400, mimetype="text/plain")
        return None

    return check


def install(app: Flask) -> "TokenRefusals":
    """Wire the edges into ``app``; the counter of refused API tokens they set up is
    returned for ``create_app`` to keep beside the app's other services."""
    settings = app.extensions["ivr"].settings
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
        MAX_FORM_PARTS=MAX_FORM_FIELDS,
        TRUSTED_HOSTS=accepted_hosts(settings),
    )
    app.json = BoundedJSONProvider(app)
    app.request_class = WebRequest
    app.session_interface = CookieSessions()
    app.before_request(_limit_body)
    port_check = _port_check(list(settings.allowed_hosts))
    if port_check is not None:
        app.before_request(port_check)
    # Only the sign-in form is limited: the limiter's hooks (its per-request bookkeeping)
    # do not run for Twilio's webhooks, the health check or Zendesk's hook at all.
    with _hooks_skipped_for(app, UNLIMITED_BLUEPRINTS):
        limiter = Limiter(get_remote_address, app=app, storage_uri="memory://",
                          default_limits=[], headers_enabled=True)
    for endpoint in RATE_LIMITED_ENDPOINTS:
        app.view_functions[endpoint] = limiter.limit(SIGN_IN_LIMIT, methods=["POST"])(
            app.view_functions[endpoint])
    app.after_request(_no_store)
    if (settings.public_url or "").startswith("https://"):
        # Talisman sends HSTS only for a request it sees as https; behind a TLS proxy that
        # is not trusted for X-Forwarded-Proto, every request looks like plain http.
        app.after_request(_hsts)
    # The browser headers are for the desk's pages; TwiML is read by Twilio alone.
    with _hooks_skipped_for(app, TWIML_BLUEPRINTS):
        Talisman(
            app,
            force_https=False,  # TLS ends at the proxy; Twilio only calls the https URL
            frame_options="DENY",
            content_security_policy=CONTENT_SECURITY_POLICY,
            content_security_policy_nonce_in=[],
            referrer_policy="no-referrer",
            session_cookie_secure=app.config.get("SESSION_COOKIE_SECURE", False),
            session_cookie_http_only=True,
            strict_transport_security=True,
            strict_transport_security_max_age=HSTS_MAX_AGE,
        )
    return TokenRefusals(limiter, WRONG_TOKEN_LIMIT)


class TokenRefusals:
    """Refused API tokens per client address, in the limiter's storage. The API asks
    only once a token has been found wrong, so a right token from an address that has
    run out (an engineer behind the same NAT as a script guessing) is never held back,
    where the sign-in form, counting every attempt, holds back everyone at the address."""

    SCOPE = "api-wrong-token"

    def __init__(self, limiter: Limiter, limits: str):
        self.limiter = limiter
        self.items = parse_many(limits)

    def count(self) -> int | None:
        """Count one refusal for the request's address: None while within the limits,
        else the whole seconds until one of those it is over lets another through."""
        key, strategy = get_remote_address(), self.limiter.limiter
        over = [item for item in self.items if not strategy.hit(item, self.SCOPE, key)]
        if not over:
            return None
        reset = max(strategy.get_window_stats(item, self.SCOPE, key).reset_time
                    for item in over)
        return max(1, math.ceil(reset - time.time()))


@contextlib.contextmanager
def _hooks_skipped_for(app: Flask, blueprints: tuple[str, ...]):
    """The app-wide request hooks an extension installs inside this block do not run for
    requests to ``blueprints``. Flask-Limiter and Flask-Talisman hook every request; on a
    webhook their work (about a quarter of a millisecond together) would be thrown away."""
    registries = (app.before_request_funcs, app.after_request_funcs,
                  app.teardown_request_funcs)
    earlier = [list(registry.get(None, ())) for registry in registries]
    yield
    for registry, old in zip(registries, earlier):
        hooks = registry.get(None, [])
        registry[None] = [hook if hook in old else _skipping(hook, frozenset(blueprints))
                          for hook in hooks]


def _skipping(hook, blueprints: frozenset[str]):
    @functools.wraps(hook)
    def run(*args):
        if request.blueprint in blueprints:
            # after_request hands the response on; before and teardown hooks return None.
            return args[0] if args else None
        return hook(*args)

    return run


def _refuse_too_large() -> None:
    if request.path.startswith("/voice"):
        metrics.REFUSED.labels("too_large").inc()
    abort(413, description=TOO_LARGE)


def _limit_body():
    """413 for a body over the cap, judged on Content-Length alone when it is given; and
    for a form with more fields than any Twilio request has."""
    # Read from the environ: Request.content_length asks the headers for a
    # Transfer-Encoding, and a missing header is a raised and caught KeyError.
    length = get_content_length(request.environ)
    if length is not None and length > MAX_BODY_BYTES:
        _refuse_too_large()
    if length is None and request.environ.get("wsgi.input_terminated"):
        _buffer_chunked_body(request.environ)
    if request.mimetype == FORM:
        data = request.get_data(cache=True)  # at most MAX_BODY_BYTES by now
        if data.count(b"&") + 1 > MAX_FORM_FIELDS:
            _refuse_too_large()
    return None


def _buffer_chunked_body(environ) -> None:
    """Read a body sent without Content-Length (chunked) up to one byte past the cap:
    413 if it is longer, else hand it on as an ordinary body of known length. (Werkzeug's
    own cap would silently cut such a body at the limit.)"""
    stream = environ["wsgi.input"]
    chunks, size = [], 0
    while size <= MAX_BODY_BYTES:
        chunk = stream.read(MAX_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_BODY_BYTES:
        _refuse_too_large()
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    del environ["wsgi.input_terminated"]


def _hsts(response):
    """The header Talisman sends (same max-age, subdomains included), for a request it did
    not see as https."""
    if request.blueprint not in TWIML_BLUEPRINTS \
            and "Strict-Transport-Security" not in response.headers:
        response.headers["Strict-Transport-Security"] = \
            f"max-age={HSTS_MAX_AGE}; includeSubDomains"
    return response


def _no_store(response):
    if request.path.startswith(DESK_PREFIXES):
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    # Set, not setdefault: Talisman's value for the desk is the same, and Werkzeug's
    # setdefault raises and catches an HTTP error for a header that is missing.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
