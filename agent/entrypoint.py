"""The LiveKit entrypoint: an AgentServer whose rtc_session runs one PandaDocTrialistAgent call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from livekit.agents import (
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    TurnHandlingOptions,
    llm,
    stt,
    tts,
    vad,
)
from livekit.agents.types import NOT_GIVEN
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.providers import build_models, load_vad
from agent.resilience.breaker import BreakerRegistry
from agent.services import AgentRuntime, CallServices
from agent.session_end import (
    ANSWER_TIMEOUT_SECONDS,
    SESSION_END_TIMEOUT_SECONDS,
    CallerLine,
    CallLifecycle,
    attach_call_handlers,
    hand_off_outcome,
    register_call,
    wait_for_answer,
)
from agent.trialist_agent import PandaDocTrialistAgent
from config.clock import Clock, system_clock
from config.settings import Settings, get_settings
from contracts.models import CallId, EndedReason, Trialist
from contracts.outreach import OutreachDispatch
from devtools.people import CONSOLE_TRIALIST
from handoff.follow_up import FollowUpHandoff
from integrations.clients import build_vendor_clients

logger = logging.getLogger(__name__)

AGENT_NAME = "pandadoc-trialist"
RUNTIME_KEY = "trialist_runtime"
VAD_KEY = "trialist_vad"

# The console has no dispatch metadata; it talks as CONSOLE_TRIALIST, a person the sandbox seeds
# (devtools/people.py, the one source of the seeded people).


# A call dispatch is a few hundred bytes; far more is not one.
MAX_DISPATCH_CHARS = 16 * 1024


class CallDispatch(BaseModel):
    """The job metadata of a dispatched call: `{"call_id": ..., "trialist": {...}}`.

    An outbound call also names the SIP participant the dialer created (the agent waits for it
    to answer before it speaks), and `"outreach": {...}` when an outreach placed the call (its
    workflow id, voicemail setting).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    call_id: CallId
    trialist: Trialist
    sip_participant_identity: str | None = None
    outreach: OutreachDispatch | None = None


def build_runtime(settings: Settings, *, clock: Clock = system_clock) -> AgentRuntime:
    """What the process shares across calls: vendor clients, breakers and the Temporal handoff.

    `clock` is the calls' calendar (the wall clock; a pinned one in tests and demos).
    """
    clients = build_vendor_clients(settings, clock=clock)
    return AgentRuntime(
        settings=settings,
        clock=clock,
        trial_activity=clients.amplitude,
        slots=clients.chilipiper,
        handoff=FollowUpHandoff.from_settings(settings),
        breakers=BreakerRegistry.from_settings(settings),
        clients=clients,
    )


def new_call_session(
    services: CallServices,
    *,
    lifecycle: CallLifecycle | None = None,
    llm_model: llm.LLM[Any],
    stt_model: stt.STT[Any] | None = None,
    tts_model: tts.TTS[Any] | None = None,
    vad_model: vad.VAD | None = None,
) -> tuple[AgentSession[CallServices], CallLifecycle]:
    """An AgentSession for one call with its handlers wired; text-only when no speech models."""
    turn_handling = (
        TurnHandlingOptions() if vad_model is not None else TurnHandlingOptions(turn_detection=None)
    )
    session: AgentSession[CallServices] = AgentSession[CallServices](
        llm=llm_model,
        stt=stt_model if stt_model is not None else NOT_GIVEN,
        tts=tts_model if tts_model is not None else NOT_GIVEN,
        vad=vad_model,
        userdata=services,
        turn_handling=turn_handling,
        # One step per tool round; a call needs no more than a few in a row.
        max_tool_steps=4,
    )
    return session, attach_call_handlers(session, services, lifecycle)


def agent_for(services: CallServices) -> PandaDocTrialistAgent:
    person = services.call.trialist
    return PandaDocTrialistAgent(first_name=person.first_name, company=person.company)


