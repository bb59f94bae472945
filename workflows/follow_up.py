"""CallFollowUpWorkflow: one per call; books in the call, then syncs CRMs and analytics durably."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    # pydantic imports this lazily to validate EmailStr; loading it here keeps it out of every run.

    import email_validator  # noqa: F401

    from contracts.activities import (
        ActivityOutput,
    )
    from contracts.models import (
        BookingRequest,
        BookingResult,
        CallCheckpoint,
        CallOutcome,
        FollowUpInput,
        FollowUpProgress,
        FollowUpStatus,
        FollowUpStep,
        RetryStepRequest,
        SkipStepRequest,
        StepState,
        Trialist,
    )
    from contracts.names import (
        BOOK_MEETING_UPDATE,
        BOOKING_CONFLICT_ERROR,
        BOOKING_NOT_DONE_ERROR,
        CALL_ENDED_SIGNAL,
        CALL_REPORT_SIGNAL,
        CHECKPOINT_SIGNAL,
        FOLLOW_UP_FAILED_STEP,
        FOLLOW_UP_STATUS,
        OUTREACH_REPORT_PATCH,
        PROGRESS_QUERY,
        RETRY_STEP_UPDATE,
        SKIP_STEP_UPDATE,
        WORKFLOW_TYPE,
        call_id_from_workflow_id,
    )
    from contracts.outreach import call_report

from workflows.call_liveness import CallLiveness
from workflows.follow_up_booking import BookingRules
from workflows.follow_up_details import details_markdown, error_line
from workflows.follow_up_steps import (
    FACT_SOURCES,
    STEP_GRAPH,
    Fact,
    Known,
    NotNeeded,
    StepSpec,
)
from workflows.messages import NO_INPUT, RefusedMessage, decode, decode_one, message_name

# A retry_step/skip_step whose step another update in the same activation already handled.
NOT_PARKED_ERROR: Final = "step_not_parked"
INVALID_START_INPUT_ERROR: Final = "invalid_start_input"
UNKNOWN_CALL_ID: Final = "unknown"
NOBODY: Final = "nobody to write: no call outcome and no booking"
NO_CALL_DETAILS: Final = "call_ended never arrived: no call details to log"
OUTCOME_MISSING_NOTICE: Final = "call_ended never arrived: the follow-up used what it had."
AGENT_LOST_NOTICE: Final = "The agent went silent mid-call: the follow-up used its last checkpoint."


@workflow.defn(name=WORKFLOW_TYPE)
class CallFollowUpWorkflow(BookingRules, CallLiveness):
    """Durable follow-up of one call. See docs/follow-up.md for the state machine."""

    @workflow.init
    def __init__(self, input: RawValue = NO_INPUT) -> None:
        self._start_problem: str | None = None
        try:
            self._input = decode(input, FollowUpInput)
        except RefusedMessage as refused:
            self._start_problem = str(refused)
            self._input = FollowUpInput(call_id=_call_id_of_this_workflow())
        self._init_state(self._input)

    @workflow.run
    async def run(self, input: RawValue = NO_INPUT) -> FollowUpProgress:
        if self._start_problem is not None:
            # Nothing can be done without a usable input: fail once, readably, instead of a
            # workflow task that fails on every retry.
            raise ApplicationError(
                f"the start input cannot be used: {self._start_problem}",
                type=INVALID_START_INPUT_ERROR,
                non_retryable=True,
            )
        self._refresh()  # starters set in_call too; this covers a start without it
        timeout = self._input.call_ended_timeout_seconds
        give_up_at = workflow.now() + timedelta(seconds=timeout)
        try:
            # A checkpoint ends this first wait too: from then on the liveness rule applies.
            # (Follow-ups that never get one wait exactly as before, so their histories replay.)
            await workflow.wait_condition(
                lambda: self._outcome is not None or self._last_heard is not None,
                timeout=timedelta(seconds=timeout),
                timeout_summary="wait for call_ended",
            )
        except TimeoutError:  # asyncio's, raised by wait_condition
            self._outcome_missing = True
            workflow.logger.warning(
                "call_ended did not arrive within %gs; continuing with what is known", timeout
            )
        else:
            await self._watch_liveness(give_up_at)
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

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal arrives here raw, so a bad one is dropped with a log line, never raised."""
        if name not in (CALL_ENDED_SIGNAL, CHECKPOINT_SIGNAL):
            workflow.logger.warning("signal %r dropped: no such signal", message_name(name))
            return
        try:
            if name == CHECKPOINT_SIGNAL:
                self._checkpoint(decode_one(args, CallCheckpoint))
            else:
                self._call_ended(decode_one(args, CallOutcome))
        except RefusedMessage as refused:
            workflow.logger.warning("signal %s dropped: %s", name, refused)

    def _call_ended(self, outcome: CallOutcome) -> None:
        """The call's outcome, sent once at hang-up. The first one wins; repeats are ignored."""
        if outcome.call_id != self._input.call_id:
            workflow.logger.warning("signal %s dropped: it is another call's", CALL_ENDED_SIGNAL)
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
            else "waiting for an operator: " + error_line(progress.last_error)
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
        request.check_bookable(workflow.now())
        previous = self._booking_request
        if previous is not None and not previous.same_slot(request):
            conflict = self._booking_conflict(previous)
            if conflict is not None:
                raise ValueError(conflict)

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
            agent_lost=self._agent_lost,
            steps=dict(self._steps),
            booking=self._booking_result,
        )

    # --- the steps after the call: STEP_GRAPH, run in its order --------------------------------

    async def _run_steps(self) -> None:
        """Every step at once; each waits for the facts it needs (workflows/follow_up_steps.py)."""
        tasks: list[asyncio.Task[Any]] = []
        for spec in STEP_GRAPH:
            if spec.build is None:  # the booking: its own rules, it may have started in the call
                self._meeting_task = asyncio.create_task(self._settle_booking())
                tasks.append(self._meeting_task)
                continue
            task = asyncio.create_task(self._run_spec(spec))
            self._outputs[spec.step] = task
            tasks.append(task)
        await asyncio.gather(*tasks)

    async def _run_spec(self, spec: StepSpec) -> ActivityOutput | None:
        """Wait for the step's facts in order; run it, or settle it when one is missing."""
        found: dict[Fact, Any] = {}
        for fact in spec.needs:
            value = await self._fact(fact)
            if value is None and fact is not Fact.BOOKING_SETTLED:
                self._settle_missing(spec.step, fact)
                return None
            found[fact] = value
        assert spec.build is not None  # the booking step runs through _settle_booking
        arg = spec.build(self._known(found))
        if isinstance(arg, NotNeeded):
            self._not_needed(spec.step, arg.reason)
            return None
        return await self._run_step(spec.step, lambda: self._call(spec, arg))

    async def _fact(self, fact: Fact) -> Any:
        """A fact's value, waiting for the step that produces it; None when it has none."""
        if fact is Fact.PERSON:
            return self._trialist()
        if fact is Fact.OUTCOME:
            return self._outcome
        if fact in (Fact.MEETING, Fact.BOOKING_SETTLED):
            assert self._meeting_task is not None
            return await self._meeting_task
        if fact is Fact.OWED:
            assert self._meeting_task is not None
            await self._meeting_task
            return self._owed
        source, read = FACT_SOURCES[fact]
        output = await self._outputs[source]
        return read(output) if output is not None else None

    def _known(self, found: dict[Fact, Any]) -> Known:
        meeting = found.get(Fact.MEETING, found.get(Fact.BOOKING_SETTLED))
        return Known(
            call_id=self._input.call_id,
            trialist=self._trialist(),
            outcome=self._outcome,
            outcome_missing=self._outcome_missing,
            lead_id=found.get(Fact.LEAD),
            contact_id=found.get(Fact.CONTACT),
            meeting=meeting,
            owed=found.get(Fact.OWED),
            now=workflow.now(),
        )

    def _settle_missing(self, step: FollowUpStep, fact: Fact) -> None:
        if fact is Fact.PERSON:
            self._not_needed(step, NOBODY)
        elif fact is Fact.OUTCOME:
            self._not_needed(step, NO_CALL_DETAILS)
        elif fact is Fact.MEETING:
            self._blocked(step, FollowUpStep.BOOK_MEETING, "no meeting was booked")
        elif fact is Fact.OWED:
            self._not_needed(step, "no promise to keep: nothing was promised, or it was kept")
        else:
            self._blocked(step, FACT_SOURCES[fact][0])

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
        workflow.set_current_details(
            details_markdown(
                call_id=self._input.call_id,
                status=status,
                notices=self._notices(),
                steps=self._steps,
                parked=parked,
            )
        )

    def _notices(self) -> list[str]:
        notices = [OUTCOME_MISSING_NOTICE] if self._outcome_missing else []
        if self._agent_lost:
            notices.append(AGENT_LOST_NOTICE)
        if self._promise_note is not None:
            notices.append(self._promise_note)
        if self._owed is not None:
            notices.append(
                f"The caller was promised an invite for {self._owed.requested_slot.isoformat()}; "
                f"it could not be booked ({self._owed.reason}). The rep is asked to reply to them "
                "(a Salesforce task and a HubSpot note)."
            )
        return notices

    def _trialist(self) -> Trialist | None:
        if self._outcome is not None:
            return self._outcome.trialist
        return self._booking_request.guest if self._booking_request is not None else None


def _call_id_of_this_workflow() -> str:
    """The call id in this workflow's id, for a follow-up whose start input is unusable."""
    try:
        return FollowUpInput(call_id=call_id_from_workflow_id(workflow.info().workflow_id)).call_id
    except ValueError:
        return UNKNOWN_CALL_ID
