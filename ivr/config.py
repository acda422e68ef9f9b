"""Configuration: the TOML file of the support line and the process environment.

The TOML file (``config/ivr.toml`` unless ``IVR_CONFIG`` says otherwise) describes the
product: regional lines, menu, channel policy, priorities, retries, time-outs, lengths,
lockouts, the queue, the engineer line, notice, links, retention and the help desk.
The environment carries deployment secrets and URLs. Both are validated when the app
starts; a problem stops it with a message naming the file, the key and what was expected.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .domain.digits import ascii_digits, ascii_number
from .domain.engineers import QUEUE_GROUP_LIMIT, QUEUE_NAME_LIMIT, primary_language
from .domain.phones import redact_numbers
from .domain.priority import HIGHEST, LEVELS, LOWEST

PLANS = ("free", "pro", "business", "education", "enterprise", "api")
ROLES = ("owner", "admin", "member")

# Voices Twilio's <Say> accepts, by language. A voice outside this list for the line's
# language is refused at start, so a typo cannot silently fall back to a robot voice.
SUPPORTED_VOICES: dict[str, tuple[str, ...]] = {
    "en-US": ("Polly.Joanna", "Polly.Joanna-Neural", "Polly.Matthew", "Polly.Matthew-Neural",
              "Google.en-US-Standard-C", "Google.en-US-Neural2-F", "alice", "man", "woman"),
    "en-GB": ("Polly.Amy", "Polly.Amy-Neural", "Polly.Brian", "Polly.Emma", "Polly.Emma-Neural",
              "Google.en-GB-Standard-A", "Google.en-GB-Neural2-A", "alice", "man", "woman"),
    "en-AU": ("Polly.Nicole", "Polly.Olivia-Neural", "Polly.Russell", "Google.en-AU-Standard-A",
              "Google.en-AU-Neural2-A", "alice"),
    "en-IN": ("Polly.Aditi", "Polly.Raveena", "Polly.Kajal-Neural", "Google.en-IN-Standard-A",
              "Google.en-IN-Neural2-A", "alice"),
    "en-NZ": ("Polly.Aria-Neural",),
    "fr-FR": ("Polly.Celine", "Polly.Lea", "Polly.Lea-Neural", "Polly.Mathieu",
              "Google.fr-FR-Standard-A", "Google.fr-FR-Neural2-A", "alice"),
    "ja-JP": ("Polly.Mizuki", "Polly.Takumi", "Polly.Takumi-Neural", "Polly.Kazuha-Neural",
              "Polly.Tomoko-Neural", "Google.ja-JP-Standard-A", "Google.ja-JP-Neural2-B"),
}


# Bounds the database or the calendar sets: a region is stored with every call and ticket
# (64 characters), a PMI in the directory (16 digits), a dial target as a call's transfer
# (128 characters); periods stay within a year, far from any date arithmetic's limits.
REGION_MAX, PMI_MAX, DIAL_TARGET_MAX = 64, 16, 128
A_WEEK_MINUTES, A_YEAR_MINUTES, A_YEAR_HOURS = 7 * 24 * 60, 366 * 24 * 60, 366 * 24


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _spoken_language(value: str) -> str:
    """A language of SUPPORTED_VOICES, or ValueError saying which there are."""
    if value not in SUPPORTED_VOICES:
        raise ValueError(f"{value!r} is not a language this service speaks; expected one "
                         f"of {', '.join(sorted(SUPPORTED_VOICES))}")
    return value


def _voice_of(language_key: str):
    """A field validator: the voice is one of SUPPORTED_VOICES for the language the model
    holds under ``language_key`` (a field before it). A language already refused is
    reported on its own key, not again here."""
    def check(value: str, info: ValidationInfo) -> str:
        language = info.data.get(language_key)
        if language is not None and value not in SUPPORTED_VOICES[language]:
            raise ValueError(f"{value!r} is not a Twilio voice for {language}; expected one "
                             f"of {', '.join(SUPPORTED_VOICES[language])}")
        return value

    return check


class Voice(_Model):
    language: str
    voice: str
    catalogue: str | None = None

    _language = field_validator("language")(_spoken_language)
    _voice = field_validator("voice")(_voice_of("language"))

    @property
    def catalogue_name(self) -> str:
        return self.catalogue or self.language


# What cannot be in an allowed host: a URL's scheme, path, user, query or fragment, spaces,
# or an IPv6 address (Werkzeug compares allowed hosts up to their first ":", so a
# bracketed one would match no request).
_NOT_A_HOST = re.compile(r"[/\\\s@?#\[\]]")


def _check_base_url(value: str, example: str) -> None:
    """The one rule for a base URL requests are sent to or signed for ([helpdesk] url,
    IVR_PUBLIC_URL): a scheme, a host without spaces and perhaps a port (1 to 65535), no
    user, query or fragment. No request could carry anything else, so every one would fail
    on it, one after another: raise ValueError saying what to give, as ``example`` shows."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a broken IPv6 address
        raise ValueError(f"{value[:80]!r}: {exc}") from None
    if parts.username is not None or parts.password is not None or parts.query \
            or parts.fragment or not parts.hostname or re.search(r"\s", value) \
            or (port is not None and port == 0):
        raise ValueError(f"{value[:80]!r}: give a scheme, a host and perhaps a port "
                         f"only ({example})")