def read_dispatch(metadata: str, *, fallback_call_id: str) -> CallDispatch:
    """The call to make from job metadata; an empty one (console) talks to CONSOLE_TRIALIST."""
    if not metadata.strip():
        return CallDispatch(call_id=fallback_call_id, trialist=CONSOLE_TRIALIST)
    if len(metadata) > MAX_DISPATCH_CHARS:
        raise ValueError(f"job metadata is not a call dispatch (over {MAX_DISPATCH_CHARS} chars)")
    try:
        # pydantic's JSON parser: bounded nesting, no RecursionError, no NaN surprises.
        return CallDispatch.model_validate_json(metadata)
    except ValidationError as error:
        # Field names only: the metadata carries personal data.
        problem = ", ".join(
            ".".join(str(part) for part in item["loc"]) or "not JSON"
            for item in error.errors(include_input=False)
        )
        raise ValueError(f"job metadata is not a call dispatch ({problem})") from None


# --- the AgentServer ----------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """Once per job process: settings, vendor clients, breakers, handoff and the VAD model."""
    settings = get_settings()
    proc.userdata[RUNTIME_KEY] = build_runtime(settings)
    proc.userdata[VAD_KEY] = load_vad()
    logger.info("agent process warmed: vendors and breakers ready")


def build_server(settings: Settings) -> AgentServer:
    """The worker: prewarmed job processes, the call entrypoint, on_session_end, one metrics port.

    With AGENT_METRICS_PORT set, LiveKit's worker serves /metrics for every job process of the
    host (prometheus-client's multiprocess mode, in a directory of its own under DATA_DIR).
    """
    port = settings.agent_metrics_port or None
    metrics_dir = (settings.data_dir / "prometheus").resolve() if port else None
    server = AgentServer(
        shutdown_process_timeout=10.0,
        session_end_timeout=SESSION_END_TIMEOUT_SECONDS,
        prometheus_port=port,
        prometheus_multiproc_dir=str(metrics_dir) if metrics_dir else None,
    )
    server.setup_fnc = prewarm
    server.rtc_session(rtc_entrypoint, agent_name=AGENT_NAME, on_session_end=hand_off_outcome)
    return server


async def rtc_entrypoint(ctx: JobContext) -> None:
    """One call: its services and session, the agent, and the outcome handoff at the end."""
    runtime: AgentRuntime = ctx.proc.userdata.get(RUNTIME_KEY) or build_runtime(get_settings())
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    dispatch = read_dispatch(ctx.job.metadata, fallback_call_id=f"console-{stamp}")
    ctx.log_context_fields = {"call_id": dispatch.call_id}
    services = runtime.services_for(
        call_id=dispatch.call_id, trialist=dispatch.trialist, outreach=dispatch.outreach
    )
    # From here on the outcome leaves however the job ends (on_session_end, or the backstop).
    lifecycle = register_call(ctx, services)
    try:
        await runtime.start_background()
        await run_call(ctx, runtime, services, lifecycle, dispatch)
    except Exception:
        services.mark_ended(EndedReason.AGENT_ERROR)
        raise


async def run_call(
    ctx: JobContext,
    runtime: AgentRuntime,
    services: CallServices,
    lifecycle: CallLifecycle,
    dispatch: CallDispatch,
) -> None:
    """Wait for an outbound callee to answer, then build the call's session and start the agent."""
    callee = dispatch.sip_participant_identity
    if callee is not None:
        await ctx.connect()
        if not await wait_for_answer(ctx.room, callee, within=ANSWER_TIMEOUT_SECONDS):
            lifecycle.never_answered()
            ctx.shutdown(reason="the callee never answered")
            return
    models = build_models(runtime.settings)
    session, _ = new_call_session(
        services,
        lifecycle=lifecycle,
        llm_model=models.llm,
        stt_model=models.stt,
        tts_model=models.tts,
        vad_model=ctx.proc.userdata.get(VAD_KEY),
    )
    CallerLine(room=ctx.room, session=session, services=services, identity=callee).attach()
    session.on("close", lambda event: ctx.shutdown(reason=f"session closed: {event.reason.value}"))
    await session.start(agent=agent_for(services), room=ctx.room)
