"""Replays recorded follow-up histories, so a non-deterministic workflow change fails CI.

Re-record after an intended, versioned change with `python -m tests.workflows.record_history`.
The replayer uses the encrypting converter: histories recorded before the codec are plain and
pass through it; new recordings are encrypted with the fixture key.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from contracts import WORKFLOW_TYPE, FollowUpInput
from tests.payload_keys import HISTORY_CONVERTER
from worker import follow_up_runner
from workflows.follow_up import CallFollowUpWorkflow

HISTORY_DIR = Path(__file__).resolve().parent.parent / "histories"
HISTORIES = sorted(HISTORY_DIR.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


def test_histories_are_checked_in() -> None:
    names = {path.stem for path in HISTORIES}
    assert {"booked_in_call_parked_then_retried", "outcome_missing_then_skipped"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays_deterministically(path: Path) -> None:
    replayer = Replayer(
        workflows=[CallFollowUpWorkflow],
        data_converter=HISTORY_CONVERTER,
        workflow_runner=follow_up_runner(),
    )

    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@workflow.defn(name=WORKFLOW_TYPE, sandboxed=False)
class ReorderedFollowUp:
    """A changed workflow under the same name: it sleeps first, which the histories never did."""

    @workflow.run
    async def run(self, input: FollowUpInput) -> None:
        await workflow.sleep(timedelta(seconds=1))


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_a_non_deterministic_change_fails_the_replay(path: Path) -> None:
    replayer = Replayer(workflows=[ReorderedFollowUp], data_converter=HISTORY_CONVERTER)

    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)

    assert result.replay_failure is not None
