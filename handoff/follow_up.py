"""Hands a call's booking and outcome to its Temporal workflow, or to the outbox when it can't."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from config.settings import Settings
from config.temporal import TemporalConnectError, connect
from contracts.calling_policy import CallingPlace
from contracts.models import (
    BookingRequest,
    BookingResult,
    BookingStatus,
    CallOutcome,
    FollowUpInput,
    FollowUpProgress,
    FollowUpStatus,
)
from contracts.names import (
    BOOK_MEETING_UPDATE,
    BOOKING_NOT_DONE_ERROR,
    CALL_ENDED_SIGNAL,
    FOLLOW_UP_STATUS,
    OPT_OUT_UPDATE,
    OUTREACH_WORKFLOW_TYPE,
    WORKFLOW_TYPE,
    follow_up_summary,
    workflow_id_for,
)
from contracts.outreach import (
    OptOutRequest,
    OptOutResult,
    OutreachInput,
    OutreachProgress,
    outreach_workflow_id,
)
from handoff.outbox import (
    MessageKind,
    Outbox,
    OutboxMessage,
    OutboxRelay,
    Rejection,
    RelayPass,
    dedupe_key,
)

logger = logging.getLogger(__name__)

ClientFactory = Callable[[], Coroutine[Any, Any, Client]]

# LiveKit kills the job process 10 s after shutdown begins: call_ended, outbox write included,
# finishes within this.
CALL_ENDED_BUDGET_SECONDS: Final = 3.0
# Kept out of the Temporal attempt so the outbox write always fits in the budget.
OUTBOX_WRITE_RESERVE_SECONDS: Final = 0.5
ALREADY_FINISHED: Final = "the follow-up of this call has already finished"
# A refused update comes back with its outcome already known; this is how long we look for one.
REFUSAL_PROBE_SECONDS: Final = 0.05

# What "Temporal did not take it in time" looks like: the message goes to the outbox.
_NOT_TAKEN: Final = (
    TimeoutError,
    TemporalConnectError,
    RPCError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    RuntimeError,  # the SDK's bridge reports transport failures this way
    OSError,
)


class BookingHandoffStatus(StrEnum):
    CONFIRMED = "confirmed"  # booked while the caller is on the line
    UNAVAILABLE = "unavailable"  # the slot was taken; `alternatives` are free ones
    PENDING = "pending"  # accepted, still in progress when the wait ran out; the workflow finishes
    QUEUED = "queued"  # Temporal unreachable or slow: in the outbox, the relay delivers it
    REJECTED = "rejected"  # refused (past slot, second booking, call over): `reason` says why


@dataclass(frozen=True, kw_only=True)
class BookingHandoff:
    """What became of a booking request; the agent decides what to say."""

    status: BookingHandoffStatus
    slot_start: datetime
    meeting_id: str | None = None
    alternatives: list[datetime] = field(default_factory=list)
    reason: str | None = None


class CallEndedStatus(StrEnum):
    DELIVERED = "delivered"  # the workflow has the outcome
    QUEUED = "queued"  # in the outbox; the relay delivers it
    REJECTED = "rejected"  # the call's follow-up had already finished


@dataclass(frozen=True, kw_only=True)
class CallEndedHandoff:
    status: CallEndedStatus
    reason: str | None = None


class FollowUpHandoff:
    """The agent's one door to Temporal: update/signal-with-start onto `call-{call_id}`.

    It connects lazily (the first handoff or the relay's first pass) and never raises because
    Temporal is down or slow: such a handoff lands in the outbox, and the relay sends it later.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        outbox: Outbox,
        client_factory: ClientFactory | None = None,
        call_ended_budget: float = CALL_ENDED_BUDGET_SECONDS,
    ) -> None:
        if call_ended_budget <= OUTBOX_WRITE_RESERVE_SECONDS:
            raise ValueError(
                f"call_ended_budget must exceed {OUTBOX_WRITE_RESERVE_SECONDS}s, "
                f"got {call_ended_budget}"
            )
        self.settings = settings
        self.outbox = outbox
        self._factory = client_factory or self._connect
        self._client: Client | None = None
        self._connecting: asyncio.Task[Client] | None = None
        self._handoff_timeout = settings.handoff_timeout_seconds
        self._call_ended_timeout = min(
            settings.handoff_timeout_seconds, call_ended_budget - OUTBOX_WRITE_RESERVE_SECONDS
        )
        self._relay: OutboxRelay | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._relay_stop = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> FollowUpHandoff:
        """A handoff with its outbox at `settings.data_dir / "outbox.db"`; connects on first use."""
        return cls(settings=settings, outbox=Outbox.in_dir(settings.data_dir))

    # --- the two handoffs of a call ------------------------------------------------------------

    async def book_meeting(self, request: BookingRequest, *, wait: float) -> BookingHandoff:
        """Update-with-start `book_meeting`, then wait up to `wait` s (in all) for its result."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._handoff_timeout):
                handle = await self._send_booking(await self.client(), request)
        except (WorkflowUpdateFailedError, WorkflowAlreadyStartedError) as refused:
            reason = _refusal_reason(refused)
            logger.info("call %s: book_meeting refused: %s", request.call_id, reason)
            return _booking(BookingHandoffStatus.REJECTED, request, reason=reason)
        except _NOT_TAKEN as error:
            self._queue(request, error)
            return _booking(BookingHandoffStatus.QUEUED, request, reason=_not_taken(error))
        # At least the probe: a refusal is known at once and must not pass for "pending".
        remaining = max(wait - (loop.time() - started), REFUSAL_PROBE_SECONDS)
        try:
            async with asyncio.timeout(remaining):
                result: BookingResult = await handle.result()
        except WorkflowUpdateFailedError as failed:
            reason = _refusal_reason(failed)
            if _parked(failed):  # the workflow has it and an operator will finish it
                logger.warning("call %s: booking parked in the call: %s", request.call_id, reason)
                return _booking(BookingHandoffStatus.PENDING, request, reason=reason)
            logger.info("call %s: book_meeting refused: %s", request.call_id, reason)
            return _booking(BookingHandoffStatus.REJECTED, request, reason=reason)
        except _NOT_TAKEN:  # accepted is durable: the workflow finishes the booking
            return _booking(BookingHandoffStatus.PENDING, request, reason="still booking")
        if result.status is BookingStatus.BOOKED:
            return _booking(BookingHandoffStatus.CONFIRMED, request, meeting_id=result.meeting_id)
        return _booking(
            BookingHandoffStatus.UNAVAILABLE, request, alternatives=list(result.alternatives)
        )

    async def call_ended(self, outcome: CallOutcome) -> CallEndedHandoff:
        """Signal-with-start `call_ended`, bounded; on failure or slowness, into the outbox.

        A book_meeting of this call still in the outbox goes first, because the workflow refuses
        book_meeting once the call has ended (the outcome's requested_meeting covers it anyway).
        """
        call_id = outcome.call_id
        try:
            async with asyncio.timeout(self._call_ended_timeout):
                client = await self.client()
                await self._flush_bookings(client, call_id)
                await self._send_call_ended(client, outcome)
        except WorkflowAlreadyStartedError:
            logger.warning("call %s: call_ended not sent: %s", call_id, ALREADY_FINISHED)
            return CallEndedHandoff(status=CallEndedStatus.REJECTED, reason=ALREADY_FINISHED)
        except _NOT_TAKEN as error:
            self._queue(outcome, error)
            return CallEndedHandoff(status=CallEndedStatus.QUEUED, reason=_not_taken(error))
        # An earlier attempt of this call_ended may sit in the outbox: it is now redundant.
        for stale in self.outbox.pending_for(call_id):
            if stale.kind is MessageKind.CALL_ENDED:
                self.outbox.mark_delivered(stale.id, note="sent directly by a later attempt")
        return CallEndedHandoff(status=CallEndedStatus.DELIVERED)

    async def opt_out(self, request: OptOutRequest, *, wait: float) -> OptOutHandoff:
        """Outreach (issue 16): "stop calling me", recorded at once; see the block at the end."""
        return await _opt_out(self, request, wait=wait)

    # --- the relay's side -----------------------------------------------------------------------

    async def deliver(self, message: OutboxMessage) -> Rejection | None:
        """Replay a stored handoff (a booking waits only for ACCEPTED); raises to be retried."""
        if message.kind is MessageKind.OPT_OUT:  # outreach (issue 16)
            return await _deliver_opt_out(self, message)
        try:
            payload: BookingRequest | CallOutcome = (
                message.booking_request()
                if message.kind is MessageKind.BOOK_MEETING
                else message.call_outcome()
            )
        except ValidationError as error:  # a poison message would otherwise be retried forever
            return Rejection(f"stored payload is invalid ({error.error_count()} errors)")
        client = await self.client()
        try:
            if isinstance(payload, BookingRequest):
                return await _refusal(await self._send_booking(client, payload))
            await self._send_call_ended(client, payload)
        except (WorkflowUpdateFailedError, WorkflowAlreadyStartedError) as refused:
            return Rejection(_refusal_reason(refused))
        return None

    def relay(self) -> OutboxRelay:
        """The relay over this handoff's outbox (one per handoff)."""
        if self._relay is None:
            self._relay = OutboxRelay(
                outbox=self.outbox,
                deliver=self.deliver,
                interval=self.settings.outbox_relay_interval_seconds,
            )
        return self._relay

    async def start_relay(self) -> None:
        """Run the relay in the background (idempotent): a pass now, then every interval."""
        if self._relay_task is not None and not self._relay_task.done():
            return
        self._relay_stop = asyncio.Event()
        self._relay_task = asyncio.create_task(
            self.relay().run(self._relay_stop), name="outbox_relay"
        )

    async def aclose(self, grace: float = 2.0) -> None:
        """Stop the relay; a pass in flight gets `grace` seconds to finish."""
        task, self._relay_task = self._relay_task, None
        if task is None:
            return
        self._relay_stop.set()
        try:
            await asyncio.wait_for(task, grace)
        except TimeoutError:
            logger.warning("outbox relay did not stop within %.1fs; cancelled", grace)

    # --- Temporal ---------------------------------------------------------------------------------

    async def client(self) -> Client:
        """The shared client, connecting on first use; one connect attempt at a time."""
        if self._client is not None:
            return self._client
        task = self._connecting
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.create_task(self._factory(), name="temporal_connect")
            task.add_done_callback(_retrieve_exception)
            self._connecting = task
        # Shielded: a caller that stops waiting leaves the connect running for the next one.
        client = await asyncio.shield(task)
        self._client = client
        return client

    async def _connect(self) -> Client:
        return await connect(self.settings, attempts=1)

    async def _send_booking(
        self, client: Client, request: BookingRequest
    ) -> WorkflowUpdateHandle[BookingResult]:
        """Update-with-start, returned once ACCEPTED (durable in the workflow's history)."""
        start: WithStartWorkflowOperation[Any, FollowUpProgress] = WithStartWorkflowOperation(
            WORKFLOW_TYPE,
            self._input(request.call_id),
            id=workflow_id_for(request.call_id),
            task_queue=self.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A finished follow-up is never started again by a late or repeated message.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=_IN_CALL,
            static_summary=follow_up_summary(request.guest.name, request.guest.company),
            result_type=FollowUpProgress,
        )
        handle: WorkflowUpdateHandle[BookingResult] = await client.start_update_with_start_workflow(
            BOOK_MEETING_UPDATE,
            request,
            start_workflow_operation=start,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            # The same id on every attempt: the server returns the first one's outcome to a repeat.
            id=dedupe_key(request),
            result_type=BookingResult,
        )
        return handle

    async def _send_call_ended(self, client: Client, outcome: CallOutcome) -> None:
        await client.start_workflow(
            WORKFLOW_TYPE,
            self._input(outcome.call_id),
            id=workflow_id_for(outcome.call_id),
            task_queue=self.settings.temporal_task_queue,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[outcome],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=_IN_CALL,
            static_summary=follow_up_summary(outcome.trialist.name, outcome.trialist.company),
            result_type=FollowUpProgress,
        )

    async def _flush_bookings(self, client: Client, call_id: str) -> None:
        """Deliver this call's queued book_meetings now, before its call_ended."""
        for message in self.outbox.pending_for(call_id):
            if message.kind is not MessageKind.BOOK_MEETING:
                continue
            try:
                handle = await self._send_booking(client, message.booking_request())
                refusal = await _refusal(handle)
            except (WorkflowUpdateFailedError, WorkflowAlreadyStartedError) as refused:
                refusal = Rejection(_refusal_reason(refused))
            note = f"refused: {refusal.reason}" if refusal is not None else None
            self.outbox.mark_delivered(message.id, note=note)

    def _input(self, call_id: str) -> FollowUpInput:
        return FollowUpInput(
            call_id=call_id,
            call_ended_timeout_seconds=self.settings.follow_up_call_ended_timeout_seconds,
            step_schedule_to_close_seconds=self.settings.follow_up_step_schedule_to_close_seconds,
        )

    def _queue(self, payload: BookingRequest | CallOutcome, error: BaseException) -> None:
        stored = self.outbox.put(payload)
        logger.warning(
            "call %s: Temporal did not take %s within %.1fs (%s); in the outbox as message %d%s",
            payload.call_id,
            "book_meeting" if isinstance(payload, BookingRequest) else "call_ended",
            self._handoff_timeout,
            _not_taken(error),
            stored.id,
            "" if stored.stored else " (already there)",
        )


_IN_CALL: Final = TypedSearchAttributes(
    [SearchAttributePair(FOLLOW_UP_STATUS, FollowUpStatus.IN_CALL.value)]
)


def _booking(
    status: BookingHandoffStatus, request: BookingRequest, **fields: Any
) -> BookingHandoff:
    return BookingHandoff(status=status, slot_start=request.slot_start, **fields)


async def _refusal(handle: WorkflowUpdateHandle[BookingResult]) -> Rejection | None:
    """The validator's refusal of an update sent with wait ACCEPTED, or None once accepted."""
    try:
        async with asyncio.timeout(REFUSAL_PROBE_SECONDS):
            await handle.result()
    except WorkflowUpdateFailedError as failed:
        return None if _parked(failed) else Rejection(_refusal_reason(failed))
    except _NOT_TAKEN:  # still running: accepted, which is all a replay waits for
        return None
    return None


def _parked(failed: WorkflowUpdateFailedError) -> bool:
    cause = failed.cause
    return isinstance(cause, ApplicationError) and cause.type == BOOKING_NOT_DONE_ERROR


def _refusal_reason(error: BaseException) -> str:
    """The workflow's own words for a refusal (validator or handler messages carry no PII)."""
    if isinstance(error, WorkflowAlreadyStartedError):
        return ALREADY_FINISHED
    cause = error.__cause__
    if isinstance(cause, ApplicationError) and cause.message:
        return cause.message
    # Anything else (a payload the workflow could not decode) may quote the payload: name it only.
    return type(cause or error).__name__


def _not_taken(error: BaseException) -> str:
    if isinstance(error, TimeoutError | WorkflowUpdateRPCTimeoutOrCancelledError):
        return "timed out"
    if isinstance(error, TemporalConnectError):
        return "unreachable"
    if isinstance(error, RPCError):
        return f"RPC {error.status.name}"
    return type(error).__name__


def _retrieve_exception(task: asyncio.Task[Client]) -> None:
    # A connect that failed after its caller stopped waiting would warn "never retrieved".
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()


async def drain_outbox(settings: Settings) -> RelayPass:
    """One relay pass over `settings.data_dir`'s outbox, backoffs ignored: for an operator command.

    Like every pass it stops at the first failure (Temporal still down); run it again later.
    """
    handoff = FollowUpHandoff.from_settings(settings)
    try:
        return await handoff.relay().deliver_due_once(startup=True)
    finally:
        handoff.outbox.close()


# --- outreach (issue 16): the opt-out, in one block ---------------------------------------------


class OptOutStatus(StrEnum):
    RECORDED = "recorded"  # the outreach has it: no dial can follow; CRM flags set or being set
    QUEUED = "queued"  # Temporal unreachable or slow: in the outbox, delivered first


@dataclass(frozen=True, kw_only=True)
class OptOutHandoff:
    status: OptOutStatus
    crm_updated: bool = False
    reason: str | None = None


def _opt_out_input(settings: Settings, request: OptOutRequest) -> OutreachInput:
    """The start input when the opt-out is the first the outreach hears (no outreach running)."""
    person = request.trialist
    return OutreachInput(
        trialist=person,
        place=CallingPlace(timezones=(person.timezone,), basis="opt-out"),
        from_number=settings.outreach_from_number,
        trunk_id=settings.livekit_sip_trunk_id,
        follow_up_task_queue=settings.temporal_task_queue,
        started_by="opt_out",
    )


async def _send_opt_out(
    handoff: FollowUpHandoff, client: Client, request: OptOutRequest
) -> WorkflowUpdateHandle[OptOutResult]:
    """Update-with-start `opt_out` on outreach-{trial_account_id}, returned once ACCEPTED."""
    settings = handoff.settings
    start: WithStartWorkflowOperation[Any, OutreachProgress] = WithStartWorkflowOperation(
        OUTREACH_WORKFLOW_TYPE,
        _opt_out_input(settings, request),
        id=outreach_workflow_id(request.trialist.trial_account_id),
        task_queue=settings.outreach_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A finished outreach gets a short new run that records the opt-out and ends.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        result_type=OutreachProgress,
    )
    handle: WorkflowUpdateHandle[OptOutResult] = await client.start_update_with_start_workflow(
        OPT_OUT_UPDATE,
        request,
        start_workflow_operation=start,
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        id=dedupe_key(request),
        result_type=OptOutResult,
    )
    return handle


async def _opt_out(
    handoff: FollowUpHandoff, request: OptOutRequest, *, wait: float
) -> OptOutHandoff:
    """Record "stop calling me" at once: durable when accepted, else in the outbox (first out)."""
    try:
        async with asyncio.timeout(handoff._handoff_timeout):
            handle = await _send_opt_out(handoff, await handoff.client(), request)
    except _NOT_TAKEN as error:
        stored = handoff.outbox.put(request)
        logger.warning(
            "opt-out not taken by Temporal (%s); outbox message %d", _not_taken(error), stored.id
        )
        return OptOutHandoff(status=OptOutStatus.QUEUED, reason=_not_taken(error))
    try:
        async with asyncio.timeout(max(wait, REFUSAL_PROBE_SECONDS)):
            result: OptOutResult = await handle.result()
    except _NOT_TAKEN:  # accepted: the workflow sets the CRM flags on its own
        return OptOutHandoff(status=OptOutStatus.RECORDED, reason="CRM update still running")
    return OptOutHandoff(status=OptOutStatus.RECORDED, crm_updated=result.crm_updated)


async def _deliver_opt_out(handoff: FollowUpHandoff, message: OutboxMessage) -> Rejection | None:
    """The relay's replay of a stored opt-out; raises to be retried."""
    try:
        request = message.opt_out_request()
    except ValidationError as error:
        return Rejection(f"stored payload is invalid ({error.error_count()} errors)")
    try:
        await _send_opt_out(handoff, await handoff.client(), request)
    except WorkflowUpdateFailedError as refused:
        return Rejection(_refusal_reason(refused))
    return None
