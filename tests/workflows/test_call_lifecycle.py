"""A call's follow-up from its first second (issue 13), on the time-skipping test server.

Checkpoints during the call; the liveness rule when the agent goes silent; and a promised
booking that turns out taken: moved to the nearest free slot, or owed to the caller by the rep.
Real activities talk to the sandbox, pinned at the working-week anchor after the server's now.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.follow_up import chilipiper_guest
from contracts import (
    CALL_ENDED_SIGNAL,
    CHECKPOINT_SIGNAL,
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
from integrations.clients import VendorClients
from tests.pinned_time import working_week_anchor
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    booking_request,
    call_outcome,
    crm_records,
    follow_up_worker,
    free_slots,
    make_trialist,
    new_call_id,
    sandbox_rows,
)
from workflows.follow_up import CallFollowUpWorkflow

LIVENESS_SECONDS = 60.0


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
        liveness_seconds=LIVENESS_SECONDS,
        step_schedule_to_close_seconds=30,
        **extra,
    )


def checkpoint(call_id: str, seq: int, at: datetime, **learned: Any) -> CallCheckpoint:
    return CallCheckpoint(
        call_id=call_id,
        seq=seq,
        sent_at=at,
        learned=CallLearned(**learned) if learned or seq == 0 else None,
    )


async def start_call(
    client: Client, task_queue: str, call_id: str, trialist: Trialist, now: datetime, **extra: Any
) -> WorkflowHandle[Any, Any]:
    """What the agent does when a call starts: the first checkpoint creates the follow-up."""
    return await client.start_workflow(
        CallFollowUpWorkflow.run,
        lifecycle_input(call_id, trialist, now, **extra),
        id=workflow_id_for(call_id),
        task_queue=task_queue,
        start_signal=CHECKPOINT_SIGNAL,
        start_signal_args=[checkpoint(call_id, 0, now)],
    )


async def test_an_agent_that_goes_silent_mid_call_still_reaches_the_crm_from_its_checkpoint(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    now = await env.get_current_time()
    learned = {
        "stage": "qualifying",
        "signals": QualificationSignals(team_size=12, use_case="sales proposals"),
        "notes": ["Wants SSO before they buy."],
    }
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox):
        handle = await start_call(env.client, task_queue, call_id, trialist, now)
        await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call_id, 4, now, **learned))
        # An older checkpoint replayed late by an outbox never undoes a newer one.
        await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call_id, 2, now, stage="opening"))
        # Then nothing: the agent process was killed. The server skips to the liveness timer.
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.agent_lost is True and progress.outcome_missing is False
    records = crm_records(sandbox.url, call_id=call_id, trialist=trialist)
    assert records.counts() == records.expected_for_one_call(meeting=False)
    [task] = records.tasks
    description = task["fields"]["Description"]
    assert "lost this call" in description
    assert "- team_size: 12" in description and "- use_case: sales proposals" in description
    assert "Wants SSO before they buy." in description
    [call] = records.engagements["calls"]
    assert call["properties"]["hs_call_status"] == "FAILED"
    [lead] = records.leads
    assert "team_size: 12" in json.dumps(lead["fields"])


async def test_keep_alives_keep_a_long_quiet_call_alive_until_its_call_ended(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    now = await env.get_current_time()
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox):
        handle = await start_call(env.client, task_queue, call_id, trialist, now)
        for _ in range(5):  # 5 x 40 s = 200 s of call, longer than the 60 s liveness window
            await env.sleep(40)
            await handle.signal(CHECKPOINT_SIGNAL, checkpoint(call_id, 0, now))
        await handle.signal(CALL_ENDED_SIGNAL, call_outcome(call_id, trialist))
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED and progress.agent_lost is False
    [task] = crm_records(sandbox.url, call_id=call_id, trialist=trialist).tasks
    assert "lost this call" not in task["fields"]["Description"]


async def take(clients: VendorClients, slot: datetime) -> None:
    """Someone else books `slot` after the call: the calendar moved on."""
    other = make_trialist(new_call_id())
    guest = chilipiper_guest(other)
    session = await clients.chilipiper.find_free_slots(guest, timezone=guest.timezone)
    await clients.chilipiper.book_slot(route_id=session.route_id, slot_start=slot, guest=guest)


async def test_a_promised_slot_taken_after_the_call_is_moved_to_the_nearest_free_one(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox) as clients:
        slots = await free_slots(clients, trialist)
        wanted = slots[2]
        await take(clients, wanted)
        requested = booking_request(call_id, trialist, wanted)
        # The agent said "the invite will follow by email": requested, not confirmed.
        handle = await start_call(env.client, task_queue, call_id, trialist, wanted)
        await handle.signal(CALL_ENDED_SIGNAL, call_outcome(call_id, trialist, requested=requested))
        progress = await handle.result()

    nearest = min((s for s in slots if s != wanted), key=lambda s: (abs(s - wanted), s))
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert progress.booking.slot_start == nearest
    assert abs(nearest - wanted) <= timedelta(hours=2)
    meetings = sandbox_rows(sandbox.url, "chilipiper_meetings", guest_email=trialist.email)
    assert len(meetings) == 1
    records = crm_records(sandbox.url, call_id=call_id, trialist=trialist)
    assert records.counts() == records.expected_for_one_call(meeting=True)
    for step in (FollowUpStep.OWE_REPLY_SALESFORCE, FollowUpStep.OWE_REPLY_HUBSPOT):
        assert progress.steps[step].state is StepState.NOT_NEEDED


@pytest.mark.parametrize("why", ["no slot near enough", "the time had passed"])
async def test_a_promise_that_cannot_be_kept_is_owed_to_the_caller_by_the_rep(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str, why: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox) as clients:
        slots = await free_slots(clients, trialist)
        if why == "the time had passed":
            wanted = await env.get_current_time() - timedelta(hours=1)
        else:
            wanted = slots[2]
            await take(clients, wanted)
        requested = booking_request(call_id, trialist, wanted)
        handle = await start_call(
            env.client, task_queue, call_id, trialist, wanted, alternative_window_minutes=0
        )
        await handle.signal(CALL_ENDED_SIGNAL, call_outcome(call_id, trialist, requested=requested))
        progress = await handle.result()

    assert progress.status is FollowUpStatus.COMPLETED
    for step in (FollowUpStep.OWE_REPLY_SALESFORCE, FollowUpStep.OWE_REPLY_HUBSPOT):
        assert progress.steps[step].state is StepState.SUCCEEDED, step
    records = crm_records(sandbox.url, call_id=call_id, trialist=trialist)
    reply_tasks = [t for t in records.tasks if t["fields"]["Subject"].startswith("Reply owed")]
    assert len(reply_tasks) == 1
    task = reply_tasks[0]["fields"]
    assert task["Status"] == "Not Started" and task["Priority"] == "High"
    assert "told a calendar invite would follow by email" in task["Description"]
    assert records.hubspot_note_mentions("Reply owed")
    assert not sandbox_rows(sandbox.url, "chilipiper_meetings", guest_email=trialist.email)


async def test_a_late_call_ended_after_the_agent_was_declared_lost_changes_nothing(
    time_skipping_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    env = time_skipping_env
    call_id = new_call_id()
    trialist = make_trialist(call_id)
    now = await env.get_current_time()
    async with follow_up_worker(env.client, task_queue, sandbox=sandbox):
        handle = await start_call(env.client, task_queue, call_id, trialist, now)
        await env.sleep(LIVENESS_SECONDS + 5)
        # Refused by the workflow if it is still finishing, by the server if it has finished.
        with contextlib.suppress(RPCError):
            await handle.signal(CALL_ENDED_SIGNAL, call_outcome(call_id, trialist))
        progress = await handle.result()
    assert progress.agent_lost is True
    records = crm_records(sandbox.url, call_id=call_id, trialist=trialist)
    assert records.counts()["salesforce_task"] == 1
    assert EndedReason.AGENT_LOST.value in records.tasks[0]["fields"]["Description"]
