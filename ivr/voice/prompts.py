"""Prompt catalogues: what the line says, per language, kept out of code.

Each catalogue is a TOML file in ``config/prompts/`` named after its language tag. A
catalogue may ``extend`` another and override only the lines that differ (the regional
English catalogues extend British English). Every catalogue must end up with the same
keys and the same placeholders as the reference catalogue, or the app refuses to start.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

REFERENCE = "en-GB"
DIGITS_PLACEHOLDER = "ticket"


class CatalogueError(RuntimeError):
    pass


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Digits:
    """Digits to be read one at a time (a ticket number)."""

    digits: str


Segment = Text | Digits


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _template_problem(template: str) -> str | None:
    """What keeps a message from being filled in (a lone brace, a placeholder that is
    more than a plain name such as {brand}), or None."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"{exc} (write {{{{ or }}}} for a brace)"
    for _, field, spec, conversion in parts:
        if field is not None and (not field.isidentifier() or spec or conversion):
            shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return f"placeholder {{{shown}}} must be a plain name such as {{brand}}"
    return None


class Catalogue:
    def __init__(self, name: str, messages: dict[str, str]):
        self.name = name
        self.messages = messages

    def segments(self, key: str, params: dict[str, object]) -> list[Segment]:
        """The message as text pieces, with the ticket number as a digits piece."""
        template = self.messages[key]
        out: list[Segment] = []
        text = ""
        for literal, field, _spec, _conv in string.Formatter().parse(template):
            text += literal
            if field is None:
                continue
            if field == DIGITS_PLACEHOLDER:
                if text:
                    out.append(Text(text))
                    text = ""
                out.append(Digits(str(params[field])))
            else:
                text += str(params[field])
        if text:
            out.append(Text(text))
        return out

    def text(self, key: str, params: dict[str, object]) -> str:
        """The message as plain text (for SMS)."""
        return self.messages[key].format(**params)


def load_catalogues(directory: str | Path) -> dict[str, Catalogue]:
    directory = Path(directory)
    raw: dict[str, dict] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            raw[path.stem] = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise CatalogueError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise CatalogueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") \
                from None
        except OSError as exc:  # a link to nothing, a folder, no permission...
            raise CatalogueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if REFERENCE not in raw:
        raise CatalogueError(f"{directory}: the reference catalogue {REFERENCE}.toml is missing")

    resolved: dict[str, dict[str, str]] = {}

    def resolve(name: str, chain: tuple[str, ...] = ()) -> dict[str, str]:
        if name in resolved:
            return resolved[name]
        if name in chain:
            raise CatalogueError(f"{directory}: catalogues extend each other in a loop: {chain}")
        if name not in raw:
            raise CatalogueError(f"{directory}/{chain[-1]}.toml: extends {name!r}, which does not exist")
        data = dict(raw[name])
        parent = data.pop("extends", None)
        if parent is not None and not isinstance(parent, str):
            raise CatalogueError(f"{directory}/{name}.toml: extends: expected the name of "
                                 "another catalogue, such as \"en-US\"")
        for key, value in data.items():
            if not isinstance(value, str):
                raise CatalogueError(f"{directory}/{name}.toml: {key}: expected a string")
        messages = {**(resolve(parent, chain + (name,)) if parent else {}), **data}
        resolved[name] = messages
        return messages

    reference = resolve(REFERENCE)
    catalogues = {}
    for name in raw:
        messages = resolve(name)
        path = directory / f"{name}.toml"
        missing = sorted(set(reference) - set(messages))
        unknown = sorted(set(messages) - set(reference))
        if missing:
            raise CatalogueError(f"{path}: missing messages: {', '.join(missing)}")
        if unknown:
            raise CatalogueError(f"{path}: unknown messages: {', '.join(unknown)}")
        for key, template in messages.items():
            problem = _template_problem(template)
            if problem:
                raise CatalogueError(f"{path}: {key}: {problem}")
            if _placeholders(template) != _placeholders(reference[key]):
                raise CatalogueError(
                    f"{path}: {key}: placeholders {sorted(_placeholders(template))} differ from "
                    f"{REFERENCE}'s {sorted(_placeholders(reference[key]))}"
                )
        catalogues[name] = Catalogue(name, messages)
    return catalogues
