"""Verification under attack: lockouts across calls, one answer for every failure, keyed
hashes, nothing secret in logs or tables, proxy-safe signatures."""

import itertools
import logging
import os
import statistics
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import inspect, select

from ivr import create_app, metrics
from ivr.desk.directory import Row, import_rows
from ivr.storage.models import Base, Lockout

from ..support import BUSINESS_OWNER, US_LINE, TwilioClient, twiml

WRONG = "7401935"
UNKNOWN_PMI = "5559999999"
MISTYPED_PMI = "5550100202"  # the business owner's PMI with its last digit mistyped


CALL_NUMBERS = itertools.count(1)


def caller(n: int) -> str:
    return f"+1202555{n:04d}"


class Caller:
    """Dials in and tries PMI/host-key pairs; returns the host-key answers."""

    def __init__(self, twilio, number=caller(1)):
        self.twilio = twilio
        self.number = number
        self.calls = 0

    def start(self):
        self.calls += 1
        self.sid = f"CA{next(CALL_NUMBERS):032x}"  # every call its own SID
        self._post("/voice")
        self._post("/voice/menu", "2")

    def _post(self, path, digits=None):
        params = self.twilio.call_params(self.sid, to=US_LINE, caller=self.number)
        if digits is not None:
            params["Digits"] = digits
        return self.twilio.post(path, **params)

    def attempt(self, pmi, key, new_call=True, timed=False):
        if new_call:
            self.start()
        self._post("/voice/pmi", pmi)
        started = time.perf_counter()
        response = self._post("/voice/host-key", key)
        elapsed = time.perf_counter() - started
        twiml(response)
        return (response.get_data(), elapsed) if timed else response.get_data()


def routed_to_priority(body: bytes) -> bool:
    """Whether the answer asks for a priority, i.e. the caller was verified."""
    gather = ET.fromstring(body).find("Gather")
    return gather is not None and gather.get("action").split("?")[0] == "/voice/priority"


def pmi_key(ivr, pmi):
    from ivr.domain.phones import pmi_lockout_key

    return pmi_lockout_key(ivr.hasher.pmi_lockout_digest(pmi))


def lock(ivr, key):
    with ivr.storage.transaction() as session:
        return session.get(Lockout, key)


def test_five_failures_across_calls_and_callers_lock_the_pmi_even_for_the_right_key(twilio, ivr, clock):
    for n in range(5):
        Caller(twilio, caller(n)).attempt(BUSINESS_OWNER[0], WRONG)
    refused = Caller(twilio, caller(50)).attempt(BUSINESS_OWNER[0], BUSINESS_OWNER[1])
    wrong = Caller(twilio, caller(51)).attempt(UNKNOWN_PMI, WRONG)
    assert refused == wrong
    entry = lock(ivr, pmi_key(ivr, BUSINESS_OWNER[0]))
    assert entry.locked_until == clock.now + __import__("datetime").timedelta(minutes=15)
    clock.advance(minutes=15, seconds=1)
    assert routed_to_priority(Caller(twilio, caller(52)).attempt(*BUSINESS_OWNER))


