"""What the chaos run asks Temporal and Chili Piper directly: the follow-ups, and slots it takes."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Final

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
