"""How long a prompt takes to say: an estimate from its text and language.

English and French at 155 words a minute, the usual pace of text-to-speech voices.
Japanese at 7 morae a second, the morae counted from the kana and kanji: a kana is one
mora (a small ゃ, ゅ, ょ or vowel merges with the kana before it), a kanji two, a digit two
(いち, さん, なな...), a capital letter of an acronym two (アイ, ディー), and a word in Latin
letters about three for every four letters (Zoom: ズーム).
"""

from __future__ import annotations

import re

WORDS_PER_MINUTE = 155
MORAE_PER_SECOND = 7

_SMALL_KANA = set("ぁぃぅぇぉゃゅょゎァィゥェォャュョヮ")
_LATIN_RUN = re.compile(r"[A-Za-z]+")
_WORD = re.compile(r"\w", re.UNICODE)


def is_japanese(language: str | None) -> bool:
    return (language or "").lower().startswith("ja")


def words(text: str) -> int:
    """Words as a voice reads them: space-separated pieces with a letter or digit in them
    (each digit of a ticket number read one by one is a word)."""
    return sum(1 for piece in text.split() if _WORD.search(piece))


def morae(text: str) -> int:
    """An estimate of the morae in Japanese text."""
    count = 0.0
    for run in _LATIN_RUN.findall(text):
        count += 2 * len(run) if run.isupper() else 0.75 * len(run)
    for ch in _LATIN_RUN.sub("", text):
        if ch in _SMALL_KANA:
            continue
        if "\u3040" <= ch <= "\u30ff":  # hiragana, katakana, ー
            count += 1
        elif "\u4e00" <= ch <= "\u9fff" or ch == "々":
            count += 2
        elif ch.isdigit():
            count += 2
    return round(count)


def seconds(text: str, language: str | None) -> float:
    """Estimated seconds of speech for ``text`` read in ``language``."""
    if is_japanese(language):
        return morae(text) / MORAE_PER_SECOND
    return words(text) * 60 / WORDS_PER_MINUTE
