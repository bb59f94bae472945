"""The Temporal side of the handoff: each start and message of a call's follow-up, built once.

Every message starts the follow-up if it does not exist yet (signal- or update-with-start,
USE_EXISTING), with the same start input, so whichever arrives first (normally the checkpoint
sent when the call starts) creates it, and one lost message never leaves a call without one. A
finished follow-up is never started again (REJECT_DUPLICATE): a late message is refused. The
direct sends and the relay's replays of stored messages go through the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any, Final

from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.common.v1 import Priority as PriorityProto
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflow.v1 import WorkflowExecutionOptions
from temporalio.api.workflowservice.v1 import UpdateWorkflowExecutionOptionsRequest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from config.temporal import TemporalConnectError
from contracts.models import (
    BookingRequest,
    BookingResult,
    CallCheckpoint,
    CallOutcome,
    FollowUpInput,
    FollowUpProgress,
    FollowUpStatus,
    Trialist,
)
from contracts.names import (
    BOOK_MEETING_UPDATE,
    BOOKING_NOT_DONE_ERROR,
    CALL_ENDED_SIGNAL,
    CHECKPOINT_SIGNAL,
    FOLLOW_UP_STATUS,
    IN_CALL_PRIORITY,
    POST_CALL_PRIORITY,
    WORKFLOW_TYPE,
    follow_up_summary,
    workflow_id_for,
)
from handoff.ordering import REFUSAL_PROBE_SECONDS
from handoff.outbox import OutboxMessage, Payload, dedupe_key
from handoff.relay import Rejection

logger = logging.getLogger(__name__)

ALREADY_FINISHED: Final = "the follow-up of this call has already finished"
# The demotion after call_ended is one small RPC; it never holds the outcome's own budget long.
DEMOTE_TIMEOUT: Final = timedelta(seconds=1)

# What "Temporal did not take it in time" looks like: the message goes to (or stays in) the outbox.
NOT_TAKEN: Final = (
    TimeoutError,
    TemporalConnectError,
    RPCError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    RuntimeError,  # the SDK's bridge reports transport failures this way
    OSError,
)
# Of those, what means Temporal itself cannot be reached, rather than this one message's trouble.
_UNREACHABLE_STATUSES: Final = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.UNKNOWN})


def unreachable(error: BaseException) -> bool:
    """Whether a failed send says Temporal is down or unreachable (the relay then waits)."""
    if isinstance(error, RPCError):
        return error.status in _UNREACHABLE_STATUSES
    return isinstance(error, TemporalConnectError | RuntimeError | OSError)


_IN_CALL: Final = TypedSearchAttributes(
    [SearchAttributePair(FOLLOW_UP_STATUS, FollowUpStatus.IN_CALL.value)]
)


class CallIdentity:
    """Whom a call is with and since when: what every start of its follow-up carries."""

    def __init__(self, *, trialist: Trialist, started_at: datetime | None) -> None:
        self.trialist = trialist
        self.started_at = started_at


class FollowUpMessages:
    """Builds and sends a call's starts, signals and updates, with the starter's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Calls this process started, so a message that may create the follow-up carries them.
        self._calls: dict[str, CallIdentity] = {}

    def remember(self, call_id: str, identity: CallIdentity) -> None:
        self._calls[call_id] = identity

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def known(self, call_id: str) -> CallIdentity | None:
        return self._calls.get(call_id)

    def start_input(
        self,
        call_id: str,
        trialist: Trialist | None = None,
        identity: CallIdentity | None = None,
    ) -> FollowUpInput:
        known = identity or self._calls.get(call_id)
        return FollowUpInput(
            call_id=call_id,
            trialist=known.trialist if known is not None else trialist,
            started_at=known.started_at if known is not None else None,
            call_ended_timeout_seconds=self.settings.follow_up_call_ended_timeout_seconds,
            step_schedule_to_close_seconds=self.settings.follow_up_step_schedule_to_close_seconds,
            liveness_seconds=self.settings.follow_up_liveness_seconds,
            alternative_window_minutes=self.settings.follow_up_alternative_window_minutes,
        )

    def _start_options(
        self, call_id: str, trialist: Trialist | None, identity: CallIdentity | None = None
    ) -> dict[str, Any]:
        known = identity or self._calls.get(call_id)
        person = trialist or (known.trialist if known is not None else None)
        return {
            "id": workflow_id_for(call_id),
            "task_queue": self.settings.temporal_task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            "search_attributes": _IN_CALL,
            "static_summary": follow_up_summary(person.name, person.company) if person else None,
            # In-call work goes before the post-call backlog (docs/follow-up.md).
            "priority": Priority(priority_key=IN_CALL_PRIORITY),
        }

    # --- sending ----------------------------------------------------------------------------

    async def signal_with_start(
        self,
        client: Client,
        name: str,
        payload: CallCheckpoint | CallOutcome,
        identity: CallIdentity | None = None,
    ) -> None:
        trialist = payload.trialist if isinstance(payload, CallOutcome) else None
        await client.start_workflow(
            WORKFLOW_TYPE,
            self.start_input(payload.call_id, trialist, identity),
            start_signal=name,
            start_signal_args=[payload],
            result_type=FollowUpProgress,
            **self._start_options(payload.call_id, trialist, identity),
        )

    async def checkpoint(
        self, client: Client, checkpoint: CallCheckpoint, identity: CallIdentity | None = None
    ) -> None:
        await self.signal_with_start(client, CHECKPOINT_SIGNAL, checkpoint, identity)

    async def call_ended(self, client: Client, outcome: CallOutcome) -> None:
        await self.signal_with_start(client, CALL_ENDED_SIGNAL, outcome)
        await self.demote(client, outcome.call_id)

    async def demote(self, client: Client, call_id: str) -> None:
        """The call is over: its follow-up's workflow tasks go after in-call ones from now on.

        A follow-up starts at IN_CALL_PRIORITY, and a workflow's priority applies to its workflow
        tasks, so without this the post-call backlog's workflow tasks would queue with a live
        call's checkpoints and bookings. Activities carry their own priority (in-call booking 1,
        post-call steps 3). Best effort: the outcome is already in the history, and a server that
        refuses the change only costs the ordering, never the call.
        """
        request = UpdateWorkflowExecutionOptionsRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id_for(call_id)),
            workflow_execution_options=WorkflowExecutionOptions(
                priority=PriorityProto(priority_key=POST_CALL_PRIORITY)
            ),
            update_mask=FieldMask(paths=["priority"]),
            identity=client.identity,
        )
        try:
            await client.workflow_service.update_workflow_execution_options(
                request, retry=False, timeout=DEMOTE_TIMEOUT
            )
        except (RPCError, RuntimeError) as error:
            logger.info(
                "call %s: follow-up not demoted to post-call priority: %s",
                call_id,
                type(error).__name__,
            )

    async def booking(
        self, client: Client, request: BookingRequest, identity: CallIdentity | None = None
    ) -> WorkflowUpdateHandle[BookingResult]:
        """Update-with-start `book_meeting`, returned once ACCEPTED (durable in its history)."""
        start: WithStartWorkflowOperation[Any, FollowUpProgress] = WithStartWorkflowOperation(
            WORKFLOW_TYPE,
            self.start_input(request.call_id, request.guest, identity),
            result_type=FollowUpProgress,
            **self._start_options(request.call_id, request.guest),
        )
        try:
            handle: WorkflowUpdateHandle[
                BookingResult
            ] = await client.start_update_with_start_workflow(
                BOOK_MEETING_UPDATE,
                request,
                start_workflow_operation=start,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                # The same id every time: the server gives a repeat the first one's outcome.
                id=dedupe_key(request),
                result_type=BookingResult,
            )
        finally:
            _settle_start_future(start)
        return handle

    async def deliver(
        self,
        client: Client,
        message: OutboxMessage,
        payload: Payload,
        identity: CallIdentity | None = None,
    ) -> None:
        """Replay a stored message; a booking waits only for ACCEPTED. Raises when refused.

        `identity` is whom the call is with when this process did not start the call.
        """
        if isinstance(payload, BookingRequest):
            refusal = await refusal_of(await self.booking(client, payload, identity))
            if refusal is not None:
                raise RefusedError(refusal.reason)
        elif isinstance(payload, CallCheckpoint):
            await self.checkpoint(client, payload, identity)
        elif isinstance(payload, CallOutcome):
            await self.call_ended(client, payload)
        else:  # an opt-out goes to the trialist's outreach: FollowUpHandoff sends it
            raise TypeError(f"not a follow-up message: {type(payload).__name__}")


