"""The SMS outbox: queued by the webhooks, sent by the drain outside any request."""

from sqlalchemy import select

from ivr import outbox
from ivr.models import OutboxMessage

from ..support import CALLER, PRO_OWNER, RecordingHttpClient


def queue_one(simulator):
    simulator.call("+18887999666", CALLER, ["2", f"{PRO_OWNER[0]}#", f"{PRO_OWNER[1]}#"])


def messages(ivr):
    with ivr.storage.transaction() as session:
        return session.scalars(select(OutboxMessage)).all()


def test_without_credentials_each_message_is_marked_not_sent_with_the_reason(simulator, ivr):
    queue_one(simulator)
    counts = outbox.drain(ivr.storage, ivr.settings)
    assert counts["not_sent"] == 1
    (message,) = messages(ivr)
    assert message.status == "not_sent"
    assert message.reason == "not configured: TWILIO_ACCOUNT_SID, IVR_SMS_FROM"


def test_with_credentials_the_sender_posts_to_twilio_messages(simulator, ivr):
    queue_one(simulator)
    settings = ivr.settings.model_copy(update={"twilio_account_sid": "AC" + "1" * 32,
                                               "sms_from": "+15005550006"})
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


def test_a_rejected_message_is_retried_then_given_up(simulator, ivr):
    queue_one(simulator)
    settings = ivr.settings.model_copy(update={"twilio_account_sid": "AC" + "1" * 32,
                                               "sms_from": "+15005550006"})
    error = (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
    http = RecordingHttpClient([error] * outbox.MAX_ATTEMPTS)
    for _ in range(outbox.MAX_ATTEMPTS):
        outbox.drain(ivr.storage, settings, http_client=http)
    (message,) = messages(ivr)
    assert message.status == "failed" and message.attempts == outbox.MAX_ATTEMPTS
    assert "21211" in message.reason or "Invalid" in message.reason
