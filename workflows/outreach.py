"""OutreachWorkflow: one per trialist; decides lawfully when to dial, dials, and retries.

Each attempt waits for the next allowed window in the trialist's local time, passes a pre-dial
gate that records a reason for every dial and every block, takes a dial slot, dials through
LiveKit and waits for the result. See docs/outreach.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta
from typing import Final

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    # pydantic imports this lazily to validate EmailStr; loading it here keeps it out of every run.
    import email_validator  # noqa: F401

    from activities.errors import NON_RETRYABLE_ERROR_TYPES
    from contracts.calling_policy import (
        DialTime,
        VoicemailAction,
        cap_release,
        daily_cap,
        hours_verdict,
        next_dial_time,
    )
    from contracts.models import FollowUpInput, FollowUpStatus
    from contracts.names import (
        CALL_REPORT_SIGNAL,
        CANCEL_UPDATE,
        CHECK_CONTACT_ACTIVITY,
        DISPATCH_AGENT_ACTIVITY,
        FOLLOW_UP_STATUS,
        OPT_OUT_UPDATE,
        OUTREACH_PROGRESS_QUERY,
        OUTREACH_STATUS,
        OUTREACH_WORKFLOW_TYPE,
        PAUSE_UPDATE,
        PLACE_DIAL_ACTIVITY,
        RELEASE_SLOT_SIGNAL,
        REQUEST_SLOT_ACTIVITY,
        RESUME_UPDATE,
        SLOT_GRANTED_SIGNAL,
        UPDATE_CRM_ACTIVITY,
        WORKFLOW_TYPE,
        dial_slots_workflow_id,
        follow_up_summary,
        workflow_id_for,
    )
    from contracts.outreach import (
        END_STATUS,
        FINAL_STATUSES,
        MAX_ATTEMPTS_KEPT,
        MAX_GATES_KEPT,
        CallReport,
        CallResult,
        ContactFlags,
        ContactFlagsInput,
        CrmOutreachUpdate,
        CrmOutreachUpdateOutput,
        DialAttempt,
        DialResultKind,
        DispatchAgentInput,
        DispatchAgentOutput,
        GateDecision,
        OperatorRequest,
        OptOutRequest,
        OptOutResult,
        OutreachDispatch,
        OutreachEnd,
        OutreachInput,
        OutreachProgress,
        OutreachStatus,
        PlaceDialInput,
        PlaceDialOutput,
        SlotGrant,
        SlotRelease,
        SlotRequest,
        local_time_text,
    )

# --- activity options, next to the code that uses them ---------------------------------------

QUICK_RETRY: Final = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)
# A dial is retried only when it never left (TransientError from a refused connection).
DIAL_RETRY: Final = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)
GATE_TIMEOUT: Final = timedelta(minutes=2)
DIAL_START_TIMEOUT: Final = timedelta(minutes=5)  # a dial that can't start soon is not placed
DIAL_ATTEMPT_TIMEOUT: Final = timedelta(seconds=90)  # ringing (30 s) plus the SIP set-up
DISPATCH_TIMEOUT: Final = timedelta(minutes=1)
CRM_WRITE_TIMEOUT: Final = timedelta(hours=1)
# When the CRMs can't be read, no dial: the do-not-call list is checked before every dial.
GATE_RETRY_AFTER: Final = timedelta(minutes=15)
NOT_PLACED_RETRY_AFTER: Final = timedelta(minutes=5)
RINGING_SECONDS: Final = 60
MIN_CALL_SECONDS: Final = 300
OPT_OUT_START_WAIT: Final = timedelta(minutes=5)
# Outreaches started before it released a stopped call's dial slot at once; they replay so.
STOPPED_CALL_HOLDS_SLOT_PATCH: Final = "stopped-call-holds-its-dial-slot"
# "Call me back this afternoon", said in the afternoon: the window is already open, and a dial
# at its start would ring again within seconds of the call that asked. The next dial waits at
# least this long after the report (and still only inside lawful hours).
CALLBACK_MIN_GAP: Final = timedelta(hours=1)
CALLBACK_GAP_PATCH: Final = "callback-waits-at-least-an-hour"
# Kept out of the call's ids: they are search attributes and room names.
CALL_ID_PREFIX: Final = "ob-"


@workflow.defn(name=OUTREACH_WORKFLOW_TYPE)
class OutreachWorkflow:
    """Durable, lawful outreach to one trialist. See docs/outreach.md for the rules."""

    @workflow.init
    def __init__(self, input: OutreachInput) -> None:
        self._input = input
        self._status = OutreachStatus.SCHEDULED
        self._end: OutreachEnd | None = None
        self._attempts: list[DialAttempt] = []
        self._gates: list[GateDecision] = []
        self._opt_out: OptOutRequest | None = None
        self._opted_out_at: datetime | None = None
        self._opt_out_write: asyncio.Task[bool] | None = None
        self._paused: str | None = None
        self._cancelled: str | None = None
        self._changed = False
        self._next: DialTime | None = None
        self._why = "starting"
        self._not_before = input.not_before
        self._unanswered = 0
        self._in_call: str | None = None
        self._report: CallReport | None = None
        self._granted: str | None = None
        self._message_left = False
        self._published: OutreachStatus | None = None

    @workflow.run
    async def run(self, input: OutreachInput) -> OutreachProgress:
        if input.started_by == "opt_out":  # started only to record an opt-out (update-with-start)
            try:
                await workflow.wait_condition(
                    lambda: self._opt_out is not None, timeout=OPT_OUT_START_WAIT
                )
            except TimeoutError:
                self._cancelled = "started for an opt-out that never arrived"
        self._refresh()
        end = await self._loop()
        await self._finish(end)
        return self.progress()

    # --- the attempt loop ----------------------------------------------------------------------

    async def _loop(self) -> OutreachEnd:
        while True:
            stop = self._stop()
            if stop is not None:
                return stop
            if self._paused is not None:
                await self._wait_while_paused()
                continue
            decision = self._decide()
            if isinstance(decision, OutreachEnd):
                return decision
            now = workflow.now()
            if decision.at > now:
                await self._sleep_until(decision)
                continue
            end = await self._attempt(decision)
            if end is not None:
                return end

    def _stop(self) -> OutreachEnd | None:
        if self._opt_out is not None:
            return OutreachEnd.OPTED_OUT
        if self._cancelled is not None:
            return OutreachEnd.CANCELLED
        ends = self._input.trial_ends_at
        if ends is not None and workflow.now() >= ends:
            return OutreachEnd.TRIAL_ENDED
        return None

    def _decide(self) -> DialTime | OutreachEnd:
        policy = self._input.policy
        if len(self._attempts) >= policy.max_attempts_per_trial:
            self._why = f"all {policy.max_attempts_per_trial} attempts of this trial were used"
            return OutreachEnd.ATTEMPTS_EXHAUSTED
        decision = next_dial_time(
            now=workflow.now(),
            dials=[attempt.at for attempt in self._attempts],
            place=self._input.place,
            policy=policy,
            not_before=self._not_before,
        )
        if decision is None:
            self._why = "no allowed calling window in the next weeks"
            return OutreachEnd.NO_WINDOW
        ends = self._input.trial_ends_at
        if ends is not None and decision.at >= ends:
            self._why = f"the trial ends before the next window ({decision.reason})"
            return OutreachEnd.TRIAL_ENDED
        return decision

    async def _sleep_until(self, decision: DialTime) -> None:
        """Wait for the next dial time; any opt-out, pause, cancel or callback wakes it early."""
        self._next = decision
        self._why = decision.reason
        waiting = OutreachStatus.RETRY_WAIT if self._attempts else OutreachStatus.SCHEDULED
        self._set_status(waiting)
        self._changed = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._changed,
                timeout=decision.at - workflow.now(),
                timeout_summary="wait for the next allowed calling time",
            )

    async def _wait_while_paused(self) -> None:
        self._why = f"paused: {self._paused}"
        self._set_status(OutreachStatus.PAUSED)
        await workflow.wait_condition(lambda: self._paused is None or self._stop() is not None)

    # --- one attempt -----------------------------------------------------------------------

    async def _attempt(self, decision: DialTime) -> OutreachEnd | None:
        gate, end = await self._gate()
        if end is not None:
            return end
        if not gate:
            return None
        call_id = f"{CALL_ID_PREFIX}{workflow.uuid4().hex[:20]}"
        if not await self._take_slot(call_id, decision.window_end):
            self._not_before = decision.window_end
            self._why = "no dial slot came free before the window closed"
            return None
        try:
            blocked = self._local_blocks(workflow.now())  # the slot wait may have taken a while
            if blocked:
                self._record_gate(False, blocked)
                return None
            return await self._dial(call_id)
        finally:
            await self._release_slot(call_id)

    async def _gate(self) -> tuple[bool, OutreachEnd | None]:
        """The pre-dial gate: every check, with a reason, recorded whether it passes or not."""
        now = workflow.now()
        if self._opt_out is not None:
            self._record_gate(False, ["opted out: no dial after an opt-out"])
            return False, OutreachEnd.OPTED_OUT
        if self._input.consent is None:
            self._record_gate(False, ["no consent on record for AI-voice calls (FCC 24-17)"])
            return False, OutreachEnd.NO_CONSENT
        blocked = self._local_blocks(now)
        if blocked:
            self._record_gate(False, blocked)
            return False, None
        flags = await self._contact_flags()
        if flags is None:
            self._not_before = now + GATE_RETRY_AFTER
            self._record_gate(
                False, ["the CRMs could not be read: the do-not-call list is unknown"]
            )
            return False, None
        if flags.do_not_call:
            self._record_gate(False, [f"on the do-not-call list ({', '.join(flags.sources)})"])
            return False, OutreachEnd.DO_NOT_CALL
        if flags.converted:
            self._record_gate(False, ["the trial converted: no more outreach"])
            return False, OutreachEnd.CONVERTED
        self._record_gate(True, self._passing_reasons(now))
        return True, None

    def _local_blocks(self, now: datetime) -> list[str]:
        """What forbids a dial right now, from the workflow's own state; empty when nothing."""
        place, policy = self._input.place, self._input.policy
        blocks: list[str] = []
        if self._opt_out is not None:
            blocks.append("opted out")
        if self._paused is not None or self._cancelled is not None:
            blocks.append("paused or cancelled by an operator")
        allowed, hours = hours_verdict(now, place, policy)
        if not allowed:
            blocks.append(hours)
        dials = [attempt.at for attempt in self._attempts]
        cap = daily_cap(place, policy)
        if cap_release(dials, now, cap) is not None:
            blocks.append(f"{cap} dials in 24 h already")
        if len(dials) >= policy.max_attempts_per_trial:
            blocks.append(f"{policy.max_attempts_per_trial} attempts per trial used")
        ends = self._input.trial_ends_at
        if ends is not None and now >= ends:
            blocks.append("the trial has ended")
        if self._in_call is not None:
            blocks.append("a call is already in progress")
        return blocks

    def _passing_reasons(self, now: datetime) -> list[str]:
        place, policy = self._input.place, self._input.policy
        consent = self._input.consent
        assert consent is not None
        used = len([a for a in self._attempts if now - a.at < timedelta(hours=24)])
        ends = self._input.trial_ends_at
        return [
            "not opted out; not on the do-not-call list (Salesforce, HubSpot)",
            f"consent on record: {consent.source} ({consent.recorded_at.date().isoformat()})",
            hours_verdict(now, place, policy)[1],
            f"attempt {len(self._attempts) + 1} of {policy.max_attempts_per_trial}; "
            f"{used} of {daily_cap(place, policy)} in 24 h",
            "trial active" + (f" until {ends.date().isoformat()}" if ends is not None else ""),
            "no call in progress",
        ]

    async def _contact_flags(self) -> ContactFlags | None:
        person = self._input.trialist
        try:
            flags: ContactFlags = await workflow.execute_activity(
                CHECK_CONTACT_ACTIVITY,
                ContactFlagsInput(
                    trial_account_id=person.trial_account_id, email=str(person.email)
                ),
                result_type=ContactFlags,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=GATE_TIMEOUT,
                retry_policy=QUICK_RETRY,
                summary="pre-dial gate: CRM do-not-call flags",
            )
        except ActivityError:
            workflow.logger.warning("pre-dial gate: the CRMs could not be read")
            return None
        return flags

    def _record_gate(self, allowed: bool, reasons: list[str]) -> None:
        decision = GateDecision(at=workflow.now(), allowed=allowed, reasons=reasons[:10])
        self._gates = [*self._gates, decision][-MAX_GATES_KEPT:]
        if not allowed:
            self._why = "blocked: " + "; ".join(reasons)
        workflow.logger.info("pre-dial gate: %s", "dial" if allowed else "blocked")
        self._refresh()

    # --- dial slots (the concurrency limit) ---------------------------------------------------

    async def _take_slot(self, call_id: str, until: datetime) -> bool:
        """Ask the dial-slot holder for a slot and wait for the grant until `until`."""
        input = self._input
        lease = RINGING_SECONDS + self._max_call_seconds() + 120
        request = SlotRequest(
            holder=workflow.info().workflow_id,
            call_id=call_id,
            campaign=input.campaign,
            from_number=input.from_number,
            max_per_campaign=input.max_calls_per_campaign,
            max_per_number=input.max_calls_per_number,
            lease_seconds=lease,
        )
        self._granted = None
        await workflow.execute_activity(
            REQUEST_SLOT_ACTIVITY,
            request,
            start_to_close_timeout=timedelta(seconds=10),
            schedule_to_close_timeout=timedelta(minutes=2),
            retry_policy=QUICK_RETRY,
            summary="ask for a dial slot",
        )
        try:
            await workflow.wait_condition(
                lambda: self._granted == call_id or self._stop() is not None,
                timeout=max(until - workflow.now(), timedelta(seconds=1)),
                timeout_summary="wait for a dial slot",
            )
        except TimeoutError:
            return False
        return self._granted == call_id

    async def _release_slot(self, call_id: str) -> None:
        release = SlotRelease(holder=workflow.info().workflow_id, call_id=call_id)
        try:
            slots = dial_slots_workflow_id(workflow.info().task_queue)
            await workflow.get_external_workflow_handle(slots).signal(RELEASE_SLOT_SIGNAL, release)
        except Exception:  # the lease expires on its own
            workflow.logger.warning("dial slot release not delivered; its lease will expire")

    def _max_call_seconds(self) -> int:
        return max(self._input.policy.closing_margin_minutes * 60, MIN_CALL_SECONDS)

    # --- dialing and the call ---------------------------------------------------------------

    async def _dial(self, call_id: str) -> OutreachEnd | None:
        input = self._input
        assert input.trialist.phone is not None
        self._set_status(OutreachStatus.DIALING)
        self._why = f"dialing from {input.from_number}"
        dialed_at = workflow.now()
        try:
            placed: PlaceDialOutput = await workflow.execute_activity(
                PLACE_DIAL_ACTIVITY,
                PlaceDialInput(
                    call_id=call_id,
                    room_name=workflow_id_for(call_id),
                    to_number=input.trialist.phone,
                    from_number=input.from_number,
                    trunk_id=input.trunk_id,
                    max_call_duration_seconds=self._max_call_seconds(),
                ),
                result_type=PlaceDialOutput,
                schedule_to_start_timeout=DIAL_START_TIMEOUT,
                start_to_close_timeout=DIAL_ATTEMPT_TIMEOUT,
                retry_policy=DIAL_RETRY,
                summary="dial through LiveKit",
            )
        except ActivityError as failure:
            if not _may_have_rung(failure):
                self._not_before = workflow.now() + NOT_PLACED_RETRY_AFTER
                self._why = "the dial could not be placed; trying again shortly"
                workflow.logger.warning("dial not placed: %s", type(failure.cause).__name__)
                return None
            placed = PlaceDialOutput(
                result=DialResultKind.FAILED, ambiguous=True, note="the dial timed out"
            )
        attempt = DialAttempt(
            call_id=call_id,
            at=dialed_at,
            result=placed.result,
            sip_status_code=placed.sip_status_code,
            note=("result unknown; counted as an attempt. " if placed.ambiguous else "")
            + placed.note[:300],
        )
        self._attempts = [*self._attempts, attempt][-MAX_ATTEMPTS_KEPT:]
        if placed.result is not DialResultKind.ANSWERED:
            self._retry_later(f"{placed.result.value.replace('_', ' ')}")
            return None
        return await self._in_the_call(call_id)

    def _retry_later(self, what: str) -> None:
        self._unanswered += 1
        wait = self._input.policy.retry_wait(self._unanswered)
        self._not_before = workflow.now() + wait
        self._why = f"{what}: retry {self._unanswered} after {_duration(wait)}"

    async def _in_the_call(self, call_id: str) -> OutreachEnd | None:
        """The call connected: its follow-up takes over and reports back here."""
        self._in_call = call_id
        self._report = None
        self._set_status(OutreachStatus.IN_CALL)
        self._why = "in a call; its follow-up reports the result"
        try:
            await self._start_follow_up(call_id)
            await self._dispatch_agent(call_id)
        except ActivityError:
            self._in_call = None
            self._retry_later("the agent could not join the call")
            return None
        give_up_at = workflow.now() + timedelta(seconds=self._input.report_timeout_seconds)
        try:
            await workflow.wait_condition(
                lambda: self._report is not None or self._stop() is not None,
                timeout=give_up_at - workflow.now(),
                timeout_summary="wait for the call's report",
            )
        except TimeoutError:
            self._in_call = None
            self._paused = "the call's report never came: check its follow-up, then resume"
            return None
        report = self._report
        if report is None:  # stopped (opt-out, cancel) during the call
            await self._until_the_stopped_call_ends(give_up_at)
            self._in_call = None
            return None
        self._in_call = None
        return self._after_report(report)

    async def _until_the_stopped_call_ends(self, give_up_at: datetime) -> None:
        """An opt-out or cancel stops the outreach, not the call: the caller still hears the
        goodbye. Its dial slot is held until the call's report says it ended, so the limit of
        calls in flight per number counts it (the opt-out itself is already recorded)."""
        if not workflow.patched(STOPPED_CALL_HOLDS_SLOT_PATCH):
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._report is not None,
                timeout=max(give_up_at - workflow.now(), timedelta(seconds=1)),
                timeout_summary="the stopped call runs to its end",
            )

    async def _start_follow_up(self, call_id: str) -> None:
        input = self._input
        person = input.trialist
        await workflow.start_child_workflow(
            WORKFLOW_TYPE,
            FollowUpInput(
                call_id=call_id,
                call_ended_timeout_seconds=input.follow_up_call_ended_timeout_seconds,
                step_schedule_to_close_seconds=input.follow_up_step_schedule_to_close_seconds,
                outreach_workflow_id=workflow.info().workflow_id,
            ),
            id=workflow_id_for(call_id),
            task_queue=input.follow_up_task_queue,
            parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(FOLLOW_UP_STATUS, FollowUpStatus.IN_CALL.value)]
            ),
            static_summary=follow_up_summary(person.name, person.company),
        )

    async def _dispatch_agent(self, call_id: str) -> None:
        input = self._input
        leave = input.policy.voicemail is VoicemailAction.LEAVE_MESSAGE and not self._message_left
        outreach = OutreachDispatch(
            workflow_id=workflow.info().workflow_id,
            voicemail=input.policy.voicemail,
            leave_message=leave,
        )
        metadata = json.dumps(
            {
                "call_id": call_id,
                "trialist": input.trialist.model_dump(mode="json"),
                "outreach": outreach.model_dump(mode="json"),
            }
        )
        await workflow.execute_activity(
            DISPATCH_AGENT_ACTIVITY,
            DispatchAgentInput(
                call_id=call_id,
                room_name=workflow_id_for(call_id),
                agent_name=input.agent_name,
                metadata=metadata,
            ),
            result_type=DispatchAgentOutput,
            start_to_close_timeout=timedelta(seconds=15),
            schedule_to_close_timeout=DISPATCH_TIMEOUT,
            retry_policy=QUICK_RETRY,
            summary="dispatch the agent into the call",
        )

    def _after_report(self, report: CallReport) -> OutreachEnd | None:
        if report.result is CallResult.BOOKED:
            self._why = f"meeting booked ({report.meeting_id or 'id pending'})"
            return OutreachEnd.BOOKED
        if report.result is CallResult.NOT_INTERESTED:
            self._why = "the trialist was reached and is not interested now"
            return OutreachEnd.NOT_INTERESTED
        if report.result is CallResult.CALL_BACK and report.callback is not None:
            self._unanswered = 0
            start = report.callback.start
            if workflow.patched(CALLBACK_GAP_PATCH):
                start = max(start, workflow.now() + CALLBACK_MIN_GAP)
            self._not_before = start
            local = local_time_text(start, self._input.place)
            self._why = f"the trialist asked to be called back from {local}"
            return None
        if report.result is CallResult.VOICEMAIL:
            self._message_left = self._message_left or report.voicemail_message_left
            left = "message left" if report.voicemail_message_left else "no message"
            self._retry_later(f"voicemail ({left})")
            return None
        self._retry_later(f"the call ended without a result ({report.result.value})")
        return None

    # --- the end ------------------------------------------------------------------------------

    async def _finish(self, end: OutreachEnd) -> None:
        self._end = end
        self._next = None
        status = END_STATUS[end]
        if end is OutreachEnd.OPTED_OUT:
            self._why = "opted out: no further dial; the CRMs' do-not-call fields are set"
            if self._opt_out_write is not None:
                await self._opt_out_write
        else:
            await self._write_crm(
                CrmOutreachUpdate(
                    trialist=self._input.trialist,
                    outreach_status=f"{status.value}: {end.value}",
                    do_not_call=True if end is OutreachEnd.DO_NOT_CALL else None,
                )
            )
        self._set_status(status)
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _write_crm(self, update: CrmOutreachUpdate) -> bool:
        try:
            await workflow.execute_activity(
                UPDATE_CRM_ACTIVITY,
                update,
                result_type=CrmOutreachUpdateOutput,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=CRM_WRITE_TIMEOUT,
                retry_policy=QUICK_RETRY,
                summary=f"CRM: outreach {update.outreach_status or 'do-not-call'}",
            )
        except ActivityError:
            workflow.logger.error("outreach CRM update failed for good; the CRM is stale")
            return False
        return True

    # --- handlers -----------------------------------------------------------------------------

    @workflow.update(name=OPT_OUT_UPDATE)
    async def opt_out(self, request: OptOutRequest) -> OptOutResult:
        """Stop calling, at once; returns once the CRMs' do-not-call fields are set."""
        if self._opt_out is None:
            self._opt_out = request
            self._opted_out_at = workflow.now()
            self._changed = True
            self._why = "opted out: no further dial"
            self._set_status(OutreachStatus.OPTED_OUT)
            self._opt_out_write = asyncio.create_task(
                self._write_crm(
                    CrmOutreachUpdate(
                        trialist=self._input.trialist,
                        outreach_status="opted_out: opted_out",
                        do_not_call=True,
                        email_opt_out=True if request.also_email else None,
                    )
                )
            )
        assert self._opt_out_write is not None
        written = await self._opt_out_write
        return OptOutResult(crm_updated=written, reason="" if written else "CRM write failed")

    @opt_out.validator
    def _validate_opt_out(self, request: OptOutRequest) -> None:
        if request.trialist.trial_account_id != self._input.trialist.trial_account_id:
            raise ValueError("the opt-out is for another trial account")

    @workflow.update(name=PAUSE_UPDATE)
    def pause(self, request: OperatorRequest) -> OutreachProgress:
        self._paused = request.reason
        self._changed = True
        self._refresh()
        return self.progress()

    @pause.validator
    def _validate_pause(self, request: OperatorRequest) -> None:
        self._check_open("pause")
        if self._paused is not None:
            raise ValueError(f"already paused: {self._paused}")

    @workflow.update(name=RESUME_UPDATE)
    def resume(self, request: OperatorRequest) -> OutreachProgress:
        self._paused = None
        self._changed = True
        self._refresh()
        return self.progress()

    @resume.validator
    def _validate_resume(self, request: OperatorRequest) -> None:
        self._check_open("resume")
        if self._paused is None:
            raise ValueError("not paused")

    @workflow.update(name=CANCEL_UPDATE)
    def cancel(self, request: OperatorRequest) -> OutreachProgress:
        self._cancelled = request.reason
        self._changed = True
        self._refresh()
        return self.progress()

    @cancel.validator
    def _validate_cancel(self, request: OperatorRequest) -> None:
        self._check_open("cancel")

    def _check_open(self, verb: str) -> None:
        if self._end is not None or self._status in FINAL_STATUSES:
            raise ValueError(f"cannot {verb}: the outreach is {self._status.value}")

    @workflow.signal(name=CALL_REPORT_SIGNAL)
    def call_report(self, report: CallReport) -> None:
        """A call's follow-up reports; a report for another (or an older) call is dropped."""
        if report.call_id != self._in_call:
            workflow.logger.info("call report for a call not in progress dropped")
            return
        self._report = report

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def slot_granted(self, grant: SlotGrant) -> None:
        self._granted = grant.call_id

    @workflow.query(name=OUTREACH_PROGRESS_QUERY)
    def progress(self) -> OutreachProgress:
        upcoming = self._next if self._end is None else None
        return OutreachProgress(
            trial_account_id=self._input.trialist.trial_account_id,
            status=self._status,
            end=self._end,
            attempts=list(self._attempts),
            gates=list(self._gates),
            next_attempt_at=upcoming.at if upcoming is not None else None,
            next_attempt_local=(
                local_time_text(upcoming.at, self._input.place) if upcoming is not None else None
            ),
            why=self._why[:400],
            opted_out_at=self._opted_out_at,
            place=self._input.place,
        )

    # --- status, search attribute and details -------------------------------------------------

    def _set_status(self, status: OutreachStatus) -> None:
        if self._status in FINAL_STATUSES and status not in FINAL_STATUSES:
            return  # an opt-out marked it final; the loop only winds down
        self._status = status
        self._refresh()

    def _refresh(self) -> None:
        if self._published is not self._status:
            workflow.upsert_search_attributes([OUTREACH_STATUS.value_set(self._status.value)])
            self._published = self._status
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        """Markdown for the UI: the status, the next attempt in the trialist's zone, and why."""
        person = self._input.trialist
        lines = [f"**Outreach of {person.name} ({person.trial_account_id}): {self._status.value}**"]
        if self._end is not None:
            lines.append(f"\nfinished: {self._end.value}")
        elif self._next is not None and self._status in (
            OutreachStatus.SCHEDULED,
            OutreachStatus.RETRY_WAIT,
        ):
            lines.append(f"\nnext attempt: {local_time_text(self._next.at, self._input.place)}")
        lines += [f"\nwhy: {self._why}", f"\nplace: {self._input.place.describe()}", ""]
        lines += ["| # | dialed (local) | result | note |", "|---|---|---|---|"]
        for number, attempt in enumerate(self._attempts, start=1):
            when = local_time_text(attempt.at, self._input.place)
            result = attempt.result.value if attempt.result else "?"
            lines.append(f"| {number} | {when} | {result} | {attempt.note} |")
        return "\n".join(lines)


def _may_have_rung(failure: ActivityError) -> bool:
    """Only a dial attempt that timed out while running may have reached the phone."""
    cause = failure.cause
    return isinstance(cause, ActivityTimeoutError) and cause.type in (
        TimeoutType.START_TO_CLOSE,
        TimeoutType.HEARTBEAT,
    )


def _duration(wait: timedelta) -> str:
    minutes = int(wait.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440} d"
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"
