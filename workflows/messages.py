"""How the follow-up reads what senders send: decode and validate here, or drop with a reason.

A handler that raises on a bad payload fails the workflow task on every retry: the follow-up is
wedged, queries fail and later good messages are never processed. So signals arrive raw (one
dynamic handler) and the start input arrives raw, and both are decoded here. A refused message is
described by field and rule only, never by its value, which may be personal data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue

with workflow.unsafe.imports_passed_through():
    from contracts.fields import fold_text

M = TypeVar("M", bound=BaseModel)

MAX_PROBLEMS: Final = 5
MAX_REASON_CHARS: Final = 400
MAX_NAME_CHARS: Final = 64
# The start input of a workflow started without one.
NO_INPUT: Final = RawValue(Payload())


class RefusedMessage(Exception):
    """A message that cannot be used; the text says why without quoting it."""


def decode(raw: RawValue, model: type[M]) -> M:
    """The payload as `model`, or RefusedMessage naming the fields and rules it broke."""
    if not raw.payload.data and not raw.payload.metadata:
        raise RefusedMessage("no payload")
    try:
        return workflow.payload_converter().from_payload(raw.payload, model)
    except ValidationError as error:
        raise RefusedMessage(describe(error)) from None
    except Exception as error:  # not JSON, wrong encoding: the converter's own error types
        raise RefusedMessage(f"undecodable payload ({type(error).__name__})") from None


def decode_one(args: Sequence[RawValue], model: type[M]) -> M:
    """The only argument of a message as `model`; RefusedMessage for any other count."""
    if len(args) != 1:
        raise RefusedMessage(f"expected 1 argument, got {len(args)}")
    return decode(args[0], model)


def describe(error: ValidationError) -> str:
    """Field paths and rules of a validation error, never its input."""
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False, include_context=False)
    ]
    text = "; ".join(problems[:MAX_PROBLEMS])
    if len(problems) > MAX_PROBLEMS:
        text += f"; and {len(problems) - MAX_PROBLEMS} more"
    return f"invalid ({text})"[:MAX_REASON_CHARS]


def message_name(name: str) -> str:
    """A sender's message name, safe to log: one line, bounded."""
    folded = fold_text(name)
    return folded if len(folded) <= MAX_NAME_CHARS else folded[: MAX_NAME_CHARS - 1] + "…"
