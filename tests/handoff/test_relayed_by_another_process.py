"""A checkpoint another agent process relays from the shared outbox starts the follow-up knowing
whom the call is with, so the liveness rule can still write the call to the CRM.

Found by bench/chaos.py: agent processes on one host share the outbox; a call's first checkpoint
queued by its own process and delivered by another one's relay started the follow-up without
the trialist. When that call's agent was then killed, the follow-up had no one to write the call
for: it completed as "outcome missing", with every signal and note of the call lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from contracts.models import CallCheckpoint, CallLearned, FollowUpInput
from contracts.names import workflow_id_for
from handoff.follow_up import HandoffStatus
from tests.handoff.test_handoff import closed_port, handoff_to, target_of
from tests.workflows.scenario import make_trialist, new_call_id


async def test_a_checkpoint_relayed_by_another_process_starts_the_follow_up_with_its_caller(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    call_id = new_call_id()
    person = make_trialist(call_id)
    started = datetime(2030, 6, 2, 15, 0, tzinfo=UTC)
    host = tmp_path / "host"  # one DATA_DIR, so one outbox file, for both processes
    calling = handoff_to(host, target=closed_port(), task_queue=task_queue)
    calling.call_started(call_id, trialist=person, started_at=started)
    first = CallCheckpoint(call_id=call_id, seq=1, sent_at=started, learned=CallLearned())
    assert (await calling.checkpoint(first)).status is HandoffStatus.QUEUED

    other = handoff_to(host, target=target_of(dev_env), task_queue=task_queue)
    report = await other.relay().drain(within=20)

    assert (report.delivered, report.pending) == (1, 0)
    history = await dev_env.client.get_workflow_handle(workflow_id_for(call_id)).fetch_history()
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    [start_input] = await dev_env.client.data_converter.decode(payloads, [FollowUpInput])
    assert start_input.trialist == person
    assert start_input.started_at == started
    # Personal data at rest: kept only while the call had something queued.
    assert other.outbox.identity(call_id) is None
