"""The dashboard's floor page: Waiting now and Callbacks due, refreshing themselves, with
a Call back button behind the CSRF token."""

import pytest

from ..desk_support import admin_app, parse_html, signed_in
from ..floor_support import add_engineer, queued, talking_on_the_line
from ..support import RecordingHttpClient, twiml


@pytest.fixture
def http():
    return RecordingHttpClient()


@pytest.fixture
def app(settings, clock, http):
    app = admin_app(settings.model_copy(update={"twilio_account_sid": "AC" + "1" * 32,
                                                "public_url": "http://localhost"}), clock)
    app.extensions["twilio_http_client"] = http
    yield app
    app.extensions["ivr"].storage.dispose()


@pytest.fixture
def browser(app):
    return signed_in(app)


def floor(browser):
    response = browser.get("/admin/floor")
    assert response.status_code == 200
    return parse_html(response.get_data(as_text=True))


def test_waiting_now_lists_callers_most_urgent_first_with_waits_and_languages(
        browser, twilio, clock):
    older_p3 = queued(twilio, 3)
    clock.advance(minutes=4)
    newer_p1 = queued(twilio, 1, to="+81531320070", caller="+819012345678")
    clock.advance(minutes=1)
    doc = floor(browser)
    refresh = [m for m in doc.iter("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert [m.attrs["content"] for m in refresh] == ["5"]
    rows = doc.find("waiting").rows()
    assert [attrs["data-ticket"] for attrs, _ in rows] == [newer_p1["ticket"], older_p3["ticket"]]
    assert rows[0][1][:5] == [newer_p1["ticket"], "P1 urgent", "1 min", "ja-JP", "Japan"]
    assert rows[1][1][:5] == [older_p3["ticket"], "P3 medium", "5 min", "en-US", "United States"]
    assert doc.has("callbacks-empty")


def test_a_caller_whose_claim_went_stale_is_not_shown_as_taken(browser, twilio, ivr, clock):
    """An engineer chose the caller, then hung up during the whisper: once the claim is
    stale the engineer line hands the caller to anyone, and the page says nobody has
    them, where it said the first engineer did for the whole wait."""
    from ivr.sim.simulator import new_call_sid

    from ..floor_support import engineer_params

    add_engineer(ivr)
    waiting = queued(twilio, 1)
    twilio.post("/voice/agent", **engineer_params(new_call_sid()))
    rows = floor(browser).find("waiting").rows()
    assert [cells[-1] for _, cells in rows] == ["aiko"]
    clock.advance(seconds=ivr.config.engineers.claim_seconds + 1)
    rows = floor(browser).find("waiting").rows()
    assert [(attrs["data-ticket"], cells[-1]) for attrs, cells in rows] == \
        [(waiting["ticket"], "–")]


def test_a_callback_is_placed_from_the_button_with_the_csrf_token(browser, twilio, ivr, http):
    add_engineer(ivr)
    waiting = queued(twilio, 2)
    twiml(twilio.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=2",
                      **twilio.call_params(waiting["sid"]), Digits="1"))
    doc = floor(browser)
    (row,) = doc.find("callbacks").rows()
    assert row[1][:3] == [waiting["ticket"], "P2 high", "4 h 00 min left"]
    form = next(f for f in doc.iter("form") if f.attrs.get("action", "").endswith("/callback"))
    assert browser.post(form.attrs["action"], data={"engineer": "aiko"}).status_code == 400
    assert http.requests == []
    response = browser.post(form.attrs["action"], data={
        "csrf_token": form.field("csrf_token"), "engineer": form.field("engineer")})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/floor"
    assert len(http.requests) == 1
    page = floor(browser)
    assert any("Calling aiko now for ticket" in p.text() for p in page.iter("p"))
    assert page.find("callbacks").rows()[0][1][4] == "1"  # one try so far


def test_the_button_says_why_no_callback_rings_an_engineer_talking_on_the_line(
        browser, twilio, ivr, http):
    from ivr.sim.simulator import new_call_sid

    add_engineer(ivr)
    in_queue = queued(twilio, 1, caller="+14155550111")
    waiting = queued(twilio, 2)
    twiml(twilio.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=2",
                      **twilio.call_params(waiting["sid"]), Digits="1"))
    talking_on_the_line(twilio, new_call_sid(), in_queue)
    doc = floor(browser)
    form = next(f for f in doc.iter("form") if f.attrs.get("action", "").endswith("/callback"))
    response = browser.post(form.attrs["action"], data={
        "csrf_token": form.field("csrf_token"), "engineer": form.field("engineer")})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/floor"
    assert http.requests == []
    page = floor(browser)
    assert any(p.text() == ("Callback not placed: aiko is talking to a caller on the "
                            f"engineer line (ticket {in_queue['ticket']}); if that call "
                            "has ended, `engineers calls-ended aiko` says so")
               for p in page.iter("p"))
    assert page.find("callbacks").rows()[0][1][4] == "0"  # no try counted


