"""The storage layer under the webhooks: statements per step, reads that never block a
call, replayed and oversized webhooks, and the unit of work itself."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, select

from ivr import create_app
from ivr.domain.phones import pmi_lockout_key
from ivr.storage.models import Call, Lockout, OutboxMessage, Ticket

from ..conftest import POSTGRES_URL
from ..support import (BUSINESS_OWNER, CALLER, TwilioClient, end_backends, postgres_admin,
                       spoken, twiml, until_waiting_for_a_lock)

# Statements each webhook step may issue (BEGIN excluded; COMMIT is not a statement).
# The same figures are in README.md, "Reliability and scale".
BUDGET = {
    "incoming": 2,         # load the call (with its ticket) + store it
    "menu": 2,             # load + save
    "pmi": 2,              # load + save
    "host-key": 5,         # load + directory entry + claim both counters + settle + save
    "priority": 4,         # load + ticket + text message + save
    "wait": 3,             # load (read-only); the caller's place among everyone waiting
                           # and the recent pick-ups of their group (the expected wait)
    "wait-choice": 3,      # load + move the ticket + text message
    "queue-result": 3,     # load + record the result + move the ticket
    "status": 1,           # one conditional update
    "status-abandoned": 2,  # the end of a call that never got an outcome
    "status-stale": 4,     # out of date: both updates pass it over, then the call is
                           # found (PostgreSQL asks STATUS again first, see record_status)
    "status-unknown": 7,   # no call yet: as stale, then the call stored and the status
                           # applied (its end marked abandoned)
    "replayed": 1,         # a repeated request for a step already answered: load only
}


@contextlib.contextmanager
def counting(storage):
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith("BEGIN"):
            statements.append(statement)

    event.listen(storage.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(storage.engine, "before_cursor_execute", count)


def step(twilio, sid, path, digits=None, caller=CALLER, **extra):
    params = {**twilio.call_params(sid, caller=caller), **extra}
    if digits is not None:
        params["Digits"] = digits
    response = twilio.post(path, **params)
    assert response.status_code == 200
    return response


def within_budget(ivr, name, send):
    with counting(ivr.storage) as statements:
        response = send()
    assert len(statements) <= BUDGET[name], (name, statements)
    assert statements, name  # every step reads the call at least: the count sees the SQL
    return response


def test_every_webhook_step_stays_within_its_statement_budget(twilio, ivr, call_sid):
    budget = lambda name, path, digits=None, **extra: within_budget(  # noqa: E731
        ivr, name, lambda: step(twilio, call_sid, path, digits, **extra))
    budget("incoming", "/voice")
    budget("replayed", "/voice")
    budget("menu", "/voice/menu", "2")
    budget("pmi", "/voice/pmi", BUSINESS_OWNER[0])
    budget("host-key", "/voice/host-key", "1111111")  # a wrong key: refused, counted
    budget("pmi", "/voice/pmi", BUSINESS_OWNER[0])
    budget("host-key", "/voice/host-key", BUSINESS_OWNER[1])
    budget("priority", "/voice/priority", "2")
    budget("replayed", "/voice/priority", "2")
    budget("wait", "/voice/wait", QueuePosition="1", AvgQueueTime="30")
    budget("wait-choice", "/voice/wait-choice", "1")
    budget("queue-result", "/voice/queue-result", QueueResult="leave", QueueTime="40")
    budget("status", "/voice/status", CallStatus="completed", CallDuration="80",
           SequenceNumber="5")
    budget("status-stale", "/voice/status", CallStatus="completed", CallDuration="80",
           SequenceNumber="4")
    other = "CA" + "e" * 32
    within_budget(ivr, "incoming", lambda: step(twilio, other, "/voice"))
    within_budget(ivr, "status-abandoned", lambda: step(
        twilio, other, "/voice/status", CallStatus="completed", CallDuration="3"))
    within_budget(ivr, "status-unknown", lambda: step(
        twilio, "CA" + "d" * 32, "/voice/status", CallStatus="completed", CallDuration="3"))


def test_a_desk_read_held_open_does_not_delay_a_call(twilio, ivr, app, call_sid):
    """A report reading for a long time (held open here) must not take the write lock:
    a new call is answered while the read is still in progress, well within the 5 s a
    write would wait for a lock."""
    with ivr.storage.unit_of_work(readonly=True) as uow:
        rows, total = uow.desk.tickets()  # the read has its snapshot now
        started = time.monotonic()
        answer = twiml(step(twilio, call_sid, "/voice"))
        waited = time.monotonic() - started
        assert uow.connection is not None  # still inside the read
    assert answer.find("Gather") is not None  # the menu, not the fallback apology
    assert waited < 2.5
    with ivr.storage.transaction() as session:
        assert session.get(Call, call_sid) is not None


def test_health_and_metrics_answer_while_a_call_holds_the_write_lock(twilio, ivr, app):
    """/healthz and /metrics read without asking for the write lock, so they neither wait
    for a webhook's transaction nor make one wait."""
    held, release = threading.Event(), threading.Event()

    def writer():
        with ivr.storage.unit_of_work() as uow:
            uow.calls.load("CA" + "0" * 32)  # inside a write transaction
            held.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(10)
        client = app.test_client()
        assert client.get("/healthz").get_json()["database"] == "ok"
        assert client.get("/metrics").status_code == 200
        assert thread.is_alive()  # answered while the write was still open
    finally:
        release.set()
        thread.join()


