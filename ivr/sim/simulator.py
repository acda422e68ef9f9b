"""The call simulator: plays Twilio's side of a call against the app.

It posts the standard voice parameters, signs every request with the auth token exactly
as Twilio does, follows the TwiML it gets back and records what the caller would hear.
In-process through the WSGI app by default, or over HTTP against a running server.
"""

from __future__ import annotations

import json
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol
from urllib.parse import parse_qs, urljoin, urlsplit

from twilio.request_validator import RequestValidator

from . import speech as speech_time

MAX_REQUESTS = 60

# What the simulator can play. Anything else in a reply raises UnknownTwiML: a verb it
# does not know would otherwise end the simulated call quietly and hide the mistake.
VERBS = {"Say", "Play", "Pause", "Gather", "Redirect", "Enqueue", "Dial", "Hangup", "Reject",
         "Leave"}
NOUNS = {"Gather": {"Say", "Play", "Pause"}, "Dial": {"Number", "Sip", "Client", "Queue",
                                                      "Conference"},
         "Enqueue": {"Task"}}
SSML = {"say-as", "break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "sub", "w"}
ROUTES = ("Enqueue", "Dial")


class UnknownTwiML(ValueError):
    """A reply the simulator cannot play as Twilio would."""


def read(document: str | bytes) -> ET.Element:
    """A TwiML document parsed and checked: a <Response> holding only verbs (and nouns
    inside them) that the simulator plays. Raises UnknownTwiML otherwise."""
    if isinstance(document, str):
        document = document.encode("utf-8")
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise UnknownTwiML(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise UnknownTwiML(f"the root element is <{root.tag}>, not <Response>")
    for verb in root:
        if verb.tag not in VERBS:
            raise UnknownTwiML(f"<{verb.tag}> is not a verb the simulator plays")
        _check_children(verb)
    return root


def _check_children(verb: ET.Element) -> None:
    allowed = NOUNS.get(verb.tag, set())
    for child in verb:
        if verb.tag == "Say" or verb.tag in SSML:
            if child.tag not in SSML:
                raise UnknownTwiML(f"<{child.tag}> inside <Say> is not SSML the simulator reads")
            _check_children(child)
            continue
        if child.tag not in allowed:
            raise UnknownTwiML(f"<{child.tag}> inside <{verb.tag}> is not something the "
                               "simulator plays")
        _check_children(child)


class Transport(Protocol):
    base_url: str

    def post(self, path: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        ...


class WsgiTransport:
    """Requests straight into a Flask app, no network."""

    base_url = "http://localhost"

    def __init__(self, app):
        self.client = app.test_client()

    def post(self, path, params, headers):
        response = self.client.post(path, data=params, headers=headers)
        return response.status_code, response.get_data(as_text=True)


class HttpTransport:
    """Requests to a running server (``--url``)."""

    def __init__(self, base_url: str, timeout: float = 15.0):
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout

    def post(self, path, params, headers):
        response = self.session.post(self.base_url + path, data=params, headers=headers,
                                     timeout=self.timeout)
        return response.status_code, response.text


@dataclass
class Event:
    kind: str  # say, press, timeout, pause, play, route, answered, hangup, http_error
    text: str = ""
    language: str | None = None
    voice: str | None = None
    step: str | None = None
    detail: dict = field(default_factory=dict)
    seconds: float = 0.0  # estimated time to say it (say events)


@dataclass
class Prompt:
    """One reply the caller listened to: how long its speech lasts, and whether it then
    waits for keys. ``step`` is what it asks for (menu, pmi, host-key, priority), or
    route (the announcement before the queue), end, or wait (an announcement in the queue)."""

    step: str
    seconds: float = 0.0
    waits_for_input: bool = False
    in_queue: bool = False


# What each outcome means, as the transcript says it.
OUTCOMES = {
    "routed": "put through to the engineers' queue with a ticket",
    "callback": "left the queue for a callback; the ticket waits for it",
    "rejected_web": "web ticket: told to submit one on the website",
    "rejected_self_service": "online resources: told to use the help centre",
    "failed_auth": "failed verification: unknown PMI, wrong host key or a lock",
    "no_input": "no usable answer at a prompt after every try",
    "transferred": "transferred to another extension",
    "fallback": "sent to the fallback queue without a ticket: the service could not take "
                "the call (its database unreachable)",
    "abandoned": "the caller hung up before the service decided",
    "hangup": "the service ended the call",
    "error": "the service answered with an error",
}


@dataclass
class CallResult:
    call_sid: str
    to: str
    caller: str
    # What the service decided, as it recorded the call (``recorded``): routed,
    # rejected_web, rejected_self_service, failed_auth, no_input, transferred or
    # abandoned; callback for a routed caller who left the queue for one. Without the
    # service's record, what the caller heard: routed, callback, transferred, fallback
    # (the fallback queue, no ticket), hangup or abandoned. error when a request failed.
    outcome: str = "hangup"
    recorded: bool = False  # the outcome is the service's record of the call
    ticket: str | None = None
    priority: int | None = None
    route: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    requests: int = 0
    timings: list[tuple[str, float]] = field(default_factory=list)  # (path, seconds) per request
    wait_url: str | None = None
    queue_action: str | None = None

    def said(self) -> list[str]:
        return [e.text for e in self.events if e.kind == "say"]

    def languages(self) -> set[str]:
        return {e.language for e in self.events if e.kind == "say" and e.language}

    @property
    def seconds_before_queue(self) -> float:
        """Estimated seconds of speech from the greeting to the queue (or the call's end)."""
        return sum(p.seconds for p in self.prompts if not p.in_queue)

    @property
    def prompts_waiting(self) -> int:
        """Prompts before the queue that waited for the caller's keys."""
        return sum(1 for p in self.prompts if p.waits_for_input and not p.in_queue)

    def listening(self) -> dict:
        return {
            "seconds_before_queue": round(self.seconds_before_queue, 1),
            "prompts_waiting_for_input": self.prompts_waiting,
            "prompts": [dict(asdict(p), seconds=round(p.seconds, 1)) for p in self.prompts],
            "rates": {"words_per_minute": speech_time.WORDS_PER_MINUTE,
                      "japanese_morae_per_second": speech_time.MORAE_PER_SECOND},
        }

    def to_json(self) -> str:
        data = asdict(self)
        for event in data["events"]:
            event["seconds"] = round(event["seconds"], 2)
        data["prompts"] = self.listening()["prompts"]
        data["listening"] = {k: v for k, v in self.listening().items() if k != "prompts"}
        return json.dumps(data, ensure_ascii=False, indent=2)


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


class Simulator:
    def __init__(self, transport: Transport, auth_token: str, signing_base: str | None = None,
                 account_sid: str = "AC" + "0" * 32, think: float = 0.0,
                 recorded: Callable[[str], str | None] | None = None):
        self.think = think  # seconds a caller spends listening before each answer
        # The outcome the service recorded for a call SID (None when it cannot be read):
        # a Pro owner and a Free user both hear words and a hang-up, and only the
        # service's record tells the web ticket from the help centre.
        self.recorded = recorded
        self.transport = transport
        self.validator = RequestValidator(auth_token or "unused")
        self.signing_base = (signing_base or getattr(transport, "base_url", "")).rstrip("/")
        self.account_sid = account_sid

    # -- requests ----------------------------------------------------------------------

    def post(self, path: str, params: dict[str, str]) -> tuple[int, str]:
        url = self.signing_base + path
        signature = self.validator.compute_signature(url, params)
        return self.transport.post(path, params, {"X-Twilio-Signature": signature})

    def _params(self, result: CallResult, status: str = "in-progress") -> dict[str, str]:
        return {
            "CallSid": result.call_sid,
            "AccountSid": self.account_sid,
            "From": result.caller,
            "To": result.to,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    # -- a call ------------------------------------------------------------------------

    def call(self, to: str, caller: str, digits: list[str], call_sid: str | None = None) -> CallResult:
        result = CallResult(call_sid or new_call_sid(), to, caller)
        tokens = list(digits)
        path, extra = "/voice", {}
        while path is not None:
            root = self._request(result, path, extra)
            if root is None:
                return result
            path, extra = self._follow(root, path, tokens, result)
            if path is None and result.outcome == "routed" and result.wait_url and tokens:
                self._wait_in_queue(tokens, result)
        self._status_callback(result)
        self._decision(result)
        return result

    def _decision(self, result: CallResult) -> None:
        """The call's outcome as the service recorded it, once the call has ended."""
        if self.recorded is None or result.outcome == "error":
            return
        outcome = self.recorded(result.call_sid)
        if outcome is None:
            return
        result.recorded = True
        if not (outcome == "routed" and result.outcome == "callback"):
            result.outcome = outcome

    def _request(self, result: CallResult, path: str, extra: dict[str, str]) -> ET.Element | None:
        """One webhook of this call; its TwiML read, or None (recorded) on an HTTP failure.
        A reply with a verb the simulator does not play raises UnknownTwiML."""
        if result.requests >= MAX_REQUESTS:
            result.outcome = "error"
            result.events.append(Event("http_error", f"more than {MAX_REQUESTS} requests"))
            return None
        if result.requests and self.think:
            time.sleep(self.think)
        result.requests += 1
        started = time.perf_counter()
        status, body = self.post(path, {**self._params(result), **extra})
        result.timings.append((path.split("?", 1)[0], time.perf_counter() - started))
        if status != 200:
            result.outcome = "error"
            result.events.append(Event("http_error", f"HTTP {status} from {path}"))
            return None
        try:
            return read(body)
        except UnknownTwiML as exc:
            raise UnknownTwiML(f"{path}: {exc}") from None

    def _wait_in_queue(self, tokens: list[str], result: CallResult) -> None:
        """Follow the Enqueue waitUrl while the caller has keys left to press: each token
        answers one announcement ('-' lets it pass). A <Leave> ends the wait for a
        callback; when the tokens run out an engineer answers (QueueResult=bridged)."""
        queue_result, waited = "bridged", 0
        for round_ in range(1, 11):
            if not tokens or queue_result == "leave":
                break
            waited += 60
            root = self._request(result, result.wait_url, {
                "QueuePosition": str(max(1, 4 - round_)), "QueueTime": str(waited),
                "AvgQueueTime": "150", "CurrentQueueSize": "5"})
            current = result.wait_url
            while root is not None:
                choice, extra = self._follow(root, current, tokens, result, waiting=True)
                if root.find("Leave") is not None:
                    queue_result = "leave"
                    break
                if choice is None:
                    break  # the announcement ended: Twilio asks the waitUrl again
                root, current = self._request(result, choice, extra), choice
            if root is None:
                return
        if queue_result == "bridged":
            result.events.append(Event("answered", "an engineer answers"))
        after = self._request(result, result.queue_action, {
            "QueueResult": queue_result, "QueueTime": str(waited)})
        if after is not None:
            self._follow(after, result.queue_action, [], result)
        result.outcome = "callback" if queue_result == "leave" else "routed"

    def _follow(self, root: ET.Element, current: str, tokens: list[str], result: CallResult,
                waiting: bool = False) -> tuple[str | None, dict[str, str]]:
        """Play one TwiML document; the next request (path, extra parameters) or None.

        The caller listens to every prompt to its end before pressing keys. In the queue
        (``waiting``) a caller with no keys left simply listens on."""
        in_queue = waiting or result.wait_url is not None
        prompt = Prompt("wait" if in_queue else "end", in_queue=in_queue)
        result.prompts.append(prompt)
        for verb in root:
            tag = verb.tag
            if tag in ("Say", "Pause", "Play"):
                self._play(verb, result)
            elif tag == "Gather":
                for child in verb:
                    self._play(child, result)
                action = _path(verb.get("action") or current, current)
                step = action.split("?", 1)[0].rsplit("/", 1)[-1]
                if not in_queue:
                    prompt.step, prompt.waits_for_input = step, True
                if not tokens:
                    if waiting:
                        continue  # no key: the announcement plays on
                    result.outcome = "abandoned"
                    result.events.append(Event("hangup", "caller hung up", step=step))
                    return None, {}
                token = tokens.pop(0)
                if token in ("-", ""):
                    result.events.append(Event("timeout", "no input", step=step))
                    continue
                keys = _keys(token, verb)
                result.events.append(Event("press", token, step=step))
                return action, {"Digits": keys}
            elif tag == "Redirect":
                return _path((verb.text or "").strip(), current), {}
            elif tag in ROUTES:
                if not in_queue:
                    prompt.step = "route"
                self._routed(verb, current, result)
                return None, {}
            elif tag in ("Hangup", "Reject"):
                result.outcome = "hangup"
                result.events.append(Event("hangup", tag.lower()))
                return None, {}
            elif tag == "Leave":
                result.events.append(Event("hangup", "left the queue"))
                return None, {}
            else:  # read() lets no other verb through; a new one must be taught here
                raise UnknownTwiML(f"<{tag}> is not a verb the simulator plays")
        if waiting:  # a wait document that ends is simply asked for again
            return None, {}
        result.outcome = "hangup"
        result.events.append(Event("hangup", "end of instructions"))
        return None, {}

    def _play(self, element: ET.Element, result: CallResult) -> None:
        if element.tag == "Say":
            self._say(element, result)
        elif element.tag == "Play":
            result.events.append(Event("play", (element.text or "").strip()))
        elif element.tag == "Pause":
            result.events.append(Event("pause", element.get("length", "1")))
        else:
            raise UnknownTwiML(f"<{element.tag}> is not something the simulator plays here")

    def _say(self, element: ET.Element, result: CallResult) -> None:
        parts = [element.text or ""]
        for child in element:
            if child.tag == "say-as" and child.get("interpret-as") == "digits":
                parts.append(" ".join(child.text or ""))
            else:
                parts.append("".join(child.itertext()))
            parts.append(child.tail or "")
        text = " ".join("".join(parts).split())
        language = element.get("language")
        seconds = speech_time.seconds(text, language)
        result.events.append(Event("say", text, language=language, voice=element.get("voice"),
                                   seconds=seconds))
        if result.prompts:
            result.prompts[-1].seconds += seconds

    def _routed(self, verb: ET.Element, current: str, result: CallResult) -> None:
        action = verb.get("action")
        if verb.tag == "Enqueue" and verb.get("waitUrl"):
            result.wait_url = _path(verb.get("waitUrl"), current)
            result.queue_action = _path(action or current, current)
        query = parse_qs(urlsplit(action).query) if action else {}
        route: dict = {"verb": verb.tag}
        if verb.tag == "Enqueue":
            task = verb.find("Task")
            if verb.get("workflowSid"):
                route["workflow_sid"] = verb.get("workflowSid")
            if task is not None:
                attributes = json.loads(task.text or "{}")
                route["task"] = attributes
                query.setdefault("ticket", [attributes.get("ticket")])
                query.setdefault("priority", [str(attributes.get("priority"))])
            route["queue"] = (verb.text or "").strip() or None
        else:
            route["targets"] = [(child.text or "").strip() for child in verb]
        result.route = route
        result.ticket = (query.get("ticket") or [None])[0]
        priority = (query.get("priority") or [None])[0]
        result.priority = int(priority) if priority and priority.isascii() \
            and priority.isdigit() else None
        # No ticket: an extension's <Dial>, or the fallback's <Enqueue> (the service could
        # not read or store the call, and sends its caller to the fallback queue).
        result.outcome = "routed" if result.ticket else (
            "fallback" if verb.tag == "Enqueue" else "transferred")
        result.events.append(Event("route", verb.tag, detail=dict(route, ticket=result.ticket)))

    def _status_callback(self, result: CallResult) -> None:
        params = self._params(result, "completed")
        params["CallDuration"] = str(max(1, len(result.events) * 3))
        started = time.perf_counter()
        status, _ = self.post("/voice/status", params)
        result.timings.append(("/voice/status", time.perf_counter() - started))
        result.requests += 1
        if status != 200:
            result.outcome = "error"
            result.events.append(Event("http_error", f"HTTP {status} from /voice/status"))


def play(document: str | bytes, tokens: list[str] | None = None, path: str = "/voice",
         waiting: bool = False) -> tuple[CallResult, str | None, dict[str, str]]:
    """Play one reply as the simulator plays it during a call, without an app: what the
    caller hears and does (the result's events and prompts), and the request it leads to
    (path and extra parameters, or None). ``waiting``: the reply is a queue's wait document."""
    result = CallResult(new_call_sid(), "", "")
    simulator = Simulator(None, "")
    following, extra = simulator._follow(read(document), path, list(tokens or []), result,
                                         waiting=waiting)
    return result, following, extra


def _path(url: str, current: str) -> str:
    """A TwiML URL as a path on the app (absolute URLs keep only path and query)."""
    joined = urljoin("http://app" + current, url)
    parts = urlsplit(joined)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _keys(token: str, gather: ET.Element) -> str:
    """What Twilio posts as Digits: the keys before finishOnKey, at most numDigits."""
    finish = gather.get("finishOnKey", "#")
    keys = token
    if finish and finish in keys:
        keys = keys.split(finish, 1)[0]
    count = gather.get("numDigits")
    if count and count.isascii() and count.isdigit():
        keys = keys[: int(count)]
    return keys


def transcript(result: CallResult) -> str:
    lines = [f"Call {result.call_sid} to {result.to} from {result.caller}"]
    for event in result.events:
        if event.kind == "say":
            lines.append(f"  [{event.language} {event.voice}] {event.text}  ({event.seconds:.1f} s)")
        elif event.kind == "press":
            lines.append(f"  caller presses {event.text} at {event.step}")
        elif event.kind == "timeout":
            lines.append(f"  caller presses nothing at {event.step} (prompt times out)")
        elif event.kind == "route":
            target = event.detail.get("queue") or event.detail.get("workflow_sid") or \
                ", ".join(event.detail.get("targets", []))
            lines.append(f"  -> {event.text} {target}")
        elif event.kind in ("pause", "play"):
            lines.append(f"  ({event.kind} {event.text})")
        else:
            lines.append(f"  ({event.text})")
    summary = f"Outcome: {result.outcome}"
    if result.ticket:
        summary += f"; ticket {result.ticket}, priority {result.priority}"
    summary += f" ({OUTCOMES.get(result.outcome, 'unknown')})"
    lines.append(summary)
    if not result.recorded and result.outcome != "error":
        lines.append("  (as the caller heard it: the service's record of this call could not "
                     "be read from this command's database, IVR_DATABASE_URL)")
    lines.extend(listening_lines(result))
    return "\n".join(lines)


def listening_lines(result: CallResult) -> list[str]:
    """Estimated seconds of speech per prompt and in total, as printed by `simulate`."""
    lines = [f"Listening time (estimated at {speech_time.WORDS_PER_MINUTE} words a minute, "
             f"Japanese {speech_time.MORAE_PER_SECOND} morae a second):"]
    for prompt in result.prompts:
        if prompt.seconds or prompt.waits_for_input:
            waits = "  waits for keys" if prompt.waits_for_input and not prompt.in_queue else ""
            lines.append(f"  {prompt.step:<12} {prompt.seconds:>5.1f} s{waits}")
    before = "before the queue" if result.route else "in the call"
    in_queue = sum(p.seconds for p in result.prompts if p.in_queue)
    queued = f" (then {in_queue:.1f} s in the queue)" if in_queue else ""
    lines.append(f"  {result.seconds_before_queue:.1f} s of speech {before}, "
                 f"{result.prompts_waiting} prompts waiting for keys{queued}")
    return lines