def test_with_several_engineers_the_choice_is_made_on_a_page_that_does_not_refresh(
        browser, twilio, ivr, http):
    """The floor reloads itself every few seconds, which put an engineer list back to its
    first name: one chosen just before a reload and sent just after rang the wrong
    engineer. With more than one engineer to choose from, the floor's Call back leads to
    the ticket's own callback form, which stays as chosen."""
    add_engineer(ivr)
    add_engineer(ivr, "ben", phone="+14155550142")
    waiting = queued(twilio, 2)
    twiml(twilio.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=2",
                      **twilio.call_params(waiting["sid"]), Digits="1"))
    doc = floor(browser)
    assert not [e for e in doc.iter("select")]
    assert not [f for f in doc.iter("form") if f.attrs.get("action", "").endswith("/callback")]
    (link,) = [a for a in doc.iter("a") if a.text() == f"Call back ticket {waiting['ticket']}"]
    page, _, anchor = link.attrs["href"].partition("#")
    ticket = parse_html(browser.get(page).get_data(as_text=True))
    assert not [m for m in ticket.iter("meta") if m.attrs.get("http-equiv") == "refresh"]
    form = ticket.find(anchor)
    assert [o.attrs["value"] for o in form.iter("option")] == ["aiko", "ben"]
    response = browser.post(form.attrs["action"], data={
        "csrf_token": form.field("csrf_token"), "engineer": "ben"})
    assert response.status_code == 302
    assert [r["data"]["To"] for r in http.requests] == ["+14155550142"]


def test_the_ticket_page_offers_the_callback_and_shows_the_engineer(browser, twilio, ivr):
    add_engineer(ivr)
    waiting = queued(twilio, 1)
    twiml(twilio.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=1",
                      **twilio.call_params(waiting["sid"]), Digits="1"))
    doc = parse_html(browser.get(f"/admin/tickets/{waiting['ticket']}").get_data(as_text=True))
    assert doc.find("callback").field("engineer") == "aiko"
    assert doc.find("engineer").text() == "–"


def test_without_the_twilio_settings_the_button_says_what_the_server_lacks(
        settings, clock, twilio, ivr, http):
    unconfigured = admin_app(settings, clock)  # same database, no Twilio account or URL
    unconfigured.extensions["twilio_http_client"] = http
    try:
        add_engineer(ivr)
        waiting = queued(twilio, 2)
        twiml(twilio.post(f"/voice/wait-choice?ticket={waiting['ticket']}&priority=2",
                          **twilio.call_params(waiting["sid"]), Digits="1"))
        browser = signed_in(unconfigured)
        doc = floor(browser)
        form = next(f for f in doc.iter("form")
                    if f.attrs.get("action", "").endswith("/callback"))
        response = browser.post(form.attrs["action"], data={
            "csrf_token": form.field("csrf_token"), "engineer": form.field("engineer")})
        assert response.status_code == 302 and response.headers["Location"] == "/admin/floor"
        page = floor(browser)
        flashed = [p.text() for p in page.iter("p") if "Callback not placed" in p.text()]
        assert len(flashed) == 1 and "TWILIO_ACCOUNT_SID" in flashed[0]
        assert page.find("callbacks").rows()[0][1][4] == "0"  # no try counted
        assert http.requests == []
    finally:
        unconfigured.extensions["ivr"].storage.dispose()


def test_in_a_surge_the_floor_counts_every_waiting_caller_not_only_those_it_lists(
        browser, ivr, clock):
    """More callers wait than the page lists: the count over the table is of everyone
    waiting, and says that only the most urgent are shown, where it gave the number of
    rows as the number in the queues."""
    from ivr.storage.engineers import WAITING_READ

    from ..floor_support import crowd_waiting

    shown = WAITING_READ
    crowd_waiting(ivr, shown + 7, clock.now)
    doc = floor(browser)
    assert len(doc.find("waiting").rows()) == shown
    assert doc.find("waiting-title").text() == (
        f"Waiting now {shown + 7} in the queues, the {shown} most urgent shown first")
