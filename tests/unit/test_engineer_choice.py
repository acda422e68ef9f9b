"""The choice rule of the engineer line: priority first, then the longest wait, within the
queue groups and languages an engineer serves."""

import datetime as dt

from ivr.domain.engineers import (
    Serves,
    Waiting,
    customer_outcome,
    engineer_outcome,
    position,
    queue_name,
    ranked,
)

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def waiting(ticket_id, priority, minutes_ago, group="support-us", language="en-US"):
    return Waiting(ticket_id, priority, T0 - dt.timedelta(minutes=minutes_ago), group, language)


def test_priority_comes_before_the_wait_and_the_wait_breaks_ties():
    callers = [waiting(1, 3, 30), waiting(2, 1, 1), waiting(3, 1, 5), waiting(4, 4, 60)]
    assert [w.ticket_id for w in ranked(Serves(), callers)] == [3, 2, 1, 4]


def test_an_engineer_gets_only_their_queues_and_languages():
    callers = [waiting(1, 1, 9, "support-us", "en-US"), waiting(2, 2, 9, "support-jp", "ja-JP"),
               waiting(3, 3, 9, "support-emea", "fr-FR"), waiting(4, 1, 9, None, "ja-JP")]
    assert [w.ticket_id for w in ranked(Serves(languages=("ja",)), callers)] == [2]
    assert [w.ticket_id for w in ranked(Serves(queues=("support-emea", "support-us")),
                                        callers)] == [1, 3]
    assert [w.ticket_id for w in ranked(Serves(), callers)] == [1, 2, 3]  # never a dial route


def test_a_position_counts_only_callers_of_the_same_group_taken_first():
    callers = [waiting(1, 4, 30), waiting(2, 1, 1), waiting(3, 2, 2, "support-jp")]
    assert [position(w, callers) for w in callers] == [2, 1, 1]


def test_a_queue_name_fits_twilios_limit_and_keeps_the_ticket():
    assert queue_name("support-jp", "12345678") == "support-jp.12345678"
    long = queue_name("x" * 64, "12345678")
    assert len(long) == 64 and long.endswith(".12345678")


def test_outcomes_of_the_two_legs():
    assert [customer_outcome(s) for s in ("answered", "completed", "busy", "ringing")] == [
        "answered", "answered", "busy", None]
    assert [engineer_outcome(s) for s in ("no-answer", "busy", "completed")] == [
        "engineer-no-answer", "engineer-busy", "engineer-declined"]
