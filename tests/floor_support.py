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
    return {"sid": sid, "ticket": number, "queue": enqueue.text, "to": to, "caller": caller,
            "wait": enqueue.get("waitUrl")}


def crowd_waiting(ivr, count: int, now, first_number: int = 30_000_000) -> None:
    """``count`` P1 callers of the US line waiting in their queues since ``now``, written
    straight to the database (a surge, quicker than through the webhooks)."""
    from ivr.sim.simulator import new_call_sid as sid_of
    from ivr.storage.models import Call, Ticket

    calls, tickets = [], []
    for n in range(count):
        sid = sid_of()
        calls.append(dict(
            call_sid=sid, dialed_number=US_LINE, region="us", language="en-US",
            caller_number=CALLER, can_text=True, step="done", english=False, attempts=0,
            auth_failures=0, steps_reached="", outcome="routed", started_at=now,
            updated_at=now))
        tickets.append(dict(
            number=str(first_number + n), call_sid=sid, account_id="a", user_email="e",
            priority=1, target_response_minutes=60, region="us", status="in_queue",
            created_at=now, acknowledged_at=now, queue_group="support-us"))
    with ivr.storage.transaction() as session:
        session.execute(Call.__table__.insert(), calls)
        session.execute(Ticket.__table__.insert(), tickets)


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


def talking_on_the_line(twilio, engineer_sid: str, caller: dict,
                        engineer: str = ENGINEER_PHONE) -> None:
    """The engineer's call to the engineer line takes ``caller`` (queued) and Twilio
    bridges the two: they are talking."""
    root = twiml(twilio.post("/voice/agent", **engineer_params(engineer_sid, engineer)))
    queue = root.find("Dial/Queue")
    assert queue is not None and queue.text == caller["queue"]
    twiml(twilio.post(queue.get("url"), **twilio.call_params(caller["sid"]),
                      QueueSid="QU" + "1" * 32, QueueTime="30",
                      DequeingCallSid=engineer_sid))
