"""A worker for OutreachWorkflow tests: the real workflows, scripted LiveKit and CRM activities.

Stand-ins are registered under the real activity names; the dial-slot request is the real
activity. A stand-in CallFollowUpWorkflow (not sandboxed, labelled) plays "the call" and reports
back as the real follow-up does, so these tests stay about the calendar and the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.testservice.v1 import UnlockTimeSkippingRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.outreach import OutreachActivities
from contracts.calling_place import resolve_calling_place
from contracts.calling_policy import CallingPolicy
from contracts.models import CallbackWindow, FollowUpInput, Trialist
from contracts.names import (
    CALL_REPORT_SIGNAL,
    CHECK_CONTACT_ACTIVITY,
    DISPATCH_AGENT_ACTIVITY,
    OUTREACH_PROGRESS_QUERY,
    PLACE_DIAL_ACTIVITY,
    UPDATE_CRM_ACTIVITY,
    WORKFLOW_TYPE,
    dial_slots_workflow_id,
    workflow_id_for,
)
from contracts.outreach import (
    CallReport,
    CallResult,
    ConsentRecord,
    ContactFlags,
    ContactFlagsInput,
    CrmOutreachUpdate,
    CrmOutreachUpdateOutput,
    DialResultKind,
    DispatchAgentInput,
    DispatchAgentOutput,
    OutreachInput,
    OutreachProgress,
    PlaceDialInput,
    PlaceDialOutput,
    outreach_workflow_id,
)
from tests.payload_keys import SESSION_CONVERTER
from tests.servers import time_skipping_server
from workflows.dial_slots import DialSlotsWorkflow
from workflows.outreach import OutreachWorkflow

CALL_MINUTES = 5
SETTLE_SECONDS = 1.0
ORPHAN_SWEEP_SECONDS = 0.25
# The close events a parent records for its child; a child that closes in any other way than
# termination takes a time lock that only the parent's close event returns.
CHILD_CLOSED_EVENTS = {
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
}
LOCKING_CLOSES = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TIMED_OUT,
}


@dataclass
class Script:
    """What the stand-ins answer, and what they saw (dial times are the server's clock)."""

    dial_results: dict[str, list[DialResultKind]] = field(default_factory=dict)
    reports: dict[str, CallResult] = field(default_factory=dict)
    # Results in turn for a number (the last repeats); overrides `reports` for that number.
    reports_in_turn: dict[str, list[CallResult]] = field(default_factory=dict)
    # A CALL_BACK report's window, from the moment it is reported: (start, end) offsets.
    callback_window: tuple[timedelta, timedelta] = (timedelta(hours=1), timedelta(hours=4))
    do_not_call: set[str] = field(default_factory=set)
    dials: list[tuple[str, datetime]] = field(default_factory=list)
    crm: list[CrmOutreachUpdate] = field(default_factory=list)
    phone_of_call: dict[str, str] = field(default_factory=dict)
    dispatched: list[str] = field(default_factory=list)

    def dial_times(self, phone: str) -> list[datetime]:
        return [at for number, at in self.dials if number == phone]


class ScriptedActivities:
    def __init__(self, script: Script) -> None:
        self.script = script

    @activity.defn(name=CHECK_CONTACT_ACTIVITY)
    async def check_contact(self, input: ContactFlagsInput) -> ContactFlags:
        flagged = input.trial_account_id in self.script.do_not_call
        sources = ["Salesforce Lead DoNotCall"] if flagged else []
        return ContactFlags(do_not_call=flagged, sources=sources)

    @activity.defn(name=PLACE_DIAL_ACTIVITY)
    async def place_dial(self, input: PlaceDialInput) -> PlaceDialOutput:
        self.script.dials.append((input.to_number, activity.info().current_attempt_scheduled_time))
        self.script.phone_of_call[input.call_id] = input.to_number
        results = self.script.dial_results.get(input.to_number) or [DialResultKind.ANSWERED]
        result = results.pop(0) if len(results) > 1 else results[0]
        return PlaceDialOutput(result=result)

    @activity.defn(name=DISPATCH_AGENT_ACTIVITY)
    async def dispatch_agent(self, input: DispatchAgentInput) -> DispatchAgentOutput:
        json.loads(input.metadata)  # the metadata is JSON the agent's read_dispatch reads
        self.script.dispatched.append(input.call_id)
        return DispatchAgentOutput(dispatch_id=f"AD_{input.call_id}")

    @activity.defn(name=UPDATE_CRM_ACTIVITY)
    async def update_crm(self, input: CrmOutreachUpdate) -> CrmOutreachUpdateOutput:
        self.script.crm.append(input)
        return CrmOutreachUpdateOutput(salesforce_lead_id="00Q", hubspot_contact_id="1")

    @activity.defn(name="stand_in_call_result")
    async def call_result(self, call_id: str) -> tuple[str, float, float]:
        """The call's result, and a CALL_BACK's window as seconds from now."""
        phone = self.script.phone_of_call.get(call_id, "")
        in_turn = self.script.reports_in_turn.get(phone)
        if in_turn:
            result = in_turn.pop(0) if len(in_turn) > 1 else in_turn[0]
        else:
            result = self.script.reports.get(phone, CallResult.BOOKED)
        start, end = self.script.callback_window
        return result.value, start.total_seconds(), end.total_seconds()


@workflow.defn(name=WORKFLOW_TYPE, sandboxed=False)
class StandInFollowUp:
    """[stand-in] The call lasts a few minutes, then its result is reported to the outreach."""

    @workflow.run
    async def run(self, input: FollowUpInput) -> None:
        await workflow.sleep(timedelta(minutes=CALL_MINUTES))
        result, start, end = await workflow.execute_activity(
            "stand_in_call_result",
            input.call_id,
            result_type=tuple[str, float, float],
            start_to_close_timeout=timedelta(seconds=10),
        )
        if input.outreach_workflow_id is not None:
            now = workflow.now()
            callback = (
                CallbackWindow(
                    start=now + timedelta(seconds=start), end=now + timedelta(seconds=end)
                )
                if CallResult(result) is CallResult.CALL_BACK
                else None
            )
            report = CallReport(call_id=input.call_id, result=CallResult(result), callback=callback)
            await workflow.get_external_workflow_handle(input.outreach_workflow_id).signal(
                CALL_REPORT_SIGNAL, report
            )


def own_time_skipping_env() -> AbstractAsyncContextManager[WorkflowEnvironment]:
    """A test server of its own: pinning moves its clock months ahead, and the follow-up tests
    on the shared server expect a clock near the wall clock (the sandbox's slots are)."""
    return time_skipping_server(SESSION_CONVERTER)


@asynccontextmanager
async def outreach_worker(client: Client, task_queue: str, script: Script) -> AsyncIterator[None]:
    scripted = ScriptedActivities(script)
    slots = OutreachActivities(clients=None, livekit=None, task_queue=task_queue)  # type: ignore[arg-type]
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[OutreachWorkflow, DialSlotsWorkflow, StandInFollowUp],
        activities=[
            scripted.check_contact,
            scripted.place_dial,
            scripted.dispatch_agent,
            scripted.update_crm,
            scripted.call_result,
            slots.request_dial_slot,
        ],
    ):
        try:
            yield
        finally:
            await settle(client, script)
    # Ended only once no worker holds one of its tasks: a task in flight at termination can
    # leave the test server's time lock held. Left running, its next timer would do the same.
    slots = client.get_workflow_handle(dial_slots_workflow_id(task_queue))
    with contextlib.suppress(RPCError):
        await slots.terminate("test over")


