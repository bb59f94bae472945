"""Follow-ups on a real dev server with the codec: what the server stores, and key rotation.

A follow-up handed off the way the agent does it leaves no personal data readable in its history,
its description or its user metadata (temporalio 1.35 passes the static summary through the
codec, and the current details reach the UI as an encrypted query answer), yet opens completely
with the key. A follow-up started under key A completes on a worker
that moved to key B with A as previous; one whose key was removed too early stops with an error
naming the setting, and completes once the key is back.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.api.workflowservice.v1 import QueryWorkflowRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts import CALL_ENDED_SIGNAL, FollowUpProgress, FollowUpStatus, workflow_id_for
from contracts.codec import (
    PREVIOUS_KEYS_SETTING,
    EncryptionCodec,
    PayloadKey,
    PayloadKeyError,
    encrypted_data_converter,
    is_encrypted,
)
from contracts.models import CallOutcome, Trialist
from handoff.follow_up import CallEndedStatus, FollowUpHandoff
from tests.history_scan import found, key_ids, opened_bytes, personal_texts, raw_bytes
from tests.payload_keys import session_codec
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    call_outcome,
    follow_up_input,
    follow_up_worker,
    new_call_id,
    wait_until,
)

RESULT_SECONDS = 60.0
METADATA_QUERY = "__temporal_workflow_metadata"  # what the UI asks for the current details
KEY_A = PayloadKey.generate("key-a")
KEY_B = PayloadKey.generate("key-b")


def person(call_id: str) -> Trialist:
    """Someone whose every detail is unique to this test, so a match can only be a leak."""
    suffix = call_id.removeprefix("test-")[:8]
    return Trialist(
        email=f"marisol.quenneville.{suffix}@larkspur-dynamics.example",
        name="Marisol Quenneville",
        company="Larkspur Dynamics",
        phone="+14155550987",
        trial_account_id=f"trial-{suffix}",
        timezone="America/Chicago",
    )


def outcome_for(call_id: str) -> CallOutcome:
    base = call_outcome(
        call_id,
        person(call_id),
        summary="Larkspur wants approval chains for vendor contracts; call back after the audit.",
    )
    return base.model_copy(
        update={"notes": ["Their counsel Bartholomew Okonkwo-Reyes signs off on tools."]}
    )


def client_with(env: WorkflowEnvironment, converter: DataConverter) -> Client:
    """Another client on the same server, with its own keys (a worker after a rotation)."""
    return Client(
        env.client.service_client, namespace=env.client.namespace, data_converter=converter
    )


async def history(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


async def result(handle: WorkflowHandle[Any, Any]) -> FollowUpProgress:
    value = await asyncio.wait_for(handle.result(), RESULT_SECONDS)
    return FollowUpProgress.model_validate(value)


async def test_a_handed_off_follow_up_is_unreadable_at_rest_and_opens_with_the_key(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str, tmp_path: Path
) -> None:
    call_id = new_call_id()
    outcome = outcome_for(call_id)
    texts = personal_texts(outcome)
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_task_queue=task_queue,
        follow_up_step_schedule_to_close_seconds=20,
    )
    handoff = FollowUpHandoff.from_settings(settings)  # the agent's own path, session key
    async with follow_up_worker(dev_env.client, task_queue, sandbox=sandbox):
        assert (await handoff.call_ended(outcome)).status is CallEndedStatus.DELIVERED
        handle = dev_env.client.get_workflow_handle(workflow_id_for(call_id))
        assert (await result(handle)).status is FollowUpStatus.COMPLETED
    events = await history(handle)
    description = await handle.describe()

    # What the server holds: the history's bytes, the description (with the static summary).
    assert found(texts, raw_bytes(events)) == []
    assert found(texts, description.raw_description.SerializeToString()) == []
    listed = [e async for e in dev_env.client.list_workflows(f'WorkflowId="{handle.id}"')]
    assert all(found(texts, e.raw_info.SerializeToString()) == [] for e in listed)
    assert key_ids(events) == {"test-session"}

    # With the key, everything is there: the scan above can find what it looks for.
    assert found(texts, opened_bytes(events, session_codec())) == sorted(texts)
    assert await description.static_summary() == (
        "Trial call follow-up for Marisol Quenneville (Larkspur Dynamics): "
        "CRM sync, call log, meeting booking, analytics"
    )


async def test_a_failed_vendor_call_leaves_no_readable_error_in_the_history(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    """Failure messages and stack traces travel encoded, so a vendor's words stay encrypted."""
    call_id = new_call_id()
    outcome = outcome_for(call_id)
    sandbox.add_fault(vendor="hubspot", operation="batch_upsert_contacts", status=400, error_rate=1)
    async with follow_up_worker(dev_env.client, task_queue, sandbox=sandbox):
        handle = await dev_env.client.start_workflow(
            "CallFollowUpWorkflow",
            follow_up_input(call_id),
            id=workflow_id_for(call_id),
            task_queue=task_queue,
            start_signal=CALL_ENDED_SIGNAL,
            start_signal_args=[outcome],
        )

        async def activity_failed() -> bool:
            return bool(_failures(await history(handle)))

        await wait_until(activity_failed, within=30, what="the HubSpot upsert to fail")

        # The UI reads the current details through a query: its answer is encrypted too.
        async def details_name_the_parked_step() -> bool:
            return "upsert_hubspot_contact" in await current_details(dev_env, handle.id)

        await wait_until(details_name_the_parked_step, within=30, what="the parked step's details")
        await handle.terminate("test over")
    events = await history(handle)
    failures = _failures(events)
    assert failures and all(f.message == "Encoded failure" for f in failures)
    assert all(not f.stack_trace for f in failures)
    assert found(personal_texts(outcome), raw_bytes(events)) == []
    assert b"hubspot" not in raw_bytes(events).lower().replace(b"upsert_hubspot_contact", b"")
    assert b"batch_upsert_contacts" in opened_bytes(events, session_codec())


