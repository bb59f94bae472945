"""Re-record the histories the replay test checks: `python -m tests.workflows.record_history`.

Starts a dev server and the sandbox, runs each scenario with the real worker code, and writes
`tests/histories/<scenario>.json`. Re-record only for an intended, versioned workflow change.
Payloads are encrypted with the committed fixture key (tests/payload_keys.py), as in production;
histories recorded before the codec are plain and replay as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from config.process_exit import exits_cleanly
from config.settings import Settings
from contracts import (
    CALL_ENDED_SIGNAL,
    SEARCH_ATTRIBUTES,
    FollowUpProgress,
    FollowUpStatus,
    FollowUpStep,
    RetryStepRequest,
    SkipStepRequest,
    workflow_id_for,
)
from contracts.models import CallCheckpoint
from handoff.follow_up import BookingHandoffStatus, FollowUpHandoff
from tests.payload_keys import HISTORY_CONVERTER, HISTORY_KEY
from tests.servers import binary, running_sandbox
from tests.workflows.scenario import (
    FollowUpServers,
    ScenarioCall,
    book_for_someone_else,
    clear_faults,
    follow_up_input,
    until_parked,
)
from workflows.follow_up import CallFollowUpWorkflow

HISTORY_DIR = Path(__file__).resolve().parent.parent / "histories"

Scenario = Callable[[FollowUpServers], Awaitable[WorkflowHandle[Any, Any]]]


async def booked_in_call_parked_then_retried(servers: FollowUpServers) -> WorkflowHandle[Any, Any]:
    """Update-with-start booking, a repeated booking, call_ended twice, a HubSpot 400 retried."""
    call = ScenarioCall.new()
    async with servers.worker() as clients:
        request = await call.first_free_booking(clients)
        for _ in range(2):
            await servers.client.execute_update_with_start_workflow(
                CallFollowUpWorkflow.book_meeting,
                request,
                start_workflow_operation=servers.start(follow_up_input(call.call_id)),
            )
        handle: WorkflowHandle[Any, Any] = servers.client.get_workflow_handle(
            workflow_id_for(call.call_id)
        )
        servers.sandbox.add_fault(
            vendor="hubspot", operation="batch_upsert_contacts", status=400, error_rate=1.0
        )
        outcome = call.outcome(requested=request)
        for _ in range(2):
            await handle.signal(CALL_ENDED_SIGNAL, outcome)
        await until_parked(handle, FollowUpStep.UPSERT_HUBSPOT_CONTACT, within=30)
        clear_faults(servers.sandbox.url)
        await handle.execute_update(
            CallFollowUpWorkflow.retry_step,
            RetryStepRequest(step=FollowUpStep.UPSERT_HUBSPOT_CONTACT),
        )
        await handle.result()
    return handle


async def outcome_missing_then_skipped(servers: FollowUpServers) -> WorkflowHandle[Any, Any]:
    """A booking, no call_ended (the wait times out), a Salesforce 400 skipped by an operator."""
    call = ScenarioCall.new()
    async with servers.worker() as clients:
        request = call.booking((await call.free_slots(clients))[1])
        servers.sandbox.add_fault(vendor="salesforce", status=400, error_rate=1.0)
        start = servers.start(follow_up_input(call.call_id, call_ended_timeout_seconds=1))
        await servers.client.execute_update_with_start_workflow(
            CallFollowUpWorkflow.book_meeting, request, start_workflow_operation=start
        )
        handle: WorkflowHandle[Any, Any] = await start.workflow_handle()
        await until_parked(handle, FollowUpStep.UPSERT_SALESFORCE_LEAD, within=30)
        await handle.execute_update(
            CallFollowUpWorkflow.skip_step,
            SkipStepRequest(step=FollowUpStep.UPSERT_SALESFORCE_LEAD, reason="recorded by hand"),
        )
        await handle.result()
        clear_faults(servers.sandbox.url)
    return handle


async def requested_in_outcome_booked_after_call(
    servers: FollowUpServers,
) -> WorkflowHandle[Any, Any]:
    """Signal-with-start call_ended whose requested meeting is booked after the call."""
    call = ScenarioCall.new()
    async with servers.worker() as clients:
        request = call.booking((await call.free_slots(clients))[2])
        handle = await servers.signal_call_ended(call.outcome(requested=request))
        await handle.result()
    return handle


async def requested_slot_taken_after_call(servers: FollowUpServers) -> WorkflowHandle[Any, Any]:
    """call_ended asks for a slot someone else took meanwhile: the booking is unavailable."""
    call = ScenarioCall.new()
    async with servers.worker() as clients:
        slot = (await call.free_slots(clients))[3]
        await book_for_someone_else(clients, slot)
        handle = await servers.signal_call_ended(call.outcome(requested=call.booking(slot)))
        await handle.result()
    return handle


@contextlib.asynccontextmanager
async def agent_handoff(servers: FollowUpServers) -> AsyncIterator[FollowUpHandoff]:
    """The agent's own handoff to these servers, its payloads sealed with the fixture key."""
    with tempfile.TemporaryDirectory() as data_dir:
        handoff = FollowUpHandoff.from_settings(
            Settings(
                _env_file=None,
                data_dir=Path(data_dir),
                temporal_address=servers.client.service_client.config.target_host,
                temporal_task_queue=servers.task_queue,
                # The committed fixture key, which the server's client and the replayer use.
                payload_encryption_key=SecretStr(HISTORY_KEY.to_base64()),
                payload_encryption_key_id=HISTORY_KEY.id,
            )
        )
        try:
            yield handoff
        finally:
            await handoff.aclose()


