"""The ticket lifecycle, shared by the call flow and the support desk.

in_queue | open -> callback_requested -> connected -> closed. A routed call's ticket starts
in_queue (one routed to a dialled desk, open): only a call puts its caller in a queue, so
no move leads there; a ticket moved out of it has had its caller go or be let go, and
moved back it would stand among the waiting callers with no one there for an engineer to
take. A waiting caller may ask for a callback instead; a caller who hangs up while waiting
puts the ticket back in the open pile; a dialled desk connects without a queue; any ticket
may be closed; a closed ticket stays closed. ``move`` is the one rule for every change of
status: it raises on a move the lifecycle does not allow, for the call service and the
desk alike.
"""

from __future__ import annotations

from enum import StrEnum


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_QUEUE = "in_queue"
    CALLBACK_REQUESTED = "callback_requested"
    CONNECTED = "connected"
    CLOSED = "closed"

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self]


TRANSITIONS: dict[TicketStatus, tuple[TicketStatus, ...]] = {
    # Not to in_queue: a ticket is created there, by the call that queues its caller.
    TicketStatus.OPEN: (TicketStatus.CALLBACK_REQUESTED, TicketStatus.CONNECTED,
                        TicketStatus.CLOSED),
    TicketStatus.IN_QUEUE: (TicketStatus.OPEN, TicketStatus.CALLBACK_REQUESTED,
                            TicketStatus.CONNECTED, TicketStatus.CLOSED),
    # Back to the open pile after the configured number of failed callback attempts.
    TicketStatus.CALLBACK_REQUESTED: (TicketStatus.OPEN, TicketStatus.CONNECTED,
                                      TicketStatus.CLOSED),
    TicketStatus.CONNECTED: (TicketStatus.CLOSED,),
    TicketStatus.CLOSED: (),
}

STATUSES = tuple(status.value for status in TicketStatus)
# Every status a ticket can still leave: what the desk's "unclosed" lists show.
UNCLOSED = tuple(status.value for status in TicketStatus if not status.final)


class ForbiddenMove(ValueError):
    def __init__(self, current: TicketStatus, new: TicketStatus):
        allowed = ", ".join(TRANSITIONS[current]) or "none: it is final"
        super().__init__(f"cannot go from {current} to {new} (allowed from {current}: {allowed})")
        self.current, self.new = current, new


def can_move(current: str, new: str) -> bool:
    try:
        return TicketStatus(new) in TRANSITIONS[TicketStatus(current)]
    except ValueError:
        return False


def move(current: str, new: str) -> TicketStatus:
    """The status after moving ``current`` to ``new``; raises ForbiddenMove otherwise."""
    current, new = TicketStatus(current), TicketStatus(new)
    if new not in TRANSITIONS[current]:
        raise ForbiddenMove(current, new)
    return new


def routed_status(dialled: bool) -> TicketStatus:
    """Where a routed call's ticket starts: waiting in the queue, unless the route
    dials a desk directly (then the desk's answer connects it)."""
    return TicketStatus.OPEN if dialled else TicketStatus.IN_QUEUE


# How a wait in the queue (or a dialled desk) ended -> where the ticket goes. Twilio's
# QueueResult values, and DialCallStatus for a dialled desk. Any other result (the queue
# was full or shut down, an error, the desk did not answer, the caller left for a
# callback) asks for a callback.
QUEUE_RESULTS: dict[str, TicketStatus] = {
    "hangup": TicketStatus.OPEN,            # gave up waiting: back to the open pile
    "bridged": TicketStatus.CONNECTED,      # an agent took the call
    "bridging-in-process": TicketStatus.CONNECTED,  # an agent is taking it right now
    "redirected-from-bridged": TicketStatus.CONNECTED,  # redirected after the conversation
    # Redirected out of the queue to other instructions: no one took the ticket and no
    # callback was asked for, so it goes back to the open pile (a callback asked for stays).
    "redirected": TicketStatus.OPEN,
    "completed": TicketStatus.CONNECTED,    # a dialled desk answered
    "answered": TicketStatus.CONNECTED,
}


def after_queue(result: str, can_call_back: bool = True,
                current: TicketStatus | None = None) -> TicketStatus:
    """Where the ticket goes when its wait ends this way, from ``current`` (where it stands,
    when known). A caller who cannot be called back (a withheld number) goes to the open
    pile instead of waiting for a callback no one could place. A callback already asked
    for (the caller pressed the key and hung up before leaving the queue, or the desk set
    it) is kept: only failed callback attempts send such a ticket back to the open pile."""
    target = QUEUE_RESULTS.get(result, TicketStatus.CALLBACK_REQUESTED)
    if target is TicketStatus.CALLBACK_REQUESTED and not can_call_back:
        target = TicketStatus.OPEN
    if target is TicketStatus.OPEN and current is TicketStatus.CALLBACK_REQUESTED:
        return TicketStatus.CALLBACK_REQUESTED
    return target


def waiting_ended_by_the_desk(current: TicketStatus) -> bool:
    """Whether a caller still holding in the queue should be let go: the desk has moved
    their ticket on (closed it, set it to a callback, put it back in the open pile), so no
    engineer will take them from the queue. They are told why and the call ends; the
    hang-up that Twilio then reports leaves the ticket where the desk put it
    (``after_queue``: a callback is kept, a closed ticket is final)."""
    return current in (TicketStatus.OPEN, TicketStatus.CALLBACK_REQUESTED,
                       TicketStatus.CLOSED)


def reopened_when_stranded(current: TicketStatus) -> bool:
    """A ticket whose call ended in the queue with no word from Twilio goes back to the
    open pile only if it is still in_queue (the desk may have moved it since)."""
    return current is TicketStatus.IN_QUEUE


def bridged(result: str | None) -> bool:
    """Whether a queue or dial result says the caller and an engineer were connected."""
    return QUEUE_RESULTS.get(result or "") is TicketStatus.CONNECTED


def left_the_queue(queue_result: str | None, call_ended: bool) -> bool:
    """Whether a caller is gone from the queue other than to an engineer: their wait ended
    another way, or their call ended with no word on it. Someone "joining" them then has
    no one to connect."""
    if queue_result is not None:
        return not bridged(queue_result)
    return call_ended
