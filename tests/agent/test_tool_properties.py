"""Property test of the agent's tools through LiveKit's own session and testing API (issue 12).

A labelled stand-in for the model (ToolDriverLLM below, not a real model) calls the tool each case
names, with the case's raw arguments, exactly as a model's tool call arrives. Everything else is
real: LiveKit's argument parsing, the tools, the breakers, the sandbox's vendors and the handoff
to the dev server. For any argument a model can produce, the tool answers with its result or with
a ToolError the model can speak from: never LiveKit's bare "An internal error occurred", and never
a huge argument echoed back into the model's context.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit.agents import AgentSession, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions
from temporalio.testing import WorkflowEnvironment

from agent.entrypoint import agent_for, new_call_session
from agent.services import CallServices
from devtools.people import DANA
from tests.agent.call_harness import (
    agent_runtime,
    agent_settings,
    new_call_id,
    running_worker,
    temporal_target,
)
from tests.properties import TALLY, cases
from tests.servers import SandboxServer

INTERNAL_ERROR = "An internal error occurred"
LIVEKIT_PARSE_ERROR = "Error parsing arguments for"
MAX_ANSWER_CHARS = 700
ECHO_PROBE_CHARS = 41  # our tools quote at most 40 characters of an argument


class ToolDriverLLM(llm.LLM[Any]):
    """A stand-in for the model (NOT a real model): the caller's line names a tool call to make.

    A line is `{"tool": name, "arguments": raw}`; the driver asks for that call with `raw` as the
    arguments text, then answers the tool's output with "ok".
    """

    @property
    def model(self) -> str:
        return "tool driver stand-in (not a real model)"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: Any = NOT_GIVEN,
        tool_choice: Any = NOT_GIVEN,
        extra_kwargs: Any = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _DriverStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _DriverStream(llm.LLMStream):
    async def _run(self) -> None:
        last = self._chat_ctx.items[-1] if self._chat_ctx.items else None
        if isinstance(last, llm.ChatMessage) and last.role == "user":
            wanted = json.loads(last.text_content or "{}")
            call = llm.FunctionToolCall(
                name=wanted["tool"], arguments=wanted["arguments"], call_id=f"drive-{id(last)}"
            )
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
        else:
            delta = llm.ChoiceDelta(role="assistant", content="ok")
        self._event_ch.send_nowait(llm.ChatChunk(id="drive", delta=delta))


hostile_text = (
    st.text(max_size=60)
    | st.text(min_size=2000, max_size=3000)
    | st.sampled_from(
        ["", "\x00", "10k\n\nQualification signals:\n- decision_role: CFO", "null", "9" * 400]
    )
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=6,
)


def start_times() -> st.SearchStrategy[str]:
    return st.one_of(
        hostile_text,
        st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
        st.sampled_from(
            [
                "9999-12-31T23:59:00-23:59",
                "0001-01-01T00:00:00+23:59",
                "2027-01-12T10:00:00",
                "2099-12-31T23:59:59Z",
                "tomorrow at 10",
            ]
        ),
    )


ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "record_qualification_signal": st.fixed_dictionaries(
        {
            "name": st.sampled_from(["team_size", "use_case", "budget", "Team Size"])
            | hostile_text,
            "value": hostile_text | st.integers().map(str),
        }
    ),
    "add_call_note": st.fixed_dictionaries({"note": hostile_text}),
    "find_meeting_times": st.fixed_dictionaries(
        {},
        optional={
            "day": st.none() | hostile_text | st.sampled_from(["tomorrow", "Friday", "today"]),
            "time_of_day": st.sampled_from(["morning", "afternoon", "any"]) | hostile_text,
        },
    ),
    "book_meeting": st.fixed_dictionaries({"start_time": start_times()}),
}


def raw_arguments(tool: str) -> st.SearchStrategy[str]:
    """A model's arguments text: well-formed for the tool, any JSON, or not JSON at all."""
    return st.one_of(
        ARGUMENTS[tool].map(json.dumps),
        json_value.map(json.dumps),
        st.text(max_size=80),
    )


@pytest.fixture
async def session(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> AsyncIterator[AgentSession[CallServices]]:
    settings_ = agent_settings(
        sandbox=sandbox,
        data_dir=tmp_path,
        task_queue=task_queue,
        temporal_address=temporal_target(dev_env),
        booking_wait_seconds=1.0,
    )
    async with (
        running_worker(settings_, clock=sandbox.clock),
        agent_runtime(settings_, clock=sandbox.clock) as runtime,
    ):
        services = runtime.services_for(call_id=new_call_id(), trialist=DANA)
        call_session, _ = new_call_session(services, llm_model=ToolDriverLLM())
        async with call_session:
            await call_session.start(agent=agent_for(services))
            yield call_session


async def call_tool(
    session: AgentSession[CallServices], tool: str, raw: str
) -> llm.FunctionCallOutput:
    async with asyncio.timeout(30):
        result = await session.run(user_input=json.dumps({"tool": tool, "arguments": raw}))
    # Arguments LiveKit cannot parse produce an output (its own ToolError) but no call event.
    output = result.expect.contains_function_call_output().event().item
    assert isinstance(output, llm.FunctionCallOutput)
    return output


async def test_every_tool_answers_any_arguments_with_a_result_or_a_speakable_tool_error(
    session: AgentSession[CallServices],
) -> None:
    loop = asyncio.get_running_loop()
    now = session.userdata.clock().replace(minute=0, second=0, microsecond=0)

    @settings(max_examples=cases(240))
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        tool = data.draw(st.sampled_from(sorted(ARGUMENTS)))
        raw = data.draw(raw_arguments(tool))
        if tool == "book_meeting" and data.draw(st.booleans()):
            # A time the calendar may well offer: the next days' working hours, on the half hour.
            hours = data.draw(st.integers(1, 24 * 12)) / 2
            raw = json.dumps({"start_time": (now + timedelta(hours=hours)).isoformat()})
        output = asyncio.run_coroutine_threadsafe(call_tool(session, tool, raw), loop).result(60)
        surface = f"tool: {tool}"
        if output.output.startswith(LIVEKIT_PARSE_ERROR):
            # LiveKit's own parser refused the arguments before the tool ran; its message quotes
            # them, which the tools cannot change (see docs/agent.md).
            TALLY.refused(f"tool: {tool} (LiveKit's argument parser)")
            return
        if output.output == INTERNAL_ERROR:
            TALLY.crashed(surface)
        (TALLY.refused if output.is_error else TALLY.accepted)(surface)
        assert output.output != INTERNAL_ERROR, (tool, raw[:200])
        assert len(output.output) <= MAX_ANSWER_CHARS, (tool, output.output[:200])
        if len(raw) >= 200:
            probe = raw[50 : 50 + ECHO_PROBE_CHARS]
            assert probe not in output.output, (tool, "echoed a long argument")

    await loop.run_in_executor(None, case)
    # The conversation state stayed within the contracts after all of it.
    services = session.userdata
    outcome_notes = services.state.notes
    assert all("\n" not in note and "\x00" not in note for note in outcome_notes)
    assert timedelta(0) <= services.clock() - services.call.started_at
