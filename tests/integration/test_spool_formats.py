"""Spool records outlive a deploy: a spool written by this release and one written in the
earlier format (no version field) both replay, and a status of a call the database never
saw is recorded, not dropped."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from ivr.storage.models import Account, Call, OutboxMessage, Ticket
from ivr.voice.outage import (FORMAT, SpooledCallbackAnswer, SpooledCallbackStatus, SpooledStatus,
                              decode, encode)

from ivr.sim.simulator import Simulator, WsgiTransport

from ..support import BUSINESS_OWNER, CALLER, ROOT, TOKEN, US_LINE

SAMPLES = ROOT / "tests" / "data" / "spool"


def replay_sample(ivr, name):
    spool = ivr.service.spool
    spool.folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / name, spool.path)
    return spool.replay(ivr.service.replay)


@pytest.mark.parametrize("name, sid, number, ticket_status, outcome, queue_result", [
    ("format-1.jsonl", "CA10000000000000000000000000000001", "41234567", "open", "routed",
     "hangup"),
    ("format-2.jsonl", "CA20000000000000000000000000000001", "52345678", "connected", "routed",
     "bridged"),
])
def test_a_spool_of_either_format_replays_every_record(ivr, name, sid, number, ticket_status,
                                                       outcome, queue_result):
    result = replay_sample(ivr, name)
    assert (result.read, result.applied, result.unreadable) == (4, 4, 0)
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one()
        account = session.get(Account, 1)
        call = session.get(Call, sid)
        texts = session.scalars(select(OutboxMessage).where(OutboxMessage.call_sid == sid)).all()
    assert ticket.number == number and ticket.status == ticket_status
    assert ticket.account_id == account.account_id
    assert call.outcome == outcome and call.twilio_status == "completed"
    assert call.queue_result == queue_result
    assert len(texts) == 1
    again = replay_sample(ivr, name)  # a second replay of the same records doubles nothing
    assert (again.applied, again.already_present) == (0, 4)


def test_a_spoken_number_taken_meanwhile_is_replaced_and_the_text_gives_the_new_one(
        app, ivr, caplog):
    """The outage number is derived from the call; one ticket in 90 million per stored
    ticket finds it taken when the spool is replayed."""
    result = Simulator(WsgiTransport(app), TOKEN).call(
        US_LINE, CALLER, ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "2"])
    with ivr.storage.transaction() as session:
        session.scalars(select(Ticket).where(Ticket.number == result.ticket)).one() \
            .number = "52345678"  # the number the spooled caller heard
    replay_sample(ivr, "format-2.jsonl")
    sid = "CA20000000000000000000000000000001"
    with ivr.storage.transaction() as session:
        mine = session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one()
        (text,) = session.scalars(select(OutboxMessage.body)
                                  .where(OutboxMessage.call_sid == sid)).all()
    assert mine.number != "52345678"
    assert text == f"Ticket {mine.number} logged."
    assert f"ticket 52345678, spoken during the outage, is stored as {mine.number}" \
        in caplog.text


@pytest.mark.parametrize("name, sid, region", [
    ("format-1.jsonl", "CA10000000000000000000000000000002", "unknown"),
    ("format-2.jsonl", "CA20000000000000000000000000000002", "United Kingdom"),
])
def test_the_status_of_a_call_answered_during_the_outage_is_recorded(ivr, name, sid, region):
    replay_sample(ivr, name)
    with ivr.storage.transaction() as session:
        call = session.get(Call, sid)
    assert call is not None and call.region == region
    assert call.twilio_status == "completed" and call.outcome == "abandoned"
    assert call.ended_at is not None


def test_records_round_trip_and_a_newer_format_is_refused_not_misread():
    record = decode({"kind": "status", "call_sid": "CA" + "3" * 32, "status": "busy",
                     "duration": None, "sequence": None, "at": "2026-11-25T10:00:00+00:00"})
    assert isinstance(record, SpooledStatus) and record.to is None
    assert decode(encode(record)) == record
    assert encode(record)["v"] == FORMAT
    with pytest.raises(ValueError):
        decode({**encode(record), "v": FORMAT + 1})
    answer = decode({"kind": "callback_answer", "attempt": "7", "v": FORMAT,
                     "at": "2026-11-25T10:00:00+00:00"})
    assert isinstance(answer, SpooledCallbackAnswer) and answer.attempt == 7
    assert decode(encode(answer)) == answer
    leg_end = decode({"kind": "callback_status", "attempt": "7", "leg": "customer",
                      "status": "completed", "v": FORMAT, "at": "2026-11-25T10:00:00+00:00"})
    assert isinstance(leg_end, SpooledCallbackStatus) and leg_end.attempt == 7
    assert leg_end.call_sid is None and decode(encode(leg_end)) == leg_end
