"""Filler speech through LiveKit's RunContext.with_filler: one line for a slow tool, none for a
fast one, never a delay; driven through real text sessions, tools and the sandbox over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from agent.resilience.filler import FILLER_LINES, FillerLines
from config.settings import Settings
from devtools.scripted_llm import CallTools, Reply, ScriptedTurn, ToolCall, speak_tool_output
from tests.agent.call_harness import TextCall, agent_settings, call_on, temporal_target
from tests.servers import SandboxServer

GREETING = ScriptedTurn(None, Reply("Hi Dana, this is Sam from PandaDoc. Got a minute?"))
FILLER_AFTER = 0.3


@pytest.fixture
def settings(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> Settings:
    return agent_settings(
        sandbox=sandbox,
        data_dir=tmp_path,
        task_queue=task_queue,
        temporal_address=temporal_target(dev_env),
        filler_after_seconds=FILLER_AFTER,
        tool_deadline_seconds=1.5,
    )


def lookup_turn(line: str) -> ScriptedTurn:
    return ScriptedTurn(
        line,
        CallTools(ToolCall("lookup_trial_activity")),
        speak_tool_output("lookup_trial_activity"),
    )


def filler_said(call: TextCall, started: float) -> list[tuple[str, float]]:
    """The filler lines the agent said, with seconds since `started`."""
    return [
        (text, at - started)
        for (speaker, text), at in zip(call.said, call.said_at, strict=True)
        if speaker == "assistant" and text in FILLER_LINES
    ]


async def play(call: TextCall, line: str) -> float:
    started = time.monotonic()
    await call.say(line)
    return started


async def test_a_slow_tool_gets_one_filler_line_after_the_silence(
    settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", latency_ms=900)
    async with call_on(settings, [GREETING, lookup_turn("How am I doing?")]) as call:
        started = await play(call, "How am I doing?")
    (output,) = call.outputs("lookup_trial_activity")
    assert not output.is_error, "the filler did not cost the answer"
    fillers = filler_said(call, started)
    assert len(fillers) == 1
    assert FILLER_AFTER <= fillers[0][1] <= FILLER_AFTER + 0.4
    assert call.tool_seconds["lookup_trial_activity"][0] < 0.9 + 0.3, "the filler delayed the tool"


async def test_a_fast_tool_gets_no_filler(settings: Settings) -> None:
    async with call_on(settings, [GREETING, lookup_turn("How am I doing?")]) as call:
        await play(call, "How am I doing?")
    assert filler_said(call, 0.0) == []
    assert not call.outputs("lookup_trial_activity")[0].is_error


async def test_a_hung_tool_gets_one_filler_then_its_fallback(
    settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", hang=True)
    async with call_on(settings, [GREETING, lookup_turn("How am I doing?")]) as call:
        started = await play(call, "How am I doing?")
    (output,) = call.outputs("lookup_trial_activity")
    assert output.is_error and output.output in FALLBACK_LINES[FallbackKind.TIMEOUT]
    lines = call.agent_lines()
    fillers = filler_said(call, started)
    assert len(fillers) == 1, "at most one filler line per tool"
    assert lines.index(fillers[0][0]) < lines.index(output.output)


async def test_filler_lines_vary_from_one_tool_to_the_next(
    settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", latency_ms=700)
    turns = [GREETING, *(lookup_turn(f"Question {n}?") for n in range(3))]
    async with call_on(settings, turns) as call:
        for n in range(3):
            await play(call, f"Question {n}?")
    fillers = [line for line, _ in filler_said(call, 0.0)]
    assert len(fillers) == 3
    assert len(set(fillers)) == 3


def test_filler_lines_are_short_and_plain() -> None:
    assert len(FILLER_LINES) >= 3
    assert all(len(line.split()) <= 8 for line in FILLER_LINES)
    with pytest.raises(ValueError, match="technical"):
        FillerLines(["Hold on while I query the server."])
