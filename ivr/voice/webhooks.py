"""HTTP: Twilio's voice webhooks. Thin: parse, call the service, render."""

from __future__ import annotations

import functools
import hmac
import logging
import time
from urllib.parse import quote

from flask import Blueprint, Response, abort, g, request
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from .. import metrics
from ..extension import ivr
from ..storage import DATABASE_DOWN, database_error
from .twiml import STEP_PATHS

log = logging.getLogger("ivr.http")

voice = Blueprint("voice", __name__, url_prefix="/voice")

STEPS_BY_PATH = {path.rsplit("/", 1)[1]: step for step, path in STEP_PATHS.items()}
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # what a URL's path may hold unescaped (RFC 3986)


def twiml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def signed_url() -> str:
    """The URL Twilio signed: IVR_PUBLIC_URL and the path when set, else the request's own.
    The query is the one sent, byte for byte: Werkzeug's ``request.url`` decodes escapes
    (``%2F``, ``%40``, UTF-8) that Twilio signed as written."""
    public = ivr().settings.public_url
    path = request.path
    if not public:
        public = f"{request.scheme}://{request.host}"
        path = quote(request.root_path + request.path, safe=PATH_SAFE)
    query = request.query_string.decode("latin-1")
    return f"{public}{path}" + (f"?{query}" if query else "")


class FormValues(dict):
    """A form's fields and their values, as ``RequestValidator`` reads them at least cost.
    It asks each field for ``getall`` (WebOb's name) and falls back to ``getlist``
    (Werkzeug's) only after an AttributeError: one raised and caught exception per field,
    twenty on a real Twilio request, otherwise."""

    __slots__ = ()

    def getall(self, name: str) -> list[str]:
        return self[name]


def signature_matches(token: str, url: str, form: MultiDict, signature: str) -> bool:
    """Whether ``signature`` is Twilio's for this URL and form. ``RequestValidator.validate``
    computes two HMACs for every request, over the URL with and without its default port
    (Twilio has signed both forms). The URL as given is the one Twilio signed nearly
    always, so it is checked alone first and the two forms only when it does not match:
    one HMAC for a genuine request instead of two."""
    params = FormValues(form.lists())
    validator = RequestValidator(token)
    expected = validator.compute_signature(url, params)
    if hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return True
    return validator.validate(url, params, signature)


def twilio_signed(view):
    """Refuse (403, nothing changed) a request whose X-Twilio-Signature does not match."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        settings = ivr().settings
        if settings.validate_signatures:
            signature = request.headers.get("X-Twilio-Signature", "")
            if not signature or not signature_matches(settings.twilio_auth_token,
                                                      signed_url(), request.form, signature):
                g.pop("started", None)  # refusals are counted apart, not timed as answers
                metrics.REFUSED.labels("signature").inc()
                log.warning("refused %s: missing or invalid X-Twilio-Signature", request.path)
                abort(403, description="The X-Twilio-Signature header is missing or does not "
                                       "match this request.")
        return view(*args, **kwargs)

    return checked


@voice.before_request
def _start_timer():
    g.started = time.perf_counter()


@voice.after_request
def _observe(response):
    if "started" in g:
        endpoint = (request.endpoint or "voice.unmatched").rsplit(".", 1)[-1]
        step = (request.view_args or {}).get("name", endpoint)
        if endpoint == "gather" and step not in STEPS_BY_PATH:
            step = "unknown"  # keeps the label set bounded whatever the path
        timer = _TIMERS.get(step)
        if timer is None:  # the label set is bounded (the steps and "unknown")
            timer = _TIMERS[step] = metrics.WEBHOOK_SECONDS.labels(step)
        timer.observe(time.perf_counter() - g.started)
    return response


_TIMERS: dict = {}  # a step's histogram: looked up by labels() once per process


@voice.post("")
@twilio_signed
def incoming():
    return twiml(ivr().service.incoming(request.form))


@voice.post("/<name>")
@twilio_signed
def gather(name: str):
    step = STEPS_BY_PATH.get(name)
    if step is None:
        abort(404, description=f"/voice/{name} is not a step of this service.")
    return twiml(ivr().service.gather(step.value, request.form, request.args))


@voice.post("/status")
@twilio_signed
def status():
    ivr().service.status(request.form)
    return twiml(ivr().renderer.empty())


@voice.post("/queue-result")
@twilio_signed
def queue_result():
    return twiml(ivr().service.queue_result(request.form, request.args))


@voice.post("/wait")
@twilio_signed
def wait():
    # Callers wait in queues of their own: where they stand comes from the engineer
    # line's order (priority, then wait), not from Twilio's position in a one-caller queue.
    params = ivr().floor.with_position(request.form, request.args)
    return twiml(ivr().service.wait(params, request.args))


@voice.post("/wait-choice")
@twilio_signed
def wait_choice():
    if request.form.get("Digits") == ivr().config.menu.repeat_key:  # the ticket number again
        return twiml(ivr().renderer.ticket_again(request.form.get("To"), request.args))
    return twiml(ivr().service.wait_choice(request.form, request.args))


@voice.post("/fallback")
@twilio_signed
def fallback():
    return twiml(ivr().service.fallback(request.form, request.args))


@voice.errorhandler(Exception)
def voice_error(error):
    """An unexpected failure still answers the caller: an apology and the default queue."""
    if isinstance(error, HTTPException):
        return error
    if isinstance(error, DATABASE_DOWN):
        # Every caller's step meets it during an outage: one line each, not a traceback.
        cause, reason = database_error(error)
        log.warning("webhook %s: database unreachable (%s: %s); caller sent to the fallback "
                    "queue", request.path, cause, reason)
    else:
        log.exception("webhook %s failed; caller sent to the fallback queue", request.path)
    return twiml(ivr().service.fallback(request.form, request.args))