class EnqueueRoute(_Model):
    kind: Literal["enqueue"] = "enqueue"
    queue: str = Field(min_length=1, max_length=QUEUE_NAME_LIMIT)

    @field_validator("queue")
    @classmethod
    def _fits_every_priority(cls, value: str) -> str:
        """Found out here, not when the first caller of some priority is routed."""
        for priority in LEVELS:
            try:
                name = value.format(priority=priority)
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                raise ValueError(f"{value[:80]!r}: the one placeholder a queue name may hold "
                                 "is {priority} (braces otherwise doubled: {{ }})") from None
            if not name.strip() or len(name) > QUEUE_GROUP_LIMIT:
                raise ValueError(
                    f"{name[:80]!r}: a queue group's name needs 1 to {QUEUE_GROUP_LIMIT} "
                    f"characters (each caller waits in a queue of their own, the group's "
                    f"name and '.' and the ticket's eight digits, and Twilio's queue names "
                    f"stop at {QUEUE_NAME_LIMIT})")
        return value

    def group(self, priority: int) -> str:
        """The queue group a caller of this priority waits in (``queue`` may name the
        priority: ``support-p{priority}``); each caller's own queue is named after it."""
        return self.queue.format(priority=priority)


def _dial_target(value: str) -> str:
    """What a <Dial> may call (a route's target, a menu extension): a SIP URI as written,
    or a phone number, in E.164."""
    return value if value.startswith("sip:") else normalise_number(value)


class DialRoute(_Model):
    kind: Literal["dial"]
    target: str = Field(min_length=1, max_length=DIAL_TARGET_MAX,
                        description="E.164 number or sip: URI")
    timeout_seconds: int = Field(default=30, ge=5, le=600)

    _target = field_validator("target")(_dial_target)


class TaskRouterRoute(_Model):
    kind: Literal["taskrouter"]
    workflow_sid: str = Field(pattern=r"^WW[0-9a-fA-F]{32}$")


Route = Annotated[EnqueueRoute | DialRoute | TaskRouterRoute, Field(discriminator="kind")]


class Line(_Model):
    region: str = Field(min_length=1, max_length=REGION_MAX)
    number: str
    language: str
    voice: str
    catalogue: str | None = None
    english: Voice | None = None
    route: Route | None = None

    _language = field_validator("language")(_spoken_language)
    _voice = field_validator("voice")(_voice_of("language"))

    @field_validator("number")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_number(value)

    @property
    def speech(self) -> Voice:
        return Voice(language=self.language, voice=self.voice, catalogue=self.catalogue)


