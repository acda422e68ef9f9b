"""HTTP: the engineer line (POST /voice/agent) and the callback legs' webhooks.

Thin: every view is signature-checked like the rest of /voice, asks the Floor service and
returns its TwiML.
"""

from __future__ import annotations

import logging

from flask import Blueprint, request
from werkzeug.exceptions import HTTPException

from ..extension import ivr
from ..storage import DATABASE_DOWN
from .webhooks import twilio_signed, twiml

log = logging.getLogger("ivr.http")

agent = Blueprint("agent", __name__)


def floor():
    return ivr().floor


@agent.post("/voice/agent")
@twilio_signed
def engineer_line():
    return twiml(floor().agent_call(request.form, request.args))


@agent.post("/voice/agent/joining")
@twilio_signed
def joining():
    return twiml(floor().joining(request.form, request.args))


@agent.post("/voice/agent/after")
@twilio_signed
def after():
    return twiml(floor().after(request.form, request.args))


@agent.post("/voice/callback/engineer")
@twilio_signed
def callback_engineer():
    return twiml(floor().callback_engineer(request.form, request.args))


@agent.post("/voice/callback/engineer-key")
@twilio_signed
def callback_key():
    return twiml(floor().callback_key(request.form, request.args))


@agent.post("/voice/callback/customer")
@twilio_signed
def callback_customer():
    return twiml(floor().callback_customer(request.form, request.args))


@agent.post("/voice/callback/customer-key")
@twilio_signed
def callback_customer_key():
    return twiml(floor().callback_customer_key(request.form, request.args))


@agent.post("/voice/callback/dialled")
@twilio_signed
def callback_dialled():
    return twiml(floor().callback_dialled(request.form, request.args))


@agent.post("/voice/callback/status")
@twilio_signed
def callback_status():
    floor().callback_status(request.form, request.args)
    return twiml(floor().agent.empty())


@agent.errorhandler(Exception)
def agent_error(error):
    """An unexpected failure on an engineer's or a callback's leg: log it and end the leg
    politely (these calls have no queue to fall back to)."""
    if isinstance(error, HTTPException):
        return error
    down = isinstance(error, DATABASE_DOWN)
    if down:
        log.warning("webhook %s: database unreachable", request.path)
    else:
        log.exception("webhook %s failed", request.path)
    agent_renderer, speech = floor().agent, ivr().config.service.speech
    # A caller being bridged to an engineer, or a customer answering a callback (the
    # engineer is on the line already): Twilio puts them through whatever this says, so
    # they are not told goodbye and hung up on. The customer's leg reports its answer
    # later through its status callback.
    if request.endpoint == "agent.joining":
        return twiml(floor().joining_unrecorded(request.form))
    if request.endpoint == "agent.callback_customer":
        return twiml(agent_renderer.empty())
    # The end of a callback's leg: spooled while the database is away.
    if request.endpoint == "agent.callback_status":
        if down:
            floor().status_unrecorded(request.form, request.args)
        return twiml(agent_renderer.empty())
    # A key pressed after the greeting: someone is there, and is put through (with the
    # database away the answer is spooled; a failure leaves it unrecorded). No key (a
    # voicemail): the leg ends.
    if request.endpoint == "agent.callback_customer_key":
        if down:
            floor().answered_unrecorded(request.form, request.args)
        return twiml(agent_renderer.empty() if request.form.get("Digits")
                     else agent_renderer.hangup())
    # An engineer the line already knows (holding for callers, back from a call, looking
    # again after a caller who had gone, or pressing 1 at one of its prompts for the next
    # caller) holds and looks again: a database away for a moment must not take everyone
    # off the line.
    known = request.endpoint == "agent.after" or (
        request.endpoint == "agent.engineer_line"
        and (request.args.get("wait") == "1" or request.args.get("missed") == "1"
             or request.form.get("Digits") == "1"))
    if down and known:
        return twiml(agent_renderer.nobody(speech, announce=False))
    return twiml(agent_renderer.goodbye(speech))
