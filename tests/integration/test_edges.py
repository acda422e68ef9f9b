"""The edges of every request: body limits, accepted hosts, refused-request metrics, the
desk's date range and JSON edges, the full overdue board and the dashboard's headers."""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
from urllib.parse import unquote

import pytest
from prometheus_client import REGISTRY
from twilio.request_validator import RequestValidator

from ivr import create_app
from ivr.sim.simulator import new_call_sid
from ivr.storage.models import Call, Ticket
from ivr.web import MAX_BODY_BYTES

from ..desk_support import ADMIN_TOKEN, add_ticket, admin_app, at, parse_html, signed_in
from ..support import CALLER, TOKEN, US_LINE, TwilioClient, twiml

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MB = 1024 * 1024


class CountingStream(io.RawIOBase):
    """A request body that is never stored: it counts what the server reads of it."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b"a" * n
        self.read_bytes += n
        return n


def raw_post(app, path, stream, length, headers=None, content_type="application/x-www-form-urlencoded"):
    from werkzeug.test import EnvironBuilder, run_wsgi_app
    from werkzeug.wrappers import Response

    environ = EnvironBuilder(path=path, method="POST", headers=headers or {}).get_environ()
    environ.update({"wsgi.input": stream, "CONTENT_TYPE": content_type})
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    else:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True  # a chunked body, its end marked by the server
    app_iter, status, response_headers = run_wsgi_app(app, environ, buffered=True)
    return Response(b"".join(app_iter), status=status, headers=response_headers)


# -- item 3: size limits -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/voice", "/voice/status", "/voice/host-key", "/api/tickets/1",
                                  "/admin/login", "/healthz"])
def test_an_unsigned_200_mb_body_gets_413_before_a_byte_of_it_is_read(desk_app, path):
    stream = CountingStream(200 * MB)
    response = raw_post(desk_app, path, stream, 200 * MB,
                        headers={"X-Twilio-Signature": "forged", **AUTH})
    assert response.status_code == 413
    assert stream.read_bytes == 0


def test_a_chunked_body_without_a_length_is_read_only_up_to_the_limit(app):
    stream = CountingStream(50 * MB)
    response = raw_post(app, "/voice", stream, None, headers={"X-Twilio-Signature": "forged"})
    assert response.status_code == 413
    assert stream.read_bytes <= MAX_BODY_BYTES + 64 * 1024


def test_a_signed_request_with_50_mb_of_digits_is_refused_with_413(app, twilio, call_sid):
    params = {**twilio.call_params(call_sid), "Digits": "1" * (50 * MB)}
    response = twilio.post("/voice/pmi", **params)
    assert response.status_code == 413
    with app.extensions["ivr"].storage.transaction() as session:
        assert session.get(Call, call_sid) is None


def test_a_signed_request_with_50000_fields_is_refused_with_413(app, twilio, call_sid):
    params = {**twilio.call_params(call_sid), **{f"f{i}": "" for i in range(50_000)}}
    assert twilio.post("/voice", **params).status_code == 413
    small = {**twilio.call_params(call_sid), **{f"f{i}": "" for i in range(300)}}
    assert twilio.post("/voice", **small).status_code == 413  # few bytes, too many fields
    with app.extensions["ivr"].storage.transaction() as session:
        assert session.get(Call, call_sid) is None


def test_a_real_twilio_request_with_every_field_twilio_sends_is_served(twilio, call_sid):
    params = {**twilio.call_params(call_sid), "CallerName": "ALEX EXAMPLE", "FromCity": "SF",
              "FromState": "CA", "FromZip": "94105", "FromCountry": "US", "ToCity": "",
              "ToState": "", "ToZip": "", "ToCountry": "US", "CallerCity": "SF",
              "CallerState": "CA", "CallerZip": "94105", "CallerCountry": "US",
              "CalledCity": "", "CalledState": "", "CalledZip": "", "CalledCountry": "US",
              "Called": US_LINE, "Caller": CALLER, "StirVerstat": "TN-Validation-Passed-A",
              "CallToken": "x" * 600, "ForwardedFrom": ""}
    twiml(twilio.post("/voice", **params))


# -- item 13: refused requests are counted apart -------------------------------------------


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_refused_signature_is_counted_apart_and_not_timed_as_an_answer(twilio, call_sid):
    timed = sample("ivr_webhook_seconds_count", step="incoming")
    refused = sample("ivr_webhook_refused_total", reason="signature")
    assert twilio.post("/voice", signature="bad", **twilio.call_params(call_sid)).status_code == 403
    assert sample("ivr_webhook_seconds_count", step="incoming") == timed
    assert sample("ivr_webhook_refused_total", reason="signature") == refused + 1
    twiml(twilio.post("/voice", **twilio.call_params(call_sid)))
    assert sample("ivr_webhook_seconds_count", step="incoming") == timed + 1


def test_an_oversized_webhook_is_counted_as_refused_too_large(app):
    before = sample("ivr_webhook_refused_total", reason="too_large")
    assert raw_post(app, "/voice", CountingStream(MB), MB).status_code == 413
    assert sample("ivr_webhook_refused_total", reason="too_large") == before + 1


# -- item 12: the signed host is pinned ------------------------------------------------------


def signed_for(url, params):
    return RequestValidator(TOKEN).compute_signature(url, params)


@pytest.fixture
def pinned_app(settings, clock):
    app = create_app(settings.model_copy(update={"allowed_hosts": ["ivr.example.com"]}),
                     clock=clock)
    app.extensions["ivr"].storage.upgrade()
    yield app
    app.extensions["ivr"].storage.dispose()


@pytest.mark.parametrize("allowed", [["ivr.example.com:8443"], [".example.com:8443"]])
def test_a_request_signed_for_another_port_of_a_pinned_host_is_refused(settings, clock, call_sid,
                                                                       allowed):
    """Flask's trusted hosts compare names only: the port given with a name is checked too,
    so a webhook signed for another instance on the same name and another port is refused
    before its signature could validate."""
    app = create_app(settings.model_copy(update={"allowed_hosts": allowed}), clock=clock)
    app.extensions["ivr"].storage.upgrade()
    params = TwilioClient(app).call_params(call_sid)
    for port, status in ((9443, 400), (8443, 200)):
        url = f"http://ivr.example.com:{port}/voice"
        response = app.test_client().post(
            "/voice", base_url=f"http://ivr.example.com:{port}", data=params,
            headers={"X-Twilio-Signature": signed_for(url, params)})
        assert response.status_code == status, (port, response.get_data(as_text=True))
    with app.extensions["ivr"].storage.transaction() as session:
        assert session.get(Call, call_sid) is not None  # only the allowed port's request
    # A proxy that passes the name alone (Host without a port) is still answered.
    params = TwilioClient(app).call_params(new_call_sid())
    response = app.test_client().post(
        "/voice", base_url="http://ivr.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for("http://ivr.example.com/voice", params)})
    assert response.status_code == 200
    app.extensions["ivr"].storage.dispose()


@pytest.mark.parametrize("allowed", [["ivr.example.com"], ["ivr.example.com:8443"]])
def test_probes_naming_the_instance_by_address_reach_health_and_metrics_only(
        settings, clock, allowed):
    """Load balancers' health probes and Prometheus name an instance by its address: the
    health check and the metrics answer them whatever the allowed hosts, while every
    other page still refuses a host it does not serve."""
    app = create_app(settings.model_copy(update={"allowed_hosts": allowed}), clock=clock)
    app.extensions["ivr"].storage.upgrade()
    client = app.test_client()
    for path in ("/healthz", "/metrics"):
        assert client.get(path, headers={"Host": "10.0.0.5:8000"}).status_code == 200, path
    assert client.post("/voice", headers={"Host": "10.0.0.5:8000"}).status_code == 400
    assert client.get("/admin/login", headers={"Host": "10.0.0.5:8000"}).status_code == 400
    app.extensions["ivr"].storage.dispose()


def test_a_request_signed_for_another_app_of_the_account_is_refused(pinned_app, call_sid):
    client = TwilioClient(pinned_app)
    params = client.call_params(call_sid)
    other = "http://other-app.example.com/voice"
    response = pinned_app.test_client().post(
        "/voice", base_url="http://other-app.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for(other, params)})
    assert response.status_code == 400
    ours = "http://ivr.example.com/voice"
    response = pinned_app.test_client().post(
        "/voice", base_url="http://ivr.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for(ours, params)})
    twiml(response)
    with pinned_app.extensions["ivr"].storage.transaction() as session:
        assert session.get(Call, call_sid) is not None


@pytest.mark.parametrize("query", ["src=console%2Fus", "tag=s%C3%A3o-paulo", "cb=a%40b",
                                   "x=%7E", "a=1&b=%26"])
def test_a_webhook_url_with_escapes_in_its_query_passes_when_signed_as_written(
        pinned_app, call_sid, query):
    params = TwilioClient(pinned_app).call_params(call_sid)
    response = pinned_app.test_client().post(
        f"/voice?{query}", base_url="http://ivr.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for(f"http://ivr.example.com/voice?{query}",
                                                  params)})
    assert response.status_code == 200
    decoded = pinned_app.test_client().post(  # the same request, signed for another URL
        f"/voice?{query}", base_url="http://ivr.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for(
            f"http://ivr.example.com/voice?{unquote(query)}x", params)})
    assert decoded.status_code == 403


def test_with_a_public_url_a_signature_for_another_host_is_refused_whatever_the_host_header(
        settings, clock, call_sid):
    app = create_app(settings.model_copy(update={"public_url": "https://ivr.example.com"}),
                     clock=clock)
    app.extensions["ivr"].storage.upgrade()
    params = TwilioClient(app).call_params(call_sid)
    other = "http://other-app.example.com/voice"
    response = app.test_client().post(
        "/voice", base_url="http://other-app.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for(other, params)})
    assert response.status_code == 403
    app.extensions["ivr"].storage.dispose()


def test_production_mode_refuses_to_start_without_a_pinned_host():
    from ivr.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="IVR_PUBLIC_URL or IVR_ALLOWED_HOSTS"):
        Settings.from_env({"TWILIO_AUTH_TOKEN": TOKEN})
    assert Settings.from_env({"TWILIO_AUTH_TOKEN": TOKEN,
                              "IVR_ALLOWED_HOSTS": "ivr.example.com, IVR2.example.com"}
                             ).allowed_hosts == ["ivr.example.com", "ivr2.example.com"]
    assert Settings.from_env({"TWILIO_AUTH_TOKEN": TOKEN,
                              "IVR_PUBLIC_URL": "https://ivr.example.com"}).production
    assert not Settings.from_env({"IVR_VALIDATE_SIGNATURES": "false"}).production


def test_forwarded_headers_are_ignored_unless_proxies_are_trusted(pinned_app, call_sid):
    params = TwilioClient(pinned_app).call_params(call_sid)
    https = "https://ivr.example.com/voice"
    response = pinned_app.test_client().post(
        "/voice", base_url="http://ivr.example.com", data=params,
        headers={"X-Twilio-Signature": signed_for(https, params), "X-Forwarded-Proto": "https"})
    assert response.status_code == 403


# -- item 10: desk dates and JSON at the edges -------------------------------------------------


@pytest.fixture
def desk_client(desk_app):
    return signed_in(desk_app)


EDGE_DATES = [("until", "9999-12-31"), ("since", "0001-01-01T00:00:00+01:00"),
              ("since", "9999-12-31T23:59:59-01:00"), ("since", "0001-01-01"),
              ("until", "9999-12-31T23:59:59.999999+00:00")]


@pytest.mark.parametrize("name, value", EDGE_DATES)
@pytest.mark.parametrize("path", ["/api/tickets", "/api/calls"])
def test_the_api_answers_the_calendars_edges_with_a_page_or_a_clear_400(desk_app, path, name,
                                                                        value):
    add_ticket(desk_app.extensions["ivr"], created=at("2026-11-25 10:00"))
    response = desk_app.test_client().get(path, query_string={name: value}, headers=AUTH)
    assert response.is_json
    # A date whose offset takes it past year 1 or 9999 is outside the range; the rest work.
    if value.endswith(("+01:00", "-01:00")):
        assert response.status_code == 400
        assert "outside the supported range" in response.get_json()["error"]
    else:
        assert response.status_code == 200
        assert response.get_json()["total"] == (1 if name == "until" or value == "0001-01-01"
                                                else 0)


@pytest.mark.parametrize("name, value", EDGE_DATES)
@pytest.mark.parametrize("path", ["/admin/calls", "/admin/sla", "/admin/export?format=csv&"])
def test_the_dashboard_answers_the_calendars_edges_with_a_page_or_a_clear_400(desk_client, path,
                                                                              name, value):
    separator = "" if path.endswith("&") else "?"
    response = desk_client.get(f"{path}{separator}{name}={value.replace('+', '%2B')}")
    expected = 400 if value.endswith(("+01:00", "-01:00")) else 200
    assert response.status_code == expected, response.get_data(as_text=True)[:300]
    if expected == 400:
        message = parse_html(response.get_data(as_text=True)).find("message").text()
        assert "outside the supported range" in message


def test_json_nested_too_deeply_is_invalid_json_to_every_reader(desk_app):
    with desk_app.test_request_context("/", method="POST", data="[" * 20_000 + "]" * 20_000,
                                       content_type="application/json"):
        from flask import request

        assert request.get_json(silent=True) is None
        with pytest.raises(Exception) as raised:
            request.get_json()
        assert getattr(raised.value, "code", None) == 400


def test_a_deeply_nested_json_patch_gets_a_clear_400(desk_app):
    ticket = add_ticket(desk_app.extensions["ivr"], created=at("2026-11-25 10:00"))
    for body in ("[" * 20_000 + "]" * 20_000, '{"status":' * 5_000 + "1" + "}" * 5_000):
        response = desk_app.test_client().patch(
            f"/api/tickets/{ticket.number}", data=body, headers={**AUTH,
                                                                 "Content-Type": "application/json"})
        assert response.status_code == 400, response.get_data(as_text=True)[:200]
        assert response.get_json()["error"].startswith("send a JSON object")
    response = desk_app.test_client().patch(
        f"/api/tickets/{ticket.number}", data="[" * 100_000,
        headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.is_json


# -- item 5: the dashboard's board covers every unclosed ticket -----------------------------


def add_many(ivr, specs):
    """Tickets (created, priority, status) in one transaction."""
    with ivr.storage.transaction() as session:
        for created, priority, status in specs:
            sid = new_call_sid()
            session.add(Call(call_sid=sid, dialed_number=US_LINE, region="United States",
                             language="en-US", caller_number=CALLER, can_text=True, step="done",
                             english=False, attempts=0, auth_failures=0, steps_reached="",
                             outcome="routed", started_at=created, updated_at=created))
            session.flush()
            session.add(Ticket(
                number=str(10_000_000 + secrets.randbelow(90_000_000)), call_sid=sid,
                account_id="demo-business", user_email="owner.business@example.com",
                priority=priority,
                target_response_minutes=ivr.config.priority(priority).target_response_minutes,
                region="United States", status=status, created_at=created))


def test_the_most_overdue_tickets_lead_the_board_even_behind_600_newer_ones(desk_client,
                                                                             desk_app, clock):
    ivr = desk_app.extensions["ivr"]
    now = clock.now
    old = [(now - dt.timedelta(days=25, minutes=i), 1, "open") for i in range(5)]
    # 595 fresh P4 tickets, all created after the old ones, none near its target.
    fresh = [(now - dt.timedelta(minutes=1 + i % 600), 4, "open") for i in range(595)]
    closed = [(now - dt.timedelta(days=30), 1, "closed")] * 3
    add_many(ivr, old + fresh + closed)
    doc = parse_html(desk_client.get("/admin/").get_data(as_text=True))
    rows = doc.find("tickets").rows()
    assert len(rows) == 500
    assert [attrs["class"] for attrs, _ in rows[:5]] == ["overdue"] * 5
    assert all(cells[1].startswith("P1") for _, cells in rows[:5])
    assert [int(attrs["data-seconds-left"]) for attrs, _ in rows] == sorted(
        int(attrs["data-seconds-left"]) for attrs, _ in rows)
    legend = doc.find("partial").text()
    assert "500" in legend and "600 unclosed" in legend
    tags = [span.text() for span in doc.iter("span") if "tag" in span.attrs.get("class", "")]
    assert tags[0] == "5 overdue" and tags[2] == "595 on time"


def test_the_board_counts_urgent_tickets_over_all_unclosed_ones_and_says_nothing_when_whole(
        desk_client, desk_app, clock):
    ivr = desk_app.extensions["ivr"]
    now = clock.now
    add_many(ivr, [(now - dt.timedelta(minutes=50), 1, "open"),      # 10 min left of 60
                   (now - dt.timedelta(minutes=61), 1, "in_queue"),  # overdue
                   (now - dt.timedelta(minutes=10), 2, "open")])     # fine
    board, counts = __import__("ivr.desk.service", fromlist=["Desk"]).Desk.of(ivr).unclosed_board(2)
    assert counts == {"overdue": 1, "urgent": 1, "fine": 1, "total": 3}
    assert [v["urgency"] for v in board] == ["overdue", "urgent"]
    doc = parse_html(desk_client.get("/admin/").get_data(as_text=True))
    assert not doc.has("partial")


# -- item 11: the desk's headers --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/", "/admin/sla", "/admin/export?format=json",
                                  "/admin/login"])
def test_dashboard_pages_and_exports_cannot_be_framed_sniffed_or_cached(desk_client, path):
    response = desk_client.get(path)
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers.getlist("X-Content-Type-Options") == ["nosniff"]  # once
    assert response.headers["Cache-Control"] == "no-store"


def test_twilios_webhooks_skip_the_desks_browser_headers_and_the_sign_in_limiter(desk_app):
    """TwiML is read by Twilio, not by a browser: the desk's framing and script policies,
    HSTS and the limiter's bookkeeping are not run for it (they cost a webhook about a
    quarter of a millisecond); the desk's own pages keep all of them."""
    twilio = TwilioClient(desk_app)
    answer = twilio.post("/voice", **twilio.call_params(new_call_sid()))
    assert twiml(answer).find("Gather") is not None
    for header in ("Content-Security-Policy", "X-Frame-Options", "Strict-Transport-Security",
                   "X-RateLimit-Limit"):
        assert header not in answer.headers
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    page = desk_app.test_client().get("/admin/login")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_with_an_https_public_url_desk_pages_carry_hsts_behind_a_proxy_not_trusted(
        settings, clock):
    """TLS ends at the proxy and IVR_TRUSTED_PROXIES is not set, so every request looks
    like plain http here; the public URL says browsers reach the desk over https."""
    app = admin_app(settings.model_copy(update={"public_url": "https://ivr.example.com"}),
                    clock)
    try:
        for path in ("/admin/login", "/api/tickets"):
            response = app.test_client().get(path)
            assert response.headers.getlist("Strict-Transport-Security") == [
                "max-age=31556926; includeSubDomains"]
        twilio = TwilioClient(app)
        answer = twilio.post("/voice", **twilio.call_params(new_call_sid()))
        assert "Strict-Transport-Security" not in answer.headers
        proxied = app.test_client().get("/admin/login",
                                        headers={"X-Forwarded-Proto": "https"})
        assert len(proxied.headers.getlist("Strict-Transport-Security")) == 1  # Talisman's
    finally:
        app.extensions["ivr"].storage.dispose()


