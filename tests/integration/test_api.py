"""The support desk's JSON API: bearer token, filters, paging, ticket changes, errors."""

import base64
import re

import pytest

from ..desk_support import ADMIN_TOKEN, add_call, add_ticket, admin_app, at
from ..support import BUSINESS_OWNER, CALLER, TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def app(desk_app):
    return desk_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def get(client):
    def get(path, **params):
        response = client.get(path, query_string=params, headers=AUTH)
        assert response.is_json, response.get_data(as_text=True)
        return response
    return get


@pytest.fixture
def patch(client):
    def patch(path, body):
        response = client.patch(path, json=body, headers=AUTH)
        assert response.is_json, response.get_data(as_text=True)
        return response
    return patch


# -- access ------------------------------------------------------------------------------


def test_without_an_admin_token_configured_the_api_is_off_and_says_so(settings, clock):
    app = admin_app(settings, clock, token=None)
    response = app.test_client().get("/api/tickets", headers=AUTH)
    assert response.status_code == 404
    assert response.get_json() == {"error": "the admin API is disabled: set IVR_ADMIN_TOKEN"}


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x",
    f"Bearer {ADMIN_TOKEN[:-1]}", "Bearer ünïcode-token", f"Bearer {TOKEN}",
])
def test_a_missing_or_wrong_token_gets_401_with_a_json_error(client, header):
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [("get", "/api/tickets"), ("get", "/api/calls"),
                         ("get", "/api/tickets/1"), ("patch", "/api/tickets/1")]:
        response = getattr(client, method)(path, headers=headers, json={"status": "closed"})
        assert response.status_code == 401
        assert response.get_json()["error"].startswith("missing or wrong token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_tokens_from_one_address_are_limited_but_a_right_token_is_always_served(
        app, client, caplog):
    """Wrong or missing tokens count per client address, like sign-in attempts: past ten a
    minute they get 429 with Retry-After and no longer write a log line each. A right
    token from the same address (an engineer behind the same NAT as the script) is served
    all the same, and another address is not held back."""
    import logging

    from ..floor_support import add_engineer

    personal = add_engineer(app.extensions["ivr"])
    wrong = {"Authorization": f"Bearer {ADMIN_TOKEN}x"}
    caplog.set_level(logging.WARNING, logger="ivr.api")
    statuses = [client.get("/api/tickets", headers=headers).status_code
                for headers in [wrong] * 5 + [{}] * 5]
    assert statuses == [401] * 10
    for _ in range(20):
        response = client.get("/api/tickets", headers=wrong)
        assert response.status_code == 429
        assert response.get_json()["error"].startswith("too many wrong or missing tokens")
        assert 0 < int(response.headers["Retry-After"]) <= 60
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 10
    assert client.get("/api/tickets", headers=AUTH).status_code == 200
    assert client.get("/api/tickets",
                      headers={"Authorization": f"Bearer {personal}"}).status_code == 200
    assert client.patch("/api/tickets/1", json={"status": "closed"},
                        headers=AUTH).status_code == 404  # served: no such ticket
    other = client.get("/api/tickets", headers=wrong,
                       environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 401


def test_the_scheme_is_case_insensitive(client):
    response = client.get("/api/tickets", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200


def test_unknown_paths_and_methods_under_the_api_answer_in_json(client):
    assert client.get("/api/nothing", headers=AUTH).get_json()["error"]
    response = client.delete("/api/tickets/1", headers=AUTH)
    assert response.status_code == 405 and response.is_json


# -- tickets -----------------------------------------------------------------------------


def test_a_ticket_from_a_call_is_listed_with_the_caller_masked(simulator, get):
    result = simulator.call("+18887999666", CALLER,
                            ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "2"])
    body = get("/api/tickets").get_json()
    assert (body["total"], body["page"], body["per_page"], body["pages"]) == (1, 1, 50, 1)
    (ticket,) = body["tickets"]
    assert (ticket["number"], ticket["priority"], ticket["priority_name"]) == (
        result.ticket, 2, "high")
    assert (ticket["status"], ticket["region"], ticket["seconds_left"]) == (
        "in_queue", "United States", 240 * 60)
    assert ticket["caller"] == "…0100"
    assert CALLER not in str(body) and CALLER[1:] not in str(body)


@pytest.fixture
def tickets(ivr):
    made = {
        "us-p1-open": add_ticket(ivr, created=at("2026-11-25 09:00"), priority=1),
        "jp-p2-queue": add_ticket(ivr, created=at("2026-11-24 09:00"), priority=2,
                                  region="Japan", status="in_queue"),
        "jp-p1-closed": add_ticket(ivr, created=at("2026-11-20 09:00"), priority=1,
                                   region="Japan", status="closed"),
        "uk-p4-open": add_ticket(ivr, created=at("2026-11-23 09:00"), priority=4,
                                 region="United Kingdom"),
    }
    return {ticket.number: name for name, ticket in made.items()}


@pytest.mark.parametrize("params, expected", [
    ({}, ["us-p1-open", "jp-p2-queue", "uk-p4-open", "jp-p1-closed"]),
    ({"status": "open"}, ["us-p1-open", "uk-p4-open"]),
    ({"status": "open,in_queue"}, ["us-p1-open", "jp-p2-queue", "uk-p4-open"]),
    ({"priority": "1"}, ["us-p1-open", "jp-p1-closed"]),
    ({"region": "Japan"}, ["jp-p2-queue", "jp-p1-closed"]),
    ({"region": "Japan", "priority": "2"}, ["jp-p2-queue"]),
    ({"since": "2026-11-23"}, ["us-p1-open", "jp-p2-queue", "uk-p4-open"]),
    ({"until": "2026-11-23"}, ["uk-p4-open", "jp-p1-closed"]),
    ({"since": "2026-11-23T10:00:00Z", "until": "2026-11-25T08:59:59+00:00"}, ["jp-p2-queue"]),
])
def test_tickets_are_filtered_newest_first(get, tickets, params, expected):
    body = get("/api/tickets", **params).get_json()
    assert [tickets[t["number"]] for t in body["tickets"]] == expected
    assert body["total"] == len(expected)


def test_tickets_come_in_pages_with_the_total(get, tickets):
    first = get("/api/tickets", per_page=3).get_json()
    second = get("/api/tickets", per_page=3, page=2).get_json()
    beyond = get("/api/tickets", per_page=3, page=9).get_json()
    assert [len(first["tickets"]), len(second["tickets"]), len(beyond["tickets"])] == [3, 1, 0]
    assert first["total"] == second["total"] == 4 and first["pages"] == 2
    assert {t["number"] for t in first["tickets"] + second["tickets"]} == set(tickets)


def test_tickets_are_walked_page_after_page_with_a_cursor_instead_of_an_offset(get, ivr):
    """As calls are: every answer has ``next``, given back as ``after`` to start the next
    page where the last one ended, through the index rather than an OFFSET. Tickets
    logged at the same moment are neither lost nor listed twice."""
    same = at("2026-11-24 08:00")
    made = [add_ticket(ivr, created=same, priority=1) for _ in range(3)]
    made += [add_ticket(ivr, created=at(f"2026-11-2{d} 10:00"), priority=4) for d in (1, 2, 5)]
    first = get("/api/tickets", per_page=2).get_json()
    assert first["page"] == 1 and first["total"] == 6 and first["next"]
    seen, cursor = [t["number"] for t in first["tickets"]], first["next"]
    while cursor:
        body = get("/api/tickets", per_page=2, after=cursor).get_json()
        assert body["page"] is None and body["total"] == 6 and len(body["tickets"]) <= 2
        seen += [t["number"] for t in body["tickets"]]
        cursor = body["next"]
    by_page = [t["number"] for t in get("/api/tickets", per_page=200).get_json()["tickets"]]
    assert seen == by_page and sorted(seen) == sorted(t.number for t in made)
    # Filters hold on every page; the last page says there is no next.
    urgent = get("/api/tickets", priority=1, per_page=2).get_json()
    rest = get("/api/tickets", priority=1, per_page=2, after=urgent["next"]).get_json()
    assert [t["priority"] for t in rest["tickets"]] == [1] and rest["next"] is None
    assert get("/api/tickets", per_page=200).get_json()["next"] is None


@pytest.mark.parametrize("params, message", [
    ({"status": "lost"}, "status: 'lost' is not one of open, in_queue"),
    ({"status": ""}, "status: '' is not one of"),
    ({"priority": "5"}, "priority: '5' is not a whole number from 1 to 4"),
    ({"priority": "x"}, "priority: 'x' is not a whole number"),
    ({"priority": "²"}, "priority: '²' is not a whole number"),
    ({"region": "Mars"}, "region: 'Mars' is not one of Australia, France"),
    ({"region": "Japan,France"}, "region: give one region"),
    ({"since": "soon"}, "since: 'soon' is not a date"),
    ({"since": "2026-11-25", "until": "2026-11-01"}, "until: the end of the range"),
    ({"page": "0"}, "page: '0' is not a whole number of at least 1"),
    ({"per_page": "201"}, "per_page: '201' is not a whole number from 1 to 200"),
    ({"per_page": "99999999999999999999"}, "per_page: "),
    ({"colour": "red"}, "'colour' is not a filter here"),
    ({"status": ["open", "closed"]}, "status: give it once"),
])
def test_a_bad_filter_gets_400_saying_what_is_wrong(get, params, message):
    response = get("/api/tickets", **params)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_one_ticket_is_found_by_number_or_id(get, ivr):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"), callback_number="+14155550123")
    by_number = get(f"/api/tickets/{ticket.number}").get_json()
    assert by_number == get(f"/api/tickets/{ticket.id}").get_json()
    assert by_number["callback_number"] == "+14155550123" and by_number["caller"] == "…0100"
    assert (by_number["seconds_left"], by_number["urgency"]) == (0, "overdue")


@pytest.mark.parametrize("ref", ["99999999", "abc", "0", "²", "1" * 30])
def test_an_unknown_ticket_gets_404(get, patch, ref):
    for response in (get(f"/api/tickets/{ref}"), patch(f"/api/tickets/{ref}", {"status": "closed"})):
        assert response.status_code == 404
        assert response.get_json()["error"].startswith("no ticket with id or number")


def test_patch_moves_a_ticket_on_and_reclassifies_it(patch, ivr, clock):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:30"), priority=3)
    response = patch(f"/api/tickets/{ticket.number}", {"status": "callback_requested",
                                                       "priority": 1})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["priority"], body["target_response_minutes"]) == (
        "callback_requested", 1, 60)
    assert body["updated_at"] == clock.now.isoformat() and body["seconds_left"] == 1800
    body = patch(f"/api/tickets/{ticket.id}", {"status": "connected"}).get_json()
    assert body["connected_at"] == clock.now.isoformat()


