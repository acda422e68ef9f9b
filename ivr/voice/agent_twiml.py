"""TwiML of the engineer line and of callbacks, built with twilio's voice_response.

Kept beside the caller-facing renderer (twiml.py) rather than inside it: these documents
are spoken to engineers as much as to callers, in the engineer's own language.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from ..config import IvrConfig, Voice
from ..domain.engineers import primary_language
from .prompts import Catalogue, Digits

AGENT_PATH = "/voice/agent"
AGENT_JOINING_PATH = "/voice/agent/joining"
AGENT_AFTER_PATH = "/voice/agent/after"
CALLBACK_ENGINEER_PATH = "/voice/callback/engineer"
CALLBACK_KEY_PATH = "/voice/callback/engineer-key"
CALLBACK_CUSTOMER_PATH = "/voice/callback/customer"
CALLBACK_DIALLED_PATH = "/voice/callback/dialled"
CALLBACK_STATUS_PATH = "/voice/callback/status"

Line = tuple[str, dict]  # (catalogue key, parameters)


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

    def say(self, parent, voice: Voice, lines: list[Line]) -> None:
        catalogue = self.catalogues[voice.catalogue_name]
        for key, params in lines:
            element = parent.say(language=voice.language, voice=voice.voice)
            for segment in catalogue.segments(key, params):
                if isinstance(segment, Digits):
                    element.say_as(segment.digits, interpret_as="digits")
                else:
                    element.append(segment.text)

    # -- the engineer line -------------------------------------------------------------

    def refuse(self, voice: Voice) -> str:
        response = VoiceResponse()
        self.say(response, voice, [("agent_unknown", {})])
        response.hangup()
        return str(response)

    def goodbye(self, voice: Voice) -> str:
        response = VoiceResponse()
        self.say(response, voice, [("agent_goodbye", {})])
        response.hangup()
        return str(response)

    def connect(self, voice: Voice, whisper: list[Line], queue: str, ticket: str) -> str:
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
        response = VoiceResponse()
        self.say(response, voice, [("agent_missed", {})])
        response.redirect(AGENT_PATH, method="POST")
        return str(response)

    def next_caller(self, voice: Voice) -> str:
        response = VoiceResponse()
        gather = Gather(input="dtmf", num_digits=1, timeout=10, finish_on_key="",
                        action=AGENT_PATH, method="POST")
        self.say(gather, voice, [("agent_next", {})])
        response.append(gather)
        self.say(response, voice, [("agent_goodbye", {})])
        response.hangup()
        return str(response)

    def joining(self, voice: Voice) -> str:
        """To the caller being dequeued, just before the engineer is bridged in."""
        response = VoiceResponse()
        self.say(response, voice, [("agent_joining", {})])
        return str(response)

    # -- callbacks ---------------------------------------------------------------------

    def callback_offer(self, voice: Voice, summary: list[Line], attempt: int) -> str:
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

    def callback_greeting(self, voice: Voice, ticket: str) -> str:
        response = VoiceResponse()
        self.say(response, voice, [("callback_greeting",
                                    {"brand": self.config.service.brand, "ticket": ticket})])
        return str(response)

    def callback_not_reached(self, voice: Voice) -> str:
        response = VoiceResponse()
        self.say(response, voice, [("callback_not_reached", {})])
        response.hangup()
        return str(response)

    @staticmethod
    def hangup() -> str:
        response = VoiceResponse()
        response.hangup()
        return str(response)

    @staticmethod
    def empty() -> str:
        return str(VoiceResponse())
