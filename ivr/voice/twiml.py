"""TwiML: the flow's replies turned into Twilio voice instructions.

The only module that builds TwiML, always through ``twilio.twiml.voice_response``.
"""

from __future__ import annotations

import json
from typing import Mapping
from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, Enqueue, Gather, VoiceResponse

from ..config import DialRoute, EnqueueRoute, IvrConfig, Line, TaskRouterRoute, Voice
from ..domain.digits import ascii_digits
from ..domain.engineers import primary_language, queue_name
from ..domain.flow import Reply, Say, Step, TicketInfo, english_in, say
from ..domain.flow import ticket_again as ticket_again_speech
from ..domain.lifecycle import TicketStatus
from ..domain.priority import KEYS
from .prompts import Catalogue, Digits

# Paths of the flow's action URLs, by step. The views serve exactly these.
STEP_PATHS = {
    Step.MENU: "/voice/menu",
    Step.PMI: "/voice/pmi",
    Step.HOST_KEY: "/voice/host-key",
    Step.PRIORITY: "/voice/priority",
}
QUEUE_RESULT_PATH = "/voice/queue-result"
CACHE_SIZE = 2048  # rendered replies kept per process
WAIT_PATH = "/voice/wait"
WAIT_CHOICE_PATH = "/voice/wait-choice"


# The queue's URLs (the Enqueue action, the waitUrl and what follows from it) carry the
# ticket, its priority and the caller's choice of English, signed with each request, so the
# wait and its end are spoken right when the database cannot be read. Written and read here.
def english_chosen(query: Mapping[str, str]) -> bool:
    """Whether an action URL says the caller chose English: a queue URL's ``en=1``, or
    the name of the prompt a Gather asked (``p``)."""
    return query.get("en") == "1" or english_in(query.get("p"))


def ticket_in(query: Mapping[str, str]) -> str | None:
    """The ticket number a queue URL carries, when it has the shape of one this service
    wrote there (ASCII digits, ``domain.digits``); None otherwise."""
    return ascii_digits(query.get("ticket"), at_most=20)


def queue_query(query: Mapping[str, object], english: bool | None = None) -> str:
    """The query string of a queue URL: the ticket and priority taken from `query`, and the
    choice of English (`english`, or as `query` carries it when None)."""
    if english is None:
        english = english_chosen(query)
    return urlencode({**{k: query[k] for k in ("ticket", "priority") if k in query},
                      **({"en": 1} if english else {})})