def test_patch_refuses_a_move_the_lifecycle_forbids_with_409(patch, ivr):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:30"), status="closed")
    response = patch(f"/api/tickets/{ticket.number}", {"status": "open"})
    assert response.status_code == 409
    assert response.get_json() == {"error": f"ticket {ticket.number} cannot go from closed to "
                                             "open (allowed from closed: none: it is final)"}
    # Only a call puts its caller in a queue: the desk cannot, whoever is on the line.
    ticket = add_ticket(ivr, created=at("2026-11-25 11:30"))
    response = patch(f"/api/tickets/{ticket.number}", {"status": "in_queue"})
    assert response.status_code == 409
    assert response.get_json() == {"error": f"ticket {ticket.number} cannot go from open to "
                                             "in_queue (allowed from open: callback_requested, "
                                             "connected, closed)"}


@pytest.mark.parametrize("body, message", [
    (None, "send a JSON object"),
    ([1, 2], "send a JSON object"),
    ({}, "nothing to change"),
    ({"status": 3}, "status: 3 is not one of"),
    ({"status": "done"}, "status: 'done' is not one of"),
    ({"priority": "2"}, "priority: '2' is not a priority from 1 to 4"),
    ({"priority": 0}, "priority: 0 is not a priority"),
    ({"priority": 2.5}, "priority: 2.5 is not a priority"),
    ({"number": "123"}, "'number' cannot be changed"),
])
def test_patch_refuses_a_bad_body_with_400(client, ivr, body, message):
    ticket = add_ticket(ivr, created=at("2026-11-25 11:30"))
    if body is None:
        response = client.patch(f"/api/tickets/{ticket.number}", data="status=closed",
                                headers=AUTH)
    else:
        response = client.patch(f"/api/tickets/{ticket.number}", json=body, headers=AUTH)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


