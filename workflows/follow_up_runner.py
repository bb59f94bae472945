"""Running one follow-up step: its activity, retries left to Temporal, parking for an operator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import Priority
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from contracts.activities import ActivityOutput
    from contracts.models import FollowUpStep, SkipStepRequest, StepState
    from contracts.names import IN_CALL_PRIORITY, POST_CALL_PRIORITY

from workflows.follow_up_state import FollowUpState
from workflows.follow_up_steps import (
    IN_CALL_LOCAL_ATTEMPT_TIMEOUT,
    IN_CALL_LOCAL_BOOKING_PATCH,
    IN_CALL_LOCAL_BUDGET,
    IN_CALL_LOCAL_RETRY_POLICY,
    VENDOR_RETRY_POLICY,
    StepSpec,
)
from workflows.step_errors import retryable, step_error


class StepRunner(FollowUpState):
    """Runs a step until it succeeds or an operator skips it; settles steps that need not run."""

    async def _call(self, spec: StepSpec, arg: Any) -> ActivityOutput:
        # A caller waits on a booking made during the call: it goes before the post-call backlog.
        urgent = spec.step is FollowUpStep.BOOK_MEETING and not self._call_over
        if urgent and workflow.patched(IN_CALL_LOCAL_BOOKING_PATCH):
            try:
                return await workflow.execute_local_activity_method(
                    spec.activity,
                    arg,
                    schedule_to_close_timeout=IN_CALL_LOCAL_BUDGET,
                    start_to_close_timeout=IN_CALL_LOCAL_ATTEMPT_TIMEOUT,
                    retry_policy=IN_CALL_LOCAL_RETRY_POLICY,
                    summary=spec.step.value,
                )
            except (ActivityError, ApplicationError, ActivityTimeoutError) as failure:
                if not retryable(failure):
                    raise  # another attempt would fail the same way: park it now
                workflow.logger.info(
                    "step %s: not done within its in-call budget, it goes on as an activity",
                    spec.step,
                )
        return await workflow.execute_activity_method(
            spec.activity,
            arg,
            schedule_to_close_timeout=timedelta(seconds=self._input.step_schedule_to_close_seconds),
            start_to_close_timeout=spec.timeouts.start_to_close,
            heartbeat_timeout=spec.timeouts.heartbeat,
            retry_policy=VENDOR_RETRY_POLICY,
            summary=spec.step.value,
            priority=Priority(priority_key=IN_CALL_PRIORITY if urgent else POST_CALL_PRIORITY),
        )

    async def _run_step(
        self, step: FollowUpStep, action: Callable[[], Awaitable[ActivityOutput]]
    ) -> ActivityOutput | None:
        """Run a step until it succeeds or an operator skips it; a failure parks it meanwhile."""
        while True:
            self._set(step, state=StepState.RUNNING)
            self._refresh()
            try:
                output = await action()
            except (ActivityError, ApplicationError) as failure:  # a local activity's is bare
                error, attempts = step_error(failure)
                self._set(
                    step,
                    state=StepState.NEEDS_ATTENTION,
                    attempts=self._steps[step].attempts + attempts,
                    last_error=error,
                )
                self._parked[step] = error
                workflow.logger.warning("step %s needs attention: %s", step, error.kind)
                self._refresh()
                await workflow.wait_condition(lambda: step in self._decisions)
                if isinstance(self._decisions.pop(step), SkipStepRequest):
                    return None
                continue
            self._set(
                step,
                state=StepState.SUCCEEDED,
                attempts=self._steps[step].attempts + output.attempt,
            )
            self._refresh()
            return output

    def _set(self, step: FollowUpStep, **changes: Any) -> None:
        self._steps[step] = self._steps[step].model_copy(update=changes)

    def _not_needed(self, step: FollowUpStep, reason: str) -> None:
        self._set(step, state=StepState.NOT_NEEDED, skip_reason=reason)
        self._refresh()

    def _blocked(
        self, step: FollowUpStep, prerequisite: FollowUpStep, reason: str | None = None
    ) -> None:
        """Settle a step whose prerequisite produced nothing: skipped follows skipped."""
        before = self._steps[prerequisite]
        if before.state is StepState.SKIPPED:
            self._set(
                step,
                state=StepState.SKIPPED,
                skip_reason=f"{prerequisite} was skipped: {before.skip_reason}",
            )
        else:
            detail = reason or before.skip_reason or before.state.value
            self._set(step, state=StepState.NOT_NEEDED, skip_reason=f"{prerequisite}: {detail}")
        self._refresh()

    def _check_parked(self, step: FollowUpStep, verb: str) -> None:
        if step not in self._parked:
            parked = ", ".join(self._parked_in_order()) or "none"
            raise ValueError(
                f"cannot {verb} {step}: it is {self._steps[step].state}, "
                f"not waiting for an operator (parked: {parked})"
            )

    def _parked_in_order(self) -> list[FollowUpStep]:
        return [step for step in FollowUpStep if step in self._parked]

    def _refresh(self) -> None:  # the workflow publishes status and details
        raise NotImplementedError
