"""Many workers, one database: duplicate and concurrent webhooks, steps served by
different server processes, and SQLite under four gunicorn workers."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select, text

from ivr import create_app
from ivr.storage.models import Call, OutboxMessage, Ticket
from ivr.sim.simulator import HttpTransport, Simulator, new_call_sid

from ..support import BUSINESS_OWNER, CALLER, CONFIG, PEPPER, TOKEN, US_LINE, TwilioClient
from .servers import Gunicorn, prepare_database

PUBLIC = "https://ivr.example.com"
OWNER_DIGITS = ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "1"]


def count(storage, model):
    with storage.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def post_together(clients, path, params, copies):
    """The same signed webhook, released at one moment from several threads."""
    barrier = threading.Barrier(copies)

    def send(i):
        client = clients[i % len(clients)]
        barrier.wait()
        return client.post(path, **params)

    with ThreadPoolExecutor(copies) as pool:
        return list(pool.map(send, range(copies)))


def test_the_same_webhook_at_the_same_moment_on_two_workers_makes_one_ticket(settings, clock, app):
    second = create_app(settings, clock=clock)  # another worker: its own engine and pool
    clients = [TwilioClient(app), TwilioClient(second)]
    sid = new_call_sid()
    params = clients[0].call_params(sid)
    first = post_together(clients, "/voice", params, 6)
    assert len({r.get_data() for r in first}) == 1 and all(r.status_code == 200 for r in first)
    for step, digits in (("/voice/menu", "2"), ("/voice/pmi", BUSINESS_OWNER[0])):
        clients[0].post(step, **params, Digits=digits)
    keyed = post_together(clients, "/voice/host-key", {**params, "Digits": BUSINESS_OWNER[1]}, 6)
    assert len({r.get_data() for r in keyed}) == 1
    routed = post_together(clients, "/voice/priority", {**params, "Digits": "2"}, 8)
    assert {r.status_code for r in routed} == {200}
    assert len({r.get_data() for r in routed}) == 1
    storage = app.extensions["ivr"].storage
    assert count(storage, Ticket) == 1 and count(storage, OutboxMessage) == 1
    assert count(storage, Call) == 1
    second.extensions["ivr"].storage.dispose()


def Server(database_url, tmp_path, workers=1, name="server") -> Gunicorn:
    """The app under gunicorn, signing against the public URL."""
    return Gunicorn(tmp_path, database_url, workers=workers, name=name, IVR_PUBLIC_URL=PUBLIC)


@pytest.fixture
def prepared(database_url):
    storage = prepare_database(database_url)
    yield storage
    storage.dispose()


class Alternating:
    """Sends each request of a call to the next server in turn."""

    def __init__(self, urls):
        self.transports = [HttpTransport(url) for url in urls]
        self.base_url = PUBLIC
        self.turn = 0
        self.seen = []

    def post(self, path, params, headers):
        transport = self.transports[self.turn % len(self.transports)]
        self.turn += 1
        self.seen.append(transport.base_url)
        return transport.post(path, params, headers)


def test_any_worker_serves_any_step_of_a_call(database_url, prepared, tmp_path):
    servers = [Server(database_url, tmp_path, name="a"), Server(database_url, tmp_path, name="b")]
    try:
        results = []
        for n in range(6):
            transport = Alternating([s.url for s in servers[n % 2:] + servers[:n % 2]])
            result = Simulator(transport, TOKEN).call(US_LINE, CALLER, OWNER_DIGITS)
            assert len(set(transport.seen)) == 2
            results.append(result)
    finally:
        for server in servers:
            server.stop()
    assert [r.outcome for r in results] == ["routed"] * 6
    with prepared.transaction() as session:
        numbers = set(session.scalars(select(Ticket.number)))
    assert numbers == {r.ticket for r in results}


def test_sqlite_takes_a_thousand_tickets_from_four_workers_at_once(tmp_path):
    database = tmp_path / "ivr.db"
    url = f"sqlite:///{database}"
    storage = prepare_database(url)
    server = Server(url, tmp_path, workers=4, name="sqlite")
    try:
        def one_call(n):
            simulator = Simulator(HttpTransport(server.url), TOKEN, signing_base=PUBLIC)
            return simulator.call(US_LINE, f"+1202555{n:04d}", OWNER_DIGITS).outcome

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(one_call, range(1000)))
        scraped = requests.get(server.url + "/metrics", timeout=5).text
    finally:
        server.stop()
    log = server.output()
    assert outcomes.count("routed") == 1000, log[-2000:]
    assert "database is locked" not in log and "Traceback" not in log
    assert count(storage, Ticket) == 1000
    # Every worker's counts add up on one scrape (prometheus multiprocess mode).
    from prometheus_client.parser import text_string_to_metric_families

    routed = sum(sample.value for family in text_string_to_metric_families(scraped)
                 for sample in family.samples
                 if sample.name == "ivr_calls_total" and sample.labels["outcome"] == "routed")
    assert routed == 1000
    with storage.engine.connect() as connection:
        assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    storage.dispose()


def _signed_post(url, path, params):
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    return requests.post(url + path, data=params, headers={"X-Twilio-Signature": signature},
                         timeout=30)


def _at_the_host_key_prompt(url, caller, pmi):
    """A new call from ``caller`` that has typed ``pmi``: its webhook parameters."""
    params = {"CallSid": new_call_sid(), "AccountSid": "AC" + "0" * 32, "To": US_LINE,
              "From": caller}
    for path, digits in (("/voice", None), ("/voice/menu", "2"), ("/voice/pmi", pmi)):
        response = _signed_post(url, path, {**params, **({"Digits": digits} if digits else {})})
        assert response.status_code == 200
    return params


def _burst(url, calls, key):
    """Every call's host key, released at one moment."""
    barrier = threading.Barrier(len(calls))

    def send(params):
        barrier.wait()
        return _signed_post(url, "/voice/host-key", {**params, "Digits": key})

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(send, calls))


@pytest.mark.parametrize("limit", ["pmi", "caller"])
def test_a_burst_of_simultaneous_host_keys_over_four_workers_has_exactly_the_limit_judged(
        database_url, prepared, tmp_path, limit):
    """40 wrong keys at one instant, for one PMI from 40 callers (or from one caller for
    40 PMIs): exactly the limit's number is judged, every other one is refused as locked,
    and the refusals all read the same."""
    from ivr.config import load_config
    from ivr.domain.phones import pmi_lockout_key
    from ivr.security import HostKeyHasher
    from ivr.storage.models import Lockout

    policy = load_config(CONFIG).lockout
    server = Server(database_url, tmp_path, workers=4, name=f"burst-{limit}")
    try:
        if limit == "pmi":
            calls = [_at_the_host_key_prompt(server.url, f"+1202555{n:04d}", BUSINESS_OWNER[0])
                     for n in range(40)]
            digest = HostKeyHasher(PEPPER.encode()).pmi_lockout_digest(BUSINESS_OWNER[0])
            key, threshold = pmi_lockout_key(digest), policy.pmi_failures
        else:
            calls = [_at_the_host_key_prompt(server.url, "+12025550777", f"55590{n:05d}")
                     for n in range(40)]
            key, threshold = "caller:+12025550777", policy.caller_failures
        answers = _burst(server.url, calls, "7401935")
    finally:
        server.stop()
    assert {a.status_code for a in answers} == {200}, server.output()[-2000:]
    assert len({a.content for a in answers}) == 1  # judged or refused: one answer
    with prepared.transaction() as session:
        counter = session.get(Lockout, key)
        assert counter.lock_count == 1 and counter.failures == 0
        assert counter.attempts_while_locked == 40 - threshold
