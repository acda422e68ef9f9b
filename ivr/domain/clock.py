"""The service's notion of now: timezone-aware UTC, replaceable in tests."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