def test_api_answers_are_not_cached_either(desk_app):
    response = desk_app.test_client().get("/api/tickets", headers=AUTH)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_json_errors_stay_json(desk_app):
    response = desk_app.test_client().get("/api/tickets?since=0001-01-01T00:00:00%2B01:00",
                                          headers=AUTH)
    assert response.status_code == 400 and json.loads(response.get_data())["error"]


# -- item 11: signing out ends the session on the server ---------------------------------------


def copy_cookie(source, target):
    cookie = source.get_cookie("ivr_admin", path="/admin")
    target.set_cookie("ivr_admin", cookie.value, path="/admin")


def test_a_copied_cookie_stops_working_once_its_owner_signs_out(desk_client, desk_app):
    thief = desk_app.test_client()
    copy_cookie(desk_client, thief)
    assert thief.get("/admin/").status_code == 200  # the copy works while the session lives
    doc = parse_html(desk_client.get("/admin/").get_data(as_text=True))
    token = next(f for f in doc.iter("form") if f.field("csrf_token")).field("csrf_token")
    assert desk_client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    for client in (thief, desk_client):
        response = client.get("/admin/")
        assert (response.status_code, response.headers["Location"]) == (302, "/admin/login")
    assert thief.get("/admin/export?format=csv").status_code == 302


