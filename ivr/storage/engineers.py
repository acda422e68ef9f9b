"""Engineers, who did what to a ticket, pick-ups from the queues and callback attempts."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Callable

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from ..domain.engineers import (
    ANSWERED,
    CALL_ENDED,
    ENGINEER_ON_THE_LEG,
    HEARD_AS,
    LONGEST_CONVERSATION,
    EngineerInfo,
    Serves,
    parse_list,
    primary_language,
)
from ..domain.lifecycle import TicketStatus, can_move
from ..domain.phones import callable_number
from .engine import Storage
from .models import Base, Call, Ticket, UTCDateTime


class Engineer(Base):
    """A named engineer: how their calls are recognised, what they serve, their desk
    token (only its keyed hash)."""

    __tablename__ = "engineers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str | None] = mapped_column(String(32), unique=True)
    client_identity: Mapped[str | None] = mapped_column(String(128), unique=True)
    languages: Mapped[str] = mapped_column(String(128), default="")
    queues: Mapped[str] = mapped_column(String(255), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    token_rotated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


# People tell engineers apart by name and do not see case: 'Aiko' beside 'aiko' would be
# two engineers no one can tell apart, so the database refuses the second even when two
# adds check at the same moment (migration 0012).
Index("uq_engineers_name_lower", func.lower(Engineer.name), unique=True)


class Assignment(Base):
    """The engineer side of one ticket: who picked it up and when, callback counts."""

    __tablename__ = "assignments"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    engineer: Mapped[str | None] = mapped_column(String(64))
    # Set when an engineer's line chose this caller; another engineer skips the caller
    # until the claim connects or grows stale.
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    engineer_call_sid: Mapped[str | None] = mapped_column(String(64))
    # Indexed: a waiting caller's expected wait counts the pick-ups of the last half hour,
    # and the engineer line looks for an engineer's conversation of the last four hours,
    # each a few rows of a table that keeps every pick-up.
    connected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_failures: Mapped[int] = mapped_column(Integer, default=0)
    # When the desk last asked for a callback again: attempts placed before it belong to
    # an earlier round, and their misses do not count in this one.
    round_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class DeskAction(Base):
    """Who did what to a ticket, and when (close, priority, callback, pick-up, ...)."""

    __tablename__ = "desk_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CallbackAttempt(Base):
    """One try at calling a customer back: the engineer's leg, then the customer's."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    engineer: Mapped[str] = mapped_column(String(64))
    engineer_call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    customer_call_sid: Mapped[str | None] = mapped_column(String(64))
    # placing, calling_engineer, engineer_answered, calling_customer, customer_answered, done
    status: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# The engineer line and the desk ask, on every engineer-line request, whether an engineer
# is on a callback placed in the last hours (migration 0017).
Index("ix_callback_attempts_engineer_created", CallbackAttempt.engineer,
      CallbackAttempt.created_at)


def engineer_info(engineer: Engineer) -> EngineerInfo:
    return EngineerInfo(engineer.name, engineer.phone, engineer.client_identity,
                        parse_list(engineer.languages), parse_list(engineer.queues),
                        engineer.created_at)


