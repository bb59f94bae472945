"""CallFollowUpWorkflow on the Temporal dev server: update-with-start, idempotency, visibility.

Real activities talk to the sandbox over loopback HTTP, with faults injected into it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError

from contracts import (
    FOLLOW_UP_FAILED_STEP,
    FOLLOW_UP_STATUS,
    BookingRequest,
    BookingStatus,
    FollowUpStatus,
    FollowUpStep,
    RetryStepRequest,
    SkipStepRequest,
    StepState,
    Trialist,
    follow_up_summary,
    workflow_id_for,
)
from contracts.names import IN_CALL_PRIORITY
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    FollowUpServers,
    ScenarioCall,
    book_for_someone_else,
    clear_faults,
    crm_records,
    follow_up_input,
    progress_of,
    sandbox_rows,
    wait_until,
)
from workflows.follow_up import CallFollowUpWorkflow

VISIBILITY_TIMEOUT_SECONDS = 15.0


def start_operation(servers: FollowUpServers, call: ScenarioCall) -> WithStartWorkflowOperation:
    """The agent's update-with-start, summarised for the UI as the agent does."""
    summary = follow_up_summary(call.trialist.name, call.trialist.company)
    return servers.start(follow_up_input(call.call_id), summary=summary)


def meeting_ids(sandbox: SandboxServer, trialist: Trialist) -> list[object]:
    """The ids of the sandbox's meetings with this trialist as the guest."""
    meetings = sandbox_rows(sandbox.url, "chilipiper_meetings", guest_email=trialist.email)
    return [meeting["meeting_id"] for meeting in meetings]


async def rejection(handle: WorkflowHandle[Any, Any], request: BookingRequest) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(CallFollowUpWorkflow.book_meeting, request)
    return str(failed.value.cause)


