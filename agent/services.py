"""The services a call's tools use, injected as typed userdata whose fields are Protocols."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from agent.call_state import ConversationState
from agent.checkpoints import CallCheckpoints
from agent.resilience.breaker import BreakerRegistry
from agent.resilience.fallbacks import SpokenFallbacks
from agent.resilience.filler import FillerLines
from agent.resilience.guard import RealtimeGuard
from config.clock import Clock, system_clock
from contracts.models import BookingRequest, CallCheckpoint, CallOutcome, EndedReason, Trialist
from contracts.outreach import OptOutRequest, OutreachDispatch
from handoff.follow_up import BookingHandoff, CallEndedHandoff, FollowUpHandoff, OptOutHandoff
from integrations.amplitude import AmplitudeUserProfile
from integrations.chilipiper import ChiliPiperGuest, FreeSlots
from integrations.clients import VendorClients

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from livekit.agents import AgentSession, RunContext, SpeechHandle

    from config.settings import Settings

logger = logging.getLogger(__name__)


class TrialActivitySource(Protocol):
    """Product analytics for a trial account (Amplitude's User Profile API)."""

    async def get_user_profile(self, user_id: str) -> AmplitudeUserProfile: ...


class SlotFinder(Protocol):
    """Free meeting times with a sales rep (ChiliPiper's scheduling link)."""

    async def find_free_slots(self, guest: ChiliPiperGuest, *, timezone: str) -> FreeSlots: ...


class Handoff(Protocol):
    """Hands work to the call's Temporal workflow; never raises for Temporal being down."""

    def call_started(self, call_id: str, *, trialist: Trialist, started_at: datetime) -> None: ...

    async def checkpoint(self, checkpoint: CallCheckpoint) -> object: ...

    async def book_meeting(self, request: BookingRequest, *, wait: float) -> BookingHandoff: ...

    async def call_ended(self, outcome: CallOutcome) -> CallEndedHandoff: ...

    async def opt_out(self, request: OptOutRequest, *, wait: float) -> OptOutHandoff: ...


@dataclass(frozen=True, kw_only=True)
class CallInfo:
    """Who is on the call and since when."""

    call_id: str
    trialist: Trialist
    started_at: datetime
    # Set when an outreach placed the call (its dispatch metadata): the voicemail setting.
    outreach: OutreachDispatch | None = None

    def guest(self) -> ChiliPiperGuest:
        person = self.trialist
        return ChiliPiperGuest(
            email=person.email,
            first_name=person.first_name,
            last_name=person.last_name,
            company=person.company,
            phone=person.phone,
            timezone=person.timezone,
        )


@dataclass(kw_only=True, eq=False)
class CallServices:
    """The userdata of one call's AgentSession: everything its tools touch."""

    call: CallInfo
    state: ConversationState
    trial_activity: TrialActivitySource
    slots: SlotFinder
    handoff: Handoff
    guard: RealtimeGuard
    fillers: FillerLines
    booking_wait_seconds: float
    filler_after_seconds: float
    clock: Clock = system_clock
    # Tells the follow-up what the call learns while it talks (None: a test without them).
    checkpoints: CallCheckpoints | None = None
    # How the call is ending, once known (end_call, an agent error); the first verdict stands.
    ended_reason: EndedReason | None = None
    _session: AgentSession[Any] | None = field(default=None, repr=False)

    def bind_session(self, session: AgentSession[Any]) -> None:
        """Speak filler lines through this session while a slow tool runs."""
        self._session = session

    def mark_ended(self, reason: EndedReason) -> None:
        if self.ended_reason is None:
            self.ended_reason = reason

    def filler(self, context: RunContext[Any]) -> AbstractAsyncContextManager[None]:
        """LiveKit's filler around a slow step of one tool: one line after FILLER_AFTER_SECONDS
        of silence (it waits for the session to be idle, so it never talks over anyone)."""
        return context.with_filler(
            self._filler_line, delay=self.filler_after_seconds, interval=None, max_steps=1
        )

    def _filler_line(self, _step: int) -> SpeechHandle | None:
        if self._session is None:
            return None
        try:
            return self._session.say(self.fillers.next(), add_to_chat_ctx=True)
        except RuntimeError:
            logger.info("call %s: session closing, filler not spoken", self.call.call_id)
            return None


@dataclass(kw_only=True, eq=False)
class AgentRuntime:
    """What a worker process shares across calls: settings, vendor clients, breakers, handoff."""

    settings: Settings
    trial_activity: TrialActivitySource
    slots: SlotFinder
    handoff: FollowUpHandoff
    breakers: BreakerRegistry
    clients: VendorClients | None = None
    rng: random.Random = field(default_factory=random.Random)
    clock: Clock = system_clock

    async def start_background(self) -> None:
        """Start, in this event loop (idempotent), the outbox relay and the breakers' store sync."""
        await self.breakers.start()
        await self.handoff.start_relay()

    async def aclose(self) -> None:
        await self.breakers.aclose()
        await self.handoff.aclose()
        if self.clients is not None:
            await self.clients.aclose()

    def services_for(
        self,
        *,
        call_id: str,
        trialist: Trialist,
        clock: Clock | None = None,
        outreach: OutreachDispatch | None = None,
    ) -> CallServices:
        """Fresh per-call state, fallbacks and fillers over the process's shared clients."""
        clock = clock or self.clock
        fillers = FillerLines(rng=self.rng)
        guard = RealtimeGuard.from_settings(
            self.settings,
            breakers=self.breakers,
            fallbacks=SpokenFallbacks(rng=self.rng),
            rng=self.rng,
        )
        started_at = clock()
        state = ConversationState()
        self.handoff.call_started(call_id, trialist=trialist, started_at=started_at)
        return CallServices(
            call=CallInfo(
                call_id=call_id, trialist=trialist, started_at=started_at, outreach=outreach
            ),
            state=state,
            trial_activity=self.trial_activity,
            slots=self.slots,
            handoff=self.handoff,
            guard=guard,
            fillers=fillers,
            booking_wait_seconds=self.settings.booking_wait_seconds,
            filler_after_seconds=self.settings.filler_after_seconds,
            clock=clock,
            checkpoints=CallCheckpoints(
                call_id=call_id,
                state=state,
                sink=self.handoff,
                clock=clock,
                interval=self.settings.checkpoint_interval_seconds,
                keepalive=self.settings.checkpoint_keepalive_seconds,
            ),
        )
