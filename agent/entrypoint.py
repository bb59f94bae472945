"""The LiveKit entrypoint: an AgentServer whose rtc_session runs one PandaDocTrialistAgent call."""

from __future__ import annotations

import json
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
from agent.session_end import CallLifecycle, attach_call_handlers
from agent.trialist_agent import PandaDocTrialistAgent
from config.settings import Settings, get_settings
from contracts.models import CallId, Trialist
from contracts.outreach import OutreachDispatch
from handoff.follow_up import FollowUpHandoff
from integrations.clients import build_vendor_clients

logger = logging.getLogger(__name__)

AGENT_NAME = "pandadoc-trialist"
RUNTIME_KEY = "trialist_runtime"
MAX_METADATA_CHARS = 8000  # the dispatch's limit in integrations.livekit
VAD_KEY = "trialist_vad"

# The console has no dispatch metadata; it talks as this sandbox trialist (seeded in sandbox/).
CONSOLE_TRIALIST = Trialist(
    email="priya.natarajan@lumen-studio.example",
    name="Priya Natarajan",
    company="Lumen Studio",
    trial_account_id="trial-1003",
    timezone="America/New_York",
)


class CallDispatch(BaseModel):
    """The job metadata of a dispatched call: `{"call_id": ..., "trialist": {...}}`, and
    `"outreach": {...}` when an outreach placed the call (its workflow id, voicemail setting)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    call_id: CallId
    trialist: Trialist
    outreach: OutreachDispatch | None = None


def build_runtime(settings: Settings) -> AgentRuntime:
    """What the process shares across calls: vendor clients, breakers and the Temporal handoff."""
    clients = build_vendor_clients(settings)
    return AgentRuntime(
        settings=settings,
        trial_activity=clients.amplitude,
        slots=clients.chilipiper,
        handoff=FollowUpHandoff.from_settings(settings),
        breakers=BreakerRegistry.from_settings(settings),
        clients=clients,
    )


def new_call_session(
    services: CallServices,
    *,
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
    return session, attach_call_handlers(session, services)


def agent_for(services: CallServices) -> PandaDocTrialistAgent:
    person = services.call.trialist
    return PandaDocTrialistAgent(first_name=person.first_name, company=person.company)


def read_dispatch(metadata: str, *, fallback_call_id: str) -> CallDispatch:
    """The call to make from job metadata; an empty one (console) talks to CONSOLE_TRIALIST."""
    if not metadata.strip():
        return CallDispatch(call_id=fallback_call_id, trialist=CONSOLE_TRIALIST)
    if len(metadata) > MAX_METADATA_CHARS:
        raise ValueError(f"job metadata is not a call dispatch (over {MAX_METADATA_CHARS} chars)")
    try:
        return CallDispatch.model_validate(json.loads(metadata))
    except (json.JSONDecodeError, ValidationError) as error:
        # Field names only: the metadata carries personal data.
        problem = (
            "not JSON"
            if isinstance(error, json.JSONDecodeError)
            else ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors())
        )
        raise ValueError(f"job metadata is not a call dispatch ({problem})") from None


# --- the AgentServer ----------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """Once per job process: settings, vendor clients, breakers, handoff and the VAD model."""
    settings = get_settings()
    proc.userdata[RUNTIME_KEY] = build_runtime(settings)
    proc.userdata[VAD_KEY] = load_vad()
    logger.info("agent process warmed: vendors and breakers ready")


server = AgentServer(shutdown_process_timeout=10.0)
server.setup_fnc = prewarm


@server.rtc_session(agent_name=AGENT_NAME)
async def rtc_entrypoint(ctx: JobContext) -> None:
    """One call: its services and session, the agent, and the outcome handoff at the end."""
    runtime: AgentRuntime = ctx.proc.userdata.get(RUNTIME_KEY) or build_runtime(get_settings())
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    dispatch = read_dispatch(ctx.job.metadata, fallback_call_id=f"console-{stamp}")
    ctx.log_context_fields = {"call_id": dispatch.call_id}
    await runtime.start_background()
    models = build_models(runtime.settings)
    services = runtime.services_for(
        call_id=dispatch.call_id, trialist=dispatch.trialist, outreach=dispatch.outreach
    )
    session, lifecycle = new_call_session(
        services,
        llm_model=models.llm,
        stt_model=models.stt,
        tts_model=models.tts,
        vad_model=ctx.proc.userdata.get(VAD_KEY),
    )

    async def send_outcome(_reason: str) -> None:
        await lifecycle.finish()

    # Runs on every way the job ends (hang-up, drop, shutdown), inside LiveKit's 10 s limit.
    ctx.add_shutdown_callback(send_outcome)
    session.on("close", lambda event: ctx.shutdown(reason=f"session closed: {event.reason.value}"))
    await session.start(agent=agent_for(services), room=ctx.room)