def test_signing_in_again_over_a_session_ends_the_earlier_one(desk_client, desk_app):
    """Someone else signs in on the same browser: a copy of the first person's cookie
    opens nothing afterwards."""
    from ..desk_support import sign_in

    copy = desk_app.test_client()
    copy_cookie(desk_client, copy)
    assert copy.get("/admin/").status_code == 200
    assert sign_in(desk_client).status_code == 302
    assert desk_client.get("/admin/").status_code == 200
    response = copy.get("/admin/")
    assert (response.status_code, response.headers["Location"]) == (302, "/admin/login")


def test_a_session_ends_12_hours_after_sign_in_however_often_it_is_used(desk_client, clock):
    for _ in range(11):
        clock.advance(hours=1)
        assert desk_client.get("/admin/").status_code == 200
    clock.advance(hours=1)
    assert desk_client.get("/admin/").headers["Location"] == "/admin/login"


def test_the_server_keeps_only_a_keyed_hash_of_the_session_id(desk_client, desk_app):
    from ivr.storage.desk_sessions import DeskSession

    cookie = desk_client.get_cookie("ivr_admin", path="/admin").value
    with desk_app.extensions["ivr"].storage.transaction() as session:
        rows = session.query(DeskSession).all()
    assert len(rows) == 1 and rows[0].identity == "admin"
    session_id = desk_app.session_interface.get_signing_serializer(desk_app).loads(cookie)["sid"]
    assert session_id not in (rows[0].id_hash, rows[0].credential) and len(rows[0].id_hash) == 64


