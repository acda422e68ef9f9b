"""The ticket lifecycle, shared by the call flow and the support desk.

open -> callback_requested | in_queue -> connected -> closed. A waiting caller may ask for
a callback instead; a caller who hangs up while waiting puts the ticket back in the open
pile; a dialled desk connects without a queue; any ticket may be closed; a closed ticket
stays closed.
"""

STATUSES = ("open", "in_queue", "callback_requested", "connected", "closed")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("in_queue", "callback_requested", "connected", "closed"),
    "in_queue": ("open", "callback_requested", "connected", "closed"),
    # Back to the open pile after the configured number of failed callback attempts.
    "callback_requested": ("open", "connected", "closed"),
    "connected": ("closed",),
    "closed": (),
}


def can_move(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, ())
