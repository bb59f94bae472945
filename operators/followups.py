"""Operator operations on follow-ups (list, show, retry, skip) through the Temporal client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from contracts.codec import PayloadKeyError
from contracts.models import (
    FollowUpProgress,
    FollowUpStatus,
    FollowUpStep,
    RetryStepRequest,
    SkipStepRequest,
    StepState,
)
from contracts.names import (
    FOLLOW_UP_FAILED_STEP,
    FOLLOW_UP_STATUS,
    PROGRESS_QUERY,
    RETRY_STEP_UPDATE,
    SKIP_STEP_UPDATE,
    WORKFLOW_TYPE,
    call_id_from_workflow_id,
    workflow_id_for,
)

# An RPC that a missing worker could block (queries, updates) gives up after this long.
QUERY_TIMEOUT: Final = timedelta(seconds=5)
UPDATE_TIMEOUT: Final = timedelta(seconds=30)
LIST_LIMIT: Final = 50
WAIT_POLL_SECONDS: Final = 0.5
LAST_ERROR_CHARS: Final = 120
# The UI summary reads "Trial call follow-up for <who>: <what>"; the table shows <who> only.
_SUMMARY_WHO: Final = re.compile(r"^Trial call follow-up for (?P<who>.+?): ")
UNREADABLE_SUMMARY: Final = "(encrypted with a key not configured here)"
# Steps in these states have not settled yet after a retry.
UNSETTLED: Final = frozenset({StepState.PENDING, StepState.RUNNING})


class OperatorError(Exception):
    """A request that cannot be done; the message says why and what to do instead."""


@dataclass(frozen=True, kw_only=True)
class FollowUpRow:
    """One line of `trialist followups list`."""

    call_id: str
    workflow_id: str
    who: str
    status: str
    failed_step: str | None
    last_error: str | None
    started_at: datetime
    ui_link: str

    def age(self, now: datetime | None = None) -> str:
        return format_age((now or datetime.now(UTC)) - self.started_at)


def format_age(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"


def parse_step(name: str) -> FollowUpStep:
    try:
        return FollowUpStep(name)
    except ValueError:
        valid = ", ".join(step.value for step in FollowUpStep)
        raise OperatorError(f"unknown step {name!r}; valid steps: {valid}") from None


def parse_skip(step: FollowUpStep, reason: str) -> SkipStepRequest:
    """The skip_step request, or OperatorError naming what is wrong with --reason."""
    try:
        return SkipStepRequest(step=step, reason=reason)
    except ValidationError as error:
        problem = "; ".join(item["msg"] for item in error.errors(include_input=False))
        raise OperatorError(f"--reason: {problem}") from None


def parse_status(name: str) -> FollowUpStatus:
    try:
        return FollowUpStatus(name)
    except ValueError:
        valid = ", ".join(status.value for status in FollowUpStatus)
        raise OperatorError(f"unknown status {name!r}; valid statuses: {valid}") from None


def visibility_query(status: FollowUpStatus | None) -> str:
    query = f'WorkflowType="{WORKFLOW_TYPE}"'
    if status is not None:
        query += f' AND {FOLLOW_UP_STATUS.name}="{status.value}"'
    return query


def parked_steps(progress: FollowUpProgress) -> list[FollowUpStep]:
    return [s for s, p in progress.steps.items() if p.state is StepState.NEEDS_ATTENTION]


def describe_error(progress: FollowUpProgress) -> str | None:
    """The last error of the first parked step (else of any step), as one short line."""
    ordered = parked_steps(progress) + list(progress.steps)
    for step in ordered:
        error = progress.steps[step].last_error
        if error is not None:
            return shorten(f"{error.kind}: {error.message}", LAST_ERROR_CHARS)
    return None


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def who_from_summary(summary: str | None) -> str:
    """Who a follow-up is for, from its static summary (contracts.follow_up_summary)."""
    if not summary:
        return "-"
    found = _SUMMARY_WHO.match(summary)
    return found.group("who") if found else summary


class FollowUps:
    """Follow-up workflows on one Temporal namespace, as an operator sees them."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    # --- reading ------------------------------------------------------------------------------
    async def list_rows(
        self, *, status: FollowUpStatus | None = None, limit: int = LIST_LIMIT
    ) -> list[FollowUpRow]:
        """Follow-ups newest first, filtered by FollowUpStatus through a visibility query."""
        executions = [
            execution
            async for execution in self.client.list_workflows(visibility_query(status), limit=limit)
        ]
        return list(await asyncio.gather(*(self._row(e) for e in executions)))

    async def _row(self, execution: WorkflowExecution) -> FollowUpRow:
        handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
        description = await handle.describe()
        last_error: str | None = None
        if execution.status is WorkflowExecutionStatus.RUNNING:
            try:
                last_error = describe_error(await self._query(handle))
            except OperatorError as error:
                last_error = f"({error})"
        attributes = execution.typed_search_attributes
        return FollowUpRow(
            call_id=_call_id(execution.id),
            workflow_id=execution.id,
            who=await _who(description),
            status=attributes.get(FOLLOW_UP_STATUS) or _closed_status(execution),
            failed_step=attributes.get(FOLLOW_UP_FAILED_STEP) or None,
            last_error=last_error,
            started_at=execution.start_time,
            ui_link=self.settings.workflow_ui_link(execution.id),
        )

    async def progress(self, call_id: str) -> FollowUpProgress:
        """Each step's state, attempts and last error (query `progress`)."""
        handle = self._handle(call_id)
        await self._describe(call_id, handle)
        return await self._query(handle)

    # --- repairing ----------------------------------------------------------------------------
    async def retry(self, call_id: str, step: FollowUpStep | None) -> list[FollowUpStep]:
        """Send update `retry_step`; returns the steps retried. None retries every parked step."""
        handle, progress = await self._parked(call_id)
        parked = parked_steps(progress)
        if step is not None and step not in parked:
            raise OperatorError(_not_parked_step(call_id, step, progress))
        await self._update(handle, RETRY_STEP_UPDATE, RetryStepRequest(step=step))
        return [step] if step is not None else parked

    async def skip(self, call_id: str, step: FollowUpStep, reason: str) -> None:
        """Send update `skip_step`: the step is recorded as skipped with `reason`."""
        if not reason.strip():
            raise OperatorError("--reason must say why the step is skipped")
        request = parse_skip(step, reason)
        handle, progress = await self._parked(call_id)
        if step not in parked_steps(progress):
            raise OperatorError(_not_parked_step(call_id, step, progress))
        await self._update(handle, SKIP_STEP_UPDATE, request)

    async def wait_settled(
        self, call_id: str, steps: Sequence[FollowUpStep], *, within_seconds: float
    ) -> tuple[FollowUpProgress, bool]:
        """Poll `progress` until none of `steps` is pending or running; (progress, settled)."""
        handle = self._handle(call_id)
        deadline = time.monotonic() + within_seconds
        while True:
            progress = await self._query(handle)
            settled = all(
                progress.steps[s].state not in UNSETTLED for s in steps if s in progress.steps
            )
            if settled or time.monotonic() >= deadline:
                return progress, settled
            await asyncio.sleep(WAIT_POLL_SECONDS)

    # --- plumbing -----------------------------------------------------------------------------
    def _handle(self, call_id: str) -> WorkflowHandle[object, object]:
        return self.client.get_workflow_handle(workflow_id_for(call_id))

    async def _describe(
        self, call_id: str, handle: WorkflowHandle[object, object]
    ) -> WorkflowExecutionStatus | None:
        """The workflow's run status; OperatorError when there is no such follow-up."""
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise OperatorError(
                    f"no follow-up for call id {call_id!r}: workflow {handle.id} does not exist in "
                    f"namespace {self.client.namespace!r} (see `trialist followups list`)"
                ) from None
            raise
        if description.workflow_type != WORKFLOW_TYPE:
            raise OperatorError(
                f"workflow {handle.id} is a {description.workflow_type}, not a follow-up"
            )
        return description.status

    async def _parked(
        self, call_id: str
    ) -> tuple[WorkflowHandle[object, object], FollowUpProgress]:
        handle = self._handle(call_id)
        run_status = await self._describe(call_id, handle)
        if run_status is not WorkflowExecutionStatus.RUNNING:
            state = run_status.name.lower() if run_status else "closed"
            raise OperatorError(
                f"the follow-up for call {call_id} is {state}, not parked: nothing to repair"
            )
        progress = await self._query(handle)
        if progress.status is not FollowUpStatus.NEEDS_ATTENTION:
            raise OperatorError(
                f"the follow-up for call {call_id} is {progress.status.value}, not "
                f"{FollowUpStatus.NEEDS_ATTENTION.value}: no step is parked"
            )
        return handle, progress

    async def _query(self, handle: WorkflowHandle[object, object]) -> FollowUpProgress:
        try:
            progress: FollowUpProgress = await handle.query(
                PROGRESS_QUERY, result_type=FollowUpProgress, rpc_timeout=QUERY_TIMEOUT
            )
            return progress
        except (WorkflowQueryRejectedError, WorkflowQueryFailedError) as error:
            raise OperatorError(f"query {PROGRESS_QUERY} failed: {error}") from None
        except PayloadKeyError as error:  # the worker's key is not among this CLI's keys
            raise OperatorError(f"cannot read the {PROGRESS_QUERY} answer: {error}") from None
        except RPCError as error:
            if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise OperatorError(
                    "no worker answered the progress query: is the worker running "
                    f"on task queue {self.settings.temporal_task_queue}?"
                ) from None
            raise OperatorError(f"query {PROGRESS_QUERY} failed: {error.message}") from None

    async def _update(
        self, handle: WorkflowHandle[object, object], name: str, request: object
    ) -> None:
        try:
            await handle.execute_update(name, request, rpc_timeout=UPDATE_TIMEOUT)
        except WorkflowUpdateFailedError as error:
            raise OperatorError(
                f"the follow-up rejected {name}: {_failure_message(error)}"
            ) from None
        except PayloadKeyError as error:
            raise OperatorError(f"cannot read the answer to {name}: {error}") from None
        except RPCError as error:
            if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise OperatorError(
                    f"no worker accepted update {name} within {UPDATE_TIMEOUT.seconds}s: "
                    f"is the worker running on task queue {self.settings.temporal_task_queue}?"
                ) from None
            raise OperatorError(f"update {name} failed: {error.message}") from None


async def _who(description: WorkflowExecutionDescription) -> str:
    """Who, from the decoded static summary; a summary under a key we lack is shown as such."""
    try:
        return who_from_summary(await description.static_summary())
    except PayloadKeyError:
        return UNREADABLE_SUMMARY


def _failure_message(error: WorkflowUpdateFailedError) -> str:
    cause = error.cause
    if isinstance(cause, ApplicationError | FailureError):
        return cause.message
    return str(cause)


def _not_parked_step(call_id: str, step: FollowUpStep, progress: FollowUpProgress) -> str:
    state = progress.steps[step].state.value if step in progress.steps else "not part of it"
    parked = ", ".join(s.value for s in parked_steps(progress)) or "none"
    return f"step {step.value} of call {call_id} is {state}, not parked; parked steps: {parked}"


def _call_id(workflow_id: str) -> str:
    try:
        return call_id_from_workflow_id(workflow_id)
    except ValueError:
        return workflow_id


def _closed_status(execution: WorkflowExecution) -> str:
    return execution.status.name.lower() if execution.status is not None else "unknown"
