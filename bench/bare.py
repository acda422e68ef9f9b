"""The yardstick: a bare Flask endpoint that answers every voice webhook path with a fixed
TwiML prompt, with no signature check and no database. The benchmark replays the service's
own calls against it with the same client and concurrency, so the ratio of the two
servers' CPU per webhook is a figure that holds on any machine.

With ``BENCH_BARE_TRANSACTION_URL`` (a libpq URL) set, every voice request also runs one
transaction shaped like a webhook's on PostgreSQL before answering: BEGIN, the call's row
read with a row lock, that row written (inserted the first time), COMMIT. Four round
trips on one connection per worker, straight on psycopg: the least any webhook that keeps
its state in PostgreSQL can do. At a caller's pace it shows how much of the target a
transaction takes by itself (bench/README.md)."""

import os
import threading

from flask import Flask, Response, request
from twilio.twiml.voice_response import Gather, VoiceResponse

app = Flask(__name__)

_response = VoiceResponse()
_gather = Gather(input="dtmf", action="/voice/menu", method="POST", timeout=6, num_digits=1,
                 finish_on_key="")
_gather.say("Thank you for calling. For technical support, press 2.", language="en-US",
            voice="Polly.Joanna-Neural")
_response.append(_gather)
_response.redirect("/voice/menu", method="POST")
BODY = str(_response)

TRANSACTION_URL = os.environ.get("BENCH_BARE_TRANSACTION_URL")
# The table run.py creates before this server starts (two workers creating it at once
# would collide on PostgreSQL's catalogue).
TABLE = "bench_bare_calls"
TABLE_DDL = (f"CREATE TABLE IF NOT EXISTS {TABLE} (call_sid text PRIMARY KEY, "
             "steps integer NOT NULL, path text NOT NULL)")
_local = threading.local()


def _transaction(call_sid: str, path: str) -> None:
    import psycopg

    connection = getattr(_local, "connection", None)
    if connection is None:
        # Autocommit with an explicit BEGIN, as the service's dialect sends it.
        connection = _local.connection = psycopg.connect(TRANSACTION_URL, autocommit=True)
    connection.execute("BEGIN")
    try:
        row = connection.execute(f"SELECT steps FROM {TABLE} WHERE call_sid = %s FOR UPDATE",
                                 (call_sid,)).fetchone()
        if row is None:
            connection.execute(f"INSERT INTO {TABLE} VALUES (%s, 1, %s) "
                               "ON CONFLICT (call_sid) DO NOTHING", (call_sid, path))
        else:
            connection.execute(f"UPDATE {TABLE} SET steps = %s, path = %s WHERE call_sid = %s",
                               (row[0] + 1, path, call_sid))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


@app.post("/voice")
@app.post("/voice/<path:step>")
def voice(step: str = ""):
    if TRANSACTION_URL:
        _transaction(request.form.get("CallSid", ""), request.path)
    return Response(BODY, mimetype="text/xml")


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