def test_each_further_lock_doubles_up_to_the_cap(twilio, ivr, clock):
    import datetime as dt

    lengths = []
    for round_ in range(9):
        for n in range(5):
            Caller(twilio, caller(round_ * 5 + n)).attempt(BUSINESS_OWNER[0], WRONG)
        entry = lock(ivr, pmi_key(ivr, BUSINESS_OWNER[0]))
        lengths.append(entry.locked_until - clock.now)
        clock.now = entry.locked_until + dt.timedelta(seconds=1)
    minutes = [int(d.total_seconds() // 60) for d in lengths]
    assert minutes == [15, 30, 60, 120, 240, 480, 960, 1440, 1440]


def test_a_success_resets_the_failure_count(twilio, ivr):
    for n in range(4):
        Caller(twilio, caller(n)).attempt(BUSINESS_OWNER[0], WRONG)
    assert routed_to_priority(Caller(twilio, caller(10)).attempt(*BUSINESS_OWNER))
    for n in range(4):
        Caller(twilio, caller(20 + n)).attempt(BUSINESS_OWNER[0], WRONG)
    assert routed_to_priority(Caller(twilio, caller(30)).attempt(*BUSINESS_OWNER))


def test_a_caller_failing_ten_times_in_an_hour_across_pmis_is_throttled(twilio, ivr, clock):
    attacker = Caller(twilio, caller(7))
    for n in range(10):
        attacker.attempt(f"55598{n:05d}", WRONG)
    assert not routed_to_priority(attacker.attempt(*BUSINESS_OWNER))
    assert routed_to_priority(Caller(twilio, caller(8)).attempt(*BUSINESS_OWNER))
    clock.advance(minutes=16)
    assert routed_to_priority(attacker.attempt(*BUSINESS_OWNER))


def test_failures_spread_over_more_than_the_window_do_not_throttle_a_caller(twilio, ivr, clock):
    slow = Caller(twilio, caller(9))
    for n in range(15):
        slow.attempt(f"55597{n:05d}", WRONG)
        clock.advance(minutes=7)
    assert lock(ivr, f"caller:{caller(9)}").locked_until is None
    assert routed_to_priority(slow.attempt(*BUSINESS_OWNER))


def test_parallel_failures_are_all_counted(app, ivr, clock):
    key = pmi_key(ivr, "5550000000")

    def fail():
        with ivr.storage.unit_of_work() as uow:
            counters = uow.lockouts.claim(key, "caller:withheld", clock())
            counters[key].fail(clock(), threshold=1000, window=None,
                                            lock_for=ivr.config.lockout.duration)
            uow.lockouts.settle(counters, clock())

    threads = [threading.Thread(target=fail) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lock(ivr, key).failures == 24


def test_parallel_failures_past_the_threshold_lock_once(app, ivr, clock):
    results = []
    key = pmi_key(ivr, "5550000001")

    def fail():
        with ivr.storage.unit_of_work() as uow:
            counters = uow.lockouts.claim(key, "caller:withheld", clock())
            results.append(counters[key].fail(
                clock(), threshold=5, window=None, lock_for=ivr.config.lockout.duration))
            uow.lockouts.settle(counters, clock())

    threads = [threading.Thread(target=fail) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = lock(ivr, key)
    assert results.count(True) == 2 and entry.lock_count == 2  # 12 failures: two locks of 5


def test_twenty_wrong_keys_for_one_pmi_at_the_same_instant_are_judged_five_at_most(app, ivr):
    """Twenty calls from twenty numbers, each at the host-key prompt for the same PMI, send
    their guesses at once: the threshold's five are judged, the rest meet the lock."""
    callers = []
    for n in range(20):
        one = Caller(TwilioClient(app), caller(500 + n))
        one.start()
        one._post("/voice/pmi", BUSINESS_OWNER[0])
        callers.append(one)

    def judged(result):
        return metrics.VERIFICATIONS.labels(result)._value.get()

    before = {result: judged(result) for result in ("failed", "passed", "locked")}
    start = threading.Barrier(len(callers))
    codes = []

    def guess(n, one):
        start.wait()
        codes.append(one._post("/voice/host-key", f"74019{n:02d}").status_code)

    threads = [threading.Thread(target=guess, args=item) for item in enumerate(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = {result: judged(result) - before[result] for result in before}
    assert codes == [200] * 20
    assert after == {"failed": 5, "passed": 0, "locked": 15}
    assert lock(ivr, pmi_key(ivr, BUSINESS_OWNER[0])).lock_count == 1


def test_operators_list_and_clear_locks(app, twilio, ivr, clock):
    for n in range(5):
        Caller(twilio, caller(n)).attempt(BUSINESS_OWNER[0], WRONG)
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["accounts", "locks"])
    assert f"PMI {BUSINESS_OWNER[0]}" in listed.output and "2026-11-25 12:15:00" in listed.output
    cleared = runner.invoke(args=["accounts", "unlock", BUSINESS_OWNER[0]])
    assert cleared.exit_code == 0 and "Unlocked" in cleared.output
    assert runner.invoke(args=["accounts", "locks"]).output.strip() == "No locks."
    assert routed_to_priority(Caller(twilio, caller(60)).attempt(*BUSINESS_OWNER))


def test_the_lockouts_table_names_no_pmi_a_caller_typed(twilio, ivr):
    """A wrong PMI is often a mistyped real one: anyone reading the table (or a backup)
    would learn which PMIs are being tried. Counters are kept under a keyed hash."""
    from ivr.security import HostKeyHasher

    Caller(twilio, caller(1)).attempt(MISTYPED_PMI, WRONG)
    Caller(twilio, caller(2)).attempt(BUSINESS_OWNER[0], WRONG)
    with ivr.storage.reading() as session:
        keys = set(session.scalars(select(Lockout.key)))
    assert not [key for key in keys if MISTYPED_PMI in key or BUSINESS_OWNER[0] in key]
    assert keys == {pmi_key(ivr, MISTYPED_PMI), pmi_key(ivr, BUSINESS_OWNER[0]),
                    f"caller:{caller(1)}", f"caller:{caller(2)}"}
    assert lock(ivr, pmi_key(ivr, MISTYPED_PMI)).failures == 1
    other = HostKeyHasher(b"another pepper").pmi_lockout_digest(MISTYPED_PMI)
    assert other != ivr.hasher.pmi_lockout_digest(MISTYPED_PMI)


def test_a_lock_on_a_pmi_not_in_the_directory_is_listed_without_its_digits_and_can_be_cleared(
        app, twilio, ivr):
    for n in range(5):
        Caller(twilio, caller(n)).attempt(MISTYPED_PMI, WRONG)
        Caller(twilio, caller(10 + n)).attempt(BUSINESS_OWNER[0], WRONG)
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["accounts", "locks"]).output
    names = [row.split("  ")[0] for row in listed.splitlines()[1:]]
    assert sorted(names) == ["PMI 5550100201", "a PMI not in the directory"], listed
    assert MISTYPED_PMI not in listed
    cleared = runner.invoke(args=["accounts", "unlock", MISTYPED_PMI])
    assert cleared.exit_code == 0
    assert cleared.output.strip() == f"Unlocked PMI {MISTYPED_PMI}."
    rows = runner.invoke(args=["accounts", "locks"]).output.splitlines()[1:]
    assert [row.split("  ")[0] for row in rows] == ["PMI 5550100201"]
    assert not routed_to_priority(Caller(twilio, caller(30)).attempt(*BUSINESS_OWNER))


def test_operators_can_clear_a_throttled_caller(app, twilio, ivr):
    attacker = Caller(twilio, caller(7))
    for n in range(10):
        attacker.attempt(f"55598{n:05d}", WRONG)
    runner = app.test_cli_runner()
    assert "caller …0007" in runner.invoke(args=["accounts", "locks"]).output
    runner.invoke(args=["accounts", "unlock", "--caller", caller(7)])
    assert routed_to_priority(attacker.attempt(*BUSINESS_OWNER))


def test_unlocking_a_pmi_that_only_ever_passed_says_there_was_nothing_to_clear(
        app, twilio, ivr, caplog):
    """A verified caller leaves a counter row with no failure and no lock: clearing it
    is not an unlock, and neither the output nor the log may say one happened."""
    assert routed_to_priority(Caller(twilio, caller(3)).attempt(*BUSINESS_OWNER))
    assert lock(ivr, pmi_key(ivr, BUSINESS_OWNER[0])) is not None
    caplog.set_level(logging.INFO, logger="ivr.accounts")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["accounts", "unlock", BUSINESS_OWNER[0]])
    assert result.exit_code == 0
    assert result.output.strip() == f"PMI {BUSINESS_OWNER[0]} had no lock or failures."
    assert not [r for r in caplog.records if r.name == "ivr.accounts"]
    result = runner.invoke(args=["accounts", "unlock", "--caller", caller(3)])
    assert result.output.strip() == "caller …0003 had no lock or failures."


def test_the_lock_withheld_callers_share_is_named_so_not_shown_as_an_empty_number(
        app, twilio, ivr):
    withheld = Caller(twilio, "anonymous")
    for n in range(10):
        withheld.attempt(f"55596{n:05d}", WRONG)
    runner = app.test_cli_runner()
    rows = runner.invoke(args=["accounts", "locks"]).output.splitlines()[1:]
    assert [row.split("  ")[0] for row in rows if not row.startswith("PMI")] == ["withheld callers"]
    cleared = runner.invoke(args=["accounts", "unlock", "--caller", "withheld"])
    assert cleared.output.strip() == "Unlocked withheld callers."
    again = runner.invoke(args=["accounts", "unlock", "--caller", "withheld"])
    assert again.output.strip() == "withheld callers had no lock or failures."


# -- one answer for every failure ----------------------------------------------------------


@pytest.fixture
def many_accounts(ivr):
    """125 extra users, so wrong-key tries never reach a lock."""
    rows = [Row(n, f"bulk-{n}", "business", f"user{n}@example.com", "owner", f"66600{n:05d}",
                "4820917") for n in range(125)]
    import_rows(rows, ivr.storage, ivr.hasher, "fixture")
    return [(row.pmi, row.host_key) for row in rows]


@pytest.fixture
def throttled(twilio, ivr):
    """With the demo business owner's PMI locked: a caller throttled after 10 failures."""
    for n in range(5):
        Caller(twilio, caller(100 + n)).attempt(BUSINESS_OWNER[0], WRONG)
    throttled = Caller(twilio, caller(9000))
    for n in range(10):
        throttled.attempt(f"55596{n:05d}", WRONG)
    assert lock(ivr, pmi_key(ivr, BUSINESS_OWNER[0])).locked_until is not None
    assert lock(ivr, f"caller:{caller(9000)}").locked_until is not None
    return throttled


def test_unknown_wrong_locked_and_throttled_get_byte_identical_twiml(
        twilio, ivr, many_accounts, throttled):
    answers = {
        "unknown": Caller(twilio, caller(300)).attempt(UNKNOWN_PMI, WRONG),
        "wrong": Caller(twilio, caller(301)).attempt(many_accounts[0][0], WRONG),
        "locked": Caller(twilio, caller(302)).attempt(*BUSINESS_OWNER),
        "throttled": throttled.attempt(*many_accounts[1]),
    }
    assert len(set(answers.values())) == 1, answers


def test_failure_kinds_take_the_same_time(twilio, ivr, many_accounts, throttled):
    """Median handling times of the four refusals differ by under 5 ms over 500 tries each."""
    probe = Caller(twilio, caller(8999))
    refusals = {probe.attempt(UNKNOWN_PMI, WRONG)}
    refusals.add(probe.attempt(UNKNOWN_PMI, WRONG, new_call=False))
    refusals.add(probe.attempt(UNKNOWN_PMI, WRONG, new_call=False))
    # "Try again" after the first and after the second failure (the same words; their
    # prompts are named apart, see flow.prompt_of), and the final goodbye.
    assert len(refusals) == 3
    timings = {"unknown": [], "wrong": [], "locked": [], "throttled": []}
    callers = [Caller(twilio, caller(1000 + n)) for n in range(60)]  # 9 failures each at most
    wrong_caller = locked_caller = None  # a new one for every call, below
    for i in range(500):
        # Three tries per call (the per-call limit), interleaved so drift affects all alike.
        new_call = i % 3 == 0
        who = callers[(i // 9) % len(callers)]
        for kind in timings:
            if kind == "throttled":
                body, took = throttled.attempt(*many_accounts[i % 125], new_call=new_call, timed=True)
            elif kind == "unknown":
                body, took = who.attempt(f"5559{i:06d}", WRONG, new_call=new_call, timed=True)
            elif kind == "wrong":
                wrong_caller = Caller(twilio, caller(2000 + i // 9)) if new_call else wrong_caller
                body, took = wrong_caller.attempt(many_accounts[(i // 4) % 125][0], WRONG,
                                                  new_call=new_call, timed=True)
            else:
                locked_caller = Caller(twilio, caller(4000 + i // 9)) if new_call else locked_caller
                body, took = locked_caller.attempt(*BUSINESS_OWNER, new_call=new_call, timed=True)
            # Every timed answer is a refused verification (retry, or the final one).
            assert body in refusals, (kind, body)
            timings[kind].append(took)
    medians = {kind: statistics.median(values) * 1000 for kind, values in timings.items()}
    print("median host-key handling, ms:", {k: round(v, 3) for k, v in medians.items()})
    assert max(medians.values()) - min(medians.values()) < 5, medians


# -- secrets -------------------------------------------------------------------------------


def test_the_pepper_is_generated_once_into_the_instance_folder_readable_only_by_its_owner(
        settings, clock, tmp_path):
    instance = tmp_path / "fresh-instance"
    unpeppered = settings.model_copy(update={"host_key_pepper": None, "instance_path": instance})
    first = create_app(unpeppered, clock=clock).extensions["ivr"].hasher.digest("1", "2")
    path = instance / "host_key_pepper"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert len(bytes.fromhex(path.read_text())) == 32
    assert create_app(unpeppered, clock=clock).extensions["ivr"].hasher.digest("1", "2") == first
    assert sorted(p.name for p in instance.iterdir() if "pepper" in p.name) == ["host_key_pepper"]


@pytest.mark.parametrize("content", ["", "\n", "not hex at all", "ab" * 15, "abc" * 11])
def test_a_pepper_file_left_empty_or_damaged_stops_the_app_and_names_it(settings, clock,
                                                                         tmp_path, content):
    """An empty key would let anyone recompute every stored hash, and a different one
    would match no host key imported before: neither is used."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "host_key_pepper").write_text(content)
    unpeppered = settings.model_copy(update={"host_key_pepper": None, "instance_path": instance})
    with pytest.raises(SystemExit) as stopped:
        create_app(unpeppered, clock=clock)
    assert str(instance / "host_key_pepper") in str(stopped.value)
    assert "expected 64 hex digits" in str(stopped.value)


@pytest.mark.parametrize("make", [
    lambda path, tmp_path: path.mkdir(),
    lambda path, tmp_path: path.symlink_to(tmp_path / "gone"),
], ids=["a folder", "a link to nothing"])
def test_a_pepper_file_that_cannot_be_read_stops_the_app_with_one_line_naming_it(
        settings, clock, tmp_path, make):
    instance = tmp_path / "instance"
    instance.mkdir()
    make(instance / "host_key_pepper", tmp_path)
    unpeppered = settings.model_copy(update={"host_key_pepper": None, "instance_path": instance})
    with pytest.raises(SystemExit) as stopped:
        create_app(unpeppered, clock=clock)
    assert str(stopped.value).startswith(f"Configuration error: {instance / 'host_key_pepper'}: "
                                         "cannot be read")


def test_a_hash_dump_alone_does_not_reveal_a_host_key(ivr):
    import hashlib

    from ivr.security import HostKeyHasher

    stored = ivr.hasher.digest(*BUSINESS_OWNER)
    plain = {hashlib.sha256(f"{BUSINESS_OWNER[0]}:{k:07d}".encode()).hexdigest()
             for k in range(9164000, 9164100)}
    assert stored not in plain
    assert HostKeyHasher(b"another pepper").digest(*BUSINESS_OWNER) != stored


def test_no_log_record_or_table_holds_a_host_key_or_the_digits_typed_for_it(
        app, simulator, ivr, caplog):
    caplog.set_level(logging.DEBUG)
    typed_wrong = "8067243"
    simulator.call("+18887999666", "+14155550100",
                   ["2", f"{MISTYPED_PMI}#", f"{typed_wrong}#", f"{BUSINESS_OWNER[0]}#",
                    f"{BUSINESS_OWNER[1]}#", "1"])
    simulator.call("+81531320070", "+819012345678",
                   ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "2"])
    secrets = [BUSINESS_OWNER[1], typed_wrong, MISTYPED_PMI]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged and not any(secret in logged for secret in secrets)
    assert "9012345678" not in logged and "4155550100" not in logged
    tables = set(inspect(ivr.storage.engine).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)  # the dump below sees every table
    with ivr.storage.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                dumped = " ".join(str(value) for value in row)
                assert not any(secret in dumped for secret in secrets), table.name


# -- proxies -------------------------------------------------------------------------------


def test_forwarded_headers_are_ignored_unless_proxies_are_trusted(settings, clock):
    public = "https://ivr.example.com"
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.com"}
    for trusted, expected in ((0, 403), (1, 200)):
        app = create_app(settings.model_copy(update={"trusted_proxies": trusted}), clock=clock)
        app.extensions["ivr"].storage.upgrade()
        client = TwilioClient(app, base=public)
        params = client.call_params(f"CA{trusted:032d}")
        signature = client.validator.compute_signature(public + "/voice", params)
        response = client.client.post("/voice", data=params,
                                      headers={**headers, "X-Twilio-Signature": signature})
        assert response.status_code == expected


def test_a_proxy_that_mounts_the_service_under_a_path_is_refused_at_the_first_request(
        settings, clock):
    """The TwiML's next-step URLs are root paths: under /line, Twilio would leave the
    service after the greeting. X-Forwarded-Prefix is not honoured, so the signature Twilio
    made for /line/voice does not match and the very first request says so (403)."""
    app = create_app(settings.model_copy(update={"trusted_proxies": 1}), clock=clock)
    app.extensions["ivr"].storage.upgrade()
    client = TwilioClient(app, base="https://ivr.example.com")
    params = client.call_params("CA" + "7" * 32)
    signature = client.validator.compute_signature("https://ivr.example.com/line/voice", params)
    response = client.client.post("/voice", data=params, headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.com",
        "X-Forwarded-Prefix": "/line", "X-Twilio-Signature": signature})
    assert response.status_code == 403
    app.extensions["ivr"].storage.dispose()


def test_old_failure_counts_are_purged_but_current_locks_are_kept(app, twilio, ivr, clock):
    import datetime as dt

    for n in range(5):
        Caller(twilio, caller(n)).attempt(BUSINESS_OWNER[0], WRONG)  # locks the PMI
    Caller(twilio, caller(99)).attempt(UNKNOWN_PMI, WRONG)           # just a count
    runner = app.test_cli_runner()
    assert "Forgot 0" in runner.invoke(args=["accounts", "purge-failures"]).output
    clock.advance(days=31)
    with ivr.storage.transaction() as session:  # a lock still running a month on
        session.get(Lockout, pmi_key(ivr, BUSINESS_OWNER[0])).locked_until = clock.now + dt.timedelta(hours=1)
    result = runner.invoke(args=["accounts", "purge-failures", "--older-than", "30"])
    assert result.exit_code == 0
    assert lock(ivr, pmi_key(ivr, UNKNOWN_PMI)) is None
    assert lock(ivr, pmi_key(ivr, BUSINESS_OWNER[0])) is not None


@pytest.mark.parametrize("given, shown", [
    ("12", "'12'"), ("abc", "'abc'"), ("555010020", None),  # 9 digits: a PMI, and valid
    ("555 010 0201", "…0201"), ("+14155550100", "…0100"), ("555010020123", "…0123"),
    ("５５５０１００２０１", "…０２０１"),  # full-width digits: not what a keypad sends
])
def test_unlocking_a_value_that_cannot_be_a_pmi_is_refused_in_one_line(app, given, shown):
    """It was taken as a PMI and echoed back whole ("PMI +14155550100 had no lock or
    failures."), as if there were such a PMI to look for. The IVR counts failures only for
    a PMI of the configured lengths, in ASCII digits: anything else is refused, shown by
    its last four digits when it holds a number."""
    result = app.test_cli_runner().invoke(args=["accounts", "unlock", given])
    if shown is None:
        assert result.exit_code == 0 and result.output.strip() == \
            f"PMI {given} had no lock or failures."
        return
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        f"Error: {shown} is not a PMI: a PMI is 9 to 11 digits (0-9)."]
    assert len(given) < 6 or given not in result.output


def test_unlocking_a_caller_typed_without_the_country_code_is_refused_not_the_withheld_lock(
        app, twilio, ivr):
    """'4155550100' is not a number in international form: taken as given it would be
    the key all withheld callers share, and clearing it would leave the caller locked."""
    withheld = Caller(twilio, "anonymous")
    for n in range(10):
        withheld.attempt(f"55597{n:05d}", WRONG)
    runner = app.test_cli_runner()
    before = runner.invoke(args=["accounts", "locks"]).output
    refused = runner.invoke(args=["accounts", "unlock", "--caller", "4155550100"])
    assert refused.exit_code == 2 and "--caller withheld" in refused.output
    assert runner.invoke(args=["accounts", "locks"]).output == before
    cleared = runner.invoke(args=["accounts", "unlock", "--caller", "withheld"])
    assert cleared.exit_code == 0 and "Unlocked" in cleared.output
    assert runner.invoke(args=["accounts", "locks"]).output.strip() == "No locks."


def test_operator_commands_say_in_one_line_that_the_database_is_unreachable_or_empty(
        settings, clock, database_url, tmp_path):
    from ..support import unreachable_database_url

    away = create_app(settings.model_copy(update={
        "database_url": unreachable_database_url(database_url, tmp_path)}), clock=clock)
    for args in (["init-db"], ["tickets", "list"], ["accounts", "locks"], ["engineers", "list"],
                 ["outbox", "drain"]):
        result = away.test_cli_runner().invoke(args=args)
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert "the database is unreachable" in result.output, (args, result.output)
    if not database_url.startswith("sqlite"):
        return
    empty = create_app(settings.model_copy(update={
        "database_url": f"sqlite:///{tmp_path}/empty.db"}), clock=clock)
    result = empty.test_cli_runner().invoke(args=["tickets", "list"])
    assert result.exit_code == 1 and "run `flask --app app init-db` first" in result.output
    empty.extensions["ivr"].storage.dispose()
