"""What the agent says when a tool fails: natural lines per kind of failure, not repeated early."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum

import httpx2

from agent.resilience.breaker import CircuitOpenError
from integrations.errors import NotFoundError, TransientError, VendorError

MIN_VARIANTS = 3

# Words a caller should never hear: they sound like a machine breaking down.
TECHNICAL_WORDS: frozenset[str] = frozenset(
    {
        "error",
        "errors",
        "api",
        "server",
        "servers",
        "timeout",
        "timed",
        "exception",
        "http",
        "database",
        "backend",
        "endpoint",
        "request",
        "status",
        "code",
        "crash",
        "crashed",
        "bug",
        "null",
        "circuit",
        "breaker",
        "tool",
        "function",
    }
)


class FallbackKind(StrEnum):
    TOOL_FAILURE = "tool_failure"
    CONNECTION_ISSUE = "connection_issue"
    TIMEOUT = "timeout"
    SERVICE_UNAVAILABLE = "service_unavailable"
    DATA_NOT_FOUND = "data_not_found"
    GENERIC = "generic"


FALLBACK_LINES: Mapping[FallbackKind, tuple[str, ...]] = {
    FallbackKind.TOOL_FAILURE: (
        "Hmm, I couldn't get that done just now, but it won't hold us up.",
        "That didn't go through on my end. No worries, let's keep going.",
        "I wasn't able to sort that out this second. I'll make sure it's followed up.",
        "Looks like that one didn't work on my side, so let's carry on for now.",
    ),
    FallbackKind.CONNECTION_ISSUE: (
        "I'm having a little trouble reaching that right now. Let's keep going.",
        "I can't seem to get through to that at the moment, so we'll come back to it.",
        "That's not coming through for me just now. Shall we carry on?",
    ),
    FallbackKind.TIMEOUT: (
        "That's taking longer than it should, so let's not wait on it.",
        "Rather than keep you waiting, let's move on and I'll follow up on that.",
        "It's slow on my end right now, so let's keep talking and I'll circle back.",
    ),
    FallbackKind.SERVICE_UNAVAILABLE: (
        "I can't get to that at the moment, but we can keep going.",
        "That isn't available to me right now. I'll make a note and we'll follow up by email.",
        "I don't have access to that for the moment. Let's carry on with the rest.",
    ),
    FallbackKind.DATA_NOT_FOUND: (
        "I don't see anything on file for that yet.",
        "I couldn't find any details on that. Maybe you can fill me in?",
        "Nothing's showing up for that on my side. Could you tell me a bit about it?",
    ),
    FallbackKind.GENERIC: (
        "Sorry, something went sideways on my end. Let's keep going.",
        "Let me set that aside for a moment, and we can carry on.",
        "Apologies, I couldn't manage that one. What else can I help with?",
    ),
}


def kind_for_error(
    exc: BaseException, *, default: FallbackKind = FallbackKind.TOOL_FAILURE
) -> FallbackKind:
    """Which kind of line fits a failure. `default` is used for any other vendor error."""
    if isinstance(exc, CircuitOpenError):
        return FallbackKind.SERVICE_UNAVAILABLE
    if isinstance(exc, TimeoutError):
        return FallbackKind.TIMEOUT
    if isinstance(exc, httpx2.TransportError | ConnectionError):
        return FallbackKind.CONNECTION_ISSUE
    # A transient failure with no HTTP status never got a response: the link is the problem.
    if isinstance(exc, TransientError) and exc.status_code is None:
        return FallbackKind.CONNECTION_ISSUE
    if isinstance(exc, NotFoundError):
        return FallbackKind.DATA_NOT_FOUND
    if isinstance(exc, VendorError):
        return default
    return FallbackKind.GENERIC


def technical_words_in(line: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", line.lower()) if word in TECHNICAL_WORDS}


class VariedLines:
    """Lines of one kind, drawn at random without a repeat until every line has been used."""

    def __init__(self, lines: Sequence[str], *, rng: random.Random) -> None:
        if not lines:
            raise ValueError("VariedLines needs at least one line")
        self._lines = tuple(lines)
        self._rng = rng
        self._unused: list[str] = []
        self._last: str | None = None

    def next(self) -> str:
        if not self._unused:
            self._unused = list(self._lines)
            self._rng.shuffle(self._unused)
            # Across a refill, don't say the line that was just said.
            if len(self._unused) > 1 and self._unused[-1] == self._last:
                self._unused[0], self._unused[-1] = self._unused[-1], self._unused[0]
        line = self._unused.pop()
        self._last = line
        return line


class SpokenFallbacks:
    """The fallback lines of one call. Make one per call, so variety is per conversation."""

    def __init__(
        self,
        *,
        lines: Mapping[FallbackKind, Sequence[str]] = FALLBACK_LINES,
        rng: random.Random | None = None,
    ) -> None:
        _check_lines(lines)
        rng = rng or random.Random()
        self._decks = {kind: VariedLines(lines[kind], rng=rng) for kind in FallbackKind}

    def line(self, kind: FallbackKind) -> str:
        return self._decks[kind].next()

    def for_error(
        self, exc: BaseException, *, default: FallbackKind = FallbackKind.TOOL_FAILURE
    ) -> str:
        return self.line(kind_for_error(exc, default=default))


def _check_lines(lines: Mapping[FallbackKind, Sequence[str]]) -> None:
    for kind in FallbackKind:
        variants = lines.get(kind, ())
        if len(set(variants)) < MIN_VARIANTS:
            raise ValueError(f"fallback kind {kind.value!r} needs {MIN_VARIANTS} distinct lines")
        for line in variants:
            if found := technical_words_in(line):
                raise ValueError(
                    f"fallback line {line!r} uses technical words: {', '.join(sorted(found))}"
                )
