"""Filler speech through LiveKit's RunContext.with_filler: one line for a slow tool, none for a
fast one, never a delay; driven through real text sessions, tools and the sandbox over HTTP, and
asserted turn by turn with LiveKit's testing API (RunResult.expect)."""

from __future__ import annotations

import time

import pytest
from livekit.agents.voice.run_result import (
    ChatMessageAssert,
    FunctionCallAssert,
    FunctionCallOutputAssert,
    RunResult,
)

from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from agent.resilience.filler import FILLER_LINES, FillerLines
from config.settings import Settings
from devtools.scripted_llm import CallTools, Reply, ScriptedTurn, ToolCall, speak_tool_output
from tests.agent.call_harness import (
    SettingsFor,
    TextCall,
    call_on,
    spoken,
    tool_seconds,
)
from tests.servers import SandboxServer

GREETING = ScriptedTurn(None, Reply("Hi Dana, this is Sam from PandaDoc. Got a minute?"))
FILLER_AFTER = 0.3


@pytest.fixture
def settings(settings_for: SettingsFor) -> Settings:
    return settings_for(filler_after_seconds=FILLER_AFTER, tool_deadline_seconds=1.5)


def lookup_turn(line: str) -> ScriptedTurn:
    return ScriptedTurn(
        line,
        CallTools(ToolCall("lookup_trial_activity")),
        speak_tool_output("lookup_trial_activity"),
    )


async def ask(call: TextCall, line: str) -> tuple[RunResult[None], float]:
    """The caller's turn, with when it started (LiveKit stamps items with time.time())."""
    started = time.time()
    return await call.say(line), started


def expect_filler_then_answer(
    result: RunResult[None], *, is_error: bool
) -> tuple[ChatMessageAssert, FunctionCallAssert, FunctionCallOutputAssert]:
    """The lookup, one filler line while it runs, its output, and that output said."""
    lookup = result.expect.next_event().is_function_call(name="lookup_trial_activity")
    filler = result.expect.next_event().is_message(role="assistant")
    assert spoken(filler) in FILLER_LINES
    output = result.expect.next_event().is_function_call_output(is_error=is_error)
    said = spoken(result.expect.next_event().is_message(role="assistant"))
    assert said == output.event().item.output
    result.expect.no_more_events()
    return filler, lookup, output


async def test_a_slow_tool_gets_one_filler_line_after_the_silence(
    settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", latency_ms=900)
    async with call_on(settings, [GREETING, lookup_turn("How am I doing?")]) as call:
        result, started = await ask(call, "How am I doing?")
    # The filler did not cost the answer: the lookup succeeded and was said.
    filler, lookup, output = expect_filler_then_answer(result, is_error=False)
    assert FILLER_AFTER <= filler.event().item.created_at - started <= FILLER_AFTER + 0.4
    assert tool_seconds(lookup, output) < 0.9 + 0.3, "the filler delayed the tool"
    assert sum(line in FILLER_LINES for line in call.agent_lines()) == 1


async def test_a_fast_tool_gets_no_filler(settings: Settings) -> None:
    async with call_on(settings, [GREETING, lookup_turn("How am I doing?")]) as call:
        result, _ = await ask(call, "How am I doing?")
    result.expect.next_event().is_function_call(name="lookup_trial_activity")
    output = result.expect.next_event().is_function_call_output(is_error=False)
    said = spoken(result.expect.next_event().is_message(role="assistant"))
    assert said == output.event().item.output and said not in FILLER_LINES
    result.expect.no_more_events()
    assert not any(line in FILLER_LINES for line in call.agent_lines())


async def test_a_hung_tool_gets_one_filler_then_its_fallback(
    settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", hang=True)
    async with call_on(settings, [GREETING, lookup_turn("How am I doing?")]) as call:
        result, _ = await ask(call, "How am I doing?")
    # At most one filler line per tool: after it, only the fallback and its spoken form.
    _, _, output = expect_filler_then_answer(result, is_error=True)
    assert output.event().item.output in FALLBACK_LINES[FallbackKind.TIMEOUT]
    assert sum(line in FILLER_LINES for line in call.agent_lines()) == 1


async def test_filler_lines_vary_from_one_tool_to_the_next(
    settings: Settings, sandbox: SandboxServer
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", latency_ms=700)
    turns = [GREETING, *(lookup_turn(f"Question {n}?") for n in range(3))]
    async with call_on(settings, turns) as call:
        results = [(await ask(call, f"Question {n}?"))[0] for n in range(3)]
    fillers = [spoken(expect_filler_then_answer(r, is_error=False)[0]) for r in results]
    assert len(fillers) == 3
    assert len(set(fillers)) == 3


def test_filler_lines_are_short_and_plain() -> None:
    assert len(FILLER_LINES) >= 3
    assert all(len(line.split()) <= 8 for line in FILLER_LINES)
    with pytest.raises(ValueError, match="technical"):
        FillerLines(["Hold on while I query the server."])
