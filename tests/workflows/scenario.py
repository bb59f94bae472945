"""Builders for follow-up tests: a call and its trialist, its messages, a free slot, a worker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.follow_up import FollowUpActivities, chilipiper_guest
from config.settings import Settings
from contracts import (
    CALL_ENDED_SIGNAL,
    BookingConfirmation,
    BookingRequest,
    CallOutcome,
    EndedReason,
    FollowUpInput,
    FollowUpProgress,
    FollowUpStep,
    QualificationSignals,
    StepState,
    Trialist,
    workflow_id_for,
)
from integrations.clients import VendorClients, build_vendor_clients
from integrations.http import build_http_client
from tests.servers import SandboxServer
from worker import follow_up_runner
from workflows.follow_up import CallFollowUpWorkflow

# Short enough that a stuck step parks within a test, long enough for loopback HTTP.
TEST_STEP_SCHEDULE_TO_CLOSE_SECONDS = 20.0
# Shorter than the sandbox's after-commit delays used to provoke ambiguous bookings.
TEST_READ_TIMEOUT_SECONDS = 1.0
CALL_SUMMARY = "Uses PandaDoc for sales proposals; wants a demo of approvals."


def new_call_id() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def make_trialist(call_id: str) -> Trialist:
    """A trialist unique to the call, so sandbox rows can be counted per test."""
    suffix = call_id.removeprefix("test-")[:8]
    return Trialist(
        email=f"casey.{suffix}@orbitworks.example",
        name="Casey Morgan",
        company="Orbitworks",
        phone="+14155550123",
        trial_account_id=f"trial-{suffix}",
        timezone="America/Chicago",
    )


def follow_up_input(
    call_id: str,
    *,
    call_ended_timeout_seconds: float = 3600.0,
    step_schedule_to_close_seconds: float = TEST_STEP_SCHEDULE_TO_CLOSE_SECONDS,
) -> FollowUpInput:
    return FollowUpInput(
        call_id=call_id,
        call_ended_timeout_seconds=call_ended_timeout_seconds,
        step_schedule_to_close_seconds=step_schedule_to_close_seconds,
    )


def booking_request(call_id: str, trialist: Trialist, slot: datetime) -> BookingRequest:
    return BookingRequest(call_id=call_id, slot_start=slot, duration_minutes=30, guest=trialist)


def call_outcome(
    call_id: str,
    trialist: Trialist,
    *,
    requested: BookingRequest | None = None,
    booking: BookingConfirmation | None = None,
    summary: str = CALL_SUMMARY,
) -> CallOutcome:
    # The outcome's timestamps are records, not calendar decisions: the wall clock is fine.
    ended = datetime.now(UTC).replace(microsecond=0)
    return CallOutcome(
        call_id=call_id,
        trialist=trialist,
        started_at=ended - timedelta(minutes=6),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        signals=QualificationSignals(
            team_size=12,
            use_case="sales proposals",
            current_tool="Google Docs",
            timeline="this quarter",
            decision_role="team lead",
        ),
        notes=["Sends about 40 proposals a month.", "Asked about CRM sync."],
        summary=summary,
        requested_meeting=requested,
        booking=booking,
    )


def sandbox_settings(sandbox_url: str) -> Settings:
    return Settings(_env_file=None, sandbox_url=sandbox_url)


def vendor_clients(
    sandbox: SandboxServer, *, read_timeout: float = TEST_READ_TIMEOUT_SECONDS
) -> VendorClients:
    """Clients on the sandbox, searching its calendar from its (pinned) now."""
    http = build_http_client(read_timeout=read_timeout)
    return build_vendor_clients(sandbox_settings(sandbox.url), http=http, clock=sandbox.clock)


@asynccontextmanager
async def open_vendor_clients(
    sandbox: SandboxServer, *, read_timeout: float = TEST_READ_TIMEOUT_SECONDS
) -> AsyncIterator[VendorClients]:
    """`vendor_clients`, closed at the end."""
    clients = vendor_clients(sandbox, read_timeout=read_timeout)
    try:
        yield clients
    finally:
        await clients.aclose()


async def free_slots(clients: VendorClients, trialist: Trialist) -> list[datetime]:
    guest = chilipiper_guest(trialist)
    found = await clients.chilipiper.find_free_slots(guest, timezone=guest.timezone)
    return found.slots


async def book_for_someone_else(clients: VendorClients, slot: datetime) -> None:
    """Another trialist books `slot` first: the calendar moved on."""
    guest = chilipiper_guest(make_trialist(new_call_id()))
    session = await clients.chilipiper.find_free_slots(guest, timezone=guest.timezone)
    await clients.chilipiper.book_slot(route_id=session.route_id, slot_start=slot, guest=guest)


@dataclass(frozen=True)
class ScenarioCall:
    """One test's call: a fresh id, a trialist unique to it, and what its agent sends."""

    call_id: str
    trialist: Trialist

    @classmethod
    def new(cls) -> ScenarioCall:
        call_id = new_call_id()
        return cls(call_id=call_id, trialist=make_trialist(call_id))

    def booking(self, slot: datetime) -> BookingRequest:
        return booking_request(self.call_id, self.trialist, slot)

    def outcome(
        self,
        *,
        requested: BookingRequest | None = None,
        booking: BookingConfirmation | None = None,
        summary: str = CALL_SUMMARY,
    ) -> CallOutcome:
        return call_outcome(
            self.call_id, self.trialist, requested=requested, booking=booking, summary=summary
        )

    async def free_slots(self, clients: VendorClients) -> list[datetime]:
        return await free_slots(clients, self.trialist)

    async def first_free_booking(self, clients: VendorClients) -> BookingRequest:
        """A booking of the first slot the sandbox's calendar offers this call's trialist."""
        return self.booking((await self.free_slots(clients))[0])


