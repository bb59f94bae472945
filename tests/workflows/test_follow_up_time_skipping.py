"""CallFollowUpWorkflow on the time-skipping test server: timers, retry delays and parked steps.

Real activities talk to the sandbox over loopback HTTP; the server skips workflow time only. The
test server keeps its own clock, ahead of the wall clock by all the time earlier tests skipped, so
each test pins the sandbox to the working-week anchor after the server's now
(tests/pinned_time.py): every slot lies at least 7 h after workflow.now(), more than a test skips.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from contracts import (
    CALL_ENDED_SIGNAL,
    BookingStatus,
    FollowUpStatus,
    FollowUpStep,
    RetryStepRequest,
    SkipStepRequest,
    StepState,
    workflow_id_for,
)
from tests.pinned_time import working_week_anchor
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    activity_retry_gap,
    booking_request,
    call_outcome,
    clear_faults,
    follow_up_input,
    follow_up_worker,
    free_slots,
    make_trialist,
    new_call_id,
    progress_of,
    sandbox_rows,
    timer_fired_after,
    wait_until,
)
from workflows.follow_up import CallFollowUpWorkflow

CALL_ENDED_TIMEOUT_SECONDS = 2 * 3600.0


@pytest.fixture(autouse=True)
async def sandbox_at_server_time(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer
) -> None:
    sandbox.reset(now=working_week_anchor(await time_skipping_env.get_current_time()))


async def test_missing_call_ended_proceeds_after_the_timeout_with_what_it_has(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox) as clients:
        slot = (await free_slots(clients, trialist))[0]
        # Start, then update: the test server leaves time skipping locked after an
        # update-with-start (the dev-server tests cover that path).
        handle = await env.client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id, call_ended_timeout_seconds=CALL_ENDED_TIMEOUT_SECONDS),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        booked = await handle.execute_update(
            CallFollowUpWorkflow.book_meeting, booking_request(call_id, trialist, slot)
        )
        # No call_ended is ever sent: the workflow must give up waiting and carry on.
        progress = await handle.result()
        waited = await timer_fired_after(handle)

    assert booked.status is BookingStatus.BOOKED
    assert waited >= timedelta(seconds=CALL_ENDED_TIMEOUT_SECONDS)
    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.outcome_missing is True
    steps = progress.steps
    for step in (FollowUpStep.LOG_CALL_SALESFORCE, FollowUpStep.LOG_CALL_HUBSPOT):
        assert steps[step].state is StepState.NOT_NEEDED
        assert "call_ended never arrived" in (steps[step].skip_reason or "")
    # What it had: the guest of the booking, and the meeting itself.
    for step in (
        FollowUpStep.UPSERT_SALESFORCE_LEAD,
        FollowUpStep.UPSERT_HUBSPOT_CONTACT,
        FollowUpStep.BOOK_MEETING,
        FollowUpStep.RECORD_MEETING_SALESFORCE,
        FollowUpStep.RECORD_MEETING_HUBSPOT,
        FollowUpStep.TRACK_ANALYTICS,
    ):
        assert steps[step].state is StepState.SUCCEEDED, step
    events = sandbox_rows(sandbox.url, "amplitude_events", user_id=trialist.trial_account_id)
    assert sorted(str(e["event_type"]) for e in events) == [
        "trial_call_outcome_missing",
        "trial_meeting_booked",
    ]
    assert all(str(e["insert_id"]).startswith(f"{call_id}:") for e in events)


async def test_rate_limit_waits_the_delay_the_vendor_asked_for(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    retry_after = 90
    # One throttled answer; the default backoff would retry after 1 s, the vendor asks for 90 s.
    sandbox.add_fault(
        vendor="amplitude",
        operation="track",
        error_rate=1.0,
        status=429,
        headers={"Retry-After": str(retry_after)},
        times=1,
    )
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox):
        handle = await env.client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id, step_schedule_to_close_seconds=600),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[call_outcome(call_id, trialist)],
        )
        progress = await handle.result()
        gap = await activity_retry_gap(handle, FollowUpStep.TRACK_ANALYTICS.value)

    assert progress.status is FollowUpStatus.COMPLETED
    analytics = progress.steps[FollowUpStep.TRACK_ANALYTICS]
    assert analytics.state is StepState.SUCCEEDED
    assert analytics.attempts == 2
    assert timedelta(seconds=retry_after) <= gap < timedelta(seconds=retry_after + 10)
    events = sandbox_rows(sandbox.url, "amplitude_events", user_id=trialist.trial_account_id)
    assert [e["event_type"] for e in events] == ["trial_call_completed"]


async def test_step_out_of_retries_parks_then_retry_step_completes(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    step = FollowUpStep.UPSERT_SALESFORCE_LEAD
    # Salesforce answers 503 to everything: retryable, so only the step's time budget ends it.
    sandbox.add_fault(vendor="salesforce", error_rate=1.0, status=503)
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox):
        handle = await env.client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id, step_schedule_to_close_seconds=30),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[call_outcome(call_id, trialist)],
        )

        async def parked() -> bool:
            return (await progress_of(handle)).steps[step].state is StepState.NEEDS_ATTENTION

        await wait_until(parked, advance=lambda: env.sleep(5), what=f"{step} to park")
        progress = await progress_of(handle)
        assert progress.status is FollowUpStatus.NEEDS_ATTENTION
        error = progress.steps[step].last_error
        assert error is not None and error.kind == "retries_exhausted"
        assert error.vendor == "salesforce" and error.status_code == 503
        assert progress.steps[step].attempts > 1
        # Independent steps carried on; the dependent one waits for the lead.
        assert progress.steps[FollowUpStep.LOG_CALL_HUBSPOT].state is StepState.SUCCEEDED
        assert progress.steps[FollowUpStep.LOG_CALL_SALESFORCE].state is StepState.PENDING

        clear_faults(sandbox.url)
        after = await handle.execute_update(
            CallFollowUpWorkflow.retry_step, RetryStepRequest(step=step)
        )
        assert after.steps[step].state is StepState.RUNNING
        final = await handle.result()

    assert final.status is FollowUpStatus.COMPLETED
    assert all(p.state in (StepState.SUCCEEDED, StepState.NOT_NEEDED) for p in final.steps.values())
    assert final.steps[FollowUpStep.LOG_CALL_SALESFORCE].state is StepState.SUCCEEDED


async def test_skip_step_skips_the_dependents_and_completes(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    step = FollowUpStep.UPSERT_HUBSPOT_CONTACT
    sandbox.add_fault(vendor="hubspot", error_rate=1.0, status=400)  # permanent: parks at once
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox) as clients:
        slot = (await free_slots(clients, trialist))[1]
        outcome = call_outcome(
            call_id, trialist, requested=booking_request(call_id, trialist, slot)
        )
        handle = await env.client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[outcome],
        )

        async def parked() -> bool:
            return (await progress_of(handle)).steps[step].state is StepState.NEEDS_ATTENTION

        await wait_until(parked, what=f"{step} to park")
        progress = await progress_of(handle)
        assert progress.steps[step].last_error is not None
        assert progress.steps[step].last_error.kind == "permanent"
        assert progress.steps[step].attempts == 1  # non-retryable: no second attempt

        after = await handle.execute_update(
            CallFollowUpWorkflow.skip_step,
            SkipStepRequest(step=step, reason="contact merged by hand in HubSpot"),
        )
        assert after.steps[step].state is StepState.SKIPPED
        final = await handle.result()

    assert final.status is FollowUpStatus.COMPLETED
    for dependent in (FollowUpStep.LOG_CALL_HUBSPOT, FollowUpStep.RECORD_MEETING_HUBSPOT):
        assert final.steps[dependent].state is StepState.SKIPPED
        assert "contact merged by hand" in (final.steps[dependent].skip_reason or "")
    for done in (
        FollowUpStep.UPSERT_SALESFORCE_LEAD,
        FollowUpStep.LOG_CALL_SALESFORCE,
        FollowUpStep.BOOK_MEETING,
        FollowUpStep.RECORD_MEETING_SALESFORCE,
        FollowUpStep.TRACK_ANALYTICS,
    ):
        assert final.steps[done].state is StepState.SUCCEEDED, done
    assert final.booking is not None and final.booking.status is BookingStatus.BOOKED
