"""A scripted stand-in for the LLM (not a real model): it replays fixed turns through AgentSession.

Tests and `python -m agent demo` use it so that the real agent, its tools, the breakers and the
handoff run end to end with no model, no network and no keys. Each scripted turn answers one caller
line (or the greeting) with a fixed sequence of steps: tool calls, then a spoken reply. A step may
read what an earlier tool returned, as a real model would read the tool output in its context.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import APIConnectionError, APIError, llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

SCRIPTED_MODEL_LABEL = "scripted stand-in (not a real model)"


class ScriptError(APIError):
    """The conversation left the script: a test or demo bug, never a model failure."""

    def __init__(self, message: str) -> None:
        super().__init__(f"scripted LLM: {message}", retryable=False)


@dataclass(frozen=True)
class ScriptView:
    """What a scripted step may read: the tool outputs seen so far in the conversation."""

    outputs: Mapping[str, llm.FunctionCallOutput]

    def output(self, tool: str) -> str:
        """The latest output of `tool`, or of a ToolError it raised."""
        item = self.outputs.get(tool)
        if item is None:
            raise ScriptError(f"the script reads the output of {tool!r}, which has not run")
        return item.output

    def failed(self, tool: str) -> bool:
        item = self.outputs.get(tool)
        return item is not None and item.is_error

    def json(self, tool: str) -> dict[str, Any]:
        """The latest output of `tool` parsed as a JSON object."""
        try:
            value = json.loads(self.output(tool))
        except json.JSONDecodeError:
            raise ScriptError(f"the output of {tool!r} is not JSON") from None
        if not isinstance(value, dict):
            raise ScriptError(f"the output of {tool!r} is not a JSON object")
        return value


Arguments = Mapping[str, object] | Callable[[ScriptView], Mapping[str, object]]
Text = str | Callable[[ScriptView], str]


@dataclass(frozen=True)
class ToolCall:
    """Ask the agent to run one tool with these arguments."""

    name: str
    arguments: Arguments = field(default_factory=dict)


@dataclass(frozen=True)
class CallTools:
    """One model response made of tool calls (several run in parallel, as a model may ask)."""

    calls: tuple[ToolCall, ...]

    def __init__(self, *calls: ToolCall) -> None:
        if not calls:
            raise ValueError("CallTools needs at least one ToolCall")
        object.__setattr__(self, "calls", calls)


@dataclass(frozen=True)
class Reply:
    """One model response made of text for the agent to speak."""

    text: Text


@dataclass(frozen=True)
class Fail:
    """The model call fails with `error` for its first `times` attempts (LLM outage drills).

    Once spent, the next step answers: a retried request after a recoverable error succeeds.
    """

    error: APIError
    times: int = 1


Step = CallTools | Reply | Fail


@dataclass(frozen=True)
class ScriptedTurn:
    """The caller's line (None: the agent speaks first) and the agent's steps that answer it."""

    caller: str | None
    steps: tuple[Step, ...]

    def __init__(self, caller: str | None, *steps: Step) -> None:
        object.__setattr__(self, "caller", caller)
        object.__setattr__(self, "steps", steps)


def speak_tool_output(tool: str) -> Reply:
    """A reply that voices a tool's output, as the model is told to do with spoken fallbacks."""
    return Reply(lambda view: view.output(tool))


