"""The call flow on its own: no web framework, no database, no Twilio."""

import datetime as dt

import pytest

from ivr.domain.flow import (
    CallFlow, Caller, CallState, Outcome, Step, TicketInfo, answers, prompt_of, ticket_again,
    tries_in, waiting,
)

TODAY = dt.date(2026, 11, 25)


class FakePorts:
    def __init__(self, directory=None):
        self.directory = directory or {}
        self.tickets: list[tuple] = []
        self.sms: list[tuple] = []
        self.verified: list[str] = []

    def verify(self, pmi, host_key):
        self.verified.append(pmi)
        entry = self.directory.get(pmi)
        if entry and entry[0] == host_key:
            return entry[1]
        return None

    def open_ticket(self, caller, priority, target_minutes):
        self.tickets.append((caller, priority, target_minutes))
        return TicketInfo("12345678", priority, target_minutes)

    def send_sms(self, template, params):
        self.sms.append((template, params))


OWNER = Caller("acct-1", "owner@example.com", "business", "owner")
PRO_ADMIN = Caller("acct-2", "admin@example.com", "pro", "admin")
FREE = Caller("acct-3", "free@example.com", "free", "owner")
MEMBER = Caller("acct-4", "member@example.com", "enterprise", "member")


@pytest.fixture
def ports():
    return FakePorts({
        "1234567890": ("654321", OWNER),
        "2234567890": ("654321", PRO_ADMIN),
        "3234567890": ("654321", FREE),
        "4234567890": ("654321", MEMBER),
    })


@pytest.fixture
def japan(config):
    return CallFlow(config, config.line_for("+81531320070"), TODAY)


@pytest.fixture
def us(config):
    return CallFlow(config, config.line_for("+18887999666"), TODAY)


def keys(reply):
    return [s.key for s in reply.speech]


def drive(flow, state, ports, *presses):
    reply = flow.start(state)
    for press in presses:
        reply = flow.handle(state, state.step.value, press, ports)
    return reply


def test_a_call_starts_with_the_greeting_the_active_notice_and_the_menu(us):
    reply = us.start(CallState("CA1"))
    assert keys(reply) == ["greeting", "notice_high_demand", "menu", "repeat_hint"]
    assert reply.ask.step is Step.MENU and reply.ask.single_key


def test_the_notice_is_not_spoken_outside_its_dates(config):
    flow = CallFlow(config, config.line_for("+18887999666"), dt.date(2027, 1, 1))
    assert "notice_high_demand" not in keys(flow.start(CallState("CA1")))


def test_lines_with_an_english_voice_offer_english_in_english(japan):
    reply = japan.start(CallState("CA1"))
    english = [s for s in reply.speech if s.key == "menu_english"]
    assert len(english) == 1 and english[0].in_english


def test_pressing_9_on_the_japan_line_switches_the_rest_of_the_call_to_english(japan, ports):
    state = CallState("CA1")
    reply = drive(japan, state, ports, "9")
    assert state.english and reply.english and state.step is Step.MENU
    assert "menu_english" not in keys(reply)
    reply = japan.handle(state, "menu", "2", ports)
    assert reply.english and reply.ask.step is Step.PMI


def test_9_is_not_an_option_on_an_english_line(us, ports):
    state = CallState("CA1")
    reply = drive(us, state, ports, "9")
    assert keys(reply)[0] == "menu_invalid" and not state.english


def test_an_eligible_owner_chooses_a_priority_and_is_routed_with_a_ticket(us, ports):
    state = CallState("CA1", can_text=True)
    reply = drive(us, state, ports, "2", "1234567890", "654321", "2")
    assert reply.route == TicketInfo("12345678", 2, 240)
    assert ports.tickets == [(OWNER, 2, 240)]
    assert [t for t, _ in ports.sms] == ["sms_ticket"]
    assert keys(reply) == ["ticket_logged", "target_response_hours", "sms_ticket_sent", "connecting"]
    assert state.outcome is Outcome.ROUTED and state.step is Step.DONE


def test_a_caller_who_cannot_receive_texts_is_not_promised_one(us, ports):
    state = CallState("CA1", can_text=False)
    reply = drive(us, state, ports, "2", "1234567890", "654321", "1")
    assert "sms_ticket_sent" not in keys(reply) and ports.sms == []
    assert keys(reply)[1] == "target_response_one_hour"


