"""The yardstick: a bare Flask endpoint that answers every voice webhook path with a fixed
TwiML prompt, with no signature check and no database. The benchmark replays the service's
own calls against it with the same client and concurrency, so the ratio of the two
servers' CPU per webhook is a figure that holds on any machine."""

from flask import Flask, Response
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


@app.post("/voice")
@app.post("/voice/<path:step>")
def voice(step: str = ""):
    return Response(BODY, mimetype="text/xml")


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
