"""The voice webhooks through Flask and the database; every TwiML answer is parsed."""

import logging

import pytest
from sqlalchemy import func, select

from ivr.config import Settings
from ivr.storage.models import Call, Lockout, OutboxMessage, Ticket

from ..support import (
    BUSINESS_OWNER, CALLER, PRO_OWNER, US_LINE, TwilioClient, spoken, twiml,
)


def count(ivr, model):
    with ivr.storage.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def call_row(ivr, sid):
    with ivr.storage.transaction() as session:
        return session.get(Call, sid)


def press(twilio, sid, path, digits=None, to=US_LINE, caller=CALLER):
    params = twilio.call_params(sid, to=to, caller=caller)
    if digits is not None:
        params["Digits"] = digits
    return twilio.post(path, **params)


def to_priority(twilio, sid, pmi_key=BUSINESS_OWNER):
    twiml(press(twilio, sid, "/voice"))
    twiml(press(twilio, sid, "/voice/menu", "2"))
    twiml(press(twilio, sid, "/voice/pmi", pmi_key[0]))
    return twiml(press(twilio, sid, "/voice/host-key", pmi_key[1]))


def test_an_incoming_call_gets_a_menu_gather_in_the_line_language_then_a_redirect(twilio, call_sid):
    root = twiml(press(twilio, call_sid, "/voice", to="+33800946464"))
    gather, redirect = list(root)
    assert gather.tag == "Gather" and gather.get("action") == "/voice/menu?p=0-0-0"
    assert gather.get("numDigits") == "1"
    languages = [say.get("language") for say in gather.iter("Say")]
    assert languages.count("fr-FR") == len(languages) - 1 and "en-GB" in languages
    assert redirect.tag == "Redirect" and redirect.text == "/voice/menu?p=0-0-0"


def test_digit_prompts_finish_on_hash(twilio, call_sid):
    twiml(press(twilio, call_sid, "/voice"))
    root = twiml(press(twilio, call_sid, "/voice/menu", "2"))
    gather = root.find("Gather")
    assert gather.get("finishOnKey") == "#" and gather.get("numDigits") is None
    assert gather.get("action") == "/voice/pmi?p=0-0-0"


def test_an_eligible_owner_is_enqueued_with_the_ticket_read_back_digit_by_digit(twilio, call_sid, ivr):
    to_priority(twilio, call_sid)
    root = twiml(press(twilio, call_sid, "/voice/priority", "3"))
    with ivr.storage.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
    digits = [e.text for e in root.iter("say-as") if e.get("interpret-as") == "digits"]
    assert digits == [ticket.number]  # once in full; star repeats it in the queue
    enqueue = root.find("Enqueue")
    assert enqueue.text == f"support-us.{ticket.number}"  # one queue per caller
    assert enqueue.get("action") == f"/voice/queue-result?ticket={ticket.number}&priority=3"
    assert ticket.priority == 3 and ticket.target_response_minutes == 1440
    assert ticket.acknowledged_at is not None and ticket.acknowledged_at >= ticket.created_at
    assert ticket.account_id == "demo-business" and ticket.region == "United States"


def test_the_same_gather_action_posted_twice_yields_one_ticket_and_the_same_answer(twilio, call_sid, ivr):
    to_priority(twilio, call_sid)
    first = press(twilio, call_sid, "/voice/priority", "1")
    second = press(twilio, call_sid, "/voice/priority", "1")
    assert first.get_data() == second.get_data()
    assert count(ivr, Ticket) == 1
    assert count(ivr, OutboxMessage) == 1


def test_unknown_pmi_and_wrong_host_key_produce_byte_identical_twiml(twilio):
    answers = []
    for sid, pmi, key in (("CA" + "1" * 32, "5559999999", "740193"),
                          ("CA" + "2" * 32, BUSINESS_OWNER[0], "740193")):
        twiml(press(twilio, sid, "/voice"))
        twiml(press(twilio, sid, "/voice/menu", "2"))
        twiml(press(twilio, sid, "/voice/pmi", pmi))
        answers.append(press(twilio, sid, "/voice/host-key", key).get_data())
    assert answers[0] == answers[1]


