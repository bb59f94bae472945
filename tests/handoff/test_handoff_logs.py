"""A handled situation logs no ERROR line (issue 13, point 7): the handoff reads every future.

An update-with-start that runs out of time leaves its start operation's future resolved with a
cancellation; unread, asyncio logs "Future exception was never retrieved" as an ERROR when the
future is collected. The chaos runs counted 46–67 of those per run.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from handoff.follow_up import BookingHandoffStatus
from tests.handoff.test_handoff import SHORT_TIMEOUT, handoff_to, target_of
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    booking_request,
    follow_up_worker,
    free_slots,
    make_trialist,
    new_call_id,
)


async def test_a_booking_that_times_out_leaves_no_unretrieved_future_behind(
    dev_env: WorkflowEnvironment,
    sandbox: SandboxServer,
    task_queue: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handoff = handoff_to(
        tmp_path, target=target_of(dev_env), task_queue=task_queue, handoff_timeout=SHORT_TIMEOUT
    )
    await handoff.client()
    async with follow_up_worker(dev_env.client, task_queue, sandbox=sandbox) as clients:
        person = make_trialist(new_call_id())
        slot = (await free_slots(clients, person))[0]
    with caplog.at_level(logging.ERROR):
        # No worker polls now: Temporal takes the start, nobody accepts the update in time.
        for _ in range(3):
            call_id = new_call_id()
            request = booking_request(call_id, make_trialist(call_id), slot)
            queued = await handoff.book_meeting(request, wait=1.0)
            assert queued.status is BookingHandoffStatus.QUEUED
        gc.collect()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [], [record.getMessage() for record in errors]