class EngineerRepository:
    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    def hold(self, name: str) -> None:
        """Lock the engineer's row for this transaction (PostgreSQL; SQLite's write
        transactions already run one at a time), so their requests run in turn."""
        if self.storage.dialect == "postgresql":
            self.session.execute(select(Engineer.id).where(Engineer.name == name)
                                 .with_for_update())

    def add(self, *, name: str, phone: str | None, client_identity: str | None,
            languages: str, queues: str, token_hash: str, now: dt.datetime) -> Engineer:
        engineer = Engineer(name=name, phone=phone, client_identity=client_identity,
                            languages=languages, queues=queues, token_hash=token_hash,
                            created_at=now, token_rotated_at=now)
        self.session.add(engineer)
        self.session.flush()
        return engineer

    def named(self, name: str) -> Engineer | None:
        return self.session.scalars(select(Engineer).where(Engineer.name == name)).first()

    def clash(self, name: str, phone: str | None, client_identity: str | None) -> str | None:
        """Why a new engineer cannot be added, or None."""
        same = self.session.scalars(select(Engineer.name).where(
            func.lower(Engineer.name) == name.lower())).first()
        if same is not None:  # names are told apart by people, who do not see case
            return f"an engineer named {same!r} exists already"
        if phone and self.by_phone(phone) is not None:
            return "another engineer has this phone number"
        if client_identity and self.by_client(client_identity) is not None:
            return f"another engineer has the client identity {client_identity!r}"
        return None

    def by_phone(self, phone: str) -> Engineer | None:
        return self.session.scalars(select(Engineer).where(Engineer.phone == phone)).first()

    def by_client(self, identity: str) -> Engineer | None:
        return self.session.scalars(
            select(Engineer).where(Engineer.client_identity == identity)).first()

    def for_caller(self, caller: str | None) -> Engineer | None:
        """The engineer on a call from 'client:IDENTITY' or from their phone number."""
        caller = (caller or "").strip()
        if caller.startswith("client:"):
            return self.by_client(caller[len("client:"):])
        number = callable_number(caller)
        return self.by_phone(number) if number else None

    def by_token_hash(self, digest: str) -> Engineer | None:
        return self.session.scalars(select(Engineer).where(Engineer.token_hash == digest)).first()

    def all(self) -> list[Engineer]:
        return list(self.session.scalars(select(Engineer).order_by(Engineer.name)))

    def remove(self, name: str) -> bool:
        return self.session.execute(delete(Engineer).where(Engineer.name == name)).rowcount > 0

    def set_token(self, name: str, digest: str, now: dt.datetime) -> bool:
        return self.session.execute(
            update(Engineer).where(Engineer.name == name)
            .values(token_hash=digest, token_rotated_at=now)).rowcount > 0


# The waiting callers read at a time, most urgent first: what the floor page lists, and
# what the engineer line chooses from among those an engineer serves.
WAITING_READ = 2000