def test_three_failed_verifications_hang_up(twilio, call_sid, ivr):
    twiml(press(twilio, call_sid, "/voice"))
    twiml(press(twilio, call_sid, "/voice/menu", "2"))
    for _ in range(3):
        twiml(press(twilio, call_sid, "/voice/pmi", "5559999999"))
        root = twiml(press(twilio, call_sid, "/voice/host-key", "740193"))
    assert root[-1].tag == "Hangup"
    assert call_row(ivr, call_sid).outcome == "failed_auth"


@pytest.mark.parametrize("path, before", [
    ("/voice/menu", []),
    ("/voice/pmi", [("/voice/menu", "2")]),
    ("/voice/host-key", [("/voice/menu", "2"), ("/voice/pmi", BUSINESS_OWNER[0])]),
    ("/voice/priority", [("/voice/menu", "2"), ("/voice/pmi", BUSINESS_OWNER[0]),
                         ("/voice/host-key", BUSINESS_OWNER[1])]),
])
@pytest.mark.parametrize("bad", [None, "", "*#*#", "x" * 500, "١٢٣٤٥٦٧٨٩٠"])
def test_no_or_invalid_input_at_every_prompt_reprompts_then_ends_politely(twilio, call_sid, ivr,
                                                                         path, before, bad):
    twiml(press(twilio, call_sid, "/voice"))
    for step, digits in before:
        twiml(press(twilio, call_sid, step, digits))
    for _ in range(2):
        root = twiml(press(twilio, call_sid, path, bad))
        assert root.find("Gather").get("action").split("?")[0] == path
    root = twiml(press(twilio, call_sid, path, bad))
    assert root[-1].tag == "Hangup" and root.find("Gather") is None
    assert call_row(ivr, call_sid).outcome == "no_input"


def test_a_missing_signature_is_refused_and_writes_nothing(app, ivr, call_sid):
    response = TwilioClient(app).post("/voice", signed=False, CallSid=call_sid, To=US_LINE)
    assert response.status_code == 403
    assert count(ivr, Call) == 0


@pytest.mark.parametrize("path", ["/voice", "/voice/menu", "/voice/status", "/voice/fallback",
                                  "/voice/queue-result"])
def test_a_forged_signature_is_refused_on_every_voice_endpoint(app, ivr, call_sid, path):
    forger = TwilioClient(app, token="not-the-auth-token")
    response = forger.post(path, **forger.call_params(call_sid), Digits="2")
    assert response.status_code == 403
    assert count(ivr, Call) == 0


def test_a_signature_over_other_parameters_is_refused(twilio, call_sid, ivr):
    params = twilio.call_params(call_sid)
    signature = twilio.validator.compute_signature("http://localhost/voice", params)
    response = twilio.post("/voice", signature=signature, **{**params, "To": "+33800946464"})
    assert response.status_code == 403


def test_a_request_signed_for_the_url_with_its_default_port_passes(proxied_app, call_sid):
    # Twilio has signed some URLs with ":443" and some without; both are the same URL.
    public = TwilioClient(proxied_app, base="https://ivr.example.com")
    params = public.call_params(call_sid)
    signature = public.validator.compute_signature("https://ivr.example.com:443/voice", params)
    assert public.post("/voice", signature=signature, **params).status_code == 200


@pytest.mark.parametrize("signature", ["é" * 28, "x" * 5000, "=" * 28])
def test_a_signature_header_of_any_shape_is_refused_without_an_error(twilio, call_sid,
                                                                       signature):
    response = twilio.post("/voice", signature=signature, **twilio.call_params(call_sid))
    assert response.status_code == 403


def test_a_form_with_a_repeated_field_is_signed_over_every_value(twilio, call_sid):
    # Twilio signs each value of a repeated field (sorted), as RequestValidator computes
    # it over a MultiDict; the check must read the form the same way.
    from werkzeug.datastructures import MultiDict

    items = [*twilio.call_params(call_sid).items(), ("Extra", "b"), ("Extra", "a"),
             ("Blank", "")]
    signature = twilio.validator.compute_signature(twilio.base + "/voice", MultiDict(items))
    headers = {"X-Twilio-Signature": signature}
    assert twilio.client.post("/voice", data=MultiDict(items), headers=headers
                              ).status_code == 200
    dropped = MultiDict(items[:-2] + items[-1:])  # one of the repeated values left out
    assert twilio.client.post("/voice", data=dropped, headers=headers).status_code == 403


@pytest.fixture
def proxied_app(settings, clock):
    from ivr import create_app

    app = create_app(Settings.model_validate({**settings.model_dump(), "public_url": "https://ivr.example.com/"}),
                     clock=clock)
    app.extensions["ivr"].storage.upgrade()
    return app


