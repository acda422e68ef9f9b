"""The desk's reports over a varied dataset: the figures /admin/calls and /admin/sla show
and the exports' files, against the same figures worked out here from every row."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from collections import Counter

import pytest
from sqlalchemy import select

from ivr.desk import service
from ivr.desk.dashboard import duration
from ivr.desk.service import Desk, Period
from ivr.domain.phones import mask
from ivr.storage.models import Call, Ticket

from ..desk_support import ADMIN_TOKEN, parse_html, signed_in
from ..support import CALLER, US_LINE

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 12, 0, 0, 654_321, tzinfo=UTC)
REGIONS = ("United States", "Japan", "United Kingdom", "unknown")
OUTCOMES = ("routed", "abandoned", "self_service", None)
US = dt.timedelta(microseconds=1)


def _call(sid: str, started: dt.datetime, region: str, outcome: str | None) -> Call:
    return Call(call_sid=sid, dialed_number=US_LINE, region=region, language="en-US",
                caller_number=CALLER, can_text=True, step="done", english=False, attempts=0,
                auth_failures=0, steps_reached="menu", outcome=outcome, started_at=started,
                updated_at=started)


def seed(ivr) -> None:
    """Calls and tickets around the default period and its edges: times to the microsecond,
    acknowledgements exactly at the target and a microsecond past it, tickets created
    after the clock's now, responses that tie to the second, accounts a spreadsheet would
    read as formulas."""
    rnd = random.Random(20261125)
    start = dt.datetime(2026, 11, 16, tzinfo=UTC)
    targets = {p: ivr.config.priority(p).target_response_minutes for p in (1, 2, 3, 4)}
    calls, tickets, numbers = [], [], rnd.sample(range(10_001_000, 99_999_999), 400)

    def ticket(sid, created, priority, region, acknowledged, account="demo-business",
               number=None):
        tickets.append(Ticket(
            number=number or str(numbers.pop()), call_sid=sid, account_id=account,
            user_email="owner.business@example.com", priority=priority,
            target_response_minutes=targets[priority], region=region,
            status=rnd.choice(("open", "in_queue", "closed", "callback_requested")),
            created_at=created, acknowledged_at=acknowledged,
            callback_number=rnd.choice((None, "+14155550123", "=1+2"))))

    for i in range(300):
        started = start + dt.timedelta(microseconds=rnd.randrange(11 * 86400 * 10**6))
        region, outcome = rnd.choice(REGIONS), rnd.choice(OUTCOMES)
        sid = f"CA{i:032x}"
        calls.append(_call(sid, started, region, outcome))
        if i % 3:
            priority = rnd.randint(1, 4)
            target = dt.timedelta(minutes=targets[priority])
            acknowledged = rnd.choice((
                None, None, started + target, started + target + US, started + target - US,
                started + rnd.random() * 2 * target, started - dt.timedelta(seconds=90)))
            ticket(sid, started, priority, region, acknowledged,
                   account=rnd.choice(("demo-business", "=HYPERLINK(1)", "-3", "acme")))
    # The edges: a period's first microsecond and the one after its last, the last
    # microsecond of an hour, tickets waiting exactly their target (pending) and a
    # microsecond more (missed), tickets with the same creation time.
    edges = [dt.datetime(2026, 11, 19, tzinfo=UTC), dt.datetime(2026, 11, 26, tzinfo=UTC),
             dt.datetime(2026, 11, 24, 23, 59, 59, 999_999, tzinfo=UTC),
             dt.datetime(2026, 11, 20, 9, 0, 0, 999_999, tzinfo=UTC)]
    for priority in (1, 2, 4):
        target = dt.timedelta(minutes=targets[priority])
        edges += [NOW - target, NOW - target - US]
    same = dt.datetime(2026, 11, 22, 8, 30, 0, 500_000, tzinfo=UTC)
    edges += [same] * 5
    slow = dt.datetime(2026, 11, 19, 1, 0, tzinfo=UTC)
    for i, moment in enumerate(edges):
        sid = f"CE{i:032x}"
        calls.append(_call(sid, moment, REGIONS[i % 4], OUTCOMES[i % 4]))
        ticket(sid, moment, 1 + i % 4 if i % 4 != 2 else 2, REGIONS[i % 4], None)
    # The slowest responses: twelve of the same whole seconds, the longer to the
    # microsecond the higher the number, so ten by seconds then number are not the ten
    # longest.
    for i in range(12):
        sid = f"CS{i:032x}"
        created = slow + dt.timedelta(microseconds=i * 100_000)
        calls.append(_call(sid, created, "Japan", "routed"))
        ticket(sid, created, 4, "Japan", created + dt.timedelta(days=30, microseconds=i * 7),
               number=f"{10_000_100 + i}")
    with ivr.storage.transaction() as session:
        session.add_all(calls)
        session.flush()
        session.add_all(tickets)


# -- the figures, worked out from every row ----------------------------------------------


def every_row(ivr):
    with ivr.storage.reading() as session:
        calls = [(c.region, c.outcome, c.started_at) for c in session.scalars(select(Call))]
        tickets = [dict(id=t.id, number=t.number, call_sid=t.call_sid,
                        account_id=t.account_id, user_email=t.user_email,
                        priority=t.priority, target=t.target_response_minutes,
                        region=t.region, status=t.status, created=t.created_at,
                        acknowledged=t.acknowledged_at, connected=t.connected_at,
                        closed=t.closed_at, callback=t.callback_number)
                   for t in session.scalars(select(Ticket))]
    return calls, tickets


def expected_traffic(calls, period):
    inside = [c for c in calls if period.since <= c[2] < period.until]
    counts = Counter((region, outcome or "in_progress") for region, outcome, _ in inside)
    hours = Counter(started.hour for _, _, started in inside)
    return dict(counts), [hours.get(h, 0) for h in range(24)]


def verdict(t, now):
    target = dt.timedelta(minutes=t["target"])
    if t["acknowledged"] is not None:
        return "met" if t["acknowledged"] - t["created"] <= target else "missed"
    return "missed" if now - t["created"] > target else "pending"


def expected_sla(tickets, period, now):
    inside = [t for t in tickets if period.since <= t["created"] < period.until]
    lines: dict[str, Counter] = {}
    for t in inside:
        for key in ("all", ("priority", t["priority"]), ("region", t["region"])):
            lines.setdefault(key, Counter())[verdict(t, now)] += 1
    slowest = sorted(
        ({"number": t["number"], "priority": t["priority"], "region": t["region"],
          "response_seconds": int(((t["acknowledged"] or now) - t["created"]).total_seconds()),
          "acknowledged": t["acknowledged"] is not None, "verdict": verdict(t, now),
          "target": t["target"]} for t in inside),
        key=lambda r: (-r["response_seconds"], r["number"]))[:10]
    return lines, slowest


def share(counter) -> str:
    decided = counter["met"] + counter["missed"]
    return "–" if not decided else f"{100 * counter['met'] / decided:.1f} %"


def expected_export(ivr, tickets, since, fmt):
    def iso(moment):
        return moment.isoformat() if moment is not None else None

    chosen = sorted((t for t in tickets if since is None or t["created"] >= since),
                    key=lambda t: (t["created"], t["id"]))
    rows = [{
        "id": t["id"], "number": t["number"], "call_sid": t["call_sid"],
        "account_id": t["account_id"], "user_email": t["user_email"],
        "priority": t["priority"], "priority_name": ivr.config.priority(t["priority"]).name,
        "target_response_minutes": t["target"], "region": t["region"], "status": t["status"],
        "created_at": t["created"].isoformat(), "acknowledged_at": iso(t["acknowledged"]),
        "connected_at": iso(t["connected"]), "closed_at": iso(t["closed"]),
        "target_at": (t["created"] + dt.timedelta(minutes=t["target"])).isoformat(),
        "callback_number": mask(t["callback"]) if t["callback"] else t["callback"],
    } for t in chosen]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    out = io.StringIO()
    fields = ["id", "number", "call_sid", "account_id", "user_email", "priority",
              "priority_name", "target_response_minutes", "region", "status", "created_at",
              "acknowledged_at", "connected_at", "closed_at", "target_at", "callback_number"]
    assert not rows or list(rows[0]) == fields
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" and v
                         else v for k, v in row.items()})
    return "\ufeff" + out.getvalue()


# -- the pages ---------------------------------------------------------------------------


@pytest.fixture
def dataset(desk_app, clock):
    clock.now = NOW
    ivr = desk_app.extensions["ivr"]
    seed(ivr)
    return ivr


PERIODS = [
    (None, None),  # the default: the last seven days, today included
    ("2026-11-19", "2026-11-25"),
    ("2026-11-20T09:00:00.999999", "2026-11-24"),
    ("2026-11-22T10:30:00.500000+02:00", None),
    ("2026-11-10", "2026-12-31"),
    ("2026-12-01", "2026-12-02"),  # no calls at all
]


def query(since, until):
    return "&".join(f"{name}={value.replace('+', '%2B')}"
                    for name, value in (("since", since), ("until", until)) if value)


@pytest.mark.parametrize("since, until", PERIODS)
def test_the_calls_page_shows_the_figures_of_every_call_of_the_period(
        desk_app, dataset, since, until):
    period = Period.parse(since, until, NOW)
    counts, hours = expected_traffic(every_row(dataset)[0], period)
    response = signed_in(desk_app).get("/admin/calls?" + query(since, until))
    assert response.status_code == 200
    doc = parse_html(response.get_data(as_text=True))
    bars = [int(g.attrs["data-calls"]) for g in doc.find("per-hour").iter("g")]
    assert bars == hours
    assert doc.find("per-hour").attrs["aria-label"].endswith(
        f"the busiest hour has {max(hours)} calls")
    caption = next(doc.iter("figcaption")).text()
    assert caption.endswith(f"busiest hour: {max(hours)} calls.")
    if not counts:
        assert not doc.has("outcomes")
        return
    table = doc.find("outcomes")
    outcomes = sorted({o for _, o in counts})
    regions = sorted({r for r, _ in counts})
    header = [th.text() for th in next(table.iter("thead")).iter("th")]
    assert header == ["Region"] + [o.replace("_", " ") for o in outcomes] + ["total"]
    assert [cells for _, cells in table.rows()] == [
        [r] + [str(counts.get((r, o), 0)) for o in outcomes]
        + [str(sum(n for (rr, _), n in counts.items() if rr == r))] for r in regions]
    footer = [c.text() for c in next(table.iter("tfoot")).iter() if c.tag in ("th", "td")]
    assert footer == ["all"] + [str(sum(n for (_, oo), n in counts.items() if oo == o))
                                for o in outcomes] + [str(sum(counts.values()))]


@pytest.mark.parametrize("since, until", PERIODS)
def test_the_sla_page_shows_the_figures_of_every_ticket_of_the_period(
        desk_app, dataset, since, until):
    period = Period.parse(since, until, NOW)
    lines, slowest = expected_sla(every_row(dataset)[1], period, NOW)
    response = signed_in(desk_app).get("/admin/sla?" + query(since, until))
    assert response.status_code == 200
    doc = parse_html(response.get_data(as_text=True))
    overall = lines.get("all", Counter())
    assert doc.find("overall").text() == share(overall)
    summary = [p.text() for p in doc.iter("p") if "Overall:" in p.text()]
    assert summary == [f"Overall: {share(overall)} ({overall['met']} met, {overall['missed']} "
                       f"missed, {overall['pending']} pending)"]
    for table, kind, label in (("by-priority", "priority", "P{}"), ("by-region", "region", "{}")):
        keys = sorted(key[1] for key in lines if key != "all" and key[0] == kind)
        want = [[label.format(k), share(lines[(kind, k)]), str(lines[(kind, k)]["met"]),
                 str(lines[(kind, k)]["missed"]), str(lines[(kind, k)]["pending"]),
                 str(sum(lines[(kind, k)].values()))] for k in keys]
        if want:
            assert [cells for _, cells in doc.find(table).rows()] == want
        else:
            assert not doc.has(table)
    if slowest:
        assert [cells for _, cells in doc.find("slowest").rows()] == [
            [r["number"], f"P{r['priority']}", r["region"],
             duration(r["response_seconds"]) + ("" if r["acknowledged"] else " (waiting)"),
             duration(r["target"] * 60), r["verdict"]] for r in slowest]
    else:
        assert not doc.has("slowest")


@pytest.mark.parametrize("since, until", PERIODS)
def test_the_desk_reports_hold_the_exact_figures_of_every_row(dataset, since, until):
    """The figures behind the pages, to the second: what the rounding of a page hides."""
    period = Period.parse(since, until, NOW)
    calls, tickets = every_row(dataset)
    desk = Desk.of(dataset)
    traffic = desk.traffic(period)
    counts, hours = expected_traffic(calls, period)
    assert (traffic.counts, traffic.by_hour) == (counts, hours)
    assert traffic.regions == sorted({r for r, _ in counts})
    assert traffic.outcomes == sorted({o for _, o in counts})
    lines, slowest = expected_sla(tickets, period, NOW)
    report = desk.sla(period)

    def figures(line):
        return (line.met, line.missed, line.pending)

    overall = lines.get("all", Counter())
    assert figures(report.overall) == (overall["met"], overall["missed"], overall["pending"])
    assert [(line.key, figures(line)) for line in report.by_priority] == [
        (f"P{k}", (c["met"], c["missed"], c["pending"]))
        for (kind, k), c in sorted((key, c) for key, c in lines.items()
                                   if key != "all" and key[0] == "priority")]
    assert [(line.key, figures(line)) for line in report.by_region] == [
        (k, (c["met"], c["missed"], c["pending"]))
        for (kind, k), c in sorted((key, c) for key, c in lines.items()
                                   if key != "all" and key[0] == "region")]
    assert [(r["number"], r["response_seconds"], r["verdict"]) for r in report.slowest] == [
        (r["number"], r["response_seconds"], r["verdict"]) for r in slowest]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("since", [None, "2026-11-22", "2026-11-22T08:30:00.5", "2027-01-01"])
def test_the_export_holds_every_ticket_since_the_date_oldest_first(
        desk_app, dataset, monkeypatch, fmt, since):
    # Small batches, so the export crosses batch boundaries, some between equal times.
    monkeypatch.setattr(service, "EXPORT_BATCH", 7, raising=False)
    moment = service.parse_moment(since, "since") if since else None
    want = expected_export(dataset, every_row(dataset)[1], moment, fmt)
    response = signed_in(desk_app).get(f"/admin/export?format={fmt}"
                                       + (f"&since={since}" if since else ""))
    assert response.status_code == 200
    assert response.get_data(as_text=True) == want
    command = desk_app.test_cli_runner().invoke(
        args=["tickets", "export", "--format", fmt] + (["--since", since] if since else []))
    assert command.exit_code == 0 and command.output == want


def test_the_api_lists_page_through_every_call_and_ticket_once(desk_app, dataset):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = desk_app.test_client()
    calls, tickets = every_row(dataset)
    for name, rows in (("calls", calls), ("tickets", tickets)):
        seen, page = [], 1
        while True:
            body = client.get(f"/api/{name}?per_page=37&page={page}", headers=headers).json
            assert body["total"] == len(rows)
            seen += [item.get("call_sid") for item in body[name]]
            if page >= body["pages"]:
                break
            page += 1
        assert len(seen) == len(rows) and len(set(seen)) == len(rows)


# -- what a long period costs ------------------------------------------------------------


def add_calls(ivr, count: int, tag: str) -> None:
    """``count`` calls in the same few regions, outcomes and hours of 2026-11-24."""
    combos = [(r, o, h) for r in REGIONS[:2] for o in OUTCOMES[:2] for h in (3, 9, 17)]
    with ivr.storage.transaction() as session:
        session.add_all(
            _call(f"C{tag}{i:031x}", dt.datetime(2026, 11, 24, h, i % 60, tzinfo=UTC), r, o)
            for i, (r, o, h) in enumerate(combos[i % len(combos)] for i in range(count)))


def add_tickets(ivr, count: int, tag: str) -> None:
    """``count`` tickets of 2026-11-24 and 25 of two priorities and regions, met, missed
    and pending."""
    base = dt.datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    with ivr.storage.transaction() as session:
        for i in range(count):
            priority, region = 1 + i % 2, REGIONS[(i // 2) % 2]
            target = dt.timedelta(minutes=ivr.config.priority(priority).target_response_minutes)
            created = NOW - dt.timedelta(minutes=5) if i % 3 == 2 else base + i * US
            acknowledged = (created + target / 2, None, None)[i % 3]
            sid = f"T{tag}{i:031x}"
            session.add(_call(sid, created, region, "routed"))
            session.flush()
            session.add(Ticket(
                number=f"{tag}{i:07d}"[-8:].replace("a", "1").replace("b", "2"), call_sid=sid,
                account_id="acme", user_email="a@example.com", priority=priority,
                target_response_minutes=target // dt.timedelta(minutes=1), region=region,
                status="open", created_at=created, acknowledged_at=acknowledged))


def test_the_calls_page_reads_no_more_rows_for_a_year_of_calls_than_for_a_day(
        desk_app, clock):
    from ..desk_support import rows_read

    clock.now = NOW
    ivr = desk_app.extensions["ivr"]
    client = signed_in(desk_app)
    add_calls(ivr, 24, "a")
    with rows_read(ivr.storage) as few:
        first = client.get("/admin/calls?since=2026-11-24&until=2026-11-24")
    add_calls(ivr, 96, "b")
    with rows_read(ivr.storage) as many:
        then = client.get("/admin/calls?since=2026-11-24&until=2026-11-24")
    assert first.status_code == then.status_code == 200
    bars = {int(g.attrs["data-hour"]): int(g.attrs["data-calls"])
            for g in parse_html(then.get_data(as_text=True)).find("per-hour").iter("g")}
    assert {h: n for h, n in bars.items() if n} == {3: 40, 9: 40, 17: 40}
    # Counted by the database: the page reads its groups, not the calls.
    assert many.total == few.total


def test_the_sla_page_reads_no_more_rows_for_a_year_of_tickets_than_for_a_day(
        desk_app, clock):
    from ..desk_support import rows_read

    clock.now = NOW
    ivr = desk_app.extensions["ivr"]
    client = signed_in(desk_app)
    add_tickets(ivr, 24, "1")
    with rows_read(ivr.storage) as few:
        first = client.get("/admin/sla?since=2026-11-24")
    add_tickets(ivr, 96, "2")
    with rows_read(ivr.storage) as many:
        then = client.get("/admin/sla?since=2026-11-24")
    assert first.status_code == then.status_code == 200
    doc = parse_html(then.get_data(as_text=True))
    assert [cells for _, cells in doc.find("by-priority").rows()] == [
        ["P1", "50.0 %", "20", "20", "20", "60"], ["P2", "50.0 %", "20", "20", "20", "60"]]
    assert len(doc.find("slowest").rows()) == 10
    assert many.total == few.total


def test_the_slowest_responses_say_they_are_the_first_few_of_the_period_and_link_the_export(
        desk_app, clock):
    clock.now = NOW
    ivr = desk_app.extensions["ivr"]
    add_tickets(ivr, 24, "1")
    doc = parse_html(signed_in(desk_app).get("/admin/sla?since=2026-11-24")
                     .get_data(as_text=True))
    note = doc.find("slowest-shown")
    assert note.text() == ("The 10 slowest of 24 tickets in this period. The export has "
                           "every ticket created since 2026-11-24.")
    link = next(note.iter("a"))
    assert link.attrs["href"] == "/admin/export?format=csv&since=2026-11-24"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_the_export_is_streamed_in_batches_not_built_whole(desk_app, clock, monkeypatch, fmt):
    from ..desk_support import rows_read

    monkeypatch.setattr(service, "EXPORT_BATCH", 7, raising=False)
    clock.now = NOW
    ivr = desk_app.extensions["ivr"]
    add_tickets(ivr, 30, "1")
    client = signed_in(desk_app)
    with rows_read(ivr.storage) as dashboard:
        response = client.get(f"/admin/export?format={fmt}")
        body = response.get_data(as_text=True)
    with rows_read(ivr.storage) as command:
        output = desk_app.test_cli_runner().invoke(args=["tickets", "export", "--format", fmt])
    assert output.exit_code == 0 and output.output == body
    assert body.count("acme") == 30
    assert dashboard.most <= 7 and command.most <= 7


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_under_the_server_front_the_export_is_read_a_batch_at_a_time_as_it_is_sent(
        desk_app, clock, monkeypatch, fmt):
    """The asyncio front made every answer whole on the app's thread before sending it: a
    year of tickets in one worker's memory, and that worker's webhooks waiting until the
    last batch was read. The dashboard's export is read a batch at a time as the client
    takes the file, and is the same file as the command's."""
    import asyncio

    from ivr.edge import BufferingFront
    from ivr.storage.desk_queries import DeskRepository

    monkeypatch.setattr(service, "EXPORT_BATCH", 7, raising=False)
    clock.now = NOW
    ivr = desk_app.extensions["ivr"]
    add_tickets(ivr, 30, "1")
    client = signed_in(desk_app)
    cookie = client.get_cookie("ivr_admin", path="/admin")
    batches, read_when_sent = [], []
    tickets_from = DeskRepository.tickets_from

    def counted(self, *args):
        batches.append(True)
        return tickets_from(self, *args)

    monkeypatch.setattr(DeskRepository, "tickets_from", counted)
    sent = []

    async def taken(message):
        sent.append(message)
        if message.get("body"):
            read_when_sent.append(len(batches))

    async def request():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": "/admin/export",
             "root_path": "", "query_string": f"format={fmt}".encode(), "scheme": "http",
             "headers": [(b"host", b"localhost"),
                         (b"cookie", f"ivr_admin={cookie.value}".encode())],
             "server": ("localhost", 80), "client": ("127.0.0.1", 40000)}
    asyncio.run(BufferingFront(desk_app)(scope, request, taken))
    assert sent[0]["status"] == 200
    assert len(batches) == 5  # 30 tickets, 7 a batch
    assert read_when_sent[0] == 1 and read_when_sent[-1] == 5
    output = desk_app.test_cli_runner().invoke(args=["tickets", "export", "--format", fmt])
    assert b"".join(m.get("body", b"") for m in sent).decode() == output.output