class FloorRepository:
    """The queues as engineers see them: waiting callers, pick-ups, actions, callbacks."""

    def __init__(self, storage: Storage, session: Session):
        self.storage = storage
        self.session = session

    # -- who did what ------------------------------------------------------------------

    def record(self, ticket_id: int, actor: str, action: str, detail: str | None,
               now: dt.datetime) -> None:
        self.session.add(DeskAction(ticket_id=ticket_id, actor=actor[:64], action=action,
                                    detail=(detail or None) and detail[:255], at=now))

    def picked_up_only_by(self, ticket_id: int, engineer: str | None) -> bool:
        """Whether every pick-up of a ticket on the engineer line was this engineer's."""
        actors = set(self.session.scalars(
            select(DeskAction.actor).where(DeskAction.ticket_id == ticket_id,
                                           DeskAction.action == "pick-up")))
        return engineer is not None and actors == {engineer[:64]}

    def heard_as(self, ticket_id: int) -> str | None:
        """The number a ticket's caller heard, if the ticket was stored under another
        (``HEARD_AS``); None otherwise."""
        return self.session.scalars(
            select(DeskAction.detail).where(DeskAction.ticket_id == ticket_id,
                                            DeskAction.action == HEARD_AS)
            .order_by(DeskAction.id.desc()).limit(1)).first()

    def actions(self, ticket_id: int) -> list[DeskAction]:
        return list(self.session.scalars(
            select(DeskAction).where(DeskAction.ticket_id == ticket_id)
            .order_by(DeskAction.at, DeskAction.id)))

    def assignment(self, ticket_id: int, now: dt.datetime, *,
                   for_update: bool = False) -> Assignment:
        """The ticket's assignment row, created on first use."""
        self.session.execute(
            self.storage.insert(Assignment)
            .values(ticket_id=ticket_id, callback_attempts=0, callback_failures=0,
                    updated_at=now)
            .on_conflict_do_nothing())
        query = select(Assignment).where(Assignment.ticket_id == ticket_id)
        if for_update and self.storage.dialect == "postgresql":
            query = query.with_for_update()
        return self.session.scalars(query).one()

    def new_callback_round(self, ticket_id: int, now: dt.datetime) -> None:
        """The ticket waits for a callback again: a new round, with every attempt (an
        attempt of an earlier round still ringing does not count in it)."""
        self.session.execute(
            update(Assignment).where(Assignment.ticket_id == ticket_id)
            .values(callback_failures=0, round_started_at=now, updated_at=now))

    def find_assignment(self, ticket_id: int) -> Assignment | None:
        return self.session.get(Assignment, ticket_id)

    # -- the queues --------------------------------------------------------------------

    def waiting(self, limit: int = WAITING_READ) -> list[tuple[Ticket, Call, Assignment | None]]:
        """Tickets whose callers are in a queue now (not hung up, not left), most urgent
        first, with their calls and assignments."""
        rows = self.session.execute(
            select(Ticket, Call, Assignment)
            .join(Call, Call.call_sid == Ticket.call_sid)
            .outerjoin(Assignment, Assignment.ticket_id == Ticket.id)
            .where(Ticket.status == "in_queue", Call.ended_at.is_(None),
                   Call.queue_result.is_(None))
            .order_by(Ticket.priority, Ticket.acknowledged_at, Ticket.id)
            .limit(limit))
        return [(t, c, a) for t, c, a in rows]

    def waiting_served(self, serves: Serves, groups: "QueueGroups",
                       engineer_call_sid: str | None,
                       limit: int = WAITING_READ) -> list[tuple[Ticket, Call, Assignment | None]]:
        """``waiting``, narrowed by the database to the callers an engineer serves (their
        queue groups and languages, as ``Serves.takes`` says), in the engineers' order,
        and those this engineer call has claimed: in a surge the most urgent callers of
        other groups do not fill the rows read and hide this engineer's own callers.
        ``domain.engineers.ranked`` still chooses among them."""
        group = _group_of(groups, Ticket, Call)
        served = [group != _NO_GROUP]
        if serves.queues:
            served.append(group.in_(serves.queues))
        if serves.languages:
            languages = sorted({primary_language(lang) for lang in serves.languages})
            spoken = func.lower(func.coalesce(Call.language, ""))
            served.append(or_(literal(False), *[
                or_(spoken == lang, func.substr(spoken, 1, len(lang) + 1) == lang + "-")
                for lang in languages]))
        mine = Assignment.engineer_call_sid == engineer_call_sid \
            if engineer_call_sid is not None else literal(False)
        rows = self.session.execute(
            select(Ticket, Call, Assignment)
            .join(Call, Call.call_sid == Ticket.call_sid)
            .outerjoin(Assignment, Assignment.ticket_id == Ticket.id)
            .where(Ticket.status == "in_queue", Call.ended_at.is_(None),
                   Call.queue_result.is_(None), or_(and_(*served), mine))
            .order_by(Ticket.priority, _since(Ticket), Ticket.id)
            .limit(limit))
        return [(t, c, a) for t, c, a in rows]

    def waiting_count(self) -> int:
        """How many callers are in a queue now: all of them, however many ``waiting``
        lists."""
        return self.session.execute(
            select(func.count(Ticket.id))
            .join(Call, Call.call_sid == Ticket.call_sid)
            .where(Ticket.status == "in_queue", Call.ended_at.is_(None),
                   Call.queue_result.is_(None))).scalar_one()

    def claim(self, ticket_id: int, engineer: str, engineer_call_sid: str | None,
              now: dt.datetime, stale_before: dt.datetime) -> bool:
        """Take a waiting caller for an engineer, unless another engineer holds a fresh
        claim on them: a compare-and-set, so two engineers never get the same caller. The
        engineer's own fresh claim, from a call of theirs that dropped before the bridge,
        passes to this call."""
        if self.storage.dialect == "postgresql":
            # The ticket's row before the assignment's, the order of every writer: the
            # KEY SHARE lock the pick-up's desk action takes anyway, taken first, so a
            # caller being bridged in at once (``Floor.joining``) is waited for, not
            # deadlocked with.
            self.session.execute(select(Ticket.id).where(Ticket.id == ticket_id)
                                 .with_for_update(key_share=True))
        self.assignment(ticket_id, now)
        taken = self.session.execute(
            update(Assignment)
            .where(Assignment.ticket_id == ticket_id, Assignment.connected_at.is_(None),
                   (Assignment.claimed_at.is_(None)) | (Assignment.claimed_at < stale_before)
                   | (Assignment.engineer == engineer))
            .values(engineer=engineer, claimed_at=now, engineer_call_sid=engineer_call_sid,
                    updated_at=now)
            .execution_options(synchronize_session=False))
        return taken.rowcount == 1

    def talking_elsewhere(self, engineer: str, engineer_call_sid: str,
                          connected_since: dt.datetime) -> bool:
        """Whether another call of this engineer's is in a conversation with a caller it
        took from the queue (``talking_with``)."""
        return self.talking_with(engineer, connected_since,
                                 other_than=engineer_call_sid) is not None

    def talking_with(self, engineer: str, connected_since: dt.datetime,
                     other_than: str | None = None) -> str | None:
        """The ticket number of the caller this engineer is talking to on the engineer
        line (a call of theirs other than ``other_than``), if any: connected since a time,
        and the caller's wait has no result yet (Twilio reports a bridged wait's result
        when the conversation ends) nor has their call ended."""
        query = _talking(select(Ticket.number), engineer, connected_since, other_than)
        return self.session.execute(query.limit(1)).scalar()

    def calls_ended(self, engineer: str, actor: str, detail: str, now: dt.datetime,
                    other_than: str | None = None) -> tuple[list[str], list[str]]:
        """The engineer (or the desk, ``actor``) says every call of hers has ended, when
        Twilio's reports of their end were lost: her callbacks put through
        (``callbacks_ended``) and her conversations on the engineer line
        (``conversations_ended``, each ticket's history saying who said so, ``detail``).
        Returns the numbers of the tickets whose callers were so released, and those of
        the callbacks so ended."""
        callbacks = self.callbacks_ended(engineer, now)
        ended = self.conversations_ended(engineer, now - LONGEST_CONVERSATION, now, other_than)
        for ticket_id, _ in ended:
            self.record(ticket_id, actor, CALL_ENDED, detail, now)
        return [number for _, number in ended], callbacks

    def conversations_ended(self, engineer: str, connected_since: dt.datetime,
                            now: dt.datetime,
                            other_than: str | None = None) -> list[tuple[int, str]]:
        """The engineer (or the desk) says every conversation ``talking_with`` still
        counts for her has ended: Twilio's reports of its end were lost. The caller's
        call is marked ended now, as a final status would (one that comes late keeps
        this time), so no longer counted. Returns those callers' tickets (id, number)."""
        rows = self.session.execute(_talking(select(Ticket.id, Ticket.number, Ticket.call_sid),
                                             engineer, connected_since, other_than)).all()
        if rows:
            self.session.execute(
                update(Call).where(Call.call_sid.in_([sid for _, _, sid in rows]),
                                   Call.ended_at.is_(None))
                .values(ended_at=now, updated_at=now)
                .execution_options(synchronize_session=False))
        return [(ticket_id, number) for ticket_id, number, _ in rows]

    def release(self, ticket_id: int, engineer_call_sid: str, now: dt.datetime) -> bool:
        """Give up a claim that never connected (the caller left meanwhile). The call's
        SID stays, so that call is not handed the same caller again (``voice.floor``)."""
        return self.session.execute(
            update(Assignment)
            .where(Assignment.ticket_id == ticket_id, Assignment.connected_at.is_(None),
                   Assignment.engineer_call_sid == engineer_call_sid)
            .values(claimed_at=None, updated_at=now)
            .execution_options(synchronize_session=False)).rowcount == 1

    def place_in_line(self, call_sid: str, groups: "QueueGroups",
                      picked_up_since: dt.datetime) -> tuple[int, int] | None:
        """For a waiting caller: how many callers of their queue group an engineer would
        take before them (priority, then the longest wait, then the older ticket), and how
        many callers of that group were picked up since a time. Two statements, counted
        by the database: a wait poll costs the same with 5 or 500 callers waiting.
        None if the call has no ticket waiting in a queue."""
        ahead_query, taken_query = _line_queries(groups)
        row = self.session.execute(ahead_query, {"call_sid": call_sid}).first()
        if row is None:
            return None
        group, ahead = row
        taken = self.session.execute(taken_query, {"group": group,
                                                   "since": picked_up_since}).scalar_one()
        return ahead, taken

    def connected_since(self, since: dt.datetime) -> list[tuple[Ticket, Call]]:
        """Tickets an engineer line connected since a time (taken from the queue, not
        called back), with their calls."""
        rows = self.session.execute(
            select(Ticket, Call).join(Call, Call.call_sid == Ticket.call_sid)
            .join(Assignment, Assignment.ticket_id == Ticket.id)
            .where(Assignment.connected_at >= since, _taken_from_the_queue(Ticket)))
        return [(t, c) for t, c in rows]

    def stranded(self, ended_before: dt.datetime, limit: int = 500) -> list[Ticket]:
        """Tickets still in a queue whose calls ended before a time with no queue result."""
        return list(self.session.scalars(
            select(Ticket).join(Call, Call.call_sid == Ticket.call_sid)
            .where(Ticket.status == "in_queue", Call.ended_at.is_not(None),
                   Call.ended_at < ended_before, Call.queue_result.is_(None))
            .order_by(Ticket.id).limit(limit)))

    # -- callbacks ---------------------------------------------------------------------

    def callbacks_due(self, limit: int = 500) -> list[tuple[Ticket, Call, Assignment | None]]:
        rows = self.session.execute(
            select(Ticket, Call, Assignment)
            .join(Call, Call.call_sid == Ticket.call_sid)
            .outerjoin(Assignment, Assignment.ticket_id == Ticket.id)
            .where(Ticket.status == "callback_requested")
            .order_by(Ticket.priority, Ticket.created_at, Ticket.id).limit(limit))
        return [(t, c, a) for t, c, a in rows]

    def new_attempt(self, ticket_id: int, engineer: str, now: dt.datetime) -> CallbackAttempt:
        attempt = CallbackAttempt(ticket_id=ticket_id, engineer=engineer, status="placing",
                                  created_at=now)
        self.session.add(attempt)
        self.session.flush()
        return attempt

    def attempt(self, attempt_id: int, *, for_update: bool = False) -> CallbackAttempt | None:
        lock = for_update and self.storage.dialect == "postgresql"
        return self.session.get(CallbackAttempt, attempt_id, with_for_update=lock or None)

    def attempts(self, ticket_id: int) -> list[CallbackAttempt]:
        return list(self.session.scalars(
            select(CallbackAttempt).where(CallbackAttempt.ticket_id == ticket_id)
            .order_by(CallbackAttempt.id)))

    def on_a_callback(self, engineer: str, open_since: dt.datetime,
                      talking_since: dt.datetime, *,
                      picked_up: bool = False) -> tuple[str, bool] | None:
        """The ticket number of a callback this engineer is on, if any, and whether its
        customer was put through (an end of it never reported is then one
        ``callbacks_ended`` clears): an attempt of theirs under way (placed after
        ``open_since``, not said ended; with ``picked_up``, only once they answered its
        first leg), or one whose customer was put through to them since ``talking_since``
        and whose call has not ended (``ended_at``)."""
        under_way = and_(CallbackAttempt.outcome.is_(None), CallbackAttempt.ended_at.is_(None),
                         CallbackAttempt.created_at > open_since)
        if picked_up:
            under_way = and_(under_way, CallbackAttempt.status.in_(ENGINEER_ON_THE_LEG))
        talking = and_(CallbackAttempt.outcome == ANSWERED, CallbackAttempt.ended_at.is_(None),
                       CallbackAttempt.created_at >= talking_since)
        row = self.session.execute(
            select(Ticket.number, CallbackAttempt.outcome == ANSWERED)
            .join(CallbackAttempt, CallbackAttempt.ticket_id == Ticket.id)
            .where(CallbackAttempt.engineer == engineer, or_(under_way, talking))
            .order_by(CallbackAttempt.id.desc()).limit(1)).first()
        return (row[0], bool(row[1])) if row is not None else None

    def callbacks_ended(self, engineer: str, now: dt.datetime) -> list[str]:
        """The engineer says the call of every callback of theirs put through, or whose
        first leg she answered, has ended (its legs' reports were lost): ``on_a_callback``
        no longer counts them (an attempt under way keeps no outcome: its legs' reports,
        if they come, give it one). Returns those callbacks' ticket numbers."""
        unended = and_(CallbackAttempt.engineer == engineer, CallbackAttempt.ended_at.is_(None),
                       CallbackAttempt.created_at >= now - LONGEST_CONVERSATION,
                       or_(CallbackAttempt.outcome == ANSWERED,
                           and_(CallbackAttempt.outcome.is_(None),
                                CallbackAttempt.status.in_(ENGINEER_ON_THE_LEG))))
        rows = self.session.execute(
            select(CallbackAttempt.id, Ticket.number)
            .join(Ticket, Ticket.id == CallbackAttempt.ticket_id).where(unended)
            .order_by(CallbackAttempt.id)).all()
        if rows:
            self.session.execute(
                update(CallbackAttempt)
                .where(CallbackAttempt.id.in_([attempt for attempt, _ in rows]), unended)
                .values(ended_at=now).execution_options(synchronize_session=False))
        return list(dict.fromkeys(number for _, number in rows))

    def open_attempt(self, ticket_id: int) -> CallbackAttempt | None:
        return self.session.scalars(
            select(CallbackAttempt).where(CallbackAttempt.ticket_id == ticket_id,
                                          CallbackAttempt.outcome.is_(None))
            .order_by(CallbackAttempt.id.desc())).first()


