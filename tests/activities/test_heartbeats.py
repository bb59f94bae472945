"""Heartbeat pacing: a quick attempt sends none; a slow one reports progress; the server still
times a silent attempt out from its start (what makes skipping the early heartbeats safe)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

# This module defines a workflow: the sandbox re-imports it, so pass the rest through.
with workflow.unsafe.imports_passed_through():
    from activities.follow_up import FollowUpActivities
    from activities.heartbeats import QUIET_SHARE
    from config.settings import Settings
    from contracts.activities import BookMeetingInput
    from integrations.clients import VendorClients
    from tests.servers import SandboxServer
    from tests.workflows.scenario import ScenarioCall
    from workflows.follow_up_steps import HEARTBEAT_TIMEOUT


def environment(heartbeat_timeout: timedelta) -> tuple[ActivityEnvironment, list[object]]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=heartbeat_timeout)
    heartbeats: list[object] = []
    env.on_heartbeat = lambda *details: heartbeats.extend(details)
    return env, heartbeats


async def booking_input(clients: VendorClients) -> BookMeetingInput:
    call = ScenarioCall.new()
    return BookMeetingInput(call_id=call.call_id, request=await call.first_free_booking(clients))


async def test_a_quick_booking_attempt_sends_no_heartbeat(clients: VendorClients) -> None:
    env, heartbeats = environment(HEARTBEAT_TIMEOUT)  # the production timeout: 5 s quiet

    output = await env.run(
        FollowUpActivities(clients=clients).book_meeting, await booking_input(clients)
    )

    assert output.result.meeting_id is not None
    assert heartbeats == []


async def test_a_slow_booking_attempt_reports_its_progress(
    sandbox: SandboxServer, clients: VendorClients
) -> None:
    arg = await booking_input(clients)
    # Each ChiliPiper request now takes 300 ms; the attempt is quiet for the first 100 ms only.
    sandbox.add_fault(vendor="chilipiper", latency_ms=300)
    env, heartbeats = environment(timedelta(seconds=0.1 / QUIET_SHARE))

    output = await env.run(FollowUpActivities(clients=clients).book_meeting, arg)

    assert output.result.meeting_id is not None
    assert heartbeats == ["finding free slots", "booking"]


def test_after_the_quiet_period_one_whole_request_fits_in_the_heartbeat_timeout() -> None:
    settings = Settings(_env_file=None)
    # The longest gap between two heartbeat calls: a pool wait (the connect timeout), a connect
    # and a read.
    one_request = 2 * settings.http_connect_timeout_seconds + settings.http_read_timeout_seconds
    quiet = HEARTBEAT_TIMEOUT.total_seconds() * QUIET_SHARE

    assert quiet + one_request < HEARTBEAT_TIMEOUT.total_seconds()


@activity.defn(name="silent_activity")
async def silent_activity() -> None:
    await activity.wait_for_cancelled()  # never heartbeats, never finishes on its own


@workflow.defn(name="SilentActivityWorkflow")
class SilentActivityWorkflow:
    @workflow.run
    async def run(self, heartbeat_seconds: float) -> None:
        await workflow.execute_activity(
            silent_activity,
            start_to_close_timeout=timedelta(minutes=1),
            heartbeat_timeout=timedelta(seconds=heartbeat_seconds),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def test_the_server_times_a_silent_attempt_out_from_its_start(
    dev_env: WorkflowEnvironment,
) -> None:
    task_queue = f"silent-{uuid.uuid4()}"
    async with Worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=[SilentActivityWorkflow],
        activities=[silent_activity],
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await dev_env.client.execute_workflow(
                SilentActivityWorkflow.run,
                1.0,
                id=f"silent-{uuid.uuid4()}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=30),
            )

    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    timeout = activity_error.cause
    assert isinstance(timeout, TimeoutError)
    assert timeout.type is TimeoutType.HEARTBEAT
