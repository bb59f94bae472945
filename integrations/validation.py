"""Validated field types and the input base model that every vendor client's inputs share."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PATH_SEGMENT = re.compile(r"^[^\s/\\?#]+$")


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA timezone such as 'America/New_York'") from None
    return value


def _check_phone(value: str) -> str:
    if not _E164.match(value):
        # The value is personal data: never quote it in an error that may be logged.
        raise ValueError("is not an E.164 phone number such as '+14155550123'")
    return value


def _check_path_segment(value: str) -> str:
    if not _PATH_SEGMENT.match(value):
        raise ValueError("must be a non-empty id without spaces, '/', '?' or '#'")
    return value


IanaTimezone = Annotated[str, AfterValidator(_check_timezone)]
E164Phone = Annotated[str, AfterValidator(_check_phone)]
# An id placed in a URL path: it must not be able to leave its segment.
PathId = Annotated[str, AfterValidator(_check_path_segment)]
# A person's or company's name.
Name = Annotated[str, Field(min_length=1, max_length=200)]
# A one-line text field; 255 is the common CRM string limit.
Text = Annotated[str, Field(min_length=1, max_length=255)]


class InputModel(BaseModel):
    """A caller's input: immutable, no unknown fields, surrounding whitespace stripped."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
