"""`trialist followups list/show/retry/skip` as an operator runs them, against a real dev server.

The follow-ups are parked by a permanent HubSpot error injected into the sandbox; a worker with
the real workflow and activities runs in the test; the CLI runs as its own process.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from contracts import (
    FollowUpStatus,
    FollowUpStep,
    StepState,
    follow_up_summary,
    workflow_id_for,
)
from contracts.codec import PayloadKey, encrypted_data_converter
from tests.commands import Run, clean_env, run_command
from tests.servers import SandboxServer, free_port
from tests.workflows.scenario import (
    FollowUpServers,
    ScenarioCall,
    clear_faults,
    follow_up_input,
    follow_up_worker,
    new_call_id,
    progress_of,
    wait_until,
)
from workflows.follow_up import CallFollowUpWorkflow

pytestmark = pytest.mark.timeout(120)

TRIALIST = str(Path(sys.executable).parent / "trialist")
HUBSPOT = FollowUpStep.UPSERT_HUBSPOT_CONTACT
UI_BASE = "http://temporal-ui.test:8233"
VISIBILITY_SECONDS = 15.0


def cli_env(client: Client, task_queue: str, tmp_path: Path) -> dict[str, str]:
    """The operator's environment: the test's server, queue and payload key, nothing else."""
    return clean_env(
        tmp_path,
        TEMPORAL_ADDRESS=client.service_client.config.target_host,
        TEMPORAL_NAMESPACE=client.namespace,
        TEMPORAL_TASK_QUEUE=task_queue,
        TEMPORAL_UI_URL=UI_BASE,
        COLUMNS="400",  # wide enough that no table cell wraps,
    )


async def trialist(env: dict[str, str], cwd: Path, *args: str) -> Run:
    return await run_command(TRIALIST, *args, env=env, cwd=cwd)


def table_row(output: str, text: str) -> str:
    """The first row of a printed table that mentions `text`."""
    rows = [line for line in output.splitlines() if line.startswith("│") and text in line]
    assert rows, f"no table row mentions {text!r} in:\n{output}"
    return rows[0]


@pytest.fixture
def operator_env(dev_servers: FollowUpServers, tmp_path: Path) -> dict[str, str]:
    return cli_env(dev_servers.client, dev_servers.task_queue, tmp_path)


@asynccontextmanager
async def hubspot_refusing_contacts(servers: FollowUpServers) -> AsyncIterator[None]:
    """A worker up while HubSpot refuses every contact upsert: a permanent 400 parks the step."""
    servers.sandbox.add_fault(
        vendor="hubspot", operation="batch_upsert_contacts", error_rate=1.0, status=400
    )
    async with servers.worker():
        yield


async def start_parked_call(servers: FollowUpServers) -> tuple[str, WorkflowHandle[Any, Any]]:
    """What the agent does at hang-up (signal-with-start); HubSpot's fault then parks it."""
    call = ScenarioCall.new()
    summary = follow_up_summary(call.trialist.name, call.trialist.company)
    handle = await servers.signal_call_ended(call.outcome(), summary=summary)
    return call.call_id, handle


async def listed_as(client: Client, status: FollowUpStatus, call_ids: list[str]) -> bool:
    query = " OR ".join(f'WorkflowId="{workflow_id_for(c)}"' for c in call_ids)
    found = [w.id async for w in client.list_workflows(f'FollowUpStatus="{status}" AND ({query})')]
    return len(found) == len(call_ids)


async def test_operator_lists_shows_retries_and_skips_parked_follow_ups(
    dev_servers: FollowUpServers, operator_env: dict[str, str], tmp_path: Path
) -> None:
    client, env = dev_servers.client, operator_env
    async with hubspot_refusing_contacts(dev_servers):
        retried, retried_handle = await start_parked_call(dev_servers)
        skipped, skipped_handle = await start_parked_call(dev_servers)
        await wait_until(
            lambda: listed_as(client, FollowUpStatus.NEEDS_ATTENTION, [retried, skipped]),
            within=VISIBILITY_SECONDS,
            what="both follow-ups to be listed as needs_attention",
        )

        listing = await trialist(env, tmp_path, "followups", "list", "--status", "needs_attention")
        assert listing.code == 0, listing.err
        for call_id in (retried, skipped):
            row = table_row(listing.out, call_id)
            # who: the workflow's static summary, stored encrypted and decoded by the CLI's codec
            assert "Casey Morgan (Orbitworks)" in row
            assert "needs_attention" in row and HUBSPOT.value in row
            # The last error, from the progress query.
            assert "permanent: hubspot.batch_upsert_contacts: HTTP 400" in row
            assert f"{UI_BASE}/namespaces/default/workflows/call-{call_id}" in row

        shown = await trialist(env, tmp_path, "followups", "show", retried)
        assert shown.code == 0, shown.err
        hubspot_line = table_row(shown.out, HUBSPOT.value)
        assert "needs_attention" in hubspot_line and " 1 " in hubspot_line  # one attempt
        assert "400" in hubspot_line
        salesforce = table_row(shown.out, "log_call_salesforce")
        assert "succeeded" in salesforce  # independent steps carried on

        # Retrying before the cause is fixed fails the same way and parks the step again.
        again = await trialist(env, tmp_path, "followups", "retry", retried, HUBSPOT.value)
        assert again.code == 0, again.err
        reparked = table_row(again.out, HUBSPOT.value)
        assert "needs_attention" in reparked
        assert (await progress_of(retried_handle)).steps[HUBSPOT].attempts == 2

        clear_faults(dev_servers.sandbox.url)
        fixed = await trialist(env, tmp_path, "followups", "retry", retried)
        assert fixed.code == 0, fixed.err
        assert f"retrying {HUBSPOT.value}" in fixed.out
        assert (await retried_handle.result()).status is FollowUpStatus.COMPLETED

        skip = await trialist(
            env,
            tmp_path,
            "followups",
            "skip",
            skipped,
            HUBSPOT.value,
            "--reason",
            "contact merged by hand in HubSpot",
        )
        assert skip.code == 0, skip.err
        assert "skipped: contact merged by hand in HubSpot" in skip.out
        result = await skipped_handle.result()
        assert result.status is FollowUpStatus.COMPLETED
        assert result.steps[HUBSPOT].state is StepState.SKIPPED
        assert result.steps[FollowUpStep.LOG_CALL_SALESFORCE].state is StepState.SUCCEEDED

        await wait_until(
            lambda: listed_as(client, FollowUpStatus.COMPLETED, [retried, skipped]),
            within=VISIBILITY_SECONDS,
            what="both follow-ups to be listed as completed",
        )
        done = await trialist(env, tmp_path, "followups", "list", "--status", "completed")
        assert retried in done.out and skipped in done.out

        # A finished follow-up has nothing left to repair.
        closed = await trialist(env, tmp_path, "followups", "retry", retried)
        assert closed.code == 1
        assert "completed, not parked" in closed.err


