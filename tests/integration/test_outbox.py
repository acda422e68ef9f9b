"""The SMS outbox: queued by the webhooks, sent by the drain outside any request."""

import pytest
from sqlalchemy import select

from ivr import outbox
from ivr.storage.models import OutboxMessage

from ..support import CALLER, PRO_OWNER, RecordingHttpClient


def queue_one(simulator):
    simulator.call("+18887999666", CALLER, ["2", f"{PRO_OWNER[0]}#", f"{PRO_OWNER[1]}#"])


def messages(ivr):
    with ivr.storage.transaction() as session:
        return session.scalars(select(OutboxMessage)).all()


def with_twilio(ivr):
    """The app's settings with the account and sender number the SMS need."""
    return ivr.settings.model_copy(update={"twilio_account_sid": "AC" + "1" * 32,
                                           "sms_from": "+15005550006"})


def sender_clock(monkeypatch) -> list:
    """The sender's clock, held still: ``now[0] += ...`` moves it."""
    from ivr.storage import utcnow

    now = [utcnow()]
    monkeypatch.setattr(outbox, "utcnow", lambda: now[0])
    return now


def test_without_credentials_each_message_is_marked_not_sent_with_the_reason(simulator, ivr):
    queue_one(simulator)
    counts = outbox.drain(ivr.storage, ivr.settings)
    assert counts["not_sent"] == 1
    (message,) = messages(ivr)
    assert message.status == "not_sent"
    assert message.reason == "not configured: TWILIO_ACCOUNT_SID, IVR_SMS_FROM"


def test_with_credentials_the_sender_posts_to_twilio_messages(simulator, ivr):
    queue_one(simulator)
    settings = with_twilio(ivr)
    http = RecordingHttpClient()
    counts = outbox.drain(ivr.storage, settings, http_client=http)
    assert counts["sent"] == 1
    (request,) = http.requests
    assert request["method"] == "POST"
    assert request["uri"].endswith(f"/Accounts/{'AC' + '1' * 32}/Messages.json")
    assert request["data"]["To"] == CALLER and request["data"]["From"] == "+15005550006"
    assert ivr.config.links.web_ticket in request["data"]["Body"]
    (message,) = messages(ivr)
    assert message.status == "sent" and message.twilio_sid.startswith("SM")
    assert outbox.drain(ivr.storage, settings, http_client=http) == {
        "sent": 0, "not_sent": 0, "failed": 0, "retry": 0}
    assert len(http.requests) == 1


def test_a_messaging_service_sid_is_sent_as_the_messaging_service_not_as_the_sender(
        simulator, ivr):
    """A Messaging Service picks the sender from its pool: its SID goes in
    MessagingServiceSid, and no From is sent."""
    queue_one(simulator)
    service = "MG" + "0123456789abcdef" * 2
    settings = with_twilio(ivr).model_copy(update={"sms_from": service})
    http = RecordingHttpClient()
    assert outbox.drain(ivr.storage, settings, http_client=http)["sent"] == 1
    (request,) = http.requests
    assert request["data"]["MessagingServiceSid"] == service
    assert "From" not in request["data"] and request["data"]["To"] == CALLER


