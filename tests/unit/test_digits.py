"""The one check for numbers that come from outside (ivr/domain/digits.py)."""

import pytest

from ivr.domain.digits import ascii_digits, ascii_number


@pytest.mark.parametrize("text", ["7", "0042", "1234567890"])
def test_ascii_digits_within_the_bounds_are_kept_as_written(text):
    assert ascii_digits(text, at_most=10) == text


@pytest.mark.parametrize("text", [
    "", " 7", "7 ", "+7", "-7", "7.0", "1_000", "0x1f",
    "\u00b2",          # superscript two: isdigit() but not int()
    "\u0661",          # Arabic-Indic one: isdigit() and int() == 1
    "1\u0663",         # a mix
    "\uff11",          # fullwidth one
    "12345678901",     # one digit too many
    None, 7, True, b"7",
])
def test_anything_but_ascii_digits_within_the_bounds_is_refused(text):
    assert ascii_digits(text, at_most=10) is None
    assert ascii_number(text, at_most=10) is None


def test_a_lower_bound_refuses_too_few_digits():
    assert ascii_digits("123", at_least=4, at_most=6) is None
    assert ascii_digits("1234", at_least=4, at_most=6) == "1234"


def test_number_reads_the_value():
    assert ascii_number("0042", at_most=4) == 42
    assert ascii_number("9" * 19, at_most=19) == 10 ** 19 - 1

