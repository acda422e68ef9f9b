"""The call flow: states, caller input and the decisions between them.

Plain Python: no web framework, no telephony library. A webhook loads the call's state,
asks the flow what to do with the keys the caller pressed, stores the new state and
renders the reply. Side effects the flow needs (checking a host key, logging a ticket,
queueing a text message) go through the ``Ports`` it is given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from ..config import IvrConfig, Line
from .digits import ascii_number
from .priority import level_of_key


class Step(StrEnum):
    MENU = "menu"
    PMI = "pmi"
    HOST_KEY = "host_key"
    PRIORITY = "priority"
    DONE = "done"


class Outcome(StrEnum):
    ROUTED = "routed"
    REJECTED_WEB = "rejected_web"
    REJECTED_SELF_SERVICE = "rejected_self_service"
    FAILED_AUTH = "failed_auth"
    NO_INPUT = "no_input"
    TRANSFERRED = "transferred"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class Caller:
    """A verified caller from the account directory."""

    account_id: str
    user_email: str
    plan: str
    role: str
    ref: int | None = None  # the directory entry, when known without another lookup


@dataclass(frozen=True)
class TicketInfo:
    number: str
    priority: int
    target_response_minutes: int


@dataclass
class CallState:
    call_sid: str
    can_text: bool = False  # the caller's number can receive text messages
    step: Step = Step.MENU
    english: bool = False
    attempts: int = 0
    auth_failures: int = 0
    pmi: str | None = None
    caller: Caller | None = None
    outcome: Outcome | None = None
    ticket: TicketInfo | None = None
    transfer_to: str | None = None
    steps_reached: list[str] = field(default_factory=list)

    def reach(self, step: str) -> None:
        if step not in self.steps_reached:
            self.steps_reached.append(step)


@dataclass(frozen=True)
class Say:
    key: str
    params: tuple[tuple[str, object], ...] = ()
    in_english: bool = False  # spoken by the line's English voice whatever the call's language

    @property
    def kwargs(self) -> dict[str, object]:
        return dict(self.params)


def say(key: str, in_english: bool = False, **params: object) -> Say:
    return Say(key, tuple(sorted(params.items())), in_english)


@dataclass(frozen=True)
class Ask:
    """Collect keys for a step: one key (menus) or digits ended by '#'. ``prompt`` names
    this very prompt of the call (``prompt_of``); the answer brings it back, so a repeated
    answer to a prompt already answered is told apart from a new one."""

    step: Step
    single_key: bool
    timeout_seconds: int
    prompt: str = ""


def prompt_of(state: CallState) -> str:
    """What tells one prompt of a step from the next: the tries used at it, the failed
    verifications (the PMI is asked again after each) and the language (the menu is asked
    again in English). Twilio retrying an answer brings the same name back after the
    first copy has moved the call on, and that copy must not count as a second try."""
    return f"{state.attempts}-{state.auth_failures}-{int(state.english)}"


def answers(state: CallState, prompt: str | None) -> bool:
    """Whether a request answers the prompt the call is at (``prompt_of``; None when the
    request does not say). A prompt asked while the database was away names the same
    failed verifications and language but more tries, counted only in its URL: it is
    answered, and the call takes those tries as used. A name with fewer tries, or another
    language or count of failures, is a stale or repeated request."""
    if prompt is None or prompt == prompt_of(state):
        return True
    rest = prompt.partition("-")[2]
    used = tries_in(prompt)
    if rest != f"{state.auth_failures}-{int(state.english)}" or used <= state.attempts:
        return False
    state.attempts = used
    return True


def english_in(prompt: str | None) -> bool:
    """Whether a prompt's name (``prompt_of``) says the caller chose English."""
    return (prompt or "").endswith("-1")


def tries_in(prompt: str | None) -> int:
    """The tries a prompt's name (``prompt_of``) says were used at it; 0 for a name that
    is missing or not one of ours. Without the database it is what counts the tries."""
    tries = (prompt or "").split("-", 1)[0]
    return ascii_number(tries, at_most=2) or 0


def failures_in(prompt: str | None) -> int:
    """The failed verifications a prompt's name (``prompt_of``) says the call had; 0 for
    a name that is missing or not one of ours. A prompt asked without the database names
    them as the database holds them, so its answer is taken once the database is back."""
    parts = (prompt or "").split("-")
    return (ascii_number(parts[1], at_most=2) or 0) if len(parts) == 3 else 0


@dataclass(frozen=True)
class Reply:
    speech: tuple[Say, ...]
    english: bool = False
    ask: Ask | None = None
    route: TicketInfo | None = None
    transfer_to: str | None = None
    hangup: bool = False