def _talking(query, engineer: str, connected_since: dt.datetime, other_than: str | None):
    """``query`` narrowed to the tickets of callers this engineer is talking to on the
    engineer line (``FloorRepository.talking_with``)."""
    query = (query.join(Assignment, Ticket.id == Assignment.ticket_id)
             .join(Call, Call.call_sid == Ticket.call_sid)
             .where(Assignment.engineer == engineer,
                    Assignment.connected_at >= connected_since,
                    Assignment.engineer_call_sid.is_not(None),
                    Call.ended_at.is_(None), Call.queue_result.is_(None)))
    if other_than is not None:
        query = query.where(Assignment.engineer_call_sid != other_than)
    return query


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def floor_details(storage: Storage, session: Session, ticket_id: int) -> dict:
    """The engineer side of a ticket for the desk: who took it and when, callback
    attempts, and every desk action with who did it and when."""
    floor = FloorRepository(storage, session)
    assignment = floor.find_assignment(ticket_id)
    return {
        "engineer": assignment.engineer if assignment and assignment.connected_at else None,
        "engineer_connected_at": _iso(assignment.connected_at) if assignment else None,
        "callback_attempts": assignment.callback_attempts if assignment else 0,
        "callback_failures": assignment.callback_failures if assignment else 0,
        "note": assignment.note if assignment else None,
        "attempts": [{"id": a.id, "engineer": a.engineer, "status": a.status,
                      "outcome": a.outcome, "created_at": _iso(a.created_at),
                      "ended_at": _iso(a.ended_at)} for a in floor.attempts(ticket_id)],
        "actions": [{"actor": a.actor, "action": a.action, "detail": a.detail,
                     "at": _iso(a.at)} for a in floor.actions(ticket_id)],
    }


