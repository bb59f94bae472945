"""FollowUpHandoff: the agent's one door to a call's follow-up, with the outbox behind it.

Each handoff goes straight to Temporal within its budget (handoff/ordering.py); when Temporal is
down or slow it lands in the outbox and the relay delivers it later. It never raises because
Temporal is down. The messages themselves are built in handoff/messages.py.
"""

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
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RetryConfig

from config.settings import Settings
from config.temporal import connect
from contracts.calling_policy import CallingPlace
from contracts.models import (
    BookingRequest,
    BookingResult,
    BookingStatus,
    CallCheckpoint,
    CallOutcome,
    Trialist,
)
from contracts.names import OPT_OUT_UPDATE, OUTREACH_WORKFLOW_TYPE
from contracts.outreach import (
    OptOutRequest,
    OptOutResult,
    OutreachInput,
    OutreachProgress,
    outreach_workflow_id,
)
from handoff.messages import (
    ALREADY_FINISHED,
    NOT_TAKEN,
    CallIdentity,
    FollowUpMessages,
    RefusedError,
    parked,
    refusal_reason,
    unreachable,
)
from handoff.ordering import REFUSAL_PROBE_SECONDS, MessageKind
from handoff.outbox import Outbox, OutboxMessage, Payload, dedupe_key
from handoff.relay import DrainReport, OutboxRelay, Rejection
from handoff.sealing import OutboxSealer

logger = logging.getLogger(__name__)