async def test_operator_errors_are_clear(
    dev_servers: FollowUpServers, operator_env: dict[str, str], tmp_path: Path
) -> None:
    env = operator_env
    async with hubspot_refusing_contacts(dev_servers):
        call_id, handle = await start_parked_call(dev_servers)
        await wait_until(
            lambda: _parked(handle), within=VISIBILITY_SECONDS, what="the follow-up to park"
        )
        unknown_step, not_parked, unknown_call, no_reason, bad_status = await asyncio.gather(
            trialist(env, tmp_path, "followups", "retry", call_id, "upsert_hubspot"),
            trialist(
                env, tmp_path, "followups", "skip", call_id, "log_call_salesforce", "--reason", "x"
            ),
            trialist(env, tmp_path, "followups", "show", "no-such-call-42"),
            trialist(env, tmp_path, "followups", "skip", call_id, HUBSPOT.value),
            trialist(env, tmp_path, "followups", "list", "--status", "stuck"),
        )
    assert unknown_step.code == 2
    assert "unknown step 'upsert_hubspot'" in unknown_step.err
    assert all(step.value in unknown_step.err for step in FollowUpStep)  # lists valid ones

    assert not_parked.code == 1
    assert "log_call_salesforce" in not_parked.err and "not parked" in not_parked.err
    assert f"parked steps: {HUBSPOT.value}" in not_parked.err

    assert unknown_call.code == 1
    assert "no follow-up for call id 'no-such-call-42'" in unknown_call.err

    assert no_reason.code == 2
    assert "--reason" in no_reason.err

    assert bad_status.code == 2
    assert "needs_attention" in bad_status.err

    unreachable = dict(env, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    down = await trialist(unreachable, tmp_path, "followups", "list")
    assert down.code == 1
    assert "cannot reach Temporal" in down.err and "Traceback" not in down.err


async def _parked(handle: WorkflowHandle[Any, Any]) -> bool:
    return (await progress_of(handle)).status is FollowUpStatus.NEEDS_ATTENTION


async def test_a_follow_up_under_a_key_the_cli_lacks_is_listed_and_explained_in_one_line(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str, tmp_path: Path
) -> None:
    """After a key was removed too early (or another deployment's), no traceback: a clear line."""
    other_key = PayloadKey.generate("retired")
    elsewhere = Client(
        dev_env.client.service_client,
        namespace=dev_env.client.namespace,
        data_converter=encrypted_data_converter(other_key),
    )
    call_id = new_call_id()
    env = cli_env(dev_env.client, task_queue, tmp_path)
    async with follow_up_worker(elsewhere, task_queue, sandbox=sandbox):
        handle = await elsewhere.start_workflow(
            CallFollowUpWorkflow.run,
            follow_up_input(call_id),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            static_summary=follow_up_summary("Casey Morgan", "Orbitworks"),
        )

        async def listed() -> bool:  # visibility, asked directly: a CLI run per poll costs ~2 s
            query = f'WorkflowId="{workflow_id_for(call_id)}"'
            return [w.id async for w in dev_env.client.list_workflows(query)] != []

        await wait_until(listed, within=VISIBILITY_SECONDS, what="the follow-up to be listed")
        listing, shown = await asyncio.gather(
            trialist(env, tmp_path, "followups", "list"),
            trialist(env, tmp_path, "followups", "show", call_id),
        )
        await handle.terminate("test over")
    assert listing.code == 0, listing.err
    row = table_row(listing.out, call_id)
    assert "(encrypted with a key not configured here)" in row and "Casey" not in row
    assert shown.code == 1 and "Traceback" not in shown.err
    assert "'retired'" in shown.err and "PAYLOAD_ENCRYPTION_PREVIOUS_KEYS" in shown.err
