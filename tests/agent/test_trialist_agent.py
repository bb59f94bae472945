"""PandaDocTrialistAgent end to end: a scripted LLM drives the real session, tools and handoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from livekit.agents import CloseReason
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from agent.call_state import Stage
from agent.resilience.breaker import BreakerState
from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from agent.resilience.filler import FILLER_LINES
from agent.trialist_agent import offered_start_times, pick_slots, spoken_time
from config.settings import Settings
from contracts.models import EndedReason, FollowUpProgress, FollowUpStatus
from contracts.names import PROGRESS_QUERY, workflow_id_for
from devtools.people import DANA, MARCO
from devtools.scripted_llm import (
    CallTools,
    Reply,
    ScriptedTurn,
    ScriptView,
    ToolCall,
    speak_tool_output,
)
from handoff.outbox import Outbox
from tests.agent.call_harness import (
    agent_runtime,
    agent_settings,
    call_on,
    new_call_id,
    running_worker,
    temporal_target,
    text_call,
)
from tests.servers import SandboxServer, free_port

GREETING = ScriptedTurn(None, Reply("Hi Dana, this is Sam from PandaDoc. Got a minute?"))


def _signal(name: str, value: str) -> ToolCall:
    return ToolCall("record_qualification_signal", {"name": name, "value": value})


def _first_offered(view: ScriptView) -> dict[str, object]:
    return {"start_time": offered_start_times(view.output("find_meeting_times"))[0][1]}


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> SettingsFor:
    """Settings for this test's sandbox, queue and data dir; Temporal is the dev server."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"temporal_address": temporal_target(dev_env), **overrides}
        return agent_settings(sandbox=sandbox, data_dir=tmp_path, task_queue=task_queue, **values)

    return make


# --- the happy path -------------------------------------------------------------------------------


async def test_happy_path_books_during_the_call_and_the_follow_up_completes(
    settings_for: SettingsFor, sandbox: SandboxServer, dev_env: WorkflowEnvironment
) -> None:
    settings = settings_for()
    call_id = new_call_id()
    turns = [
        ScriptedTurn(
            None,
            CallTools(ToolCall("lookup_trial_activity")),
            speak_tool_output("lookup_trial_activity"),
        ),
        ScriptedTurn(
            "We're twelve people sending sales proposals.",
            CallTools(_signal("team_size", "12"), _signal("use_case", "sales proposals")),
            Reply("Great. What do you use today?"),
        ),
        ScriptedTurn(
            "Google Docs. I decide, and we want to switch this quarter.",
            CallTools(
                _signal("current_tool", "Google Docs"),
                _signal("decision_role", "decision maker"),
                _signal("timeline", "this quarter"),
            ),
            Reply("Would a call with a rep help?"),
        ),
        ScriptedTurn(
            "Yes, what times do you have?",
            CallTools(ToolCall("find_meeting_times")),
            speak_tool_output("find_meeting_times"),
        ),
        ScriptedTurn(
            "The first one.",
            CallTools(ToolCall("book_meeting", _first_offered)),
            speak_tool_output("book_meeting"),
        ),
        ScriptedTurn("Thanks, bye!", CallTools(ToolCall("end_call")), Reply("Goodbye, Dana!")),
    ]
    clock = sandbox.clock
    async with (
        running_worker(settings, clock=clock),
        agent_runtime(settings, clock=clock) as runtime,
    ):
        async with text_call(runtime, turns, call_id=call_id) as call:
            await call.play()
            await call.wait_closed()
        handoff = await call.lifecycle.finish()

        # What the caller heard: their activity, three times, and the confirmation.
        lines = call.agent_lines()
        assert "52 documents" in lines[0]
        offered = offered_start_times(call.outputs("find_meeting_times")[0].output)
        assert len(offered) == 3
        booked = call.outputs("book_meeting")[0]
        assert not booked.is_error
        assert booked.output.startswith(f"Booked for {offered[0][0]}.")
        assert any(line.startswith(f"Booked for {offered[0][0]}") for line in lines)
        assert lines[-1] == "Goodbye, Dana!"

        # What was handed off: a completed call with every signal and the confirmed booking.
        assert handoff is not None and handoff.status.value == "delivered"
        outcome = call.lifecycle.outcome
        assert outcome is not None
        assert outcome.ended_reason is EndedReason.COMPLETED
        assert outcome.signals.team_size == 12
        assert outcome.signals.decision_role == "decision maker"
        assert outcome.booking is not None
        assert outcome.booking.slot_start == datetime.fromisoformat(offered[0][1])

        # The follow-up ran to completion in the worker, and the meeting exists exactly once.
        handle = dev_env.client.get_workflow_handle(workflow_id_for(call_id))
        progress = await _await_status(dev_env, call_id, FollowUpStatus.COMPLETED)
        assert progress.booking is not None
        assert progress.booking.meeting_id == outcome.booking.meeting_id
        await handle.result()
    meetings = [
        m
        for m in sandbox.state()["chilipiper_meetings"]
        if m.get("guest_email") == DANA.email and m.get("status") == "Active"
    ]
    assert len(meetings) == 1


