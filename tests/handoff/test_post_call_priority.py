"""A finished call's follow-up is demoted to post-call priority, so its workflow tasks queue after
a live call's checkpoints and bookings (a workflow's priority applies to its workflow tasks).

Real parts: the Temporal dev server, the agent's own handoff. No worker is needed: the priority is
the server's record of the execution.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts import workflow_id_for
from contracts.models import CallCheckpoint
from contracts.names import IN_CALL_PRIORITY, POST_CALL_PRIORITY
from handoff.follow_up import FollowUpHandoff, HandoffStatus
from tests.workflows.scenario import call_outcome, make_trialist, new_call_id


async def _priority(client: Client, call_id: str) -> int:
    described = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace,
            execution={"workflow_id": workflow_id_for(call_id)},
        )
    )
    return described.workflow_execution_info.priority.priority_key


async def test_call_ended_demotes_the_follow_up_from_in_call_to_post_call_priority(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    handoff = FollowUpHandoff.from_settings(
        Settings(
            _env_file=None,
            data_dir=tmp_path,
            temporal_address=client.service_client.config.target_host,
            temporal_task_queue=task_queue,
        )
    )
    call_id = new_call_id()
    person = make_trialist(call_id)
    started = datetime(2030, 6, 4, 15, tzinfo=UTC)  # a fixed instant: nothing here reads a clock
    handoff.call_started(call_id, trialist=person, started_at=started)
    try:
        first = await handoff.checkpoint(
            CallCheckpoint(call_id=call_id, seq=1, sent_at=started + timedelta(seconds=1))
        )
        assert first.status is HandoffStatus.DELIVERED
        assert await _priority(client, call_id) == IN_CALL_PRIORITY  # a live call

        ended = await handoff.call_ended(call_outcome(call_id, person))
        assert ended.status is HandoffStatus.DELIVERED
        assert await _priority(client, call_id) == POST_CALL_PRIORITY  # the call is over
    finally:
        await client.get_workflow_handle(workflow_id_for(call_id)).terminate("test over")
        await handoff.aclose()