# -- tickets as the engineers' side moves them (ORM, off the callers' hot path) ----------


def ticket_for_call(session: Session, call_sid: str, *, for_update: bool = False) -> Ticket | None:
    """This call's ticket; ``for_update`` locks its row (PostgreSQL) and reads it as it
    stands once the lock is held, not as the session last loaded it: a change committed
    by whoever held the lock (the desk's close) is seen, not written over."""
    query = select(Ticket).where(Ticket.call_sid == call_sid)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).first()


def move_ticket(session: Session, call_sid: str, status: str, now: dt.datetime,
               when: Callable[[TicketStatus], bool] | None = None) -> Ticket | None:
    """Move this call's ticket along the lifecycle (``domain.lifecycle``); None when it has
    no ticket, the lifecycle does not allow the move from where it stands (a repeated
    request then changes nothing), or ``when`` says no about where it stands (read under
    the row's lock)."""
    ticket = ticket_for_call(session, call_sid, for_update=True)
    if ticket is None or not can_move(ticket.status, status) \
            or (when is not None and not when(TicketStatus(ticket.status))):
        return None
    ticket.status = status
    ticket.updated_at = now
    if status == "connected":
        ticket.connected_at = ticket.connected_at or now
    return ticket


# -- a waiting caller's place in line ------------------------------------------------------