async def _await_status(
    env: WorkflowEnvironment, call_id: str, status: FollowUpStatus
) -> FollowUpProgress:
    handle = env.client.get_workflow_handle(workflow_id_for(call_id))
    deadline = time.monotonic() + 30
    progress: FollowUpProgress | None = None
    while True:
        try:
            progress = await handle.query(PROGRESS_QUERY, result_type=FollowUpProgress)
        except RPCError:  # not started yet (a relay may still be delivering the start)
            progress = None
        if progress is not None and progress.status is status:
            return progress
        assert time.monotonic() < deadline, f"follow-up not {status}: {progress}"
        await asyncio.sleep(0.2)


# --- Amplitude down: the breaker opens, then refuses without touching the network ---------------


async def test_amplitude_down_opens_the_breaker_and_the_next_lookup_fails_fast(
    settings_for: SettingsFor, sandbox: SandboxServer
) -> None:
    settings = settings_for(breaker_failure_threshold=3, breaker_reset_seconds=60)
    # Exactly three failing answers: a fourth request that reached Amplitude would succeed.
    sandbox.add_fault(
        vendor="amplitude", operation="user_profile", error_rate=1.0, status=503, times=3
    )
    lookup = ToolCall("lookup_trial_activity")
    turns = [
        GREETING,
        *[
            ScriptedTurn(line, CallTools(lookup), speak_tool_output("lookup_trial_activity"))
            for line in ("How am I doing?", "Can you look again?", "And once more?")
        ],
    ]
    async with agent_runtime(settings) as runtime:
        breaker = runtime.breakers.get("amplitude")
        async with text_call(runtime, turns, call_id=new_call_id()) as call:
            await call.say("How am I doing?")
            await call.say("Can you look again?")
            # Shared breakers open on the store's answer to the third failure (a millisecond).
            for _ in range(200):
                if breaker.state is BreakerState.OPEN:
                    break
                await asyncio.sleep(0.005)
            assert breaker.state is BreakerState.OPEN
            assert _faults(sandbox, "amplitude") == []  # all three failures were spent
            turn_seconds = await call.say("And once more?")

    outputs = call.outputs("lookup_trial_activity")
    assert all(output.is_error for output in outputs)
    # The fourth request never left the process: it would have succeeded, and it was instant.
    assert outputs[-1].output in FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE]
    assert call.tool_seconds["lookup_trial_activity"][-1] < 0.05
    assert turn_seconds < 0.5
    # The spoken fallback is what the agent said next, in a natural sentence.
    assert call.agent_lines()[-1] == outputs[-1].output


def _faults(sandbox: SandboxServer, vendor: str) -> list[dict[str, object]]:
    import httpx2

    response = httpx2.get(f"{sandbox.url}/__sandbox/faults", timeout=5)
    response.raise_for_status()
    return [fault for fault in response.json() if fault["vendor"] == vendor]


# --- a hung vendor: the tool answers by its deadline, with filler speech first --------------------


