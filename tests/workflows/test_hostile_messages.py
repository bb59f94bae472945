"""No message can wedge, terminate or silently drop a follow-up (issue 12), on the dev server.

Each case sends what a hostile user or a careless operator could send, then checks what matters:
no workflow task ever failed, queries still answer, and a later good call_ended completes the
follow-up. Dropped signals are logged once, by reason, with no personal data.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from contracts import (
    BOOK_MEETING_UPDATE,
    CALL_ENDED_SIGNAL,
    RETRY_STEP_UPDATE,
    SKIP_STEP_UPDATE,
    FollowUpProgress,
    FollowUpStatus,
    workflow_id_for,
)
from tests.workflows.scenario import (
    FollowUpServers,
    ScenarioCall,
    call_outcome,
    follow_up_input,
    make_trialist,
    new_call_id,
    progress_of,
)
from workflows.follow_up import CallFollowUpWorkflow

WEDGED_AFTER_SECONDS = 20.0


def raw_json(text: str) -> RawValue:
    """A payload that claims to be JSON, whatever its bytes are."""
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=text.encode()))


def outcome_json(call_id: str, **changes: Any) -> dict[str, Any]:
    good = json.loads(call_outcome(call_id, make_trialist(call_id)).model_dump_json())
    return {**good, **changes}


async def start(servers: FollowUpServers, call_id: str) -> WorkflowHandle[Any, Any]:
    return await servers.client.start_workflow(
        CallFollowUpWorkflow.run,
        follow_up_input(call_id),
        id=workflow_id_for(call_id),
        task_queue=servers.task_queue,
    )


async def completed(handle: WorkflowHandle[Any, Any]) -> FollowUpProgress:
    """The result, or a clear failure when the follow-up is wedged instead of finishing."""
    try:
        async with asyncio.timeout(WEDGED_AFTER_SECONDS):
            progress: FollowUpProgress = await handle.result()
            return progress
    except TimeoutError:
        raise AssertionError(
            f"wedged: {await task_failures(handle)} workflow task failures"
        ) from None


async def task_failures(handle: WorkflowHandle[Any, Any]) -> int:
    failed = 0
    async for event in handle.fetch_history_events():
        failed += event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    return failed


def hostile_signals(call_id: str) -> dict[str, Sequence[Any]]:
    """One signal per defect class of the issue, by what it is."""
    other = new_call_id()
    huge_note = "x" * 900
    return {
        "not JSON": [raw_json("{not json")],
        "a second argument": [outcome_json(call_id), {"extra": True}],
        "no argument": [],
        "wrong types": [outcome_json(call_id, started_at=12, notes="a note")],
        "another call's id": [outcome_json(other, trialist=outcome_json(other)["trialist"])],
        "a 1.5 MB outcome": [outcome_json(call_id, notes=[huge_note] * 1700)],
        "a control-character name": [
            outcome_json(call_id, trialist={**outcome_json(call_id)["trialist"], "name": "\x00\n"})
        ],
        "non-ASCII phone digits": [
            outcome_json(
                call_id, trialist={**outcome_json(call_id)["trialist"], "phone": "+١٤١٥٥٥٥٠١٢٣"}
            )
        ],
        "a year-9999 requested slot": [
            outcome_json(
                call_id,
                requested_meeting={
                    "call_id": call_id,
                    "slot_start": "9999-12-31T23:59:00+00:00",
                    "guest": outcome_json(call_id)["trialist"],
                },
            )
        ],
    }


async def test_every_hostile_signal_is_dropped_and_a_good_call_ended_still_completes(
    dev_servers: FollowUpServers, call: ScenarioCall, caplog: pytest.LogCaptureFixture
) -> None:
    call_id, trialist = call.call_id, call.trialist
    async with dev_servers.worker():
        handle = await start(dev_servers, call_id)
        with caplog.at_level(logging.WARNING, logger="temporalio.workflow"):
            for args in hostile_signals(call_id).values():
                await handle.signal(CALL_ENDED_SIGNAL, args=list(args))
            await handle.signal("no_such_signal", "hello")
            # Still answering: the hostile signals did not wedge it.
            assert (await progress_of(handle)).status is FollowUpStatus.IN_CALL
            await handle.signal(CALL_ENDED_SIGNAL, call.outcome())
            progress = await completed(handle)

    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.outcome_missing is False
    assert await task_failures(handle) == 0
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == len(hostile_signals(call_id)) + 1  # once each
    assert any("Invalid JSON" in line for line in dropped)
    assert any("expected 1 argument, got 2" in line for line in dropped)
    assert any("no such signal" in line for line in dropped)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for personal in (trialist.email, trialist.name, str(trialist.phone), "١٤١٥"):
        assert personal not in logged


@pytest.mark.parametrize(
    ("why", "payload"),
    [
        ("a timeout of 1e300", '{"call_id": "%s", "call_ended_timeout_seconds": 1e300}'),
        ("an infinite timeout", '{"call_id": "%s", "step_schedule_to_close_seconds": Infinity}'),
        ("not JSON", "{%s"),
        ("a bad call id", '{"call_id": "not a call id %s"}'),
    ],
)
async def test_an_unusable_start_input_fails_the_workflow_once_with_a_reason(
    dev_servers: FollowUpServers, why: str, payload: str
) -> None:
    call_id = new_call_id()
    async with dev_servers.worker():
        handle = await dev_servers.client.start_workflow(
            "CallFollowUpWorkflow",
            raw_json(payload % call_id),
            id=workflow_id_for(call_id),
            task_queue=dev_servers.task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await completed(handle)

    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), why
    assert cause.type == "invalid_start_input" and cause.non_retryable
    assert "the start input cannot be used" in cause.message
    assert await task_failures(handle) == 0


async def test_hostile_updates_are_refused_and_the_follow_up_goes_on(
    dev_servers: FollowUpServers, call: ScenarioCall
) -> None:
    call_id = call.call_id
    guest = outcome_json(call_id)["trialist"]
    async with dev_servers.worker():
        handle = await start(dev_servers, call_id)
        refused: list[str] = []
        for name, args in (
            (BOOK_MEETING_UPDATE, [raw_json("{nope")]),
            (BOOK_MEETING_UPDATE, [{"call_id": call_id}, {"second": 1}]),
            (
                BOOK_MEETING_UPDATE,
                [{"call_id": call_id, "slot_start": "9999-12-31T23:59:00Z", "guest": guest}],
            ),
            (RETRY_STEP_UPDATE, [{"step": "no_such_step"}]),
            (SKIP_STEP_UPDATE, [{"step": "book_meeting", "reason": "r" * 5000}]),
            ("no_such_update", []),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as failure:
                await handle.execute_update(name, args=args)
            refused.append(str(failure.value.cause))
        await handle.signal(CALL_ENDED_SIGNAL, call.outcome())
        progress = await completed(handle)

    assert progress.status is FollowUpStatus.COMPLETED
    assert await task_failures(handle) == 0
    assert not any(call.trialist.email in text or "r" * 100 in text for text in refused)
