"""The help desk (issue 9): phone tickets pushed to a fake Zendesk on loopback through the
job outbox, and Zendesk's webhook bringing solved tickets and priorities back."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import requests
from sqlalchemy import select

from ivr.desk.service import Desk
from ivr.helpdesk.sender import Sender
from ivr.sim.simulator import Simulator, WsgiTransport, new_call_sid
from ivr.storage import HelpdeskDelivery, HelpdeskJob, HelpdeskJobRepository
from ivr.storage.engineers import DeskAction
from ivr.storage.models import Ticket

from ..desk_support import ADMIN_TOKEN, parse_html, signed_in
from ..helpdesk_support import (
    JAPAN_CALLER,
    JAPAN_LINE,
    TIMEOUT,
    helpdesk_app,
    patient_sender,
    sender,
    signed,
    trigger_body,
)
from ..support import BUSINESS_OWNER, CALLER, TOKEN, US_LINE
from ..zendesk_fake import API_TOKEN, EMAIL, FakeZendesk, TricklingProxy


@pytest.fixture
def fake(httpserver):
    return FakeZendesk(httpserver)


@pytest.fixture
def zendesk_timeout():
    """The sender's time-out per request (tests of the time-out itself set 0.5 s)."""
    return TIMEOUT


# Tests whose Zendesk answers late on purpose: a short time-out keeps them quick.
short_time_out = pytest.mark.parametrize("zendesk_timeout", [0.5])


@pytest.fixture
def app(settings, clock, fake, tmp_path, zendesk_timeout):
    app = helpdesk_app(settings, clock, tmp_path / "config", fake.url,
                       timeout=zendesk_timeout)
    yield app
    app.extensions["ivr"].storage.dispose()


@pytest.fixture
def ivr(app):
    return app.extensions["ivr"]


@pytest.fixture
def simulator(app):
    return Simulator(WsgiTransport(app), TOKEN)


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


def call(simulator, line=JAPAN_LINE, caller=JAPAN_CALLER, priority=1, *more):
    result = simulator.call(line, caller, ["2", f"{BUSINESS_OWNER[0]}#",
                                           f"{BUSINESS_OWNER[1]}#", str(priority), *more])
    assert result.outcome == ("callback" if more else "routed"), result
    return result.ticket


def jobs(ivr) -> list[HelpdeskJob]:
    with ivr.storage.transaction() as session:
        return list(session.scalars(select(HelpdeskJob).order_by(HelpdeskJob.id)))


def ticket_row(ivr, number) -> Ticket:
    with ivr.storage.transaction() as session:
        return session.scalars(select(Ticket).where(Ticket.number == number)).one()


def post_hook(app, body, timestamp, **kwargs):
    raw, headers = signed(body, timestamp, **kwargs)
    return app.test_client().post("/hooks/zendesk", data=raw, headers=headers)


# -- create ------------------------------------------------------------------------------