def test_a_write_in_a_read_only_unit_of_work_is_refused_by_postgresql_or_never_locks_sqlite(ivr):
    with ivr.storage.unit_of_work(readonly=True) as reader:
        with ivr.storage.unit_of_work() as writer:  # not blocked by the open read
            writer.outbox.queue(call_sid="CA" + "1" * 32, template="t", to_number=CALLER,
                                body="b", now=ivr.service.clock())
        assert reader.outbox.depth() in (0, 1)  # its snapshot may predate the write
    with ivr.storage.unit_of_work(readonly=True) as reader:
        assert reader.outbox.depth() == 1


def drop_pooled_connections(ivr) -> None:
    """Terminate, on the server, the backends of the connections the app's pool keeps."""
    assert ivr.storage.engine.pool.checkedin() >= 1  # kept for reuse
    with postgres_admin(POSTGRES_URL) as admin:
        assert end_backends(admin, ivr.storage.engine.url.query["application_name"]) >= 1


def test_the_orm_transactions_of_the_desk_and_the_sender_survive_a_dropped_connection(
        twilio, ivr, call_sid):
    """storage.transaction() (sign-in, the sender, Zendesk's hook) begins like a webhook's
    unit of work: a dropped connection is replaced, not reported as the database down."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    step(twilio, call_sid, "/voice")
    drop_pooled_connections(ivr)
    with ivr.storage.transaction() as session:
        assert session.get(Call, call_sid) is not None


def test_a_connection_the_server_dropped_is_replaced_before_the_next_webhook(
        twilio, ivr, call_sid):
    """PostgreSQL restarted, or closed idle connections: the pool still holds their
    sockets. The next webhook's BEGIN finds out, and the unit of work starts again on a
    fresh connection, so the caller hears the next prompt rather than the apology."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    step(twilio, call_sid, "/voice")
    drop_pooled_connections(ivr)
    answer = twiml(step(twilio, call_sid, "/voice/menu", "2"))
    assert answer.find("Gather").get("action").split("?")[0] == "/voice/pmi"
    with ivr.storage.unit_of_work(readonly=True) as uow:
        assert uow.calls.load(call_sid).state.step.value == "pmi"


def test_driver_level_sql_fails_as_sqlalchemy_would_with_its_parameters_hidden(ivr):
    """The hot path's statements run on the DB-API cursor; their errors still arrive as
    SQLAlchemy's exceptions (the outage path catches those) with the parameters hidden,
    and the whole unit of work is rolled back."""
    from sqlalchemy.exc import IntegrityError

    from ivr.storage.sql import Sql

    incomplete = Sql("INSERT INTO calls (call_sid, region) VALUES (:sid, :region)")
    with pytest.raises(IntegrityError) as raised:
        with ivr.storage.unit_of_work() as uow:
            uow.outbox.queue(call_sid="CA" + "7" * 32, template="t", to_number=CALLER,
                             body="b", now=ivr.service.clock())
            incomplete.run(uow.connection, {"sid": "CA" + "7" * 32, "region": "r"})
    assert "SQL parameters hidden" in str(raised.value)
    with ivr.storage.unit_of_work(readonly=True) as uow:  # rolled back as a whole
        assert uow.outbox.depth() == 0


