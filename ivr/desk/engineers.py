"""Engineers as people: a name, a phone or Twilio Client identity, the languages and queue
groups they serve, and a personal desk token kept only as a keyed hash.

The token is random (256 bits), so a fast keyed hash is the right tool: HMAC-SHA256 under a
key derived from the pepper. A database dump alone cannot be turned back into tokens, and
looking a token up costs one hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Callable

from sqlalchemy.exc import IntegrityError

from ..config import IvrConfig
from ..domain.engineers import RESERVED_NAMES, EngineerInfo, parse_list, primary_language
from ..domain.priority import LEVELS
from ..domain.phones import callable_number
from ..security import HostKeyHasher
from ..storage import Storage
from ..storage.engineers import Engineer, EngineerRepository, FloorRepository, engineer_info
from .service import BadRequest, Conflict, NotFound

TOKEN_PREFIX = "eng_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._'-]{0,62}")
IDENTITY = re.compile(r"[A-Za-z0-9_.@-]{1,120}")
QUEUE = re.compile(r"[A-Za-z0-9_.{}-]{1,64}")


def token_digest(hasher: HostKeyHasher, token: str) -> str:
    key = hasher.derive("engineer-desk-token")
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Engineers:
    """Adding, listing, removing engineers, their tokens, and who a token or call is."""

    def __init__(self, storage: Storage, hasher: HostKeyHasher,
                 clock: Callable[[], dt.datetime], config: IvrConfig):
        self.storage = storage
        self.hasher = hasher
        self.clock = clock
        self.config = config

    @classmethod
    def of(cls, ivr) -> "Engineers":
        return cls(ivr.storage, ivr.hasher, ivr.service.clock, ivr.config)

    def add(self, name: str, *, phone: str | None = None, client: str | None = None,
            languages: str = "", queues: str = "") -> tuple[EngineerInfo, str]:
        """Create an engineer; returns them and their token (shown this once)."""
        name = (name or "").strip()
        if not NAME.fullmatch(name) or name.lower() in RESERVED_NAMES:
            raise BadRequest(f"name: {name[:40]!r} must be 1 to 63 letters, digits, spaces or "
                             "._'- and not one of the names the history uses for others ("
                             + ", ".join(RESERVED_NAMES) + ")")
        if bool(phone) == bool(client):
            raise BadRequest("give exactly one of --phone E164 or --client IDENTITY")
        number = None
        if phone:
            number = callable_number(phone)
            if number is None:
                raise BadRequest(f"phone: {phone[:40]!r} is not a valid phone number in "
                                 "international form (+81...)")
        if client and not IDENTITY.fullmatch(client):
            raise BadRequest(f"client: {client[:40]!r} may hold letters, digits and _.@- only")
        langs = self._languages(parse_list(languages))
        groups = self._groups(parse_list(queues))
        kept = {"languages": ",".join(langs),
                "queues": ",".join(groups)}
        for field, value in kept.items():  # PostgreSQL refuses what its column cannot hold
            limit = Engineer.__table__.c[field].type.length
            if len(value) > limit:
                raise BadRequest(f"{field}: {len(value)} characters in all, more than the "
                                 f"{limit} kept; list fewer")
        token = new_token()
        try:
            with self.storage.unit_of_work() as uow:
                session = uow.session
                repo = EngineerRepository(self.storage, session)
                clash = repo.clash(name, number, client)
                if clash:
                    raise Conflict(clash)
                engineer = repo.add(name=name, phone=number, client_identity=client,
                                    languages=kept["languages"], queues=kept["queues"],
                                    token_hash=token_digest(self.hasher, token), now=self.clock())
                return engineer_info(engineer), token
        except IntegrityError:
            # The same engineer added at the same moment (a form sent twice): the other
            # add committed while this one's INSERT waited on the unique index. Any other
            # integrity error is not a duplicate and is not reported as one.
            with self.storage.unit_of_work(readonly=True) as uow:
                clash = EngineerRepository(self.storage, uow.session).clash(name, number, client)
            if not clash:
                raise
            raise Conflict(clash) from None

    def _languages(self, tags: list[str]) -> list[str]:
        """The caller languages an engineer is to take ('ja' of 'ja-JP'), each one a line
        speaks: another ('jp' for Japanese) would match no caller, and the engineer would
        never be given one in the language meant, with nothing said."""
        known = self.config.caller_languages()
        languages: list[str] = []
        for tag in tags:
            language = primary_language(tag)
            if not re.fullmatch(r"[a-z]{2,3}", language):
                raise BadRequest(f"languages: {tag[:20]!r} is not a language code like ja or en")
            if language not in known:
                raise BadRequest(f"languages: {tag[:20]!r} is not a language callers speak on "
                                 f"any line; the configured ones: " + ", ".join(sorted(known)))
            if language not in languages:
                languages.append(language)
        return languages

    def _groups(self, names: list[str]) -> list[str]:
        """The queue groups an engineer is to serve, each one the configuration routes
        callers to: a name that matches none would leave the engineer hearing that nobody
        waits while callers do. A route's own name with ``{priority}`` stands for its group
        at every level."""
        known = self.config.ticket_groups()
        groups: list[str] = []
        for name in names:
            expanded = [name.replace("{priority}", str(level)) for level in LEVELS] \
                if "{priority}" in name else [name]
            unknown = [group for group in expanded if group not in known]
            if unknown or not QUEUE.fullmatch(name):
                raise BadRequest(f"queues: {name[:40]!r} is not a queue group callers are "
                                 f"routed to; the configured ones: "
                                 + ", ".join(sorted(known)[:20]))
            groups.extend(group for group in expanded if group not in groups)
        return groups

    def list(self) -> list[EngineerInfo]:
        with self.storage.unit_of_work(readonly=True) as uow:
            session = uow.session
            return [engineer_info(e) for e in EngineerRepository(self.storage, session).all()]

    def get(self, name: str) -> EngineerInfo:
        with self.storage.unit_of_work(readonly=True) as uow:
            session = uow.session
            engineer = EngineerRepository(self.storage, session).named(name)
            if engineer is None:
                raise NotFound(f"no engineer named {name[:40]!r}")
            return engineer_info(engineer)

    def remove(self, name: str) -> None:
        with self.storage.unit_of_work() as uow:
            session = uow.session
            if not EngineerRepository(self.storage, session).remove(name):
                raise NotFound(f"no engineer named {name[:40]!r}")

    def calls_ended(self, name: str, actor: str) -> tuple[list[str], list[str]]:
        """The desk says every call of this engineer's has ended, when Twilio's reports
        of their end were lost (the database was away as they came): her conversations
        on the engineer line and her callbacks put through no longer count, so callbacks
        may be placed with her again. What 1 at the engineer line's "if that call has
        ended" prompt does, for an engineer who does not call it. Returns the tickets of
        the engineer-line callers so released (each records who said so), and those of
        the callbacks so ended."""
        now = self.clock()
        with self.storage.unit_of_work() as uow:
            session = uow.session
            engineers = EngineerRepository(self.storage, session)
            engineer = engineers.named(name)
            if engineer is None:
                raise NotFound(f"no engineer named {name[:40]!r}")
            engineers.hold(engineer.name)  # one at a time with her engineer-line requests
            return FloorRepository(self.storage, session).calls_ended(
                engineer.name, actor, f"{engineer.name}'s call, said by the desk", now)

    def rotate_token(self, name: str) -> str:
        """A new token for an engineer; the old one stops working at once."""
        token = new_token()
        with self.storage.unit_of_work() as uow:
            session = uow.session
            if not EngineerRepository(self.storage, session).set_token(
                    name, token_digest(self.hasher, token), self.clock()):
                raise NotFound(f"no engineer named {name[:40]!r}")
        return token

    def by_token(self, token: str) -> EngineerInfo | None:
        """The engineer a personal desk token belongs to, or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        with self.storage.unit_of_work(readonly=True) as uow:
            session = uow.session
            engineer = EngineerRepository(self.storage, session).by_token_hash(
                token_digest(self.hasher, token))
            return engineer_info(engineer) if engineer is not None else None

    def by_caller(self, caller: str | None) -> EngineerInfo | None:
        """The engineer calling the engineer line: 'client:alice' or their phone number."""
        with self.storage.unit_of_work(readonly=True) as uow:
            session = uow.session
            engineer = EngineerRepository(self.storage, session).for_caller(caller)
            return engineer_info(engineer) if engineer is not None else None

    def session_mark(self, name: str) -> str | None:
        """What a dashboard session keeps for a signed-in engineer: it changes when their
        token is rotated (signing them out) and is gone when they are removed."""
        with self.storage.unit_of_work(readonly=True) as uow:
            session = uow.session
            engineer = EngineerRepository(self.storage, session).named(name)
            if engineer is None:
                return None
            return self._mark(engineer.token_hash)

    def token_mark(self, token: str) -> str:
        """``session_mark`` of the engineer whose token this is, from the token itself: at
        sign-in, so that a rotation committed meanwhile is not taken for the token shown."""
        return self._mark(token_digest(self.hasher, token))

    def _mark(self, token_hash: str) -> str:
        key = self.hasher.derive("engineer-dashboard-session")
        return hmac.new(key, token_hash.encode(), hashlib.sha256).hexdigest()
