"""Engineers on the line: who serves which caller, and which waiting caller comes first.

Plain Python. Every waiting caller sits alone in a Twilio queue named after their ticket
(``queue_name``), so the engineer line can dequeue exactly the caller it chose: the most
urgent one (priority first, then the longest wait) among the queue groups and languages
the engineer serves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

# Names a ticket's history records for what no engineer did: no engineer may take one, or
# the history would lie.
ADMIN = "admin"  # the holder of IVR_ADMIN_TOKEN
HELPDESK_ACTOR = "zendesk"  # changes made in the help desk
SYSTEM_ACTOR = "system"  # the service's own moves (the stranded sweep, a failed round)
UNKNOWN_ENGINEER = "unknown engineer"  # a pick-up whose engineer is not on record
RESERVED_NAMES = (ADMIN, HELPDESK_ACTOR, SYSTEM_ACTOR, UNKNOWN_ENGINEER)

# The longest an engineer line's <Dial> can last: Twilio's timeLimit, four hours unless set
# (the line sets none). A conversation connected longer ago has ended, whatever was lost.
LONGEST_CONVERSATION = dt.timedelta(hours=4)
# A ticket's history entry when the engineer or the desk says a conversation on the
# engineer line has ended whose end Twilio's reports never brought.
CALL_ENDED = "call ended"
# A ticket's history entry when the number its caller heard during a database outage was
# taken by another ticket before the replay: the detail is the number heard, which the
# caller's Twilio queue is named after (``queue_name``).
HEARD_AS = "heard as"

QUEUE_NAME_LIMIT = 64  # Twilio's limit on a queue's name
# A configured queue group's longest name: a caller's own queue adds ".<ticket>" (eight
# digits) to it, and the whole must fit Twilio's limit.
QUEUE_GROUP_LIMIT = QUEUE_NAME_LIMIT - len(".12345678")


def queue_name(group: str, ticket_number: str) -> str:
    """The Twilio queue a ticket's caller waits in: one caller per queue, so whoever dials
    it gets exactly that caller. ``group`` is the configured queue (``support-jp``)."""
    suffix = f".{ticket_number}"
    return group[: QUEUE_NAME_LIMIT - len(suffix)] + suffix


def primary_language(tag: str | None) -> str:
    """'ja' of 'ja-JP'; '' when unknown."""
    return (tag or "").split("-", 1)[0].strip().lower()


def parse_list(text: str | None) -> tuple[str, ...]:
    """'ja, en,,fr' -> ('ja', 'en', 'fr'), duplicates dropped, order kept."""
    seen: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part and part not in seen:
            seen.append(part)
    return tuple(seen)


@dataclass(frozen=True)
class Serves:
    """What one engineer takes: queue groups and caller languages (empty: all of them)."""

    queues: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    def takes(self, group: str | None, language: str | None) -> bool:
        if group is None:
            return False
        if self.queues and group not in self.queues:
            return False
        if self.languages and primary_language(language) not in \
                {primary_language(lang) for lang in self.languages}:
            return False
        return True


@dataclass(frozen=True)
class Waiting:
    """A caller waiting in the queues, as the choice rule sees them."""

    ticket_id: int
    priority: int
    since: dt.datetime
    group: str | None
    language: str | None


def order_key(waiting: Waiting) -> tuple:
    """Most urgent first: priority 1 before 4, then whoever has waited longest."""
    return (waiting.priority, waiting.since, waiting.ticket_id)


def ranked(serves: Serves, callers: Iterable[Waiting]) -> list[Waiting]:
    """The callers this engineer may take, the one to take first at the front."""
    return sorted((w for w in callers if serves.takes(w.group, w.language)), key=order_key)


def position(me: Waiting, callers: Iterable[Waiting]) -> int:
    """Where a waiting caller stands in their queue group: 1 + the callers of the same
    group an engineer would take before them."""
    ahead = sum(1 for w in callers if w.ticket_id != me.ticket_id and w.group == me.group
                and order_key(w) < order_key(me))
    return ahead + 1


@dataclass(frozen=True)
class EngineerInfo:
    name: str
    phone: str | None
    client_identity: str | None
    languages: tuple[str, ...]
    queues: tuple[str, ...]
    created_at: dt.datetime

    @property
    def serves(self) -> Serves:
        return Serves(self.queues, self.languages)

    @property
    def dial_target(self) -> str | None:
        """What Twilio dials to reach them: their phone, else their Client app."""
        if self.phone:
            return self.phone
        return f"client:{self.client_identity}" if self.client_identity else None

    def as_dict(self) -> dict:
        return {"name": self.name, "phone": self.phone, "client": self.client_identity,
                "languages": list(self.languages), "queues": list(self.queues),
                "created_at": self.created_at.isoformat()}


# -- callbacks --------------------------------------------------------------------------

# Outcomes of a callback attempt. Only those on the customer's side count towards giving
# up: the text that says "we tried to call you" must be true. A customer's phone answered
# is not a customer reached: a voicemail answers too. Whoever answers is asked to press a
# key to be put through; the call answered and ended with none pressed (a machine, or a
# customer who hung up during the greeting) is "unconfirmed", a miss like no answer.
UNCONFIRMED = "unconfirmed"
NOT_ANSWERED = ("busy", "no-answer", "failed", "canceled")  # as Twilio reports them
CUSTOMER_FAILURES = NOT_ANSWERED + (UNCONFIRMED,)
ANSWERED = "answered"
# An attempt's statuses once the engineer has picked up its first leg and before it ends.
ENGINEER_ON_THE_LEG = ("engineer_answered", "calling_customer", "customer_answered")


def attempt_window(ring_seconds: int) -> dt.timedelta:
    """How long an attempt that has not ended can still be under way: the engineer's ring,
    the customer's, and time for the summary and the greeting. One whose legs never
    reported stops counting after it."""
    return dt.timedelta(seconds=4 * ring_seconds + 60)


def engineer_outcome(call_status: str) -> str:
    """The attempt's outcome when the engineer's own leg ended before the customer's was
    dialled."""
    return {"busy": "engineer-busy", "no-answer": "engineer-no-answer",
            "failed": "engineer-failed", "canceled": "engineer-no-answer"}.get(
        call_status, "engineer-declined")


def customer_outcome(status: str) -> str | None:
    """The attempt's outcome from the customer leg's status (or a Dial's DialCallStatus);
    None while it is not final."""
    if status in ("in-progress", "answered", "completed"):
        return ANSWERED
    if status in NOT_ANSWERED:
        return status
    return None


def customer_leg_ended(status: str, asked_for_a_key: bool) -> str | None:
    """The outcome of an attempt whose customer leg ended (``status``: its final
    CallStatus or the Dial's DialCallStatus) before any key was pressed. Answered after
    the greeting asked for a key: nobody pressed one, so nobody was reached. Answered
    without that question (the greeting's request met the database away and the
    customer was put straight through): as Twilio says."""
    outcome = customer_outcome(status)
    if outcome == ANSWERED and asked_for_a_key:
        return UNCONFIRMED
    return outcome