async def test_update_with_start_books_once_and_the_validator_refuses_conflicts(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    client, trialist = dev_servers.client, call.trialist
    async with dev_servers.worker() as clients:
        slots = await call.free_slots(clients)
        request = call.booking(slots[0])
        start = start_operation(dev_servers, call)
        booked = await client.execute_update_with_start_workflow(
            CallFollowUpWorkflow.book_meeting, request, start_workflow_operation=start
        )
        handle = await start.workflow_handle()

        # The agent retries the same booking (a lost reply): the same result, no second meeting.
        again = await client.execute_update_with_start_workflow(
            CallFollowUpWorkflow.book_meeting,
            request,
            start_workflow_operation=start_operation(dev_servers, call),
        )
        assert again == booked
        assert (await progress_of(handle)).status is FollowUpStatus.IN_CALL

        different = await rejection(handle, call.booking(slots[2]))
        assert "already booked" in different and "second booking" in different
        # The workflow checks slots against Temporal's clock: the wall clock on the dev server.
        past = call.booking(datetime.now(UTC) - timedelta(hours=1))
        assert "in the past" in await rejection(handle, past)

        outcome = call.outcome(requested=request)
        await dev_servers.signal_call_ended(outcome)
        # The session-end hook and the outbox relay may both deliver it: the first one wins.
        other = call.outcome(summary="A different, later summary.")
        await dev_servers.signal_call_ended(other)
        progress = await handle.result()

    assert booked.status is BookingStatus.BOOKED and booked.meeting_id
    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.booking == booked
    owed = {FollowUpStep.OWE_REPLY_SALESFORCE, FollowUpStep.OWE_REPLY_HUBSPOT}
    assert all(p.state is StepState.SUCCEEDED for s, p in progress.steps.items() if s not in owed)
    assert all(progress.steps[step].state is StepState.NOT_NEEDED for step in owed)  # kept
    assert progress.steps[FollowUpStep.BOOK_MEETING].attempts == 1
    assert meeting_ids(dev_servers.sandbox, trialist) == [booked.meeting_id]
    records = crm_records(dev_servers.sandbox.url, call_id=call.call_id, trialist=trialist)
    assert records.counts() == records.expected_for_one_call(meeting=True)
    assert records.hubspot_note_mentions(outcome.summary)
    assert not records.hubspot_note_mentions(other.summary)
    description = await handle.describe()
    assert await description.static_summary() == follow_up_summary(trialist.name, trialist.company)


async def test_ambiguous_booking_timeout_is_reconciled_never_double_booked(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    # The booking the caller asked for is made after the call (the outcome carries it), as the
    # normal activity. It commits, then its reply is held past the client's 1 s read timeout:
    # the attempt's outcome is unknown, and the next attempt reconciles instead of booking again.
    # (A booking made during the call looks for the meeting while it waits: test_handoff.py.)
    dev_servers.sandbox.add_fault(
        vendor="chilipiper", operation="schedule_simple", after_commit_latency_ms=2500, times=1
    )
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        handle = await dev_servers.signal_call_ended(call.outcome(requested=request))
        progress = await handle.result()

    booked = progress.booking
    assert booked is not None and booked.status is BookingStatus.BOOKED
    booking = progress.steps[FollowUpStep.BOOK_MEETING]
    assert booking.state is StepState.SUCCEEDED
    assert booking.attempts == 2  # the ambiguous attempt, then the one that reconciled
    assert meeting_ids(dev_servers.sandbox, call.trialist) == [booked.meeting_id]
    records = crm_records(dev_servers.sandbox.url, call_id=call.call_id, trialist=call.trialist)
    assert records.counts() == records.expected_for_one_call(meeting=True)


async def test_an_in_call_booking_answered_late_is_found_made_and_its_handler_finishes(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    # The booking commits, then its reply is held 2.5 s. The in-call attempt looks for the
    # meeting meanwhile and finds it: one attempt, one meeting.
    dev_servers.sandbox.add_fault(
        vendor="chilipiper", operation="schedule_simple", after_commit_latency_ms=2500, times=1
    )
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        start = start_operation(dev_servers, call)
        # The agent stops waiting once the workflow accepted the booking (caller hung up).
        update = await dev_servers.client.start_update_with_start_workflow(
            CallFollowUpWorkflow.book_meeting,
            request,
            start_workflow_operation=start,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        handle = await start.workflow_handle()
        outcome = call.outcome(requested=request)
        await dev_servers.signal_call_ended(outcome)
        progress = await handle.result()
        booked = await update.result()  # the handler finished even though nobody waited

    assert booked.status is BookingStatus.BOOKED
    assert progress.booking == booked
    booking = progress.steps[FollowUpStep.BOOK_MEETING]
    assert booking.state is StepState.SUCCEEDED
    assert booking.attempts == 1  # found made before the request answered
    assert meeting_ids(dev_servers.sandbox, call.trialist) == [booked.meeting_id]
    records = crm_records(dev_servers.sandbox.url, call_id=call.call_id, trialist=call.trialist)
    assert records.counts() == records.expected_for_one_call(meeting=True)


async def visible(client: Client, query: str, workflow_id: str) -> bool:
    ids = [w.id async for w in client.list_workflows(f'{query} AND WorkflowId="{workflow_id}"')]
    return workflow_id in ids


async def test_permanent_error_parks_in_needs_attention_visible_then_retry_completes(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    client, call_id = dev_servers.client, call.call_id
    workflow_id = workflow_id_for(call_id)
    step = FollowUpStep.UPSERT_HUBSPOT_CONTACT
    dev_servers.sandbox.add_fault(
        vendor="hubspot", operation="batch_upsert_contacts", error_rate=1.0, status=400
    )
    async with dev_servers.worker() as clients:
        late_booking = await call.first_free_booking(clients)
        handle = await dev_servers.signal_call_ended(call.outcome())
        await wait_until(
            lambda: visible(client, 'FollowUpStatus="needs_attention"', workflow_id),
            within=VISIBILITY_TIMEOUT_SECONDS,
            what="the visibility query to list the parked follow-up",
        )
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(FOLLOW_UP_STATUS) == "needs_attention"
        assert attributes.get(FOLLOW_UP_FAILED_STEP) == step.value
        progress = await progress_of(handle)
        error = progress.steps[step].last_error
        assert error is not None
        assert (error.kind, error.vendor, error.status_code) == ("permanent", "hubspot", 400)
        # Independent steps carried on while the HubSpot one waits for an operator.
        assert progress.steps[FollowUpStep.LOG_CALL_SALESFORCE].state is StepState.SUCCEEDED
        assert progress.steps[FollowUpStep.LOG_CALL_HUBSPOT].state is StepState.PENDING

        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        details = metadata.current_details
        assert f"Needs attention: `{step}`" in details
        assert "HTTP 400" in details and "retry_step" in details and "skip_step" in details
        assert f"trialist followups retry {call_id} {step}" in details
        assert call.trialist.email not in details

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                CallFollowUpWorkflow.retry_step,
                RetryStepRequest(step=FollowUpStep.LOG_CALL_SALESFORCE),
            )
        assert "not waiting for an operator" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                CallFollowUpWorkflow.skip_step,
                SkipStepRequest(step=FollowUpStep.TRACK_ANALYTICS, reason="not parked"),
            )

        late = await rejection(handle, late_booking)
        assert "the call has ended" in late

        clear_faults(dev_servers.sandbox.url)
        await handle.execute_update(CallFollowUpWorkflow.retry_step, RetryStepRequest())
        progress = await handle.result()
        await wait_until(
            lambda: visible(client, 'FollowUpStatus="completed"', workflow_id),
            within=VISIBILITY_TIMEOUT_SECONDS,
            what="the visibility query to list the completed follow-up",
        )
        attributes = (await handle.describe()).typed_search_attributes

    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.steps[step].state is StepState.SUCCEEDED
    assert progress.steps[step].attempts == 2
    assert attributes.get(FOLLOW_UP_FAILED_STEP) is None
    records = crm_records(dev_servers.sandbox.url, call_id=call_id, trialist=call.trialist)
    assert records.counts() == records.expected_for_one_call(meeting=False)


async def test_an_unavailable_slot_offers_alternatives_and_the_caller_may_pick_one(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    async with dev_servers.worker() as clients:
        taken = (await call.free_slots(clients))[4]
        await book_for_someone_else(clients, taken)
        start = start_operation(dev_servers, call)
        unavailable = await dev_servers.client.execute_update_with_start_workflow(
            CallFollowUpWorkflow.book_meeting, call.booking(taken), start_workflow_operation=start
        )
        handle = await start.workflow_handle()
        assert unavailable.status is BookingStatus.UNAVAILABLE
        assert 1 <= len(unavailable.alternatives) <= 3
        # The agent reads the alternatives out; the caller picks the first one.
        chosen = call.booking(unavailable.alternatives[0])
        booked = await handle.execute_update(CallFollowUpWorkflow.book_meeting, chosen)
        outcome = call.outcome(requested=chosen)
        await dev_servers.signal_call_ended(outcome)
        progress = await handle.result()

    assert booked.status is BookingStatus.BOOKED
    assert progress.booking == booked
    assert progress.steps[FollowUpStep.RECORD_MEETING_HUBSPOT].state is StepState.SUCCEEDED
    meetings = sandbox_rows(
        dev_servers.sandbox.url, "chilipiper_meetings", guest_email=call.trialist.email
    )
    assert [(m["meeting_id"], m["start_at"]) for m in meetings] == [
        (booked.meeting_id, unavailable.alternatives[0].strftime("%Y-%m-%dT%H:%M:%SZ"))
    ]


async def test_a_booking_parked_during_the_call_fails_the_update_then_an_operator_retries(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    sandbox = dev_servers.sandbox
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        sandbox.add_fault(vendor="chilipiper", operation="init_simple", error_rate=1.0, status=401)
        start = start_operation(dev_servers, call)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await dev_servers.client.execute_update_with_start_workflow(
                CallFollowUpWorkflow.book_meeting, request, start_workflow_operation=start
            )
        handle = await start.workflow_handle()
        assert "waiting for an operator" in str(failed.value.cause)
        parked = await progress_of(handle)
        assert parked.status is FollowUpStatus.NEEDS_ATTENTION
        assert parked.steps[FollowUpStep.BOOK_MEETING].last_error is not None
        assert parked.steps[FollowUpStep.BOOK_MEETING].last_error.kind == "auth"

        clear_faults(sandbox.url)
        await handle.execute_update(
            CallFollowUpWorkflow.retry_step, RetryStepRequest(step=FollowUpStep.BOOK_MEETING)
        )
        # The agent's retry of the same booking now gets the result.
        booked = await handle.execute_update(CallFollowUpWorkflow.book_meeting, request)
        assert (await progress_of(handle)).status is FollowUpStatus.IN_CALL
        outcome = call.outcome(requested=request)
        await dev_servers.signal_call_ended(outcome)
        progress = await handle.result()

    assert booked.status is BookingStatus.BOOKED
    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.steps[FollowUpStep.BOOK_MEETING].attempts == 2
    assert meeting_ids(sandbox, call.trialist) == [booked.meeting_id]


async def test_an_in_call_booking_not_done_in_its_local_budget_goes_on_as_an_activity(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    # The local activity's quick retries run out of their budget (every booking 503s); the
    # booking goes on as a normal activity at in-call priority and books once the vendor is back.
    sandbox = dev_servers.sandbox
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        sandbox.add_fault(
            vendor="chilipiper", operation="schedule_simple", error_rate=1.0, status=503
        )
        start = start_operation(dev_servers, call)
        update = asyncio.create_task(
            dev_servers.client.execute_update_with_start_workflow(
                CallFollowUpWorkflow.book_meeting, request, start_workflow_operation=start
            )
        )
        # Not the start's handle: it resolves only with the update's result.
        handle = dev_servers.client.get_workflow_handle(workflow_id_for(call.call_id))

        async def scheduled_as_an_activity() -> bool:
            try:
                events = (await handle.fetch_history()).events
            except RPCError:  # not started yet
                return False
            return any(e.HasField("activity_task_scheduled_event_attributes") for e in events)

        await wait_until(scheduled_as_an_activity, within=30, what="the booking as an activity")
        clear_faults(sandbox.url)
        booked = await asyncio.wait_for(update, timeout=30)
        events = (await handle.fetch_history()).events

    assert booked.status is BookingStatus.BOOKED
    assert meeting_ids(sandbox, call.trialist) == [booked.meeting_id]
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert markers[:2] == ["core_patch", "core_local_activity"]  # the patch, the spent budget
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert [a.activity_type.name for a in scheduled][:1] == [FollowUpStep.BOOK_MEETING.value]
    assert scheduled[0].priority.priority_key == IN_CALL_PRIORITY