class Extension(_Model):
    key: str = Field(pattern=r"^[0-8*]$")
    dial: str = Field(max_length=DIAL_TARGET_MAX)
    description: str = ""

    _dial = field_validator("dial")(_dial_target)


class Menu(_Model):
    support_key: str = Field(default="2", pattern=r"^[0-9]$")
    english_key: str = Field(default="9", pattern=r"^[0-9]$")
    repeat_key: str = "*"
    extensions: list[Extension] = []

    @field_validator("repeat_key")
    @classmethod
    def _star(cls, value: str) -> str:
        # Every catalogue's hints name the key (repeat_hint, queue_ticket_offer); another
        # one would also take a priority's key (1-4) at the priority prompt.
        if value != "*":
            raise ValueError(f"{value!r} is not star: the prompts tell callers to press star "
                             "to hear a prompt again, so that key is the repeat key")
        return value

    @model_validator(mode="after")
    def _keys_distinct(self) -> "Menu":
        keys = [self.support_key, self.english_key, self.repeat_key] + [e.key for e in self.extensions]
        if len(keys) != len(set(keys)):
            raise ValueError(f"menu keys must be distinct, got {keys}")
        return self


class Channel(_Model):
    plans: list[Literal[PLANS]]  # type: ignore[valid-type]
    roles: list[Literal[ROLES]]  # type: ignore[valid-type]


class Policy(_Model):
    phone: Channel
    web: Channel

    def channel_for(self, plan: str, role: str) -> str:
        """'phone', 'web' or 'self_service' for a caller of this plan and role."""
        if plan in self.phone.plans and role in self.phone.roles:
            return "phone"
        if plan in self.web.plans and role in self.web.roles:
            return "web"
        return "self_service"


class Priority(_Model):
    level: int = Field(ge=HIGHEST, le=LOWEST)
    name: str
    target_response_minutes: int = Field(gt=0, le=A_YEAR_MINUTES)


class Retries(_Model):
    prompt_attempts: int = Field(default=3, ge=1, le=10)
    verification_attempts: int = Field(default=3, ge=1, le=10)


class Timeouts(_Model):
    menu_seconds: int = Field(default=6, ge=1, le=60)
    digits_seconds: int = Field(default=8, ge=1, le=60)


def _at_least(minimum_key: str):
    """A field validator: a maximum is at least the minimum under ``minimum_key``."""
    def check(value: int, info: ValidationInfo) -> int:
        least = info.data.get(minimum_key)
        if least is not None and value < least:
            raise ValueError(f"{value} is less than {minimum_key} ({least}): a minimum "
                             "length must be at most its maximum")
        return value

    return check


class Lengths(_Model):
    pmi_min: int = Field(default=9, gt=0)
    pmi_max: int = Field(default=11, le=PMI_MAX)
    host_key_min: int = Field(default=6, gt=0)
    host_key_max: int = 10

    _pmi_ordered = field_validator("pmi_max")(_at_least("pmi_min"))
    _host_key_ordered = field_validator("host_key_max")(_at_least("host_key_min"))

    # The one rule for what a PMI and a host key are (the call flow, the directory import,
    # `accounts unlock`): so many ASCII digits, no other characters.
    def is_pmi(self, text: object) -> bool:
        return ascii_digits(text, at_least=self.pmi_min, at_most=self.pmi_max) is not None

    def is_host_key(self, text: object) -> bool:
        return ascii_digits(text, at_least=self.host_key_min,
                            at_most=self.host_key_max) is not None


class Lockout(_Model):
    """Limits on guessing host keys, across calls (see SPEC section 4)."""

    pmi_failures: int = Field(default=5, ge=1, le=100)
    lock_minutes: int = Field(default=15, ge=1, le=A_WEEK_MINUTES)
    max_lock_hours: int = Field(default=24, ge=1, le=A_YEAR_HOURS)
    caller_failures: int = Field(default=10, ge=1, le=1000)
    caller_window_minutes: int = Field(default=60, ge=1, le=A_WEEK_MINUTES)

    def duration(self, earlier_locks: int) -> dt.timedelta:
        """The next lock: the base time, doubled for each earlier lock, up to the cap."""
        minutes = self.lock_minutes * 2 ** min(earlier_locks, 20)
        return min(dt.timedelta(minutes=minutes), dt.timedelta(hours=self.max_lock_hours))