class RefusedError(Exception):
    """The workflow refused a message for good (a validator, or the follow-up had finished)."""


def _settle_start_future(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Retrieve the start operation's handle future, so a failed one never logs "never retrieved".

    The SDK resolves it with the start's outcome; the handoff does not need the handle, and an
    unread exception on it (a cancelled or failed update-with-start) would be logged as an ERROR.
    The SDK's only public way in, `await workflow_handle()`, waits: it would hang on a start that
    never resolves, so the future is read through its attribute when it is there.
    """
    future = getattr(start, "_workflow_handle", None)
    if isinstance(future, asyncio.Future):
        if future.done():
            with contextlib.suppress(BaseException):
                future.exception()
        else:
            future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        with contextlib.suppress(BaseException):
            future.exception()


async def refusal_of(handle: WorkflowUpdateHandle[BookingResult]) -> Rejection | None:
    """The validator's refusal of an update sent with wait ACCEPTED, or None once accepted."""
    try:
        async with asyncio.timeout(REFUSAL_PROBE_SECONDS):
            await handle.result()
    except WorkflowUpdateFailedError as failed:
        return None if parked(failed) else Rejection(refusal_reason(failed))
    except NOT_TAKEN:  # still running, or the result RPC was lost: accepted, which is what counts
        return None
    return None


def parked(failed: WorkflowUpdateFailedError) -> bool:
    """The booking is parked for an operator: the workflow has it and will finish it."""
    cause = failed.cause
    return isinstance(cause, ApplicationError) and cause.type == BOOKING_NOT_DONE_ERROR


def refusal_reason(error: BaseException) -> str:
    """The workflow's own words for a refusal (validator or handler messages carry no PII)."""
    if isinstance(error, WorkflowAlreadyStartedError):
        return ALREADY_FINISHED
    if isinstance(error, RefusedError):
        return str(error)
    cause = error.__cause__
    if isinstance(cause, ApplicationError) and cause.message:
        return cause.message
    # Anything else (a payload the workflow could not decode) may quote the payload: name it only.
    return type(cause or error).__name__
