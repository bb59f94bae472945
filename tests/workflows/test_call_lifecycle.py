"""A call's follow-up from its first second (issue 13), on the time-skipping test server.

Checkpoints during the call; the liveness rule when the agent goes silent; and a promised
booking that turns out taken: moved to the nearest free slot, or owed to the caller by the rep.
Real activities talk to the sandbox, pinned at the working-week anchor after the server's now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contracts import (
    CALL_ENDED_SIGNAL,
    CHECKPOINT_SIGNAL,
    PROGRESS_QUERY,
    BookingStatus,
    CallCheckpoint,
    CallLearned,
    EndedReason,
    FollowUpInput,
    FollowUpStatus,
    FollowUpStep,
    QualificationSignals,
    StepState,
    Trialist,
    workflow_id_for,
)
from tests.pinned_time import working_week_anchor
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    CrmRecords,
    FollowUpServers,
    ScenarioCall,
    book_for_someone_else,
    crm_records,
    sandbox_rows,
)
from workflows.call_liveness import LATE_TIMER
from workflows.follow_up import CallFollowUpWorkflow

LIVENESS_SECONDS = 60.0
SHORT_LIVENESS = 10.0  # the least FollowUpInput allows


@pytest.fixture(autouse=True)
async def sandbox_at_server_time(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer
) -> None:
    sandbox.reset(now=working_week_anchor(await time_skipping_env.get_current_time()))


def lifecycle_input(call_id: str, trialist: Trialist, started_at: datetime, **extra: Any) -> Any:
    return FollowUpInput(
        call_id=call_id,
        trialist=trialist,
        started_at=started_at,
        **{"liveness_seconds": LIVENESS_SECONDS, "step_schedule_to_close_seconds": 30, **extra},
    )


def checkpoint(call_id: str, seq: int, at: datetime, **learned: Any) -> CallCheckpoint:
    return CallCheckpoint(
        call_id=call_id,
        seq=seq,
        sent_at=at,
        learned=CallLearned(**learned) if learned or seq == 0 else None,
    )


async def start_call(
    servers: FollowUpServers, call: ScenarioCall, now: datetime, **extra: Any
) -> WorkflowHandle[Any, Any]:
    """What the agent does when a call starts: the first checkpoint creates the follow-up."""
    return await servers.client.start_workflow(
        CallFollowUpWorkflow.run,
        lifecycle_input(call.call_id, call.trialist, now, **extra),
        id=workflow_id_for(call.call_id),
        task_queue=servers.task_queue,
        start_signal=CHECKPOINT_SIGNAL,
        start_signal_args=[checkpoint(call.call_id, 0, now)],
    )


@asynccontextmanager
async def call_in_progress(
    servers: FollowUpServers, call: ScenarioCall
) -> AsyncIterator[tuple[WorkflowHandle[Any, Any], datetime]]:
    """A worker up, and a call that starts now; yields its follow-up and the server's now."""
    now = await servers.env.get_current_time()
    async with servers.worker():
        yield await start_call(servers, call, now), now


def crm_records_of(servers: FollowUpServers, call: ScenarioCall) -> CrmRecords:
    return crm_records(servers.sandbox.url, call_id=call.call_id, trialist=call.trialist)


def meetings_with(servers: FollowUpServers, call: ScenarioCall) -> list[dict[str, object]]:
    guest_email = call.trialist.email
    return sandbox_rows(servers.sandbox.url, "chilipiper_meetings", guest_email=guest_email)


async def test_an_agent_that_goes_silent_mid_call_still_reaches_the_crm_from_its_checkpoint(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers, call_id = time_skipping_servers, call.call_id
    learned = {
        "stage": "qualifying",
        "signals": QualificationSignals(team_size=12, use_case="sales proposals"),
        "notes": ["Wants SSO before they buy."],
    }
    async with call_in_progress(servers, call) as (handle, now):
        await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call_id, 4, now, **learned))
        # An older checkpoint replayed late by an outbox never undoes a newer one.
        await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call_id, 2, now, stage="opening"))
        # Then nothing: the agent process was killed. The server skips to the liveness timer.
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.agent_lost is True and progress.outcome_missing is False
    records = crm_records_of(servers, call)
    assert records.counts() == records.expected_for_one_call(meeting=False)
    [task] = records.tasks
    description = task["fields"]["Description"]
    assert "lost this call" in description
    assert "- team_size: 12" in description and "- use_case: sales proposals" in description
    assert "Wants SSO before they buy." in description
    [logged_call] = records.engagements["calls"]
    assert logged_call["properties"]["hs_call_status"] == "FAILED"
    [lead] = records.leads
    assert "team_size: 12" in json.dumps(lead["fields"])


async def test_keep_alives_keep_a_long_quiet_call_alive_until_its_call_ended(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers = time_skipping_servers
    async with call_in_progress(servers, call) as (handle, now):
        for _ in range(5):  # 5 x 40 s = 200 s of call, longer than the 60 s liveness window
            await servers.env.sleep(40)
            await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call.call_id, 0, now))
        await handle.signal(CALL_ENDED_SIGNAL, call.outcome())
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED and progress.agent_lost is False
    [task] = crm_records_of(servers, call).tasks
    assert "lost this call" not in task["fields"]["Description"]