class Queue(_Model):
    """What a caller hears while waiting in a Twilio queue (the Enqueue waitUrl)."""

    announce_every_seconds: int = Field(default=60, ge=10, le=600)
    hold_audio_url: str | None = Field(default=None, pattern=r"^https?://")
    hold_audio_seconds: int = Field(default=30, ge=1, le=600, description="length of the clip")
    callback_key: str = Field(default="1", pattern=r"^[0-9*]$")

    def hold_loops(self) -> int:
        """How many times to play the clip to fill the interval between announcements."""
        return max(1, round(self.announce_every_seconds / self.hold_audio_seconds))


# The longest the engineer line's whisper can take, said slowly in any catalogue: the ticket
# number digit by digit, priority, plan, account, region, the caller's language, the wait
# and "connecting you now" (about 15 s in English, longer in Japanese).
WHISPER_SECONDS = 30


class Engineers(_Model):
    """The engineer line, callbacks and the sweep of stranded tickets."""

    # An engineer's line holds the caller it chose this long before another engineer may
    # take them (the whisper plays in between, then the <Dial> of the caller's queue): at
    # least WHISPER_SECONDS + dial_timeout_seconds, or the claim goes stale before its
    # own Dial and a second engineer is whispered the same caller.
    claim_seconds: int = Field(default=60, ge=10, le=600)
    # How long the engineer line waits for the chosen caller's queue (a caller who just
    # hung up leaves it empty), and how often it looks again when nobody is waiting.
    dial_timeout_seconds: int = Field(default=10, ge=3, le=60)
    poll_seconds: int = Field(default=15, ge=3, le=120)
    # Callbacks: ring time of each leg, and failed tries on the customer's side after
    # which the ticket goes back to the open pile and the customer gets a text.
    ring_seconds: int = Field(default=30, ge=5, le=120)
    callback_attempts: int = Field(default=3, ge=1, le=10)
    # A ticket still in a queue this long after its call ended, with no queue result from
    # Twilio, goes back to the open pile.
    stranded_after_seconds: int = Field(default=120, ge=10, le=86400)

    @model_validator(mode="after")
    def _claim_outlives_the_whisper_and_the_dial(self) -> "Engineers":
        least = WHISPER_SECONDS + self.dial_timeout_seconds
        if self.claim_seconds < least:
            raise ValueError(
                f"claim_seconds ({self.claim_seconds}) is shorter than the whisper (up to "
                f"{WHISPER_SECONDS} s) and dial_timeout_seconds ({self.dial_timeout_seconds}) "
                f"together: another engineer would be given the same caller; make it at "
                f"least {least}")
        return self


