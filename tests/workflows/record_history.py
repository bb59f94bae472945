"""Re-record the histories the replay test checks: `python -m tests.workflows.record_history`.

Starts a dev server and the sandbox, runs each scenario with the real worker code, and writes
`tests/histories/<scenario>.json`. Re-record only for an intended, versioned workflow change.
Payloads are encrypted with the committed fixture key (tests/payload_keys.py), as in production;
histories recorded before the codec are plain and replay as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from activities.follow_up import chilipiper_guest
from config.process_exit import exits_cleanly
from contracts import (
    CALL_ENDED_SIGNAL,
    SEARCH_ATTRIBUTES,
    FollowUpProgress,
    FollowUpStatus,
    FollowUpStep,
    RetryStepRequest,
    SkipStepRequest,
    StepState,
    workflow_id_for,
)
from tests.payload_keys import HISTORY_CONVERTER
from tests.servers import SandboxServer, binary, running_sandbox
from tests.workflows.scenario import (
    booking_request,
    call_outcome,
    clear_faults,
    follow_up_input,
    follow_up_worker,
    free_slots,
    make_trialist,
    new_call_id,
    progress_of,
    wait_until,
)
from workflows.follow_up import CallFollowUpWorkflow

HISTORY_DIR = Path(__file__).resolve().parent.parent / "histories"

Scenario = Callable[[Client, SandboxServer, str], Awaitable[WorkflowHandle[Any, Any]]]


async def _parked(handle: WorkflowHandle[Any, Any], step: FollowUpStep) -> None:
    async def check() -> bool:
        return (await progress_of(handle)).steps[step].state is StepState.NEEDS_ATTENTION

    await wait_until(check, within=30, what=f"{step} to park")


async def booked_in_call_parked_then_retried(
    client: Client, sandbox: SandboxServer, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """Update-with-start booking, a repeated booking, call_ended twice, a HubSpot 400 retried."""
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(client, task_queue, sandbox=sandbox) as clients:
        request = booking_request(call_id, trialist, (await free_slots(clients, trialist))[0])
        for _ in range(2):
            start = WithStartWorkflowOperation(
                CallFollowUpWorkflow.run,
                follow_up_input(call_id),
                id=workflow_id_for(call_id),
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
            await client.execute_update_with_start_workflow(
                CallFollowUpWorkflow.book_meeting, request, start_workflow_operation=start
            )
        handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id_for(call_id))
        sandbox.add_fault(
            vendor="hubspot", operation="batch_upsert_contacts", status=400, error_rate=1.0
        )
        outcome = call_outcome(call_id, trialist, requested=request)
        for _ in range(2):
            await handle.signal(CALL_ENDED_SIGNAL, outcome)
        await _parked(handle, FollowUpStep.UPSERT_HUBSPOT_CONTACT)
        clear_faults(sandbox.url)
        await handle.execute_update(
            CallFollowUpWorkflow.retry_step,
            RetryStepRequest(step=FollowUpStep.UPSERT_HUBSPOT_CONTACT),
        )
        await handle.result()
    return handle


async def outcome_missing_then_skipped(
    client: Client, sandbox: SandboxServer, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """A booking, no call_ended (the wait times out), a Salesforce 400 skipped by an operator."""
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(client, task_queue, sandbox=sandbox) as clients:
        request = booking_request(call_id, trialist, (await free_slots(clients, trialist))[1])
        sandbox.add_fault(vendor="salesforce", status=400, error_rate=1.0)
        start = WithStartWorkflowOperation(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id, call_ended_timeout_seconds=1),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await client.execute_update_with_start_workflow(
            CallFollowUpWorkflow.book_meeting, request, start_workflow_operation=start
        )
        handle: WorkflowHandle[Any, Any] = await start.workflow_handle()
        await _parked(handle, FollowUpStep.UPSERT_SALESFORCE_LEAD)
        await handle.execute_update(
            CallFollowUpWorkflow.skip_step,
            SkipStepRequest(step=FollowUpStep.UPSERT_SALESFORCE_LEAD, reason="recorded by hand"),
        )
        await handle.result()
        clear_faults(sandbox.url)
    return handle


async def requested_in_outcome_booked_after_call(
    client: Client, sandbox: SandboxServer, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """Signal-with-start call_ended whose requested meeting is booked after the call."""
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(client, task_queue, sandbox=sandbox) as clients:
        request = booking_request(call_id, trialist, (await free_slots(clients, trialist))[2])
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[call_outcome(call_id, trialist, requested=request)],
        )
        await handle.result()
    return handle


async def requested_slot_taken_after_call(
    client: Client, sandbox: SandboxServer, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """call_ended asks for a slot someone else took meanwhile: the booking is unavailable."""
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(client, task_queue, sandbox=sandbox) as clients:
        slot = (await free_slots(clients, trialist))[3]
        other = make_trialist(new_call_id())
        guest = chilipiper_guest(other)
        session = await clients.chilipiper.find_free_slots(guest, timezone=guest.timezone)
        await clients.chilipiper.book_slot(route_id=session.route_id, slot_start=slot, guest=guest)
        request = booking_request(call_id, trialist, slot)
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[call_outcome(call_id, trialist, requested=request)],
        )
        await handle.result()
    return handle


SCENARIOS: dict[str, Scenario] = {
    "booked_in_call_parked_then_retried": booked_in_call_parked_then_retried,
    "outcome_missing_then_skipped": outcome_missing_then_skipped,
    "requested_in_outcome_booked_after_call": requested_in_outcome_booked_after_call,
    "requested_slot_taken_after_call": requested_slot_taken_after_call,
}


async def record(names: list[str], directory: Path) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=HISTORY_CONVERTER,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_existing_path=binary("temporal"),
    )
    try:
        with running_sandbox() as sandbox:
            for name in names:
                sandbox.reset()
                handle = await SCENARIOS[name](env.client, sandbox, f"record-{uuid.uuid4()}")
                # A closed workflow needs no worker for its result (a query would).
                progress = FollowUpProgress.model_validate(await handle.result())
                _check_completed(name, progress)
                history = await handle.fetch_history()
                path = directory / f"{name}.json"
                _write(path, history.to_json() + "\n")
                print(f"{name}: {len(history.events)} events -> {path}")
    finally:
        await env.shutdown()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _check_completed(name: str, progress: FollowUpProgress) -> None:
    if progress.status is not FollowUpStatus.COMPLETED:
        raise SystemExit(f"{name}: the follow-up ended as {progress.status}, not completed")


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=HISTORY_DIR)
    args = parser.parse_args()
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    asyncio.run(record(args.scenarios or list(SCENARIOS), args.out))


if __name__ == "__main__":
    main()