@pytest.mark.parametrize("pmi, outcome, message, template", [
    ("2234567890", Outcome.REJECTED_WEB, "rejected_web", "sms_web"),
    ("3234567890", Outcome.REJECTED_SELF_SERVICE, "rejected_self_service", "sms_self_service"),
    ("4234567890", Outcome.REJECTED_SELF_SERVICE, "rejected_self_service", "sms_self_service"),
])
def test_callers_without_phone_support_hear_their_channel_and_get_its_link(us, ports, pmi, outcome,
                                                                           message, template):
    state = CallState("CA1", can_text=True)
    reply = drive(us, state, ports, "2", pmi, "654321")
    assert keys(reply) == [message, "sms_link_sent", "goodbye"] and reply.hangup
    assert state.outcome is outcome and ports.tickets == []
    assert ports.sms[0][0] == template


def test_unknown_pmi_and_wrong_key_get_the_same_words(us, ports):
    unknown, wrong = CallState("CA1"), CallState("CA2")
    a = drive(us, unknown, ports, "2", "9999999999", "654321")
    b = drive(us, wrong, ports, "2", "1234567890", "111111")
    assert a == b
    assert keys(a) == ["verify_failed", "verify_retry", "pmi_prompt"]


def test_three_failed_verifications_end_the_call(us, ports):
    state = CallState("CA1")
    reply = drive(us, state, ports, "2", "9999999999", "654321", "9999999999", "654321",
                  "9999999999", "654321")
    assert reply.hangup and keys(reply) == ["verify_failed_final"]
    assert state.outcome is Outcome.FAILED_AUTH


@pytest.mark.parametrize("presses, step", [
    (("",), Step.MENU),
    (("2", ""), Step.PMI),
    (("2", "1234567890", ""), Step.HOST_KEY),
    (("2", "1234567890", "654321", ""), Step.PRIORITY),
])
def test_no_input_reprompts_then_ends_politely(us, ports, presses, step):
    state = CallState("CA1")
    reply = drive(us, state, ports, *presses)
    assert reply.ask.step is step and keys(reply)[0] == "no_input"
    reply = us.handle(state, step.value, None, ports)
    assert reply.ask.step is step
    reply = us.handle(state, step.value, None, ports)
    assert reply.hangup and keys(reply) == ["goodbye_no_input"]
    assert state.outcome is Outcome.NO_INPUT


@pytest.mark.parametrize("presses, bad, message", [
    (("2",), "12345678", "pmi_invalid"),            # too short
    (("2",), "123456789012", "pmi_invalid"),        # too long
    (("2",), "12345*7890", "pmi_invalid"),          # not digits
    (("2", "1234567890"), "12345", "host_key_invalid"),
    (("2", "1234567890"), "12345678901", "host_key_invalid"),
    (("2", "1234567890", "654321"), "5", "priority_invalid"),
    ((), "7", "menu_invalid"),
])
def test_invalid_input_reprompts_with_what_was_expected_then_ends(us, ports, presses, bad, message):
    state = CallState("CA1")
    drive(us, state, ports, *presses)
    step = state.step
    reply = us.handle(state, step.value, bad, ports)
    assert keys(reply)[0] == message and reply.ask.step is step
    us.handle(state, step.value, bad, ports)
    reply = us.handle(state, step.value, bad, ports)
    assert reply.hangup and state.outcome is Outcome.NO_INPUT
    # A malformed host key is never checked against the directory.
    assert len(ports.verified) == (1 if len(presses) == 3 else 0)


def test_star_repeats_the_prompt_without_counting_as_a_failure(us, ports):
    state = CallState("CA1")
    drive(us, state, ports, "2")
    for _ in range(5):
        reply = us.handle(state, "pmi", "*", ports)
        assert keys(reply) == ["pmi_prompt"]
    assert state.attempts == 0


def test_a_request_for_another_step_asks_again_for_the_current_one(us, ports):
    state = CallState("CA1")
    drive(us, state, ports, "2")
    reply = us.handle(state, "priority", "1", ports)
    assert reply.ask.step is Step.PMI and ports.tickets == []


def test_a_repeated_priority_request_replays_the_same_route_and_ticket(us, ports):
    state = CallState("CA1", can_text=True)
    first = drive(us, state, ports, "2", "1234567890", "654321", "1")
    again = us.handle(state, "priority", "1", ports)
    assert again == first and len(ports.tickets) == 1 and len(ports.sms) == 1


def test_the_host_key_is_not_kept_in_the_call_state(us, ports):
    state = CallState("CA1")
    drive(us, state, ports, "2", "1234567890", "654321")
    assert "654321" not in repr(state)
    assert state.pmi is None