def test_a_message_twilio_refuses_is_given_up_at_once(simulator, ivr):
    queue_one(simulator)
    settings = with_twilio(ivr)
    error = (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
    http = RecordingHttpClient([error])
    assert outbox.drain(ivr.storage, settings, http_client=http)["failed"] == 1
    (message,) = messages(ivr)
    assert message.status == "failed" and message.attempts == 1
    assert "21211" in message.reason or "Invalid" in message.reason
    assert outbox.drain(ivr.storage, settings, http_client=http)["failed"] == 0
    assert len(http.requests) == 1


def test_a_failure_that_may_pass_is_tried_again_later_and_later_then_given_up(
        simulator, ivr, monkeypatch):
    """Ten seconds of Twilio trouble used to spend every try (one per round of the
    sender, every 2 s). Each try now waits twice as long as the one before."""
    import datetime as dt

    queue_one(simulator)
    now = sender_clock(monkeypatch)
    settings = with_twilio(ivr)
    down = (503, {"code": 20503, "message": "Service Unavailable", "status": 503})
    http = RecordingHttpClient([down] * outbox.MAX_ATTEMPTS)
    waits = []
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        assert outbox.drain(ivr.storage, settings, http_client=http)["retry" if attempt <
                                                                      outbox.MAX_ATTEMPTS else "failed"] == 1
        (message,) = messages(ivr)
        if message.status == "failed":
            break
        wait = message.next_attempt_at - now[0]
        waits.append(wait)
        now[0] += wait - dt.timedelta(seconds=1)  # not yet due: nothing is sent
        assert outbox.drain(ivr.storage, settings, http_client=http)["retry"] == 0
        now[0] += dt.timedelta(seconds=1)
    assert waits == [outbox.RETRY_AFTER * 2 ** n for n in range(outbox.MAX_ATTEMPTS - 1)]
    assert message.status == "failed" and message.attempts == outbox.MAX_ATTEMPTS
    assert len(http.requests) == outbox.MAX_ATTEMPTS
    assert sum(waits, dt.timedelta()) > dt.timedelta(hours=2)


def test_a_failure_then_a_success_sends_the_message(simulator, ivr, monkeypatch):
    queue_one(simulator)
    now = sender_clock(monkeypatch)
    settings = with_twilio(ivr)
    http = RecordingHttpClient([(500, {"message": "oops", "status": 500}),
                                (201, {"sid": "SM" + "c" * 32, "status": "queued"})])
    assert outbox.drain(ivr.storage, settings, http_client=http)["retry"] == 1
    now[0] += outbox.RETRY_AFTER
    assert outbox.drain(ivr.storage, settings, http_client=http)["sent"] == 1
    (message,) = messages(ivr)
    assert (message.status, message.attempts, message.next_attempt_at) == ("sent", 2, None)


def test_a_slow_twilio_api_does_not_hold_the_database_while_sending(simulator, ivr):
    from sqlalchemy import update

    from ivr.storage.models import Call

    queue_one(simulator)
    settings = with_twilio(ivr)
    writes = []

    class WritingWhileSending(RecordingHttpClient):
        def request(self, *args, **kwargs):
            # A webhook writing while the message is in flight must not wait for the sender.
            with ivr.storage.transaction() as session:
                session.execute(update(Call).values(attempts=Call.attempts))
            writes.append(True)
            return super().request(*args, **kwargs)

    assert outbox.drain(ivr.storage, settings, http_client=WritingWhileSending())["sent"] == 1
    assert writes == [True]


def test_a_message_claimed_by_a_sender_that_died_is_sent_again_later(simulator, ivr, clock):
    import datetime as dt

    from sqlalchemy import update

    from ivr.storage import utcnow

    queue_one(simulator)
    with ivr.storage.unit_of_work() as uow:  # a sender claims it, then dies
        assert len(uow.outbox.claim(10, utcnow(), outbox.STALE_CLAIM)) == 1
    settings = with_twilio(ivr)
    http = RecordingHttpClient()
    assert outbox.drain(ivr.storage, settings, http_client=http)["sent"] == 0  # still claimed
    with ivr.storage.transaction() as session:
        stale = utcnow() - outbox.STALE_CLAIM - dt.timedelta(seconds=1)
        session.execute(update(OutboxMessage).values(claimed_at=stale))
    assert outbox.drain(ivr.storage, settings, http_client=http)["sent"] == 1
    (message,) = messages(ivr)
    assert message.status == "sent" and message.attempts == 2


def test_a_batch_slower_than_a_claim_has_each_message_sent_once_beside_a_second_sender(
        simulator, ivr, monkeypatch):
    """Sender A claims three messages and sends them one at a time, each send within the
    claim but the batch longer than it. Each claim is renewed just before its send, so
    sender B, starting while A sends the second, takes only the third (whose claim ran
    out), and A, finding it taken, does not send it again."""
    import datetime as dt

    for _ in range(3):
        queue_one(simulator)
    now = sender_clock(monkeypatch)
    settings = with_twilio(ivr)
    other = RecordingHttpClient()

    class Slow(RecordingHttpClient):
        """A's Twilio: each request takes 6 minutes; B runs during the second."""

        def request(self, *args, **kwargs):
            now[0] += dt.timedelta(minutes=6)
            if len(self.requests) == 1:
                taken = outbox.drain(ivr.storage, settings, http_client=other)["sent"]
                assert taken == 1, f"B sent {taken} messages, not just the one A left"
            return super().request(*args, **kwargs)

    mine = Slow()
    assert outbox.drain(ivr.storage, settings, http_client=mine)["sent"] == 2
    assert (len(mine.requests), len(other.requests)) == (2, 1)
    sent = sorted(messages(ivr), key=lambda m: m.id)
    assert [(m.status, m.attempts) for m in sent] == [("sent", 1), ("sent", 1), ("sent", 2)]


def test_a_result_is_not_recorded_over_a_sender_that_took_the_message_since(
        simulator, ivr, monkeypatch):
    """A's send outlasts its claim and sender B sends the message meanwhile: A's result
    is not written over B's, the message stays as B recorded it."""
    import datetime as dt

    queue_one(simulator)
    now = sender_clock(monkeypatch)
    settings = with_twilio(ivr)
    other = RecordingHttpClient([(201, {"sid": "SM" + "b" * 32, "status": "queued"})])

    class Stuck(RecordingHttpClient):
        def request(self, *args, **kwargs):
            now[0] += outbox.STALE_CLAIM + dt.timedelta(seconds=1)
            assert outbox.drain(ivr.storage, settings, http_client=other)["sent"] == 1
            return super().request(*args, **kwargs)

    assert outbox.drain(ivr.storage, settings, http_client=Stuck())["sent"] == 1
    (message,) = messages(ivr)
    assert (message.status, message.twilio_sid, message.attempts) == ("sent", "SM" + "b" * 32, 2)


def test_the_sender_says_when_it_starts_that_text_messages_are_not_sent_and_what_is_missing(
        app, settings, clock, monkeypatch):
    """Without the SMS settings every message is marked not_sent; the sender (make run's,
    logging to a file) said nothing of it, so a missing setting went unseen."""
    from ivr import create_app

    monkeypatch.setattr(outbox, "watch", lambda *args, **kwargs: None)
    warning = ("Text messages are not sent: TWILIO_ACCOUNT_SID, IVR_SMS_FROM not set "
               "(each is marked not_sent).")
    for args in (["outbox", "drain", "--watch"], ["outbox", "drain"]):
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code == 0, result.output
        assert warning in result.output.splitlines()
    configured = create_app(with_twilio(app.extensions["ivr"]), clock=clock)
    try:
        result = configured.test_cli_runner().invoke(args=["outbox", "drain", "--watch"])
        assert result.exit_code == 0 and "not sent" not in result.output
    finally:
        configured.extensions["ivr"].storage.dispose()


def test_a_twilio_api_that_trickles_its_answer_is_hung_up_on_at_the_time_out(httpserver,
                                                                             monkeypatch):
    """requests' time-out bounds each read, not the answer: a Twilio API (or a proxy
    before it) sending its answer's head a byte at a time held the sender for as long as
    it went on, every SMS and help-desk push behind it waiting, and past the message's
    claim another sender would text the caller a second time. Each REST request is hung
    up at its time-out (0.5 s here) and fails as a time-out, which the sender tries
    again later."""
    import requests

    from ivr import config
    from ivr.config import Settings

    from ..zendesk_fake import TricklingProxy

    path = f"/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    httpserver.expect_request(path, method="POST").respond_with_json({"sid": "SM" + "1" * 32},
                                                                     status=201)
    proxy = TricklingProxy(httpserver.url_for("/"))  # the head takes ~5 s
    monkeypatch.setattr(config, "REST_TIMEOUT", 0.5)
    client = Settings(validate_signatures=False, twilio_account_sid="AC" + "1" * 32,
                      twilio_auth_token="t" * 32).rest_client()
    try:
        with pytest.raises(requests.Timeout):
            client.http_client.request("POST", proxy.url + path,
                                       data={"To": "+15005550006", "Body": "hi"})
        proxy.wait()
        assert proxy.heads == {"whole": 0, "hung_up": 1}
    finally:
        proxy.close()


def test_a_twilio_api_trickling_through_a_tls_proxy_is_hung_up_on_at_the_time_out(
        tmp_path, monkeypatch):
    """Through a proxy spoken to over TLS (``HTTPS_PROXY=https://...``), the connection
    to Twilio is TLS inside TLS, and its socket is not a socket but urllib3's wrapper of
    one: the deadline must still hang it up, not fail in its timer and leave the sender
    held until the answer's head has trickled in."""
    import requests

    from ivr import config
    from ivr.config import Settings

    from ..zendesk_fake import TlsTunnel

    tunnel = TlsTunnel(tmp_path)  # the head takes ~4 s
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", tunnel.proxy_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tunnel.cert)
    monkeypatch.setattr(config, "REST_TIMEOUT", 0.5)
    client = Settings(validate_signatures=False, twilio_account_sid="AC" + "1" * 32,
                      twilio_auth_token="t" * 32).rest_client()
    try:
        with pytest.raises(requests.Timeout):
            client.http_client.request("POST", tunnel.origin_url + "/Messages.json",
                                       data={"To": "+15005550006", "Body": "hi"})
        tunnel.wait()
        assert tunnel.heads == {"whole": 0, "hung_up": 1}
    finally:
        tunnel.close()
