"""The app's services as the views and commands reach them: ``ivr()`` inside a request or
a command returns what ``create_app`` wired together; ``schema_free`` marks a command
that runs on a database of any schema (``cli.explain_database_errors``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # the wiring imports every layer; this module must not
    from . import Ivr


def ivr() -> "Ivr":
    return current_app.extensions["ivr"]


def schema_free(when=lambda params: True):
    """Marks a command that may run on a database of any schema, or none (``when`` its
    parameters say so): ``explain_database_errors`` leaves its schema unchecked."""
    def mark(callback):
        callback.__schema_free__ = when
        return callback
    return mark


# Set in a request's WSGI environ by a view whose answer is made as it is sent, a piece
# at a time (the ticket export): the server front (ivr/edge.py) then asks for each piece
# off the app's thread as the client takes the one before, instead of having the app's
# thread make the whole answer first.
STREAMED_BODY = "ivr.streamed_body"