class Renderer:
    def __init__(self, config: IvrConfig, catalogues: dict[str, Catalogue]):
        self.config = config
        self.catalogues = catalogues
        self._documents: dict[tuple, str] = {}

    # -- voices ------------------------------------------------------------------------

    def voices(self, line: Line | None) -> tuple[Voice, Voice]:
        """The line's own voice and its English voice (the same when it has none)."""
        own = line.speech if line is not None else self.config.service.speech
        english = line.english if line is not None and line.english is not None else own
        return own, english

    def _say(self, parent, item: Say, voice: Voice) -> None:
        catalogue = self.catalogues[voice.catalogue_name]
        element = parent.say(language=voice.language, voice=voice.voice)
        for segment in catalogue.segments(item.key, item.kwargs):
            if isinstance(segment, Digits):
                element.say_as(segment.digits, interpret_as="digits")
            else:
                element.append(segment.text)

    def _speak(self, parent, reply: Reply, line: Line | None) -> None:
        own, english = self.voices(line)
        for item in reply.speech:
            voice = english if (reply.english or item.in_english) else own
            self._say(parent, item, voice)

    # -- replies -----------------------------------------------------------------------

    def reply(self, reply: Reply, line: Line | None,
              query: dict[str, str] | None = None) -> str:
        """The TwiML of a reply. Replies repeat (every caller hears the same prompts), so
        documents are kept in a small cache keyed by everything that shapes them."""
        key = (reply, line.number if line is not None else None,
               tuple(sorted(query.items())) if query else None)
        document = self._documents.get(key)
        if document is None:
            if len(self._documents) >= CACHE_SIZE:
                self._documents.clear()
            document = self._documents[key] = self._reply(reply, line, query)
        return document

    def _reply(self, reply: Reply, line: Line | None, query: dict[str, str] | None) -> str:
        response = VoiceResponse()
        if reply.ask is not None:
            ask = reply.ask
            # The prompt asked now names the answer, not the one this request answered
            # (a query passed on from it, as the outage path's pass is).
            query = {**(query or {}), "p": ask.prompt} if ask.prompt else query
            action = STEP_PATHS[ask.step] + (f"?{urlencode(query)}" if query else "")
            gather = Gather(
                input="dtmf",
                action=action,
                method="POST",
                timeout=ask.timeout_seconds,
                finish_on_key="" if ask.single_key else "#",
                num_digits=1 if ask.single_key else None,
            )
            self._speak(gather, reply, line)
            response.append(gather)
            # Reached only when the caller pressed nothing: the same action, without Digits.
            response.redirect(action, method="POST")
            return str(response)
        self._speak(response, reply, line)
        if reply.route is not None:
            self._route(response, reply.route, line, reply.english)
        elif reply.transfer_to is not None:
            dial = Dial(action=QUEUE_RESULT_PATH, method="POST")
            _dial_target(dial, reply.transfer_to)
            response.append(dial)
        else:
            response.hangup()
        return str(response)

    def _route(self, response: VoiceResponse, ticket: TicketInfo, line: Line | None,
               english: bool) -> None:
        route = self.config.route_for(line)
        region = line.region if line is not None else "unknown"
        query = queue_query({"ticket": ticket.number, "priority": ticket.priority}, english)
        action = f"{QUEUE_RESULT_PATH}?{query}"
        if isinstance(route, EnqueueRoute):
            # One queue per caller: the engineer line dials exactly the caller it chose.
            name = queue_name(route.group(ticket.priority), ticket.number)
            response.append(Enqueue(name, action=action,
                                    method="POST", wait_url=f"{WAIT_PATH}?{query}",
                                    wait_url_method="POST"))
        elif isinstance(route, TaskRouterRoute):
            enqueue = Enqueue(workflow_sid=route.workflow_sid, action=action, method="POST",
                              wait_url=f"{WAIT_PATH}?{query}", wait_url_method="POST")
            attributes = {"ticket": ticket.number, "priority": ticket.priority, "region": region,
                          "target_response_minutes": ticket.target_response_minutes}
            # TaskRouter serves higher numbers first; priority 1 is the most urgent.
            enqueue.task(json.dumps(attributes, sort_keys=True), priority=5 - ticket.priority)
            response.append(enqueue)
        elif isinstance(route, DialRoute):
            dial = Dial(action=action, method="POST", timeout=route.timeout_seconds)
            _dial_target(dial, route.target)
            response.append(dial)

    def after_queue(self, line: Line | None, ticket_number: str | None, result: str,
                    english: bool, can_call_back: bool = True) -> str:
        """What a caller hears when the queue ends: nothing after a conversation (nor,
        with no hang-up, when the call was handed over elsewhere: ``HANDED_OVER``), the
        callback confirmation after leaving for one, and that the ticket is kept when
        the queue or desk could not take the call (followed up by email when the
        caller's number cannot be called back). A caller put through to a menu extension
        that was busy or did not answer has no ticket, and hears so before the end."""
        if result in HANDED_OVER:
            return EMPTY
        response = VoiceResponse()
        if ticket_number and result == "leave":
            self._speak(response, Reply((say("callback_confirmed", ticket=ticket_number),),
                                        english=english), line)
        elif ticket_number and result not in SERVED:
            self._speak(response, Reply((say(_kept(can_call_back), ticket=ticket_number),),
                                        english=english), line)
        elif not ticket_number and result in UNANSWERED_DIAL:
            self._speak(response, Reply((say("transfer_unavailable"),), english=english), line)
        response.hangup()
        return str(response)

    def wait(self, speech: tuple[Say, ...], line: Line | None, english: bool,
             ticket_query: str, offer_callback: bool) -> str:
        """The Enqueue waitUrl document: the announcement, then hold audio or silence until
        Twilio asks again. When the ticket is known (or a callback is on offer) all of it
        plays inside a one-key Gather, so the repeat key (the ticket number again) and the
        callback key work during the music too, not only during the announcement."""
        response = VoiceResponse()
        queue = self.config.queue
        reply = Reply(speech, english=english)
        parent = response
        if offer_callback or "ticket=" in ticket_query:
            parent = self._wait_gather(ticket_query)
            response.append(parent)
        self._speak(parent, reply, line)
        if queue.hold_audio_url:
            parent.play(queue.hold_audio_url, loop=queue.hold_loops())
        else:
            parent.pause(length=queue.announce_every_seconds)
        return str(response)

    def _wait_gather(self, ticket_query: str) -> Gather:
        action = f"{WAIT_CHOICE_PATH}?{ticket_query}" if ticket_query else WAIT_CHOICE_PATH
        return Gather(input="dtmf", num_digits=1, timeout=1, finish_on_key="",
                      action=action, method="POST")

    def ticket_again(self, to: str | None, query: Mapping[str, str]) -> str:
        """The repeat key pressed in the queue: the ticket number once more, read from the
        action URL the wait document gave Twilio (signed with the request), so no database
        is needed. The document ends and the caller keeps their place; a key pressed
        while it plays counts as in the wait document."""
        number = ticket_in(query)
        if number is None:
            return self.empty()
        line, english = self.config.line_for(to), english_chosen(query)
        priority = query.get("priority") or ""
        ticket_query = queue_query({"ticket": number, **({"priority": priority}
                                                         if priority in KEYS else {})},
                                   english)
        response = VoiceResponse()
        gather = self._wait_gather(ticket_query)
        self._speak(gather, Reply(ticket_again_speech(number), english=english), line)
        response.append(gather)
        return str(response)

    def back_to_wait(self, ticket_query: str) -> str:
        """Back to the wait announcements after a key that is not the callback key: an
        explicit <Redirect> to the waitUrl rather than a document with nothing in it."""
        response = VoiceResponse()
        response.redirect(f"{WAIT_PATH}?{ticket_query}" if ticket_query else WAIT_PATH,
                          method="POST")
        return str(response)

    def let_go(self, line: Line | None, english: bool, ticket_number: str,
               status: TicketStatus, can_call_back: bool) -> str:
        """The waitUrl for a caller whose ticket the desk moved on while they held: what
        the move means for them, then the end of the call."""
        if status is TicketStatus.CLOSED:
            key = "queue_ticket_closed"
        elif status is TicketStatus.CALLBACK_REQUESTED and can_call_back:
            key = "callback_confirmed"
        else:  # back in the open pile, or a callback to a withheld number: by email
            key = _kept(can_call_back)
        response = VoiceResponse()
        self._speak(response, Reply((say(key, ticket=ticket_number),), english=english), line)
        response.hangup()
        return str(response)

    def leave(self) -> str:
        response = VoiceResponse()
        response.leave()
        return str(response)

    def fallback(self, line: Line | None, english: bool = False) -> str:
        """Twilio's fallback: an apology and the default queue, without the database; in
        English for a caller whose action URL says they chose it."""
        response = VoiceResponse()
        self._speak(response, Reply((Say("fallback"),), english=english), line)
        response.enqueue(self.config.service.fallback_queue)
        return str(response)

    def hangup(self) -> str:
        return HANGUP

    def empty(self) -> str:
        return EMPTY