async def checkpointed_call_demoted_after_call_ended(
    servers: FollowUpServers,
) -> WorkflowHandle[Any, Any]:
    """The agent's own handoff: checkpoints from the call's start, then call_ended, after which
    the handoff demotes the follow-up to post-call priority (a WorkflowExecutionOptionsUpdated
    event in the history)."""
    call = ScenarioCall.new()
    async with agent_handoff(servers) as handoff, servers.worker() as clients:
        request = call.booking((await call.free_slots(clients))[4])
        outcome = call.outcome(requested=request)
        handoff.call_started(call.call_id, trialist=call.trialist, started_at=outcome.started_at)
        for seq in (1, 2):
            sent = outcome.started_at + timedelta(seconds=seq)
            checkpoint = CallCheckpoint(call_id=call.call_id, seq=seq, sent_at=sent)
            await handoff.checkpoint(checkpoint)
        await handoff.call_ended(outcome)
        handle: WorkflowHandle[Any, Any] = servers.client.get_workflow_handle(
            workflow_id_for(call.call_id)
        )
        await handle.result()
    return handle


async def booked_in_call_by_a_local_activity(
    servers: FollowUpServers,
) -> WorkflowHandle[Any, Any]:
    """The agent's handoff books during the call: the booking runs as a local activity in the
    workflow task that accepts the update (a patch marker and a local-activity marker), its
    first attempt hits a Chili Piper 503 and its quick retry books; then call_ended."""
    call = ScenarioCall.new()
    async with agent_handoff(servers) as handoff, servers.worker() as clients:
        request = call.booking((await call.free_slots(clients))[5])
        outcome = call.outcome(requested=request)
        handoff.call_started(call.call_id, trialist=call.trialist, started_at=outcome.started_at)
        sent = outcome.started_at + timedelta(seconds=1)
        await handoff.checkpoint(CallCheckpoint(call_id=call.call_id, seq=1, sent_at=sent))
        servers.sandbox.add_fault(
            vendor="chilipiper", operation="schedule_simple", status=503, error_rate=1.0, times=1
        )
        booked = await handoff.book_meeting(request, wait=10.0)
        if booked.status is not BookingHandoffStatus.CONFIRMED:
            raise RuntimeError(f"the in-call booking did not confirm: {booked}")
        await handoff.call_ended(outcome)
        handle: WorkflowHandle[Any, Any] = servers.client.get_workflow_handle(
            workflow_id_for(call.call_id)
        )
        await handle.result()
        clear_faults(servers.sandbox.url)
    return handle


SCENARIOS: dict[str, Scenario] = {
    "booked_in_call_by_a_local_activity": booked_in_call_by_a_local_activity,
    "checkpointed_call_demoted_after_call_ended": checkpointed_call_demoted_after_call_ended,
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
                task_queue = f"record-{uuid.uuid4()}"
                servers = FollowUpServers(env=env, sandbox=sandbox, task_queue=task_queue)
                handle = await SCENARIOS[name](servers)
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