# -- calls -------------------------------------------------------------------------------


def test_calls_are_filtered_and_paged_with_callers_masked(get, ivr):
    add_ticket(ivr, created=at("2026-11-25 09:00"), priority=2, region="Japan")
    add_call(ivr, started=at("2026-11-25 10:00"), outcome="abandoned")
    add_call(ivr, started=at("2026-11-24 10:00"), region="France", outcome="failed_auth",
             caller="+33612345678")
    body = get("/api/calls").get_json()
    assert body["total"] == 3
    assert [c["outcome"] for c in body["calls"]] == ["abandoned", "routed", "failed_auth"]
    assert [c["caller"] for c in body["calls"]] == ["…0100", "…0100", "…5678"]
    assert "+33612345678" not in str(body) and CALLER not in str(body)
    routed = body["calls"][1]
    assert routed["priority"] == 2 and routed["ticket"] and routed["region"] == "Japan"
    assert [c["outcome"] for c in get("/api/calls", priority=2).get_json()["calls"]] == ["routed"]
    assert get("/api/calls", outcome="abandoned,failed_auth").get_json()["total"] == 2
    assert get("/api/calls", region="France").get_json()["calls"][0]["outcome"] == "failed_auth"
    assert get("/api/calls", until="2026-11-24").get_json()["total"] == 1
    page = get("/api/calls", per_page=1, page=3).get_json()
    assert page["total"] == 3 and page["calls"][0]["outcome"] == "failed_auth"


