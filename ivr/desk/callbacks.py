"""Callbacks that really get placed: Twilio's REST API rings the engineer first.

Placing one is a desk action (dashboard button, API, command), never part of a caller's
webhook. The attempt is written in one short transaction, the REST request runs with no
transaction open and with a time-out, and its result is written in another. What happens
next arrives through the signed webhooks of ivr/voice/floor.py: the engineer hears the
summary and presses 1, the customer is dialled with the regional number they called as
caller ID and put through once whoever answers presses a key (a voicemail presses none),
and both legs report their status.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.rest import Client

from ..config import IvrConfig, Settings
from ..domain.engineers import LONGEST_CONVERSATION, attempt_window, customer_outcome
from ..domain.phones import mask
from ..storage import Storage
from ..storage.engineers import EngineerRepository, FloorRepository, engineer_info
from ..storage.models import Call
from ..voice.twiml import CALLBACK_ENGINEER_PATH, CALLBACK_STATUS_PATH, url
from .engineers import NAME
from .service import Conflict, DeskError, NotFound, target_at, unknown_ticket

log = logging.getLogger("ivr.callbacks")



class Callbacks:
    def __init__(self, storage: Storage, config: IvrConfig, settings: Settings,
                 clock: Callable[[], dt.datetime], http_client: HttpClient | None = None):
        self.storage = storage
        self.config = config
        self.settings = settings
        self.clock = clock
        self.http_client = http_client

    @classmethod
    def of(cls, ivr, http_client: HttpClient | None = None) -> "Callbacks":
        return cls(ivr.storage, ivr.config, ivr.settings, ivr.service.clock, http_client)

    def due(self) -> list[dict]:
        """Tickets waiting for a callback: priority first, then least time left."""
        now = self.clock()
        with self.storage.unit_of_work(readonly=True) as uow:
            session = uow.session
            rows = FloorRepository(self.storage, session).callbacks_due()
            items = [{
                "id": t.id, "number": t.number, "priority": t.priority,
                "priority_name": self.config.priority(t.priority).name, "region": t.region,
                "account_id": t.account_id, "language": c.language,
                "callback_number": t.callback_number,
                "seconds_left": int((target_at(t) - now).total_seconds()),
                "attempts": a.callback_attempts if a is not None else 0,
                "failures": a.callback_failures if a is not None else 0,
            } for t, c, a in rows]
        return sorted(items, key=lambda i: (i["priority"], i["seconds_left"], i["id"]))

    def place(self, ref: str | int, engineer_name: str, actor: str) -> dict:
        """Ring the engineer's phone for this ticket's callback; returns the attempt."""
        if not NAME.fullmatch(engineer_name):  # no engineer has such a name (NUL and all)
            raise NotFound(f"no engineer named {engineer_name[:40]!r}")
        now = self.clock()
        with self.storage.unit_of_work() as uow:
            session = uow.session
            engineers = EngineerRepository(self.storage, session)
            # Two callbacks placed with one engineer at once run in turn, the second seeing
            # the first (below). The engineer's row before the ticket's, the order the
            # engineer line takes them in.
            engineers.hold(engineer_name)
            found = uow.desk.ticket(str(ref).strip(), for_update=True)
            if found is None:
                raise unknown_ticket(ref)
            ticket, _ = found
            if ticket.status != "callback_requested":
                raise Conflict(f"ticket {ticket.number} is {ticket.status}, not waiting for a "
                               "callback")
            if not ticket.callback_number:
                raise Conflict(f"ticket {ticket.number} has no number to call back")
            engineer = engineers.named(engineer_name)
            if engineer is None:
                raise NotFound(f"no engineer named {engineer_name[:40]!r}")
            info = engineer_info(engineer)
            floor = FloorRepository(self.storage, session)
            # One attempt at a time, whatever its leg: while the customer's phone rings
            # for one, a second would dial them again. An attempt whose legs never
            # reported (lost status callbacks) stops counting after every ring it could
            # have made.
            busy = floor.open_attempt(ticket.id)
            limit = attempt_window(self.config.engineers.ring_seconds)
            if busy is not None and now - busy.created_at < limit:
                raise Conflict(f"a callback for ticket {ticket.number} is already being placed "
                               f"by {busy.engineer}")
            # Ringing an engineer in a conversation on the engineer line would interrupt
            # it (or reach their voicemail) and count an attempt against this ticket.
            talking = floor.talking_with(info.name, now - LONGEST_CONVERSATION)
            if talking is not None:
                raise Conflict(f"{info.name} is talking to a caller on the engineer line "
                               f"(ticket {talking}){_if_ended(info.name)}")
            # Nor one with an engineer rung for, or talking on, another ticket's callback.
            other = floor.on_a_callback(info.name, now - limit, now - LONGEST_CONVERSATION)
            if other is not None:
                number, put_through = other
                raise Conflict(f"{info.name} is on a callback for ticket {number}"
                               + (_if_ended(info.name) if put_through else ""))
            # Checked once the request itself holds up, so an unknown ticket or engineer
            # is still a 404 on a server not set up for callbacks, and before the attempt
            # is written, so no attempt is counted against the ticket for it.
            self._require_settings()
            attempt = floor.new_attempt(ticket.id, info.name, now)
            assignment = floor.assignment(ticket.id, now, for_update=True)
            assignment.callback_attempts += 1
            assignment.updated_at = now
            floor.record(ticket.id, actor, "callback",
                         f"attempt {assignment.callback_attempts} by {info.name}", now)
            caller_id = session.get(Call, ticket.call_sid).dialed_number
            attempt_id, number = attempt.id, ticket.number
        base = self.settings.public_url
        try:
            call = self._client().calls.create(
                to=info.dial_target, from_=caller_id,
                url=base + url(CALLBACK_ENGINEER_PATH, attempt=attempt_id), method="POST",
                status_callback=base + url(CALLBACK_STATUS_PATH, attempt=attempt_id,
                                           leg="engineer"),
                status_callback_method="POST", timeout=self.config.engineers.ring_seconds)
        except (TwilioRestException, TwilioException, OSError) as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            with self.storage.unit_of_work() as uow:
                attempt = FloorRepository(self.storage, uow.session).attempt(
                    attempt_id, for_update=True)
                # A time-out can come after Twilio placed the call: if its legs have
                # already reported, the attempt is under way and its outcome theirs.
                placed = attempt.status != "placing" or attempt.outcome is not None
                if not placed:
                    attempt.status, attempt.outcome = "done", "error"
                    attempt.detail, attempt.ended_at = reason, self.clock()
                view = attempt_view(attempt)
            if not placed:
                log.warning("callback attempt %s for ticket %s could not be placed: %s",
                            attempt_id, number, type(exc).__name__)
                raise CallbackFailed(f"Twilio did not place the call: {reason}") from None
            log.warning("callback attempt %s for ticket %s: Twilio answered %s, but the call "
                        "is under way", attempt_id, number, type(exc).__name__)
            return view
        with self.storage.unit_of_work() as uow:
            session = uow.session
            # Locked: the engineer may be answering this very call, and the status that
            # webhook writes must not be put back to "ringing" by this one.
            attempt = FloorRepository(self.storage, session).attempt(attempt_id,
                                                                     for_update=True)
            attempt.engineer_call_sid = call.sid
            if attempt.status == "placing":
                attempt.status = "calling_engineer"
            view = attempt_view(attempt)
        log.info("callback attempt %s for ticket %s: ringing %s", attempt_id, number,
                 mask(info.phone) if info.phone else "a Client app")
        return view

    def _require_settings(self) -> None:
        missing = self.settings.unset("twilio_account_sid", "twilio_auth_token", "public_url")
        if missing:
            raise NotConfigured(f"callbacks are not set up on this server: it needs "
                                f"{', '.join(missing)} (Twilio must reach this service's "
                                "webhooks)")

    def _client(self) -> Client:
        return self.settings.rest_client(self.http_client)


class CallbackFailed(DeskError):
    """Twilio refused or did not answer the request to place the call: a failure of the
    service the desk relies on, not a conflict with the ticket's state."""

    status = 502


class NotConfigured(DeskError):
    """The server lacks the settings callbacks need: its operator's to fix, not the
    request's, so it is a 503 rather than a 400."""

    status = 503


def attempt_view(attempt) -> dict:
    return {"id": attempt.id, "engineer": attempt.engineer, "status": attempt.status,
            "outcome": attempt.outcome, "detail": attempt.detail,
            "created_at": attempt.created_at.isoformat(),
            "ended_at": attempt.ended_at.isoformat() if attempt.ended_at else None,
            "answered": customer_outcome(attempt.outcome or "") == "answered"}


def _if_ended(engineer: str) -> str:
    """How the desk clears a conversation whose end Twilio's reports never brought (the
    database was away as they came), which would otherwise hold for hours."""
    return f"; if that call has ended, `engineers calls-ended {engineer}` says so"