class Notice(_Model):
    message: str = Field(description="catalogue key of the notice")
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> "Notice":
        if self.end < self.start:
            raise ValueError(f"notice ends ({self.end}) before it starts ({self.start})")
        return self

    def active_on(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


class Retention(_Model):
    """How long call records keep personal data (see `retention apply`)."""

    days: int = Field(default=90, ge=1, le=3650)


class Links(_Model):
    web_ticket: str = Field(pattern=r"^https://")
    help_center: str = Field(pattern=r"^https://")


class Service(_Model):
    brand: str = Field(min_length=1)
    default_language: str = "en-US"
    default_voice: str = "Polly.Joanna-Neural"
    default_route: Route = EnqueueRoute(queue="support")
    fallback_queue: str = Field(default="support", min_length=1, max_length=QUEUE_NAME_LIMIT,
                                pattern=r"\S")

    _language = field_validator("default_language")(_spoken_language)
    _voice = field_validator("default_voice")(_voice_of("default_language"))

    @property
    def speech(self) -> Voice:
        return Voice(language=self.default_language, voice=self.default_voice)


HELPDESK_FIELDS = ("region", "line", "language", "plan", "role", "account", "call_sid",
                   "target_response_minutes")


class Helpdesk(_Model):
    """The help desk phone tickets are pushed to (SPEC section 7). Absent: nothing is sent."""

    kind: Literal["zendesk"]
    subdomain: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$",
                            description="base URL instead of the subdomain (tests, proxies)")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    custom_fields: dict[Literal[HELPDESK_FIELDS], int] = {}  # type: ignore[valid-type]
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    max_attempts: int = Field(default=8, ge=1, le=100,
                              description="failed tries (5xx, time-outs) before a push fails")
    backoff_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_backoff_seconds: float = Field(default=3600.0, gt=0, le=86400)
    lease_seconds: int = Field(default=300, ge=30, le=3600,
                               description="a push claimed longer ago is taken again")

    @model_validator(mode="after")
    def _where(self) -> "Helpdesk":
        if not self.subdomain and not self.url:
            raise ValueError("give subdomain (https://SUBDOMAIN.zendesk.com) or url")
        # A push is three requests at most (a look-up, a look for its note, then the
        # write), each hung up at timeout_seconds: it must end inside the sender's claim.
        if self.lease_seconds < 4 * self.timeout_seconds:
            raise ValueError(f"lease_seconds ({self.lease_seconds}) must be at least four "
                             f"times timeout_seconds ({self.timeout_seconds:g}), so that a "
                             "push ends before its claim runs out")
        return self

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        """A scheme, a host and perhaps a port (1 to 65535): no user, path or query, which
        every push would otherwise carry or fail on, one retry after another."""
        if value is not None:
            _check_base_url(value, "http://127.0.0.1:8080")
        return value

    @field_validator("custom_fields")
    @classmethod
    def _positive_ids(cls, value: dict[str, int]) -> dict[str, int]:
        for name, field_id in value.items():
            if field_id <= 0:
                raise ValueError(f"custom field {name}: {field_id} is not a Zendesk field id")
        return value

    @property
    def base_url(self) -> str:
        """Where the API lives: ``url`` when set, else the account's own host."""
        return (self.url or f"https://{self.subdomain}.zendesk.com").rstrip("/")

    def ticket_url(self, ticket_id: str | int) -> str:
        """The agents' page of a Zendesk ticket."""
        return f"{self.base_url}/agent/tickets/{ticket_id}"