def test_a_forged_or_unknown_session_id_signs_nobody_in(desk_client, desk_app):
    cookie = desk_client.get_cookie("ivr_admin", path="/admin").value
    real = desk_app.session_interface.get_signing_serializer(desk_app).loads(cookie)["sid"]
    for session_id, status in ((real, 200), ("made-up", 302), (real[:-1] + "x", 302)):
        client = desk_app.test_client()
        with client.session_transaction() as session:
            session["sid"] = session_id
        assert client.get("/admin/").status_code == status


def test_a_request_without_a_session_cookie_never_builds_the_cookie_signer(
        desk_app, monkeypatch):
    interface = desk_app.session_interface
    built = []
    original = type(interface).get_signing_serializer
    monkeypatch.setattr(type(interface), "get_signing_serializer",
                        lambda self, app: built.append(1) or original(self, app))
    assert desk_app.test_client().get("/healthz").status_code == 200
    other = desk_app.test_client()
    other.set_cookie("unrelated", "1")  # a Cookie header without the session's cookie
    assert other.get("/healthz").status_code == 200
    assert built == []
    # A page that puts something in a new session still signs and sets its cookie.
    client = desk_app.test_client()
    assert client.get("/admin/login").status_code == 200 and built
    assert client.get_cookie("ivr_admin", path="/admin") is not None


