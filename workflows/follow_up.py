"""CallFollowUpWorkflow: one per call; books in the call, then syncs CRMs and analytics durably."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.types import MethodAsyncSingleParam

with workflow.unsafe.imports_passed_through():
    # pydantic imports this lazily to validate EmailStr; loading it here keeps it out of every run.
    import email_validator  # noqa: F401

    from activities.errors import NON_RETRYABLE_ERROR_TYPES
    from activities.follow_up import FollowUpActivities
    from contracts.activities import (
        ActivityOutput,
        BookMeetingInput,
        LogCallHubSpotInput,
        LogCallSalesforceInput,
        MeetingRecord,
        RecordMeetingHubSpotInput,
        RecordMeetingSalesforceInput,
        TrackAnalyticsInput,
        UpsertPersonInput,
    )
    from contracts.models import (
        BookingRequest,
        BookingResult,
        BookingStatus,
        CallOutcome,
        FollowUpInput,
        FollowUpProgress,
        FollowUpStatus,
        FollowUpStep,
        QualificationSignals,
        RetryStepRequest,
        SkipStepRequest,
        StepError,
        StepProgress,
        StepState,
        Trialist,
    )
    from contracts.names import (
        BOOK_MEETING_UPDATE,
        BOOKING_CONFLICT_ERROR,
        BOOKING_NOT_DONE_ERROR,
        CALL_ENDED_SIGNAL,
        CALL_REPORT_SIGNAL,
        FOLLOW_UP_FAILED_STEP,
        FOLLOW_UP_STATUS,
        OUTREACH_REPORT_PATCH,
        PROGRESS_QUERY,
        RETRY_STEP_UPDATE,
        SKIP_STEP_UPDATE,
        WORKFLOW_TYPE,
        workflow_id_for,
    )
    from contracts.outreach import call_report

_In = TypeVar("_In")
_Out = TypeVar("_Out", bound=ActivityOutput)

# --- timeouts and retries: every vendor step shares one policy; the input bounds its total time --

RETRY_INITIAL_INTERVAL: Final = timedelta(seconds=1)
RETRY_BACKOFF: Final = 2.0
RETRY_MAX_INTERVAL: Final = timedelta(minutes=5)
# Unlimited attempts: the step's schedule-to-close (FollowUpInput) is what bounds the retrying.
VENDOR_RETRY_POLICY: Final = RetryPolicy(
    initial_interval=RETRY_INITIAL_INTERVAL,
    backoff_coefficient=RETRY_BACKOFF,
    maximum_interval=RETRY_MAX_INTERVAL,
    maximum_attempts=0,
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)
SINGLE_CALL_TIMEOUT: Final = timedelta(seconds=30)  # one attempt of a one-request write
MULTI_CALL_TIMEOUT: Final = timedelta(minutes=2)  # one attempt that makes several requests
# The longest gap between two heartbeats; activities.heartbeats stays quiet for its first quarter.
HEARTBEAT_TIMEOUT: Final = timedelta(seconds=20)


@dataclass(frozen=True)
class AttemptTimeouts:
    start_to_close: timedelta
    heartbeat: timedelta | None = None


STEP_TIMEOUTS: Final[dict[FollowUpStep, AttemptTimeouts]] = {
    FollowUpStep.UPSERT_SALESFORCE_LEAD: AttemptTimeouts(SINGLE_CALL_TIMEOUT),
    FollowUpStep.UPSERT_HUBSPOT_CONTACT: AttemptTimeouts(SINGLE_CALL_TIMEOUT),
    FollowUpStep.LOG_CALL_SALESFORCE: AttemptTimeouts(SINGLE_CALL_TIMEOUT),
    FollowUpStep.LOG_CALL_HUBSPOT: AttemptTimeouts(MULTI_CALL_TIMEOUT, HEARTBEAT_TIMEOUT),
    FollowUpStep.BOOK_MEETING: AttemptTimeouts(MULTI_CALL_TIMEOUT, HEARTBEAT_TIMEOUT),
    FollowUpStep.RECORD_MEETING_SALESFORCE: AttemptTimeouts(SINGLE_CALL_TIMEOUT),
    FollowUpStep.RECORD_MEETING_HUBSPOT: AttemptTimeouts(SINGLE_CALL_TIMEOUT),
    FollowUpStep.TRACK_ANALYTICS: AttemptTimeouts(MULTI_CALL_TIMEOUT, HEARTBEAT_TIMEOUT),
}

# A retry_step/skip_step whose step another update in the same activation already handled.
NOT_PARKED_ERROR: Final = "step_not_parked"
# How the server reports that a retryable error ran out of attempts or of schedule-to-close.
RETRIES_EXHAUSTED: Final = frozenset({RetryState.TIMEOUT, RetryState.MAXIMUM_ATTEMPTS_REACHED})


@workflow.defn(name=WORKFLOW_TYPE)
class CallFollowUpWorkflow:
    """Durable follow-up of one call. See docs/follow-up.md for the state machine."""

    @workflow.init
    def __init__(self, input: FollowUpInput) -> None:
        self._input = input
        self._outcome: CallOutcome | None = None
        self._outcome_missing = False
        self._call_over = False
        self._done = False
        self._steps: dict[FollowUpStep, StepProgress] = {
            step: StepProgress() for step in FollowUpStep
        }
        self._parked: dict[FollowUpStep, StepError] = {}
        self._decisions: dict[FollowUpStep, RetryStepRequest | SkipStepRequest] = {}
        self._booking_request: BookingRequest | None = None
        self._booking_result: BookingResult | None = None
        self._booking_task: asyncio.Task[BookingResult | None] | None = None
        self._published: tuple[FollowUpStatus, FollowUpStep | None] | None = None

    @workflow.run
    async def run(self, input: FollowUpInput) -> FollowUpProgress:
        self._refresh()  # starters set in_call too; this covers a start without it
        try:
            await workflow.wait_condition(
                lambda: self._outcome is not None,
                timeout=timedelta(seconds=input.call_ended_timeout_seconds),
                timeout_summary="wait for call_ended",
            )
        except TimeoutError:  # asyncio's, raised by wait_condition
            self._outcome_missing = True
            workflow.logger.warning(
                "call_ended did not arrive within %gs; continuing with what is known",
                input.call_ended_timeout_seconds,
            )
        self._call_over = True
        self._refresh()
        await self._run_steps()
        # A book_meeting handler may still be returning its result: let it finish first.
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._done = True
        self._refresh()
        await self._report_to_outreach()
        return self.progress()

    async def _report_to_outreach(self) -> None:
        """Tell the outreach that placed this call how it went (issue 16); one patched block."""
        outreach = self._input.outreach_workflow_id
        if outreach is None or not workflow.patched(OUTREACH_REPORT_PATCH):
            return
        report = call_report(self._input.call_id, self._outcome, self._booking_result)
        try:
            await workflow.get_external_workflow_handle(outreach).signal(CALL_REPORT_SIGNAL, report)
        except Exception:  # the outreach ended meanwhile (an opt-out, a cancel): nothing to tell
            workflow.logger.info("call report not delivered: the outreach has ended")

    # --- handlers -------------------------------------------------------------------------------

    @workflow.signal(name=CALL_ENDED_SIGNAL)
    def call_ended(self, outcome: CallOutcome) -> None:
        """The call's outcome, sent once at hang-up. The first one wins; repeats are ignored."""
        if outcome.call_id != self._input.call_id:
            workflow.logger.warning("call_ended for another call ignored")
        elif self._outcome is not None:
            workflow.logger.info("duplicate call_ended ignored")
        elif self._call_over:
            workflow.logger.warning("call_ended arrived after the wait timed out; ignored")
        else:
            self._outcome = outcome

    @workflow.update(name=BOOK_MEETING_UPDATE)
    async def book_meeting(self, request: BookingRequest) -> BookingResult:
        """Book the slot the caller chose; the same slot again returns the same result."""
        previous = self._booking_request
        if previous is None or not previous.same_slot(request):
            # Validators of two updates in one activation both see the old state: check again.
            conflict = self._booking_conflict(previous)
            if conflict is not None:
                raise ApplicationError(conflict, type=BOOKING_CONFLICT_ERROR, non_retryable=True)
            self._start_booking(request)
        step = FollowUpStep.BOOK_MEETING
        await workflow.wait_condition(
            lambda: (
                self._booking_result is not None
                or self._steps[step].state in (StepState.NEEDS_ATTENTION, StepState.SKIPPED)
            )
        )
        if self._booking_result is not None:
            return self._booking_result
        progress = self._steps[step]
        reason = (
            f"skipped by an operator: {progress.skip_reason}"
            if progress.state is StepState.SKIPPED
            else "waiting for an operator: " + _error_line(progress.last_error)
        )
        raise ApplicationError(
            f"the booking is not done, {reason}", type=BOOKING_NOT_DONE_ERROR, non_retryable=True
        )

    @book_meeting.validator
    def _validate_book_meeting(self, request: BookingRequest) -> None:
        if request.call_id != self._input.call_id:
            raise ValueError(f"call_id {request.call_id!r} is not this follow-up's call")
        if self._call_over or self._outcome is not None:
            raise ValueError("the call has ended: book_meeting is only accepted during the call")
        request.check_future(workflow.now())
        previous = self._booking_request
        if previous is not None and not previous.same_slot(request):
            conflict = self._booking_conflict(previous)
            if conflict is not None:
                raise ValueError(conflict)

    def _booking_conflict(self, previous: BookingRequest | None) -> str | None:
        """Why a booking of another slot is refused, or None when one may start."""
        if previous is None:
            return None
        when = previous.slot_start.isoformat()
        state = self._steps[FollowUpStep.BOOK_MEETING].state
        if self._booking_result is None and state is StepState.SKIPPED:
            return None  # an operator gave that booking up
        if self._booking_result is None:
            doing = "waits for an operator" if state is StepState.NEEDS_ATTENTION else "is running"
            return f"a booking for {when} {doing}; a second booking is refused"
        if self._booking_result.status is BookingStatus.BOOKED:
            return (
                f"a meeting is already booked for {when} "
                f"(meeting {self._booking_result.meeting_id}); a second booking is refused"
            )
        return None  # that slot was unavailable: the caller may pick another

    @workflow.update(name=RETRY_STEP_UPDATE)
    def retry_step(self, request: RetryStepRequest) -> FollowUpProgress:
        """Run a parked step again (or every parked step when `step` is None)."""
        wanted = [request.step] if request.step is not None else self._parked_in_order()
        # Another update in the same activation may have taken the step already.
        steps = [step for step in wanted if step in self._parked]
        if not steps:
            raise ApplicationError(
                f"{', '.join(wanted) or 'nothing'} is no longer waiting for an operator",
                type=NOT_PARKED_ERROR,
                non_retryable=True,
            )
        for step in steps:
            self._decisions[step] = request
            self._parked.pop(step, None)
            self._set(step, state=StepState.RUNNING)
        workflow.logger.info("operator retry of %s", ", ".join(steps))
        self._refresh()
        return self.progress()

    @retry_step.validator
    def _validate_retry_step(self, request: RetryStepRequest) -> None:
        if request.step is None:
            if not self._parked:
                raise ValueError("no step is waiting for an operator: nothing to retry")
            return
        self._check_parked(request.step, "retry")

    @workflow.update(name=SKIP_STEP_UPDATE)
    def skip_step(self, request: SkipStepRequest) -> FollowUpProgress:
        """Give up on a parked step; steps that need its result are skipped too."""
        if request.step not in self._parked:  # another update took it in the same activation
            raise ApplicationError(
                f"{request.step} is no longer waiting for an operator",
                type=NOT_PARKED_ERROR,
                non_retryable=True,
            )
        self._decisions[request.step] = request
        self._parked.pop(request.step, None)
        self._set(request.step, state=StepState.SKIPPED, skip_reason=request.reason)
        workflow.logger.info("operator skipped %s", request.step)
        self._refresh()
        return self.progress()

    @skip_step.validator
    def _validate_skip_step(self, request: SkipStepRequest) -> None:
        self._check_parked(request.step, "skip")

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> FollowUpProgress:
        return FollowUpProgress(
            call_id=self._input.call_id,
            status=self._status(),
            outcome_missing=self._outcome_missing,
            steps=dict(self._steps),
            booking=self._booking_result,
        )

    # --- the steps after the call -----------------------------------------------------------------

    async def _run_steps(self) -> None:
        """Independent steps run in parallel; each dependent step awaits its prerequisites."""
        trialist = self._trialist()
        lead = asyncio.create_task(self._upsert_salesforce_lead(trialist))
        contact = asyncio.create_task(self._upsert_hubspot_contact(trialist))
        meeting = asyncio.create_task(self._settle_booking())
        await asyncio.gather(
            lead,
            contact,
            meeting,
            self._log_call_salesforce(lead),
            self._log_call_hubspot(contact),
            self._record_meeting_salesforce(lead, meeting),
            self._record_meeting_hubspot(contact, meeting),
            self._track_analytics(trialist, meeting),
        )

    async def _upsert_salesforce_lead(self, trialist: Trialist | None) -> str | None:
        step = FollowUpStep.UPSERT_SALESFORCE_LEAD
        if trialist is None:
            self._not_needed(step, "nobody to write: no call outcome and no booking")
            return None
        arg = UpsertPersonInput(
            call_id=self._input.call_id, trialist=trialist, signals=self._signals()
        )
        output = await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.upsert_salesforce_lead, arg)
        )
        return output.lead_id if output is not None else None

    async def _upsert_hubspot_contact(self, trialist: Trialist | None) -> str | None:
        step = FollowUpStep.UPSERT_HUBSPOT_CONTACT
        if trialist is None:
            self._not_needed(step, "nobody to write: no call outcome and no booking")
            return None
        arg = UpsertPersonInput(
            call_id=self._input.call_id, trialist=trialist, signals=self._signals()
        )
        output = await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.upsert_hubspot_contact, arg)
        )
        return output.contact_id if output is not None else None

    async def _log_call_salesforce(self, lead: asyncio.Task[str | None]) -> None:
        step = FollowUpStep.LOG_CALL_SALESFORCE
        if self._outcome is None:
            self._not_needed(step, "call_ended never arrived: no call details to log")
            return
        lead_id = await lead
        if lead_id is None:
            self._blocked(step, FollowUpStep.UPSERT_SALESFORCE_LEAD)
            return
        arg = LogCallSalesforceInput(
            call_id=self._input.call_id, lead_id=lead_id, outcome=self._outcome
        )
        await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.log_call_salesforce, arg)
        )

    async def _log_call_hubspot(self, contact: asyncio.Task[str | None]) -> None:
        step = FollowUpStep.LOG_CALL_HUBSPOT
        if self._outcome is None:
            self._not_needed(step, "call_ended never arrived: no call details to log")
            return
        contact_id = await contact
        if contact_id is None:
            self._blocked(step, FollowUpStep.UPSERT_HUBSPOT_CONTACT)
            return
        arg = LogCallHubSpotInput(
            call_id=self._input.call_id, contact_id=contact_id, outcome=self._outcome
        )
        await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.log_call_hubspot, arg)
        )

    async def _settle_booking(self) -> MeetingRecord | None:
        """The booked meeting: from the call's own booking, the outcome, or a booking made now."""
        step = FollowUpStep.BOOK_MEETING
        outcome = self._outcome
        requested = outcome.requested_meeting if outcome is not None else None
        if self._booking_task is not None:
            await self._booking_task
            meeting = self._booked_meeting()
            if meeting is not None or self._booking_result is None:
                return meeting  # booked, or skipped by an operator
            if requested is None or (
                self._booking_request is not None and requested.same_slot(self._booking_request)
            ):
                return None  # the slot was unavailable and the call asked for nothing else
        elif outcome is not None and outcome.booking is not None:
            self._not_needed(
                step, f"confirmed during the call (meeting {outcome.booking.meeting_id})"
            )
            return MeetingRecord.from_confirmation(outcome.booking)
        if requested is None:
            self._not_needed(step, "no meeting was requested")
            return None
        try:
            requested.check_future(workflow.now())
        except ValueError as error:
            self._not_needed(step, f"not booked: {error}")
            return None
        self._start_booking(requested)
        assert self._booking_task is not None
        await self._booking_task
        return self._booked_meeting()

    async def _record_meeting_salesforce(
        self, lead: asyncio.Task[str | None], meeting_task: asyncio.Task[MeetingRecord | None]
    ) -> None:
        step = FollowUpStep.RECORD_MEETING_SALESFORCE
        meeting = await meeting_task
        if meeting is None:
            self._blocked(step, FollowUpStep.BOOK_MEETING, "no meeting was booked")
            return
        lead_id = await lead
        if lead_id is None:
            self._blocked(step, FollowUpStep.UPSERT_SALESFORCE_LEAD)
            return
        arg = RecordMeetingSalesforceInput(
            call_id=self._input.call_id, lead_id=lead_id, meeting=meeting
        )
        await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.record_meeting_salesforce, arg)
        )

    async def _record_meeting_hubspot(
        self, contact: asyncio.Task[str | None], meeting_task: asyncio.Task[MeetingRecord | None]
    ) -> None:
        step = FollowUpStep.RECORD_MEETING_HUBSPOT
        meeting = await meeting_task
        if meeting is None:
            self._blocked(step, FollowUpStep.BOOK_MEETING, "no meeting was booked")
            return
        contact_id = await contact
        if contact_id is None:
            self._blocked(step, FollowUpStep.UPSERT_HUBSPOT_CONTACT)
            return
        arg = RecordMeetingHubSpotInput(
            call_id=self._input.call_id, contact_id=contact_id, meeting=meeting
        )
        await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.record_meeting_hubspot, arg)
        )

    async def _track_analytics(
        self, trialist: Trialist | None, meeting_task: asyncio.Task[MeetingRecord | None]
    ) -> None:
        step = FollowUpStep.TRACK_ANALYTICS
        if trialist is None:
            self._not_needed(step, "nobody to report: no call outcome and no booking")
            return
        # Waits for the booking to settle, so the events say whether a meeting came of the call.
        meeting = await meeting_task
        if self._outcome is None and meeting is None:
            self._not_needed(step, "no call outcome and no meeting to report")
            return
        arg = TrackAnalyticsInput(
            call_id=self._input.call_id,
            user_id=trialist.trial_account_id,
            outcome=self._outcome,
            outcome_missing=self._outcome_missing,
            meeting=meeting,
            tracked_at=self._outcome.ended_at if self._outcome is not None else workflow.now(),
        )
        await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.track_analytics, arg)
        )

    # --- booking ----------------------------------------------------------------------------------

    def _start_booking(self, request: BookingRequest) -> None:
        self._booking_request = request
        self._booking_result = None
        # Running from now on, so a waiting handler never sees the previous booking's state.
        self._set(FollowUpStep.BOOK_MEETING, state=StepState.RUNNING, skip_reason=None)
        self._booking_task = asyncio.create_task(self._book(request))

    async def _book(self, request: BookingRequest) -> BookingResult | None:
        step = FollowUpStep.BOOK_MEETING
        arg = BookMeetingInput(call_id=self._input.call_id, request=request)
        output = await self._run_step(
            step, lambda: self._call(step, FollowUpActivities.book_meeting, arg)
        )
        if output is None:
            return None
        self._booking_result = output.result
        if output.reconciled:
            workflow.logger.info("booking reconciled: the meeting already existed")
        return output.result

    def _booked_meeting(self) -> MeetingRecord | None:
        result, request = self._booking_result, self._booking_request
        if result is None or request is None or result.status is not BookingStatus.BOOKED:
            return None
        assert result.meeting_id is not None
        return MeetingRecord(
            meeting_id=result.meeting_id,
            start=result.slot_start,
            duration_minutes=request.duration_minutes,
        )

    # --- running one step with parking ------------------------------------------------------------

    async def _call(
        self,
        step: FollowUpStep,
        activity: MethodAsyncSingleParam[FollowUpActivities, _In, _Out],
        arg: _In,
    ) -> _Out:
        timeouts = STEP_TIMEOUTS[step]
        return await workflow.execute_activity_method(
            activity,
            arg,
            schedule_to_close_timeout=timedelta(seconds=self._input.step_schedule_to_close_seconds),
            start_to_close_timeout=timeouts.start_to_close,
            heartbeat_timeout=timeouts.heartbeat,
            retry_policy=VENDOR_RETRY_POLICY,
            summary=step.value,
        )

    async def _run_step(
        self, step: FollowUpStep, action: Callable[[], Awaitable[_Out]]
    ) -> _Out | None:
        """Run a step until it succeeds or an operator skips it; a failure parks it meanwhile."""
        while True:
            self._set(step, state=StepState.RUNNING)
            self._refresh()
            try:
                output = await action()
            except ActivityError as failure:
                error, attempts = _step_error(failure)
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

    # --- status, search attributes and details --------------------------------------------------

    def _status(self) -> FollowUpStatus:
        if self._done:
            return FollowUpStatus.COMPLETED
        if self._parked:
            return FollowUpStatus.NEEDS_ATTENTION
        return FollowUpStatus.RUNNING if self._call_over else FollowUpStatus.IN_CALL

    def _refresh(self) -> None:
        """Publish status and the first parked step (in step order) as search attributes."""
        status = self._status()
        parked = self._parked_in_order()
        failed = parked[0] if parked else None
        if self._published != (status, failed):
            workflow.upsert_search_attributes(
                [
                    FOLLOW_UP_STATUS.value_set(status.value),
                    FOLLOW_UP_FAILED_STEP.value_set(failed.value)
                    if failed is not None
                    else FOLLOW_UP_FAILED_STEP.value_unset(),
                ]
            )
            self._published = (status, failed)
        workflow.set_current_details(self._details(status, parked))

    def _details(self, status: FollowUpStatus, parked: list[FollowUpStep]) -> str:
        """Markdown for the UI: what failed, the vendor's error, and what an operator can do."""
        call_id = self._input.call_id
        lines = [f"**Follow-up of call `{call_id}`: {status}**"]
        if self._outcome_missing:
            lines.append("\ncall_ended never arrived: the follow-up used what it had.")
        for step in parked:
            lines += _parked_section(call_id, step, self._steps[step])
        lines += ["", "| step | state | attempts | note |", "|---|---|---|---|"]
        for step, progress in self._steps.items():
            error = progress.last_error
            failed = error is not None and progress.state is not StepState.SUCCEEDED
            note = progress.skip_reason or (error.kind if error is not None and failed else "")
            lines.append(f"| {step} | {progress.state} | {progress.attempts} | {note} |")
        return "\n".join(lines)

    def _trialist(self) -> Trialist | None:
        if self._outcome is not None:
            return self._outcome.trialist
        return self._booking_request.guest if self._booking_request is not None else None

    def _signals(self) -> QualificationSignals:
        return self._outcome.signals if self._outcome is not None else QualificationSignals()