class Ports(Protocol):
    def verify(self, pmi: str, host_key: str) -> Caller | None:
        """The caller if the host key is right for this PMI (and the PMI may be tried)."""

    def open_ticket(self, caller: Caller, priority: int, target_minutes: int) -> TicketInfo:
        """Log this call's ticket; the same ticket however often it is asked for."""

    def send_sms(self, template: str, params: dict[str, object]) -> None:
        """Queue a text message to the caller (once per template and call)."""


class CallFlow:
    def __init__(self, config: IvrConfig, line: Line | None, today: dt.date):
        self.config = config
        self.line = line
        self.today = today
        self.has_english = line is not None and line.english is not None

    # -- entry -------------------------------------------------------------------------

    def start(self, state: CallState) -> Reply:
        """The first answer of a call (also for a repeated 'call comes in' webhook)."""
        if state.step is Step.DONE:
            return self._final(state)
        speech = [say("greeting", brand=self.config.service.brand)]
        notice = self.config.notice
        if notice is not None and notice.active_on(self.today):
            speech.append(say(notice.message))
        state.reach("greeting")
        return self._ask(state, speech)

    def handle(self, state: CallState, step: str, digits: str | None, ports: Ports,
               prompt: str | None = None) -> Reply:
        """What to do with the keys pressed at ``step`` (None or '' for no input), in
        answer to ``prompt`` (``Ask.prompt``; None when the request does not say)."""
        if state.step is Step.DONE:
            return self._final(state)
        if step != state.step.value or not answers(state, prompt):
            # A stale, repeated or out-of-order request: ask again for what the call is
            # waiting for, without counting it as a try.
            return self._ask(state, [])
        digits = (digits or "").strip()
        if digits == "":
            return self._retry(state, [say("no_input")])
        if digits == self.config.menu.repeat_key:
            return self._ask(state, [])
        handler = {
            Step.MENU: self._menu,
            Step.PMI: self._pmi,
            Step.HOST_KEY: self._host_key,
            Step.PRIORITY: self._priority,
        }[state.step]
        return handler(state, digits, ports)

    # -- steps -------------------------------------------------------------------------

    def _menu(self, state: CallState, digits: str, ports: Ports) -> Reply:
        menu = self.config.menu
        if digits == menu.support_key:
            return self._advance(state, Step.PMI, [])
        if digits == menu.english_key and self.has_english and not state.english:
            state.english = True
            state.reach("english")
            return self._ask(state, [])
        for extension in menu.extensions:
            if digits == extension.key:
                state.step = Step.DONE
                state.outcome = Outcome.TRANSFERRED
                state.transfer_to = extension.dial
                return self._final(state)
        return self._retry(state, [say("menu_invalid")])

    def _pmi(self, state: CallState, digits: str, ports: Ports) -> Reply:
        lengths = self.config.lengths
        if not lengths.is_pmi(digits):
            return self._retry(state, [say("pmi_invalid", min=lengths.pmi_min, max=lengths.pmi_max)])
        state.pmi = digits
        return self._advance(state, Step.HOST_KEY, [])

    def _host_key(self, state: CallState, digits: str, ports: Ports) -> Reply:
        lengths = self.config.lengths
        if not lengths.is_host_key(digits):
            return self._retry(
                state, [say("host_key_invalid", min=lengths.host_key_min, max=lengths.host_key_max)]
            )
        pmi, state.pmi = state.pmi, None
        caller = ports.verify(pmi, digits) if pmi else None
        if caller is None:
            state.auth_failures += 1
            if state.auth_failures >= self.config.retries.verification_attempts:
                return self._end(state, Outcome.FAILED_AUTH)
            return self._advance(state, Step.PMI, [say("verify_failed"), say("verify_retry")])
        state.caller = caller
        state.reach("verified")
        channel = self.config.policy.channel_for(caller.plan, caller.role)
        if channel == "phone":
            return self._advance(state, Step.PRIORITY, [])
        links = self.config.links
        if channel == "web":
            outcome, template, url = Outcome.REJECTED_WEB, "sms_web", links.web_ticket
        else:
            outcome, template, url = (Outcome.REJECTED_SELF_SERVICE, "sms_self_service",
                                      links.help_center)
        if state.can_text:
            ports.send_sms(template, {"brand": self.config.service.brand, "url": url})
        return self._end(state, outcome)

    def _priority(self, state: CallState, digits: str, ports: Ports) -> Reply:
        level = level_of_key(digits)
        if level is None or state.caller is None:
            return self._retry(state, [say("priority_invalid")])
        priority = self.config.priority(level)
        state.ticket = ports.open_ticket(state.caller, priority.level, priority.target_response_minutes)
        state.reach("ticket")
        state.step = Step.DONE
        state.outcome = Outcome.ROUTED
        if state.can_text:
            one_hour = state.ticket.target_response_minutes == 60
            ports.send_sms(
                "sms_ticket_one_hour" if one_hour else "sms_ticket",
                {
                    "brand": self.config.service.brand,
                    "ticket": state.ticket.number,
                    "priority": state.ticket.priority,
                    "hours": _hours(state.ticket.target_response_minutes),
                },
            )
        return self._final(state)

    # -- replies -----------------------------------------------------------------------

    def _final(self, state: CallState) -> Reply:
        """The reply of a finished call, built from its outcome alone, so a repeated
        webhook gets exactly the same answer."""
        if state.outcome is Outcome.ROUTED and state.ticket is not None:
            ticket = state.ticket
            speech = [say("ticket_logged", ticket=ticket.number), _target(ticket.target_response_minutes)]
            if state.can_text:
                speech.append(say("sms_ticket_sent"))
            speech.append(say("connecting"))
            state.reach("routed")
            return Reply(tuple(speech), english=state.english, route=ticket)
        if state.outcome is Outcome.TRANSFERRED and state.transfer_to:
            return Reply((), english=state.english, transfer_to=state.transfer_to)
        rejection = {Outcome.REJECTED_WEB: "rejected_web",
                     Outcome.REJECTED_SELF_SERVICE: "rejected_self_service"}.get(state.outcome)
        if rejection:
            speech = [say(rejection)] + ([say("sms_link_sent")] if state.can_text else [])
            speech.append(say("goodbye"))
        elif state.outcome is Outcome.FAILED_AUTH:
            speech = [say("verify_failed_final")]
        elif state.outcome is Outcome.NO_INPUT:
            speech = [say("goodbye_no_input")]
        else:
            speech = [say("goodbye")]
        return Reply(tuple(speech), english=state.english, hangup=True)

    def _end(self, state: CallState, outcome: Outcome) -> Reply:
        state.step = Step.DONE
        state.outcome = outcome
        state.attempts = 0
        return self._final(state)

    def _advance(self, state: CallState, step: Step, speech: list[Say]) -> Reply:
        state.step = step
        state.attempts = 0
        state.reach(step.value)
        return self._ask(state, speech)

    def _retry(self, state: CallState, speech: list[Say]) -> Reply:
        state.attempts += 1
        if state.attempts >= self.config.retries.prompt_attempts:
            return self._end(state, Outcome.NO_INPUT)
        return self._ask(state, speech)

    def _ask(self, state: CallState, speech: list[Say]) -> Reply:
        timeouts = self.config.timeouts
        prompts = self._prompt(state)
        single_key = state.step in (Step.MENU, Step.PRIORITY)
        timeout = timeouts.menu_seconds if single_key else timeouts.digits_seconds
        state.reach(state.step.value)
        return Reply(
            tuple(speech + prompts),
            english=state.english,
            ask=Ask(state.step, single_key, timeout, prompt_of(state)),
        )

    def _prompt(self, state: CallState) -> list[Say]:
        menu = self.config.menu
        if state.step is Step.MENU:
            prompts = [say("menu", support_key=menu.support_key)]
            if self.has_english and not state.english:
                prompts.append(say("menu_english", in_english=True, english_key=menu.english_key))
            prompts.append(say("repeat_hint"))
            return prompts
        return [say({Step.PMI: "pmi_prompt", Step.HOST_KEY: "host_key_prompt",
                     Step.PRIORITY: "priority_menu"}[state.step])]


