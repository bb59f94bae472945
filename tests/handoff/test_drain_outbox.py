"""`python -m agent drain-outbox`: an operator delivers what the outbox holds, as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from contracts.names import CALL_ENDED_SIGNAL, workflow_id_for
from handoff.outbox import Outbox
from tests.servers import free_port
from tests.workflows.scenario import call_outcome, make_trialist, new_call_id


def drain(data_dir: Path, temporal: str, task_queue: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": temporal,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "WORKER_CONNECT_ATTEMPTS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "agent", "drain-outbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_drain_delivers_a_stored_outcome_once_and_says_so(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    call_id = new_call_id()
    outbox = Outbox.in_dir(tmp_path)
    outbox.put(call_outcome(call_id, make_trialist(call_id)))
    outbox.close()
    target = dev_env.client.service_client.config.target_host

    first = drain(tmp_path, target, task_queue)
    assert first.returncode == 0, first.stderr
    assert "1 pending" in first.stdout
    assert "delivered 1" in first.stdout and "0 still pending" in first.stdout

    history = await dev_env.client.get_workflow_handle(workflow_id_for(call_id)).fetch_history()
    signals = [
        e
        for e in history.events
        if e.workflow_execution_signaled_event_attributes.signal_name == CALL_ENDED_SIGNAL
    ]
    assert len(signals) == 1

    again = drain(tmp_path, target, task_queue)
    assert again.returncode == 0, again.stderr
    assert "0 pending" in again.stdout
    history = await dev_env.client.get_workflow_handle(workflow_id_for(call_id)).fetch_history()
    assert (
        sum(
            e.workflow_execution_signaled_event_attributes.signal_name == CALL_ENDED_SIGNAL
            for e in history.events
        )
        == 1
    )


def test_drain_with_temporal_down_keeps_the_message_and_exits_1(tmp_path: Path) -> None:
    call_id = new_call_id()
    outbox = Outbox.in_dir(tmp_path)
    outbox.put(call_outcome(call_id, make_trialist(call_id)))
    outbox.close()

    result = drain(tmp_path, f"127.0.0.1:{free_port()}", "tq-unused")

    assert result.returncode == 1
    assert "1 still pending" in result.stdout
    assert "run it again later" in result.stderr
    assert "Traceback" not in result.stderr
    reopened = Outbox.in_dir(tmp_path)
    assert reopened.pending_count() == 1
    reopened.close()
