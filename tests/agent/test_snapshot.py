"""Conversation state: validated changes, snapshots, and undo of a failed tool's changes only."""

from __future__ import annotations

import asyncio
import copy
import random
from datetime import UTC, datetime, timedelta

import pytest
from livekit.agents import ToolError
from prometheus_client import CollectorRegistry

from agent.call_state import ConversationState, Stage
from agent.resilience.breaker import BreakerRegistry
from agent.resilience.guard import RealtimeGuard
from contracts.models import (
    MAX_NOTES,
    BookingConfirmation,
    BookingRequest,
    CallOutcome,
    EndedReason,
    Trialist,
)
from integrations.errors import TransientError

TRIALIST = Trialist(
    email="dana@example.com", name="Dana Reyes", trial_account_id="acct-1", company="Acme"
)
SLOT = datetime(2030, 5, 6, 15, 0, tzinfo=UTC)


def request(call_id: str = "call-1") -> BookingRequest:
    return BookingRequest(call_id=call_id, slot_start=SLOT, guest=TRIALIST)


def state_with_history() -> ConversationState:
    state = ConversationState()
    state.set_stage(Stage.QUALIFYING)
    state.record_signal("team_size", 12)
    state.record_signal("Use case", "sales proposals")
    state.add_note("Uses Word templates today.")
    return state


def test_signals_are_validated_and_convert_to_the_contract() -> None:
    state = state_with_history()
    state.record_signal("decision-role", "VP of Sales")
    state.record_signal("budget", "approved for Q3")
    signals = state.qualification_signals()
    assert signals.team_size == 12
    assert signals.use_case == "sales proposals"
    assert signals.decision_role == "VP of Sales"
    assert signals.extras == {"budget": "approved for Q3"}

    with pytest.raises(ValueError, match="team_size"):
        state.record_signal("team_size", "a dozen or so")
    with pytest.raises(ValueError, match="signal name"):
        state.record_signal("", "x")
    with pytest.raises(ValueError, match="needs a value"):
        state.record_signal("timeline", "   ")
    assert state.qualification_signals().team_size == 12, "a refused value changes nothing"


def test_notes_respect_the_contract_limits() -> None:
    state = ConversationState()
    for index in range(MAX_NOTES):
        state.add_note(f"note {index}")
    with pytest.raises(ValueError, match="maximum"):
        state.add_note("one too many")
    with pytest.raises(ValueError, match="characters"):
        ConversationState().add_note("x" * 1001)


def test_outcome_fields_build_a_valid_call_outcome() -> None:
    state = state_with_history()
    state.request_meeting(request())
    now = datetime.now(
        UTC
    )  # a timestamp on a record, not a calendar decision: the wall clock is fine
    outcome = CallOutcome(
        call_id="call-1",
        trialist=TRIALIST,
        started_at=now - timedelta(minutes=4),
        ended_at=now,
        ended_reason=EndedReason.COMPLETED,
        **state.outcome_fields(),
    )
    assert outcome.signals.team_size == 12
    assert outcome.notes == ["Uses Word templates today."]
    assert outcome.requested_meeting == request()


def test_snapshot_and_restore_put_the_whole_state_back() -> None:
    state = state_with_history()
    snapshot = state.snapshot()
    state.set_stage(Stage.SCHEDULING)
    state.record_signal("team_size", 40)
    state.add_note("Wants a demo.")
    state.request_meeting(request())
    state.confirm_booking(BookingConfirmation(meeting_id="m-1", slot_start=SLOT))

    state.restore(snapshot)
    assert state.stage is Stage.QUALIFYING
    assert state.signals == {"team_size": "12", "use_case": "sales proposals"}
    assert state.notes == ("Uses Word templates today.",)
    assert state.requested_meeting is None and state.booking is None


def test_state_and_snapshots_are_deep_copy_safe() -> None:
    state = state_with_history()
    clone = copy.deepcopy(state)
    snapshot = copy.deepcopy(state.snapshot())
    clone.add_note("only in the clone")
    clone.record_signal("timeline", "this quarter")
    assert state.notes == ("Uses Word templates today.",)
    assert "timeline" not in state.signals
    state.signals["team_size"] = "999"  # a copy: the state itself cannot be changed this way
    assert state.signals["team_size"] == "12"
    assert snapshot == state.snapshot()


async def test_a_failed_tool_leaves_the_state_as_it_was() -> None:
    state = state_with_history()
    before = state.snapshot()
    with pytest.raises(RuntimeError):
        async with state.transaction():
            state.set_stage(Stage.SCHEDULING)
            state.request_meeting(request())
            state.add_note("Asked for Tuesday.")
            raise RuntimeError("the handoff failed midway")
    assert state.snapshot() == before


async def test_a_successful_tool_keeps_its_changes() -> None:
    state = state_with_history()
    async with state.transaction():
        state.set_stage(Stage.SCHEDULING)
        state.request_meeting(request())
    assert state.stage is Stage.SCHEDULING
    assert state.requested_meeting == request()


async def test_state_is_restored_after_a_guarded_vendor_call_fails() -> None:
    state = state_with_history()
    before = state.snapshot()
    realtime = RealtimeGuard(
        breakers=BreakerRegistry(registry=CollectorRegistry()), rng=random.Random(1)
    )

    async def chilipiper_down() -> list[str]:
        raise TransientError("unavailable", vendor="chilipiper", operation="free_slots")

    with pytest.raises(ToolError), state.transaction():
        state.set_stage(Stage.SCHEDULING)
        state.add_note("Prefers mornings.")
        await realtime.call("chilipiper", chilipiper_down, deadline=0.3)
    assert state.snapshot() == before


async def test_a_failed_tool_does_not_undo_a_tool_running_beside_it() -> None:
    state = state_with_history()
    started = asyncio.Event()
    recorded = asyncio.Event()

    async def risky_booking() -> None:
        async with state.transaction():
            state.set_stage(Stage.SCHEDULING)
            state.add_note("Asked for Tuesday.")
            started.set()
            await recorded.wait()
            raise ToolError("that didn't go through")

    async def record_signal() -> None:
        await started.wait()
        state.record_signal("timeline", "this quarter")
        state.add_note("Budget is approved.")
        recorded.set()

    results = await asyncio.gather(risky_booking(), record_signal(), return_exceptions=True)
    assert isinstance(results[0], ToolError) and results[1] is None
    assert state.stage is Stage.QUALIFYING
    assert state.notes == ("Uses Word templates today.", "Budget is approved.")
    assert state.signals["timeline"] == "this quarter"


async def test_nested_transactions_undo_inner_then_outer() -> None:
    state = ConversationState()
    with pytest.raises(KeyError), state.transaction():
        state.add_note("outer")
        with pytest.raises(ValueError), state.transaction():
            state.add_note("inner, rolled back")
            raise ValueError
        with state.transaction():
            state.add_note("inner, kept until the outer fails")
        assert state.notes == ("outer", "inner, kept until the outer fails")
        raise KeyError
    assert state.notes == ()


def test_repr_has_no_personal_data() -> None:
    state = state_with_history()
    state.record_signal("decision_role", "Dana, the CFO")
    text = repr(state)
    assert "Dana" not in text and "Word" not in text and "12" not in text