def test_behind_a_proxy_a_request_signed_for_the_public_url_passes(proxied_app, call_sid):
    public = TwilioClient(proxied_app, base="https://ivr.example.com")
    assert public.post("/voice", **public.call_params(call_sid)).status_code == 200
    local = TwilioClient(proxied_app)
    assert local.post("/voice", **local.call_params(call_sid)).status_code == 403


def test_a_call_ended_before_routing_is_abandoned_at_the_step_it_reached(twilio, call_sid, ivr):
    twiml(press(twilio, call_sid, "/voice"))
    twiml(press(twilio, call_sid, "/voice/menu", "2"))
    twilio.post("/voice/status", **{**twilio.call_params(call_sid), "CallStatus": "completed",
                                    "CallDuration": "17"})
    call = call_row(ivr, call_sid)
    assert (call.outcome, call.abandoned_at_step, call.duration_seconds) == ("abandoned", "pmi", 17)
    assert call.twilio_status == "completed" and call.ended_at is not None


def test_a_routed_call_keeps_its_outcome_and_ticket_when_it_ends(twilio, call_sid, ivr):
    to_priority(twilio, call_sid)
    twiml(press(twilio, call_sid, "/voice/priority", "2"))
    twilio.post("/voice/status", **{**twilio.call_params(call_sid), "CallStatus": "completed",
                                    "CallDuration": "300"})
    assert call_row(ivr, call_sid).outcome == "routed"
    assert count(ivr, Ticket) == 1


def test_the_caller_number_is_stored_in_full_and_logged_as_its_last_four_digits(twilio, call_sid,
                                                                                ivr, caplog):
    caplog.set_level(logging.INFO, logger="ivr")
    twiml(press(twilio, call_sid, "/voice", caller="+819012345678"))
    assert call_row(ivr, call_sid).caller_number == "+819012345678"
    assert "…5678" in caplog.text and "9012345678" not in caplog.text


def test_a_call_to_an_unconfigured_number_is_answered_in_the_default_language_and_logged(
        twilio, call_sid, ivr, caplog):
    caplog.set_level(logging.INFO, logger="ivr")
    root = twiml(press(twilio, call_sid, "/voice", to="+15005550006"))
    assert {say.get("language") for say in root.iter("Say")} == {"en-US"}
    assert "unconfigured number …0006" in caplog.text
    assert call_row(ivr, call_sid).region == "unknown"


def test_pro_owner_hears_the_web_ticket_guidance_and_gets_the_link_by_sms(twilio, call_sid, ivr):
    root = to_priority(twilio, call_sid, PRO_OWNER)
    assert root[-1].tag == "Hangup" and root.find("Gather") is None
    with ivr.storage.transaction() as session:
        (message,) = session.scalars(select(OutboxMessage)).all()
    assert message.template == "sms_web" and message.to_number == CALLER
    assert ivr.config.links.web_ticket in message.body and message.status == "pending"
    assert count(ivr, Ticket) == 0


def test_a_missing_call_sid_ends_politely_without_writing(twilio, ivr):
    root = twiml(twilio.post("/voice", To=US_LINE))
    assert [e.tag for e in root] == ["Hangup"]
    assert count(ivr, Call) == 0


def retried(twilio, sid, action, digits=None, to=US_LINE):
    """The same request twice, as Twilio sends it again when the first answer is lost."""
    first = press(twilio, sid, action, digits, to=to)
    return first, press(twilio, sid, action, digits, to=to)


def test_a_retried_wrong_priority_key_counts_as_one_try(twilio, call_sid, ivr):
    action = to_priority(twilio, call_sid).find("Gather").get("action")
    first, again = retried(twilio, call_sid, action, "7")
    retry_prompt = twiml(first).find("Gather").get("action")
    assert twiml(again).find("Gather").get("action") == retry_prompt  # asked again, not counted
    root = twiml(press(twilio, call_sid, retry_prompt, "8"))  # a second mistake: a third try
    assert root.find("Gather") is not None
    root = twiml(press(twilio, call_sid, root.find("Gather").get("action"), "1"))
    assert root.find(".//Enqueue") is not None and count(ivr, Ticket) == 1


