"""Priority levels: the one place that says which there are (the policy's P1 to P4).

Names and target response times are configuration (``[[priorities]]``); the set of levels
is not: the caller's keypad menu, the desk's filters and forms and the help desk's mapping
all follow ``LEVELS``.
"""

from __future__ import annotations

LEVELS: tuple[int, ...] = (1, 2, 3, 4)
HIGHEST, LOWEST = LEVELS[0], LEVELS[-1]
KEYS: tuple[str, ...] = tuple(str(level) for level in LEVELS)  # the keys a caller presses
RANGE_TEXT = f"from {HIGHEST} to {LOWEST}"


def is_level(value: object) -> bool:
    """Whether ``value`` is a priority level (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value in LEVELS


def level_of_key(digits: str) -> int | None:
    """The level a caller chose by pressing ``digits``, or None."""
    return int(digits) if digits in KEYS else None
