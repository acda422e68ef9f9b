"""No ticket stranded: a ticket still in a queue after its call ended, with no queue
result from Twilio, goes back to the open pile after the grace period."""

import threading

import pytest
from sqlalchemy import select

from ivr.storage.engineers import DeskAction
from ivr.storage.models import Ticket

from ..floor_support import queued, while_the_desk_closes
from ..support import twiml


def status(ivr, number):
    with ivr.storage.transaction() as session:
        return session.scalars(select(Ticket.status).where(Ticket.number == number)).one()


def hang_up(twilio, waiting, **extra):
    twiml(twilio.post("/voice/status", **{**twilio.call_params(waiting["sid"]),
                                          "CallStatus": "completed", "CallDuration": "95",
                                          **extra}))


def test_a_call_that_ended_without_a_queue_result_reopens_after_the_grace_period(
        twilio, ivr, clock):
    lost = queued(twilio, 1)
    hang_up(twilio, lost)
    grace = ivr.config.engineers.stranded_after_seconds
    clock.advance(seconds=grace - 1)
    assert ivr.floor.sweep_stranded() == 0 and status(ivr, lost["ticket"]) == "in_queue"
    clock.advance(seconds=2)
    assert ivr.floor.sweep_stranded() == 1 and status(ivr, lost["ticket"]) == "open"
    with ivr.storage.transaction() as session:
        (action,) = session.scalars(select(DeskAction)).all()
    assert (action.actor, action.action) == ("system", "reopened")
    assert action.detail == "the call ended while queued and Twilio sent no queue result"
    assert ivr.floor.sweep_stranded() == 0


def test_callers_still_waiting_or_with_a_queue_result_are_left_alone(twilio, ivr, clock):
    waiting = queued(twilio, 2)
    bridged = queued(twilio, 3)
    twiml(twilio.post(f"/voice/queue-result?ticket={bridged['ticket']}&priority=3",
                      **twilio.call_params(bridged["sid"]), QueueResult="bridged",
                      QueueTime="30"))
    hang_up(twilio, bridged)
    clock.advance(hours=2)
    assert ivr.floor.sweep_stranded() == 0
    assert (status(ivr, waiting["ticket"]), status(ivr, bridged["ticket"])) == (
        "in_queue", "connected")


def test_the_drain_command_sweeps_stranded_tickets(app, twilio, ivr, clock):
    lost = queued(twilio, 4)
    hang_up(twilio, lost)
    clock.advance(hours=1)
    result = app.test_cli_runner().invoke(args=["outbox", "drain"])
    assert result.exit_code == 0, result.output
    assert "1 tickets stranded in a queue after their calls ended reopened." in result.output
    assert status(ivr, lost["ticket"]) == "open"


def stranded_while_the_desk_acts(twilio, ivr, clock):
    """A P1 caller whose call ended in the queue an hour ago with no queue result, for a
    race between the sweep and the desk (PostgreSQL only: SQLite's write lock runs the
    two one after the other)."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the desk and the sweep one after the other")
    lost = queued(twilio, 1)
    hang_up(twilio, lost)
    clock.advance(hours=1)
    return lost


def test_a_close_the_desk_commits_while_the_sweep_waits_for_the_ticket_is_not_undone(
        twilio, ivr, clock):
    """The sweep reads a stranded ticket, then waits for its row while the desk closes
    it: once the close commits the sweep sees the ticket closed and leaves it so."""
    lost = stranded_while_the_desk_acts(twilio, ivr, clock)
    swept = []
    sweep = threading.Thread(target=lambda: swept.append(ivr.floor.sweep_stranded()))
    while_the_desk_closes(ivr, lost["ticket"], sweep, "the sweep")
    assert status(ivr, lost["ticket"]) == "closed"
    assert swept == [0]


def test_the_sweep_leaves_a_ticket_the_desk_set_to_callback_after_reading_it(
        twilio, ivr, clock, monkeypatch):
    """The sweep reads its candidates without a lock; a ticket the desk moves to
    callback_requested in between keeps the callback (only a ticket still in_queue goes
    back to open)."""
    from ivr.desk.service import Desk
    from ivr.storage.engineers import FloorRepository

    from ..support import pause

    lost = stranded_while_the_desk_acts(twilio, ivr, clock)
    reached, release = pause(monkeypatch, FloorRepository, "stranded")
    swept = []
    sweep = threading.Thread(target=lambda: swept.append(ivr.floor.sweep_stranded()))
    sweep.start()
    assert reached.wait(10)
    Desk.of(ivr).update(lost["ticket"], status="callback_requested")
    release.set()
    sweep.join(15)
    assert status(ivr, lost["ticket"]) == "callback_requested"
    assert swept == [0]