# Two documents that never change (every status callback answers EMPTY).
EMPTY = str(VoiceResponse())
_hangup = VoiceResponse()
_hangup.hangup()
HANGUP = str(_hangup)
del _hangup

# Queue and dial results after which the caller needs to hear nothing more.
SERVED = ("bridged", "hangup", "completed", "answered")
# Queue results that hand the live call over elsewhere: to an engineer being bridged in
# right now, or to other instructions it was redirected to (out of the queue, or out of
# its conversation). Those run the call now: nothing is said and it is not hung up.
HANDED_OVER = ("bridging-in-process", "redirected", "redirected-from-bridged")
# A <Dial>'s DialCallStatus when the other side never took the call ("canceled" is the
# caller hanging up first: no one is left to hear anything).
UNANSWERED_DIAL = ("busy", "no-answer", "failed")


def _kept(can_call_back: bool) -> str:
    """The words for a ticket kept for an engineer to answer: a callback, or an email for a
    caller whose number was withheld."""
    return "queue_unavailable" if can_call_back else "queue_unavailable_no_callback"


def _dial_target(dial: Dial, target: str) -> None:
    if target.startswith("sip:"):
        dial.sip(target)
    else:
        dial.number(target)


# -- the engineer line and callbacks: documents spoken to engineers as much as to
# callers, each in their own language --------------------------------------------------