class IvrConfig(_Model):
    service: Service
    lines: list[Line] = Field(min_length=1)
    menu: Menu = Menu()
    policy: Policy
    priorities: list[Priority]
    retries: Retries = Retries()
    timeouts: Timeouts = Timeouts()
    lengths: Lengths = Lengths()
    lockout: Lockout = Lockout()
    queue: Queue = Field(default=Queue(), validate_default=True)  # checked against menu
    engineers: Engineers = Engineers()
    notice: Notice | None = None
    links: Links
    retention: Retention = Retention()
    helpdesk: Helpdesk | None = None

    @cached_property
    def lines_by_number(self) -> dict[str, Line]:
        """The lines by their E.164 number. A cached property, not a private attribute:
        pydantic serves those through ``__getattr__``, and every webhook asks for its line."""
        return {line.number: line for line in self.lines}

    @field_validator("priorities")
    @classmethod
    def _four_levels(cls, value: list[Priority]) -> list[Priority]:
        levels = sorted(p.level for p in value)
        if levels != list(LEVELS):
            named = ", ".join(map(str, LEVELS[:-1])) + f" and {LEVELS[-1]}"
            raise ValueError(f"expected priorities {named} once each, got {levels}")
        return sorted(value, key=lambda p: p.level)

    @field_validator("lines")
    @classmethod
    def _numbers_unique(cls, value: list[Line]) -> list[Line]:
        seen: set[str] = set()
        for line in value:
            if line.number in seen:
                raise ValueError(f"number {line.number} is configured twice")
            seen.add(line.number)
        return value

    @field_validator("queue")
    @classmethod
    def _queue_keys_distinct(cls, value: Queue, info: ValidationInfo) -> Queue:
        # In the queue the repeat key says the ticket number again; the callback key leaves.
        menu = info.data.get("menu")
        if menu is not None and value.callback_key == menu.repeat_key:
            raise ValueError(f"callback_key {value.callback_key!r} is also menu.repeat_key "
                             "(which repeats the ticket number in the queue)")
        return value

    def line_for(self, number: str | None) -> Line | None:
        """The configured line for a dialled number in any common notation, or None."""
        if not number:
            return None
        line = self.lines_by_number.get(number)  # Twilio sends E.164: no parsing needed
        if line is not None:
            return line
        try:
            e164 = normalise_number(number)
        except ValueError:
            return None
        return self.lines_by_number.get(e164)

    def priority(self, level: int) -> Priority:
        return self.priorities[level - 1]

    def route_for(self, line: Line | None) -> EnqueueRoute | DialRoute | TaskRouterRoute:
        if line is not None and line.route is not None:
            return line.route
        return self.service.default_route

    def ticket_groups(self) -> set[str]:
        """The configured enqueue groups, with each priority filled in."""
        routes = [self.service.default_route] + [line.route for line in self.lines]
        return {route.group(level) for route in routes if isinstance(route, EnqueueRoute)
                for level in LEVELS}

    def caller_languages(self) -> set[str]:
        """The languages callers are spoken to in ('en', 'ja'): every line's, its English
        voice's and the default for numbers not listed; what an engineer may take."""
        voices = [self.service.speech] + [line.speech for line in self.lines] + [
            line.english for line in self.lines if line.english is not None]
        return {primary_language(voice.language) for voice in voices}

    def queue_group(self, line: Line | None, priority: int) -> str | None:
        """The queue group a caller of this line and priority waits in; None for dial and
        TaskRouter routes, which put no caller in a queue of ours."""
        route = self.route_for(line)
        return route.group(priority) if isinstance(route, EnqueueRoute) else None


def normalise_number(value: str) -> str:
    """E.164 form of a number written in international notation (``+81.053.132.0070``)."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{value!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _describe(error: dict) -> str:
    location = "".join(
        f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
        for i, part in enumerate(error["loc"])
    )
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required but missing"
    elif error["type"] == "extra_forbidden":
        message = "is not a known key"
    return f"{location or '(top level)'}: {message}"


def load_config(path: str | os.PathLike) -> IvrConfig:
    """Read and validate the TOML configuration, or raise ConfigError naming the problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:  # a folder, no permission...
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return IvrConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{path}: invalid configuration:\n  {problems}") from None


REST_TIMEOUT = 10.0  # seconds for one request to Twilio's REST API


# Each setting's environment variable.
ENVIRONMENT = {
    "config_path": "IVR_CONFIG",
    "database_url": "IVR_DATABASE_URL",
    "instance_path": "IVR_INSTANCE_PATH",
    "validate_signatures": "IVR_VALIDATE_SIGNATURES",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_account_sid": "TWILIO_ACCOUNT_SID",
    "sms_from": "IVR_SMS_FROM",
    "public_url": "IVR_PUBLIC_URL",
    "host_key_pepper": "IVR_HOST_KEY_PEPPER",
    "trusted_proxies": "IVR_TRUSTED_PROXIES",
    "allowed_hosts": "IVR_ALLOWED_HOSTS",
    "admin_token": "IVR_ADMIN_TOKEN",
    "zendesk_api_token": "IVR_ZENDESK_API_TOKEN",
    "zendesk_webhook_secret": "IVR_ZENDESK_WEBHOOK_SECRET",
}