def _step_error(failure: ActivityError) -> tuple[StepError, int]:
    """A StepError from an activity failure, and how many attempts it took (at least 1).

    Retryable errors end in one of two ways: the server stops retrying because the next attempt
    would pass the schedule-to-close (retry_state TIMEOUT, cause = the last error), or the
    schedule-to-close fires during an attempt (cause = a TimeoutError wrapping the last error).
    """
    cause = failure.cause
    timeout: TimeoutType | None = None
    if isinstance(cause, ActivityTimeoutError):
        timeout = cause.type or TimeoutType.SCHEDULE_TO_CLOSE
        cause = cause.cause  # the last attempt's failure, when there was one
    app = cause if isinstance(cause, ApplicationError) else None
    details: dict[str, Any] = {}
    if app is not None and app.details and isinstance(app.details[0], dict):
        details = app.details[0]
    last = f"; last error: {app.message}" if app is not None else ""
    if timeout is not None:
        kind = "timeout"
        message = f"{timeout.name.lower().replace('_', '-')} timeout{last}"
    elif app is not None and failure.retry_state in RETRIES_EXHAUSTED:
        kind = "retries_exhausted"
        message = f"retries ran out within the step's time budget{last}"
    elif app is not None:
        kind = app.type or "error"
        message = app.message
    else:
        kind = "error"
        message = str(cause or failure)
    attempt = details.get("attempt")
    error = StepError(
        kind=kind,
        message=message[:1000],
        vendor=details.get("vendor"),
        status_code=details.get("status_code"),
        error_code=details.get("error_code"),
        correlation_id=details.get("correlation_id"),
    )
    return error, attempt if isinstance(attempt, int) and attempt > 0 else 1