# The queue group of every (dialled number, priority) pair, as the voice layer's
# configuration says (``voice.floor.queue_groups``): ``pairs`` for the configured lines,
# ``others`` by priority for a number that is not one of them. None (a route without
# queues) is a group of its own, as it is in ``domain.engineers.position``.
QueueGroups = tuple[tuple[tuple[tuple[str, int], str | None], ...],
                    tuple[tuple[int, str | None], ...]]

_NO_GROUP = ""  # None as SQL can compare it


def _taken_from_the_queue(ticket):
    """A connected ticket an engineer took from the queue: not one connected by a callback
    the customer answered (both set the assignment's connected_at)."""
    return ~select(CallbackAttempt.id).where(CallbackAttempt.ticket_id == ticket.id,
                                             CallbackAttempt.outcome == ANSWERED).exists()


def _group_of(groups: QueueGroups, ticket, call):
    """The queue group of a ticket's caller at its priority, as SQL (``_NO_GROUP`` for
    none)."""
    pairs, others = groups
    return case(*[((call.dialed_number == number) & (ticket.priority == level),
                   literal(group or _NO_GROUP)) for (number, level), group in pairs],
                *[(ticket.priority == level, literal(group or _NO_GROUP))
                  for level, group in others],
                else_=literal(_NO_GROUP))


