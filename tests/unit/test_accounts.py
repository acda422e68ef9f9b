"""Validating the accounts CSV."""

import pytest

from ivr.desk.directory import HEADER, ImportFailed, is_trivial, parse
from ivr.config import Lengths

HEAD = ",".join(HEADER)


def test_a_good_file_parses_every_row():
    rows = parse(f"{HEAD}\nacct,Business,A@Example.com,Owner,1234567890,740193\n", Lengths())
    assert rows[0].plan == "business" and rows[0].role == "owner"
    assert rows[0].user_email == "a@example.com"


@pytest.mark.parametrize("row, reason", [
    ("acct,gold,a@example.com,owner,1234567890,740193", "row 2: plan 'gold' is not one of"),
    ("acct,pro,a@example.com,boss,1234567890,740193", "row 2: role 'boss' is not one of"),
    ("acct,pro,a@example.com,owner,12345678,740193", "row 2: pmi must be 9 to 11 digits"),
    ("acct,pro,a@example.com,owner,123456789012,740193", "row 2: pmi must be 9 to 11 digits"),
    ("acct,pro,a@example.com,owner,1234567890,74019", "row 2: host_key must be 6 to 10 digits"),
    ("acct,pro,a@example.com,owner,1234567890,74019a", "row 2: host_key must be 6 to 10 digits"),
    ("acct,pro,a@example.com,owner,1234567890,111111", "row 2: host_key is too easy to guess"),
    ("acct,pro,a@example.com,owner,1234567890,123456", "row 2: host_key is too easy to guess"),
    ("acct,pro,not-an-email,owner,1234567890,740193", "row 2: user_email is not an email"),
    ("acct,pro,a@example.com,owner", "row 2: expected 6 fields, got 4"),
    ("a" * 65 + ",pro,a@example.com,owner,1234567890,740193",
     "row 2: account_id is 65 characters, more than the 64 kept"),
    ("acct,pro," + "a" * 243 + "@example.com,owner,1234567890,740193",
     "row 2: user_email is 255 characters, more than the 254 kept"),
])
def test_a_bad_row_is_reported_with_its_number_and_reason(row, reason):
    with pytest.raises(ImportFailed) as error:
        parse(f"{HEAD}\n{row}\n", Lengths())
    assert reason in str(error.value)


def test_every_bad_row_is_reported_not_just_the_first():
    text = (f"{HEAD}\nacct,pro,a@example.com,owner,1234567890,740193\n"
            "acct,gold,b@example.com,owner,1234567891,740193\n"
            "acct,pro,c@example.com,owner,1234567890,740193\n")
    with pytest.raises(ImportFailed) as error:
        parse(text, Lengths())
    assert error.value.problems == [
        "row 3: plan 'gold' is not one of free, pro, business, education, enterprise, api",
        "row 4: pmi repeats row 2",
    ]


def test_a_wrong_header_is_refused():
    with pytest.raises(ImportFailed, match="row 1: header must be"):
        parse("pmi,host_key\n1234567890,740193\n", Lengths())


@pytest.mark.parametrize("key, trivial", [
    ("000000", True), ("999999999", True), ("123456", True), ("987654", True),
    ("890123", True), ("740193", False), ("123457", False), ("112233", False),
])
def test_trivial_host_keys_are_recognised(key, trivial):
    assert is_trivial(key) is trivial


def test_a_file_without_its_header_is_refused_without_echoing_its_first_row():
    with pytest.raises(ImportFailed) as error:
        parse("acme,business,owner@acme.example,owner,5550177201,8172635\n", Lengths())
    (problem,) = error.value.problems
    for secret in ("8172635", "5550177201", "owner@acme.example"):
        assert secret not in problem
    assert "missing account_id, plan, user_email, role, pmi, host_key" in problem
    assert "6 other cells not shown" in problem


def test_a_row_whose_columns_are_out_of_place_is_refused_without_echoing_its_pmi_or_host_key():
    """An export in another column order under the right header puts a PMI where the plan
    belongs and a host key where the role does: the message names those cells, and
    quotes a plain word still, but never a value with digits in it (it reaches the
    terminal and the logs of whatever ran the import)."""
    text = (f"{HEAD}\nacme,5550177201,owner@acme.example,8172635,owner,business\n"
            "beta,gold,b@example.com,owner,1234567890,740193\n")
    with pytest.raises(ImportFailed) as error:
        parse(text, Lengths())
    first, second = error.value.problems
    assert first.startswith("row 2: plan ") and "; role " in first
    for secret in ("8172635", "5550177201", "2635", "7201"):
        assert secret not in str(error.value)
    assert second.startswith("row 3: plan 'gold' is not one of")


def test_a_header_in_another_order_is_named():
    with pytest.raises(ImportFailed) as error:
        parse("plan,account_id,user_email,role,pmi,host_key\n", Lengths())
    assert error.value.problems == [
        "row 1: header must be account_id,plan,user_email,role,pmi,host_key; "
        "got plan,account_id,user_email,role,pmi,host_key"]


def test_a_field_larger_than_the_csv_reader_takes_is_reported_not_a_crash():
    text = f'{HEAD}\nacct,Business,a@example.com,owner,1234567890,740193\n' \
           f'b,pro,x@example.com,owner,123456789,"{"9" * 200_000}"\n'
    with pytest.raises(ImportFailed, match=r"line 3: field larger than field limit"):
        parse(text, Lengths())
