"""How a call ends: session errors handled, the CallOutcome built and handed off exactly once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit.agents import AgentSession, CloseEvent, CloseReason, ErrorEvent

from agent.services import CallServices
from contracts.models import MAX_SUMMARY_CHARS, CallOutcome, EndedReason
from handoff.follow_up import CallEndedHandoff

logger = logging.getLogger(__name__)

# LiveKit kills the job process 10 s after shutdown begins; the outcome must be out well before.
SESSION_END_BUDGET_SECONDS = 3.0

GOODBYE_ON_ERROR = (
    "I'm sorry, I'm having some trouble on my end, so I'll let you go for now. "
    "Someone from PandaDoc will follow up by email. Thanks for your time, goodbye!"
)

_REASON_BY_CLOSE: dict[CloseReason, EndedReason] = {
    CloseReason.ERROR: EndedReason.AGENT_ERROR,
    CloseReason.PARTICIPANT_DISCONNECTED: EndedReason.CALLER_HUNG_UP,
    CloseReason.TASK_COMPLETED: EndedReason.COMPLETED,
    CloseReason.USER_INITIATED: EndedReason.DROPPED,
    CloseReason.JOB_SHUTDOWN: EndedReason.DROPPED,
}


class CallLifecycle:
    """Sends the call's outcome once, however the call ends, within the shutdown budget.

    The first of `finish()` (a LiveKit shutdown callback, a test) and the session's close event
    does the work; every later call awaits the same result. The ended reason is the first
    verdict recorded on the call's services (end_call, an agent error), else the close reason.
    """

    def __init__(
        self, *, services: CallServices, budget: float = SESSION_END_BUDGET_SECONDS
    ) -> None:
        self._services = services
        self._budget = budget
        self._task: asyncio.Task[CallEndedHandoff | None] | None = None
        self.outcome: CallOutcome | None = None

    @property
    def finished(self) -> bool:
        return self._task is not None and self._task.done()

    def on_close(self, event: CloseEvent) -> None:
        """The session's `close` handler: start the handoff with the close reason as fallback."""
        self._start(_REASON_BY_CLOSE.get(event.reason, EndedReason.DROPPED))

    async def finish(self, fallback: EndedReason = EndedReason.DROPPED) -> CallEndedHandoff | None:
        """Hand the outcome off (once) and return the handoff's result; None if it failed."""
        return await asyncio.shield(self._start(fallback))

    def _start(self, fallback: EndedReason) -> asyncio.Task[CallEndedHandoff | None]:
        if self._task is None:
            self._services.mark_ended(fallback)
            self._task = asyncio.create_task(self._send(), name="call_ended_handoff")
        return self._task

    async def _send(self) -> CallEndedHandoff | None:
        services = self._services
        if services.checkpoints is not None:
            await services.checkpoints.stop()  # the outcome says all of it now
        reason = services.ended_reason or EndedReason.DROPPED
        outcome = build_outcome(services, reason)
        self.outcome = outcome
        try:
            async with asyncio.timeout(self._budget):
                result = await services.handoff.call_ended(outcome)
        except TimeoutError:
            logger.error(
                "call %s: call_ended handoff overran its %.1fs budget",
                services.call.call_id,
                self._budget,
            )
            return None
        except Exception:
            logger.exception("call %s: call_ended handoff failed", services.call.call_id)
            return None
        logger.info(
            "call %s ended (%s); follow-up %s",
            services.call.call_id,
            reason.value,
            getattr(result, "status", result),
        )
        return result


def build_outcome(services: CallServices, reason: EndedReason) -> CallOutcome:
    """The CallOutcome of the conversation so far."""
    fields = services.state.outcome_fields()
    ended_at = max(services.clock(), services.call.started_at)
    return CallOutcome(
        call_id=services.call.call_id,
        trialist=services.call.trialist,
        started_at=services.call.started_at,
        ended_at=ended_at,
        ended_reason=reason,
        summary=summarize_call(services, reason),
        **fields,
    )


def summarize_call(services: CallServices, reason: EndedReason) -> str:
    """A short factual summary for the CRM call log: what was learned and what was booked."""
    state = services.state
    parts = [f"Trial check-in call, ended: {reason.value.replace('_', ' ')}."]
    signals = state.qualification_signals().filled()
    if signals:
        learned = "; ".join(f"{name.replace('_', ' ')}: {value}" for name, value in signals.items())
        parts.append(f"Learned: {learned}.")
    if state.booking is not None:
        parts.append(f"Meeting booked for {state.booking.slot_start.isoformat()}.")
    elif state.requested_meeting is not None:
        parts.append(
            f"Meeting requested for {state.requested_meeting.slot_start.isoformat()}; "
            "booking completes after the call."
        )
    else:
        parts.append("No meeting booked.")
    if state.notes:
        parts.append(f"{len(state.notes)} note(s) for the rep.")
    return " ".join(parts)[:MAX_SUMMARY_CHARS]


class SessionErrorPolicy:
    """The session's `error` handler: carry on after a recoverable error; after an unrecoverable
    one, say a graceful goodbye and end the call as `agent_error` (the follow-up still goes out)."""

    def __init__(
        self,
        *,
        session: AgentSession[Any],
        services: CallServices,
        goodbye: str = GOODBYE_ON_ERROR,
    ) -> None:
        self._session = session
        self._services = services
        self._goodbye = goodbye
        self.ending = False

    def __call__(self, event: ErrorEvent) -> None:
        error = event.error
        kind = getattr(error, "type", type(error).__name__)
        source = type(event.source).__name__
        call_id = self._services.call.call_id
        if getattr(error, "recoverable", False):
            logger.warning(
                "call %s: recoverable %s from %s; the call carries on", call_id, kind, source
            )
            return
        if self.ending:
            return
        self.ending = True
        logger.error(
            "call %s: unrecoverable %s from %s; saying goodbye and ending the call",
            call_id,
            kind,
            source,
        )
        self._services.mark_ended(EndedReason.AGENT_ERROR)
        try:
            handle = self._session.say(self._goodbye, allow_interruptions=False)
        except RuntimeError:  # the session is already closing: nothing left to say it with
            self._session.shutdown(drain=False)
            return
        handle.add_done_callback(lambda _: self._session.shutdown())


def attach_call_handlers(session: AgentSession[Any], services: CallServices) -> CallLifecycle:
    """Wire a call's session: filler speech, error policy and the outcome handoff at close."""
    services.bind_session(session)
    if services.checkpoints is not None:
        services.checkpoints.start()  # the first one creates the call's follow-up
    lifecycle = CallLifecycle(services=services)
    session.on("error", SessionErrorPolicy(session=session, services=services))
    session.on("close", lifecycle.on_close)
    return lifecycle
