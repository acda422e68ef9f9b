"""The app's services as the views and commands reach them: ``ivr()`` inside a request or
a command returns what ``create_app`` wired together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # the wiring imports every layer; this module must not
    from . import Ivr


def ivr() -> "Ivr":
    return current_app.extensions["ivr"]
