"""Fixtures of the end-to-end tests: a clean environment and the stacks a test starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from tests.e2e.stack import DevStackProcess
from tests.servers import free_port


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: free ports, a fresh DATA_DIR, none of the developer's settings.

    No payload key either: `trialist dev` creates its dev key, as on a fresh machine.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in Settings.model_fields and key != "COLUMNS"
    }
    env.update(
        DATA_DIR=str(tmp_path / ".data"),
        TEMPORAL_DEV_PORT=str(free_port()),
        TEMPORAL_UI_PORT=str(free_port()),
        SANDBOX_PORT=str(free_port()),
        WORKER_METRICS_PORT=str(free_port()),
        CODEC_SERVER_PORT=str(free_port()),
        COLUMNS="200",
    )
    return env


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[DevStackProcess]]:
    """Stacks started by a test; any still running at the end is killed."""
    stacks: list[DevStackProcess] = []
    yield stacks
    for stack in stacks:
        stack.kill()
