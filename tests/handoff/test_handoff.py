"""The handoff to Temporal on a real dev server and worker: every booking variant, the outbox
when Temporal is down, slow or hung, the relay delivering once, and a process killed after a write.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.follow_up import FollowUpActivities
from config.settings import Settings
from contracts import (
    BookingConfirmation,
    BookingStatus,
    FollowUpProgress,
    FollowUpStatus,
    Trialist,
    workflow_id_for,
)
from contracts.models import CallCheckpoint
from contracts.names import IN_CALL_PRIORITY, POST_CALL_PRIORITY
from handoff.follow_up import (
    SUPERSEDED,
    BookingHandoffStatus,
    CallEndedStatus,
    FollowUpHandoff,
)
from handoff.messages import ALREADY_FINISHED
from handoff.ordering import MessageKind
from handoff.relay import Rejection
from tests.pinned_time import working_week_anchor
from tests.servers import SandboxServer, free_port
from tests.workflows.scenario import FollowUpServers, ScenarioCall, open_vendor_clients

REPO = Path(__file__).resolve().parents[2]
HANDOFF_TIMEOUT = 1.0  # the default of HANDOFF_TIMEOUT_SECONDS
SHORT_TIMEOUT = 0.5  # for the cases that are meant to run out
MARGIN = 0.5  # scheduling slack on a busy 2-core box
RESULT_WAIT = 60.0
BOOKING_WAIT = 2.0  # the default of BOOKING_WAIT_SECONDS
PRODUCTION_READ_TIMEOUT = 5.0  # the default of HTTP_READ_TIMEOUT_SECONDS

T = TypeVar("T")


def handoff_to(
    data_dir: Path,
    *,
    target: str,
    task_queue: str,
    handoff_timeout: float = HANDOFF_TIMEOUT,
    call_ended_timeout: float = HANDOFF_TIMEOUT,
) -> FollowUpHandoff:
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        temporal_address=target,
        temporal_task_queue=task_queue,
        handoff_timeout_seconds=handoff_timeout,
        handoff_call_ended_timeout_seconds=call_ended_timeout,
        outbox_relay_interval_seconds=0.1,
        follow_up_step_schedule_to_close_seconds=20,
    )
    return FollowUpHandoff.from_settings(settings)


def target_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def handoff_up(servers: FollowUpServers, data_dir: Path, **timeouts: float) -> FollowUpHandoff:
    """A handoff to the test's Temporal server and task queue."""
    return handoff_to(
        data_dir, target=target_of(servers.env), task_queue=servers.task_queue, **timeouts
    )


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


@contextmanager
def silent_server() -> Iterator[str]:
    """A port whose kernel accepts TCP connections but where nothing ever answers: a hung host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def follow_up(client: Client, call_id: str) -> WorkflowHandle[object, FollowUpProgress]:
    return client.get_workflow_handle(workflow_id_for(call_id), result_type=FollowUpProgress)


async def finished(client: Client, call_id: str) -> FollowUpProgress:
    return await asyncio.wait_for(follow_up(client, call_id).result(), RESULT_WAIT)


async def wait_until(condition: Callable[[], bool], *, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def vendor_rows(sandbox: SandboxServer, person: Trialist) -> dict[str, int]:
    """How many meetings, Salesforce leads and HubSpot contacts the sandbox holds for a person."""
    state = sandbox.state()
    meetings = [
        row
        for row in state["chilipiper_meetings"]
        if row["guest_email"] == person.email and row["status"] == "Active"
    ]
    leads = [
        row
        for row in state["salesforce_records"]
        if row["sobject"] == "Lead" and json.loads(str(row["fields"])).get("Email") == person.email
    ]
    contacts = [
        row
        for row in state["hubspot_objects"]
        if row["object_type"] == "contacts" and row["email"] == person.email
    ]
    return {"meetings": len(meetings), "leads": len(leads), "contacts": len(contacts)}


ONE_EACH = {"meetings": 1, "leads": 1, "contacts": 1}


async def timed(action: Awaitable[T]) -> tuple[T, float]:
    """The action's result and how long it took, in seconds."""
    started = time.perf_counter()
    result = await action
    return result, time.perf_counter() - started


# --- in the call, with Temporal up -------------------------------------------------------------