def test_a_connection_dropped_inside_a_webhook_is_discarded_and_reported_as_down(ivr):
    """The server goes away between the BEGIN and a statement: the statement fails as
    DATABASE_DOWN (the caller gets the fallback), and that connection is never reused."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    from ivr.storage import DATABASE_DOWN

    name = ivr.storage.engine.url.query["application_name"]
    with pytest.raises(DATABASE_DOWN) as raised:
        with ivr.storage.unit_of_work() as uow:
            with postgres_admin(POSTGRES_URL) as admin:
                assert end_backends(admin, name) == 1
            uow.calls.load("CA" + "8" * 32)
    assert raised.value.connection_invalidated
    with ivr.storage.unit_of_work(readonly=True) as uow:  # a fresh connection
        assert uow.calls.load("CA" + "8" * 32) is None
    with pytest.raises(DATABASE_DOWN):  # closed on this side: no cursor to be had
        with ivr.storage.unit_of_work() as uow:
            uow.connection.connection.dbapi_connection.close()
            uow.calls.load("CA" + "8" * 32)


def routed(twilio, sid, caller=CALLER):
    step(twilio, sid, "/voice", caller=caller)
    step(twilio, sid, "/voice/menu", "2", caller=caller)
    step(twilio, sid, "/voice/pmi", BUSINESS_OWNER[0], caller=caller)
    step(twilio, sid, "/voice/host-key", BUSINESS_OWNER[1], caller=caller)
    return twiml(step(twilio, sid, "/voice/priority", "2", caller=caller))


def ticket_of(ivr, sid):
    with ivr.storage.transaction() as session:
        return session.scalars(select(Ticket).where(Ticket.call_sid == sid)).one()


@pytest.mark.parametrize("replayed", ["/voice/priority", "/voice"])
def test_a_finished_calls_replayed_webhook_changes_nothing_and_enqueues_no_one(
        twilio, ivr, call_sid, replayed):
    assert routed(twilio, call_sid).find("Enqueue") is not None
    step(twilio, call_sid, "/voice/queue-result", QueueResult="hangup", QueueTime="30")
    step(twilio, call_sid, "/voice/status", CallStatus="completed", CallDuration="90")
    assert ticket_of(ivr, call_sid).status == "open"
    with ivr.storage.transaction() as session:
        before = session.get(Call, call_sid).updated_at
    answer = twiml(step(twilio, call_sid, replayed, "2"))
    assert answer.find("Enqueue") is None and answer.find("Hangup") is not None
    assert ticket_of(ivr, call_sid).status == "open"
    with ivr.storage.transaction() as session:
        assert session.get(Call, call_sid).updated_at == before


def test_a_caller_with_a_long_extension_is_routed_and_texted(twilio, ivr, call_sid):
    caller = "+14155550100;ext=12345678901234567890"
    assert len(caller) == 37
    assert routed(twilio, call_sid, caller=caller).find("Enqueue") is not None
    assert ticket_of(ivr, call_sid).status == "in_queue"
    with ivr.storage.transaction() as session:
        message = session.scalars(select(OutboxMessage)
                                  .where(OutboxMessage.call_sid == call_sid)).one()
        assert message.to_number == caller


@pytest.mark.parametrize("value", [str(2**31), str(2**63), str(2**63 + 5), "9" * 40])
def test_counters_beyond_any_column_are_kept_at_its_bound_not_refused(
        twilio, ivr, call_sid, value):
    routed(twilio, call_sid)
    answer = twiml(step(twilio, call_sid, "/voice/queue-result", QueueResult="bridged",
                        QueueTime=value))
    assert answer.find("Enqueue") is None  # not sent to the fallback queue
    step(twilio, call_sid, "/voice/status", CallStatus="completed", CallDuration=value,
         SequenceNumber=value)
    with ivr.storage.transaction() as session:
        call = session.get(Call, call_sid)
        assert call.queue_result == "bridged" and call.twilio_status == "completed"
        assert call.queue_seconds == call.duration_seconds == 2**31 - 1
        assert call.status_sequence == min(int(value), 2**63 - 1)
    assert ticket_of(ivr, call_sid).status == "connected"


def test_twenty_parallel_copies_of_a_wrong_host_key_count_once_and_all_ask_for_the_pmi(
        twilio, ivr, app, call_sid):
    """The promise in README ("Duplicates"): the copies change the call once, the first
    applied gets the step's answer and the others the prompt the call now waits for."""
    second = create_app(ivr.settings, clock=ivr.service.clock)  # another worker
    clients = [twilio, TwilioClient(second)]
    step(twilio, call_sid, "/voice")
    step(twilio, call_sid, "/voice/menu", "2")
    step(twilio, call_sid, "/voice/pmi", BUSINESS_OWNER[0])
    params = {**twilio.call_params(call_sid), "Digits": "1111111"}
    barrier = threading.Barrier(20)

    def send(n):
        barrier.wait()
        return clients[n % 2].post("/voice/host-key", **params)

    with ThreadPoolExecutor(20) as pool:
        answers = [twiml(r) for r in pool.map(send, range(20))]
    second.extensions["ivr"].storage.dispose()
    actions = {a.find("Gather").get("action").split("?")[0] for a in answers}
    assert actions == {"/voice/pmi"}
    with ivr.storage.transaction() as session:
        assert session.get(Call, call_sid).auth_failures == 1
        pmi = pmi_lockout_key(ivr.hasher.pmi_lockout_digest(BUSINESS_OWNER[0]))
        assert session.get(Lockout, pmi).failures == 1
    bodies = [ET.tostring(a) for a in answers]
    first = [b for b in bodies if bodies.count(b) == 1]
    # One copy was judged (the refusal with the prompt), the 19 others get the prompt alone.
    assert len(set(bodies)) == 2 and len(first) == 1
    assert "couldn't verify" in " ".join(spoken(ET.fromstring(first[0])))


