"""Text calls for agent tests: the real agent, tools, breakers and handoff, scripted LLM turns.

Only the model is scripted (devtools/scripted_llm.py). The vendors are the sandbox over loopback
HTTP and the handoff talks to a real Temporal dev server, with a real worker when a test needs the
follow-up to run. Tests assert each turn with LiveKit's testing API: `say()` returns the
turn's RunResult, whose `expect` walks the tool calls, their outputs and the replies in order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, JobContext, llm
from livekit.agents.voice.run_result import (
    ChatMessageAssert,
    FunctionCallAssert,
    FunctionCallOutputAssert,
    RunResult,
)
from temporalio.testing import WorkflowEnvironment

from agent.entrypoint import agent_for, build_runtime, new_call_session
from agent.services import AgentRuntime, CallServices
from agent.session_end import CallLifecycle, register_call
from config.clock import Clock, system_clock
from config.settings import Settings
from contracts.models import Trialist
from devtools.people import DANA
from devtools.scripted_llm import ScriptedLLM, ScriptedTurn
from tests.servers import SandboxServer
from worker import run_worker


def temporal_target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def agent_settings(
    *,
    sandbox: SandboxServer,
    data_dir: Path,
    task_queue: str,
    temporal_address: str,
    **overrides: Any,
) -> Settings:
    """Settings for one test: its sandbox, Temporal, queue and data dir, with short timeouts."""
    values: dict[str, Any] = {
        "sandbox_url": sandbox.url,
        "temporal_address": temporal_address,
        "temporal_task_queue": task_queue,
        "data_dir": data_dir,
        "worker_metrics_port": 0,
        "worker_connect_attempts": 2,
        "worker_shutdown_grace_seconds": 1.0,
        "outbox_relay_interval_seconds": 0.2,
        "tool_deadline_seconds": 1.5,
        "filler_after_seconds": 0.5,
        "booking_wait_seconds": 3.0,
        "handoff_timeout_seconds": 1.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def running_worker(settings: Settings, *, clock: Clock = system_clock) -> AsyncIterator[None]:
    """The production worker (worker.run_worker) on the test's task queue."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop, ready=ready.set, clock=clock))
    try:
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # the worker failed to start: raise its error
        assert waiter in done, "the worker did not start within 30 s"
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


# Settings for this test with some fields overridden (the `settings_for` fixture).
SettingsFor = Callable[..., Settings]


@dataclass(kw_only=True)
class TextCall:
    """One call in a text AgentSession. Each turn's RunResult (LiveKit's testing API) holds what
    the agent said and which tools ran, in order; `greeting` is the agent's first turn."""

    services: CallServices
    session: AgentSession[CallServices]
    lifecycle: CallLifecycle
    scripted: ScriptedLLM
    greeting: RunResult[None]
    closed: asyncio.Event  # set by the session's close event: a run does not report the hang-up

    def agent_lines(self) -> list[str]:
        """All the agent said in the call, from LiveKit's chat history: what a turn whose run
        failed (the session-error goodbye) cannot show in a RunResult."""
        return [
            item.text_content or ""
            for item in self.session.history.items
            if isinstance(item, llm.ChatMessage) and item.role == "assistant"
        ]

    async def say(self, line: str) -> RunResult[None]:
        """The caller says `line`; returns the agent's whole turn once it has finished."""
        return await self.session.run(user_input=line)

    async def play(self, lines: Sequence[str] | None = None) -> list[RunResult[None]]:
        """The caller says each line (the script's by default) until the call closes."""
        results = []
        for line in self.scripted.caller_lines() if lines is None else lines:
            if self.closed.is_set():
                break
            results.append(await self.say(line))
        return results

    async def wait_closed(self) -> None:
        async with asyncio.timeout(10):
            await self.closed.wait()


def spoken(message: ChatMessageAssert) -> str:
    """The text of an assistant message that `result.expect` matched."""
    return message.event().item.text_content or ""


def tool_seconds(call: FunctionCallAssert, output: FunctionCallOutputAssert) -> float:
    """How long a tool ran: LiveKit stamps the call when the model makes it, the output when the
    tool returns."""
    assert output.event().item.call_id == call.event().item.call_id, "not this call's output"
    return output.event().item.created_at - call.event().item.created_at


@asynccontextmanager
async def text_call(
    runtime: AgentRuntime,
    turns: Sequence[ScriptedTurn],
    *,
    call_id: str,
    trialist: Trialist = DANA,
    job: JobContext | None = None,
) -> AsyncIterator[TextCall]:
    """Start a call; the greeting turn (the script's first) has run when the body starts.

    With `job`, the call is registered on that JobContext as the entrypoint does, so LiveKit's
    on_session_end (agent.session_end.hand_off_outcome) finds it.
    """
    services = runtime.services_for(call_id=call_id, trialist=trialist)
    scripted = ScriptedLLM(turns)
    registered = register_call(job, services) if job is not None else None
    session, lifecycle = new_call_session(services, lifecycle=registered, llm_model=scripted)
    closed = asyncio.Event()
    session.on("close", lambda _: closed.set())
    async with session:
        # The agent speaks first (on_enter): its run is the greeting turn.
        greeting = await session.start(agent=agent_for(services), capture_run=True)
        yield TextCall(
            services=services,
            session=session,
            lifecycle=lifecycle,
            scripted=scripted,
            greeting=greeting,
            closed=closed,
        )


@asynccontextmanager
async def agent_runtime(
    settings: Settings, *, clock: Clock = system_clock
) -> AsyncIterator[AgentRuntime]:
    """The agent's process runtime; `clock` is its calendar (pass the sandbox's pinned clock)."""
    runtime = build_runtime(settings, clock=clock)
    await runtime.start_background()
    try:
        yield runtime
    finally:
        await runtime.aclose()


def new_call_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def call_on(
    settings: Settings,
    turns: Sequence[ScriptedTurn],
    *,
    call_id: str | None = None,
    trialist: Trialist = DANA,
    clock: Clock = system_clock,
) -> AsyncIterator[TextCall]:
    """A fresh runtime (clients, breakers, handoff) and one call on it."""
    async with (
        agent_runtime(settings, clock=clock) as runtime,
        text_call(runtime, turns, call_id=call_id or new_call_id(), trialist=trialist) as call,
    ):
        yield call