@pytest.mark.parametrize("step_path, digits", [
    ("/voice/menu", "5"), ("/voice/menu", None), ("/voice/pmi", "12"), ("/voice/pmi", None),
])
def test_a_retried_mistake_or_silence_at_a_prompt_counts_once(twilio, call_sid, ivr, step_path,
                                                             digits):
    root = twiml(press(twilio, call_sid, "/voice"))
    if step_path == "/voice/pmi":
        root = twiml(press(twilio, call_sid, root.find("Gather").get("action"), "2"))
    action = root.find("Gather").get("action")
    for _ in range(ivr.config.retries.prompt_attempts - 1):
        first, again = retried(twilio, call_sid, action, digits)
        action = twiml(first).find("Gather").get("action")
        assert twiml(again).find("Gather").get("action") == action
    assert call_row(ivr, call_sid).outcome is None  # the last try is still the caller's


def test_a_retried_english_key_is_not_heard_as_a_wrong_key(twilio, call_sid):
    japan = "+81531320070"
    action = twiml(press(twilio, call_sid, "/voice", to=japan)).find("Gather").get("action")
    first, again = retried(twilio, call_sid, action, "9", to=japan)
    assert spoken(twiml(again)) == spoken(twiml(first))
    assert not any("not a valid" in text for text in spoken(twiml(again)))


def test_an_unknown_step_is_a_404_with_a_clear_message(twilio, call_sid):
    response = twilio.post("/voice/nonsense", **twilio.call_params(call_sid))
    assert response.status_code == 404
    assert b"not a step of this service" in response.get_data()


def test_a_step_posted_out_of_order_asks_again_for_the_current_step(twilio, call_sid, ivr):
    twiml(press(twilio, call_sid, "/voice"))
    root = twiml(press(twilio, call_sid, "/voice/priority", "1"))
    assert root.find("Gather").get("action") == "/voice/menu?p=0-0-0"
    assert count(ivr, Ticket) == 0


def test_the_fallback_answers_without_the_database(settings, clock):
    from ivr import create_app

    dead = settings.model_copy(update={"database_url": "postgresql+psycopg://127.0.0.1:1/none"})
    app = create_app(dead, clock=clock)
    twilio = TwilioClient(app)
    root = twiml(twilio.post("/voice/fallback", **twilio.call_params("CA" + "3" * 32,
                                                                   to="+81531320070")))
    assert [e.tag for e in root] == ["Say", "Enqueue"]
    assert root[0].get("language") == "ja-JP" and root[1].text == "support"


def test_a_webhook_that_fails_unexpectedly_still_routes_the_caller(settings, clock, call_sid):
    from ivr import create_app

    dead = settings.model_copy(update={"database_url": "postgresql+psycopg://127.0.0.1:1/none"})
    twilio = TwilioClient(create_app(dead, clock=clock))
    root = twiml(twilio.post("/voice", **twilio.call_params(call_sid)))
    assert [e.tag for e in root] == ["Say", "Enqueue"]