# What Twilio can text a caller's phone from (IVR_SMS_FROM): a number of the account in
# E.164, a short code (generally 5 or 6 digits; 3 to 8 are taken, so that no country's is
# refused, while a number written without its + still is), an alphanumeric sender ID (at
# most 11 of these characters, not digits only) or a Messaging Service, by its SID (sent
# as MessagingServiceSid). Channel addresses (whatsapp:...) cannot text a phone.
_WRITTEN_NUMBER = re.compile(r"\+[0-9 ().-]+")
_SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 +&_-]{1,11}")
_MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")


def sms_sender(value: str) -> str:
    """IVR_SMS_FROM as Twilio takes it (a number in E.164), or ValueError saying what
    to give."""
    value = value.strip()
    if _WRITTEN_NUMBER.fullmatch(value):
        try:
            return normalise_number(value)
        except ValueError:
            pass
    elif ascii_digits(value, at_least=3, at_most=8) or _SENDER_ID.fullmatch(value) \
            or _MESSAGING_SERVICE_SID.fullmatch(value):
        return value
    raise ValueError(f"{redact_numbers(value[:40])!r}: give a number of the Twilio account in "
                     "international form (+1 415 555 0100), a short code, an alphanumeric "
                     "sender ID (at most 11 letters, digits, spaces and - + _ &) or a "
                     "Messaging Service SID (MG and 32 hex digits)")


