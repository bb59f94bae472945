"""What the chaos run asks Temporal and Chili Piper directly: the follow-ups, and slots it takes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from bench.chaos_checks import FollowUp
from config.settings import Settings
from contracts.models import FollowUpProgress
from contracts.names import FOLLOW_UP_STATUS, PROGRESS_QUERY, WORKFLOW_ID_PREFIX, WORKFLOW_TYPE
from integrations.chilipiper import ChiliPiperGuest
from integrations.clients import build_vendor_clients
from integrations.errors import VendorError

logger = logging.getLogger(__name__)

QUERY_CONCURRENCY: Final = 8
QUERY_TIMEOUT: Final = timedelta(seconds=10)
TAKE_ATTEMPTS: Final = 20


async def follow_ups(client: Client, *, query: bool) -> dict[str, FollowUp]:
    """Every follow-up of the run by call id; with `query`, its progress query's agent_lost."""
    listed: dict[str, FollowUp] = {}
    async for execution in client.list_workflows(f'WorkflowType="{WORKFLOW_TYPE}"'):
        status = execution.status.name if execution.status is not None else "UNKNOWN"
        listed[execution.id.removeprefix(WORKFLOW_ID_PREFIX)] = FollowUp(
            status=status,
            follow_up_status=execution.typed_search_attributes.get(FOLLOW_UP_STATUS),
            close_time=execution.close_time,
            agent_lost=None,
        )
    if not query:
        return listed
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def with_progress(call_id: str, follow_up: FollowUp) -> None:
        async with gate:
            handle = client.get_workflow_handle(f"{WORKFLOW_ID_PREFIX}{call_id}")
            try:
                progress = await handle.query(
                    PROGRESS_QUERY, result_type=FollowUpProgress, rpc_timeout=QUERY_TIMEOUT
                )
            except RPCError:
                return
            listed[call_id] = FollowUp(
                status=follow_up.status,
                follow_up_status=follow_up.follow_up_status,
                close_time=follow_up.close_time,
                agent_lost=progress.agent_lost,
            )

    await asyncio.gather(*(with_progress(call_id, f) for call_id, f in list(listed.items())))
    return listed


async def take_slots(settings: Settings, starts: list[datetime]) -> int:
    """Book every rep's free time at each start as other guests; returns the bookings made."""
    clients = build_vendor_clients(settings)
    chilipiper = clients.chilipiper
    made = 0
    try:
        for start in starts:
            for attempt in range(TAKE_ATTEMPTS):
                guest = ChiliPiperGuest(
                    email=f"walk-in-{int(start.timestamp())}-{attempt}@elsewhere.example",
                    first_name="Walk",
                    last_name="In",
                    timezone="America/New_York",
                )
                try:
                    free = await chilipiper.find_free_slots(guest, timezone=guest.timezone)
                    if start not in free.slots:
                        break
                    await chilipiper.book_slot(
                        route_id=free.route_id, slot_start=start, guest=guest
                    )
                    made += 1
                except VendorError as error:  # the sandbox's faults hit the bench too: again
                    logger.info("taking %s: %s", start.isoformat(), type(error).__name__)
    finally:
        await clients.aclose()
    return made


@dataclass(frozen=True)
class TaskTimings:
    """Workflow-task and update timings read from the follow-ups' histories (server times)."""

    tasks: int
    queued: list[float]  # scheduled -> started: waiting for a worker
    running: list[float]  # started -> completed: the worker's time on it
    signals: int
    accepted_at: dict[str, list[float]]  # call id -> when its book_meeting updates were accepted


async def task_timings(client: Client, call_ids: list[str]) -> TaskTimings:
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)
    queued: list[float] = []
    running: list[float] = []
    accepted: dict[str, list[float]] = {}
    counts = {"tasks": 0, "signals": 0}

    async def one(call_id: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(
                f"{WORKFLOW_ID_PREFIX}{call_id}"
            ).fetch_history()
        scheduled: float | None = None
        started: float | None = None
        for event in history.events:
            at = event.event_time.ToDatetime().timestamp()
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled = at
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                started = at
                if scheduled is not None:
                    queued.append(at - scheduled)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and started is not None:
                running.append(at - started)
                counts["tasks"] += 1
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                counts["signals"] += 1
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                accepted.setdefault(call_id, []).append(at)

    async def safely(call_id: str) -> None:
        try:
            await one(call_id)
        except RPCError as error:
            logger.info("history of %s: %s", call_id, error)

    await asyncio.gather(*(safely(call_id) for call_id in call_ids))
    return TaskTimings(
        tasks=counts["tasks"],
        queued=queued,
        running=running,
        signals=counts["signals"],
        accepted_at=accepted,
    )