def _hours(minutes: int) -> str:
    return f"{minutes / 60:g}"


def _target(minutes: int) -> Say:
    if minutes == 60:
        return say("target_response_one_hour")
    return say("target_response_hours", hours=_hours(minutes))


def waiting(position: int | None, average_wait_seconds: int | None,
            callback_key: str | None, offer_ticket: bool = False) -> tuple[Say, ...]:
    """What a caller in the queue hears: where they stand, the expected wait when it is
    known (rounded to minutes; the voice line gives the service's own estimate for a
    caller in a queue of their own), that the repeat key (star) says their ticket number
    again, and how to ask for a callback instead."""
    speech: list[Say] = []
    if position is not None and position > 0:
        speech.append(say("queue_position", position=position))
    if average_wait_seconds:  # 0 or missing: no history yet, so no estimate is claimed
        minutes = max(1, round(average_wait_seconds / 60))
        speech.append(say("queue_wait_one_minute") if minutes == 1
                      else say("queue_wait_minutes", minutes=minutes))
    if offer_ticket:
        speech.append(say("queue_ticket_offer"))
    if callback_key is not None:
        speech.append(say("queue_callback_offer", callback_key=callback_key))
    return tuple(speech)


def ticket_again(number: str) -> tuple[Say, ...]:
    """The ticket number once more, for a caller in the queue who asked for it."""
    return (say("ticket_repeat", ticket=number),)
