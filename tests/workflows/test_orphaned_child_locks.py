"""The test server's leaked time lock for an abandoned child, and OrphanedChildLocks returning it.

The outreach e2e relies on this: an outreach may close before the follow-up it started (with
ParentClosePolicy.ABANDON) does, and the server's clock would then never skip again. If a
new temporal-test-server stops leaking, the stall test fails: drop the workaround then.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Worker
from temporalio.workflow import ParentClosePolicy

from tests.workflows.outreach_harness import OrphanedChildLocks, own_time_skipping_env

# Without the lock the server skips an hour at once; with it, an hour takes an hour.
STALLED_AFTER_SECONDS = 2.0


@workflow.defn(sandboxed=False)
class WaitingChild:
    """Runs until told to finish, long after its parent closed."""

    def __init__(self) -> None:
        self._finish = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._finish)

    @workflow.signal
    def finish(self) -> None:
        self._finish = True


@workflow.defn(sandboxed=False)
class AbandoningParent:
    @workflow.run
    async def run(self, child_id: str) -> None:
        await workflow.start_child_workflow(
            WaitingChild.run, id=child_id, parent_close_policy=ParentClosePolicy.ABANDON
        )


async def child_closed_after_parent(
    client: Client, queue: str, parent_id: str, child_id: str
) -> None:
    """The parent closes, then its abandoned child completes (the clock stays locked)."""
    await client.start_workflow(AbandoningParent.run, child_id, id=parent_id, task_queue=queue)
    await closed(client.get_workflow_handle(parent_id))
    child = client.get_workflow_handle(child_id)
    await child.signal(WaitingChild.finish)
    assert await closed(child) is WorkflowExecutionStatus.COMPLETED


async def closed(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    """Polls, in real time: an awaited result() would unlock the clock meanwhile."""
    for _ in range(200):
        status = (await handle.describe()).status
        if status is not WorkflowExecutionStatus.RUNNING:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} still running")


async def test_a_child_closing_after_its_parent_leaks_a_lock_that_is_returned() -> None:
    async with own_time_skipping_env() as env:
        queue, parent_id, child_id = (f"{name}-{uuid.uuid4()}" for name in ("q", "p", "c"))
        orphans = OrphanedChildLocks(env, env.client, [parent_id])
        async with Worker(env.client, task_queue=queue, workflows=[AbandoningParent, WaitingChild]):
            await child_closed_after_parent(env.client, queue, parent_id, child_id)
            await orphans.sweep()
            assert orphans.returned == 1
            before = await env.get_current_time()
            await asyncio.wait_for(env.sleep(timedelta(hours=1)), STALLED_AFTER_SECONDS)
            assert await env.get_current_time() - before >= timedelta(hours=1)
            await orphans.sweep()
            assert orphans.returned == 1  # each leak is returned once


async def test_without_the_return_the_clock_stalls() -> None:
    async with own_time_skipping_env() as env:
        queue, parent_id, child_id = (f"{name}-{uuid.uuid4()}" for name in ("q", "p", "c"))
        async with Worker(env.client, task_queue=queue, workflows=[AbandoningParent, WaitingChild]):
            await child_closed_after_parent(env.client, queue, parent_id, child_id)
            stalled = False
            try:
                await asyncio.wait_for(env.sleep(timedelta(hours=1)), STALLED_AFTER_SECONDS)
            except TimeoutError:
                stalled = True
            assert stalled, "the test server no longer leaks: OrphanedChildLocks can go"