class ScriptedLLM(llm.LLM[Any]):
    """An `llm.LLM` that replays `turns` (a scripted stand-in, NOT a real model).

    It finds its place from the chat context alone: the number of caller messages picks the turn
    and the number of tool calls made since then picks the step, so a session retry or a restored
    context never desynchronises it. A caller line that differs from the script raises ScriptError.
    """

    def __init__(self, turns: Sequence[ScriptedTurn]) -> None:
        super().__init__()
        if not turns:
            raise ValueError("a script needs at least one turn")
        self._turns = tuple(turns)
        self._greets = turns[0].caller is None
        self._failures: dict[tuple[int, int], int] = {}
        self.requests = 0

    @property
    def model(self) -> str:
        return SCRIPTED_MODEL_LABEL

    @property
    def provider(self) -> str:
        return "scripted"

    @property
    def turns(self) -> tuple[ScriptedTurn, ...]:
        return self._turns

    def caller_lines(self) -> list[str]:
        return [turn.caller for turn in self._turns if turn.caller is not None]

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.requests += 1
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )

    def next_step(self, chat_ctx: llm.ChatContext) -> tuple[tuple[int, int], Step, ScriptView]:
        """The step that answers this context, with its (turn, step) position."""
        items = chat_ctx.items
        user_positions = [
            i for i, item in enumerate(items) if item.type == "message" and item.role == "user"
        ]
        turn_index = len(user_positions) - (0 if self._greets else 1)
        if turn_index < 0:
            raise ScriptError("the agent speaks first, but the script has no greeting turn")
        if turn_index >= len(self._turns):
            raise ScriptError(f"no scripted turn for caller message #{len(user_positions)}")
        turn = self._turns[turn_index]
        since = user_positions[-1] + 1 if user_positions else 0
        if turn.caller is not None:
            said = items[user_positions[-1]]
            assert isinstance(said, llm.ChatMessage)
            if (said.text_content or "").strip() != turn.caller.strip():
                raise ScriptError(f"caller said {said.text_content!r}, script has {turn.caller!r}")
        calls_made = sum(1 for item in items[since:] if item.type == "function_call")
        step_index = _step_after(turn, calls_made)
        outputs = {item.name: item for item in items if isinstance(item, llm.FunctionCallOutput)}
        return (turn_index, step_index), turn.steps[step_index], ScriptView(outputs=outputs)

    def fail_or_skip(self, position: tuple[int, int], step: Step) -> tuple[tuple[int, int], Step]:
        """Raise a Fail step's error while it has failures left; past spent ones, the next step."""
        turn_index, step_index = position
        steps = self._turns[turn_index].steps
        while isinstance(step, Fail):
            seen = self._failures.get((turn_index, step_index), 0)
            if seen < step.times:
                self._failures[(turn_index, step_index)] = seen + 1
                raise step.error
            step_index += 1
            if step_index >= len(steps):
                raise ScriptError("a Fail step needs a step after it to answer the retry")
            step = steps[step_index]
        return (turn_index, step_index), step


def _step_after(turn: ScriptedTurn, calls_made: int) -> int:
    consumed = 0
    for index, step in enumerate(turn.steps):
        if consumed == calls_made:
            return index
        if isinstance(step, CallTools):
            consumed += len(step.calls)
    raise ScriptError(
        f"turn {turn.caller!r} has no step after {calls_made} tool calls"
        if consumed != calls_made
        else f"turn {turn.caller!r} ran out of steps"
    )


_call_ids = itertools.count(1)


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        scripted = self._llm
        assert isinstance(scripted, ScriptedLLM)
        position, step, view = scripted.next_step(self._chat_ctx)
        position, step = scripted.fail_or_skip(position, step)
        request_id = f"scripted-{position[0]}-{position[1]}"
        if isinstance(step, Reply):
            text = step.text(view) if callable(step.text) else step.text
            delta = llm.ChoiceDelta(role="assistant", content=text)
        else:
            assert isinstance(step, CallTools)
            delta = llm.ChoiceDelta(
                role="assistant",
                tool_calls=[
                    llm.FunctionToolCall(
                        name=call.name,
                        arguments=json.dumps(
                            dict(
                                call.arguments(view) if callable(call.arguments) else call.arguments
                            )
                        ),
                        call_id=f"scripted_call_{next(_call_ids)}",
                    )
                    for call in step.calls
                ],
            )
        self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))


def connection_drop(message: str = "scripted LLM connection dropped") -> APIError:
    """A retryable model failure, as a provider outage looks to AgentSession."""
    return APIConnectionError(message, retryable=True)


def model_outage(message: str = "scripted LLM outage") -> APIError:
    """A non-retryable model failure: AgentSession reports it as unrecoverable at once."""
    return APIConnectionError(message, retryable=False)