class OrphanedChildLocks:
    """Returns the time locks the Java test server leaks for abandoned children.

    A child that closes takes a time lock "to notify the parent", and only the parent's
    ChildWorkflowExecution* event returns it; when the parent has already closed (an outreach
    that ended while its follow-up, started with ParentClosePolicy.ABANDON, still ran), the
    notification fails with NOT_FOUND and the lock stays, so the clock never skips again
    (TestWorkflowMutableStateImpl "notify parent"; sdk-typescript#1101). The real server has no
    such lock. A leak is exact to detect: the parent is closed, its history has no close event
    for the child, and the child closed other than by termination. Each is unlocked once.
    """

    def __init__(self, env: WorkflowEnvironment, client: Client, parent_ids: list[str]) -> None:
        self._env = env
        self._client = client
        self._open_parents = set(parent_ids)
        self._orphans: set[str] = set()
        self.returned = 0

    async def sweep(self) -> None:
        for parent_id in list(self._open_parents):
            parent = self._client.get_workflow_handle(parent_id)
            if (await parent.describe()).status is WorkflowExecutionStatus.RUNNING:
                continue
            self._open_parents.discard(parent_id)
            self._orphans |= await _children_left_open(parent)
        for child_id in list(self._orphans):
            status = (await self._client.get_workflow_handle(child_id).describe()).status
            if status is WorkflowExecutionStatus.RUNNING:
                continue
            self._orphans.discard(child_id)
            if status in LOCKING_CLOSES:
                await self._env.client.test_service.unlock_time_skipping(
                    UnlockTimeSkippingRequest()
                )
                self.returned += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until `stop`, also while the test sleeps on the server's clock."""
        while not stop.is_set():
            await self.sweep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ORPHAN_SWEEP_SECONDS)


