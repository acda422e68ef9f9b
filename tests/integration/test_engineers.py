"""Engineers as people: the commands, personal desk tokens kept as keyed hashes, and every
desk action recorded with who did it and when."""

import hashlib
import hmac
import json

import pytest
from sqlalchemy import select, text

from ivr.desk.engineers import Engineers
from ivr.desk.service import Desk
from ivr.storage.engineers import Engineer, EngineerRepository

from ..desk_support import ADMIN_TOKEN, add_ticket, at, parse_html, sign_in, signed_in
from ..support import Outcomes, until_waiting_for_a_lock

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def app(desk_app):
    return desk_app


def cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def add(app, name="aiko", *extra):
    result = cli(app, "engineers", "add", name, *(extra or ("--phone", "+81 90-1234-5678",
                                                            "--languages", "ja,en",
                                                            "--queues", "support-jp")))
    assert result.exit_code == 0, result.output
    heading, token = result.output.strip().splitlines()
    assert heading == f"Engineer {name} added. Their desk token (shown only now):"
    return token


def test_an_engineer_is_added_listed_and_their_token_is_stored_only_as_a_keyed_hash(app, ivr):
    token = add(app)
    listed = json.loads(cli(app, "engineers", "list", "--json").output)
    assert listed == [{"name": "aiko", "phone": "+819012345678", "client": None,
                       "languages": ["ja", "en"], "queues": ["support-jp"],
                       "created_at": listed[0]["created_at"]}]
    with ivr.storage.transaction() as session:
        stored = session.scalars(select(Engineer)).one().token_hash
        dump = " ".join(str(v) for row in session.execute(text("SELECT * FROM engineers"))
                        for v in row)
    key = ivr.hasher.derive("engineer-desk-token")
    assert stored == hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
    assert token not in dump and token not in json.dumps(listed)
    plain = cli(app, "engineers", "list").output
    assert "aiko" in plain and "+819012345678" in plain and token not in plain


@pytest.mark.parametrize("args, message", [
    (["bob"], "give exactly one of --phone E164 or --client IDENTITY"),
    (["bob", "--phone", "+1", "--client", "x"], "give exactly one of"),
    (["bob", "--phone", "12345"], "is not a valid phone number"),
    (["bob", "--client", "bad identity!"], "may hold letters, digits and _.@- only"),
    (["admin", "--client", "x"], "must be 1 to 63 letters"),
    (["Zendesk", "--client", "x"], "the names the history uses for others"),  # help desk
    (["System", "--client", "x"], "admin, zendesk, system, unknown engineer"),  # the service
    (["unknown engineer", "--client", "x"], "the names the history uses for others"),
    (["bob", "--client", "x", "--languages", "japanese"], "is not a language code"),
    (["bob", "--client", "x", "--queues", "support-jp,support-xx"],
     "queues: 'support-xx' is not a queue group callers are routed to; the configured ones: "
     "support, support-apac, support-emea, support-jp, support-us"),
    (["bob", "--client", "x", "--languages", ",".join(a + b for a in "abcdefg" for b in "abcdefg")],
     "languages: 'aa' is not a language callers speak on any line"),
])
def test_a_bad_engineer_is_refused_with_the_reason(app, args, message):
    result = cli(app, "engineers", "add", *args)
    assert result.exit_code != 0 and message in result.output


def test_a_language_no_line_speaks_is_refused_naming_the_ones_callers_speak(app):
    """`jp` for Japanese (the country, not the language) would leave the engineer taking
    English callers only and never a Japanese one, with nothing said."""
    result = cli(app, "engineers", "add", "bob", "--client", "x", "--languages", "jp,en")
    assert result.exit_code != 0
    assert "languages: 'jp' is not a language callers speak on any line; the configured " \
           "ones: en, fr, ja" in result.output
    assert json.loads(cli(app, "engineers", "list", "--json").output) == []
    add(app, "aiko", "--client", "aiko-laptop", "--languages", "ja-JP,fr")
    assert json.loads(cli(app, "engineers", "list", "--json").output)[0]["languages"] == \
        ["ja", "fr"]


