"""An agent process SIGKILLed mid-call loses only its last seconds (issue 13), with real processes.

The child is an agent process: a scripted call (the scripted LLM stand-in, labelled) through the
real agent session, tools, checkpoints and handoff, against the dev server. It is killed after
the caller has given some answers; nothing of it runs again. The worker runs in this test. The
follow-up must notice the silence (the liveness rule) and write what the checkpoints carried to
the CRM, marked as the agent's last checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from contracts import FollowUpProgress, workflow_id_for
from devtools.people import DANA
from tests.agent.call_harness import agent_settings, new_call_id, running_worker, temporal_target
from tests.payload_keys import SESSION_KEY
from tests.servers import SandboxServer
from tests.workflows.scenario import crm_records

REPO = Path(__file__).resolve().parents[2]
LIVENESS_SECONDS = 10.0
CHECKPOINT_SECONDS = 0.5

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys

    from agent.entrypoint import agent_for, build_runtime, new_call_session
    from config.settings import Settings
    from devtools.people import DANA
    from devtools.scripted_llm import CallTools, Reply, ScriptedLLM, ScriptedTurn, ToolCall

    settings = Settings(_env_file=None, **json.loads(sys.argv[1]))
    call_id = sys.argv[2]

    def signal_(name, value):
        return ToolCall("record_qualification_signal", {"name": name, "value": value})

    TURNS = [
        ScriptedTurn(None, Reply("[scripted demo] Hi Dana, this is Sam from PandaDoc.")),
        ScriptedTurn("We are twelve.", CallTools(signal_("team_size", "12")), Reply("Nice.")),
        ScriptedTurn(
            "Mostly sales proposals, in Google Docs today.",
            CallTools(
                signal_("use_case", "sales proposals"), signal_("current_tool", "Google Docs")
            ),
            Reply("Thanks."),
        ),
        ScriptedTurn("Let me think.", Reply("Take your time.")),
    ]

    async def main():
        runtime = build_runtime(settings)
        await runtime.start_background()
        services = runtime.services_for(call_id=call_id, trialist=DANA)
        session, _ = new_call_session(services, llm_model=ScriptedLLM(TURNS))
        async with session:
            await session.start(agent=agent_for(services))
            for line in [turn.caller for turn in TURNS if turn.caller][:2]:
                await session.run(user_input=line)
            print("answered", flush=True)  # the test kills us from here on
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_an_agent_killed_mid_call_still_gets_its_call_into_the_crm(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    call_id = new_call_id()
    settings = agent_settings(
        sandbox=sandbox,
        data_dir=tmp_path,
        task_queue=task_queue,
        temporal_address=temporal_target(dev_env),
        checkpoint_interval_seconds=CHECKPOINT_SECONDS,
        checkpoint_keepalive_seconds=2.0,
        follow_up_liveness_seconds=LIVENESS_SECONDS,
        follow_up_step_schedule_to_close_seconds=20,
    )
    child_settings = {
        name: str(getattr(settings, name))
        for name in (
            "sandbox_url",
            "temporal_address",
            "temporal_task_queue",
            "data_dir",
            "checkpoint_interval_seconds",
            "checkpoint_keepalive_seconds",
            "follow_up_liveness_seconds",
            "follow_up_step_schedule_to_close_seconds",
        )
    }
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PAYLOAD_ENCRYPTION_KEY": SESSION_KEY.to_base64(),
        "PAYLOAD_ENCRYPTION_KEY_ID": SESSION_KEY.id,
    }
    async with running_worker(settings, clock=sandbox.clock):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            json.dumps(child_settings),
            call_id,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        if line.strip() != b"answered":
            assert child.stderr is not None
            raise AssertionError((await child.stderr.read()).decode()[-3000:])
        await asyncio.sleep(2 * CHECKPOINT_SECONDS + 0.5)  # the last answer's checkpoint is out
        child.send_signal(signal.SIGKILL)  # OOM, a lost node: no session end, no call_ended
        await child.wait()
        killed_at = time.monotonic()

        handle: WorkflowHandle[object, FollowUpProgress] = dev_env.client.get_workflow_handle(
            workflow_id_for(call_id), result_type=FollowUpProgress
        )
        progress = await asyncio.wait_for(handle.result(), LIVENESS_SECONDS + 60)
        took = time.monotonic() - killed_at

    assert child.returncode == -signal.SIGKILL
    assert progress.agent_lost is True
    # Within the liveness window plus the normal step time.
    assert took < LIVENESS_SECONDS + 30, took
    records = crm_records(sandbox.url, call_id=call_id, trialist=DANA)
    description = next(task["fields"]["Description"] for task in records.tasks)
    assert "lost this call" in description
    # Everything the caller said before the last checkpoint arrived.
    for learned in ("team_size: 12", "use_case: sales proposals", "current_tool: Google Docs"):
        assert learned in description, description