async def test_hung_vendor_answers_by_the_deadline_after_a_filler_line(
    settings_for: SettingsFor, sandbox: SandboxServer
) -> None:
    settings = settings_for(tool_deadline_seconds=1.2, filler_after_seconds=0.4)
    sandbox.add_fault(vendor="chilipiper", operation="init_simple", hang=True)
    turns = [
        GREETING,
        ScriptedTurn(
            "What times are open?",
            CallTools(ToolCall("find_meeting_times")),
            speak_tool_output("find_meeting_times"),
        ),
    ]
    async with call_on(settings, turns) as call:
        await call.say("What times are open?")

    (output,) = call.outputs("find_meeting_times")
    assert output.is_error
    assert output.output in FALLBACK_LINES[FallbackKind.TIMEOUT]
    elapsed = call.tool_seconds["find_meeting_times"][0]
    assert 1.2 - 0.05 <= elapsed <= 1.2 + 0.25, elapsed
    lines = call.agent_lines()
    filler = [line for line in lines if line in FILLER_LINES]
    assert len(filler) == 1
    assert lines.index(filler[0]) < lines.index(output.output)


# --- state restore after a failed tool ----------------------------------------------------------


async def test_a_failed_tool_leaves_the_conversation_state_as_it_was(
    settings_for: SettingsFor, sandbox: SandboxServer
) -> None:
    settings = settings_for()
    sandbox.add_fault(vendor="chilipiper", operation="*", error_rate=1.0, status=503)
    turns = [
        GREETING,
        ScriptedTurn(
            "We're a team of five.",
            CallTools(_signal("team_size", "5")),
            Reply("Thanks! Want to talk to a rep?"),
        ),
        ScriptedTurn(
            "Sure, when?",
            CallTools(ToolCall("find_meeting_times")),
            speak_tool_output("find_meeting_times"),
        ),
        ScriptedTurn(
            "Yesterday at noon then.",
            CallTools(ToolCall("book_meeting", {"start_time": "2020-01-01T12:00:00-05:00"})),
            speak_tool_output("book_meeting"),
        ),
    ]
    async with call_on(settings, turns) as call:
        await call.say("We're a team of five.")
        before = call.services.state.snapshot()
        assert before.stage is Stage.QUALIFYING
        await call.say("Sure, when?")
        # find_meeting_times moved to scheduling, then failed: the move was undone.
        assert call.outputs("find_meeting_times")[0].is_error
        assert call.services.state.snapshot() == before
        await call.say("Yesterday at noon then.")
        refused = call.outputs("book_meeting")[0]
        assert refused.is_error and "too soon" in refused.output
        assert call.services.state.snapshot() == before
        assert call.services.state.requested_meeting is None


# --- tools' own validation ------------------------------------------------------------------


async def test_qualification_signals_are_validated_and_unknown_names_kept_as_extras(
    settings_for: SettingsFor,
) -> None:
    settings = settings_for()
    turns = [
        GREETING,
        ScriptedTurn(
            "About a dozen of us, budget is tight.",
            CallTools(_signal("team_size", "a dozen"), _signal("budget", "tight")),
            Reply("Got it."),
        ),
        ScriptedTurn(
            "Twelve, to be exact.", CallTools(_signal("team size", "12")), Reply("Thanks.")
        ),
    ]
    async with call_on(settings, turns) as call:
        await call.play()

    bad, extra, fixed = call.outputs("record_qualification_signal")
    assert bad.is_error and "team_size" in bad.output and "Fix the name or value" in bad.output
    assert not extra.is_error
    assert not fixed.is_error
    signals = call.services.state.qualification_signals()
    assert signals.team_size == 12
    assert signals.extras == {"budget": "tight"}


# --- spoken times -------------------------------------------------------------------------------


def test_times_are_spoken_in_the_callers_timezone() -> None:
    zone = ZoneInfo("America/Los_Angeles")
    now = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)  # Monday 8 AM in Los Angeles
    assert spoken_time(datetime(2025, 6, 3, 17, 0, tzinfo=UTC), now=now, zone=zone) == (
        "tomorrow at 10 AM"
    )
    assert spoken_time(datetime(2025, 6, 5, 21, 30, tzinfo=UTC), now=now, zone=zone) == (
        "Thursday at 2:30 PM"
    )
    assert spoken_time(datetime(2025, 6, 12, 16, 0, tzinfo=UTC), now=now, zone=zone) == (
        "Thursday, June 12 at 9 AM"
    )


