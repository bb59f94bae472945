"""Spoken fallbacks: six kinds, varied, conversational, matched to the failure."""

from __future__ import annotations

import itertools
import random
import re
from typing import Any

import httpx2
import pytest

from agent.resilience.breaker import CircuitOpenError
from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind, SpokenFallbacks, kind_for_error
from agent.resilience.retry import DeadlineExceededError
from integrations.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)

# Kept apart from the module's own list, so a word dropped there still fails here.
JARGON = re.compile(
    r"\b(error|errors|api|server|timeout|timed out|exception|http|500|503|429|404|retry|"
    r"circuit|database|backend|endpoint|vendor|amplitude|chilipiper|salesforce|hubspot)\b",
    re.IGNORECASE,
)


def vendor() -> dict[str, Any]:
    return {"vendor": "chilipiper", "operation": "free_slots"}


def test_six_kinds_with_at_least_three_conversational_variants_each() -> None:
    assert {kind.value for kind in FallbackKind} == {
        "tool_failure",
        "connection_issue",
        "timeout",
        "service_unavailable",
        "data_not_found",
        "generic",
    }
    for kind in FallbackKind:
        lines = FALLBACK_LINES[kind]
        assert len(set(lines)) >= 3, kind
        for line in lines:
            assert not JARGON.search(line), line
            assert len(line.split()) <= 20, f"too long to say naturally: {line!r}"
            assert not re.search(r"[*#_`\[\]{}<>/\\]", line), f"not speakable: {line!r}"


@pytest.mark.parametrize("seed", range(20))
def test_no_line_repeats_while_another_of_its_kind_is_unused(seed: int) -> None:
    fallbacks = SpokenFallbacks(rng=random.Random(seed))
    for kind in FallbackKind:
        variants = len(FALLBACK_LINES[kind])
        said = [fallbacks.line(kind) for _ in range(variants * 4)]
        for start in range(0, len(said), variants):
            assert sorted(said[start : start + variants]) == sorted(FALLBACK_LINES[kind])
        assert all(a != b for a, b in itertools.pairwise(said)), "no back-to-back repeat"


def test_each_call_gets_its_own_variety() -> None:
    first, second = SpokenFallbacks(), SpokenFallbacks()
    kind = FallbackKind.TIMEOUT
    # A line said in one call does not count as used in another.
    assert len({first.line(kind) for _ in range(3)}) == 3
    assert len({second.line(kind) for _ in range(3)}) == 3


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (CircuitOpenError("amplitude", retry_in=12.0), FallbackKind.SERVICE_UNAVAILABLE),
        (DeadlineExceededError("amplitude", deadline=2.5, attempts=1), FallbackKind.TIMEOUT),
        (TimeoutError(), FallbackKind.TIMEOUT),
        (httpx2.ConnectError("refused"), FallbackKind.CONNECTION_ISSUE),
        (ConnectionResetError(), FallbackKind.CONNECTION_ISSUE),
        (TransientError("no response", **vendor()), FallbackKind.CONNECTION_ISSUE),
        (TransientError("bad gateway", status_code=502, **vendor()), FallbackKind.TOOL_FAILURE),
        (
            RateLimitedError("slow down", retry_after=9, status_code=429, **vendor()),
            FallbackKind.TOOL_FAILURE,
        ),
        (NotFoundError("no such link", status_code=404, **vendor()), FallbackKind.DATA_NOT_FOUND),
        (PermanentError("bad input", status_code=400, **vendor()), FallbackKind.TOOL_FAILURE),
        (AuthError("bad token", status_code=401, **vendor()), FallbackKind.TOOL_FAILURE),
        (RuntimeError("bug"), FallbackKind.GENERIC),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.value,
)
def test_the_line_fits_the_failure(error: BaseException, kind: FallbackKind) -> None:
    assert kind_for_error(error) is kind
    assert SpokenFallbacks().for_error(error) in FALLBACK_LINES[kind]


def test_a_tool_can_choose_the_kind_for_vendor_failures() -> None:
    error = PermanentError("bad input", status_code=400, **vendor())
    chosen = FallbackKind.SERVICE_UNAVAILABLE
    assert kind_for_error(error, default=chosen) is chosen
    assert kind_for_error(RuntimeError("bug"), default=chosen) is FallbackKind.GENERIC


def test_custom_lines_are_checked() -> None:
    lines = {kind: FALLBACK_LINES[kind] for kind in FallbackKind}
    with pytest.raises(ValueError, match="needs 3 distinct lines"):
        SpokenFallbacks(lines={**lines, FallbackKind.GENERIC: ("Hmm.", "Hmm.", "Okay.")})
    technical = ("Our server returned an error.", "Let's go on.", "Moving on.")
    with pytest.raises(ValueError, match="error, server"):
        SpokenFallbacks(lines={**lines, FallbackKind.TIMEOUT: technical})
