"""Validated field types and the input base model that every vendor client's inputs share."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# The same timezone and phone rules as the models that cross process boundaries.
from contracts.fields import E164Phone, IanaTimezone, ShortText

__all__ = ["E164Phone", "IanaTimezone", "InputModel", "Name", "PathId", "Text"]

_PATH_SEGMENT = re.compile(r"^[^\s/\\?#]+$")


def _check_path_segment(value: str) -> str:
    if not _PATH_SEGMENT.match(value):
        raise ValueError("must be a non-empty id without spaces, '/', '?' or '#'")
    return value


# An id placed in a URL path: it must not be able to leave its segment.
PathId = Annotated[str, AfterValidator(_check_path_segment)]
# A person's or company's name: one line, as the contracts fold it.
Name = ShortText
# A one-line text field; 255 is the common CRM string limit.
Text = Annotated[str, Field(min_length=1, max_length=255)]


class InputModel(BaseModel):
    """A caller's input: immutable, no unknown fields, surrounding whitespace stripped."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, hide_input_in_errors=True
    )