AGENT_PATH = "/voice/agent"
AGENT_JOINING_PATH = "/voice/agent/joining"
AGENT_AFTER_PATH = "/voice/agent/after"
CALLBACK_ENGINEER_PATH = "/voice/callback/engineer"
CALLBACK_KEY_PATH = "/voice/callback/engineer-key"
CALLBACK_CUSTOMER_PATH = "/voice/callback/customer"
CALLBACK_CUSTOMER_KEY_PATH = "/voice/callback/customer-key"
CALLBACK_DIALLED_PATH = "/voice/callback/dialled"
CALLBACK_STATUS_PATH = "/voice/callback/status"

SpokenLine = tuple[str, dict]  # (catalogue key, parameters)


def url(path: str, **query) -> str:
    return f"{path}?{urlencode(query)}" if query else path


class AgentRenderer:
    def __init__(self, config: IvrConfig, catalogues: dict[str, Catalogue]):
        self.config = config
        self.catalogues = catalogues

    # -- voices ------------------------------------------------------------------------

    def voice_for_languages(self, languages: tuple[str, ...]) -> Voice:
        """The voice an engineer hears: the first configured voice of their first
        language, else the service's own."""
        voices = [self.config.service.speech]
        for line in self.config.lines:
            voices.append(line.speech)
            if line.english is not None:
                voices.append(line.english)
        for language in languages:
            for voice in voices:
                if primary_language(voice.language) == primary_language(language):
                    return voice
        return self.config.service.speech

    def language_name(self, voice: Voice, tag: str | None) -> str:
        """A caller's language as the engineer's catalogue names it ('Japanese', '日本語')."""
        catalogue = self.catalogues[voice.catalogue_name]
        key = f"language_{primary_language(tag)}"
        return catalogue.messages[key] if key in catalogue.messages else (tag or "?")

    def say(self, parent, voice: Voice, lines: list[SpokenLine]) -> None:
        catalogue = self.catalogues[voice.catalogue_name]
        for key, params in lines:
            element = parent.say(language=voice.language, voice=voice.voice)
            for segment in catalogue.segments(key, params):
                if isinstance(segment, Digits):
                    element.say_as(segment.digits, interpret_as="digits")
                else:
                    element.append(segment.text)

    # -- the engineer line -------------------------------------------------------------

    def _say_then_hang_up(self, voice: Voice, key: str) -> str:
        response = VoiceResponse()
        self.say(response, voice, [(key, {})])
        response.hangup()
        return str(response)

    def refuse(self, voice: Voice) -> str:
        return self._say_then_hang_up(voice, "agent_unknown")

    def goodbye(self, voice: Voice) -> str:
        return self._say_then_hang_up(voice, "agent_goodbye")

    def on_another_call(self, voice: Voice) -> str:
        """The engineer is talking to a caller on another call, as far as the service
        knows; if that call has in fact ended (its reports were lost), a key says so and
        takes the next caller."""
        return self._offer(voice, "agent_on_another_call", url(AGENT_PATH, anyway="1"))

    def _offer(self, voice: Voice, key: str, action: str) -> str:
        """A prompt answered by pressing 1 (sent to ``action``); no key: goodbye."""
        response = VoiceResponse()
        gather = Gather(input="dtmf", num_digits=1, timeout=10, finish_on_key="",
                        action=action, method="POST")
        self.say(gather, voice, [(key, {})])
        response.append(gather)
        self.say(response, voice, [("agent_goodbye", {})])
        response.hangup()
        return str(response)

    def connect(self, voice: Voice, whisper: list[SpokenLine], queue: str, ticket: str) -> str:
        """The whisper, then the chosen caller's own queue: whoever dials it gets them."""
        response = VoiceResponse()
        self.say(response, voice, whisper + [("agent_connecting", {})])
        dial = Dial(action=url(AGENT_AFTER_PATH, ticket=ticket), method="POST",
                    timeout=self.config.engineers.dial_timeout_seconds)
        dial.queue(queue, url=url(AGENT_JOINING_PATH, ticket=ticket), method="POST")
        response.append(dial)
        return str(response)

    def nobody(self, voice: Voice, announce: bool) -> str:
        """Nobody waiting: hold, then look again; the engineer may hang up at any time."""
        response = VoiceResponse()
        if announce:
            self.say(response, voice, [("agent_nobody", {})])
        response.pause(length=self.config.engineers.poll_seconds)
        response.redirect(url(AGENT_PATH, wait="1"), method="POST")
        return str(response)

    def missed(self, voice: Voice) -> str:
        """The chosen caller had gone: look again at once (``missed``: an engineer the
        line knows, who holds if that look meets the database away)."""
        response = VoiceResponse()
        self.say(response, voice, [("agent_missed", {})])
        response.redirect(url(AGENT_PATH, missed="1"), method="POST")
        return str(response)

    def next_caller(self, voice: Voice) -> str:
        return self._offer(voice, "agent_next", AGENT_PATH)

    def joining(self, voice: Voice) -> str:
        """To the caller being dequeued, just before the engineer is bridged in."""
        response = VoiceResponse()
        self.say(response, voice, [("agent_joining", {})])
        return str(response)

    # -- callbacks ---------------------------------------------------------------------

    def callback_offer(self, voice: Voice, summary: list[SpokenLine], attempt: int) -> str:
        response = VoiceResponse()
        gather = Gather(input="dtmf", num_digits=1, timeout=8, finish_on_key="",
                        action=url(CALLBACK_KEY_PATH, attempt=attempt), method="POST")
        self.say(gather, voice, [("callback_intro", {})] + summary + [("callback_press", {})])
        response.append(gather)
        self.say(response, voice, [("agent_goodbye", {})])
        response.hangup()
        return str(response)

    def callback_dial(self, voice: Voice, attempt: int, customer: str, caller_id: str) -> str:
        """The engineer pressed 1: dial the customer, showing the number they called."""
        response = VoiceResponse()
        self.say(response, voice, [("callback_dialling", {})])
        dial = Dial(action=url(CALLBACK_DIALLED_PATH, attempt=attempt), method="POST",
                    caller_id=caller_id, timeout=self.config.engineers.ring_seconds)
        dial.number(customer, url=url(CALLBACK_CUSTOMER_PATH, attempt=attempt), method="POST",
                    status_callback=url(CALLBACK_STATUS_PATH, attempt=attempt, leg="customer"),
                    status_callback_method="POST",
                    status_callback_event="initiated ringing answered completed")
        response.append(dial)
        return str(response)

    def callback_greeting(self, voice: Voice, ticket: str, attempt: int) -> str:
        """<Number url>, to whoever answered the customer's phone: who is calling, then a
        key to be put through to the engineer. A voicemail presses none: the Gather ends
        and the Redirect asks the service, without Digits, to record a miss."""
        response = VoiceResponse()
        key = url(CALLBACK_CUSTOMER_KEY_PATH, attempt=attempt)
        gather = Gather(input="dtmf", num_digits=1, timeout=8, finish_on_key="",
                        action=key, method="POST")
        self.say(gather, voice, [
            ("callback_greeting", {"brand": self.config.service.brand, "ticket": ticket}),
            ("callback_customer_press", {})])
        response.append(gather)
        response.redirect(key, method="POST")
        return str(response)

    def callback_customer_missed(self, voice: Voice, ticket: str) -> str:
        """No key after the greeting: a message a voicemail keeps, and the customer's leg
        ends (the engineer's Dial then hears it was not reached)."""
        response = VoiceResponse()
        self.say(response, voice, [("callback_customer_missed", {"ticket": ticket})])
        response.hangup()
        return str(response)

    def callback_not_reached(self, voice: Voice) -> str:
        return self._say_then_hang_up(voice, "callback_not_reached")

    def callback_not_needed(self, voice: Voice) -> str:
        """The ticket moved on (closed, back in the open pile) while the engineer's phone
        rang: nothing is dialled, and they hear why."""
        return self._say_then_hang_up(voice, "callback_not_needed")

    @staticmethod
    def hangup() -> str:
        return HANGUP

    @staticmethod
    def empty() -> str:
        return EMPTY