FORM_BODIES = [
    b"CallSid=CA1&Digits=123%23&From=%2B14155550123&Caller=+14155550123",
    b"Digits=&Empty&=nameless&CallSid=CA1",  # blank values and a field without "="
    b"Digits=1&Digits=2&Digits=3",  # a repeated field keeps every value, in order
    b"Digits=%ZZ%4&SpeechResult=caf%C3%A9+ol%E9",  # malformed and non-UTF-8 escapes
    b"Digits=\xff\xfe&CallSid=CA1",  # raw bytes that are not UTF-8
    b"a=1;b=2&&&c=%26%3D",
    b"",
]


@pytest.mark.parametrize("body", FORM_BODIES)
def test_a_webhook_form_is_read_exactly_as_werkzeugs_form_parser_reads_it(body):
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from ivr.web import WebRequest

    def environ():
        built = EnvironBuilder(path="/voice/pmi", method="POST", data=body,
                               content_type="application/x-www-form-urlencoded")
        return built.get_environ()

    ours, werkzeugs = WebRequest(environ()), Request(environ())
    assert list(ours.form.items(multi=True)) == list(werkzeugs.form.items(multi=True))
    assert not ours.files and not werkzeugs.files


def test_the_app_reads_its_requests_with_the_web_request(app):
    from flask import request

    from ivr.web import WebRequest

    assert app.request_class is WebRequest
    with app.test_request_context("/voice/pmi", method="POST", data={"Digits": "1"}):
        assert isinstance(request._get_current_object(), WebRequest)
        assert request.form["Digits"] == "1"


