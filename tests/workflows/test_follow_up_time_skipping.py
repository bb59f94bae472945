"""CallFollowUpWorkflow on the time-skipping test server: timers, retry delays and parked steps.

Real activities talk to the sandbox over loopback HTTP; the server skips workflow time only. The
test server keeps its own clock, ahead of the wall clock by all the time earlier tests skipped, so
each test pins the sandbox to the working-week anchor after the server's now
(tests/pinned_time.py): every slot lies at least 7 h after workflow.now(), more than a test skips.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts import (
    BookingStatus,
    FollowUpStatus,
    FollowUpStep,
    RetryStepRequest,
    SkipStepRequest,
    StepState,
)
from tests.pinned_time import working_week_anchor
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    FollowUpServers,
    ScenarioCall,
    activity_retry_gap,
    clear_faults,
    follow_up_input,
    progress_of,
    sandbox_rows,
    timer_fired_after,
    until_parked,
)
from workflows.follow_up import CallFollowUpWorkflow

CALL_ENDED_TIMEOUT_SECONDS = 2 * 3600.0


def amplitude_events(sandbox: SandboxServer, call: ScenarioCall) -> list[dict[str, object]]:
    return sandbox_rows(sandbox.url, "amplitude_events", user_id=call.trialist.trial_account_id)


@pytest.fixture(autouse=True)
async def sandbox_at_server_time(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer
) -> None:
    sandbox.reset(now=working_week_anchor(await time_skipping_env.get_current_time()))


async def test_missing_call_ended_proceeds_after_the_timeout_with_what_it_has(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers, call_id = time_skipping_servers, call.call_id
    async with servers.worker() as clients:
        request = await call.first_free_booking(clients)
        # Start, then update: the test server leaves time skipping locked after an
        # update-with-start (the dev-server tests cover that path).
        handle = await servers.client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id, call_ended_timeout_seconds=CALL_ENDED_TIMEOUT_SECONDS),
            **servers.start_options(call_id),
        )
        booked = await handle.execute_update(CallFollowUpWorkflow.book_meeting, request)
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
    events = amplitude_events(servers.sandbox, call)
    assert sorted(str(e["event_type"]) for e in events) == [
        "trial_call_outcome_missing",
        "trial_meeting_booked",
    ]
    assert all(str(e["insert_id"]).startswith(f"{call_id}:") for e in events)


async def test_rate_limit_waits_the_delay_the_vendor_asked_for(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers = time_skipping_servers
    retry_after = 90
    # One throttled answer; the default backoff would retry after 1 s, the vendor asks for 90 s.
    servers.sandbox.add_fault(
        vendor="amplitude",
        operation="track",
        error_rate=1.0,
        status=429,
        headers={"Retry-After": str(retry_after)},
        times=1,
    )
    async with servers.worker():
        handle = await servers.signal_call_ended(call.outcome(), step_schedule_to_close_seconds=600)
        progress = await handle.result()
        gap = await activity_retry_gap(handle, FollowUpStep.TRACK_ANALYTICS.value)

    assert progress.status is FollowUpStatus.COMPLETED
    analytics = progress.steps[FollowUpStep.TRACK_ANALYTICS]
    assert analytics.state is StepState.SUCCEEDED
    assert analytics.attempts == 2
    assert timedelta(seconds=retry_after) <= gap < timedelta(seconds=retry_after + 10)
    events = amplitude_events(servers.sandbox, call)
    assert [e["event_type"] for e in events] == ["trial_call_completed"]


async def test_step_out_of_retries_parks_then_retry_step_completes(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers = time_skipping_servers
    step = FollowUpStep.UPSERT_SALESFORCE_LEAD
    # Salesforce answers 503 to everything: retryable, so only the step's time budget ends it.
    servers.sandbox.add_fault(vendor="salesforce", error_rate=1.0, status=503)
    async with servers.worker():
        handle = await servers.signal_call_ended(call.outcome(), step_schedule_to_close_seconds=30)
        await until_parked(handle, step, advance=lambda: servers.env.sleep(5))
        progress = await progress_of(handle)
        assert progress.status is FollowUpStatus.NEEDS_ATTENTION
        error = progress.steps[step].last_error
        assert error is not None and error.kind == "retries_exhausted"
        assert error.vendor == "salesforce" and error.status_code == 503
        assert progress.steps[step].attempts > 1
        # Independent steps carried on; the dependent one waits for the lead.
        assert progress.steps[FollowUpStep.LOG_CALL_HUBSPOT].state is StepState.SUCCEEDED
        assert progress.steps[FollowUpStep.LOG_CALL_SALESFORCE].state is StepState.PENDING

        clear_faults(servers.sandbox.url)
        after = await handle.execute_update(
            CallFollowUpWorkflow.retry_step, RetryStepRequest(step=step)
        )
        assert after.steps[step].state is StepState.RUNNING
        final = await handle.result()

    assert final.status is FollowUpStatus.COMPLETED
    assert all(p.state in (StepState.SUCCEEDED, StepState.NOT_NEEDED) for p in final.steps.values())
    assert final.steps[FollowUpStep.LOG_CALL_SALESFORCE].state is StepState.SUCCEEDED


async def test_skip_step_skips_the_dependents_and_completes(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers = time_skipping_servers
    step = FollowUpStep.UPSERT_HUBSPOT_CONTACT
    # Permanent: the step parks at once.
    servers.sandbox.add_fault(vendor="hubspot", error_rate=1.0, status=400)
    async with servers.worker() as clients:
        slot = (await call.free_slots(clients))[1]
        outcome = call.outcome(requested=call.booking(slot))
        handle = await servers.signal_call_ended(outcome)
        await until_parked(handle, step)
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