async def _children_left_open(parent: WorkflowHandle[Any, Any]) -> set[str]:
    """The children a closed parent started and never saw close (by their workflow ids)."""
    started: dict[int, str] = {}
    closed: set[int] = set()
    async for event in parent.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            attributes = event.child_workflow_execution_started_event_attributes
            started[attributes.initiated_event_id] = attributes.workflow_execution.workflow_id
        elif event.event_type in CHILD_CLOSED_EVENTS:
            closed.add(_initiated_event_id(event))
    return {child for initiated, child in started.items() if initiated not in closed}


def _initiated_event_id(event: Any) -> int:
    attributes = getattr(event, event.WhichOneof("attributes"))
    return int(attributes.initiated_event_id)


async def settle(client: Client, script: Script) -> None:
    """Leave nothing behind for the next test: a workflow task left pending without a worker
    keeps the time-skipping server from skipping. Calls' stand-in follow-ups finish first."""
    for call_id in script.dispatched:
        handle = client.get_workflow_handle(workflow_id_for(call_id))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), timeout=10)
    # The slot holder's last task (the final release) runs while the worker is still up.
    await asyncio.sleep(SETTLE_SECONDS)


def trialist(phone: str, zone: str = "America/New_York") -> Trialist:
    account = f"trial-{uuid.uuid4().hex[:10]}"
    return Trialist(
        email=f"{account}@example.com",
        name="Test Trialist",
        phone=phone,
        trial_account_id=account,
        timezone=zone,
    )


def outreach_input(
    person: Trialist,
    task_queue: str,
    *,
    policy: CallingPolicy | None = None,
    consent: bool = True,
    zone: str | None = None,
    **changes: Any,
) -> OutreachInput:
    assert person.phone is not None
    return OutreachInput(
        trialist=person,
        place=resolve_calling_place(phone=person.phone, timezone=zone),
        consent=ConsentRecord(
            recorded_at=datetime(2026, 1, 5, tzinfo=ZoneInfo("UTC")), source="signup"
        )
        if consent
        else None,
        from_number="+14155550100",
        trunk_id="ST_test",
        policy=policy or CallingPolicy(),
        follow_up_task_queue=task_queue,
        **changes,
    )


async def start_outreach(
    client: Client, input: OutreachInput, task_queue: str
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        OutreachWorkflow.run,
        input,
        id=outreach_workflow_id(input.trialist.trial_account_id),
        task_queue=task_queue,
    )


async def progress(handle: WorkflowHandle[Any, Any]) -> OutreachProgress:
    result: OutreachProgress = await handle.query(
        OUTREACH_PROGRESS_QUERY, result_type=OutreachProgress
    )
    return result


async def until(
    handle: WorkflowHandle[Any, Any], predicate: Any, *, seconds: float = 20
) -> OutreachProgress:
    """Poll the progress query (real time, no skipping) until `predicate` holds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        state = await progress(handle)
        if predicate(state):
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"outreach stuck at {state.status}: {state.why}")
        await asyncio.sleep(0.05)


async def pin_clock(
    env: WorkflowEnvironment, zone: str, *, weekday: int, hour: int, minute: int
) -> datetime:
    """Skip the test server's clock to the next `weekday` at hour:minute local, a week ahead."""
    now = await env.get_current_time()
    local = now.astimezone(ZoneInfo(zone)) + timedelta(days=8)
    day = local.date() + timedelta(days=(weekday - local.weekday()) % 7)
    target = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone))
    await env.sleep(target - now)
    return target


async def pin_clock_to(env: WorkflowEnvironment, target: datetime) -> None:
    now = await env.get_current_time()
    assert target > now, "pinned instants must lie ahead of the test server's clock"
    await env.sleep(target - now)