@pytest.mark.parametrize("presses", [
    ("2", "2234567890", "654321"),                       # rejected: web ticket
    ("2", "3234567890", "654321"),                       # rejected: help centre
    ("2", "9", "1", "9", "1", "9", "1"),                 # verification failed three times
    ("", "", ""),                                        # no input
])
def test_a_repeated_webhook_for_a_finished_call_gets_the_same_answer(us, ports, presses):
    state = CallState("CA1", can_text=True)
    presses = [p if p not in ("9", "1") else {"9": "9999999999", "1": "111111"}[p] for p in presses]
    first = drive(us, state, ports, *presses)
    assert first.hangup
    step = "host_key" if presses[-1] else "menu"
    assert us.handle(state, step, presses[-1], ports) == first
    assert len(ports.sms) <= 1


def test_the_queue_announcement_offers_the_ticket_number_before_the_callback():
    speech = waiting(3, 150, "1", offer_ticket=True)
    assert [s.key for s in speech] == ["queue_position", "queue_wait_minutes",
                                      "queue_ticket_offer", "queue_callback_offer"]
    assert [s.key for s in waiting(3, None, None)] == ["queue_position"]


def test_the_ticket_number_again_is_one_message_carrying_the_number():
    (again,) = ticket_again("48151623")
    assert again.key == "ticket_repeat" and again.kwargs == {"ticket": "48151623"}


def test_a_routed_caller_hears_the_ticket_number_once_before_the_queue(us, ports):
    reply = drive(us, CallState("CA1", can_text=True), ports, "2", "1234567890", "654321", "4")
    assert [s.key for s in reply.speech].count("ticket_logged") == 1
    assert sum(1 for s in reply.speech if "ticket" in s.kwargs) == 1


def test_a_wait_that_ends_unserved_asks_for_a_callback_only_when_one_can_be_placed():
    from ivr.domain.lifecycle import TicketStatus, after_queue

    assert after_queue("queue-full") is TicketStatus.CALLBACK_REQUESTED
    assert after_queue("queue-full", can_call_back=False) is TicketStatus.OPEN
    assert after_queue("leave", can_call_back=False) is TicketStatus.OPEN
    assert after_queue("bridged", can_call_back=False) is TicketStatus.CONNECTED
    assert after_queue("hangup") is TicketStatus.OPEN


def test_a_callback_already_asked_for_outlives_the_end_of_the_wait():
    from ivr.domain.lifecycle import (TicketStatus, after_queue, left_the_queue,
                                      reopened_when_stranded)

    requested = TicketStatus.CALLBACK_REQUESTED
    assert after_queue("hangup", current=requested) is requested
    assert after_queue("queue-full", can_call_back=False, current=requested) is requested
    assert after_queue("hangup", current=TicketStatus.IN_QUEUE) is TicketStatus.OPEN
    assert after_queue("bridged", current=requested) is TicketStatus.CONNECTED
    assert [reopened_when_stranded(s) for s in TicketStatus] == [
        s is TicketStatus.IN_QUEUE for s in TicketStatus]
    assert left_the_queue("hangup", False) and left_the_queue(None, True)
    assert not left_the_queue(None, False) and not left_the_queue("bridged", True)


@pytest.mark.parametrize("prompt, tries", [
    (None, 0), ("", 0), ("2-1-0", 2), ("1-0-1", 1), ("x-0-0", 0), ("123-0-0", 0), ("٢-0-0", 0),
])
def test_the_tries_a_prompt_name_carries_are_read_back_from_it(prompt, tries):
    assert tries_in(prompt) == tries


def test_a_prompt_name_gives_back_the_tries_it_was_made_with():
    state = CallState("CA" + "0" * 32, attempts=2, auth_failures=1, english=True)
    assert tries_in(prompt_of(state)) == 2


@pytest.mark.parametrize("prompt, answered, tries_after", [
    (None, True, 1),          # the request does not say which prompt
    ("1-1-0", True, 1),       # the prompt the call is at
    ("0-1-0", False, 1),      # an earlier prompt, repeated by Twilio
    ("2-1-0", True, 2),       # asked again while the database was away: its try counts
    ("2-0-0", False, 1),      # another count of failed verifications
    ("2-1-1", False, 1),      # another language
    ("x-1-0", False, 1),      # not one of ours
])
def test_a_prompt_is_answered_when_it_is_the_calls_or_one_asked_without_the_database(
        prompt, answered, tries_after):
    state = CallState("CA1", step=Step.PRIORITY, attempts=1, auth_failures=1)
    assert answers(state, prompt) is answered
    assert state.attempts == tries_after
