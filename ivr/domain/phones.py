"""Phone-number rules: masking for logs, SMS capability, callback numbers, lockout keys."""

from __future__ import annotations

import functools
import re

import phonenumbers

TEXTABLE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def mask(number: str | None) -> str:
    """A phone number as logs may show it: the last four digits only."""
    digits = "".join(ch for ch in (number or "") if ch.isdigit())
    return f"…{digits[-4:]}" if len(digits) >= 4 else "…"


def as_typed(text: str) -> str:
    """Something an operator typed (a PMI, a ticket reference), as a message may repeat
    it: by its last four digits when it holds six or more (a phone number, a PMI, the
    shortest number ``redact_numbers`` hides), else quoted, its first 20 characters."""
    return mask(text) if sum(ch.isdigit() for ch in text) >= 6 else repr(text[:20])


# A run of six or more digits standing on its own: a phone number, a PMI, a typed key;
# also after a URL-encoded plus (%2B), as a number stands in a query or a form.
_LONG_NUMBER = re.compile(r"(?:(?<![\w+])\+?|(?<=%2[Bb]))\d{6,}(?!\w)")


def redact_numbers(text: str) -> str:
    """Text (an error's message, a traceback) with every long number cut to its last four
    digits, as ``mask`` shows a phone number. Identifiers that start with letters (call
    SIDs) are left whole."""
    return _LONG_NUMBER.sub(lambda found: mask(found.group()), text)


@functools.lru_cache(maxsize=4096)
def _parsed(number: str) -> phonenumbers.PhoneNumber | None:
    """The number as phonenumbers reads it (E.164 expected), or None. Kept per number: a
    call's number is read when it arrives (SMS), at the host key (lockout) and for a
    callback, and parsing is the costly part of each. Callers must not change it."""
    try:
        return phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None


@functools.lru_cache(maxsize=4096)
def callable_number(number: str | None) -> str | None:
    """The number in E.164 if an engineer could call it back, else None (withheld...)."""
    parsed = _parsed(number or "")
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=4096)
def can_receive_sms(number: str | None) -> bool:
    parsed = _parsed(number or "")
    return parsed is not None and phonenumbers.is_valid_number(parsed) \
        and phonenumbers.number_type(parsed) in TEXTABLE


WITHHELD = "withheld"


# A PMI's counter is named by the keyed hash of the digits typed (security.py,
# HostKeyHasher.pmi_lockout_digest), never by the digits: a wrong PMI is often a mistyped
# real one, and the table (or a backup of it) would show which PMIs are being tried.
PMI_KEY = "pmi-hash:"
CALLER_KEY = "caller:"
NOT_IN_DIRECTORY = "a PMI not in the directory"


def pmi_lockout_key(pmi_digest: str) -> str:
    """The lockout key of a PMI, from its keyed hash (64 hex digits)."""
    if len(pmi_digest) != 64:
        raise ValueError("a PMI's lockout key is made from its keyed hash, not its digits")
    return PMI_KEY + pmi_digest


def caller_lockout_key(caller_number: str | None) -> str:
    """The lockout key of a caller. Withheld numbers share one key: Twilio's "anonymous"
    and its keypad spellings (+266696687 ANONYMOUS, +7378742833 RESTRICTED...), and any
    other number that is not a valid one, so made-up caller IDs cannot each start a fresh
    count."""
    return CALLER_KEY + _caller_key(caller_number or "")


def lockout_keys(pmi_digest: str, caller_number: str | None) -> tuple[str, str]:
    """The lockout keys of a PMI (by its keyed hash) and of a caller."""
    return pmi_lockout_key(pmi_digest), caller_lockout_key(caller_number)


def pmi_digest_of(key: str) -> str | None:
    """The keyed hash a PMI's lockout key holds; None for a caller's key."""
    return key[len(PMI_KEY):] if key.startswith(PMI_KEY) else None


def lockout_name(key: str, pmi: str | None = None) -> str:
    """A lockout key as operators read it: the PMI, the caller's last four digits, or
    "withheld callers" for the counter they share. A PMI's key holds only its hash, so it
    is named by ``pmi``, the directory PMI (or the one the operator typed) it was found
    to match, and otherwise as a PMI not in the directory."""
    if not key.startswith(CALLER_KEY):
        return f"PMI {pmi}" if pmi else NOT_IN_DIRECTORY
    value = key.removeprefix(CALLER_KEY)
    return "withheld callers" if value == WITHHELD else f"caller {mask(value)}"


@functools.lru_cache(maxsize=4096)
def _caller_key(number: str) -> str:
    return callable_number(number) or WITHHELD