ClientFactory = Callable[[], Coroutine[Any, Any, Client]]
SUPERSEDED: Final = "superseded by the call's call_ended, which carries it"
# The handoff's RPCs fail fast instead of retrying for seconds: a tool is waiting, and the outbox
# and its relay do the retrying.
FAST_RPC_RETRIES: Final = RetryConfig(
    initial_interval_millis=50, max_interval_millis=200, max_elapsed_time_millis=800, max_retries=2
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


class HandoffStatus(StrEnum):
    DELIVERED = "delivered"  # the workflow has it
    QUEUED = "queued"  # in the outbox; the relay delivers it
    REJECTED = "rejected"  # the call's follow-up had already finished


@dataclass(frozen=True, kw_only=True)
class Handed:
    """What became of a checkpoint or a call_ended."""

    status: HandoffStatus
    reason: str | None = None


# The earlier names, kept for the agent's session end.
CallEndedStatus = HandoffStatus
CallEndedHandoff = Handed


class FollowUpHandoff:
    """The agent's door to Temporal: every message of a call, or the outbox when it can't.

    It connects lazily (the first handoff or the relay's first pass), one connect at a time.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        outbox: Outbox,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.messages = FollowUpMessages(settings)
        self._factory = client_factory or self._connect
        self._client: Client | None = None
        self._connecting: asyncio.Task[Client] | None = None
        self._in_call_timeout = settings.handoff_timeout_seconds
        self._call_ended_timeout = settings.handoff_call_ended_timeout_seconds
        self._relay: OutboxRelay | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._relay_stop = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> FollowUpHandoff:
        """A handoff with its outbox at `settings.data_dir / "outbox.db"`; connects on first use.

        The outbox seals with the same keys as the Temporal client; EncryptionSetupError without.
        """
        sealer = OutboxSealer.from_settings(settings)
        return cls(settings=settings, outbox=Outbox.in_dir(settings.data_dir, sealer=sealer))

    # --- the handoffs of a call ----------------------------------------------------------------

    def call_started(self, call_id: str, *, trialist: Trialist, started_at: datetime) -> None:
        """Remember whom the call is with: every message that may start its follow-up says so."""
        self.messages.remember(call_id, CallIdentity(trialist=trialist, started_at=started_at))

    async def checkpoint(self, checkpoint: CallCheckpoint) -> Handed:
        """Signal-with-start `checkpoint` within the in-call budget, else into the outbox."""
        try:
            async with asyncio.timeout(self._in_call_timeout):
                await self.messages.checkpoint(await self.client(), checkpoint)
        except WorkflowAlreadyStartedError:
            return Handed(status=HandoffStatus.REJECTED, reason=ALREADY_FINISHED)
        except NOT_TAKEN as error:
            self._queue(checkpoint, error, budget=self._in_call_timeout)
            return Handed(status=HandoffStatus.QUEUED, reason=_not_taken(error))
        return Handed(status=HandoffStatus.DELIVERED)

    async def book_meeting(self, request: BookingRequest, *, wait: float) -> BookingHandoff:
        """Update-with-start `book_meeting`, then wait up to `wait` s (in all) for its result.

        The acceptance may take the whole wait: the workflow books an in-call meeting in the
        workflow task that accepts the update (a local activity), so acceptance and result
        arrive together. Not accepted within `wait`, the booking goes to the outbox (queued),
        and its resend joins the same update (one update id). Temporal down is known at once
        (connection refused); only a Temporal that hangs costs the caller the whole wait.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        accept_budget = wait
        try:
            async with asyncio.timeout(accept_budget):
                handle = await self.messages.booking(await self.client(), request)
        except (WorkflowUpdateFailedError, WorkflowAlreadyStartedError) as refused:
            reason = refusal_reason(refused)
            logger.info("call %s: book_meeting refused: %s", request.call_id, reason)
            return _booking(BookingHandoffStatus.REJECTED, request, reason=reason)
        except NOT_TAKEN as error:
            self._queue(request, error, budget=accept_budget)
            return _booking(BookingHandoffStatus.QUEUED, request, reason=_not_taken(error))
        # At least the probe: a refusal is known at once and must not pass for "pending".
        remaining = max(wait - (loop.time() - started), REFUSAL_PROBE_SECONDS)
        try:
            async with asyncio.timeout(remaining):
                result: BookingResult = await handle.result()
        except WorkflowUpdateFailedError as failed:
            reason = refusal_reason(failed)
            if parked(failed):  # the workflow has it and an operator will finish it
                logger.warning("call %s: booking parked in the call: %s", request.call_id, reason)
                return _booking(BookingHandoffStatus.PENDING, request, reason=reason)
            logger.info("call %s: book_meeting refused: %s", request.call_id, reason)
            return _booking(BookingHandoffStatus.REJECTED, request, reason=reason)
        except NOT_TAKEN:  # accepted is durable: the workflow finishes the booking
            return _booking(BookingHandoffStatus.PENDING, request, reason="still booking")
        if result.status is BookingStatus.BOOKED:
            return _booking(BookingHandoffStatus.CONFIRMED, request, meeting_id=result.meeting_id)
        return _booking(
            BookingHandoffStatus.UNAVAILABLE, request, alternatives=list(result.alternatives)
        )

    async def call_ended(self, outcome: CallOutcome) -> Handed:
        """Signal-with-start `call_ended` within its own budget, else into the outbox.

        It never waits behind the call's queued messages: a checkpoint says less than the
        outcome, and a queued booking's request is the outcome's requested_meeting, which the
        workflow books after the call. Both are marked superseded instead of being resent here,
        once the outcome is with the workflow or in the outbox, never before. A caller that stops
        waiting first (the session end's own budget) still leaves the outcome in the outbox.
        """
        call_id = outcome.call_id
        try:
            async with asyncio.timeout(self._call_ended_timeout):
                await self.messages.call_ended(await self.client(), outcome)
        except WorkflowAlreadyStartedError:
            logger.warning("call %s: call_ended not sent: %s", call_id, ALREADY_FINISHED)
            self._supersede(outcome)
            return Handed(status=HandoffStatus.REJECTED, reason=ALREADY_FINISHED)
        except NOT_TAKEN as error:
            self._queue(outcome, error, budget=self._call_ended_timeout)
            self._supersede(outcome)
            return Handed(status=HandoffStatus.QUEUED, reason=_not_taken(error))
        except asyncio.CancelledError:
            # Cancelled mid-send (sync writes only here, so they finish): the relay delivers it.
            self._queue(outcome, TimeoutError(), budget=self._call_ended_timeout)
            self._supersede(outcome)
            raise
        finally:
            self.messages.forget(call_id)
        self._supersede(outcome)
        # An earlier attempt of this call_ended may sit in the outbox: it is now redundant.
        for stale in self.outbox.pending_for(call_id):
            if stale.kind is MessageKind.CALL_ENDED:
                self.outbox.mark_delivered(stale.id, note="sent directly by a later attempt")
        return Handed(status=HandoffStatus.DELIVERED)

    def _supersede(self, outcome: CallOutcome) -> None:
        requested = outcome.requested_meeting
        for message in self.outbox.pending_for(outcome.call_id):
            if message.kind is MessageKind.CHECKPOINT:
                self.outbox.mark_delivered(message.id, note=SUPERSEDED, seq=message.seq)
            elif message.kind is MessageKind.BOOK_MEETING and requested is not None:
                with contextlib.suppress(ValidationError):
                    if message.booking_request().same_slot(requested):
                        self.outbox.mark_delivered(message.id, note=SUPERSEDED)

    async def opt_out(self, request: OptOutRequest, *, wait: float) -> OptOutHandoff:
        """Outreach (issue 16): "stop calling me", recorded at once; see the block at the end."""
        return await _opt_out(self, request, wait=wait)

    # --- the relay's side -----------------------------------------------------------------------

    async def deliver(self, message: OutboxMessage) -> Rejection | None:
        """Replay a stored message (a booking waits only for ACCEPTED); raises to be retried."""
        if message.kind is MessageKind.OPT_OUT:  # outreach (issue 16)
            return await _deliver_opt_out(self, message)
        try:
            payload = message.payload_model()
        except ValidationError as error:  # a poison message would otherwise be retried forever
            return Rejection(f"stored payload is invalid ({error.error_count()} errors)")
        client = await self.client()
        try:
            await self.messages.deliver(client, message, payload, self._identity_of(payload))
        except (RefusedError, WorkflowUpdateFailedError, WorkflowAlreadyStartedError) as refused:
            return Rejection(refusal_reason(refused))
        return None

    def _identity_of(self, payload: Payload) -> CallIdentity | None:
        """Whom a replayed message's call is with, when another process (or an earlier run of
        this one) queued it: a checkpoint or booking may be the message that starts the follow-up,
        and without it an agent lost later leaves nothing to write to the CRM."""
        if not isinstance(payload, BookingRequest | CallCheckpoint):
            return None
        if self.messages.known(payload.call_id) is not None:
            return None
        stored = self.outbox.identity(payload.call_id)
        return None if stored is None else CallIdentity(trialist=stored[0], started_at=stored[1])

    def relay(self) -> OutboxRelay:
        """The relay over this handoff's outbox (one per handoff)."""
        if self._relay is None:
            self._relay = OutboxRelay(
                outbox=self.outbox,
                deliver=self.deliver,
                unreachable=unreachable,
                interval=self.settings.outbox_relay_interval_seconds,
            )
        return self._relay

    async def start_relay(self) -> None:
        """Run the relay in the background (idempotent): a pass now, then as the relay decides."""
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
        return await connect(self.settings, attempts=1, rpc_retries=FAST_RPC_RETRIES)

    def _queue(self, payload: Payload, error: BaseException, *, budget: float) -> None:
        stored = self.outbox.put(payload)
        if isinstance(payload, BookingRequest | CallCheckpoint):
            known = self.messages.known(payload.call_id)
            if known is not None:
                self.outbox.put_identity(
                    payload.call_id, trialist=known.trialist, started_at=known.started_at
                )
        logger.warning(
            "call %s: Temporal did not take %s within %.1fs (%s); in the outbox as message %d%s",
            payload.call_id,
            type(payload).__name__,
            budget,
            _not_taken(error),
            stored.id,
            "" if stored.stored else " (already there)",
        )
        if self._relay is not None:
            self._relay.wake()


def _booking(
    status: BookingHandoffStatus, request: BookingRequest, **fields: Any
) -> BookingHandoff:
    return BookingHandoff(status=status, slot_start=request.slot_start, **fields)


def _not_taken(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if unreachable(error):
        return "unreachable"
    return type(error).__name__


def _retrieve_exception(task: asyncio.Task[Client]) -> None:
    # A connect that failed after its caller stopped waiting would warn "never retrieved".
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()


async def drain_outbox(settings: Settings, *, within: float) -> DrainReport:
    """Deliver everything the outbox holds (passes until empty, or Temporal unreachable)."""
    handoff = FollowUpHandoff.from_settings(settings)
    try:
        return await handoff.relay().drain(within=within)
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
        async with asyncio.timeout(handoff._in_call_timeout):
            handle = await _send_opt_out(handoff, await handoff.client(), request)
    except NOT_TAKEN as error:
        stored = handoff.outbox.put(request)
        logger.warning(
            "opt-out not taken by Temporal (%s); outbox message %d", _not_taken(error), stored.id
        )
        return OptOutHandoff(status=OptOutStatus.QUEUED, reason=_not_taken(error))
    try:
        async with asyncio.timeout(max(wait, REFUSAL_PROBE_SECONDS)):
            result: OptOutResult = await handle.result()
    except NOT_TAKEN:  # accepted: the workflow sets the CRM flags on its own
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
        return Rejection(refusal_reason(refused))
    return None


__all__ = [
    "BookingHandoff",
    "BookingHandoffStatus",
    "CallEndedHandoff",
    "CallEndedStatus",
    "FollowUpHandoff",
    "Handed",
    "HandoffStatus",
    "OptOutHandoff",
    "OptOutStatus",
    "drain_outbox",
]
