"""Numbers as this service and its partners write them: ASCII digits, and not too many.

``str.isdigit()`` is true of more than a keypad, a URL or a JSON answer ever holds: '\u00b2'
(superscript two) passes it but ``int()`` refuses it, and '\u0661' (Arabic-Indic one) passes
both, so a check by ``isdigit()`` alone either ends in an exception or reads '\u0661' as 1.
Every number that comes from outside (keys a caller pressed, a ticket or attempt number
in a URL Twilio sends back, an operator's argument, a port, a Zendesk id) is checked here.
"""

from __future__ import annotations


def ascii_digits(text: object, *, at_most: int, at_least: int = 1) -> str | None:
    """``text`` if it is a string of ASCII digits only, ``at_least`` to ``at_most`` of
    them; None for anything else (other digits, signs, spaces, an empty string, None)."""
    if isinstance(text, str) and text.isascii() and text.isdigit() \
            and at_least <= len(text) <= at_most:
        return text
    return None


def ascii_number(text: object, *, at_most: int) -> int | None:
    """The whole number ``text`` writes in at most ``at_most`` ASCII digits, or None."""
    found = ascii_digits(text, at_most=at_most)
    return int(found) if found is not None else None