@pytest.fixture
def handoff(dev_servers: FollowUpServers, tmp_path: Path) -> FollowUpHandoff:
    """The agent's handoff to the dev server, its outbox in the test's own data dir."""
    return handoff_up(dev_servers, tmp_path)


async def test_a_confirmed_booking_then_call_ended_completes_the_follow_up(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        booked = await handoff.book_meeting(request, wait=10.0)
        assert booked.status is BookingHandoffStatus.CONFIRMED and booked.meeting_id
        confirmation = BookingConfirmation(
            meeting_id=booked.meeting_id, slot_start=request.slot_start
        )
        ended = await handoff.call_ended(call.outcome(requested=request, booking=confirmation))
        assert ended.status is CallEndedStatus.DELIVERED
        progress = await finished(dev_servers.client, call.call_id)
    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.booking is not None and progress.booking.meeting_id == booked.meeting_id
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH
    assert handoff.outbox.messages() == []
    description = await follow_up(dev_servers.client, call.call_id).describe()
    summary = await description.static_summary()
    assert summary is not None and "Casey Morgan" in summary


async def test_a_taken_slot_comes_back_unavailable_with_alternatives(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    later_call = ScenarioCall.new()
    async with dev_servers.worker() as clients:
        first = await call.first_free_booking(clients)
        taken = await handoff.book_meeting(first, wait=10.0)
        assert taken.status is BookingHandoffStatus.CONFIRMED
        late = await handoff.book_meeting(later_call.booking(first.slot_start), wait=10.0)
    assert late.status is BookingHandoffStatus.UNAVAILABLE and late.meeting_id is None
    assert late.alternatives and first.slot_start not in late.alternatives
    assert all(alternative > dev_servers.sandbox.clock() for alternative in late.alternatives)


async def test_a_refused_booking_is_rejected_at_once_with_the_reason(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    # The workflow checks slots against Temporal's clock, which is the wall clock here.
    past = call.booking(datetime.now(UTC) - timedelta(hours=1))
    async with dev_servers.worker():
        refused, elapsed = await timed(handoff.book_meeting(past, wait=10.0))
    assert refused.status is BookingHandoffStatus.REJECTED
    assert refused.reason is not None and "in the past" in refused.reason
    assert elapsed < HANDOFF_TIMEOUT  # a refusal is known at once: no waiting out `wait`
    assert handoff.outbox.messages() == []  # a refusal is final, never queued
    assert vendor_rows(dev_servers.sandbox, call.trialist)["meetings"] == 0


async def test_a_slow_booking_is_queued_within_the_wait_and_booked_once(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    # The workflow books in the workflow task that accepts the update (a local activity): a
    # booking slower than the wait is not accepted within it, so the caller hears "the invite
    # will follow" on time, the outbox keeps the request, and the workflow still books it.
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        dev_servers.sandbox.add_fault(
            vendor="chilipiper", operation="schedule_simple", latency_ms=800
        )
        queued, elapsed = await timed(handoff.book_meeting(request, wait=0.3))
        assert queued.status is BookingHandoffStatus.QUEUED
        assert elapsed < 0.3 + MARGIN
        assert handoff.outbox.pending_count() == 1  # the request, kept until the outcome
        ended = await handoff.call_ended(call.outcome(requested=request))
        assert ended.status is CallEndedStatus.DELIVERED
        progress = await finished(dev_servers.client, call.call_id)
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert progress.booking.slot_start == request.slot_start
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH  # booked once, not twice
    assert [(m.kind, m.delivered, m.last_error) for m in handoff.outbox.messages()] == [
        (MessageKind.BOOK_MEETING, True, SUPERSEDED)  # the outcome carries the request
    ]


async def test_a_booking_confirms_within_the_wait_in_one_workflow_task(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        booked = await handoff.book_meeting(request, wait=5.0)
        assert booked.status is BookingHandoffStatus.CONFIRMED
        history = await dev_servers.client.get_workflow_handle(
            workflow_id_for(call.call_id)
        ).fetch_history()
    kinds = [event.WhichOneof("attributes") for event in history.events]
    # The booking ran in the workflow task that accepted it: a marker, no activity task.
    assert "activity_task_scheduled_event_attributes" not in kinds
    assert "marker_recorded_event_attributes" in kinds
    accepted = kinds.index("workflow_execution_update_accepted_event_attributes")
    completed = kinds.index("workflow_execution_update_completed_event_attributes")
    between = kinds[accepted:completed]
    assert "workflow_task_scheduled_event_attributes" not in between


async def test_a_booking_the_vendor_commits_but_answers_late_is_confirmed_within_the_wait(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    # Chili Piper makes the meeting, then holds its answer 4 s. With production's 5 s read
    # timeout the request would answer after the caller's 2 s wait; the in-call attempt looks
    # for the meeting meanwhile, so the caller hears it confirmed, and it is booked once.
    sandbox = dev_servers.sandbox
    async with open_vendor_clients(sandbox, read_timeout=PRODUCTION_READ_TIMEOUT) as clients:
        activities = FollowUpActivities(clients=clients).activity_methods()
        async with dev_servers.worker(activities=activities):
            request = await call.first_free_booking(clients)
            dev_servers.sandbox.add_fault(
                vendor="chilipiper",
                operation="schedule_simple",
                after_commit_latency_ms=4000,
                times=1,
            )
            # Confirmed means the result came within the wait.
            booked = await handoff.book_meeting(request, wait=BOOKING_WAIT)
            assert booked.status is BookingHandoffStatus.CONFIRMED and booked.meeting_id
            ended = await handoff.call_ended(
                call.outcome(
                    requested=request,
                    booking=BookingConfirmation(
                        meeting_id=booked.meeting_id, slot_start=request.slot_start
                    ),
                )
            )
            assert ended.status is CallEndedStatus.DELIVERED
            result = await finished(dev_servers.client, call.call_id)
    assert result.booking is not None and result.booking.meeting_id == booked.meeting_id
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH  # booked once


async def test_a_booking_parked_for_an_operator_is_pending_not_refused(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        # A permanent vendor error: the workflow parks the booking and fails the update.
        dev_servers.sandbox.add_fault(
            vendor="chilipiper", operation="schedule_simple", error_rate=1.0, status=400
        )
        parked = await handoff.book_meeting(request, wait=10.0)
    assert parked.status is BookingHandoffStatus.PENDING
    assert parked.reason is not None and "operator" in parked.reason
    assert handoff.outbox.messages() == []


# --- Temporal down, slow or hung ------------------------------------------------------------------


async def _priority(client: Client, call_id: str) -> int:
    description = await follow_up(client, call_id).describe()
    return description.raw_description.workflow_execution_info.priority.priority_key


async def test_call_ended_demotes_the_follow_up_from_in_call_to_post_call_priority(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    """A finished call's workflow tasks queue behind live calls' (a workflow's priority orders
    its workflow tasks). No worker is needed: the priority is the server's record."""
    client = dev_servers.client
    outcome = call.outcome()
    handoff.call_started(call.call_id, trialist=call.trialist, started_at=outcome.started_at)
    try:
        sent = outcome.started_at + timedelta(seconds=1)
        first = await handoff.checkpoint(CallCheckpoint(call_id=call.call_id, seq=1, sent_at=sent))
        assert first.status is CallEndedStatus.DELIVERED
        assert await _priority(client, call.call_id) == IN_CALL_PRIORITY  # a live call

        ended = await handoff.call_ended(outcome)
        assert ended.status is CallEndedStatus.DELIVERED
        assert await _priority(client, call.call_id) == POST_CALL_PRIORITY  # the call is over
    finally:
        await follow_up(client, call.call_id).terminate("test over")


async def test_temporal_down_queues_both_then_the_relay_delivers_them_once(
    dev_servers: FollowUpServers, tmp_path: Path, call: ScenarioCall
) -> None:
    call_id = call.call_id
    down = handoff_to(tmp_path, target=closed_port(), task_queue=dev_servers.task_queue)
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        booked, booking_time = await timed(down.book_meeting(request, wait=2.0))
        queued = down.outbox.messages(call_id)  # as queued, before call_ended supersedes it
        ended, ending_time = await timed(down.call_ended(call.outcome(requested=request)))
        assert booked.status is BookingHandoffStatus.QUEUED
        assert ended.status is CallEndedStatus.QUEUED
        assert booking_time < HANDOFF_TIMEOUT + MARGIN and ending_time < HANDOFF_TIMEOUT + MARGIN
        # The outcome carries the queued booking's request: call_ended never waits behind it.
        queued += down.outbox.due(time.time())
        assert [m.kind for m in down.outbox.due(time.time())] == [MessageKind.CALL_ENDED]

        # The next agent process, with Temporal back: its relay delivers at start-up.
        up = handoff_up(dev_servers, tmp_path)
        await up.start_relay()
        await wait_until(lambda: up.outbox.pending_count() == 0)
        await up.aclose()
        progress = await finished(dev_servers.client, call_id)
        assert progress.status is FollowUpStatus.COMPLETED
        assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
        messages = up.outbox.messages(call_id)
        assert [(m.kind, m.delivered, m.last_error) for m in messages] == [
            (MessageKind.BOOK_MEETING, True, SUPERSEDED),  # booked from requested_meeting
            (MessageKind.CALL_ENDED, True, None),
        ]
        assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH

        # Delivered rows keep no payload: the personal data left the outbox with the delivery.
        assert [m.payload for m in messages] == ["", ""]

        # At-least-once: the same messages again (as queued) change nothing and start no second
        # run; a message to a finished follow-up is refused instead of starting a new run.
        run_id = (await follow_up(dev_servers.client, call_id).describe()).run_id
        repeats = [await up.deliver(message) for message in queued]
        assert [m.kind for m in queued] == [MessageKind.BOOK_MEETING, MessageKind.CALL_ENDED]
        assert repeats == [Rejection(ALREADY_FINISHED), Rejection(ALREADY_FINISHED)]
        assert (await follow_up(dev_servers.client, call_id).describe()).run_id == run_id
        assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH


async def test_temporal_without_a_worker_is_too_slow_so_the_booking_is_queued(
    dev_servers: FollowUpServers, tmp_path: Path, call: ScenarioCall
) -> None:
    handoff = handoff_up(dev_servers, tmp_path)
    await handoff.client()  # connected: only the acceptance is slow
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
    # No worker polls the queue now: Temporal takes the start but nobody accepts the update.
    # The acceptance may take the whole booking wait (it comes with the booking's result).
    queued, elapsed = await timed(handoff.book_meeting(request, wait=SHORT_TIMEOUT))
    assert queued.status is BookingHandoffStatus.QUEUED
    assert SHORT_TIMEOUT <= elapsed < SHORT_TIMEOUT + MARGIN
    async with dev_servers.worker():
        relayed = await handoff.relay().deliver_due_once()
        assert (relayed.delivered, relayed.failed) == (1, 0)
        ended = await handoff.call_ended(call.outcome(requested=request))
        assert ended.status is CallEndedStatus.DELIVERED
        progress = await finished(dev_servers.client, call.call_id)
    # The first, unaccepted attempt and the relay's share one update id: one booking.
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH


async def test_a_hung_temporal_host_costs_each_message_its_own_budget_and_no_more(
    tmp_path: Path, task_queue: str, call: ScenarioCall
) -> None:
    # A pinned weekday hour (never booked: Temporal is silent here).
    slot = working_week_anchor(datetime.now(UTC))
    with silent_server() as target:
        handoff = handoff_to(
            tmp_path,
            target=target,
            task_queue=task_queue,
            handoff_timeout=SHORT_TIMEOUT,
            call_ended_timeout=2 * SHORT_TIMEOUT,
        )
        sent = datetime.now(UTC)  # a duration stamp, no calendar logic
        checkpoint, checkpoint_time = await timed(
            handoff.checkpoint(CallCheckpoint(call_id=call.call_id, seq=1, sent_at=sent))
        )
        booked, booking_time = await timed(
            handoff.book_meeting(call.booking(slot), wait=3 * SHORT_TIMEOUT)
        )
        ended, ending_time = await timed(handoff.call_ended(call.outcome()))
    assert (checkpoint.status, checkpoint.reason) == (CallEndedStatus.QUEUED, "timed out")
    assert (booked.status, booked.reason) == (BookingHandoffStatus.QUEUED, "timed out")
    assert (ended.status, ended.reason) == (CallEndedStatus.QUEUED, "timed out")
    # Each within its own budget: a checkpoint the handoff timeout, a booking the booking wait
    # (its acceptance comes with its result), call_ended its own, not what the booking left.
    assert SHORT_TIMEOUT <= checkpoint_time < SHORT_TIMEOUT + MARGIN
    assert 3 * SHORT_TIMEOUT <= booking_time < 3 * SHORT_TIMEOUT + MARGIN
    assert 2 * SHORT_TIMEOUT <= ending_time < 2 * SHORT_TIMEOUT + MARGIN
    # The outcome supersedes the checkpoint; the booking (not in this outcome) waits its turn.
    due = handoff.outbox.due(time.time())
    assert [m.kind for m in due] == [MessageKind.BOOK_MEETING, MessageKind.CALL_ENDED]


async def test_call_ended_supersedes_the_calls_queued_booking_which_the_workflow_books(
    dev_servers: FollowUpServers, tmp_path: Path, call: ScenarioCall
) -> None:
    down = handoff_to(tmp_path, target=closed_port(), task_queue=dev_servers.task_queue)
    up = handoff_up(dev_servers, tmp_path)
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        assert (await down.book_meeting(request, wait=2.0)).status is BookingHandoffStatus.QUEUED
        # Temporal is back by hang-up: call_ended goes at once, within its own budget; its
        # requested_meeting is the queued booking, which the workflow books after the call.
        ended = await up.call_ended(call.outcome(requested=request))
        assert ended.status is CallEndedStatus.DELIVERED
        progress = await finished(dev_servers.client, call.call_id)
    [booking] = up.outbox.messages(call.call_id)
    assert booking.delivered and booking.last_error == SUPERSEDED
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH


async def test_a_booking_delivered_after_call_ended_is_refused_once_and_nothing_is_lost(
    dev_servers: FollowUpServers, handoff: FollowUpHandoff, call: ScenarioCall
) -> None:
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        ended = await handoff.call_ended(call.outcome(requested=request))
        assert ended.status is CallEndedStatus.DELIVERED
        handoff.outbox.put(request)  # queued by another process, delivered only now
        relay = handoff.relay()
        relayed = await relay.deliver_due_once()
        assert (relayed.rejected, relayed.failed) == (1, 0)
        assert (await relay.deliver_due_once(startup=True)).attempted == 0  # not retried
        progress = await finished(dev_servers.client, call.call_id)
    [late] = handoff.outbox.messages(call.call_id)
    assert late.delivered and late.last_error is not None and late.last_error.startswith("refused")
    # The outcome carried requested_meeting, so the workflow booked it anyway.
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH


# --- a process killed right after its outbox write ---------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys

    from handoff.follow_up import FollowUpHandoff
    from contracts import BookingRequest, CallOutcome
    from config.settings import Settings


    async def main() -> None:
        data_dir, target, request, outcome = sys.argv[1:]
        settings = Settings(
            _env_file=None, data_dir=data_dir, temporal_address=target, handoff_timeout_seconds=0.5
        )
        handoff = FollowUpHandoff.from_settings(settings)
        booked = await handoff.book_meeting(BookingRequest.model_validate_json(request), wait=1.0)
        ended = await handoff.call_ended(CallOutcome.model_validate_json(outcome))
        print(booked.status, ended.status, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown, no close of the outbox


    asyncio.run(main())
    """
)


async def test_a_process_killed_after_its_outbox_write_delivers_on_the_next_start(
    dev_servers: FollowUpServers, tmp_path: Path, call: ScenarioCall
) -> None:
    async with dev_servers.worker() as clients:
        request = await call.first_free_booking(clients)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            str(tmp_path),
            closed_port(),
            request.model_dump_json(),
            call.outcome(requested=request).model_dump_json(),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == -signal.SIGKILL, stderr.decode()
        assert stdout.decode().split() == ["queued", "queued"]

        restarted = handoff_up(dev_servers, tmp_path)
        # The booking was superseded by the call_ended that carries it; that one waits.
        pending = restarted.outbox.pending_for(call.call_id)
        assert [m.kind for m in pending] == [MessageKind.CALL_ENDED]
        relayed = await restarted.relay().deliver_due_once(startup=True)
        assert (relayed.delivered, relayed.failed) == (1, 0)
        progress = await finished(dev_servers.client, call.call_id)
    assert progress.status is FollowUpStatus.COMPLETED
    assert progress.booking is not None and progress.booking.status is BookingStatus.BOOKED
    assert vendor_rows(dev_servers.sandbox, call.trialist) == ONE_EACH


# --- contracts with the workflow ------------------------------------------------------------------


def test_the_outbox_lives_under_the_data_dir(tmp_path: Path) -> None:
    handoff = handoff_to(tmp_path / "data", target=closed_port(), task_queue="q")
    assert handoff.outbox.path == tmp_path / "data" / "outbox.db"