def test_a_simulated_call_then_a_drain_makes_exactly_one_zendesk_ticket_with_every_field(
        simulator, ivr, fake, clock):
    number = call(simulator, JAPAN_LINE, JAPAN_CALLER, 1)
    assert [(j.kind, j.status) for j in jobs(ivr)] == [("create", "pending")]
    assert fake.requests == []  # the call itself never spoke to Zendesk

    counts = sender(ivr, clock).drain()

    assert counts["sent"] == 1
    (ticket,) = fake.tickets.values()
    (create,) = fake.writes()
    assert create["headers"]["Authorization"] == "Basic " + base64.b64encode(
        f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
    assert create["headers"]["Idempotency-Key"] == f"phone-ticket-{number}"
    assert ticket["external_id"] == number
    assert ticket["priority"] == "urgent"
    assert ticket["subject"] == "Phone: P1 urgent, Business (Japan line)"
    assert ticket["requester"]["email"] == "owner.business@example.com"
    assert {"phone", "region_japan", "plan_business", "language_ja_jp",
            "priority_p1"} <= set(ticket["tags"])
    assert {"id": 360001, "value": "Japan"} in ticket["custom_fields"]
    assert {"id": 360002, "value": "business"} in ticket["custom_fields"]
    (note,) = ticket["comments"]
    assert note["public"] is False
    row = ticket_row(ivr, number)
    for expected in ("Region: Japan", f"Line dialled: {JAPAN_LINE}", "Language: Japanese (ja-JP)",
                     "Plan: Business", "Role: owner", "Account: demo-business",
                     f"Call SID: {row.call_sid}", "target response 60 min", "Caller: …5678"):
        assert expected in note["body"], expected
    assert "9012345678" not in note["body"]  # the caller's number only masked
    (job,) = jobs(ivr)
    assert (job.status, job.remote_id) == ("sent", str(ticket["id"]))
    assert sender(ivr, clock).drain()["sent"] == 0  # nothing is sent twice
    assert len(fake.writes()) == 1


def test_the_zendesk_ticket_is_shown_and_linked_in_the_api_the_dashboard_and_tickets_show(
        app, simulator, ivr, fake, clock, cli):
    number = call(simulator)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    link = f"{fake.url}/agent/tickets/{remote_id}"

    api = app.test_client().get(f"/api/tickets/{number}",
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert api.json["helpdesk"]["id"] == str(remote_id) and api.json["helpdesk"]["url"] == link
    report = app.test_client().get("/api/helpdesk",
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json
    assert report["counts"]["sent"] == 1 and report["sent"][0]["url"] == link
    shown = cli("tickets", "show", number)
    assert f"#{remote_id}" in shown.output and link in shown.output

    client = signed_in(app)
    page = parse_html(client.get(f"/admin/tickets/{number}").get_data(as_text=True))
    anchor = next(a for a in page.find("helpdesk").iter("a"))
    assert anchor.attrs["href"] == link and str(remote_id) in anchor.text()


# -- the sender killed, Zendesk down or slow ----------------------------------------------


def test_a_sender_killed_between_zendesks_answer_and_recording_it_still_makes_one_ticket(
        simulator, ivr, fake, clock, monkeypatch):
    number = call(simulator)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies before the result is stored

    with monkeypatch.context() as patch:
        patch.setattr(HelpdeskJobRepository, "record", killed)
        with pytest.raises(KeyboardInterrupt):
            sender(ivr, clock).drain()
    assert len(fake.tickets) == 1
    (job,) = jobs(ivr)
    assert job.status == "sending"  # claimed, result unknown

    assert sender(ivr, clock).drain()["sent"] == 0  # the claim still holds
    clock.advance(seconds=ivr.config.helpdesk.lease_seconds + 1)
    assert sender(ivr, clock).drain()["sent"] == 1

    assert len(fake.tickets) == 1
    posts = fake.writes()
    assert len(posts) == 2 and posts[0]["json"] == posts[1]["json"]
    assert {p["headers"]["Idempotency-Key"] for p in posts} == {f"phone-ticket-{number}"}
    assert jobs(ivr)[0].remote_id == str(next(iter(fake.tickets)))


class SlowFirstPush:
    """The help desk as a sender sees it, with ``meanwhile`` run during its first push:
    a push that took so long that the sender's claim on the rest of its batch ran out."""

    def __init__(self, desk, meanwhile):
        self.desk, self.meanwhile, self.pushes = desk, meanwhile, 0

    @property
    def name(self):
        return self.desk.name

    def _slow(self, result):
        self.pushes += 1
        if self.pushes == 1:
            self.meanwhile()
        return result

    def create(self, *args, **kwargs):
        return self._slow(self.desk.create(*args, **kwargs))

    def update(self, *args, **kwargs):
        return self._slow(self.desk.update(*args, **kwargs))


def test_a_batch_that_outlasts_its_claim_never_pushes_an_old_change_over_a_newer_one(
        simulator, ivr, fake, clock):
    first = call(simulator)  # P1
    sender(ivr, clock).drain()
    second = call(simulator, US_LINE, CALLER, 2)
    desk = Desk.of(ivr)
    desk.set_priority(first, 3)  # queued after the second ticket's create

    def another_sender_takes_over():
        clock.advance(seconds=ivr.config.helpdesk.lease_seconds + 1)
        assert sender(ivr, clock).drain()["sent"] == 2  # the second's create, then P3
        desk.set_priority(first, 2)
        assert sender(ivr, clock).drain()["sent"] == 1  # P2

    slow = sender(ivr, clock)
    slow.desk = SlowFirstPush(slow.desk, another_sender_takes_over)
    slow.drain()  # claimed the second's create and P3 together; the create was slow

    by_number = {t["external_id"]: t for t in fake.tickets.values()}
    assert set(by_number) == {first, second}
    assert by_number[first]["priority"] == "high"  # P2, the latest: P3 was not pushed again
    path = f"/api/v2/tickets/{by_number[first]['id']}.json"
    priorities = [r["json"]["ticket"]["priority"] for r in fake.writes() if r["path"] == path]
    assert priorities == ["normal", "high"]
    assert slow.desk.pushes == 1  # the rest of its batch was left to the sender that took it
    assert all(j.status == "sent" for j in jobs(ivr))


def test_a_desk_change_held_up_by_zendesk_does_not_undo_a_newer_change_made_there(
        app, simulator, ivr, fake, clock, cli):
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    Desk.of(ivr).set_priority(number, 3)       # the desk says P3 ...
    fake.fail_next(1, 503)
    assert sender(ivr, clock).drain()["retry"] == 1  # ... Zendesk is busy: the push waits
    clock.advance(minutes=1)                   # an agent makes it Urgent in Zendesk
    hook = post_hook(app, trigger_body(remote_id, number, "Open", "Urgent"), stamp(clock))
    assert hook.json["priority"] == 1
    clock.advance(minutes=10)
    assert sender(ivr, clock).drain()["superseded"] == 1
    assert (ticket_row(ivr, number).priority, fake.tickets[remote_id]["priority"]) == \
        (1, "urgent")
    assert [(j.event, j.status) for j in jobs(ivr)] == [("created", "sent"),
                                                        ("priority", "sent")]
    assert jobs(ivr)[1].last_error == "not sent: superseded (the ticket is P1 now)"
    assert "not sent: superseded" in cli("helpdesk", "status").output  # not shown as sent


def test_of_two_desk_changes_queued_together_only_the_newer_priority_is_pushed(
        simulator, ivr, fake, clock):
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    Desk.of(ivr).set_priority(number, 3)
    Desk.of(ivr).set_priority(number, 2)
    counts = sender(ivr, clock).drain()
    assert (counts["superseded"], counts["sent"]) == (1, 1)
    assert fake.tickets[remote_id]["priority"] == "high"
    (update,) = [w for w in fake.writes() if w["method"] == "PUT"]
    assert "P2" in update["json"]["ticket"]["comment"]["body"]


def test_a_create_retried_after_zendesk_forgot_the_key_finds_the_ticket_by_external_id(
        simulator, ivr, fake, clock, monkeypatch):
    number = call(simulator)
    with monkeypatch.context() as patch:
        patch.setattr(HelpdeskJobRepository, "record", lambda *a, **k: (_ for _ in ()).throw(
            KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            sender(ivr, clock).drain()
    fake.keys.clear()  # Zendesk keeps idempotency keys for a few hours only
    clock.advance(hours=3)
    assert sender(ivr, clock).drain()["sent"] == 1
    assert len(fake.tickets) == 1
    assert fake.requests[-1]["method"] == "GET"
    assert fake.requests[-1]["args"] == {"external_id": number}


def test_zendesk_down_for_a_while_then_back_gets_every_push_delivered_in_order(
        simulator, ivr, fake, clock):
    first = call(simulator, US_LINE, CALLER, 2, "1")  # then asks for a callback while waiting
    second = call(simulator, JAPAN_LINE, JAPAN_CALLER, 3)
    desk = Desk.of(ivr)
    desk.set_priority(second, 1)
    desk.close(first)
    fake.down = True
    for _ in range(3):
        counts = sender(ivr, clock).drain()
        assert counts["sent"] == 0 and counts["retry"] == 2  # one job per ticket at a time
        clock.advance(hours=1)
    assert all(j.status == "pending" for j in jobs(ivr))
    assert len({r["path"] for r in fake.requests}) == 1  # only creates were tried
    fake.down = False

    counts = sender(ivr, clock).drain()

    assert counts["sent"] == 5 and counts["failed"] == 0
    assert all(j.status == "sent" for j in jobs(ivr))
    by_number = {t["external_id"]: t for t in fake.tickets.values()}
    assert set(by_number) == {first, second}
    one, two = by_number[first], by_number[second]
    assert (one["status"], one["priority"]) == ("solved", "high")
    assert "phone_callback" in one["tags"]
    assert (two["status"], two["priority"]) == ("new", "urgent")
    assert "priority_p1" in two["tags"] and "priority_p3" not in two["tags"]
    writes = [(r["method"], r["path"]) for r in fake.writes()[-5:]]
    one_path = f"/api/v2/tickets/{one['id']}.json"
    assert writes.index(("PUT", one_path)) > writes.index(("POST", "/api/v2/tickets.json"))
    updates = [r["json"]["ticket"] for r in fake.writes() if r["path"] == one_path]
    assert [u.get("status") for u in updates] == [None, "solved"]  # callback, then close
    assert "asked to be called back on +14155550100" in updates[0]["comment"]["body"]


def test_an_update_queued_before_the_create_went_through_waits_for_it(simulator, ivr, fake,
                                                                       clock):
    number = call(simulator)
    Desk.of(ivr).set_priority(number, 4)
    fake.fail_next(1, 500)
    counts = sender(ivr, clock).drain()
    assert (counts["retry"], counts["sent"]) == (1, 0)
    assert [j.status for j in jobs(ivr)] == ["pending", "pending"]
    assert [r["method"] for r in fake.requests] == ["POST"]  # the update waited
    clock.advance(minutes=1)
    assert sender(ivr, clock).drain()["sent"] == 2
    (ticket,) = fake.tickets.values()
    assert ticket["priority"] == "low"


def test_a_failing_ticket_does_not_hold_up_the_others(simulator, ivr, fake, clock):
    call(simulator)
    fake.fail_next(1, 502)
    call(simulator, US_LINE, CALLER, 2)
    counts = sender(ivr, clock).drain()
    assert (counts["retry"], counts["sent"]) == (1, 1)
    first, second = jobs(ivr)
    assert first.status == "pending" and first.next_attempt_at > clock.now
    assert first.last_error.startswith("HTTP 502")
    assert second.status == "sent"


def test_retries_back_off_exponentially_then_the_push_fails_at_the_limit(simulator, ivr,
                                                                          fake, clock):
    call(simulator)
    fake.fail_next(10, 500)
    waits = []
    for _ in range(ivr.config.helpdesk.max_attempts):
        sender(ivr, clock).drain()
        (job,) = jobs(ivr)
        if job.status == "failed":
            break
        waits.append((job.next_attempt_at - clock.now).total_seconds())
        clock.now = job.next_attempt_at
    assert waits == [10, 20, 40]  # backoff_seconds = 10, doubled; no jitter in this test
    assert job.status == "failed" and job.last_error.startswith("gave up after 4 failed tries")


def test_jitter_spreads_retries_between_half_and_all_of_the_back_off(ivr, clock):
    low = sender(ivr, clock)
    low.jitter = lambda: 0.0
    assert low.backoff(3) == 20.0 and sender(ivr, clock).backoff(3) == 40.0
    assert sender(ivr, clock).backoff(30) == ivr.config.helpdesk.max_backoff_seconds


def test_a_rate_limit_honours_retry_after_and_does_not_count_as_a_failure(simulator, ivr,
                                                                          fake, clock):
    call(simulator)
    fake.fail_next(1, 429, {"Retry-After": "93"})
    counts = sender(ivr, clock).drain()
    assert counts["rate_limited"] == 1
    (job,) = jobs(ivr)
    assert job.next_attempt_at == clock.now + dt.timedelta(seconds=93) and job.failures == 0
    clock.advance(seconds=92)
    assert sender(ivr, clock).drain()["sent"] == 0
    clock.advance(seconds=1)
    assert sender(ivr, clock).drain()["sent"] == 1


@pytest.mark.parametrize("batch", [20, 1])
def test_a_rate_limit_stops_every_push_until_retry_after(simulator, ivr, fake, clock, batch):
    """Zendesk's 429 asks the account to wait: the rest of the round, and pushes not
    claimed yet (batch 1), go out only after Retry-After."""
    for _ in range(3):
        call(simulator)
    fake.fail_next(1, 429, {"Retry-After": "60"})
    counts = sender(ivr, clock).drain(batch=batch)
    assert len(fake.writes()) == 1 and counts["sent"] == 0
    assert {j.next_attempt_at for j in jobs(ivr)} == {clock.now + dt.timedelta(seconds=60)}
    assert all(j.failures == 0 and j.status == "pending" for j in jobs(ivr))
    clock.advance(seconds=59)
    assert sender(ivr, clock).drain()["sent"] == 0 and len(fake.writes()) == 1
    clock.advance(seconds=1)
    assert sender(ivr, clock).drain()["sent"] == 3 and len(fake.tickets) == 3


@pytest.mark.parametrize("value", ["NaN", "inf", "-inf"])
def test_a_retry_after_that_is_not_a_finite_number_is_ignored_not_a_crash(simulator, ivr,
                                                                         fake, clock, value):
    call(simulator)
    fake.fail_next(1, 429, {"Retry-After": value})
    counts = sender(ivr, clock).drain()
    assert counts["rate_limited"] == 1
    (job,) = jobs(ivr)
    assert job.status == "pending" and clock.now < job.next_attempt_at \
        < clock.now + dt.timedelta(hours=1)


@pytest.mark.parametrize("value", ["0", "Thu, 01 Jan 2026 00:00:00 GMT"])
def test_a_server_error_asking_for_no_wait_is_still_backed_off(simulator, ivr, fake, clock,
                                                              value):
    """A 503 with "Retry-After: 0" (or a date already past) must not send the push again
    at once, round after round of one drain, until it fails for good."""
    call(simulator)
    fake.fail_next(ivr.config.helpdesk.max_attempts, 503, {"Retry-After": value})
    counts = sender(ivr, clock).drain()
    (job,) = jobs(ivr)
    assert counts["retry"] == 1 and len(fake.requests) == 1
    assert job.status == "pending" and job.next_attempt_at > clock.now


@pytest.mark.parametrize("status", [401, 403, 422])
def test_refusals_are_permanent_with_zendesks_message_until_an_operator_retries(
        simulator, ivr, fake, clock, cli, status):
    call(simulator)
    if status == 401:
        fake.auth = "Basic something-else"  # a revoked token
    elif status == 403:
        fake.fail_next(1, 403)
    else:
        fake.tickets.clear()
        fake.fail_next(0)
    if status == 422:
        import tests.zendesk_fake as module
        original = module.PRIORITIES
        module.PRIORITIES = ("high", "normal", "low")  # an account refusing "urgent"
    try:
        counts = sender(ivr, clock).drain()
    finally:
        if status == 422:
            module.PRIORITIES = original
    assert counts["failed"] == 1
    (job,) = jobs(ivr)
    assert job.status == "failed"
    expected = {401: "Couldn't authenticate you", 403: "HTTP 403",
                422: "priority: Priority: is invalid"}[status]
    assert expected in job.last_error
    clock.advance(days=1)
    assert sender(ivr, clock).drain()["sent"] == 0  # failed stays failed

    report = json.loads(cli("helpdesk", "status", "--json").output)
    assert report["counts"]["failed"] == 1 and report["failed"][0]["error"] == job.last_error
    fake.auth = "Basic " + base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
    assert "1 failed push queued again" in cli("helpdesk", "retry", str(job.id)).output
    assert sender(ivr, clock).drain()["sent"] == 1
    assert len(fake.tickets) == 1


def test_a_create_refused_for_the_configured_field_ids_is_retried_with_the_ids_fixed_since(
        simulator, ivr, fake, clock, cli):
    """The push keeps the fields by name; their Zendesk ids come from the configuration
    the sender runs with. An operator who corrects ``custom_fields`` after a 422 and
    retries sends the corrected ids, once: the refused create left no ticket and no
    Idempotency-Key behind, so the same key makes the one ticket."""
    number = call(simulator)
    fake.fail_next(1, 422)  # e.g. "Custom fields: id is invalid" for ids of another account
    assert sender(ivr, clock).drain()["failed"] == 1
    refused = fake.writes()[-1]
    assert {f["id"] for f in refused["json"]["ticket"]["custom_fields"]} == {360001, 360002}

    fixed = ivr.config.helpdesk.model_copy(
        update={"custom_fields": {"region": 370001, "plan": 370002}})
    config = ivr.config.model_copy(update={"helpdesk": fixed})
    (job,) = jobs(ivr)
    assert "1 failed push queued again" in cli("helpdesk", "retry", str(job.id)).output
    clock.advance(days=1)
    restarted = Sender(ivr.storage, config, ivr.settings, clock=clock, jitter=lambda: 1.0)
    assert restarted.drain()["sent"] == 1
    retried = fake.writes()[-1]
    assert retried["headers"]["Idempotency-Key"] == refused["headers"]["Idempotency-Key"]
    (ticket,) = fake.tickets.values()
    assert ticket["external_id"] == number
    assert {"id": 370001, "value": "Japan"} in ticket["custom_fields"]
    assert {f["id"] for f in ticket["custom_fields"]} == {370001, 370002}


@short_time_out
def test_an_answer_slower_than_the_time_out_is_retried_without_a_second_ticket(
        simulator, ivr, fake, clock):
    call(simulator)
    fake.delay = 1.0  # the ticket is made, the answer comes after the client gave up
    counts = sender(ivr, clock).drain()
    assert counts["retry"] == 1
    assert "no answer within 0.5 s" in jobs(ivr)[0].last_error
    fake.delay = 0
    clock.advance(minutes=5)
    assert patient_sender(ivr, clock).drain()["sent"] == 1
    assert len(fake.tickets) == 1


def test_a_retried_update_does_not_repeat_its_note(simulator, ivr, fake, clock, monkeypatch):
    number = call(simulator)
    sender(ivr, clock).drain()
    Desk.of(ivr).set_priority(number, 2)
    with monkeypatch.context() as patch:
        patch.setattr(HelpdeskJobRepository, "record", lambda *a, **k: (_ for _ in ()).throw(
            KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            sender(ivr, clock).drain()
    clock.advance(hours=1)
    assert sender(ivr, clock).drain()["sent"] == 1
    (ticket,) = fake.tickets.values()
    notes = [c for c in ticket["comments"] if "Priority changed" in c["body"]]
    assert len(notes) == 1 and ticket["priority"] == "high"


# -- the desk's changes ------------------------------------------------------------------


def test_tickets_set_priority_becomes_an_update_with_the_new_zendesk_priority(
        simulator, ivr, fake, clock, cli):
    number = call(simulator, US_LINE, CALLER, 3)
    sender(ivr, clock).drain()
    assert cli("tickets", "set-priority", number, "1").exit_code == 0
    assert sender(ivr, clock).drain()["sent"] == 1
    (ticket,) = fake.tickets.values()
    update = fake.writes()[-1]
    assert update["path"] == f"/api/v2/tickets/{ticket['id']}.json"
    assert update["json"]["ticket"]["priority"] == "urgent"
    assert update["json"]["ticket"]["comment"]["public"] is False
    assert "P3 medium -> P1 urgent" in update["json"]["ticket"]["comment"]["body"]
    assert ticket["priority"] == "urgent"


# -- back from Zendesk -------------------------------------------------------------------


def stamp(clock) -> str:
    return clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_solved_webhook_closes_our_ticket_and_a_repeated_delivery_changes_nothing(
        app, simulator, ivr, fake, clock):
    number = call(simulator)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    clock.advance(minutes=30)
    body = trigger_body(remote_id, number, "Solved", "Urgent")

    first = post_hook(app, body, stamp(clock))
    assert first.status_code == 200 and first.json["result"] == "changed"
    row = ticket_row(ivr, number)
    assert (row.status, row.closed_at) == ("closed", clock.now)

    clock.advance(seconds=40)
    again = post_hook(app, body, stamp(clock))
    assert again.status_code == 200 and again.json["result"] == "unchanged"
    assert ticket_row(ivr, number).closed_at == row.closed_at
    assert [j.kind for j in jobs(ivr)] == ["create"]  # nothing pushed back to Zendesk


def test_a_priority_changed_in_zendesk_comes_back_with_its_target(app, simulator, ivr, fake,
                                                                 clock):
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    response = post_hook(app, trigger_body(remote_id, number, "Open", "Low"), stamp(clock))
    assert response.status_code == 200 and response.json["priority"] == 4
    row = ticket_row(ivr, number)
    assert (row.priority, row.target_response_minutes) == (4, 1440)
    assert [j.kind for j in jobs(ivr)] == ["create"]


def p3_pushed(simulator, ivr, fake, clock):
    """A P1 ticket logged, set to P3 on the desk and that change pushed, 5 s ago: its
    number, its Zendesk id and the desk."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    desk = Desk.of(ivr)
    desk.set_priority(number, 3)
    assert sender(ivr, clock).drain()["sent"] == 1
    assert fake.tickets[remote_id]["priority"] == "normal"
    clock.advance(seconds=5)
    return number, remote_id, desk


def zendesk_change_wins(app, ivr, clock, number, remote_id, name, level):
    """A priority set in Zendesk while a desk change waits to be pushed: applied here,
    and the desk's push closed unsent."""
    clock.advance(seconds=5)
    made_there = post_hook(app, trigger_body(remote_id, number, "Open", name), stamp(clock))
    assert (made_there.json["result"], made_there.json["priority"]) == ("changed", level)
    assert sender(ivr, clock).drain()["superseded"] == 1
    assert ticket_row(ivr, number).priority == level


def test_zendesks_echo_of_our_own_push_does_not_undo_a_newer_desk_change(
        app, simulator, ivr, fake, clock):
    """Zendesk's trigger fires on the phone line's own updates too. The echo of the push of
    P3 arrives after an engineer has already moved the ticket on to P2: it must not put P3
    back here, nor stop the P2 push going out."""
    number, remote_id, desk = p3_pushed(simulator, ivr, fake, clock)
    desk.set_priority(number, 2)
    clock.advance(seconds=5)
    echo = post_hook(app, trigger_body(remote_id, number, "Open", "Normal"), stamp(clock))
    assert (echo.status_code, echo.json["result"], echo.json["priority"]) == \
        (200, "unchanged", 2)
    assert sender(ivr, clock).drain()["sent"] == 1
    assert ticket_row(ivr, number).priority == 2
    assert fake.tickets[remote_id]["priority"] == "high"
    # A change an agent really makes in Zendesk meanwhile still wins over the desk's.
    desk.set_priority(number, 4)
    zendesk_change_wins(app, ivr, clock, number, remote_id, "Urgent", 1)


def test_an_agent_setting_back_the_last_pushed_priority_is_not_taken_for_an_echo(
        app, simulator, ivr, fake, clock):
    """P3 pushed; an agent sets Urgent in Zendesk; an engineer sets P2 here; the agent
    then sets Normal. That Normal shows the level last pushed, but Zendesk has changed
    the priority since: it is the agent's, and wins over the desk's waiting P2."""
    number, remote_id, desk = p3_pushed(simulator, ivr, fake, clock)
    assert post_hook(app, trigger_body(remote_id, number, "Open", "Urgent"),
                     stamp(clock)).json["priority"] == 1
    clock.advance(seconds=5)
    desk.set_priority(number, 2)
    zendesk_change_wins(app, ivr, clock, number, remote_id, "Normal", 3)


def test_a_delivery_sent_again_does_not_undo_a_newer_one(app, simulator, ivr, fake, clock):
    """Low, then Urgent, then the Low delivery again byte for byte (a replay inside the
    signature's five minutes): the ticket stays P1."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    client = app.test_client()
    low = signed(trigger_body(remote_id, number, "Open", "Low"), stamp(clock))
    assert client.post("/hooks/zendesk", data=low[0], headers=low[1]).json["priority"] == 4
    clock.advance(minutes=1)
    assert post_hook(app, trigger_body(remote_id, number, "Open", "Urgent"),
                     stamp(clock)).json["priority"] == 1
    clock.advance(minutes=1)
    again = client.post("/hooks/zendesk", data=low[0], headers=low[1])
    assert (again.status_code, again.json["result"], again.json["priority"]) == \
        (200, "unchanged", 1)
    assert ticket_row(ivr, number).priority == 1
    clock.advance(minutes=20)  # long after: refused as stale, and forgotten here
    assert client.post("/hooks/zendesk", data=low[0], headers=low[1]).status_code == 401
    post_hook(app, trigger_body(remote_id, number, "Open", "High"), stamp(clock))
    with ivr.storage.transaction() as session:  # this delivery, and when it was signed
        kept = sorted(session.scalars(select(HelpdeskDelivery.key)), key=len)
    assert len(kept) == 2 and kept[0] == f"signed:{ticket_row(ivr, number).id}"


def at_time(clock, seconds_ago: float = 0) -> str:
    return (clock.now - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_delivery_that_arrives_after_a_newer_one_does_not_undo_it(
        app, simulator, ivr, fake, clock):
    """An agent sets Low, then High a minute later; Zendesk delivers High first and Low
    after it (its deliveries are not ordered). Each body shows the ticket as it was when
    signed: the older one is the state Zendesk has left, so the ticket stays P2."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    clock.advance(minutes=2)
    high = post_hook(app, trigger_body(remote_id, number, "Open", "High"), at_time(clock))
    assert (high.json["result"], high.json["priority"]) == ("changed", 2)
    clock.advance(seconds=10)
    low = post_hook(app, trigger_body(remote_id, number, "Open", "Low"), at_time(clock, 70))
    assert (low.status_code, low.json["result"], low.json["priority"]) == \
        (200, "unchanged", 2)
    assert ticket_row(ivr, number).priority == 2
    # One signed in the same second as the newest is not older: it is applied.
    same = post_hook(app, trigger_body(remote_id, number, "Open", "Normal"), at_time(clock, 10))
    assert (same.json["result"], same.json["priority"]) == ("changed", 3)


def test_an_older_solved_delivery_arriving_late_does_not_close_a_ticket_reopened_since(
        app, simulator, ivr, fake, clock):
    """Solved, then reopened with a new priority; the Solved delivery comes last. A closed
    ticket here is final, so applied late it would end a ticket Zendesk has reopened. A
    newer delivery that changed nothing counts as the newest too."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    clock.advance(minutes=2)
    reopened = post_hook(app, trigger_body(remote_id, number, "Open", "Urgent"), at_time(clock))
    assert reopened.json["result"] == "unchanged"
    solved = post_hook(app, trigger_body(remote_id, number, "Solved", "Urgent"),
                       at_time(clock, 30))
    assert (solved.status_code, solved.json["result"], solved.json["status"]) == \
        (200, "unchanged", "in_queue")
    assert ticket_row(ivr, number).status == "in_queue"


def test_changes_made_in_zendesk_are_recorded_as_zendesks_in_the_history(app, simulator, ivr,
                                                                         fake, clock):
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    post_hook(app, trigger_body(remote_id, number, "Open", "Low"), stamp(clock))
    post_hook(app, trigger_body(remote_id, number, "Solved", "Low"), stamp(clock))
    with ivr.storage.transaction() as session:
        history = [(a.actor, a.action) for a in session.scalars(
            select(DeskAction).order_by(DeskAction.id))]
    assert history == [("zendesk", "priority"), ("zendesk", "close")]


def test_forged_and_stale_signatures_are_refused_and_change_nothing(app, simulator, ivr,
                                                                    fake, clock):
    number = call(simulator)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    body = trigger_body(remote_id, number, "Solved", "Urgent")
    forged = post_hook(app, body, stamp(clock), secret="not-the-signing-secret")
    raw, headers = signed(body, stamp(clock))
    tampered = app.test_client().post("/hooks/zendesk", data=raw.replace(b"Urgent", b"Low"),
                                      headers=headers)
    unsigned = app.test_client().post("/hooks/zendesk", json=body)
    stale_time = (clock.now - dt.timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale = post_hook(app, body, stale_time)
    for response in (forged, tampered, unsigned, stale):
        assert response.status_code == 401 and response.json["error"]
    row = ticket_row(ivr, number)
    assert (row.status, row.priority) != ("closed", 4) and row.status != "closed"
    fresh = post_hook(app, body, (clock.now - dt.timedelta(minutes=4)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"))
    assert fresh.status_code == 200  # within five minutes


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"),
    (b"[]", '"ticket" object'),
    (b'{"ticket": "x"}', '"ticket" object'),
    (b'{"ticket": {"external_id": "12345678", "status": "Exploded"}}', "ticket.status"),
    (b'{"ticket": {"external_id": "12345678", "priority": "Whenever"}}', "ticket.priority"),
    (b'{"ticket": {"external_id": "DROP TABLE", "status": "solved"}}', "ticket.external_id"),
    (b'{"ticket": {"external_id": ["1"], "status": "solved"}}', "ticket.external_id"),
    (b'{"ticket": {"id": "abc", "external_id": "1", "status": "solved"}}', "ticket.id"),
    (b'\xff\xfe', "not JSON"),
    (b'{"ticket": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not JSON"),  # nested too deeply
])
def test_bad_webhook_bodies_get_a_400_with_a_message(app, clock, raw, message):
    response = post_hook(app, raw, stamp(clock))
    assert response.status_code == 400 and message in response.json["error"]


def test_an_unknown_ticket_is_404_and_a_web_ticket_without_external_id_is_ignored(app, clock):
    unknown = post_hook(app, trigger_body(5, "87654321", "Solved"), stamp(clock))
    assert unknown.status_code == 404 and "87654321" in unknown.json["error"]
    web = post_hook(app, trigger_body(5, "", "Solved"), stamp(clock))
    assert web.status_code == 200 and web.json["result"] == "ignored"


def test_a_webhook_for_another_zendesk_ticket_with_our_number_is_refused(app, simulator, ivr,
                                                                       fake, clock):
    number = call(simulator)
    sender(ivr, clock).drain()
    response = post_hook(app, trigger_body(1, number, "Solved"), stamp(clock))
    assert response.status_code == 409
    assert ticket_row(ivr, number).status != "closed"


def test_an_oversized_webhook_is_refused_before_it_is_read(app, clock):
    raw = b'{"ticket": {"external_id": "1", "pad": "' + b"x" * 20000 + b'"}}'
    assert post_hook(app, raw, stamp(clock)).status_code == 413


# -- never in the way of a call ----------------------------------------------------------


def test_a_webhook_answer_never_waits_for_a_slow_or_dead_zendesk(simulator, ivr, fake, clock,
                                                                  monkeypatch):
    fake.delay = 5.0
    fake.down = True

    def no_http(*args, **kwargs):
        raise AssertionError("a call webhook made an HTTP request")

    monkeypatch.setattr(requests.Session, "request", no_http)
    number = call(simulator, US_LINE, CALLER, 2, "1")  # routed, then a callback request
    assert [(j.kind, j.event) for j in jobs(ivr)] == [("create", "created"),
                                                     ("update", "callback_requested")]
    assert fake.requests == [] and ticket_row(ivr, number).status == "callback_requested"


def test_without_a_help_desk_no_job_is_written_and_the_dashboard_says_not_connected(
        settings, clock, cli):
    from ..desk_support import admin_app

    app = admin_app(settings, clock)
    ivr = app.extensions["ivr"]
    number = Simulator(WsgiTransport(app), TOKEN).call(
        US_LINE, CALLER, ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "1", "1"]).ticket
    Desk.of(ivr).set_priority(number, 2)
    assert jobs(ivr) == []
    assert "helpdesk" not in Desk.of(ivr).ticket(number)
    client = signed_in(app)
    page = parse_html(client.get("/admin/").get_data(as_text=True))
    assert page.find("helpdesk-status").text() == "help desk: not connected"
    runner = app.test_cli_runner()
    assert "not connected" in runner.invoke(args=["helpdesk", "status"]).output
    assert json.loads(runner.invoke(args=["helpdesk", "status", "--json"]).output) == {
        "connected": False}
    assert app.test_client().post("/hooks/zendesk", json={}).status_code == 404
    ivr.storage.dispose()


def test_metrics_count_pushes_by_result_and_show_the_queue_depth(app, simulator, ivr, fake,
                                                                 clock):
    from ivr import metrics

    before = metrics.HELPDESK_PUSHES.labels("sent")._value.get()
    call(simulator)
    call(simulator, US_LINE, CALLER, 2)
    page = app.test_client().get("/metrics").get_data(as_text=True)
    assert "ivr_helpdesk_queue_depth 2.0" in page
    sender(ivr, clock).drain()
    page = app.test_client().get("/metrics").get_data(as_text=True)
    assert "ivr_helpdesk_queue_depth 0.0" in page
    assert metrics.HELPDESK_PUSHES.labels("sent")._value.get() == before + 2
    assert 'ivr_helpdesk_pushes_total{result="sent"}' in page


def test_the_help_desk_adds_one_insert_to_a_call_and_nothing_when_it_is_off(
        settings, clock, fake, tmp_path, call_sid):
    from sqlalchemy import event

    from ..desk_support import admin_app

    def statements(app) -> list[str]:
        seen = []
        event.listen(app.extensions["ivr"].storage.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: seen.append(statement))
        Simulator(WsgiTransport(app), TOKEN).call(
            US_LINE, CALLER, ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "1"],
            call_sid=call_sid)
        app.extensions["ivr"].storage.dispose()
        return seen

    import contextlib
    import os

    from ..support import postgres_schema

    off = statements(admin_app(settings, clock))
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path}/on.db" if settings.database_url.startswith("sqlite") \
            else stack.enter_context(postgres_schema(os.environ["IVR_TEST_POSTGRES_URL"]))
        on = statements(helpdesk_app(settings.model_copy(update={"database_url": url}), clock,
                                     tmp_path / "on", fake.url))
    extra = list(on)
    for statement in off:
        extra.remove(statement)
    assert len(on) == len(off) + 1
    assert extra[0].startswith("INSERT INTO helpdesk_jobs")


def test_operators_see_failed_pushes_on_the_dashboard_and_retry_them_there(
        app, simulator, ivr, fake, clock):
    number = call(simulator)
    fake.fail_next(1, 422)
    sender(ivr, clock).drain()
    client = signed_in(app)
    home = parse_html(client.get("/admin/").get_data(as_text=True))
    assert "1 failed" in home.find("helpdesk-status").text()
    page = parse_html(client.get("/admin/helpdesk").get_data(as_text=True))
    ((attrs, cells),) = page.find("failed").rows()
    assert cells[1] == number and "HTTP 422" in cells[4]
    form = page.find("retry-all")
    response = client.post("/admin/helpdesk/retry",
                           data={"csrf_token": form.field("csrf_token"), "job": attrs["data-job"]})
    assert response.status_code == 302
    assert jobs(ivr)[0].status == "pending"
    assert sender(ivr, clock).drain()["sent"] == 1
    ticket_page = parse_html(client.get(f"/admin/tickets/{number}").get_data(as_text=True))
    assert "#9001" in ticket_page.find("helpdesk").text()


@pytest.mark.parametrize("job", ["²", "999999999999", "0"])
def test_an_odd_push_id_given_to_the_dashboards_retry_gets_a_clear_400(
        app, simulator, ivr, fake, clock, job):
    call(simulator)
    fake.fail_next(1, 422)
    sender(ivr, clock).drain()
    client = signed_in(app)
    page = parse_html(client.get("/admin/helpdesk").get_data(as_text=True))
    response = client.post("/admin/helpdesk/retry", data={
        "csrf_token": page.find("retry-all").field("csrf_token"), "job": job})
    assert response.status_code == 400
    assert "is not a push id" in response.get_data(as_text=True)
    assert jobs(ivr)[0].status == "failed"


def test_a_ticket_logged_before_the_help_desk_was_connected_is_created_by_its_next_change(
        app, simulator, ivr, fake, clock):
    number = call(simulator, US_LINE, CALLER, 2)
    with ivr.storage.transaction() as session:  # as if logged before [helpdesk] was added
        session.execute(HelpdeskJob.__table__.delete())
    Desk.of(ivr).close(number)
    assert sender(ivr, clock).drain()["sent"] == 1
    (ticket,) = fake.tickets.values()
    assert ticket["external_id"] == number and ticket["priority"] == "high"
    assert ticket["status"] == "solved"  # as it stands here
    assert [r["method"] for r in fake.writes()] == ["POST"]


def test_a_ticket_spooled_during_a_database_outage_is_pushed_when_replayed(
        app, ivr, fake, clock, tmp_path, database_url):
    from ivr import create_app
    from ivr.sim.simulator import new_call_sid

    from ..support import TwilioClient, twiml, unreachable_database_url

    dead = TwilioClient(create_app(ivr.settings.model_copy(update={
        "database_url": unreachable_database_url(database_url, tmp_path)}), clock=clock))
    twilio, sid = TwilioClient(app), new_call_sid()
    params = twilio.call_params(sid)
    twilio.post("/voice", **params)
    twilio.post("/voice/menu", **params, Digits="2")
    twilio.post("/voice/pmi", **params, Digits=BUSINESS_OWNER[0])
    action = twiml(twilio.post("/voice/host-key", **params, Digits=BUSINESS_OWNER[1])) \
        .find("Gather").get("action")
    number = [e.text for e in twiml(dead.post(action, **params, Digits="2")).iter("say-as")][0]
    dead.post(f"/voice/queue-result?ticket={number}&priority=2",
              **{**params, "QueueResult": "bridged", "QueueTime": "30"})
    assert jobs(ivr) == []

    ivr.service.spool.replay(ivr.service.replay)
    assert [(j.kind, j.event) for j in jobs(ivr)] == [("create", "created"),
                                                     ("update", "connected")]
    assert sender(ivr, clock).drain()["sent"] == 2
    (ticket,) = fake.tickets.values()
    assert (ticket["external_id"], ticket["priority"]) == (number, "high")
    assert "phone_connected" in ticket["tags"]
    assert "connected to an engineer" in ticket["comments"][-1]["body"]


def test_a_webhook_while_the_database_is_away_answers_503_so_zendesk_delivers_again(
        settings, clock, fake, tmp_path, database_url):
    from ivr import create_app

    from ..helpdesk_support import helpdesk_config, zendesk_section
    from ..support import unreachable_database_url

    url = unreachable_database_url(database_url, tmp_path)

    path = helpdesk_config(tmp_path / "dead", zendesk_section(fake.url))
    app = create_app(settings.model_copy(update={
        "database_url": url, "config_path": path, "zendesk_api_token": API_TOKEN,
        "zendesk_webhook_secret": "zendesk-signing-secret-for-tests"}), clock=clock)
    response = post_hook(app, trigger_body(5, "12345678", "Solved"), stamp(clock))
    assert response.status_code == 503 and "deliver again" in response.json["error"]


def test_a_change_for_a_ticket_already_closed_in_zendesk_is_not_an_error(
        simulator, ivr, fake, clock):
    number = call(simulator)
    sender(ivr, clock).drain()
    (ticket,) = fake.tickets.values()
    ticket["status"] = "closed"  # closed there (final) before our change went out
    Desk.of(ivr).set_priority(number, 3)
    assert sender(ivr, clock).drain()["sent"] == 1
    assert ticket["priority"] == "urgent" and fake.requests[-1]["method"] == "PUT"


def test_a_zendesk_that_does_not_answer_holds_the_sender_for_three_tries_only(
        simulator, ivr, fake, clock):
    for _ in range(5):
        call(simulator, US_LINE, CALLER, 2)
    fake.down = True
    counts = sender(ivr, clock).drain()
    assert len(fake.requests) == 3 and counts["retry"] == 5
    assert all(j.status == "pending" for j in jobs(ivr))
    assert [j.failures for j in jobs(ivr)] == [1, 1, 1, 0, 0]  # the last two were put off
    fake.down = False
    clock.advance(hours=1)
    assert sender(ivr, clock).drain()["sent"] == 5 and len(fake.tickets) == 5


def test_helpdesk_commands_list_pending_and_failed_pushes_and_retry_all_of_them(
        simulator, ivr, fake, clock, cli):
    first = call(simulator)
    second = call(simulator, US_LINE, CALLER, 2)
    shown = cli("tickets", "show", first)
    assert "create pending" in shown.output
    fake.fail_next(2, 403)
    assert sender(ivr, clock).drain()["failed"] == 2
    status = cli("helpdesk", "status")
    assert "0 pending" in status.output and "2 failed" in status.output
    assert first in status.output and second in status.output and "HTTP 403" in status.output
    assert cli("helpdesk", "retry").exit_code == 2  # neither an id nor --all-failed
    assert "1 failed push queued again" in cli("helpdesk", "retry", "1").output
    assert "is pending, not failed" in cli("helpdesk", "retry", "1").output
    assert "1 failed push queued again" in cli("helpdesk", "retry", "--all-failed").output
    assert sender(ivr, clock).drain()["sent"] == 2
    assert "is sent, not failed" in cli("helpdesk", "retry", "1").output
    assert "no push with id 99" in cli("helpdesk", "retry", "99").output
    assert "Latest sent" in cli("helpdesk", "status").output


def test_the_retry_commands_usage_shows_the_push_id_as_optional_beside_all_failed(cli):
    usage = cli("helpdesk", "retry", "--help").output.splitlines()[0]
    assert usage.endswith("helpdesk retry [OPTIONS] [ID]"), usage


def test_an_engineer_picking_up_a_caller_queues_a_connected_update(app, ivr):
    from ..floor_support import add_engineer, engineer_params, queued
    from ..support import TwilioClient, twiml

    twilio = TwilioClient(app)
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    number = waiting["ticket"]
    assert [job.kind for job in jobs(ivr)] == ["create"]
    agent_sid = new_call_sid()
    root = twiml(twilio.post("/voice/agent", **engineer_params(agent_sid)))
    twilio.post(root.find("Dial/Queue").get("url"), **twilio.call_params(waiting["sid"]),
                DequeingCallSid=agent_sid)
    assert ticket_row(ivr, number).status == "connected"
    updates = [job for job in jobs(ivr) if job.kind == "update"]
    assert [(job.event, json.loads(job.data)["status"]) for job in updates] == [
        ("connected", "connected")]


def two_copies_at_once(ivr, monkeypatch, pause_after: str, send) -> None:
    """Copy A of a request runs until the service's ``pause_after`` has returned (inside
    its transaction); copy B starts and waits for A's row lock; then A commits."""
    import threading

    from ..support import pause, second_waits_for_first

    reached, release = pause(monkeypatch, ivr.service, pause_after, thread="copy-a")
    second_waits_for_first(ivr, threading.Thread(name="copy-a", target=send), reached, release,
                           threading.Thread(name="copy-b", target=send), "the second copy")


def updates_pushed(ivr, call_sid) -> tuple[list[str], str]:
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.call_sid == call_sid)).one()
        return [job.event for job in session.scalars(
            select(HelpdeskJob).where(HelpdeskJob.ticket_id == ticket.id,
                                      HelpdeskJob.kind == "update"))], ticket.status


@pytest.mark.parametrize("request_", ["callback key", "queue result"])
def test_two_copies_of_a_request_that_moves_the_ticket_push_one_update(ivr, app, monkeypatch,
                                                                      request_):
    """Twilio sends a request twice at the same instant. The copy that waited for the
    call's row lock read the ticket before the first copy moved it; it must not take the
    first copy's move for its own and push the change to the help desk a second time."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    from ..support import TwilioClient
    from .test_storage import routed

    twilio, sid = TwilioClient(app), new_call_sid()
    routed(twilio, sid)
    if request_ == "callback key":
        params = {**twilio.call_params(sid), "Digits": "1"}
        two_copies_at_once(ivr, monkeypatch, "queue_sms", lambda: ivr.service.wait_choice(params, {}))
        assert updates_pushed(ivr, sid) == (["callback_requested"], "callback_requested")
    else:
        params = {**twilio.call_params(sid), "QueueResult": "bridged", "QueueTime": "20"}
        two_copies_at_once(ivr, monkeypatch, "apply_queue_result",
                           lambda: ivr.service.queue_result(params, {}))
        assert updates_pushed(ivr, sid) == (["connected"], "connected")


def test_retention_clears_the_callback_numbers_that_pushes_copied(simulator, ivr, fake, clock,
                                                                  cli):
    """A callback request's push copies the number (its change and its request); once the
    retention period has passed, sent pushes keep only what links the ticket, and a push
    that failed that long ago is dropped."""
    kept = call(simulator, JAPAN_LINE, JAPAN_CALLER, 1, "1")  # leaves the queue for a callback
    assert sender(ivr, clock).drain()["sent"] == 2
    fake.fail_next(1, 400)
    call(simulator, US_LINE, CALLER, 2, "1")
    sender(ivr, clock).drain()
    assert [j.status for j in jobs(ivr)][2:] == ["failed", "pending"]
    assert any(JAPAN_CALLER in (j.data or "") + (j.payload or "") for j in jobs(ivr))
    clock.advance(days=91)
    dry = cli("retention", "apply", "--dry-run")
    assert "help desk pushes cleared: 3" in dry.output, dry.output
    result = cli("retention", "apply")
    assert result.exit_code == 0 and "help desk pushes cleared: 3" in result.output
    left = jobs(ivr)
    assert [(j.status, j.kind) for j in left] == [("sent", "create"), ("sent", "update"),
                                                 ("pending", "update")]
    # Sent: nothing but the link is left. Not sent yet: kept until it is.
    assert [j.data or j.payload for j in left[:2]] == [None, None]
    assert CALLER in left[2].data
    create = left[0]
    assert create.remote_id and ticket_row(ivr, kept).number == kept
    # The other ticket's first change after that creates it at the help desk as it stands.
    assert sender(ivr, clock).drain()["sent"] == 1
    assert jobs(ivr)[-1].kind == "create"


def test_a_replayed_echo_does_not_undo_the_desks_newer_change_once_it_is_pushed(
        app, simulator, ivr, fake, clock):
    number, remote_id, desk = p3_pushed(simulator, ivr, fake, clock)
    desk.set_priority(number, 2)
    clock.advance(seconds=5)
    client = app.test_client()
    raw, headers = signed(trigger_body(remote_id, number, "Open", "Normal"), stamp(clock))
    first = client.post("/hooks/zendesk", data=raw, headers=headers)
    assert (first.json["result"], first.json["priority"]) == ("unchanged", 2)
    assert sender(ivr, clock).drain()["sent"] == 1
    assert fake.tickets[remote_id]["priority"] == "high"
    clock.advance(minutes=1)
    again = client.post("/hooks/zendesk", data=raw, headers=headers)
    assert (again.status_code, again.json["result"], again.json["priority"]) == \
        (200, "unchanged", 2)
    assert ticket_row(ivr, number).priority == 2


def delivered_while(app, monkeypatch, body, when, meanwhile) -> list:
    """Post a signed delivery from a thread of its own, run ``meanwhile`` while it waits to
    enter ``Desk.update``, then let it go on; its answer, in a list."""
    import threading

    from ..support import pause

    reached, release = pause(monkeypatch, Desk, "update", before=True, thread="hook")
    answers = []
    hook = threading.Thread(name="hook",
                            target=lambda: answers.append(post_hook(app, body, when)))
    hook.start()
    assert reached.wait(10)
    meanwhile()
    release.set()
    hook.join(15)
    return answers


def test_an_echo_the_desk_overtakes_while_it_is_applied_does_not_undo_the_desks_change(
        app, simulator, ivr, fake, clock, monkeypatch):
    # The echo of the P3 push comes after the P2 push, with nothing waiting: judged as
    # news. (A delivery showing the priority the ticket has asks for no change at all.)
    number, remote_id, desk = p3_pushed(simulator, ivr, fake, clock)
    desk.set_priority(number, 2)
    assert sender(ivr, clock).drain()["sent"] == 1
    answers = delivered_while(app, monkeypatch, trigger_body(remote_id, number, "Open",
                                                              "Normal"), stamp(clock),
                              lambda: desk.set_priority(number, 4))
    assert answers[0].status_code == 200 and answers[0].json["result"] == "unchanged"
    assert ticket_row(ivr, number).priority == 4
    assert sender(ivr, clock).drain()["sent"] == 1
    assert fake.tickets[remote_id]["priority"] == "low"


def test_an_older_delivery_overtaken_while_it_is_applied_does_not_undo_the_newer_one(
        app, simulator, ivr, fake, clock, monkeypatch):
    """Two workers: Solved (signed first) waits to close the ticket while a reopening
    delivery (signed after it, the priority unchanged, so nothing to apply) is received.
    Solved then finds a newer delivery seen, and changes nothing."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    clock.advance(minutes=2)
    newer = []
    answers = delivered_while(
        app, monkeypatch, trigger_body(remote_id, number, "Solved", "Urgent"),
        at_time(clock, 30),
        lambda: newer.append(post_hook(app, trigger_body(remote_id, number, "Open", "Urgent"),
                                       at_time(clock))))
    assert newer[0].json["result"] == "unchanged"
    assert answers[0].status_code == 200 and answers[0].json["result"] == "unchanged"
    assert ticket_row(ivr, number).status == "in_queue"


def test_a_newer_delivery_read_before_an_older_one_changes_the_ticket_still_wins(
        app, simulator, ivr, fake, clock, monkeypatch):
    """PostgreSQL: a newer delivery (Urgent, what the ticket is: no change) is judged
    while an older one (Low) is applied on another worker. Judged before Low lands and
    remembered after Low looked, it would leave the ticket P4 with Zendesk at Urgent. The
    delivery is judged with the ticket's row locked, so Low waits and then sees it."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two one after the other")
    import threading

    from ivr.helpdesk import webhook

    from ..support import pause, second_waits_for_first

    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    clock.advance(minutes=2)
    reached, release = pause(monkeypatch, webhook, "newest_delivery", before=True,
                             thread="newer")
    answers = {}

    def deliver(name, priority, seconds_ago):
        answers[name] = post_hook(app, trigger_body(remote_id, number, "Open", priority),
                                  at_time(clock, seconds_ago))

    newer = threading.Thread(name="newer", target=deliver, args=("newer", "Urgent", 0))
    older = threading.Thread(name="older", target=deliver, args=("older", "Low", 30))
    second_waits_for_first(ivr, newer, reached, release, older, "the older delivery")
    assert answers["newer"].json["result"] == "unchanged"
    assert answers["older"].json["result"] == "unchanged"
    assert ticket_row(ivr, number).priority == 1


# -- echoes, slow answers, rate limits and retention, once more -------------------------


def test_a_solved_delivery_does_not_put_back_the_priority_the_create_pushed_over_a_waiting_desk_change(
        app, simulator, ivr, fake, clock):
    """P1 created in Zendesk; the desk sets P3 (its push waits); an agent solves the ticket
    in Zendesk. The delivery says "Solved, Urgent": Urgent is only the priority the create
    pushed, nothing changed it in Zendesk. It must close the ticket, not undo the desk's P3."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    Desk.of(ivr).set_priority(number, 3)  # queued, not pushed yet
    clock.advance(seconds=30)
    solved = post_hook(app, trigger_body(remote_id, number, "Solved", "Urgent"), stamp(clock))
    assert solved.status_code == 200
    row = ticket_row(ivr, number)
    assert row.status == "closed"
    assert row.priority == 3, f"the desk's P3 was undone: P{row.priority}"


def test_a_solved_delivery_still_closes_when_the_desk_changes_the_priority_meanwhile(
        app, simulator, ivr, fake, clock, monkeypatch):
    """The delivery's priority is the one the ticket already has (no change asked); an
    engineer changes the priority while the delivery is applied. The close must still
    land: the comment in apply says a change to the other field does not stop it."""
    number = call(simulator, US_LINE, CALLER, 1)
    sender(ivr, clock).drain()
    (remote_id,) = fake.tickets
    answers = delivered_while(app, monkeypatch, trigger_body(remote_id, number, "Solved",
                                                              "Urgent"), stamp(clock),
                              lambda: Desk.of(ivr).set_priority(number, 2))  # at that moment
    assert answers[0].status_code == 200
    assert ticket_row(ivr, number).status == "closed", answers[0].json


@short_time_out
def test_a_zendesk_that_trickles_its_answer_is_given_up_after_the_time_out(
        simulator, ivr, fake, clock):
    """timeout_seconds (0.5 here) is "per request", and the lease is sized on it. A Zendesk
    (or a proxy before it) that sends its answer a byte at a time, each byte inside the
    time-out, must not hold the sender for longer than that: here the answer would take
    4 s, so the push is given up at the time-out and tried again later, not recorded as
    sent once the last byte arrives."""
    import time

    from werkzeug import Response

    plain = fake.json

    def trickled(body, status=200, headers=None):
        if status != 201:
            return plain(body, status, headers)
        text = json.dumps(body).encode()

        def drip():
            for index in range(20):  # 20 x 0.2 s of padding, a byte at a time
                time.sleep(0.2)
                yield b" "
            yield text

        return Response(drip(), status=status, headers=headers or {},
                        content_type="application/json")

    fake.json = trickled
    call(simulator)
    sender(ivr, clock).drain()
    (job,) = jobs(ivr)
    assert (job.status, job.last_error) == ("pending", "no answer within 0.5 s")


def test_a_zendesk_that_trickles_its_answers_head_is_hung_up_on_and_its_ticket_made_once(
        settings, clock, fake, tmp_path):
    """requests' time-out bounds each read from the socket, not the answer: a Zendesk, or
    a proxy before it, that sends the status line and headers a byte at a time, each byte
    well inside the time-out, held the sender until the last header came (for ever, with
    one that never stops), and with it every SMS and push behind it. The sender hangs up
    at timeout_seconds (0.5 here) whatever part of the answer is still coming; the ticket
    Zendesk made meanwhile is the one the retried create gets back (Idempotency-Key), not
    a second."""
    proxy = TricklingProxy(fake.url)  # the head of each answer takes ~10 s
    app = helpdesk_app(settings, clock, tmp_path / "config", proxy.url, timeout=0.5)
    ivr = app.extensions["ivr"]
    try:
        number = call(Simulator(WsgiTransport(app), TOKEN))
        counts = sender(ivr, clock).drain()
        proxy.wait()
        assert proxy.heads == {"whole": 0, "hung_up": 1}
        assert counts["retry"] == 1
        (job,) = jobs(ivr)
        assert (job.status, job.last_error) == ("pending", "no answer within 0.5 s")
        assert [t["external_id"] for t in fake.tickets.values()] == [number]  # it was made

        proxy.trickle = False
        clock.advance(minutes=5)
        assert patient_sender(ivr, clock).drain()["sent"] == 1
        assert len(fake.tickets) == 1
        assert [p["headers"]["Idempotency-Key"] for p in fake.writes()] == \
            [f"phone-ticket-{number}"] * 2
        assert jobs(ivr)[0].remote_id == str(next(iter(fake.tickets)))
    finally:
        proxy.close()
        ivr.storage.dispose()


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_a_zendesk_answer_larger_than_any_ticket_is_not_read_whole_and_is_tried_again(
        simulator, ivr, fake, clock, encoding):
    """A Zendesk (or whatever a mistaken URL reaches) answering a create with a body
    larger than MAX_ANSWER_BYTES, sent at once and without a length, or as a few kilobytes
    of gzip that decode to it: the sender stops reading at the cap, so its memory does
    not grow with the answer, and the push is tried again later with the reason, as after
    a time-out; the next, ordinary answer sends it."""
    import gzip

    from werkzeug import Response

    from ivr.helpdesk.zendesk import MAX_ANSWER_BYTES

    plain = fake.json

    def huge(body, status=200, headers=None):
        if status != 201:
            return plain(body, status, headers)
        text = b" " * (MAX_ANSWER_BYTES + 1) + json.dumps(body).encode()  # valid JSON
        extra = {}
        if encoding:
            text, extra = gzip.compress(text), {"Content-Encoding": encoding}
            assert len(text) < MAX_ANSWER_BYTES // 100
        pieces = (text[i:i + 65536] for i in range(0, len(text), 65536))  # no length
        return Response(pieces, status=status, headers={**(headers or {}), **extra},
                        content_type="application/json")

    fake.json = huge
    number = call(simulator)
    assert sender(ivr, clock).drain()["retry"] == 1
    (job,) = jobs(ivr)
    assert job.status == "pending" and job.remote_id is None
    assert job.last_error == (f"HTTP 201: the answer was larger than {MAX_ANSWER_BYTES} "
                              "bytes, more than any ticket's")
    fake.json = plain
    clock.advance(minutes=5)
    assert sender(ivr, clock).drain()["sent"] == 1
    assert len(fake.tickets) == 1  # the retried create found the ticket the first one made
    assert jobs(ivr)[0].remote_id == str(next(iter(fake.tickets)))
    assert ticket_row(ivr, number).number == number


def test_a_refusal_with_a_huge_body_is_still_judged_by_its_status(simulator, ivr, fake,
                                                                   clock):
    """A 401 whose body runs past the cap (an HTML error page of a proxy) fails the push
    at once, as any 401 does, with the start of that body as the reason."""
    from werkzeug import Response

    from ivr.helpdesk.zendesk import MAX_ANSWER_BYTES

    plain = fake.json

    def refused(body, status=200, headers=None):
        if status != 201:
            return plain(body, status, headers)
        page = b"<html>Access denied " + b"x" * (2 * MAX_ANSWER_BYTES)
        return Response((page[i:i + 65536] for i in range(0, len(page), 65536)), status=401,
                        content_type="text/html")

    fake.json = refused
    call(simulator)
    assert sender(ivr, clock).drain()["failed"] == 1
    (job,) = jobs(ivr)
    assert job.status == "failed"
    assert job.last_error.startswith("HTTP 401: <html>Access denied xxx")


def test_a_late_echo_of_an_older_push_does_not_undo_the_desks_newest_change(
        app, simulator, ivr, fake, clock):
    """The desk pushes P3, then P2; it then sets P4, not pushed yet. Zendesk's echo of the
    P3 push (a trigger without the Current user condition) comes late, after the P2 push.
    Nothing changed the priority in Zendesk: the desk's P4 must stand and go out."""
    number, remote_id, desk = p3_pushed(simulator, ivr, fake, clock)
    echo_of_p3 = signed(trigger_body(remote_id, number, "Open", "Normal"), stamp(clock))
    desk.set_priority(number, 2)
    assert sender(ivr, clock).drain()["sent"] == 1
    desk.set_priority(number, 4)
    clock.advance(seconds=5)
    late = app.test_client().post("/hooks/zendesk", data=echo_of_p3[0], headers=echo_of_p3[1])
    assert late.status_code == 200
    sender(ivr, clock).drain()
    assert (ticket_row(ivr, number).priority, fake.tickets[remote_id]["priority"]) == \
        (4, "low"), late.json


@pytest.mark.parametrize("value", ["0", "-60", "Thu, 01 Jan 2026 00:00:00 GMT"])
def test_a_rate_limit_asking_for_no_wait_is_not_hammered_every_round(simulator, ivr, fake,
                                                                     clock, value):
    """A 429 does not count as a failure, so it is never given up: with "Retry-After: 0"
    (or negative, or a date already past, e.g. clocks apart) it must still wait some
    back-off, not go out again on the next round of `outbox drain --watch` (2 s later),
    for ever."""
    call(simulator)
    fake.fail_next(50, 429, {"Retry-After": value})
    for _ in range(10):
        sender(ivr, clock).drain()
        clock.advance(seconds=2)  # the --watch loop's interval
    sent = len(fake.requests)
    assert sent <= 2, f"{sent} requests in 20 s, and the push is still {jobs(ivr)[0].status}"


@short_time_out
def test_a_create_given_up_on_time_outs_then_dropped_by_retention_does_not_make_a_second_ticket(
        simulator, ivr, fake, clock, cli):
    """Zendesk made the ticket but answered too late, every time: the create is given up.
    The desk closes the ticket (its push waits behind the failed create). After the
    retention period the failed create is dropped and the close "creates the ticket as it
    then stands": Zendesk forgot the Idempotency-Key long ago, so it must look the ticket up
    by external_id first, not POST a second ticket."""
    import time

    number = call(simulator)
    fake.delay = 1.0  # each create lands in Zendesk; its answer comes after the 0.5 s time-out
    for _ in range(ivr.config.helpdesk.max_attempts):
        sender(ivr, clock).drain()
        time.sleep(0.6)  # the fake finishes answering the request the sender gave up on
        clock.advance(hours=1)
    fake.delay = 0
    assert jobs(ivr)[0].status == "failed" and len(fake.tickets) == 1
    Desk.of(ivr).close(number)
    clock.advance(days=91)
    assert cli("retention", "apply").exit_code == 0
    fake.keys.clear()  # Zendesk keeps idempotency keys for a couple of hours
    patient_sender(ivr, clock).drain()
    assert [t["external_id"] for t in fake.tickets.values()] == [number]
    # The ticket found there is brought to how it stands here: the close is not lost.
    (ticket,) = fake.tickets.values()
    assert ticket["status"] == "solved" and [j.status for j in jobs(ivr)] == ["sent"]


def test_a_rate_limit_asking_for_a_week_does_not_stop_every_push_for_a_day(simulator, ivr,
                                                                            fake, clock):
    """One 429 holds every pending push. A Retry-After far beyond any Zendesk rate-limit
    window (a proxy's mistake) must not stop P1 pushes for longer than max_backoff_seconds."""
    call(simulator)
    fake.fail_next(1, 429, {"Retry-After": "604800"})
    sender(ivr, clock).drain()
    (job,) = jobs(ivr)
    wait = (job.next_attempt_at - clock.now).total_seconds()
    assert wait <= ivr.config.helpdesk.max_backoff_seconds, f"every push held {wait:.0f} s"


def test_repeated_rate_limits_asking_for_no_wait_wait_longer_each_time(simulator, ivr, fake,
                                                                       clock):
    """The least wait after a 429 grows as the back-off does (backoff_seconds = 10 here)."""
    call(simulator)
    fake.fail_next(3, 429, {"Retry-After": "0"})
    waits = []
    for _ in range(3):
        assert sender(ivr, clock).drain()["rate_limited"] == 1
        (job,) = jobs(ivr)
        waits.append((job.next_attempt_at - clock.now).total_seconds())
        clock.now = job.next_attempt_at
    assert waits == [10, 20, 40] and jobs(ivr)[0].failures == 0
    assert sender(ivr, clock).drain()["sent"] == 1


# -- answers not shaped like Zendesk's -----------------------------------------------------


def zendesk_client(httpserver):
    from ivr.helpdesk.zendesk import Zendesk

    return Zendesk(httpserver.url_for("/").rstrip("/"), EMAIL, API_TOKEN, timeout=TIMEOUT)


PHONE_TICKET = {"external_id": "48151623", "subject": "Phone ticket 48151623", "note": "n",
                "priority": 2, "requester_email": None}


@pytest.mark.parametrize("answer", [
    {"tickets": ["x"]}, {"tickets": [{}]}, {"tickets": 5}, {"tickets": {"id": 1}},
    {"tickets": [{"id": None}]}, {"tickets": [{"id": "../9001"}]}, {"tickets": [{"id": True}]},
])
def test_a_lookup_answered_in_a_shape_zendesk_never_gives_is_tried_again_not_an_exception(
        httpserver, answer):
    """A create retried after Zendesk forgot its key looks the ticket up first. An answer
    whose first ticket is not an object with a numeric id (a proxy's page, another API
    behind a mistaken URL) neither stops the sender's round with an exception nor makes
    it create a second ticket: the push is tried again later, saying why."""
    import math

    from ivr.helpdesk.base import NewTicket

    httpserver.expect_request("/api/v2/tickets.json", method="GET").respond_with_json(answer)
    result = zendesk_client(httpserver).create(NewTicket(**PHONE_TICKET), retried=True,
                                               first_try_age=math.inf)
    assert (result.outcome, result.message) == (
        "retry", f"the lookup's answer from {httpserver.url_for('/').rstrip('/')} holds no "
                 "Zendesk ticket with an id")
    assert [r.method for r, _ in httpserver.log] == ["GET"]  # no create sent


@pytest.mark.parametrize("ticket_id", [None, True, "../9001", "9001 ", {"id": 1}, 1.5, -4, ""])
def test_a_create_answered_with_an_id_zendesk_never_gives_keeps_no_remote_id(
        httpserver, ticket_id):
    """Zendesk's ticket ids are positive whole numbers; the id is kept and later put in
    the path of every update. Anything else is an answer without an id (the sender tries
    the create again; its Idempotency-Key makes that safe), never 'None' or a path."""
    from ivr.helpdesk.base import NewTicket

    httpserver.expect_request("/api/v2/tickets.json", method="POST").respond_with_json(
        {"ticket": {"id": ticket_id}}, status=201)
    result = zendesk_client(httpserver).create(NewTicket(**PHONE_TICKET), retried=False,
                                               first_try_age=0.0)
    assert (result.outcome, result.remote_id) == ("ok", None)


@pytest.mark.parametrize("answer, seen", [
    ({"comments": 5}, None), ({"comments": {"body": "x"}}, None),
    ({"comments": [{"body": 5}, {"plain_body": ["x"]}, "x", None]}, False),
    ({"comments": [{"body": None, "plain_body": "... [ivr:job-7] ..."}]}, True),
])
def test_a_note_lookup_answered_in_odd_shapes_is_never_an_exception(httpserver, answer, seen):
    """A retried change first looks whether its note is on the ticket already. Comments
    that are not a list are an answer not understood (tried again later); comments or
    bodies of other types are passed over, not an exception that stops the sender."""
    from ivr.helpdesk.base import TicketChange

    httpserver.expect_request("/api/v2/tickets/9001/comments.json").respond_with_json(answer)
    httpserver.expect_request("/api/v2/tickets/9001.json", method="PUT").respond_with_json(
        {"ticket": {"id": 9001}})
    result = zendesk_client(httpserver).update(
        "9001", TicketChange(marker="[ivr:job-7]", note="Priority changed [ivr:job-7]",
                             priority=2), retried=True)
    if seen is None:
        assert (result.outcome, result.message) == (
            "retry", f"the comments' answer from {httpserver.url_for('/').rstrip('/')} holds "
                     "no list of comments")
        assert [r.method for r, _ in httpserver.log] == ["GET"]
    else:
        assert result.outcome == "ok"
        (put,) = [r for r, _ in httpserver.log if r.method == "PUT"]
        assert ("comment" in put.get_json()["ticket"]) is not seen