async def test_a_promised_slot_taken_after_the_call_is_moved_to_the_nearest_free_one(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers = time_skipping_servers
    async with servers.worker() as clients:
        slots = await call.free_slots(clients)
        wanted = slots[2]
        await book_for_someone_else(clients, wanted)  # after the call: the calendar moved on
        # The agent said "the invite will follow by email": requested, not confirmed.
        handle = await start_call(servers, call, wanted)
        await handle.signal(CALL_ENDED_SIGNAL, call.outcome(requested=call.booking(wanted)))
        progress = await handle.result()

    nearest = min((s for s in slots if s != wanted), key=lambda s: (abs(s - wanted), s))
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert progress.booking.slot_start == nearest
    assert abs(nearest - wanted) <= timedelta(hours=2)
    assert len(meetings_with(servers, call)) == 1
    records = crm_records_of(servers, call)
    assert records.counts() == records.expected_for_one_call(meeting=True)
    for step in (FollowUpStep.OWE_REPLY_SALESFORCE, FollowUpStep.OWE_REPLY_HUBSPOT):
        assert progress.steps[step].state is StepState.NOT_NEEDED


@pytest.mark.parametrize("why", ["no slot near enough", "the time had passed"])
async def test_a_promise_that_cannot_be_kept_is_owed_to_the_caller_by_the_rep(
    time_skipping_servers: FollowUpServers, call: ScenarioCall, why: str
) -> None:
    servers = time_skipping_servers
    async with servers.worker() as clients:
        slots = await call.free_slots(clients)
        if why == "the time had passed":
            wanted = await servers.env.get_current_time() - timedelta(hours=1)
        else:
            wanted = slots[2]
            await book_for_someone_else(clients, wanted)
        handle = await start_call(servers, call, wanted, alternative_window_minutes=0)
        await handle.signal(CALL_ENDED_SIGNAL, call.outcome(requested=call.booking(wanted)))
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED
    for step in (FollowUpStep.OWE_REPLY_SALESFORCE, FollowUpStep.OWE_REPLY_HUBSPOT):
        assert progress.steps[step].state is StepState.SUCCEEDED, step
    records = crm_records_of(servers, call)
    reply_tasks = [t for t in records.tasks if t["fields"]["Subject"].startswith("Reply owed")]
    assert len(reply_tasks) == 1
    task = reply_tasks[0]["fields"]
    assert task["Status"] == "Not Started" and task["Priority"] == "High"
    assert "told a calendar invite would follow by email" in task["Description"]
    assert records.hubspot_note_mentions("Reply owed")
    assert not meetings_with(servers, call)


async def test_a_late_call_ended_after_the_agent_was_declared_lost_changes_nothing(
    time_skipping_servers: FollowUpServers, call: ScenarioCall
) -> None:
    servers = time_skipping_servers
    async with call_in_progress(servers, call) as (handle, _started_at):
        await servers.env.sleep(LIVENESS_SECONDS + 5)
        # Refused by the workflow if it is still finishing, by the server if it has finished.
        with contextlib.suppress(RPCError):
            await handle.signal(CALL_ENDED_SIGNAL, call.outcome())
        progress = await handle.result()
    assert progress.agent_lost is True
    records = crm_records_of(servers, call)
    assert records.counts()["salesforce_task"] == 1
    assert EndedReason.AGENT_LOST.value in records.tasks[0]["fields"]["Description"]


async def test_a_liveness_timer_that_fires_late_waits_for_the_checkpoints_queued_meanwhile(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    """Every worker (or Temporal) away past the liveness window: the agent's checkpoints of that
    time wait in its outbox and arrive just after. Silence seen on return is not a lost agent.

    On the dev server, in real time: the time-skipping server does not move its clock while the
    timer's workflow task waits for a worker.
    """
    servers, call_id = dev_servers, call.call_id
    now = datetime.now(UTC)
    async with servers.worker():
        handle = await start_call(servers, call, now, liveness_seconds=SHORT_LIVENESS)
        await handle.query(PROGRESS_QUERY)  # the first workflow task has run: the timer is set
    # No worker while the timer is due, and for longer than LATE_TIMER after.
    await asyncio.sleep(SHORT_LIVENESS + LATE_TIMER.total_seconds() + 1)
    async with servers.worker():
        await wait_for_timer_handled(handle)
        # The outbox's checkpoint, then the hang-up, delivered once the workers are back.
        learned = {"signals": QualificationSignals(team_size=7)}
        await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call_id, 3, datetime.now(UTC), **learned))
        await handle.signal(CALL_ENDED_SIGNAL, call.outcome())
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.agent_lost is False


async def wait_for_timer_handled(handle: WorkflowHandle[Any, Any]) -> None:
    """Until the worker has completed the workflow task that saw the late timer fire."""
    for _ in range(200):
        kinds = [event.event_type async for event in handle.fetch_history_events()]
        if EventType.EVENT_TYPE_TIMER_FIRED in kinds:
            fired = kinds.index(EventType.EVENT_TYPE_TIMER_FIRED)
            if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[fired:]:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the late liveness timer was never handled")