def test_offered_slots_spread_over_days_and_respect_the_preference() -> None:
    zone = ZoneInfo("America/New_York")
    now = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)  # Monday 8 AM in New York
    slots = [
        datetime(2025, 6, day, hour, tzinfo=zone).astimezone(UTC)
        for day in (2, 3, 4)
        for hour in (9, 10, 11, 14, 15)
    ]
    chosen = pick_slots(slots, now=now, zone=zone, day=None, time_of_day="any")
    assert [slot.astimezone(zone).day for slot in chosen] == [2, 3, 4]
    assert len({slot.astimezone(zone).hour for slot in chosen}) == 3
    afternoons = pick_slots(slots, now=now, zone=zone, day="Wednesday", time_of_day="afternoon")
    assert [(s.astimezone(zone).day, s.astimezone(zone).hour) for s in afternoons] == [
        (4, 14),
        (4, 15),
    ]
    # Too soon to prepare for: the 8:10 AM slot today is not offered.
    soon = [now + timedelta(minutes=10)]
    assert pick_slots(soon, now=now, zone=zone, day=None, time_of_day="any") == []


# --- Temporal down: the handoffs wait in the outbox, then the relay delivers them once ---------


async def test_temporal_down_queues_booking_and_outcome_then_the_relay_delivers_once(
    settings_for: SettingsFor, sandbox: SandboxServer, dev_env: WorkflowEnvironment
) -> None:
    down = settings_for(temporal_address=f"127.0.0.1:{free_port()}")
    call_id = new_call_id()
    turns = [
        GREETING,
        ScriptedTurn(
            "What times are open?",
            CallTools(ToolCall("find_meeting_times")),
            speak_tool_output("find_meeting_times"),
        ),
        ScriptedTurn(
            "The first one.",
            CallTools(ToolCall("book_meeting", _first_offered)),
            speak_tool_output("book_meeting"),
        ),
    ]
    async with call_on(down, turns, call_id=call_id, trialist=MARCO, clock=sandbox.clock) as call:
        await call.play()
        # The caller hangs up (what RoomIO does when they leave the room).
        call.session._close_soon(reason=CloseReason.PARTICIPANT_DISCONNECTED)
        await call.wait_closed()
        started = time.monotonic()
        handoff = await call.lifecycle.finish()
        hang_up_seconds = time.monotonic() - started

    # The caller heard an honest promise, not a confirmation.
    booked = call.outputs("book_meeting")[0]
    assert not booked.is_error
    assert booked.output.startswith("Requested ")
    assert "invite will follow by email" in booked.output
    assert call.agent_lines()[-1] == booked.output
    # Both handoffs wait in the outbox, booking first; the hang-up stayed inside its budget.
    assert handoff is not None and handoff.status.value == "queued"
    assert hang_up_seconds < 3.0
    outbox = Outbox.in_dir(down.data_dir)
    pending = outbox.pending_for(call_id)
    # The outcome carries the queued booking's request, so it alone waits: nothing is lost.
    assert [message.kind.value for message in pending] == ["call_ended"]
    assert pending[0].call_outcome().ended_reason is EndedReason.CALLER_HUNG_UP
    assert pending[0].call_outcome().requested_meeting is not None

    # Temporal is back: a fresh agent process (same data dir) relays them; the worker finishes.
    up = settings_for()
    async with running_worker(up, clock=sandbox.clock), agent_runtime(up, clock=sandbox.clock):
        progress = await _await_status(dev_env, call_id, FollowUpStatus.COMPLETED)
    assert outbox.pending_count(call_id) == 0
    assert progress.booking is not None and progress.booking.meeting_id
    meetings = [
        m
        for m in sandbox.state()["chilipiper_meetings"]
        if m.get("guest_email") == MARCO.email and m.get("status") == "Active"
    ]
    assert len(meetings) == 1
    outcomes = [
        event
        async for event in dev_env.client.get_workflow_handle(
            workflow_id_for(call_id)
        ).fetch_history_events()
        if event.workflow_execution_signaled_event_attributes.signal_name == "call_ended"
    ]
    assert len(outcomes) == 1