def _error_line(error: StepError | None) -> str:
    return "no error recorded" if error is None else f"{error.kind}: {error.message}"


def _vendor_line(error: StepError | None) -> str:
    """The vendor's own identifiers of the failure, for a support ticket."""
    if error is None:
        return "n/a"
    parts = [
        f"vendor **{error.vendor or 'n/a'}**",
        f"HTTP status **{error.status_code if error.status_code is not None else 'n/a'}**",
        f"error code **{error.error_code or 'n/a'}**",
        f"correlation id **{error.correlation_id or 'n/a'}**",
    ]
    return " · ".join(parts)


def _parked_section(call_id: str, step: FollowUpStep, progress: StepProgress) -> list[str]:
    error = progress.last_error
    workflow_id = workflow_id_for(call_id)
    return [
        "",
        f"### Needs attention: `{step}`",
        f"- error: {_error_line(error)}",
        f"- {_vendor_line(error)}",
        f"- attempts so far: {progress.attempts}",
        "",
        "What you can do, after fixing the cause (data, credentials, vendor outage):",
        f'- retry: send update `retry_step` with `{{"step": "{step}"}}`, or run '
        f"`trialist followups retry {call_id} {step}`",
        f'- skip: send update `skip_step` with `{{"step": "{step}", "reason": "..."}}`, '
        f'or run `trialist followups skip {call_id} {step} --reason "..."`',
        f"- CLI: `temporal workflow update execute --workflow-id {workflow_id} --name retry_step "
        f'--input \'{{"step": "{step}"}}\'`',
    ]
