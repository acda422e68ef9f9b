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


def test_queues_past_the_first_page_are_pruned_too(config, settings):
    """A surge leaves thousands of queues, and the list comes a page of 1,000 at a time:
    when the first page holds none that can go (callers still waiting, other queues of
    the account), the empty ones further on are still found and deleted."""
    settings = settings.model_copy(update={"twilio_account_sid": ACCOUNT})
    busy = [queue(f"QU{n:032d}", f"support-us.{20000000 + n}", 1, 30) for n in range(1000)]
    first = {"queues": busy, "page": 0, "page_size": 1000, "uri": "/queues",
             "next_page_uri": f"/2010-04-01/Accounts/{ACCOUNT}/Queues.json?PageSize=1000&Page=1"
                              "&PageToken=PAQU1000"}
    second = {"queues": [queue("QU" + "9" * 32, "support-jp.12345678", 0, 30)], "page": 1,
              "page_size": 1000, "uri": "/queues", "next_page_uri": None}
    http = RecordingHttpClient([(200, first), (200, second), (204, {})])
    assert queues.prune(config, settings, http_client=http, now=NOW) == 1
    assert [(r["method"], r["uri"].rsplit("/", 1)[-1]) for r in http.requests] == [
        ("GET", "Queues.json"), ("GET", "Queues.json?PageSize=1000&Page=1&PageToken=PAQU1000"),
        ("DELETE", f"QU{'9' * 32}.json")]


def test_a_listing_that_fails_halfway_still_deletes_what_it_found(config, settings):
    settings = settings.model_copy(update={"twilio_account_sid": ACCOUNT})
    first = {"queues": [queue("QU" + "1" * 32, "support-jp.12345678", 0, 30)], "page": 0,
             "page_size": 1000, "uri": "/queues",
             "next_page_uri": f"/2010-04-01/Accounts/{ACCOUNT}/Queues.json?Page=1&PageToken=PA1"}
    http = RecordingHttpClient([(200, first), (503, {"message": "unavailable"}), (204, {})])
    assert queues.prune(config, settings, http_client=http, now=NOW) == 1
    assert [r["method"] for r in http.requests] == ["GET", "GET", "DELETE"]


def test_a_round_deletes_at_most_a_page_of_queues_so_the_sender_goes_back_to_its_messages(
        config, settings):
    """The sender deletes queues between its text messages and help-desk pushes, one REST
    request each: after a surge of thousands of callers, deleting every empty queue of
    the 20,000 listed in one round would hold up the callers' texts for many minutes.
    A round deletes up to a page's worth; the rest go in the next rounds."""
    settings = settings.model_copy(update={"twilio_account_sid": ACCOUNT})
    empty = [queue(f"QU{n:032d}", f"support-us.{20000000 + n}", 0, 30) for n in range(1500)]
    first = {"queues": empty[:1000], "page": 0, "page_size": 1000, "uri": "/queues",
             "next_page_uri": f"/2010-04-01/Accounts/{ACCOUNT}/Queues.json?PageSize=1000&Page=1"
                              "&PageToken=PAQU1000"}
    second = {"queues": empty[1000:], "page": 1, "page_size": 1000, "uri": "/queues",
              "next_page_uri": None}
    http = RecordingHttpClient([(200, first), (200, second)])  # then 201 to each delete
    assert queues.prune(config, settings, http_client=http, now=NOW) == queues.PAGE_SIZE
    deleted = [r["uri"].rsplit("/", 1)[-1] for r in http.requests if r["method"] == "DELETE"]
    assert deleted == [f"QU{n:032d}.json" for n in range(queues.PAGE_SIZE)]
