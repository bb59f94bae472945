"""PandaDocTrialistAgent end to end: a scripted LLM drives the real session, tools and handoff.

Each turn is asserted with LiveKit's testing API (RunResult.expect): which tools ran, with what
arguments, what they answered and what the agent said, in order.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from livekit.agents import CloseReason
from livekit.agents.voice.run_result import (
    FunctionCallAssert,
    FunctionCallOutputAssert,
    RunResult,
    mock_tools,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from agent.call_state import Stage
from agent.resilience.breaker import BreakerState
from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from agent.resilience.filler import FILLER_LINES
from agent.session_end import build_outcome
from agent.trialist_agent import (
    PandaDocTrialistAgent,
    offered_start_times,
    pick_slots,
    spoken_time,
)
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
    SettingsFor,
    agent_runtime,
    call_on,
    new_call_id,
    running_worker,
    spoken,
    text_call,
    tool_seconds,
)
from tests.servers import SandboxServer, free_port

GREETING = ScriptedTurn(None, Reply("Hi Dana, this is Sam from PandaDoc. Got a minute?"))


def _signal(name: str, value: str) -> ToolCall:
    return ToolCall("record_qualification_signal", {"name": name, "value": value})


def _first_offered(view: ScriptView) -> dict[str, object]:
    return {"start_time": offered_start_times(view.output("find_meeting_times"))[0][1]}


def expect_signals_saved(result: RunResult[None], signals: dict[str, str]) -> str:
    """The turn saved each signal (the calls in order, then their outputs), then the agent said
    one line, returned."""
    for name, value in signals.items():
        result.expect.next_event().is_function_call(
            name="record_qualification_signal", arguments={"name": name, "value": value}
        )
    for _ in signals:
        result.expect.next_event().is_function_call_output(is_error=False)
    said = spoken(result.expect.next_event().is_message(role="assistant"))
    result.expect.no_more_events()
    return said


def expect_spoken_refusal(
    result: RunResult[None], tool: str, arguments: dict[str, Any] | None = None
) -> tuple[FunctionCallAssert, FunctionCallOutputAssert]:
    """The turn called `tool` (with `arguments`, if given), which answered with a ToolError line
    that the agent said next.

    A filler line may come between, when the vendor's retries outlast the silence.
    """
    call = result.expect.next_event().is_function_call(name=tool, arguments=arguments or {})
    if filler := result.expect.skip_next_event_if(type="message", role="assistant"):
        assert spoken(filler) in FILLER_LINES
    output = result.expect.next_event().is_function_call_output(is_error=True)
    said = result.expect.next_event().is_message(role="assistant")
    assert spoken(said) == output.event().item.output
    result.expect.no_more_events()
    return call, output


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
            team, tool, asked, chosen, bye = await call.play()
            await call.wait_closed()
        handoff = await call.lifecycle.finish()

        # What the caller heard, turn by turn, ending with the goodbye.
        offered = expect_the_happy_conversation(call.greeting, team, tool, asked, chosen, bye)
        assert call.agent_lines()[-1] == "Goodbye, Dana!"

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


def expect_the_happy_conversation(
    greeting_turn: RunResult[None],
    team: RunResult[None],
    tool: RunResult[None],
    asked: RunResult[None],
    chosen: RunResult[None],
    bye: RunResult[None],
) -> list[tuple[str, str]]:
    """The happy call's turns, from the activity lookup to the goodbye; returns the offers."""
    # Their activity, looked up as the agent starts.
    greeting = greeting_turn.expect
    greeting.next_event().is_agent_handoff(new_agent_type=PandaDocTrialistAgent)
    greeting.next_event().is_function_call(name="lookup_trial_activity")
    greeting.next_event().is_function_call_output(is_error=False)
    assert "52 documents" in spoken(greeting.next_event().is_message(role="assistant"))
    greeting.no_more_events()
    # Every qualifying answer saved as it was heard.
    expect_signals_saved(team, {"team_size": "12", "use_case": "sales proposals"})
    expect_signals_saved(
        tool,
        {
            "current_tool": "Google Docs",
            "decision_role": "decision maker",
            "timeline": "this quarter",
        },
    )
    # Three times offered and said.
    asked.expect.next_event().is_function_call(name="find_meeting_times")
    found = asked.expect.next_event().is_function_call_output(is_error=False)
    offered = offered_start_times(found.event().item.output)
    assert len(offered) == 3
    said = spoken(asked.expect.next_event().is_message(role="assistant"))
    assert said == found.event().item.output
    asked.expect.no_more_events()
    # The first one booked at its exact start, and the confirmation said at once.
    chosen.expect.next_event().is_function_call(
        name="book_meeting", arguments={"start_time": offered[0][1]}
    )
    booked = chosen.expect.next_event().is_function_call_output(is_error=False)
    assert booked.event().item.output.startswith(f"Booked for {offered[0][0]}.")
    confirmed = spoken(chosen.expect.next_event().is_message(role="assistant"))
    assert confirmed.startswith(f"Booked for {offered[0][0]}")
    chosen.expect.no_more_events()
    # The goodbye, and nothing after it.
    bye.expect.next_event().is_function_call(name="end_call")
    bye.expect.next_event().is_function_call_output(is_error=False)
    assert spoken(bye.expect.next_event().is_message(role="assistant")) == "Goodbye, Dana!"
    bye.expect.no_more_events()
    return offered


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
            first = await call.say("How am I doing?")
            second = await call.say("Can you look again?")
            # Shared breakers open on the store's answer to the third failure (a millisecond).
            for _ in range(200):
                if breaker.state is BreakerState.OPEN:
                    break
                await asyncio.sleep(0.005)
            assert breaker.state is BreakerState.OPEN
            assert _faults(sandbox, "amplitude") == []  # all three failures were spent
            started = time.monotonic()
            third = await call.say("And once more?")
            turn_seconds = time.monotonic() - started

    # Each lookup failed with a spoken fallback, which is what the agent said next.
    expect_spoken_refusal(first, "lookup_trial_activity")
    expect_spoken_refusal(second, "lookup_trial_activity")
    lookup, refused = expect_spoken_refusal(third, "lookup_trial_activity")
    # The fourth request never left the process: it would have succeeded, and it was instant.
    assert refused.event().item.output in FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE]
    assert tool_seconds(lookup, refused) < 0.05
    assert turn_seconds < 0.5


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
        result = await call.say("What times are open?")

    search = result.expect.next_event().is_function_call(name="find_meeting_times")
    # One filler line while the tool waits, then the tool's fallback at its deadline, then that
    # fallback said.
    assert spoken(result.expect.next_event().is_message(role="assistant")) in FILLER_LINES
    output = result.expect.next_event().is_function_call_output(is_error=True)
    fallback = output.event().item.output
    assert fallback in FALLBACK_LINES[FallbackKind.TIMEOUT]
    elapsed = tool_seconds(search, output)
    assert 1.2 - 0.05 <= elapsed <= 1.2 + 0.25, elapsed
    assert spoken(result.expect.next_event().is_message(role="assistant")) == fallback
    result.expect.no_more_events()
    assert sum(line in FILLER_LINES for line in call.agent_lines()) == 1


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
        five = await call.say("We're a team of five.")
        assert expect_signals_saved(five, {"team_size": "5"}) == "Thanks! Want to talk to a rep?"
        before = call.services.state.snapshot()
        assert before.stage is Stage.QUALIFYING
        search = await call.say("Sure, when?")
        # find_meeting_times moved to scheduling, then failed: the move was undone.
        _, failed = expect_spoken_refusal(search, "find_meeting_times")
        assert failed.event().item.output in FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE]
        assert call.services.state.snapshot() == before
        booking = await call.say("Yesterday at noon then.")
        yesterday = {"start_time": "2020-01-01T12:00:00-05:00"}
        _, refused = expect_spoken_refusal(booking, "book_meeting", yesterday)
        assert "too soon" in refused.event().item.output
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
        dozen, twelve = await call.play()

    signal = "record_qualification_signal"
    dozen.expect.next_event().is_function_call(
        name=signal, arguments={"name": "team_size", "value": "a dozen"}
    )
    dozen.expect.next_event().is_function_call(
        name=signal, arguments={"name": "budget", "value": "tight"}
    )
    bad = dozen.expect.next_event().is_function_call_output(is_error=True).event().item.output
    assert "team_size" in bad and "Fix the name or value" in bad
    dozen.expect.next_event().is_function_call_output(is_error=False)  # an extra, kept
    assert spoken(dozen.expect.next_event().is_message(role="assistant")) == "Got it."
    dozen.expect.no_more_events()
    assert expect_signals_saved(twelve, {"team size": "12"}) == "Thanks."
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
        asked, chosen = await call.play()
        # The caller hangs up (what RoomIO does when they leave the room).
        call.session._close_soon(reason=CloseReason.PARTICIPANT_DISCONNECTED)
        await call.wait_closed()
        started = time.monotonic()
        handoff = await call.lifecycle.finish()
        hang_up_seconds = time.monotonic() - started

    # The caller heard an honest promise, not a confirmation, for the time they chose.
    asked.expect.next_event().is_function_call(name="find_meeting_times")
    found = asked.expect.next_event().is_function_call_output(is_error=False).event().item
    chosen.expect.next_event().is_function_call(
        name="book_meeting", arguments={"start_time": offered_start_times(found.output)[0][1]}
    )
    booked = chosen.expect.next_event().is_function_call_output(is_error=False).event().item
    assert booked.output.startswith("Requested ")
    assert "invite will follow by email" in booked.output
    assert spoken(chosen.expect.next_event().is_message(role="assistant")) == booked.output
    chosen.expect.no_more_events()
    assert call.agent_lines()[-1] == booked.output  # nothing said after the hang-up either
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