def test_calls_are_walked_page_after_page_with_a_cursor_instead_of_an_offset(get, ivr):
    """Deep pages of a year of calls cost an OFFSET that reads every call before them; the
    ``next`` cursor of each answer, given back as ``after``, starts the next page where
    the last one ended. Calls that started at the same moment are neither lost nor twice."""
    same = at("2026-11-24 08:00")
    sids = [add_call(ivr, started=same, outcome="routed") for _ in range(3)]
    sids += [add_call(ivr, started=at(f"2026-11-2{d} 10:00"), outcome="abandoned")
             for d in (1, 2, 5)]
    first = get("/api/calls", per_page=2).get_json()
    assert first["page"] == 1 and first["total"] == 6 and first["next"]
    seen, cursor = [c["call_sid"] for c in first["calls"]], first["next"]
    while cursor:
        body = get("/api/calls", per_page=2, after=cursor).get_json()
        assert body["total"] == 6 and len(body["calls"]) <= 2
        seen += [c["call_sid"] for c in body["calls"]]
        cursor = body["next"]
    by_page = [c["call_sid"] for c in get("/api/calls", per_page=200).get_json()["calls"]]
    assert seen == by_page and sorted(seen) == sorted(sids)
    # Filters hold on every page; the last page says there is no next.
    routed = get("/api/calls", outcome="routed", per_page=2).get_json()
    rest = get("/api/calls", outcome="routed", per_page=2, after=routed["next"]).get_json()
    assert [c["outcome"] for c in rest["calls"]] == ["routed"] and rest["next"] is None


@pytest.mark.parametrize("params, message", [
    ({"after": "nonsense"}, "after: 'nonsense' is not a cursor"),
    ({"after": ""}, "after: '' is not a cursor"),
    ({"after": "MjAyNi0xMS0yNA"}, "is not a cursor"),
    ({"after": "x" * 5000}, "is not a cursor"),
    ({"after": "OTk5OS0xMi0zMVQyMzo1OTo1OS0wMTowMHxDQTE"}, "is not a cursor"),  # past 9999
    ({"after": "MDAwMS0wMS0wMVQwMDowMDowMCswMTowMHxDQTE"}, "is not a cursor"),  # before 1
    ({"after": "MjAyNi0xMS0yNFQwODowMDowMHxDQTE"}, "is not a cursor"),  # a time with no zone
    ({"after": "fDEyMw", "page": "2"}, "give page or after, not both"),
])
@pytest.mark.parametrize("path", ["/api/calls", "/api/tickets"])
def test_a_bad_cursor_gets_400(get, path, params, message):
    response = get(path, **params)
    assert response.status_code == 400 and message in response.get_json()["error"]


