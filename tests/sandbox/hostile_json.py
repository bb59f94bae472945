"""Hypothesis strategies for hostile request bodies: a valid body with one part made hostile.

A body is a valid example with one location changed: a raw fragment no JSON parser of a vendor
reads (NaN, Infinity, 1e400, 64-bit overflow, a lone surrogate, 65+ levels of nesting, a raw
control character, bad UTF-8), a value of a type the route's OpenAPI schema forbids, or any JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Path = tuple[str | int, ...]
PLACEHOLDER = "@@hostile-placeholder@@"

ODD_TEXT = st.text(max_size=24) | st.sampled_from(
    ["", " ", "\x00", "\u202e", "é" * 3, "😀", "\ufeff", "\\", '"', "\r\n", "a" * 5000]
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ODD_TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=10,
)


def _deep(depth: int, opener: bytes, closer: bytes, leaf: bytes) -> bytes:
    return opener * depth + leaf + closer * depth


RAW_FRAGMENTS = st.one_of(
    st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e400",
            b"-1e999",
            b"9" * 5000,
            b"9223372036854775808",
            b"-9223372036854775809",
            b'"\\ud800"',
            b'"a\\udfffb"',
            b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate
            b'"\xff\xfe"',  # not UTF-8
            b'"a\x01b"',  # a raw control character inside a string
            b'"unterminated',
            b"{,}",
            b"[1,]",
        ]
    ),
    st.integers(65, 3000).map(lambda n: _deep(n, b"[", b"]", b"")),
    st.integers(65, 3000).map(lambda n: _deep(n, b'{"a":', b"}", b"1")),
)


def locations(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every value's path inside `value` (the whole body is `()`)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from locations(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from locations(child, (*prefix, index))


def replaced(value: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value.get(head), rest, new)}
    copy = list(value)
    copy[int(head)] = replaced(copy[int(head)], rest, new)
    return copy


def with_raw_fragment(body: Any, path: Path, fragment: bytes) -> bytes:
    """`body` as JSON bytes with the value at `path` replaced by `fragment`, verbatim."""
    text = json.dumps(replaced(body, path, PLACEHOLDER)).encode()
    return text.replace(json.dumps(PLACEHOLDER).encode(), fragment, 1)


# --- wrong types, from the route's JSON schema ----------------------------------------------

CONTAINERS = st.one_of(st.just({}), st.just([]), st.just({"a": [1]}), st.just([["x"]]))
SCALARS_FOR_CONTAINERS = st.one_of(st.just("text"), st.just(7), st.just(True), st.just(1.5))


@dataclass(frozen=True)
class TypedSlot:
    path: Path
    types: frozenset[str]  # the JSON types the schema allows there


def _types(schema: dict[str, Any]) -> frozenset[str]:
    if "anyOf" in schema:
        return frozenset().union(*(_types(branch) for branch in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return frozenset(_json_type(v) for v in values)
    kind = schema.get("type")
    if kind == "integer":
        return frozenset({"integer"})
    return frozenset({kind}) if isinstance(kind, str) else frozenset()


def _json_type(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return (
        "object"
        if isinstance(value, dict)
        else "array"
        if isinstance(value, list)
        else kinds[type(value)]
    )


def _branch(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == kind:
            return dict(branch)
    return {}


def typed_slots(value: Any, schema: dict[str, Any], prefix: Path = ()) -> Iterator[TypedSlot]:
    """Locations in a valid `value` where the schema names the allowed JSON types."""
    allowed = _types(schema)
    if prefix and allowed:
        yield TypedSlot(prefix, allowed)
    if isinstance(value, dict):
        properties = _branch(schema, "object").get("properties", {})
        for key, child in value.items():
            if key in properties:
                yield from typed_slots(child, properties[key], (*prefix, key))
    elif isinstance(value, list):
        items = _branch(schema, "array").get("items", {})
        for index, child in enumerate(value):
            yield from typed_slots(child, items, (*prefix, index))


def wrong_value(slot: TypedSlot) -> st.SearchStrategy[Any]:
    """A value whose JSON type the slot does not allow (containers for scalars, and back)."""
    if slot.types & {"object", "array"}:
        if "object" in slot.types and "array" in slot.types:
            return SCALARS_FOR_CONTAINERS
        other = st.just([{"x": 1}]) if "object" in slot.types else st.just({"x": [1]})
        return SCALARS_FOR_CONTAINERS | other
    return CONTAINERS