def test_a_pmi_typed_before_the_call_ended_is_not_kept_once_it_ends(twilio, ivr, call_sid):
    """A caller who hangs up at the host-key prompt leaves no PMI behind in the call record."""
    step(twilio, call_sid, "/voice")
    step(twilio, call_sid, "/voice/menu", "2")
    step(twilio, call_sid, "/voice/pmi", BUSINESS_OWNER[0])
    with ivr.storage.transaction() as session:
        assert session.get(Call, call_sid).pending_pmi == BUSINESS_OWNER[0]
    step(twilio, call_sid, "/voice/status", CallStatus="completed", CallDuration="20",
         SequenceNumber="3")
    with ivr.storage.transaction() as session:
        call = session.get(Call, call_sid)
        assert call.pending_pmi is None and call.outcome == "abandoned"


def test_a_statement_knows_from_its_text_whether_it_gives_rows_back():
    from ivr.storage.sql import Sql

    assert Sql("SELECT id FROM calls WHERE call_sid = :sid").returns_rows
    assert Sql("UPDATE calls SET step = :step WHERE call_sid = :sid RETURNING region"
               ).returns_rows
    assert not Sql("UPDATE calls SET step = :step WHERE call_sid = :sid").returns_rows
    assert not Sql("INSERT INTO calls (call_sid) VALUES (:sid) ON CONFLICT (call_sid) "
                   "DO NOTHING").returns_rows
    with pytest.raises(ValueError):  # one dialect's text may not return what the other's does
        Sql("UPDATE calls SET step = :step", "UPDATE calls SET step = :step RETURNING step")


def test_a_connection_set_to_autocommit_sends_no_begin_and_the_next_user_gets_one(ivr):
    """An AUTOCOMMIT connection (``isolation_level``) runs each statement on its own: the
    dialect, which sends BEGIN itself, must leave it out there and only there."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's transactions are begun by its own hook")
    from psycopg.pq import TransactionStatus

    def status(connection):
        return connection.connection.dbapi_connection.info.transaction_status

    with ivr.storage.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        with connection.begin():
            connection.exec_driver_sql("SELECT 1")
            assert status(connection) is TransactionStatus.IDLE
    with ivr.storage.unit_of_work() as uow:  # the pool's connection, back to transactions
        uow.calls.load("CA" + "9" * 32)
        assert status(uow.connection) is TransactionStatus.INTRANS


def test_a_hang_up_while_the_call_gets_its_outcome_still_ends_the_call(twilio, ivr, call_sid):
    """The caller hangs up just as a step gives the call its outcome (PostgreSQL, two
    transactions at once): the final status waits for that step's row lock and is then
    applied to the call as it now stands, not dropped as if it were out of date."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    from ivr.domain.flow import Outcome, Step

    step(twilio, call_sid, "/voice")
    step(twilio, call_sid, "/voice/menu", "2")
    now = ivr.service.clock()
    with ivr.storage.unit_of_work() as uow:  # a step about to end the call, not committed
        record = uow.calls.load(call_sid)
        record.state.step, record.state.outcome = Step.DONE, Outcome.TRANSFERRED
        uow.calls.save(record, record.state, record.language, now)
        ended = threading.Thread(target=ivr.service.status, args=({
            **twilio.call_params(call_sid), "CallStatus": "completed", "CallDuration": "9",
            "SequenceNumber": "4"},))
        ended.start()
        until_waiting_for_a_lock(ivr, ended, "the status callback")
    ended.join(10)
    with ivr.storage.transaction() as session:
        call = session.get(Call, call_sid)
        assert (call.twilio_status, call.duration_seconds, call.outcome) == \
            ("completed", 9, "transferred")
        assert call.ended_at is not None


def test_time_limits_the_operator_sets_in_the_database_urls_options_are_kept(database_url):
    """The service's lock and statement limits are defaults: an operator's own
    ``-c statement_timeout=`` or ``-c lock_timeout=`` in the URL's options is the one in
    force, not silently replaced by them; and their other options still apply."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's session settings")
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from ivr.storage import Storage

    def settings(url):
        storage = Storage(url)
        try:
            with storage.reading() as session:
                return [session.execute(text(f"SHOW {name}")).scalar()
                        for name in ("statement_timeout", "lock_timeout", "search_path")]
        finally:
            storage.dispose()

    url = make_url(database_url)
    schema = url.query["options"].removeprefix("-csearch_path=")
    assert settings(database_url) == ["8s", "5s", schema]
    own = url.update_query_dict({"options": url.query["options"]
                                 + " -c statement_timeout=20s -c lock_timeout=2s"})
    assert settings(own.render_as_string(hide_password=False)) == ["20s", "2s", schema]