def test_names_phones_and_identities_are_unique(app):
    add(app)
    assert "exists already" in cli(app, "engineers", "add", "aiko", "--client", "z").output
    # People read the names: 'Aiko' beside 'aiko' would be two engineers no one tells apart.
    assert "named 'aiko' exists already" in cli(app, "engineers", "add", "Aiko", "--client",
                                                "z").output
    assert "this phone number" in cli(app, "engineers", "add", "ben", "--phone",
                                      "+819012345678").output


@pytest.mark.parametrize("second, phone", [("aiko", "+14155550199"),  # the same form twice
                                           ("Aiko", "+14155550198")])  # only the name alike
def test_the_same_engineer_added_twice_at_once_is_refused_as_a_duplicate(ivr, clock, second,
                                                                          phone):
    """A form sent twice, or the same person typed in another case: the second add checks
    before the first commits, then its INSERT waits on the unique index; it is refused as a
    sequential duplicate is (409), not a database error and not a second engineer."""
    if ivr.storage.dialect != "postgresql":
        pytest.skip("SQLite's write lock runs the two adds one after the other")
    outcomes = Outcomes()
    adding = outcomes.thread("second",
                             lambda: Engineers.of(ivr).add(second, phone=phone))
    with ivr.storage.unit_of_work() as uow:  # the first add, not committed yet
        EngineerRepository(ivr.storage, uow.session).add(
            name="aiko", phone="+14155550199", client_identity=None, languages="en",
            queues="", token_hash="0" * 64, now=clock.now)
        adding.start()
        until_waiting_for_a_lock(ivr, adding, "the second add")
    adding.join(10)
    assert outcomes.errors == {"second": "Conflict: an engineer named 'aiko' exists already"}
    with ivr.storage.reading() as session:
        assert session.scalars(select(Engineer.name)).all() == ["aiko"]