def _since(ticket):
    """Since when a caller has waited, as ``voice.floor.waiting_of`` counts it."""
    return func.coalesce(ticket.acknowledged_at, ticket.created_at)


@functools.lru_cache(maxsize=8)
def _line_queries(groups: QueueGroups):
    """The two statements of ``place_in_line`` for one configuration, built once."""

    def group_of(ticket, call):
        return _group_of(groups, ticket, call)

    def waiting(ticket, call):
        return and_(ticket.status == "in_queue", call.ended_at.is_(None),
                    call.queue_result.is_(None))

    since = _since

    me_ticket, me_call = aliased(Ticket), aliased(Call)
    me = (select(me_ticket.id.label("id"), me_ticket.priority.label("priority"),
                 since(me_ticket).label("since"), group_of(me_ticket, me_call).label("grp"))
          .join(me_call, me_call.call_sid == me_ticket.call_sid)
          .where(waiting(me_ticket, me_call), me_call.call_sid == bindparam("call_sid"))
          .subquery("me"))
    other, other_call = aliased(Ticket), aliased(Call)
    ahead = (select(func.count(other.id))
             .join(other_call, other_call.call_sid == other.call_sid)
             .where(waiting(other, other_call), other.id != me.c.id,
                    group_of(other, other_call) == me.c.grp,
                    or_(other.priority < me.c.priority,
                        and_(other.priority == me.c.priority,
                             or_(since(other) < me.c.since,
                                 and_(since(other) == me.c.since, other.id < me.c.id)))))
             .scalar_subquery())
    ahead_query = select(me.c.grp, ahead).select_from(me)
    taken_query = (select(func.count(Ticket.id))
                   .join(Call, Call.call_sid == Ticket.call_sid)
                   .join(Assignment, Assignment.ticket_id == Ticket.id)
                   .where(Assignment.connected_at >= bindparam("since", type_=UTCDateTime()),
                          group_of(Ticket, Call) == bindparam("group"),
                          _taken_from_the_queue(Ticket)))
    return ahead_query, taken_query
