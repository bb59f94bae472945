"""How a call ends: session errors handled, the CallOutcome built and handed off exactly once.

The handoff runs from LiveKit's `on_session_end` (`hand_off_outcome`), which has its own budget
(`session_end_timeout`), where the shutdown callbacks share the 10 s process limit. The session's
`close` event starts it early and a shutdown callback backs it up; all three await one task. What
LiveKit does not end by itself is ended here: a caller whose line drops (RoomIO keeps waiting for
them) and a SIP callee who never answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, CloseEvent, CloseReason, ErrorEvent, JobContext
from livekit.agents.voice.room_io.types import DEFAULT_CLOSE_ON_DISCONNECT_REASONS

from agent.services import CallServices
from contracts.models import MAX_SUMMARY_CHARS, CallOutcome, EndedReason
from handoff.follow_up import CallEndedHandoff

logger = logging.getLogger(__name__)

# LiveKit waits this long for on_session_end (its default is 300 s); the outcome needs far less.
SESSION_END_TIMEOUT_SECONDS = 60.0
# The handoff's own bound: Temporal slower than HANDOFF_TIMEOUT_SECONDS puts it in the outbox.
SESSION_END_BUDGET_SECONDS = 30.0
# A caller whose line drops (not a hang-up) may come back this long before the call ends.
DROP_GRACE_SECONDS = 15.0
# How long an outbound SIP callee may ring before the call ends unanswered.
ANSWER_TIMEOUT_SECONDS = 45.0
SIP_CALL_STATUS = "sip.callStatus"
# The job's calls by job id, in the job process's userdata: on_session_end finds its call here.
CALLS_KEY = "trialist_calls"

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
        self.answered = True

    def never_answered(self) -> None:
        """The callee never picked up: the call ends as dropped, and the summary says so."""
        self.answered = False
        self._services.mark_ended(EndedReason.DROPPED)

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
        outcome = build_outcome(services, reason, answered=self.answered)
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


def build_outcome(
    services: CallServices, reason: EndedReason, *, answered: bool = True
) -> CallOutcome:
    """The CallOutcome of the conversation so far."""
    fields = services.state.outcome_fields()
    ended_at = max(services.clock(), services.call.started_at)
    return CallOutcome(
        call_id=services.call.call_id,
        trialist=services.call.trialist,
        started_at=services.call.started_at,
        ended_at=ended_at,
        ended_reason=reason,
        summary=summarize_call(services, reason, answered=answered),
        **fields,
    )


def summarize_call(services: CallServices, reason: EndedReason, *, answered: bool = True) -> str:
    """A short factual summary for the CRM call log: what was learned and what was booked."""
    state = services.state
    if not answered:
        return "Trial check-in call, ended: dropped. The call was never answered."
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


def attach_call_handlers(
    session: AgentSession[Any], services: CallServices, lifecycle: CallLifecycle | None = None
) -> CallLifecycle:
    """Wire a call's session: filler speech, error policy and the outcome handoff at close."""
    services.bind_session(session)
    if services.checkpoints is not None:
        services.checkpoints.start()  # the first one creates the call's follow-up
    lifecycle = lifecycle or CallLifecycle(services=services)
    session.on("error", SessionErrorPolicy(session=session, services=services))
    session.on("close", lifecycle.on_close)
    return lifecycle


# --- the job: on_session_end, a dropped line, an unanswered SIP call ----------------------------


def register_call(ctx: JobContext, services: CallServices) -> CallLifecycle:
    """The call's lifecycle, findable by `hand_off_outcome` from now on, however the job ends."""
    lifecycle = CallLifecycle(services=services)
    ctx.proc.userdata.setdefault(CALLS_KEY, {})[ctx.job.id] = lifecycle

    async def backstop(_reason: str) -> None:
        await lifecycle.finish()  # done already when on_session_end ran; else inside the 10 s

    ctx.add_shutdown_callback(backstop)
    return lifecycle


async def hand_off_outcome(ctx: JobContext) -> None:
    """LiveKit's on_session_end: the job's call outcome leaves now, within session_end_timeout."""
    calls: dict[str, CallLifecycle] = ctx.proc.userdata.get(CALLS_KEY, {})
    lifecycle = calls.pop(ctx.job.id, None)
    if lifecycle is None:
        logger.warning("job %s ended before its call was known: no outcome to hand off", ctx.job.id)
        return
    await lifecycle.finish()


class CallerLine:
    """Ends the call as `dropped` when the caller's line drops and they don't come back.

    RoomIO closes the session on a hang-up (CLIENT_INITIATED and the like) but waits forever for
    a participant lost to a network or SIP failure; without this, such a call never ends.
    """

    def __init__(
        self,
        *,
        room: rtc.Room,
        session: AgentSession[Any],
        services: CallServices,
        identity: str | None = None,
        grace: float = DROP_GRACE_SECONDS,
    ) -> None:
        self._room = room
        self._session = session
        self._services = services
        self._identity = identity
        self._grace = grace
        self._timer: asyncio.TimerHandle | None = None

    def attach(self) -> CallerLine:
        self._room.on("participant_disconnected", self._on_disconnected)
        self._room.on("participant_connected", self._on_connected)
        self._session.on("close", lambda _: self._cancel())
        return self

    def _is_caller(self, participant: rtc.RemoteParticipant) -> bool:
        return self._identity is None or participant.identity == self._identity

    def _on_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if not self._is_caller(participant):
            return
        if participant.disconnect_reason in DEFAULT_CLOSE_ON_DISCONNECT_REASONS:
            return  # a hang-up: RoomIO closes the session itself
        logger.info(
            "call %s: the caller's line dropped; ending in %.0fs unless they come back",
            self._services.call.call_id,
            self._grace,
        )
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(self._grace, self._end)

    def _on_connected(self, participant: rtc.RemoteParticipant) -> None:
        if self._is_caller(participant) and self._timer is not None:
            logger.info("call %s: the caller is back", self._services.call.call_id)
            self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self) -> None:
        self._timer = None
        self._services.mark_ended(EndedReason.DROPPED)
        self._session.shutdown(drain=False)


async def wait_for_answer(room: rtc.Room, identity: str, *, within: float) -> bool:
    """Whether the SIP participant `identity` answers (`sip.callStatus` active) `within` seconds.

    False when it hangs up or is unavailable first (busy, no answer, rejected), or keeps ringing.
    """
    answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def settle(result: bool) -> None:
        if not answered.done():
            answered.set_result(result)

    def check(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == identity and participant.attributes.get(SIP_CALL_STATUS) in (
            "active",
            "automation",
        ):
            settle(True)

    def on_attributes(_changed: Any, participant: rtc.RemoteParticipant) -> None:
        check(participant)

    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == identity:
            settle(False)

    handlers: list[tuple[Any, Any]] = [
        ("participant_connected", check),
        ("participant_attributes_changed", on_attributes),
        ("participant_disconnected", on_disconnected),
    ]
    for event, handler in handlers:
        room.on(event, handler)
    try:
        for participant in list(room.remote_participants.values()):
            check(participant)
        async with asyncio.timeout(within):
            return await answered
    except TimeoutError:
        return False
    finally:
        for event, handler in handlers:
            room.off(event, handler)