def test_an_upgrade_stops_on_engineers_named_alike_and_says_which(app, ivr, clock):
    """Before names were compared without case, 'Aiko' and 'aiko' could both be added.
    Upgrading such a database stops, names them and leaves the schema as it was; once the
    operator removes one, the upgrade goes through and the database itself refuses the
    next look-alike."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import IntegrityError

    from ivr.storage.engine import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with ivr.storage.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
    for name, number in (("aiko", "+14155550198"), ("Aiko", "+14155550199")):
        with ivr.storage.unit_of_work() as uow:
            EngineerRepository(ivr.storage, uow.session).add(
                name=name, phone=number, client_identity=None, languages="",
                queues="", token_hash=name.encode().hex().ljust(64, "0"), now=clock.now)

    refused = cli(app, "init-db")
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines() == [
        "Error: schema not upgraded: engineers whose names differ only in case: 'Aiko', "
        "'aiko'; remove or re-add all but one of each ('engineers remove NAME'), then run "
        "init-db again"]
    with ivr.storage.engine.connect() as connection:
        assert connection.exec_driver_sql(
            "SELECT version_num FROM alembic_version").scalar() == "0011"

    assert cli(app, "engineers", "remove", "Aiko").exit_code == 0
    assert cli(app, "init-db").exit_code == 0
    with pytest.raises(IntegrityError):
        with ivr.storage.unit_of_work() as uow:
            EngineerRepository(ivr.storage, uow.session).add(
                name="AIKO", phone=None, client_identity="aiko2", languages="",
                queues="", token_hash="1" * 64, now=clock.now)


def test_a_personal_token_opens_the_api_until_it_is_rotated_or_removed(app):
    token = add(app)
    client = app.test_client()
    assert client.get("/api/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    rotated = cli(app, "engineers", "rotate-token", "aiko")
    assert rotated.exit_code == 0
    new = rotated.output.strip().splitlines()[-1]
    assert new != token
    assert client.get("/api/tickets", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/tickets", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert cli(app, "engineers", "remove", "aiko").output.strip() == "Engineer aiko removed."
    assert client.get("/api/tickets", headers={"Authorization": f"Bearer {new}"}).status_code == 401
    assert cli(app, "engineers", "remove", "aiko").exit_code != 0


def test_every_desk_action_records_who_and_when_in_the_api(app, ivr, clock):
    token = add(app)
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    client = app.test_client()
    client.patch(f"/api/tickets/{ticket.number}", json={"priority": 2},
                 headers={"Authorization": f"Bearer {token}"})
    clock.advance(minutes=5)
    view = client.patch(f"/api/tickets/{ticket.number}", json={"status": "closed"},
                        headers=AUTH).get_json()
    assert [(a["actor"], a["action"], a["detail"], a["at"]) for a in view["actions"]] == [
        ("aiko", "priority", "P1 -> P2", "2026-11-25T12:00:00+00:00"),
        ("admin", "close", "open -> closed", "2026-11-25T12:05:00+00:00"),
    ]


def test_an_engineer_signs_in_to_the_dashboard_and_their_actions_carry_their_name(app, ivr):
    token = add(app)
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    browser = app.test_client()
    response = sign_in(browser, token)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    path = f"/admin/tickets/{ticket.number}"
    doc = parse_html(browser.get(path).get_data(as_text=True))
    browser.post(f"{path}/close", data={"csrf_token": doc.find("close").field("csrf_token")})
    doc = parse_html(browser.get(path).get_data(as_text=True))
    rows = doc.find("history").rows()
    assert [cells[1:3] for _, cells in rows] == [["aiko", "close"]]
    # A rotated token signs the engineer out of the dashboard.
    cli(app, "engineers", "rotate-token", "aiko")
    assert browser.get("/admin/").status_code == 302


def test_a_removed_engineers_dashboard_session_ends_at_once_and_no_namesake_inherits_it(
        app, ivr):
    """Removing an engineer signs them out everywhere: the browser they left signed in (or
    a copy of its cookie) opens no page and changes nothing, and an engineer added again
    under the same name starts with a token, and sessions, of their own."""
    browser = signed_in(app, add(app))
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    path = f"/admin/tickets/{ticket.number}"
    token = parse_html(browser.get(path).get_data(as_text=True)).find("close").field("csrf_token")
    assert cli(app, "engineers", "remove", "aiko").exit_code == 0
    assert browser.get(path).headers["Location"] == "/admin/login"
    assert browser.post(f"{path}/close", data={"csrf_token": token}).status_code == 302
    add(app)
    assert browser.get("/admin/").headers["Location"] == "/admin/login"
    assert Desk.of(ivr).ticket(ticket.number)["status"] == "open"


def test_changing_the_admin_token_signs_engineers_out_as_well(app, ivr):
    engineer = signed_in(app, add(app))
    operator = signed_in(app, ADMIN_TOKEN)
    assert engineer.get("/admin/").status_code == operator.get("/admin/").status_code == 200
    ivr.settings = ivr.settings.model_copy(update={"admin_token": "another-admin-" + "7" * 24})
    assert operator.get("/admin/").status_code == 302
    assert engineer.get("/admin/").status_code == 302


def test_a_sign_in_that_a_rotation_overtakes_opens_no_session_the_new_token_keeps(
        app, ivr, monkeypatch):
    old = add(app)
    checked = Engineers.by_token

    def checked_then_rotated(self, token):  # another request rotates right after the check
        found = checked(self, token)
        monkeypatch.setattr(Engineers, "by_token", checked)
        Engineers.of(ivr).rotate_token(found.name)
        return found

    monkeypatch.setattr(Engineers, "by_token", checked_then_rotated)
    browser = signed_in(app, old)
    assert Engineers.by_token is checked  # the rotation happened
    assert browser.get("/admin/").status_code == 302


def test_tickets_show_lists_who_did_what(app, ivr):
    token = add(app)
    ticket = add_ticket(ivr, created=at("2026-11-25 11:00"))
    app.test_client().patch(f"/api/tickets/{ticket.number}", json={"status": "closed"},
                            headers={"Authorization": f"Bearer {token}"})
    shown = cli(app, "tickets", "show", ticket.number).output.splitlines()
    assert "  2026-11-25T12:00:00 aiko: close (open -> closed)" in shown
