"""Property test of the follow-up's message handlers on the dev server (issue 12).

Each case starts a follow-up, sends it a run of generated hostile messages (any name, any number
of arguments, payloads that are not JSON, wrong types, mutated outcomes, other calls' outcomes),
checks it still answers its query, then sends a good call_ended: the follow-up must complete,
and no workflow task may have failed on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.service import RPCError

from contracts import (
    BOOK_MEETING_UPDATE,
    CALL_ENDED_SIGNAL,
    RETRY_STEP_UPDATE,
    SKIP_STEP_UPDATE,
    CallOutcome,
    FollowUpStatus,
)
from tests.properties import TALLY, cases
from tests.workflows.scenario import (
    FollowUpServers,
    call_outcome,
    make_trialist,
    new_call_id,
    progress_of,
)
from tests.workflows.test_hostile_messages import completed, start, task_failures

NAMES = [CALL_ENDED_SIGNAL, BOOK_MEETING_UPDATE, RETRY_STEP_UPDATE, SKIP_STEP_UPDATE]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)


@dataclass(frozen=True)
class Hostile:
    kind: str  # "signal" or "update"
    name: str
    args: list[Any]


def mutated_outcome(call_id: str) -> st.SearchStrategy[dict[str, Any]]:
    good = json.loads(call_outcome(call_id, make_trialist(call_id)).model_dump_json())
    return st.builds(
        lambda field, value: {**good, field: value},
        st.sampled_from(sorted(good)),
        json_values,
    )


def argument(call_id: str) -> st.SearchStrategy[Any]:
    raw = st.binary(max_size=60).map(
        lambda data: RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))
    )
    other = new_call_id()
    return st.one_of(
        raw,
        json_values,
        mutated_outcome(call_id),
        st.just(json.loads(call_outcome(other, make_trialist(other)).model_dump_json())),
    )


def messages(call_id: str) -> st.SearchStrategy[list[Hostile]]:
    one = st.builds(
        Hostile,
        st.sampled_from(["signal", "update"]),
        st.sampled_from(NAMES) | st.text(max_size=20),
        st.lists(argument(call_id), max_size=3),
    )
    return st.lists(one, min_size=1, max_size=8)


@pytest.fixture
async def worker_servers(dev_servers: FollowUpServers) -> AsyncIterator[FollowUpServers]:
    async with dev_servers.worker():
        yield dev_servers


async def send(client: Client, workflow_id: str, message: Hostile) -> None:
    handle = client.get_workflow_handle(workflow_id)
    surface = f"workflow: {message.kind} {message.name if message.name in NAMES else '(other)'}"
    if message.kind == "signal":
        with contextlib.suppress(RPCError):  # the server itself refuses some (an empty name)
            await handle.signal(message.name, args=message.args)
        # The workflow takes a call_ended of this call that validates; it drops all the rest.
        usable = message.name == CALL_ENDED_SIGNAL and len(message.args) == 1
        try:
            usable = usable and CallOutcome.model_validate(message.args[0]).call_id in workflow_id
        except (ValidationError, TypeError):
            usable = False
        (TALLY.accepted if usable else TALLY.refused)(surface)
        return
    try:
        async with asyncio.timeout(10):
            await handle.execute_update(message.name, args=message.args)
    except (WorkflowUpdateFailedError, RPCError):
        TALLY.refused(surface)
        return
    TALLY.accepted(surface)


async def check_case(servers: FollowUpServers, sent: list[Hostile], call_id: str) -> None:
    handle = await start(servers, call_id)
    for message in sent:
        await send(servers.client, handle.id, message)
    async with asyncio.timeout(10):
        progress = await progress_of(handle)  # still answering: not wedged
    assert progress.status in (FollowUpStatus.IN_CALL, FollowUpStatus.RUNNING)
    await handle.signal(CALL_ENDED_SIGNAL, call_outcome(call_id, make_trialist(call_id)))
    final = await completed(handle)
    assert final.status is FollowUpStatus.COMPLETED
    assert await task_failures(handle) == 0


async def test_no_run_of_messages_wedges_terminates_or_drops_a_follow_up(
    worker_servers: FollowUpServers,
) -> None:
    loop = asyncio.get_running_loop()

    @settings(max_examples=cases(25))
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        call_id = new_call_id()
        sent = data.draw(messages(call_id))
        future = asyncio.run_coroutine_threadsafe(check_case(worker_servers, sent, call_id), loop)
        future.result(timeout=60)

    # Hypothesis draws in a thread while this event loop runs the worker and the Temporal calls.
    await loop.run_in_executor(None, case)
