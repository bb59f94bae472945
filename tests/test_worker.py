"""`python worker.py` as a real child process against the dev server and the sandbox."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from config.settings import SANDBOX_CREDENTIAL, Settings
from config.temporal import TemporalConnectError, connect
from contracts import (
    BOOK_MEETING_UPDATE,
    CALL_ENDED_SIGNAL,
    DEFAULT_TASK_QUEUE,
    FOLLOW_UP_STATUS,
    WORKFLOW_TYPE,
    BookingConfirmation,
    BookingResult,
    BookingStatus,
    CallOutcome,
    FollowUpInput,
    FollowUpStep,
    workflow_id_for,
)
from devtools.devstack import SEARCH_ATTRIBUTE_FLAGS
from integrations.chilipiper import ChiliPiperGuest
from integrations.clients import build_vendor_clients
from tests.payload_keys import SESSION_CONVERTER
from tests.servers import SandboxServer, binary, free_port
from tests.workflows.scenario import ScenarioCall

REPO = Path(__file__).resolve().parent.parent
READY = "worker ready:"
STARTUP_SECONDS = 60.0
GRACE_SECONDS = 5.0
SLOW_MS = 1500
TRACK_ANALYTICS = FollowUpStep.TRACK_ANALYTICS.value
# Variables that would point the child at real vendors or another server if inherited.
_INHERITED_PREFIXES = (
    "TEMPORAL_",
    "SANDBOX_",
    "WORKER_",
    "SALESFORCE_",
    "HUBSPOT_",
    "CHILIPIPER_",
    "AMPLITUDE_",
)


class WorkerProcess:
    """`python worker.py` with its stderr collected line by line."""

    def __init__(self, *, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "worker.py")],
            cwd=cwd,  # no .env there: only the variables given here configure the worker
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._done = threading.Event()  # the process's output has ended
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
        self._done.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def wait_for(self, text: str, timeout: float = STARTUP_SECONDS, *, after: int = 0) -> str:
        """The first line with `text` beyond the first `after` such lines, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            matches = [line for line in list(self.lines) if text in line]
            if len(matches) > after:
                return matches[after]
            if time.monotonic() > deadline or self._done.is_set():
                raise AssertionError(f"worker never printed {text!r}; output:\n{self.output}")
            time.sleep(0.05)

    def stop(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def worker_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    env["PYTHONPATH"] = str(REPO)
    env.update(values)
    return env


@contextmanager
def running_worker(tmp_path: Path, **values: str) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(cwd=tmp_path, env=worker_env(**values))
    try:
        yield worker
    finally:
        worker.kill()


def run_to_exit(tmp_path: Path, timeout: float = 60, **values: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(REPO / "worker.py")],
        cwd=tmp_path,
        env=worker_env(**values),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stderr


def target_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def first_free_slot(sandbox_url: str) -> datetime:
    settings = Settings(_env_file=None, sandbox_url=sandbox_url)
    clients = build_vendor_clients(settings)
    try:
        guest = ChiliPiperGuest(
            email="slots@example.com", first_name="Slot", last_name="Finder", timezone="UTC"
        )
        found = await clients.chilipiper.find_free_slots(guest, timezone="UTC")
    finally:
        await clients.aclose()
    return found.slots[0]


async def call_ended(
    client: Client, task_queue: str, outcome: CallOutcome
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        WORKFLOW_TYPE,
        FollowUpInput(call_id=outcome.call_id),
        id=workflow_id_for(outcome.call_id),
        task_queue=task_queue,
        start_signal=CALL_ENDED_SIGNAL,
        start_signal_args=[outcome],
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def wait_until_started(handle: WorkflowHandle[Any, Any], activity_type: str) -> None:
    """Until the workflow's `activity_type` activity is running on a worker."""
    async with asyncio.timeout(20):
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            if any(
                a.activity_type.name == activity_type
                and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for a in pending
            ):
                return
            await asyncio.sleep(0.05)


async def wait_until_only_running(handle: WorkflowHandle[Any, Any], activity_type: str) -> None:
    """Until `activity_type` runs on a worker and is all the workflow waits for.

    No other activity and no workflow task may be in flight: a workflow task that a stopping worker
    abandons holds back (buffers) every later event until that task times out, so the activity's
    completion would only reach the history ~10s later.
    """
    async with asyncio.timeout(20):
        while True:
            description = (await handle.describe()).raw_description
            pending = description.pending_activities
            if (
                len(pending) == 1
                and pending[0].activity_type.name == activity_type
                and pending[0].state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and not description.HasField("pending_workflow_task")
            ):
                return
            await asyncio.sleep(0.02)


async def completed_activity_types(handle: WorkflowHandle[Any, Any]) -> list[str]:
    events = list((await handle.fetch_history()).events)
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]


# --- the worker serves, reports metrics, and stops gracefully -------------------------------


async def test_worker_runs_follow_ups_serves_metrics_and_stops_gracefully(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, tmp_path: Path
) -> None:
    task_queue = f"worker-test-{uuid.uuid4()}"
    metrics_port = free_port()
    client = dev_env.client
    with running_worker(
        tmp_path,
        TEMPORAL_ADDRESS=target_of(dev_env),
        TEMPORAL_TASK_QUEUE=task_queue,
        SANDBOX_URL=sandbox.url,
        WORKER_METRICS_PORT=str(metrics_port),
        WORKER_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    ) as worker:
        ready = worker.wait_for(READY)
        assert f"temporal={target_of(dev_env)}" in ready
        assert f"task_queue={task_queue}" in ready
        assert "namespace=default" in ready
        assert "salesforce=sandbox hubspot=sandbox chilipiper=sandbox amplitude=sandbox" in ready

        call = ScenarioCall.new()
        slot = await first_free_slot(sandbox.url)
        handle = await call_ended(client, task_queue, call.outcome(requested=call.booking(slot)))
        await asyncio.wait_for(handle.result(), 60)
        description = await handle.describe()
        assert description.typed_search_attributes.get(FOLLOW_UP_STATUS) == "completed"
        meetings = sandbox.state()["chilipiper_meetings"]
        ours = [m for m in meetings if m["guest_email"] == call.trialist.email]
        assert len(ours) == 1 and ours[0]["status"] == "Active"

        async with httpx2.AsyncClient() as http:
            metrics = await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "temporal_workflow_completed" in metrics.text
        assert f'task_queue="{task_queue}"' in metrics.text

        # A slow Amplitude: SIGTERM arrives while its activity runs; the grace period lets it end.
        sandbox.add_fault(vendor="amplitude", operation="track", latency_ms=SLOW_MS)
        slow = await call_ended(client, task_queue, ScenarioCall.new().outcome())
        await wait_until_only_running(slow, TRACK_ANALYTICS)
        signalled = time.monotonic()
        code = worker.stop(timeout=GRACE_SECONDS + 10)
        took = time.monotonic() - signalled

    assert code == 0, worker.output
    assert SLOW_MS / 2000 < took < GRACE_SECONDS, f"took {took:.1f}s to stop"
    assert "SIGTERM received" in worker.output
    assert "worker stopped" in worker.output
    assert "Traceback" not in worker.output
    assert SANDBOX_CREDENTIAL not in worker.output
    assert call.trialist.email not in worker.output  # no personal data in the logs
    # The activity running at SIGTERM finished within the grace period and was reported.
    assert TRACK_ANALYTICS in await completed_activity_types(slow)
    await slow.terminate("test over")


async def test_a_workflows_worker_books_in_call_and_an_activities_worker_does_the_rest(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, tmp_path: Path
) -> None:
    # WORKER_ROLE splits the follow-up queue: the workflows (with the in-call booking, a local
    # activity) in one process, the post-call activities in another, so a backlog of vendor
    # calls never shares an event loop with a caller's booking.
    task_queue = f"worker-test-{uuid.uuid4()}"
    client = dev_env.client
    base = {
        "TEMPORAL_ADDRESS": target_of(dev_env),
        "TEMPORAL_TASK_QUEUE": task_queue,
        "SANDBOX_URL": sandbox.url,
        "WORKER_METRICS_PORT": "0",
    }
    call = ScenarioCall.new()
    request = call.booking(await first_free_slot(sandbox.url))
    (tmp_path / "workflows").mkdir()
    (tmp_path / "activities").mkdir()
    with running_worker(tmp_path / "workflows", WORKER_ROLE="workflows", **base) as workflows:
        assert "role=workflows" in workflows.wait_for(READY)
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            WORKFLOW_TYPE,
            FollowUpInput(call_id=call.call_id),
            id=workflow_id_for(call.call_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        update = await client.start_update_with_start_workflow(
            BOOK_MEETING_UPDATE,
            request,
            start_workflow_operation=start,
            wait_for_stage=WorkflowUpdateStage.COMPLETED,
            result_type=BookingResult,
        )
        booked = await asyncio.wait_for(update.result(), 30)
        assert booked.status is BookingStatus.BOOKED and booked.meeting_id
        confirmation = BookingConfirmation(
            meeting_id=booked.meeting_id, slot_start=request.slot_start
        )
        handle = await call_ended(
            client, task_queue, call.outcome(requested=request, booking=confirmation)
        )
        # The post-call steps are scheduled; a workflows-only worker takes none of them.
        scheduled = await pending_activity_states(handle, settle=1.0)
        assert scheduled, "no post-call step was left for an activities worker"
        assert set(scheduled) == {PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED}
        with running_worker(
            tmp_path / "activities", WORKER_ROLE="activities", **base
        ) as activities:
            assert "role=activities" in activities.wait_for(READY)
            await asyncio.wait_for(handle.result(), 60)
    description = await handle.describe()
    assert description.typed_search_attributes.get(FOLLOW_UP_STATUS) == "completed"
    meetings = sandbox.state()["chilipiper_meetings"]
    assert [m["meeting_id"] for m in meetings if m["guest_email"] == call.trialist.email] == [
        booked.meeting_id
    ]


async def pending_activity_states(
    handle: WorkflowHandle[Any, Any], *, settle: float
) -> list[PendingActivityState.ValueType]:
    """The states of the workflow's pending activities, once there are some and `settle` s on."""
    async with asyncio.timeout(20):
        while True:
            if (await handle.describe()).raw_description.pending_activities:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    return [a.state for a in (await handle.describe()).raw_description.pending_activities]


async def test_activity_longer_than_the_grace_period_is_cut_off_and_worker_exits_zero(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer, tmp_path: Path
) -> None:
    task_queue = f"worker-test-{uuid.uuid4()}"
    grace = 1.0
    with running_worker(
        tmp_path,
        TEMPORAL_ADDRESS=target_of(dev_env),
        TEMPORAL_TASK_QUEUE=task_queue,
        SANDBOX_URL=sandbox.url,
        WORKER_METRICS_PORT="0",
        WORKER_SHUTDOWN_GRACE_SECONDS=str(grace),
    ) as worker:
        ready = worker.wait_for(READY)
        assert "metrics=off" in ready
        sandbox.add_fault(vendor="amplitude", operation="track", hang=True)
        handle = await call_ended(dev_env.client, task_queue, ScenarioCall.new().outcome())
        await wait_until_started(handle, TRACK_ANALYTICS)
        signalled = time.monotonic()
        code = worker.stop(timeout=grace + 15)
        took = time.monotonic() - signalled
    assert code == 0, worker.output
    assert took < grace + 4, f"took {took:.1f}s to stop with a {grace}s grace period"
    # Cut off, not lost: Temporal holds the activity for a retry on the next worker.
    assert TRACK_ANALYTICS not in await completed_activity_types(handle)
    pending = (await handle.describe()).raw_description.pending_activities
    analytics = [a for a in pending if a.activity_type.name == TRACK_ANALYTICS]
    assert len(analytics) == 1
    assert analytics[0].state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    assert analytics[0].attempt == 2, analytics[0]
    await handle.terminate("test over")


# --- start-up errors are one clear line, exit code 1 ------------------------------------------


def test_an_unreachable_server_is_an_outage_to_wait_out_not_a_reason_to_exit(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    with running_worker(
        tmp_path,
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        WORKER_CONNECT_ATTEMPTS="2",
        WORKER_METRICS_PORT="0",
    ) as worker:
        worker.wait_for("attempt 1/2")  # each connect round retries, and says so
        worker.wait_for("the worker connects again in")
        worker.wait_for("the worker connects again in 1.0s")  # the wait doubles, it never exits
        assert worker.returncode is None, worker.output
        code = worker.stop(timeout=10)
    assert code == 0, worker.output
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in worker.output
    assert "Traceback" not in worker.output


def test_busy_metrics_port_exits_1_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stderr = run_to_exit(
            tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1", WORKER_METRICS_PORT=str(port)
        )
    assert code == 1, stderr
    assert f"cannot serve Temporal metrics on 127.0.0.1:{port}" in stderr
    assert "WORKER_METRICS_PORT" in stderr
    assert "Traceback" not in stderr


def test_unknown_namespace_exits_1_with_a_clear_message(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    code, stderr = run_to_exit(
        tmp_path,
        TEMPORAL_ADDRESS=target_of(dev_env),
        TEMPORAL_NAMESPACE="no-such-namespace",
        WORKER_METRICS_PORT="0",
    )
    # A healthy server that keeps not knowing the namespace is a misconfiguration, named.
    assert code == 1, stderr
    assert "namespace 'no-such-namespace' does not exist" in stderr
    assert "TEMPORAL_NAMESPACE" in stderr
    assert "Traceback" not in stderr


def test_bad_setting_exits_1_naming_the_variable(tmp_path: Path) -> None:
    code, stderr = run_to_exit(tmp_path, WORKER_METRICS_PORT="70000")
    assert code == 1, stderr
    assert "WORKER_METRICS_PORT" in stderr
    assert "Traceback" not in stderr


# --- start-up order: the worker waits for a server that is still starting ---------------------


def patient_worker(tmp_path: Path, port: int) -> AbstractContextManager[WorkerProcess]:
    """A worker that tries 30 times to reach a Temporal server on `port`."""
    return running_worker(
        tmp_path,
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        WORKER_CONNECT_ATTEMPTS="30",
        WORKER_METRICS_PORT="0",
    )


def dev_server(port: int, db: Path | None = None) -> subprocess.Popen[bytes]:
    """`temporal server start-dev` on `port` with our search attributes, kept in `db` if given."""
    kept = ["--db-filename", str(db)] if db is not None else []
    search_attributes = [
        arg for flag in SEARCH_ATTRIBUTE_FLAGS for arg in ("--search-attribute", flag)
    ]
    return subprocess.Popen(
        [
            binary("temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-port",
            str(free_port()),
            *kept,
            "--log-level",
            "error",
            *search_attributes,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_worker_waits_for_a_server_that_starts_after_it(tmp_path: Path) -> None:
    port = free_port()
    with patient_worker(tmp_path, port) as worker:
        worker.wait_for("not reachable (attempt 1/30)")
        server = dev_server(port)
        try:
            worker.wait_for(READY)
            assert worker.stop(timeout=20) == 0, worker.output
        finally:
            server.terminate()
            server.wait(timeout=20)


async def a_follow_up_runs_on(target: str) -> None:
    """A follow-up whose start input is unusable fails at once, but only a worker can run it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client = await Client.connect(target, data_converter=SESSION_CONVERTER)
            break
        except RuntimeError:  # the server is still starting
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    handle = await client.start_workflow(
        WORKFLOW_TYPE,
        {"call_id": "not a call id"},
        id=f"call-{uuid.uuid4()}",
        task_queue=DEFAULT_TASK_QUEUE,
    )
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 60)


def test_a_worker_rides_out_temporal_dying_under_it_and_serves_when_it_is_back(
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "temporal.db"
    server = dev_server(port, db)
    try:
        with patient_worker(tmp_path, port) as worker:
            worker.wait_for(READY)
            server.kill()  # SIGKILL: an outage, not a shutdown
            server.wait(timeout=20)
            time.sleep(3)
            assert worker.returncode is None, worker.output  # still up, waiting
            server = dev_server(port, db)
            # The same worker serves again: a follow-up needs it to run at all.
            asyncio.run(a_follow_up_runs_on(f"127.0.0.1:{port}"))
            assert worker.stop(timeout=20) == 0, worker.output
        assert "Traceback" not in worker.output
    finally:
        server.kill()
        server.wait(timeout=20)


def test_sigterm_during_start_up_retries_exits_0_at_once(tmp_path: Path) -> None:
    with patient_worker(tmp_path, free_port()) as worker:
        worker.wait_for("not reachable (attempt 2/30)")
        signalled = time.monotonic()
        code = worker.stop(timeout=10)
        took = time.monotonic() - signalled
    assert code == 0, worker.output
    assert took < 2, f"took {took:.1f}s"  # it did not sit out the remaining retries
    assert "stopped before the worker was ready" in worker.output


async def test_connect_gives_up_after_the_attempts_with_backoff() -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = Settings(_env_file=None, temporal_address=address)
    began = time.monotonic()
    with pytest.raises(TemporalConnectError) as caught:
        await connect(settings, attempts=3, delay=0.1)
    took = time.monotonic() - began
    assert caught.value.attempts == 3
    assert took >= 0.1 + 0.2  # slept between attempts, doubling
    assert str(caught.value).startswith(f"cannot reach Temporal at {settings.temporal_target}")


# --- run_worker in-process, as the dev stack and tests use it ---------------------------------


async def test_run_worker_reports_ready_and_returns_when_stopped(
    dev_env: WorkflowEnvironment, sandbox: SandboxServer
) -> None:
    from worker import run_worker

    settings = Settings(
        _env_file=None,
        temporal_address=target_of(dev_env),
        temporal_task_queue=f"worker-test-{uuid.uuid4()}",
        sandbox=sandbox,
        worker_metrics_port=0,
        worker_shutdown_grace_seconds=1,
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, stop=stop, ready=ready.set))
    await asyncio.wait_for(ready.wait(), 30)
    assert not running.done()
    stop.set()
    await asyncio.wait_for(running, 10)
