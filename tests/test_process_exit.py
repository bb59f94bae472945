"""Processes that used Temporal exit with their real code, never the PyGILState_Release abort."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parent.parent
RUNS = 10
# Printed by an atexit handler: it only appears when the interpreter tears down normally.
TEARDOWN_MARKER = "INTERPRETER-TEARDOWN-RAN"

# The short-lived command that aborted at exit about 1 run in 10 here without the fix.
PROBE = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from datetime import timedelta

    from temporalio import activity, workflow
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from config.process_exit import exits_cleanly


    @activity.defn
    async def echo(text: str) -> str:
        return text


    @workflow.defn
    class Echo:
        @workflow.run
        async def run(self, text: str) -> str:
            return await workflow.execute_activity(
                echo, text, start_to_close_timeout=timedelta(seconds=10)
            )


    async def go(target: str) -> None:
        client = await Client.connect(target)
        queue = f"exit-probe-{uuid.uuid4()}"
        async with Worker(
            client, task_queue=queue, workflows=[Echo], activities=[echo],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            result = await client.execute_workflow(Echo.run, "ok", id=queue, task_queue=queue)
        print(f"workflow returned {result}", flush=True)


    @exits_cleanly
    def main() -> None:
        asyncio.run(go(sys.argv[1]))
        if sys.argv[2:] == ["fail"]:
            raise SystemExit(3)


    main()
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRIALIST_PYTEST_NORMAL_EXIT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), extra.pop("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _run_probe(script: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), target, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=REPO,
        check=False,
    )


async def test_temporal_command_exits_zero_every_time(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    target = dev_env.client.service_client.config.target_host
    codes = []
    for _ in range(RUNS):
        result = _run_probe(script, target)
        codes.append(result.returncode)
        assert "Fatal Python error" not in result.stderr, result.stderr
        assert "workflow returned ok" in result.stdout, result.stderr
    assert codes == [0] * RUNS


async def test_temporal_command_keeps_its_exit_code(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    result = _run_probe(script, dev_env.client.service_client.config.target_host, "fail")
    assert result.returncode == 3, result.stderr
    assert "workflow returned ok" in result.stdout


PASSING = """
import atexit

atexit.register(print, "{marker}")


def test_ok() -> None:
    assert 1 + 1 == 2
"""

FAILING = PASSING.replace("1 + 1 == 2", "1 + 1 == 3")

# Another plugin ending the session its own way must still decide pytest's exit code.
EXIT_PLUGIN = """
import pytest


def pytest_sessionfinish(session, exitstatus):
    pytest.exit("plugin ends the run", returncode=3)
"""


@pytest.mark.parametrize(
    ("body", "plugin", "normal_exit", "expected_code", "teardown_runs"),
    [
        pytest.param(PASSING, False, False, 0, False, id="passing"),
        pytest.param(FAILING, False, False, 1, False, id="failing"),
        pytest.param(PASSING, True, False, 3, False, id="plugin-exit-code"),
        pytest.param(PASSING, False, True, 0, True, id="opt-out-normal-teardown"),
    ],
)
def test_pytest_hook_keeps_pytest_exit_code(
    tmp_path: Path,
    body: str,
    plugin: bool,
    normal_exit: bool,
    expected_code: int,
    teardown_runs: bool,
) -> None:
    (tmp_path / "test_tiny.py").write_text(body.format(marker=TEARDOWN_MARKER))
    (tmp_path / "exit_plugin.py").write_text(EXIT_PLUGIN)
    command = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml")]
    command += ["-p", "tests.conftest", "-p", "no:cacheprovider", "-q", str(tmp_path)]
    if plugin:
        command += ["-p", "exit_plugin"]
    env = _env(PYTHONPATH=str(tmp_path))
    if normal_exit:
        env["TRIALIST_PYTEST_NORMAL_EXIT"] = "1"
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == expected_code, output
    if not plugin:  # the summary line is flushed before the hook leaves the process
        assert ("1 passed" if body is PASSING else "1 failed") in output
    # Proves which exit path ran: os._exit skips atexit handlers, a normal teardown runs them.
    assert (TEARDOWN_MARKER in output) is teardown_runs, output
