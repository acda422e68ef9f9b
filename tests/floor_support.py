"""Helpers for the engineer-line and callback tests: callers put into the queues through
the real webhooks, engineers, and Twilio's side of an engineer's call."""

from __future__ import annotations

from ivr.desk.engineers import Engineers
from ivr.sim.simulator import new_call_sid

from .support import BUSINESS_OWNER, CALLER, US_LINE, twiml, until_waiting_for_a_lock

ENGINEER_PHONE = "+14155550199"
ENGINEER_LINE = "+15005550006"


def queued(twilio, priority: int, to: str = US_LINE, caller: str = CALLER,
           english: bool = False) -> dict:
    """A verified owner taken through the IVR to the queue; their call SID, ticket number
    and the Twilio queue they wait in."""
    sid = new_call_sid()
    params = twilio.call_params(sid, to=to, caller=caller)
    twiml(twilio.post("/voice", **params))
    steps = ([("/voice/menu", "9")] if english else []) + [
        ("/voice/menu", "2"), ("/voice/pmi", BUSINESS_OWNER[0]),
        ("/voice/host-key", BUSINESS_OWNER[1]), ("/voice/priority", str(priority))]
    for path, digits in steps:
        root = twiml(twilio.post(path, **params, Digits=digits))
    enqueue = root.find("Enqueue")
    number = [e.text for e in root.iter("say-as")][0]
    return {"sid": sid, "ticket": number, "queue": enqueue.text, "to": to, "caller": caller}


def add_engineer(ivr, name: str = "aiko", phone: str | None = ENGINEER_PHONE,
                 client: str | None = None, languages: str = "en", queues: str = "") -> str:
    _, token = Engineers.of(ivr).add(name, phone=phone, client=client, languages=languages,
                                     queues=queues)
    return token


def engineer_params(sid: str, caller: str = ENGINEER_PHONE) -> dict:
    return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": caller,
            "To": ENGINEER_LINE, "CallStatus": "in-progress", "Direction": "inbound",
            "ApiVersion": "2010-04-01"}


def digits_spoken(root) -> list[str]:
    return [e.text for e in root.iter("say-as") if e.get("interpret-as") == "digits"]


def while_the_desk_closes(ivr, number: str, thread, what: str) -> None:
    """Start ``thread`` while the desk's close of ticket ``number`` is written but not
    committed, let the close commit once ``thread`` waits for the ticket's row
    (PostgreSQL), then await ``thread``."""
    with ivr.storage.unit_of_work() as uow:
        closing, _ = uow.desk.ticket(number, for_update=True)
        closing.status = "closed"
        uow.session.flush()
        thread.start()
        until_waiting_for_a_lock(ivr, thread, what)
    thread.join(10)
