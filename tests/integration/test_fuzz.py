"""Property-based: arbitrary signed form posts never break a webhook or another call."""

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.storage.models import Call
from ivr.web import MAX_BODY_BYTES

from ..support import BUSINESS_OWNER, US_LINE

ENDPOINTS = ["/voice", "/voice/menu", "/voice/pmi", "/voice/host-key", "/voice/priority",
             "/voice/status", "/voice/queue-result", "/voice/wait", "/voice/wait-choice",
             "/voice/fallback", "/voice/unknown-step"]
FIELDS = ["CallSid", "AccountSid", "From", "To", "Digits", "CallStatus", "CallDuration",
          "QueueResult", "QueueTime", "DialCallStatus", "Direction", "ApiVersion", "SequenceNumber"]
VICTIM = "CA" + "f" * 32

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
keypad = st.text(alphabet="0123456789*#", max_size=30)
values = st.one_of(
    text, keypad, st.just(""), st.just("9" * 100_000), st.just("#" * 5000),
    st.just("*" * 5000), st.just("ＣＡ１２３"), st.just(VICTIM),
    st.from_regex(r"CA[0-9a-f]{32}", fullmatch=True),
    st.sampled_from(["+18887999666", "+81531320070", "anonymous", "+", "client:bob"]),
)
call_sids = st.one_of(st.from_regex(r"CA[0-9a-f]{32}", fullmatch=True), st.none(), values)
standard = st.fixed_dictionaries({
    "CallSid": call_sids,
    "To": st.one_of(st.sampled_from(["+18887999666", "+81531320070", "+33800946464"]), values),
    "From": st.one_of(st.just("+14155550100"), values, st.none()),
    "Digits": st.one_of(keypad, values, st.none()),
})
extra = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text.filter(bool)), values, max_size=6)
forms = st.builds(lambda a, b: {k: v for k, v in {**b, **a}.items() if v is not None},
                  standard, extra)


def snapshot(ivr):
    with ivr.storage.transaction() as session:
        call = session.get(Call, VICTIM)
        return {c.name: getattr(call, c.name) for c in Call.__table__.columns}


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(ENDPOINTS), form=forms)
def test_any_signed_post_gets_twiml_or_a_refusal_and_leaves_other_calls_alone(
        twilio, ivr, caplog, path, form):
    if not hasattr(ivr, "_victim"):
        for step, digits in (("/voice", None), ("/voice/menu", "2"), ("/voice/pmi", BUSINESS_OWNER[0])):
            params = twilio.call_params(VICTIM, to=US_LINE)
            if digits:
                params["Digits"] = digits
            twilio.post(step, **params)
        ivr._victim = snapshot(ivr)
    form = {k: v for k, v in form.items() if v != VICTIM and k}
    caplog.clear()
    response = twilio.post_form(path, form)
    # Unexpected errors are answered with the fallback TwiML; none may happen here.
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    if response.status_code == 413:  # larger than any Twilio request: refused unread
        assert len(urlencode(form).encode()) > MAX_BODY_BYTES
    elif path == "/voice/unknown-step":
        assert response.status_code == 404
    else:
        assert response.status_code in (200, 403)
        if response.status_code == 200:
            assert ET.fromstring(response.get_data()).tag == "Response"
    assert snapshot(ivr) == ivr._victim