@asynccontextmanager
async def follow_up_worker(
    client: Client,
    task_queue: str,
    *,
    sandbox: SandboxServer,
    activities: Sequence[Callable[..., Any]] | None = None,
) -> AsyncIterator[VendorClients]:
    """A worker with the real workflow and, unless replaced, the real activities."""
    async with open_vendor_clients(sandbox) as clients:
        registered = (
            list(activities)
            if activities is not None
            else FollowUpActivities(clients=clients).activity_methods()
        )
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[CallFollowUpWorkflow],
            activities=registered,
            workflow_runner=follow_up_runner(),
        ):
            yield clients


@dataclass(frozen=True)
class FollowUpServers:
    """What a follow-up test runs on: a Temporal server, the sandbox and a task queue of its own."""

    env: WorkflowEnvironment
    sandbox: SandboxServer
    task_queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    def worker(
        self, *, activities: Sequence[Callable[..., Any]] | None = None
    ) -> AbstractAsyncContextManager[VendorClients]:
        """A worker on the test's task queue, on the sandbox (see `follow_up_worker`)."""
        return follow_up_worker(
            self.client, self.task_queue, sandbox=self.sandbox, activities=activities
        )

    def start(
        self, start_input: FollowUpInput, *, summary: str | None = None
    ) -> WithStartWorkflowOperation[Any, Any]:
        """The start an update-with-start carries."""
        return WithStartWorkflowOperation(
            CallFollowUpWorkflow.run,
            start_input,
            static_summary=summary,
            **self.start_options(start_input.call_id),
        )

    def start_options(self, call_id: str) -> dict[str, Any]:
        """Where a start puts the call's follow-up: USE_EXISTING, so a repeat joins the first."""
        return {
            "id": workflow_id_for(call_id),
            "task_queue": self.task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        }

    async def signal_call_ended(
        self,
        outcome: CallOutcome,
        *,
        step_schedule_to_close_seconds: float = TEST_STEP_SCHEDULE_TO_CLOSE_SECONDS,
        summary: str | None = None,
    ) -> WorkflowHandle[Any, Any]:
        """What the agent's session-end hook does: signal-with-start `call_ended`, USE_EXISTING."""
        start_input = follow_up_input(
            outcome.call_id, step_schedule_to_close_seconds=step_schedule_to_close_seconds
        )
        return await self.client.start_workflow(
            CallFollowUpWorkflow.run,
            start_input,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[outcome],
            static_summary=summary,
            **self.start_options(outcome.call_id),
        )