async def test_a_tool_that_crashes_costs_one_answer_not_the_call(settings_for: SettingsFor) -> None:
    """A bug in a tool (forced with LiveKit's mock_tools) is one failed answer: the caller hears
    the agent go on, the next tool works, and what the call learned still reaches its outcome."""

    def crashing_lookup() -> str:
        raise RuntimeError("a bug in the tool")

    turns = [
        GREETING,
        ScriptedTurn(
            "We're a team of five.",
            CallTools(_signal("team_size", "5")),
            Reply("Thanks! Let me check your trial."),
        ),
        ScriptedTurn(
            "How am I doing?",
            CallTools(ToolCall("lookup_trial_activity")),
            Reply("I can't see that right now. What do you use PandaDoc for?"),
        ),
        ScriptedTurn(
            "Sales proposals.",
            CallTools(_signal("use_case", "sales proposals")),
            Reply("Got it."),
        ),
    ]
    async with call_on(settings_for(), turns) as call:
        five = await call.say("We're a team of five.")
        assert expect_signals_saved(five, {"team_size": "5"}) == "Thanks! Let me check your trial."
        with mock_tools(PandaDocTrialistAgent, {"lookup_trial_activity": crashing_lookup}):
            crashed = await call.say("How am I doing?")
        crashed.expect.next_event().is_function_call(name="lookup_trial_activity")
        crashed.expect.next_event().is_function_call_output(is_error=True)
        said = spoken(crashed.expect.next_event().is_message(role="assistant"))
        assert said == "I can't see that right now. What do you use PandaDoc for?"
        crashed.expect.no_more_events()
        assert not call.closed.is_set()
        use_case = await call.say("Sales proposals.")
        assert expect_signals_saved(use_case, {"use_case": "sales proposals"}) == "Got it."
        outcome = build_outcome(call.services, EndedReason.CALLER_HUNG_UP)
    assert outcome.signals.team_size == 5
    assert outcome.signals.use_case == "sales proposals"