class Settings(BaseModel):
    """Deployment settings from the environment (see the README's configuration table)."""

    model_config = ConfigDict(extra="forbid")

    config_path: Path = Path("config/ivr.toml")
    database_url: str = "sqlite:///instance/ivr.db"
    instance_path: Path = Path("instance")
    validate_signatures: bool = True
    twilio_auth_token: str | None = None
    twilio_account_sid: str | None = None
    sms_from: str | None = None
    public_url: str | None = None
    # The key of every host-key hash, as text: as long as the 32 random bytes of the
    # generated file, at least.
    host_key_pepper: str | None = Field(default=None, min_length=32)
    trusted_proxies: int = Field(default=0, ge=0, le=10)
    # Host names Twilio may call (besides IVR_PUBLIC_URL's); any other Host gets 400.
    allowed_hosts: list[str] = []
    admin_token: str | None = Field(default=None, min_length=32)
    zendesk_api_token: str | None = None
    zendesk_webhook_secret: str | None = Field(default=None, min_length=8)

    @field_validator("admin_token")
    @classmethod
    def _sendable(cls, value):
        # The sign-in form and the API strip what they are sent, so such a token never matches.
        if value is not None and value != value.strip():
            raise ValueError("has white space at its start or end, which sign-in and the API "
                             "strip from what is sent: remove it")
        return value

    @field_validator("twilio_auth_token", "twilio_account_sid", "zendesk_api_token",
                     "zendesk_webhook_secret", mode="before")
    @classmethod
    def _without_line_end(cls, value):
        # Twilio's and Zendesk's SIDs, tokens and signing secrets hold no white space; one
        # read from a file often ends in a line end, which made every webhook's signature
        # wrong (every call refused), every push or text 401, or every delivery unsigned.
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("sms_from")
    @classmethod
    def _textable_from(cls, value):
        # A typo here would otherwise be found only when every text message had failed.
        return None if value is None else sms_sender(value)

    def sms_sender_params(self) -> dict[str, str]:
        """The sender of a text message, as Twilio's messages.create takes it."""
        if _MESSAGING_SERVICE_SID.fullmatch(self.sms_from or ""):
            return {"messaging_service_sid": self.sms_from}
        return {"from_": self.sms_from}

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value):
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            return value
        hosts = []
        for given in value:
            host = str(given).strip().lower()
            if host == "":
                continue
            # Compared with each request's Host: a URL, a path or an IPv6 address here would
            # match no request, and every webhook (the fallback's too) would get 400.
            name, _, port = host.partition(":")
            # A port as requests carry it: 1 to 65535 in ASCII digits, as for
            # IVR_PUBLIC_URL.
            if not name or _NOT_A_HOST.search(host) or (
                    port and not 0 < (ascii_number(port, at_most=5) or 0) < 65536):
                raise ValueError(f"{host[:80]!r}: give host names only, comma-separated "
                                 "(ivr.example.com, or .example.com for its subdomains; "
                                 "a port may follow), not URLs or IPv6 addresses (for those, "
                                 "set IVR_PUBLIC_URL)")
            hosts.append(host)
        return hosts

    def rest_client(self, http_client=None):
        """Twilio's REST client for this account, each request ended REST_TIMEOUT seconds
        after it began, however its answer trickles in (``deadline.py``); None without
        credentials. ``http_client``: twilio's HttpClient interface
        (tests pass a recording one)."""
        if not (self.twilio_account_sid and self.twilio_auth_token):
            return None
        from twilio.rest import Client

        from .deadline import twilio_http_client

        return Client(self.twilio_account_sid, self.twilio_auth_token,
                      http_client=http_client or twilio_http_client(REST_TIMEOUT))

    @property
    def production(self) -> bool:
        """Production mode: webhook signatures are validated (the default). Local
        development turns them off with IVR_VALIDATE_SIGNATURES=false."""
        return self.validate_signatures

    @model_validator(mode="after")
    def _token_when_validating(self) -> "Settings":
        if self.validate_signatures and not self.twilio_auth_token:
            raise ValueError(
                "TWILIO_AUTH_TOKEN is required to validate webhook signatures "
                "(set IVR_VALIDATE_SIGNATURES=false only for local development)"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _scheme_and_host(cls, value: str | None) -> str | None:
        """The service is served at the root of its host: every next-step URL in its
        TwiML is a root path (/voice/menu), which Twilio resolves against the host."""
        if not value:
            return value
        value = value.rstrip("/")
        parts = urlsplit(value)
        # Rebuilt from its parts: "https://host?" passes urlsplit with an empty query,
        # and the scheme comes back in lower case ("HTTPS://" is an https URL).
        base = f"{parts.scheme}://{parts.netloc}"
        if parts.scheme not in ("http", "https") or not parts.netloc \
                or base.lower() != value.lower():
            raise ValueError(f"{value[:80]!r}: give the scheme and host only (for example "
                             "https://ivr.example.com); the service must be served at the "
                             "root of its host, not under a path")
        # Twilio signs the URL it requested: a port no request could carry, or a host with
        # a space in it, would fail every webhook's signature check with 403.
        _check_base_url(value, "https://ivr.example.com")
        return base

    def unset(self, *fields: str) -> list[str]:
        """The environment variables of those settings that are not set, in that order."""
        return [ENVIRONMENT[field] for field in fields if not getattr(self, field)]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if environ is None else environ
        values = {field: env[var] for field, var in ENVIRONMENT.items() if env.get(var)}
        values.update(overrides)
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                (f"{ENVIRONMENT.get(str(e['loc'][0]), e['loc'][0])}: " if e["loc"] else "")
                + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ConfigError(f"environment: {problems}") from None
        if settings.production and not settings.public_url and not settings.allowed_hosts:
            # Without a pinned host, a request signed for another app of the same Twilio
            # account (another Host) would validate here.
            raise ConfigError(
                "environment: IVR_PUBLIC_URL or IVR_ALLOWED_HOSTS is required when signatures "
                "are validated (the host name Twilio calls, e.g. "
                "IVR_PUBLIC_URL=https://support-ivr.example.com)")
        return settings


def check_helpdesk(settings: Settings, config: IvrConfig) -> None:
    """A configured help desk needs its API token; say which key is missing."""
    if config.helpdesk is not None and not settings.zendesk_api_token:
        raise ConfigError(f"{settings.config_path}: [helpdesk] is configured but "
                          "IVR_ZENDESK_API_TOKEN is not set (the Zendesk API token)")
