"""How a call ends: session errors, hang-ups and drops all hand the outcome off exactly once."""

from __future__ import annotations

import logging

import pytest
from livekit.agents import CloseReason
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from agent.session_end import GOODBYE_ON_ERROR
from config.settings import Settings
from contracts.models import CallOutcome, EndedReason
from contracts.names import CALL_ENDED_SIGNAL, workflow_id_for
from devtools.scripted_llm import Fail, Reply, ScriptedTurn, connection_drop, model_outage
from tests.agent.call_harness import TextCall, call_on, spoken

GREETING = ScriptedTurn(None, Reply("Hi Dana, this is Sam from PandaDoc. Got a minute?"))


async def _signalled_outcomes(env: WorkflowEnvironment, call_id: str) -> list[CallOutcome]:
    """Every call_ended the workflow received, read back from its history."""
    handle = env.client.get_workflow_handle(workflow_id_for(call_id))
    outcomes: list[CallOutcome] = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        signal = event.workflow_execution_signaled_event_attributes
        if signal.signal_name != CALL_ENDED_SIGNAL:
            continue
        # History payloads are encrypted: decode them through the client's codec.
        (outcome,) = await env.client.data_converter.decode(
            list(signal.input.payloads), [CallOutcome]
        )
        outcomes.append(outcome)
    return outcomes


async def test_a_recoverable_model_error_is_logged_and_the_call_carries_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    turns = [
        GREETING,
        ScriptedTurn("Hello?", Fail(connection_drop(), times=1), Reply("Sorry, go on.")),
    ]
    caplog.set_level(logging.WARNING, logger="agent.session_end")
    async with call_on(settings, turns) as call:
        result = await call.say("Hello?")
        # The retried model call answered: the turn is just the reply, with no goodbye in it.
        assert spoken(result.expect.next_event().is_message(role="assistant")) == "Sorry, go on."
        result.expect.no_more_events()
        assert call.agent_lines()[-1] == "Sorry, go on."
        assert not call.closed.is_set()
        assert call.services.ended_reason is None
    assert GOODBYE_ON_ERROR not in call.agent_lines()
    assert any("recoverable llm_error" in record.getMessage() for record in caplog.records)


async def test_an_unrecoverable_model_error_says_goodbye_and_sends_agent_error(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    turns = [GREETING, ScriptedTurn("Tell me more.", Fail(model_outage(), times=1))]
    async with call_on(settings, turns) as call:
        try:
            await call.say("Tell me more.")
        except Exception as error:  # the failed turn may surface the model's error: expected
            assert "outage" in str(error) or "closed" in str(error)
        await call.wait_closed()
        handoff = await call.lifecycle.finish()

    assert call.agent_lines()[-1] == GOODBYE_ON_ERROR
    assert handoff is not None and handoff.status.value == "delivered"
    (outcome,) = await _signalled_outcomes(dev_env, call.services.call.call_id)
    assert outcome.ended_reason is EndedReason.AGENT_ERROR


@pytest.mark.parametrize(
    ("close_reason", "ended_reason"),
    [
        (CloseReason.PARTICIPANT_DISCONNECTED, EndedReason.CALLER_HUNG_UP),
        (CloseReason.JOB_SHUTDOWN, EndedReason.DROPPED),
    ],
)
async def test_a_hang_up_or_a_drop_hands_the_outcome_off_exactly_once(
    settings: Settings,
    dev_env: WorkflowEnvironment,
    close_reason: CloseReason,
    ended_reason: EndedReason,
) -> None:
    turns = [GREETING, ScriptedTurn("We're nine people.", Reply("Nice!"))]
    async with call_on(settings, turns) as call:
        result = await call.say("We're nine people.")
        assert spoken(result.expect.next_event().is_message(role="assistant")) == "Nice!"
        _close_like_livekit(call, close_reason)
        await call.wait_closed()
        first = await call.lifecycle.finish()
        # Every other way the end is noticed (the job's shutdown callback, a second close).
        again = await call.lifecycle.finish(EndedReason.COMPLETED)
    assert first is again
    assert first is not None and first.status.value == "delivered"
    outcomes = await _signalled_outcomes(dev_env, call.services.call.call_id)
    assert [outcome.ended_reason for outcome in outcomes] == [ended_reason]


def _close_like_livekit(call: TextCall, reason: CloseReason) -> None:
    # What RoomIO does when the caller leaves the room, and what a job shutdown does.
    call.session._close_soon(reason=reason)