def test_healthz_reports_the_database(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json()["database"] == "ok"


def test_healthz_takes_a_host_whose_pepper_is_not_the_directorys_out_of_service(
        app, settings, clock):
    """Two hosts on one database, each with its own pepper (a file generated on each):
    the one the directory was not imported on would reject every caller's host key, so
    its health check fails and says why, until the peppers agree or it imports again."""
    from ivr import create_app
    from ivr.desk.directory import import_file

    from ..support import DEMO_ACCOUNTS

    other = create_app(settings.model_copy(update={"host_key_pepper": "another-pepper-of-32-characters!"}),
                       clock=clock)
    answer = other.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["pepper"].startswith("differs from the one the directory was "
                                                  "imported with")
    assert app.test_client().get("/healthz").status_code == 200

    ivr = other.extensions["ivr"]
    import_file(DEMO_ACCOUNTS, ivr.storage, ivr.hasher, ivr.config.lengths)
    assert other.test_client().get("/healthz").status_code == 200
    assert app.test_client().get("/healthz").status_code == 503
    ivr.storage.dispose()


def test_healthz_on_a_database_without_tables_says_to_run_init_db(settings, clock):
    from ivr import create_app

    bare = create_app(settings, clock=clock)  # no upgrade
    answer = bare.test_client().get("/healthz")
    assert (answer.status_code, answer.get_json()["database"]) == (
        503, "no tables, or older ones: run init-db")
    bare.extensions["ivr"].storage.dispose()


def test_queue_full_tells_the_caller_the_ticket_is_kept(twilio, call_sid, ivr):
    to_priority(twilio, call_sid)
    twiml(press(twilio, call_sid, "/voice/priority", "1"))
    with ivr.storage.transaction() as session:
        number = session.scalars(select(Ticket.number)).one()
    params = {**twilio.call_params(call_sid), "QueueResult": "queue-full", "QueueTime": "0"}
    root = twiml(twilio.post(f"/voice/queue-result?ticket={number}&priority=1", **params))
    assert number in "".join(spoken(root)).replace(" ", "")
    assert root[-1].tag == "Hangup"
    assert call_row(ivr, call_sid).queue_result == "queue-full"


def status(twilio, sid, call_status, sequence, duration=None):
    params = {**twilio.call_params(sid), "CallStatus": call_status, "SequenceNumber": str(sequence)}
    if duration is not None:
        params["CallDuration"] = str(duration)
    return twilio.post("/voice/status", **params)


def test_status_callbacks_arriving_out_of_order_never_move_a_call_backwards(twilio, call_sid, ivr):
    twiml(press(twilio, call_sid, "/voice"))
    status(twilio, call_sid, "completed", 3, duration=42)
    status(twilio, call_sid, "in-progress", 2)
    status(twilio, call_sid, "ringing", 1)
    call = call_row(ivr, call_sid)
    assert (call.twilio_status, call.duration_seconds, call.status_sequence) == ("completed", 42, 3)
    assert call.outcome == "abandoned"


def test_a_late_in_progress_callback_without_a_sequence_does_not_reopen_a_call(twilio, call_sid, ivr):
    twiml(press(twilio, call_sid, "/voice"))
    twilio.post("/voice/status", **{**twilio.call_params(call_sid), "CallStatus": "completed"})
    twilio.post("/voice/status", **{**twilio.call_params(call_sid), "CallStatus": "in-progress"})
    assert call_row(ivr, call_sid).twilio_status == "completed"


def metric(app, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families

    body = app.test_client().get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_calls_verifications_tickets_and_webhook_latency(app, twilio, call_sid):
    before = {
        "calls": metric(app, "ivr_calls_total", region="United States", outcome="routed"),
        "passed": metric(app, "ivr_verifications_total", result="passed"),
        "tickets": metric(app, "ivr_tickets_total", priority="2"),
        "menu": metric(app, "ivr_webhook_seconds_count", step="menu"),
    }
    to_priority(twilio, call_sid)
    twiml(press(twilio, call_sid, "/voice/priority", "2"))
    twiml(press(twilio, call_sid, "/voice/priority", "2"))  # a repeat counts nothing twice
    assert metric(app, "ivr_calls_total", region="United States", outcome="routed") == before["calls"] + 1
    assert metric(app, "ivr_verifications_total", result="passed") == before["passed"] + 1
    assert metric(app, "ivr_tickets_total", priority="2") == before["tickets"] + 1
    assert metric(app, "ivr_webhook_seconds_count", step="menu") == before["menu"] + 1
    assert metric(app, "ivr_outbox_depth") == 1
    assert metric(app, "ivr_spool_depth") == 0


def test_an_abandoned_call_is_counted_once_however_often_its_status_arrives(app, twilio, call_sid):
    before = metric(app, "ivr_calls_total", region="United States", outcome="abandoned")
    twiml(press(twilio, call_sid, "/voice"))
    for _ in range(2):
        twilio.post("/voice/status", **{**twilio.call_params(call_sid), "CallStatus": "completed"})
    assert metric(app, "ivr_calls_total", region="United States", outcome="abandoned") == before + 1


def test_a_genuine_signature_for_one_step_replayed_to_another_is_refused_and_judges_nothing(
        twilio, call_sid, ivr):
    """Twilio signs the URL: a copy of the PMI step's request (its digits a host key's
    length) posted to the host-key step is refused, and no key is judged or counted."""
    twiml(press(twilio, call_sid, "/voice"))
    twiml(press(twilio, call_sid, "/voice/menu", "2"))
    twiml(press(twilio, call_sid, "/voice/pmi", BUSINESS_OWNER[0]))
    params = {**twilio.call_params(call_sid), "Digits": "7401935"}
    signature = twilio.validator.compute_signature("http://localhost/voice/pmi", params)
    response = twilio.post("/voice/host-key", signature=signature, **params)
    assert response.status_code == 403
    assert count(ivr, Lockout) == 0