def test_sign_in_attempts_from_one_address_are_limited_and_say_so(desk_app):
    client = desk_app.test_client()
    form = parse_html(client.get("/admin/login").get_data(as_text=True)).find("login")
    attempt = {"csrf_token": form.field("csrf_token"), "token": "guess-" + "0" * 30}
    statuses = [client.post("/admin/login", data=attempt).status_code for _ in range(10)]
    assert statuses == [401] * 10
    response = client.post("/admin/login", data={**attempt, "token": ADMIN_TOKEN})
    assert response.status_code == 429
    assert "Too many sign-in attempts" in parse_html(response.get_data(as_text=True)).find(
        "message").text()
    other = desk_app.test_client()  # another address is not held back
    form = parse_html(other.get("/admin/login", environ_base={"REMOTE_ADDR": "10.0.0.9"})
                      .get_data(as_text=True)).find("login")
    assert other.post("/admin/login", environ_base={"REMOTE_ADDR": "10.0.0.9"},
                      data={"csrf_token": form.field("csrf_token"),
                            "token": ADMIN_TOKEN}).status_code == 302


def test_the_app_keeps_which_functions_are_plain_and_still_runs_coroutines():
    from ivr.web import App

    app = App(__name__)

    @app.get("/plain")
    def plain():
        return "plain"

    @app.get("/coroutine")
    async def coroutine():
        return "coroutine"

    client = app.test_client()
    for _ in range(2):  # the second time from what the app kept
        assert client.get("/plain").get_data(as_text=True) == "plain"
        assert client.get("/coroutine").get_data(as_text=True) == "coroutine"
    assert app.ensure_sync(plain) is plain
    wrapped = app.ensure_sync(coroutine)  # run through asgiref, the same wrapper each time
    assert wrapped is not coroutine and app.ensure_sync(coroutine) is wrapped


