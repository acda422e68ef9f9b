"""Phone-number rules that logs depend on."""

import pytest

from ivr.domain import phones
from ivr.domain.phones import (callable_number, can_receive_sms, caller_lockout_key, lockout_keys,
                               lockout_name, mask, pmi_lockout_key, redact_numbers)


def test_long_numbers_in_error_text_keep_their_last_four_digits_only():
    text = ("Failing row contains (CA0123456789abcdef0123456789abcdef, +14155550123, "
            "912345678, 42, 2026-11-25, line 1234)")
    redacted = redact_numbers(text)
    assert "+14155550123" not in redacted and "912345678" not in redacted
    assert "…0123" in redacted and "…5678" in redacted
    # call SIDs, short counts, dates and line numbers stay as they were
    for kept in ("CA0123456789abcdef0123456789abcdef", " 42,", "2026-11-25", "line 1234"):
        assert kept in redacted
    assert mask("+14155550123") == "…0123"


def test_numbers_written_into_a_url_or_a_form_are_cut_to_their_last_four_digits_too():
    # A client library's error quotes the request it failed on, with its form or query.
    text = ("400 Client Error for url: https://api.example.com/send?To=%2B14155550123"
            "&From=%2b819012345678 body To=+14155550199&Body=ticket")
    redacted = redact_numbers(text)
    for number in ("14155550123", "819012345678", "14155550199"):
        assert number not in redacted
    assert "To=%2B…0123" in redacted and "From=%2b…5678" in redacted
    assert "To=…0199" in redacted


# (number, can receive an SMS, number to call back, lockout key), as phonenumbers judges
# them: a Japanese mobile and a US number can be texted, a London or Tokyo landline cannot.
NUMBERS = [
    ("+819012345678", True, "+819012345678", "caller:+819012345678"),
    ("+12125550199", True, "+12125550199", "caller:+12125550199"),
    ("+1 (212) 555-0199", True, "+12125550199", "caller:+12125550199"),
    ("+442071838750", False, "+442071838750", "caller:+442071838750"),
    ("+81312345678", False, "+81312345678", "caller:+81312345678"),
    ("+447700900123", False, None, "caller:withheld"),  # a drama number: not valid
    # Twilio's keypad spellings of a withheld caller ID all share the withheld count.
    ("+266696687", False, None, "caller:withheld"),    # ANONYMOUS
    ("+7378742833", False, None, "caller:withheld"),   # RESTRICTED
    ("+2562533", False, None, "caller:withheld"),      # BLOCKED
    ("+8656696", False, None, "caller:withheld"),      # UNKNOWN
    ("+86282452253", False, None, "caller:withheld"),  # UNAVAILABLE
    ("+999123", False, None, "caller:withheld"),  # no such country code
    ("anonymous", False, None, "caller:withheld"),
    ("266696687", False, None, "caller:withheld"),  # no country code at all
    ("", False, None, "caller:withheld"),
]


@pytest.mark.parametrize("order", ["sms first", "lockout first", "callback first"])
def test_each_phone_rule_gives_its_answer_whichever_reads_a_number_first(order):
    # The rules share one parsed copy of each number: none of them may change it.
    rules = {"sms first": (can_receive_sms, callable_number, _lockout_key),
             "lockout first": (_lockout_key, callable_number, can_receive_sms),
             "callback first": (callable_number, can_receive_sms, _lockout_key)}[order]
    for cache in (can_receive_sms, callable_number, phones._caller_key, phones._parsed):
        cache.cache_clear()
    for number, sms, callback, key in NUMBERS:
        expected = {can_receive_sms: sms, callable_number: callback, _lockout_key: key}
        for rule in rules + rules:
            assert rule(number) == expected[rule], (number, rule.__name__)


def _lockout_key(number: str) -> str:
    return caller_lockout_key(number)


def test_a_pmi_lockout_key_is_made_from_a_keyed_hash_never_from_the_digits_typed():
    digest = "ab" * 32
    assert lockout_keys(digest, "+14155550100") == (f"pmi-hash:{digest}", "caller:+14155550100")
    with pytest.raises(ValueError):
        pmi_lockout_key("5550100201")


def test_a_pmi_lock_is_named_by_the_pmi_it_was_matched_to_or_else_by_no_digits():
    key = pmi_lockout_key("ab" * 32)
    assert lockout_name(key, "5550100201") == "PMI 5550100201"
    assert lockout_name(key) == "a PMI not in the directory"
    assert lockout_name("pmi:5550100202") == "a PMI not in the directory"
    assert lockout_name(caller_lockout_key("+14155550100")) == "caller …0100"
    assert lockout_name(caller_lockout_key("anonymous")) == "withheld callers"
