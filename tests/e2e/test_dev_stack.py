"""`trialist dev` end to end: the dev server, sandbox, worker and a demo call as real children."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from contracts import FOLLOW_UP_STATUS
from tests.e2e.stack import TRIALIST, DevStackProcess, start, temporal_client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

READY_SECONDS = 60.0
DEMO_SECONDS = 90.0


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) for every process, read from /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def descendants(root: int) -> set[int]:
    table = proc_table()
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return found


def still_running(pids: set[int]) -> set[int]:
    """Those of `pids` that still run (a zombie has stopped running)."""
    table = proc_table()
    return {pid for pid in pids if pid in table and table[pid][2] != "Z"}


def session_members(sessions: set[int]) -> set[int]:
    return {
        pid for pid, (_, sid, state) in proc_table().items() if sid in sessions and state != "Z"
    }


def test_a_port_in_use_names_the_setting_and_starts_nothing(
    stack_env: dict[str, str], tmp_path: Path, running: list[DevStackProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack_env["SANDBOX_PORT"] = str(taken.getsockname()[1])
        stack = start(running, stack_env, tmp_path)
        code = stack.process.wait(timeout=30)
    stack._reader.join(timeout=5)
    assert code == 1
    assert "SANDBOX_PORT" in stack.output
    assert "already in use" in stack.output
    # Checked before anything started: no Temporal database, no child ever ran.
    assert not (Path(stack_env["DATA_DIR"]) / "temporal.db").exists()


def sandbox_state(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    response = httpx2.get(f"http://127.0.0.1:{env['SANDBOX_PORT']}/__sandbox/state", timeout=5)
    response.raise_for_status()
    state: dict[str, list[dict[str, Any]]] = response.json()
    return state


def salesforce(state: dict[str, list[dict[str, Any]]], sobject: str) -> list[dict[str, Any]]:
    rows = state["salesforce_records"]
    return [json.loads(row["fields"]) for row in rows if row["sobject"] == sobject]


async def visible_status(env: dict[str, str], workflow_id: str) -> str | None:
    """FollowUpStatus of `workflow_id` as the visibility store lists it (polled: it lags)."""
    client = await temporal_client(env)
    deadline = time.monotonic() + 15
    while True:
        async for execution in client.list_workflows(
            f'WorkflowId="{workflow_id}" AND FollowUpStatus="completed"'
        ):
            return execution.typed_search_attributes.get(FOLLOW_UP_STATUS)
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.2)


def test_demo_call_runs_through_the_whole_stack_and_sigint_leaves_nothing_behind(
    stack_env: dict[str, str], tmp_path: Path, running: list[DevStackProcess]
) -> None:
    from devtools.people import DANA  # the demo's happy-path caller

    stack = start(running, stack_env, tmp_path, "--demo-call", "1")
    stack.wait_for(r"✓ worker ready", READY_SECONDS)
    first_line, _ = stack.wait_for(r"\[scripted demo\] Agent: ", READY_SECONDS)
    # Every child (and the agent's own children) while the demo call is on.
    children = descendants(stack.process.pid)
    sessions = {proc_table()[pid][1] for pid in children if pid in proc_table()}
    _, ui_line = stack.wait_for(r"Temporal UI: .*/workflows/call-", DEMO_SECONDS)
    workflow_id = ui_line.rsplit("/", 1)[1]
    call_id = workflow_id.removeprefix("call-")
    stack.wait_for(r"follow-up status: completed", DEMO_SECONDS)
    stack.wait_for(r"agent demo finished", DEMO_SECONDS)
    print(f"first spoken line {first_line:.1f}s after `trialist dev` started")

    # What the call left in the vendors: one lead, one call log, one meeting.
    state = sandbox_state(stack_env)
    leads = [lead for lead in salesforce(state, "Lead") if lead.get("Email") == DANA.email]
    assert len(leads) == 1
    tasks = [t for t in salesforce(state, "Task") if t.get("Voice_Call_Id__c") == call_id]
    assert len(tasks) == 1 and tasks[0]["TaskSubtype"] == "Call"
    hubspot_calls = [
        row
        for row in state["hubspot_objects"]
        if row["object_type"] == "calls" and str(row["voice_call_id"]).startswith(call_id)
    ]
    assert len(hubspot_calls) == 1
    meetings = [m for m in state["chilipiper_meetings"] if m["guest_email"] == DANA.email]
    assert len(meetings) == 1 and meetings[0]["status"] == "Active"

    assert asyncio.run(visible_status(stack_env, workflow_id)) == "completed"

    assert stack.stop(signal.SIGINT) == 0
    assert "dev stack stopped" in stack.output
    assert len(children) >= 4, f"expected temporal, sandbox, worker and agent: {children}"
    assert not still_running(children), f"children left behind: {still_running(children)}"
    assert not session_members(sessions), "a grandchild outlived the stack"


def test_sigterm_mid_call_stops_every_child_and_a_restart_reuses_data(
    stack_env: dict[str, str], tmp_path: Path, running: list[DevStackProcess]
) -> None:
    stack = start(running, stack_env, tmp_path, "--demo-call", "1")
    _, ui_line = stack.wait_for(r"Temporal UI: .*/workflows/call-", DEMO_SECONDS)
    workflow_id = ui_line.rsplit("/", 1)[1]
    children = descendants(stack.process.pid)
    sessions = {proc_table()[pid][1] for pid in children if pid in proc_table()}
    assert stack.stop(signal.SIGTERM) == 0
    assert "SIGTERM: stopping the dev stack" in stack.output
    assert not still_running(children), f"children left behind: {still_running(children)}"
    assert not session_members(sessions), "a grandchild outlived the stack"

    # The same DATA_DIR again: the dev server reopens its SQLite file with the earlier workflow.
    again = start(running, stack_env, tmp_path, "--no-agent")
    again.wait_for(r"✓ worker ready", READY_SECONDS)

    async def earlier_workflow_type() -> str:
        client = await temporal_client(stack_env)
        return (await client.get_workflow_handle(workflow_id).describe()).workflow_type

    assert asyncio.run(earlier_workflow_type()) == "CallFollowUpWorkflow"
    assert again.stop(signal.SIGINT) == 0


def test_two_settings_on_one_port_are_both_named(stack_env: dict[str, str], tmp_path: Path) -> None:
    stack_env["WORKER_METRICS_PORT"] = stack_env["SANDBOX_PORT"]
    result = subprocess.run(
        [TRIALIST, "dev"], env=stack_env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "WORKER_METRICS_PORT and SANDBOX_PORT are both" in result.stderr
    assert not Path(stack_env["DATA_DIR"]).exists()
