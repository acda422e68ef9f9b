"""Routing per region: a named queue, a desk number or SIP URI, or a TaskRouter workflow."""

import json
import shutil
import threading

import pytest
from werkzeug.serving import make_server

from ivr import create_app
from ivr.desk.directory import import_file
from ivr.sim.simulator import HttpTransport, Simulator, WsgiTransport

from ..support import BUSINESS_OWNER, CALLER, CONFIG, DEMO_ACCOUNTS, TOKEN

DIGITS = ["2", f"{BUSINESS_OWNER[0]}#", f"{BUSINESS_OWNER[1]}#", "1"]
UK_ROUTE = 'route = { kind = "enqueue", queue = "support-emea" }\n\n[menu]'


def app_with(tmp_path, settings, clock, old, new):
    folder = tmp_path / "config"
    shutil.copytree(CONFIG.parent, folder)
    text = (folder / "ivr.toml").read_text(encoding="utf-8")
    assert old in text
    (folder / "ivr.toml").write_text(text.replace(old, new), encoding="utf-8")
    app = create_app(settings.model_copy(update={"config_path": folder / "ivr.toml"}), clock=clock)
    ivr = app.extensions["ivr"]
    ivr.storage.upgrade()
    import_file(DEMO_ACCOUNTS, ivr.storage, ivr.hasher, ivr.config.lengths)
    return app


def test_a_region_can_dial_a_desk_number(tmp_path, settings, clock):
    app = app_with(tmp_path, settings, clock, UK_ROUTE,
                   'route = { kind = "dial", target = "+44.20.7946.0000" }\n\n[menu]')
    result = Simulator(WsgiTransport(app), TOKEN).call("+442070398961", CALLER, DIGITS)
    assert result.route == {"verb": "Dial", "targets": ["+442079460000"]}
    assert result.outcome == "routed" and result.priority == 1


def test_a_region_can_dial_a_sip_uri(tmp_path, settings, clock):
    app = app_with(tmp_path, settings, clock, UK_ROUTE,
                   'route = { kind = "dial", target = "sip:desk@pbx.example.com" }\n\n[menu]')
    result = Simulator(WsgiTransport(app), TOKEN).call("+442070398961", CALLER, DIGITS)
    assert result.route["targets"] == ["sip:desk@pbx.example.com"]


def test_a_region_can_enqueue_into_a_taskrouter_workflow_with_the_ticket(tmp_path, settings, clock):
    sid = "WW" + "a" * 32
    app = app_with(tmp_path, settings, clock, UK_ROUTE,
                   f'route = {{ kind = "taskrouter", workflow_sid = "{sid}" }}\n\n[menu]')
    result = Simulator(WsgiTransport(app), TOKEN).call("+442070398961", CALLER, DIGITS)
    assert result.route["workflow_sid"] == sid
    assert result.route["task"] == {"ticket": result.ticket, "priority": 1,
                                    "region": "United Kingdom", "target_response_minutes": 60}


def test_a_queue_name_can_carry_the_priority(tmp_path, settings, clock):
    app = app_with(tmp_path, settings, clock, UK_ROUTE,
                   'route = { kind = "enqueue", queue = "emea-p{priority}" }\n\n[menu]')
    result = Simulator(WsgiTransport(app), TOKEN).call("+442070398961", CALLER, DIGITS)
    assert result.route["queue"] == f"emea-p1.{result.ticket}"  # one queue per caller


def test_a_bad_workflow_sid_stops_the_app(tmp_path, settings, clock):
    with pytest.raises(SystemExit, match="workflow_sid"):
        app_with(tmp_path, settings, clock, UK_ROUTE,
                 'route = { kind = "taskrouter", workflow_sid = "nope" }\n\n[menu]')


def test_the_simulator_drives_a_running_server_over_http(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        result = Simulator(HttpTransport(base), TOKEN).call("+61 1800 768 027", CALLER, DIGITS)
    finally:
        server.shutdown()
    assert result.outcome == "routed" and result.ticket
    assert json.loads(result.to_json())["route"]["queue"] == f"support-apac.{result.ticket}"


@pytest.mark.parametrize("status, told", [("busy", True), ("no-answer", True),
                                           ("failed", True), ("completed", False)])
def test_a_caller_whose_extension_does_not_answer_is_told_so_not_hung_up_on_in_silence(
        tmp_path, settings, clock, status, told):
    from ivr.sim.simulator import new_call_sid

    from ..support import TwilioClient, spoken, twiml

    app = app_with(tmp_path, settings, clock, 'repeat_key = "*"',
                   'repeat_key = "*"\nextensions = [{ key = "1", dial = "+1.888.799.0125" }]')
    twilio = TwilioClient(app)
    params = twilio.call_params(new_call_sid())
    twiml(twilio.post("/voice", **params))
    dial = twiml(twilio.post("/voice/menu", **params, Digits="1")).find("Dial")
    after = twiml(twilio.post(dial.get("action"), **params, DialCallStatus=status))
    assert after[-1].tag == "Hangup"
    words = app.extensions["ivr"].catalogues["en-US"].text("transfer_unavailable", {})
    assert spoken(after) == ([words] if told else [])  # after a conversation, nothing
