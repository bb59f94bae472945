"""Every way a call ends hands its outcome off once, through LiveKit's on_session_end.

The job is a real LiveKit JobContext (livekit.agents.testing.fake_job_context); the outcome goes
to a real Temporal dev server and is read back from the workflow's history. A LiveKit room can't
run here, so the caller's participant is a labelled stand-in carrying what LiveKit reports (its
identity, SIP call status and disconnect reason), emitted on a real rtc.Room.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from livekit import rtc
from livekit.agents import CloseReason
from livekit.agents.testing import fake_job_context
from temporalio.testing import WorkflowEnvironment

from agent.entrypoint import (
    AGENT_NAME,
    RUNTIME_KEY,
    CallDispatch,
    build_server,
    rtc_entrypoint,
    run_call,
)
from agent.session_end import (
    CALLS_KEY,
    SESSION_END_TIMEOUT_SECONDS,
    CallerLine,
    hand_off_outcome,
    register_call,
    wait_for_answer,
)
from config.settings import Settings
from contracts.models import EndedReason
from devtools.people import DANA
from devtools.scripted_llm import Reply, ScriptedTurn
from tests.agent.call_harness import (
    agent_runtime,
    new_call_id,
    spoken,
    text_call,
)
from tests.agent.test_session_errors import _signalled_outcomes

GREETING = ScriptedTurn(None, Reply("Hi Dana, this is Sam from PandaDoc. Got a minute?"))
TURNS = [GREETING, ScriptedTurn("We're nine people.", Reply("Nice!"))]


@dataclass
class StandInParticipant:
    """Stands in for a LiveKit RemoteParticipant: only what the code under test reads."""

    identity: str
    disconnect_reason: int = rtc.DisconnectReason.UNKNOWN_REASON
    attributes: dict[str, str] = field(default_factory=dict)


async def outcome_reasons(env: WorkflowEnvironment, call_id: str) -> list[EndedReason]:
    return [outcome.ended_reason for outcome in await _signalled_outcomes(env, call_id)]


@pytest.mark.parametrize(
    ("close_reason", "ended_reason"),
    [
        # The caller hangs up: RoomIO closes the session.
        (CloseReason.PARTICIPANT_DISCONNECTED, EndedReason.CALLER_HUNG_UP),
        # A worker draining on SIGTERM shuts its jobs down: the session closes with the job.
        (CloseReason.JOB_SHUTDOWN, EndedReason.DROPPED),
    ],
)
async def test_a_hang_up_or_a_draining_worker_hands_off_once_on_session_end(
    settings: Settings,
    dev_env: WorkflowEnvironment,
    close_reason: CloseReason,
    ended_reason: EndedReason,
) -> None:
    call_id = new_call_id()
    with fake_job_context(job_id=f"job-{call_id}") as ctx:
        async with (
            agent_runtime(settings) as runtime,
            text_call(runtime, TURNS, call_id=call_id, job=ctx) as call,
        ):
            result = await call.say("We're nine people.")
            assert spoken(result.expect.next_event().is_message(role="assistant")) == "Nice!"
            result.expect.no_more_events()
            call.session._close_soon(reason=close_reason)  # what RoomIO / the job shutdown do
            await call.wait_closed()
            await hand_off_outcome(ctx)  # LiveKit's on_session_end
            again = await call.lifecycle.finish()  # the shutdown callback, after it
        assert ctx.proc.userdata[CALLS_KEY] == {}
    assert again is not None and again.status.value == "delivered"
    assert await outcome_reasons(dev_env, call_id) == [ended_reason]


async def test_a_dropped_caller_who_does_not_come_back_ends_the_call_as_dropped(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    call_id = new_call_id()
    room = rtc.Room()
    with fake_job_context(job_id=f"job-{call_id}", room=room) as ctx:
        async with (
            agent_runtime(settings) as runtime,
            text_call(runtime, TURNS, call_id=call_id, job=ctx) as call,
        ):
            CallerLine(room=room, session=call.session, services=call.services, grace=0.3).attach()
            result = await call.say("We're nine people.")
            assert spoken(result.expect.next_event().is_message(role="assistant")) == "Nice!"
            lost = StandInParticipant("caller", rtc.DisconnectReason.CONNECTION_TIMEOUT)
            room.emit("participant_disconnected", lost)
            await call.wait_closed()  # RoomIO alone would wait for the caller forever
            await hand_off_outcome(ctx)
    assert await outcome_reasons(dev_env, call_id) == [EndedReason.DROPPED]


async def test_a_caller_who_comes_back_within_the_grace_keeps_the_call(
    settings: Settings,
) -> None:
    room = rtc.Room()
    async with (
        agent_runtime(settings) as runtime,
        text_call(runtime, TURNS, call_id=new_call_id()) as call,
    ):
        CallerLine(room=room, session=call.session, services=call.services, grace=0.3).attach()
        room.emit(
            "participant_disconnected",
            StandInParticipant("caller", rtc.DisconnectReason.SIGNAL_CLOSE),
        )
        await asyncio.sleep(0.1)
        room.emit("participant_connected", StandInParticipant("caller"))
        await asyncio.sleep(0.5)
        assert not call.closed.is_set()
        # A hang-up is RoomIO's to close; the line watch leaves it alone.
        room.emit(
            "participant_disconnected",
            StandInParticipant("caller", rtc.DisconnectReason.CLIENT_INITIATED),
        )
        await asyncio.sleep(0.5)
        assert not call.closed.is_set()
        assert call.services.ended_reason is None


async def test_a_sip_callee_who_never_answers_ends_unanswered_on_session_end(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    call_id = new_call_id()
    dispatch = CallDispatch(call_id=call_id, trialist=DANA, sip_participant_identity="sip-dana")
    room = rtc.Room()
    with fake_job_context(job_id=f"job-{call_id}", room=room) as ctx:
        async with agent_runtime(settings) as runtime:
            services = runtime.services_for(call_id=call_id, trialist=DANA)
            lifecycle = register_call(ctx, services)
            running = asyncio.create_task(run_call(ctx, runtime, services, lifecycle, dispatch))
            ringing = {"sip.callStatus": "ringing"}
            room.emit("participant_connected", StandInParticipant("sip-dana", attributes=ringing))
            await asyncio.sleep(0.1)
            # No answer: the SIP service gives up on the callee (busy or no answer).
            room.emit(
                "participant_disconnected",
                StandInParticipant("sip-dana", rtc.DisconnectReason.USER_UNAVAILABLE),
            )
            await asyncio.wait_for(running, 5)
            await hand_off_outcome(ctx)
    assert lifecycle.outcome is not None
    assert lifecycle.outcome.summary.endswith("The call was never answered.")
    assert await outcome_reasons(dev_env, call_id) == [EndedReason.DROPPED]


async def test_waiting_for_an_answer() -> None:
    room = rtc.Room()
    answered = asyncio.create_task(wait_for_answer(room, "sip-1", within=2))
    await asyncio.sleep(0.05)
    room.emit("participant_connected", StandInParticipant("someone-else"))
    callee = StandInParticipant("sip-1", attributes={"sip.callStatus": "ringing"})
    room.emit("participant_connected", callee)
    await asyncio.sleep(0.05)
    assert not answered.done()
    callee.attributes["sip.callStatus"] = "active"
    room.emit("participant_attributes_changed", ["sip.callStatus"], callee)
    assert await answered is True
    # Still ringing at the timeout: not answered.
    assert await wait_for_answer(room, "sip-2", within=0.2) is False


async def test_an_agent_error_in_the_entrypoint_still_hands_off(
    settings: Settings, dev_env: WorkflowEnvironment
) -> None:
    call_id = new_call_id()
    metadata = json.dumps({"call_id": call_id, "trialist": DANA.model_dump(mode="json")})
    with fake_job_context(job_id=f"job-{call_id}", job_metadata=metadata) as ctx:
        async with agent_runtime(settings) as runtime:
            ctx.proc.userdata[RUNTIME_KEY] = runtime
            # No LLM is configured: building the call's models fails after the call is known.
            with pytest.raises(Exception, match="LLM"):
                await rtc_entrypoint(ctx)
            await hand_off_outcome(ctx)
    assert await outcome_reasons(dev_env, call_id) == [EndedReason.AGENT_ERROR]


async def test_on_session_end_with_no_known_call_logs_and_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with fake_job_context(job_id="job-without-call") as ctx:
        await hand_off_outcome(ctx)
    assert "no outcome to hand off" in caplog.text


def test_the_server_hands_off_on_session_end_with_its_own_budget(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, agent_metrics_port=9555)  # type: ignore[call-arg]
    server = build_server(settings)
    assert server._session_end_fnc is hand_off_outcome
    assert server._session_end_timeout == SESSION_END_TIMEOUT_SECONDS > 10
    assert server._agent_name == AGENT_NAME
    # One scrape point per host: the worker serves every job process's metrics.
    assert server._prometheus_port == 9555
    assert server._prometheus_multiproc_dir == str((tmp_path / "prometheus").resolve())
    off = build_server(Settings(_env_file=None, agent_metrics_port=0))  # type: ignore[call-arg]
    assert off._prometheus_port is None and off._prometheus_multiproc_dir is None
