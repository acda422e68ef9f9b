"""Per-ticket Twilio queues are deleted by the sender once empty and idle."""

import datetime as dt

from ivr import queues

from ..support import RecordingHttpClient

ACCOUNT = "AC" + "1" * 32
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def queue(sid, name, size, minutes_ago):
    updated = (NOW - dt.timedelta(minutes=minutes_ago)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return {"sid": sid, "friendly_name": name, "current_size": size, "date_updated": updated,
            "account_sid": ACCOUNT, "average_wait_time": 0, "max_size": 1000}


def test_only_empty_idle_ticket_queues_of_configured_groups_are_deleted(config, settings):
    settings = settings.model_copy(update={"twilio_account_sid": ACCOUNT})
    listing = {"queues": [
        queue("QU" + "1" * 32, "support-jp.12345678", 0, 30),     # deleted
        queue("QU" + "2" * 32, "support-us.23456789", 1, 30),     # a caller still waits
        queue("QU" + "3" * 32, "support-us.34567890", 0, 2),      # just emptied
        queue("QU" + "4" * 32, "support", 0, 60),                 # the fallback queue
        queue("QU" + "5" * 32, "elsewhere.45678901", 0, 60),      # not one of ours
    ], "next_page_uri": None, "page": 0, "page_size": 1000, "uri": "/queues"}
    http = RecordingHttpClient([(200, listing), (204, {})])
    assert queues.prune(config, settings, http_client=http, now=NOW) == 1
    assert [(r["method"], r["uri"].rsplit("/", 1)[-1]) for r in http.requests] == [
        ("GET", "Queues.json"), ("DELETE", f"QU{'1' * 32}.json")]


def test_without_credentials_nothing_is_asked(config, settings):
    http = RecordingHttpClient()
    assert queues.prune(config, settings, http_client=http, now=NOW) == 0
    assert http.requests == []
