"""Phone-number rules that logs depend on."""

from ivr.domain.phones import mask, redact_numbers


def test_long_numbers_in_error_text_keep_their_last_four_digits_only():
    text = ("Failing row contains (CA0123456789abcdef0123456789abcdef, +14155550123, "
            "912345678, 42, 2026-11-25, line 1234)")
    redacted = redact_numbers(text)
    assert "+14155550123" not in redacted and "912345678" not in redacted
    assert "…0123" in redacted and "…5678" in redacted
    # call SIDs, short counts, dates and line numbers stay as they were
    for kept in ("CA0123456789abcdef0123456789abcdef", " 42,", "2026-11-25", "line 1234"):
        assert kept in redacted
    assert mask("+14155550123") == "…0123"
