"""Calls: one record per call, its state between webhooks and how it ended."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ..domain.flow import Caller, CallState, Outcome, Step, TicketInfo
from .engine import Storage
from .models import Call, Ticket


class CallRepository:
    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def get(self, call_sid: str, *, for_update: bool = True) -> Call | None:
        """The call, locked for this transaction on PostgreSQL (SQLite's BEGIN IMMEDIATE
        already holds the write lock)."""
        lock = for_update and self.storage.dialect == "postgresql"
        return self.session.get(Call, call_sid, with_for_update=lock or None)

    def start(self, *, call_sid: str, account_sid: str | None, dialed_number: str, region: str,
              language: str, caller_number: str, can_text: bool, now: dt.datetime) -> Call:
        """The call's record, created by the first webhook that sees it."""
        self.session.execute(
            self.storage.insert(Call)
            .values(
                call_sid=call_sid, account_sid=account_sid, dialed_number=dialed_number,
                region=region, language=language, caller_number=caller_number,
                can_text=can_text, step=Step.MENU.value, english=False, attempts=0,
                auth_failures=0, steps_reached="", started_at=now, updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        call = self.get(call_sid)
        assert call is not None
        return call

    @staticmethod
    def state(call: Call, ticket: Ticket | None) -> CallState:
        caller = None
        if call.account_id is not None:
            caller = Caller(call.account_id, call.user_email or "", call.plan or "", call.role or "")
        return CallState(
            call_sid=call.call_sid,
            can_text=call.can_text,
            step=Step(call.step),
            english=call.english,
            attempts=call.attempts,
            auth_failures=call.auth_failures,
            pmi=call.pending_pmi,
            caller=caller,
            outcome=Outcome(call.outcome) if call.outcome else None,
            ticket=ticket_info(ticket) if ticket is not None else None,
            transfer_to=call.transfer_to,
            steps_reached=[s for s in call.steps_reached.split(",") if s],
        )

    @staticmethod
    def save(call: Call, state: CallState, now: dt.datetime) -> None:
        call.step = state.step.value
        call.english = state.english
        call.attempts = state.attempts
        call.auth_failures = state.auth_failures
        call.pending_pmi = state.pmi
        if state.caller is not None:
            call.account_id = state.caller.account_id
            call.user_email = state.caller.user_email
            call.plan = state.caller.plan
            call.role = state.caller.role
        if state.outcome is not None and call.outcome in (None, Outcome.ABANDONED.value):
            call.outcome = state.outcome.value
            call.abandoned_at_step = None
        call.transfer_to = state.transfer_to
        call.steps_reached = ",".join(state.steps_reached)[:255]
        call.updated_at = now

    def record_status(self, call_sid: str, status: str, duration: int | None,
                      now: dt.datetime, sequence: int | None = None) -> tuple[Call | None, bool]:
        """Apply a status callback, unless it is older than one already applied: callbacks
        may arrive out of order and a call never moves backwards. Returns the call and
        whether this callback marked it abandoned."""
        call = self.get(call_sid)
        if call is None:
            return None, False
        if sequence is not None and call.status_sequence is not None \
                and sequence <= call.status_sequence:
            return call, False
        if call.twilio_status in FINAL_STATUSES and status not in FINAL_STATUSES:
            return call, False
        abandoned = False
        if sequence is not None:
            call.status_sequence = sequence
        call.twilio_status = status
        if duration is not None:
            call.duration_seconds = duration
        if status in FINAL_STATUSES:
            call.ended_at = call.ended_at or now
            if call.outcome is None:
                call.outcome = Outcome.ABANDONED.value
                call.abandoned_at_step = call.step
                abandoned = True
        call.updated_at = now
        return call, abandoned

    def record_queue_result(self, call_sid: str, result: str, seconds: int | None,
                            now: dt.datetime) -> Call | None:
        call = self.get(call_sid)
        if call is None:
            return None
        call.queue_result = result
        call.queue_seconds = seconds
        call.updated_at = now
        return call


FINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")


def ticket_info(ticket: Ticket) -> TicketInfo:
    return TicketInfo(ticket.number, ticket.priority, ticket.target_response_minutes)