async def progress_of(handle: WorkflowHandle[Any, Any]) -> FollowUpProgress:
    return await handle.query(CallFollowUpWorkflow.progress)


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float = 15.0,
    interval: float = 0.1,
    advance: Callable[[], Awaitable[None]] | None = None,
    what: str = "condition",
) -> None:
    """Poll `check` (bounded); `advance` moves a time-skipping server forward between polls."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        if advance is not None:
            await advance()
        else:
            await asyncio.sleep(interval)


async def until_parked(
    handle: WorkflowHandle[Any, Any],
    step: FollowUpStep,
    *,
    within: float = 15.0,
    advance: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait (bounded) until `step` waits for an operator."""

    async def parked() -> bool:
        return (await progress_of(handle)).steps[step].state is StepState.NEEDS_ATTENTION

    await wait_until(parked, within=within, advance=advance, what=f"{step} to park")


def sandbox_rows(sandbox_url: str, table: str, **match: object) -> list[dict[str, object]]:
    response = httpx2.get(f"{sandbox_url}/__sandbox/state", timeout=5)
    response.raise_for_status()
    rows: list[dict[str, object]] = response.json().get(table, [])
    return [row for row in rows if all(row.get(k) == v for k, v in match.items())]


@dataclass(frozen=True)
class CrmRecords:
    """The sandbox's CRM rows that belong to one call's trialist."""

    leads: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    engagements: dict[str, list[dict[str, Any]]]

    def counts(self) -> dict[str, int]:
        return {
            "salesforce_lead": len(self.leads),
            "salesforce_task": len(self.tasks),
            "salesforce_event": len(self.events),
            "hubspot_contact": len(self.contacts),
            **{f"hubspot_{kind}": len(rows) for kind, rows in self.engagements.items()},
        }

    @staticmethod
    def expected_for_one_call(*, meeting: bool) -> dict[str, int]:
        booked = 1 if meeting else 0
        return {
            "salesforce_lead": 1,
            "salesforce_task": 1,
            "salesforce_event": booked,
            "hubspot_contact": 1,
            "hubspot_calls": 1,
            "hubspot_notes": 1,
            "hubspot_meetings": booked,
        }

    def hubspot_note_mentions(self, text: str) -> bool:
        return any(text in str(note["properties"]) for note in self.engagements["notes"])


def crm_records(sandbox_url: str, *, call_id: str, trialist: Trialist) -> CrmRecords:
    """Leads by trial account id, Tasks/Events on those leads, HubSpot rows by email/call id."""
    response = httpx2.get(f"{sandbox_url}/__sandbox/state", timeout=5)
    response.raise_for_status()
    state = response.json()
    records = [{**row, "fields": json.loads(row["fields"])} for row in state["salesforce_records"]]
    leads = [
        r
        for r in records
        if r["sobject"] == "Lead"
        and r["fields"].get("Trial_Account_Id__c") == trialist.trial_account_id
    ]
    lead_ids = {lead["id"] for lead in leads}
    on_lead = [r for r in records if r["fields"].get("WhoId") in lead_ids]
    objects = [
        {**row, "properties": json.loads(row["properties"])} for row in state["hubspot_objects"]
    ]
    return CrmRecords(
        leads=leads,
        tasks=[r for r in on_lead if r["sobject"] == "Task"],
        events=[r for r in on_lead if r["sobject"] == "Event"],
        contacts=[
            o
            for o in objects
            if o["object_type"] == "contacts" and o["email"] == trialist.email.lower()
        ],
        engagements={
            kind: [
                o
                for o in objects
                if o["object_type"] == kind
                and str(o["voice_call_id"] or "").startswith(f"{call_id}:")
            ]
            for kind in ("calls", "notes", "meetings")
        },
    )


def clear_faults(sandbox_url: str) -> None:
    httpx2.delete(f"{sandbox_url}/__sandbox/faults", timeout=5).raise_for_status()


async def activity_retry_gap(handle: WorkflowHandle[Any, Any], activity_type: str) -> timedelta:
    """From scheduling an activity to the start of its last attempt, by the server's history."""
    events = (await handle.fetch_history()).events
    scheduled = next(
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    )
    started = next(
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled.event_id
    )
    return started.event_time.ToDatetime() - scheduled.event_time.ToDatetime()


async def timer_fired_after(handle: WorkflowHandle[Any, Any]) -> timedelta:
    """How long after the start the workflow's first timer fired, by the server's history."""
    events = (await handle.fetch_history()).events
    fired = next(e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED)
    return fired.event_time.ToDatetime() - events[0].event_time.ToDatetime()


def handle_for(client: Client, call_id: str) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(workflow_id_for(call_id))
