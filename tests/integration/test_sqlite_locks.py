"""SQLite's one write lock between workers: another worker's write makes a webhook wait,
the lock ends with its transaction however it ends, and a wait past the limit is the
database being unreachable (the outage path), never a lost request."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from ivr.storage import DATABASE_DOWN, Storage, engine


@pytest.fixture
def sqlite_url(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    return database_url


@pytest.fixture
def worker(sqlite_url):
    """Another worker of the same deployment: its own engine on the same file."""
    storage = Storage(sqlite_url)
    yield storage
    storage.dispose()


@pytest.fixture
def short_wait(monkeypatch, app):
    """Connections opened from now on wait 0.3 s for the lock instead of 5 s."""
    monkeypatch.setattr(engine, "LOCK_WAIT_SECONDS", 0.3)
    app.extensions["ivr"].storage.engine.dispose()


def make_table(storage):
    with storage.unit_of_work() as uow:
        uow.connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS n (v INTEGER)")


def test_a_writer_waits_for_another_workers_write_then_goes_on(app, ivr, worker, sqlite_url):
    make_table(worker)
    held = threading.Event()
    release = threading.Event()

    def hold():
        with worker.unit_of_work() as uow:
            uow.connection.exec_driver_sql("INSERT INTO n VALUES (1)")
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    done = threading.Event()

    def write():
        with ivr.storage.unit_of_work() as uow:
            uow.connection.exec_driver_sql("INSERT INTO n VALUES (2)")
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.2)  # the lock is still the other worker's
    with ivr.storage.unit_of_work(readonly=True) as uow:  # readers never queue
        assert uow.connection.exec_driver_sql("SELECT count(*) FROM n").scalar() == 0
    release.set()
    assert done.wait(5)
    holder.join(5)
    writer.join(5)
    with ivr.storage.unit_of_work(readonly=True) as uow:
        assert sorted(v for (v,) in uow.connection.exec_driver_sql("SELECT v FROM n")) == [1, 2]


def test_the_lock_ends_with_its_transaction_committed_or_rolled_back(worker, sqlite_url,
                                                                     short_wait):
    make_table(worker)
    other = Storage(sqlite_url)
    try:
        with pytest.raises(ZeroDivisionError):
            with other.unit_of_work() as uow:
                uow.connection.exec_driver_sql("INSERT INTO n VALUES (1)")
                1 / 0
        for _ in range(3):
            with worker.unit_of_work() as uow:  # would time out if the lock were kept
                uow.connection.exec_driver_sql("INSERT INTO n VALUES (2)")
            with other.unit_of_work() as uow:
                uow.connection.exec_driver_sql("INSERT INTO n VALUES (3)")
        with worker.unit_of_work(readonly=True) as uow:
            assert uow.connection.exec_driver_sql("SELECT count(*) FROM n").scalar() == 6
    finally:
        other.dispose()


def test_a_wait_past_the_limit_is_the_database_being_unreachable(worker, sqlite_url,
                                                                   short_wait):
    make_table(worker)
    other = Storage(sqlite_url)
    try:
        with other.unit_of_work(readonly=True) as uow:  # the wait the limit sets
            assert uow.connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 300
        with worker.unit_of_work():
            started = time.monotonic()
            with pytest.raises(OperationalError, match="database is locked") as raised:
                with other.unit_of_work():
                    pass
            assert isinstance(raised.value, DATABASE_DOWN)
            assert time.monotonic() - started >= 0.3  # it waited before giving up
    finally:
        other.dispose()


def test_a_status_callback_during_a_long_write_elsewhere_is_spooled_not_lost(
        app, ivr, twilio, call_sid, worker, short_wait):
    twilio.post("/voice", **twilio.call_params(call_sid))
    params = {**twilio.call_params(call_sid), "CallStatus": "completed", "CallDuration": "9"}
    with worker.unit_of_work():
        assert twilio.post("/voice/status", **params).status_code == 200
    assert ivr.service.spool.depth() == 1
    assert ivr.service.spool.replay(ivr.service.replay).applied == 1
    with ivr.storage.unit_of_work(readonly=True) as uow:
        assert uow.calls.load(call_sid, lock=False).values["twilio_status"] == "completed"


def test_the_wal_is_checkpointed_by_a_thread_of_its_own_not_by_a_webhooks_commit(
        sqlite_url, app, ivr, twilio, call_sid):
    """A commit that crossed SQLite's 1,000-page threshold used to copy the WAL back into
    the database file itself (5-50 ms for that caller). A thread checkpoints instead; a
    connection does so itself only past a limit far beyond it."""
    storage = ivr.storage
    with storage.unit_of_work(readonly=True) as uow:
        limit = uow.connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert limit == engine.WAL_LIMIT_PAGES > 1000
    for step, digits in (("/voice", None), ("/voice/menu", "2")):
        params = {**twilio.call_params(call_sid), **({"Digits": digits} if digits else {})}
        assert twilio.post(step, **params).status_code == 200
    checkpointer = storage.checkpointer
    busy, frames, done = checkpointer.run_once()
    assert busy == 0 and frames > 0 and done == frames  # every frame copied back
    runs = checkpointer.runs
    deadline = time.monotonic() + 10
    while checkpointer.runs == runs:  # the thread's own turn comes
        assert time.monotonic() < deadline, "the checkpoint thread never ran"
        time.sleep(0.05)
    storage.dispose()
    checkpointer.thread.join(5)
    assert not checkpointer.thread.is_alive()
