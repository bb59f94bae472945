"""Settings for agent tests: this test's sandbox, task queue and data dir, on the dev server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from tests.agent.call_harness import SettingsFor, agent_settings, temporal_target
from tests.servers import SandboxServer


@pytest.fixture
def settings_for(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> SettingsFor:
    """Settings for this test's sandbox, queue and data dir; Temporal is the dev server."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"temporal_address": temporal_target(dev_env), **overrides}
        return agent_settings(sandbox=sandbox, data_dir=tmp_path, task_queue=task_queue, **values)

    return make


@pytest.fixture
def settings(settings_for: SettingsFor) -> Settings:
    """`settings_for()` with no overrides."""
    return settings_for()
