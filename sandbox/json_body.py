"""Strict JSON request bodies: what a vendor's JSON parser refuses is refused here, as a reason."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

# Far deeper than any documented body; shallow enough that json.dumps, str() and pydantic never
# hit the recursion limit on what we accepted.
MAX_DEPTH = 64
# Java vendors parse integers as 64-bit longs; SQLite stores no more either.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyRefused(ValueError):
    """The body is not JSON a vendor would read; `reason` is one line that echoes no value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _no_constants(name: str) -> NoReturn:
    raise BodyRefused(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused("a number is out of range")
    return value


def _long(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise BodyRefused("a number is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or BodyRefused: not UTF-8, not JSON, NaN or Infinity, too deep."""
    try:
        value = json.loads(
            raw, parse_constant=_no_constants, parse_float=_finite_float, parse_int=_long
        )
    except BodyRefused:
        raise
    except RecursionError:
        raise BodyRefused("the body nests too deep") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, over-long digit strings
        raise BodyRefused("the body is not valid JSON") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and text checks without recursion (the value may be as deep as json.loads allows)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, str):
            if _LONE_SURROGATE.search(node):
                raise BodyRefused("a string holds an unpaired surrogate")
        elif isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise BodyRefused(f"the body nests deeper than {MAX_DEPTH} levels")
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)


def is_json_content(request: Request) -> bool:
    """No Content-Type (lenient, as the vendors are with curl) or a JSON media type."""
    header = request.headers.get("content-type")
    if header is None:
        return True
    media = header.split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class StrictJsonRoute(APIRoute):
    """A control route: NaN, Infinity and deep nesting get FastAPI's 422 before FastAPI parses.

    FastAPI's own json.loads takes NaN (echoed later as invalid JSON) and raises on deep nesting.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            raw = await request.body()
            if raw and is_json_content(request):
                try:
                    parse_json(raw)
                except BodyRefused as refused:
                    return validation_failure((("body",), refused.reason, "json_invalid"))
            return await handler(request)

        return strict


def validation_failure(*errors: tuple[Sequence[str | int], str, str]) -> JSONResponse:
    """FastAPI's 422 shape, one {type, loc, msg} per (loc, msg, type), without the input."""
    detail = [{"type": kind, "loc": list(loc), "msg": message} for loc, message, kind in errors]
    return JSONResponse({"detail": detail}, status_code=422)
