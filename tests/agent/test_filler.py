"""Filler speech: one short line for a slow vendor call, none for a fast one, never a delay."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest
from livekit.agents import ToolError
from prometheus_client import CollectorRegistry

from agent.resilience.breaker import BreakerRegistry
from agent.resilience.filler import FILLER_LINES, FillerLines
from agent.resilience.guard import RealtimeGuard


class Speaker:
    """Stands in for `session.say`: records each line and when it was said."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.at: list[float] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.at.append(time.monotonic())


def guard(say: object, *, filler_after: float = 0.15, deadline: float = 2.5) -> RealtimeGuard:
    return RealtimeGuard(
        breakers=BreakerRegistry(registry=CollectorRegistry()),
        deadline=deadline,
        filler_after=filler_after,
        say_filler=say,  # type: ignore[arg-type]
        rng=random.Random(4),
    )


def slow(seconds: float, answer: str = "slots") -> Callable[[], Awaitable[str]]:
    async def call() -> str:
        await asyncio.sleep(seconds)
        return answer

    return call


async def test_a_slow_call_gets_one_filler_line_after_the_threshold() -> None:
    speaker = Speaker()
    started = time.monotonic()
    result = await guard(speaker).call("chilipiper", slow(0.5))
    elapsed = time.monotonic() - started
    assert result == "slots"
    assert len(speaker.lines) == 1
    assert speaker.lines[0] in FILLER_LINES
    assert 0.15 <= speaker.at[0] - started <= 0.15 + 0.2
    assert elapsed < 0.5 + 0.2, "the filler did not delay the answer"


async def test_a_fast_call_gets_no_filler() -> None:
    speaker = Speaker()
    assert await guard(speaker).call("chilipiper", slow(0.02)) == "slots"
    await asyncio.sleep(0.25)  # past the threshold: the timer was cancelled, not just late
    assert speaker.lines == []


async def test_a_hung_call_gets_its_filler_and_then_its_fallback() -> None:
    speaker = Speaker()
    started = time.monotonic()
    with pytest.raises(ToolError):
        await guard(speaker, deadline=0.4).call("amplitude", asyncio.Event().wait)
    assert time.monotonic() - started <= 0.4 + 0.25
    assert len(speaker.lines) == 1


async def test_a_coroutine_speaker_runs_without_holding_up_the_call() -> None:
    spoken = asyncio.Event()
    finished_speaking = asyncio.Event()

    async def say(line: str) -> None:
        spoken.set()
        await asyncio.sleep(0.5)  # a long line being played out
        finished_speaking.set()

    started = time.monotonic()
    assert await guard(say).call("chilipiper", slow(0.3)) == "slots"
    assert time.monotonic() - started < 0.3 + 0.2
    assert spoken.is_set() and not finished_speaking.is_set()
    await asyncio.wait_for(finished_speaking.wait(), 1.0)


async def test_a_broken_speaker_does_not_break_the_call() -> None:
    def say(line: str) -> None:
        raise RuntimeError("the audio track went away")

    assert await guard(say).call("chilipiper", slow(0.3)) == "slots"


async def test_filler_lines_vary_within_a_call() -> None:
    speaker = Speaker()
    realtime = guard(speaker, filler_after=0.05)
    for _ in range(3):
        await realtime.call("chilipiper", slow(0.1))
    assert len(speaker.lines) == 3
    assert len(set(speaker.lines)) == 3


def test_filler_lines_are_short_and_plain() -> None:
    assert len(FILLER_LINES) >= 3
    assert all(len(line.split()) <= 8 for line in FILLER_LINES)
    with pytest.raises(ValueError, match="technical"):
        FillerLines(["Hold on while I query the server."])