@pytest.mark.parametrize("args", [
    ["retention", "apply", "--days", "1000000000"],
    ["retention", "apply", "--days", "800000", "--dry-run"],
    ["accounts", "purge-failures", "--older-than", "800000"],
    ["tickets", "list", "--limit", "99999999999999999999"],
    ["tickets", "list", "--limit", "-1"],
    ["tickets", "list", "--limit", "0"],
    ["helpdesk", "retry", "99999999999999999999"],
    ["simulate", "--to", "+18887999666", "--digits", "2", "--url", "notaurl"],
])
def test_an_operator_command_given_a_value_out_of_range_says_so_without_a_traceback(app, args):
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Invalid value" in result.output


@pytest.mark.parametrize("what", [
    ["--to", "+18887999666", "--digits", "2"],  # one call
    ["--calls", "2", "--engineers", "1"],  # callers and engineers
])
def test_simulate_against_a_server_it_cannot_reach_says_so_in_a_line(app, what):
    import socket

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = app.test_cli_runner().invoke(args=[
        "simulate", *what, "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    # The reason itself, not the start of urllib3's retry report, cut off before it.
    assert result.output.strip() == f"Error: could not reach http://127.0.0.1:{port}: " \
                                    f"connection refused (ConnectionRefusedError)"


def test_a_head_request_to_the_sign_in_page_never_signs_anyone_in(desk_app):
    """HEAD answers like GET (the form's headers), so it can neither try tokens past the
    sign-in limit nor open a session without the form's CSRF token."""
    client = desk_app.test_client()
    for token in ("guess-" + "0" * 30, ADMIN_TOKEN):
        response = client.open("/admin/login", method="HEAD", data={"token": token})
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers or \
            client.get("/admin/").status_code == 302
    assert client.get("/admin/").status_code == 302