@pytest.mark.parametrize("after", [
    "MjAyNi0xMS0yNFQwODowMDowMCswMDowMHxDQTE",  # a call's cursor: no ticket id in it
    "MjAyNi0xMS0yNFQwODowMDowMCswMDowMHw5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # id too long
    "MjAyNi0xMS0yNFQwODowMDowMCswMDowMHzZoQ",  # a digit that is not ASCII
])
def test_a_cursor_that_names_no_ticket_gets_400(get, after):
    response = get("/api/tickets", after=after)
    assert response.status_code == 400 and "is not a cursor" in response.get_json()["error"]


@pytest.mark.parametrize("params, message", [
    ({"outcome": "won"}, "outcome: 'won' is not one of routed"),
    ({"status": "done"}, "status: 'done' is not one of queued"),
    ({"number": "1"}, "'number' is not a filter here"),
])
def test_a_bad_call_filter_gets_400(get, params, message):
    response = get("/api/calls", **params)
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_a_callback_for_an_unknown_ticket_is_404_even_while_twilio_is_not_configured(desk_app):
    """The desk app here has no TWILIO_ACCOUNT_SID or IVR_PUBLIC_URL; the README promises
    404 for an unknown ticket."""
    client = desk_app.test_client()
    unknown = client.post("/api/tickets/99999999/callback", json={"engineer": "aiko"},
                          headers=AUTH)
    assert unknown.status_code == 404, unknown.get_json()


# -- the database away -------------------------------------------------------------------


def test_the_api_and_dashboard_answer_503_not_500_while_the_database_is_unreachable(
        settings, clock, database_url, tmp_path):
    """A desk request that meets a database it cannot reach (or a SQLite write lock held
    past the busy time-out) asks to be tried again: 503 with Retry-After, in JSON on the
    API, never the 500 of a fault in the service."""
    from ivr import create_app

    from ..support import unreachable_database_url

    url = unreachable_database_url(database_url, tmp_path)
    app = create_app(settings.model_copy(update={"database_url": url,
                                                 "admin_token": ADMIN_TOKEN}), clock=clock)
    client = app.test_client()
    for method, path, headers in [("get", "/api/tickets", AUTH), ("get", "/api/calls", AUTH),
                                  ("patch", "/api/tickets/1", AUTH),
                                  ("get", "/api/tickets", {"Authorization": "Bearer eng_x"})]:
        response = getattr(client, method)(path, headers=headers, json={"status": "closed"})
        assert response.status_code == 503 and response.is_json, (path, response.status_code)
        assert "database" in response.get_json()["error"]
        assert response.headers["Retry-After"]
    with client.session_transaction() as session:
        session["sid"] = "a-session-id"
    page = client.get("/admin/")
    assert page.status_code == 503 and "database" in page.get_data(as_text=True)
    assert page.headers["Retry-After"]
    # Headed as a pause, not as a refusal of what was asked.
    assert re.search(r"<h1>\s*Not available just now\s*</h1>", page.get_data(as_text=True))
    app.extensions["ivr"].storage.dispose()


def test_the_api_and_dashboard_answer_503_on_a_database_without_its_tables(settings, clock):
    """A database restored or created without init-db: not a fault of the request."""
    from ivr import create_app

    app = create_app(settings.model_copy(update={"admin_token": ADMIN_TOKEN}), clock=clock)
    client = app.test_client()
    response = client.get("/api/tickets", headers=AUTH)
    assert response.status_code == 503 and "database" in response.get_json()["error"]
    with client.session_transaction() as session:
        session["sid"] = "a-session-id"
    assert client.get("/admin/").status_code == 503
    app.extensions["ivr"].storage.dispose()


@pytest.mark.parametrize("sid", ["CA\x00", "CA\x1b[2J", "CA\u00e9", "CA" + "1" * 63])
def test_a_call_cursor_whose_sid_no_call_could_have_gets_400(get, sid):
    """A cursor is the client's text: one naming a SID no call could have (a NUL, which
    PostgreSQL refuses in any text and answered with a 500, a control character, a letter
    that is not ASCII, more characters than a SID is kept with) is refused as a cursor, not
    sent to the database."""
    raw = f"2026-11-24T08:00:00+00:00|{sid}".encode("utf-8")
    after = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    response = get("/api/calls", after=after)
    assert response.status_code == 400 and "is not a cursor" in response.get_json()["error"]
