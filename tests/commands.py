"""Our commands (the CLI, the worker, the agent) run by tests as an operator runs them."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings
from tests.payload_keys import SESSION_KEY

COMMAND_SECONDS = 60.0


@dataclass(frozen=True)
class Run:
    """How a command ended: its exit code and what it printed."""

    code: int
    out: str
    err: str


async def run_command(*argv: str, env: dict[str, str], cwd: Path) -> Run:
    """Run `argv` as a child process to its end (within COMMAND_SECONDS)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=COMMAND_SECONDS)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The developer's environment without any of our settings: the session's payload key, a
    data dir of the test's own, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        DATA_DIR=str(tmp_path / ".data"),
        PAYLOAD_ENCRYPTION_KEY=SESSION_KEY.to_base64(),
        PAYLOAD_ENCRYPTION_KEY_ID=SESSION_KEY.id,
        **values,
    )
    return env