async def current_details(env: WorkflowEnvironment, workflow_id: str) -> str:
    """The workflow's current details as the UI asks for them, checking the answer is sealed."""
    response = await env.client.workflow_service.query_workflow(
        QueryWorkflowRequest(
            namespace=env.client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id),
            query=WorkflowQuery(query_type=METADATA_QUERY),
        )
    )
    (answer,) = response.query_result.payloads
    assert is_encrypted(answer), "the metadata query answered in plain text"
    (metadata,) = await env.client.data_converter.decode([answer], [WorkflowMetadata])
    details: str = metadata.current_details
    return details


def _failures(events: list[HistoryEvent]) -> list[Failure]:
    return [
        event.activity_task_failed_event_attributes.failure
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]


async def _start_waiting(client: Client, task_queue: str, call_id: str) -> WorkflowHandle[Any, Any]:
    """A follow-up that has started and waits for call_ended (its input sealed by `client`)."""
    handle = await client.start_workflow(
        "CallFollowUpWorkflow",
        follow_up_input(call_id),
        id=workflow_id_for(call_id),
        task_queue=task_queue,
        static_summary=f"Trial call follow-up for {person(call_id).name}",
    )

    async def first_task_done() -> bool:
        return any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            for e in await history(handle)
        )

    await wait_until(first_task_done, within=20, what="the first workflow task")
    return handle


async def test_key_rotation_a_follow_up_from_key_a_completes_under_key_b(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, task_queue: str
) -> None:
    call_id = new_call_id()
    under_a = client_with(dev_env, encrypted_data_converter(KEY_A))
    async with follow_up_worker(under_a, task_queue, sandbox=sandbox):
        handle = await _start_waiting(under_a, task_queue, call_id)
    # The worker restarts with B as the current key and A as previous: it replays from scratch.
    rotated = client_with(dev_env, encrypted_data_converter(KEY_B, [KEY_A]))
    async with follow_up_worker(rotated, task_queue, sandbox=sandbox):
        moved = rotated.get_workflow_handle(handle.id)
        await moved.signal(CALL_ENDED_SIGNAL, outcome_for(call_id))
        assert (await result(moved)).status is FollowUpStatus.COMPLETED
    events = await history(moved)
    assert key_ids(events) == {"key-a", "key-b"}
    opened = opened_bytes(events, EncryptionCodec(current=KEY_B, previous=[KEY_A]))
    assert found(personal_texts(outcome_for(call_id)), opened) == sorted(
        personal_texts(outcome_for(call_id))
    )
    # Without A the old payloads can't be read, and the error says what to configure.
    with pytest.raises(PayloadKeyError, match=PREVIOUS_KEYS_SETTING):
        opened_bytes(events, EncryptionCodec(current=KEY_B))


async def test_a_key_removed_too_early_stops_with_a_clear_error_and_loses_nothing(
    dev_env: WorkflowEnvironment,
    sandbox: SandboxServer,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    call_id = new_call_id()
    under_a = client_with(dev_env, encrypted_data_converter(KEY_A))
    async with follow_up_worker(under_a, task_queue, sandbox=sandbox):
        handle = await _start_waiting(under_a, task_queue, call_id)
    only_b = client_with(dev_env, encrypted_data_converter(KEY_B))
    caplog.set_level(logging.WARNING)
    async with follow_up_worker(only_b, task_queue, sandbox=sandbox):
        await only_b.get_workflow_handle(handle.id).signal(CALL_ENDED_SIGNAL, outcome_for(call_id))

        async def task_failed() -> bool:
            return any(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                for e in await history(handle)
            )

        await wait_until(task_failed, within=30, what="a failed workflow task")
    # The worker's log says which key id is missing and which setting takes it.
    logged = "\n".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert "'key-a'" in logged and PREVIOUS_KEYS_SETTING in logged
    assert found(personal_texts(outcome_for(call_id)), logged.encode()) == []
    # So does the failure the server recorded (encoded, as every failure message is).
    failed = next(
        e.workflow_task_failed_event_attributes.failure
        for e in await history(handle)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    )
    error = await encrypted_data_converter(KEY_B).decode_failure(failed)
    assert "'key-a'" in str(error) and PREVIOUS_KEYS_SETTING in str(error)

    # A task failure is retried, not fatal: with A back as previous the follow-up completes.
    restored = client_with(dev_env, encrypted_data_converter(KEY_B, [KEY_A]))
    async with follow_up_worker(restored, task_queue, sandbox=sandbox):
        progress = await result(restored.get_workflow_handle(handle.id))
    assert progress.status is FollowUpStatus.COMPLETED
