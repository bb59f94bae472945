"""Field types every contract shares: one-line caller text, names, phones, zones, ids, instants.

What a caller says reaches CRM records, analytics properties and Temporal history. Each text
type folds control characters, line and paragraph separators and odd spaces into one space, so a
value can never pose as a line of its own in a record ("10k\\n\\nQualification signals: ..."), and
NUL bytes are never stored. Errors never quote the refused value: models that use these types set
`hide_input_in_errors`, and the messages here name the rule, not the input.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Final
from zoneinfo import available_timezones

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

# Joiners shape words in several scripts (Persian, Indic, emoji): kept; other format marks,
# among them the bidirectional overrides that can make text read backwards, are dropped.
_KEPT_FORMAT_MARKS: Final = frozenset({"\u200c", "\u200d"})
_FOLDED_TO_SPACE: Final = frozenset({"Cc", "Zl", "Zp", "Zs"})
_DROPPED: Final = frozenset({"Cs", "Co", "Cn"})

_CALL_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_SIGNAL_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,39}", re.ASCII)

# Instants outside these years are typing mistakes or attacks; inside, date arithmetic is safe.
EARLIEST_YEAR: Final = 2000
LATEST_YEAR: Final = 2099


def fold_text(value: str) -> str:
    """One line of text: NFC, control characters and separators folded to single spaces."""
    kept: list[str] = []
    for char in unicodedata.normalize("NFC", value):
        category = unicodedata.category(char)
        if category in _FOLDED_TO_SPACE:
            kept.append(" ")
        elif category in _DROPPED or (category == "Cf" and char not in _KEPT_FORMAT_MARKS):
            continue
        else:
            kept.append(char)
    return " ".join("".join(kept).split())


def _fold(value: Any) -> Any:
    return fold_text(value) if isinstance(value, str) else value


def _has_word(value: str) -> str:
    if not any(char.isalnum() for char in value):
        raise ValueError("must contain a letter or a digit")
    return value


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_timezone(value: str) -> str:
    # A set lookup, not ZoneInfo(value): odd keys make ZoneInfo raise OSError or read files.
    if value not in _zones():
        raise ValueError("is not an IANA timezone such as 'America/New_York'")
    return value


def _check_call_id(value: str) -> str:
    if not _CALL_ID.fullmatch(value):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _check_phone(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("is not an E.164 phone number: '+' and 7 to 15 ASCII digits")
    return value


def _check_signal_name(value: str) -> str:
    if not _SIGNAL_NAME.fullmatch(value):
        raise ValueError("must be 1-40 lower-case letters, digits or '_', starting with a letter")
    return value


def _check_year(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


CallId = Annotated[str, Field(max_length=64), AfterValidator(_check_call_id)]
IanaTimezone = Annotated[str, Field(max_length=64), AfterValidator(_check_timezone)]
E164Phone = Annotated[str, Field(max_length=16), AfterValidator(_check_phone)]
SignalName = Annotated[str, Field(max_length=40), AfterValidator(_check_signal_name)]
# One line of caller or CRM text after folding; the number is its most characters.
ShortText = Annotated[str, BeforeValidator(_fold), Field(min_length=1, max_length=200)]
PersonName = Annotated[ShortText, AfterValidator(_has_word)]
SignalValue = ShortText
NoteText = Annotated[str, BeforeValidator(_fold), Field(min_length=1, max_length=1000)]
SummaryText = Annotated[str, BeforeValidator(_fold), Field(max_length=2000)]
OperatorText = Annotated[str, BeforeValidator(_fold), Field(min_length=1, max_length=500)]
Instant = Annotated[AwareDatetime, AfterValidator(_check_year)]
