"""`python worker.py` as a real child process against the dev server and the sandbox."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from contracts import (
    CALL_ENDED_SIGNAL,
    FOLLOW_UP_STATUS,
    WORKFLOW_TYPE,
    BookingRequest,
    CallOutcome,
    EndedReason,
    FollowUpInput,
    QualificationSignals,
    Trialist,
    workflow_id_for,
)
from integrations.chilipiper import ChiliPiperGuest
from integrations.clients import build_vendor_clients
from tests.servers import SandboxServer, binary, free_port
from trialist.settings import SANDBOX_CREDENTIAL, Settings
from trialist.temporal import TemporalConnectError, connect

REPO = Path(__file__).resolve().parent.parent
READY = "worker ready:"
STARTUP_SECONDS = 60.0
GRACE_SECONDS = 5.0
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
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._new.put(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = STARTUP_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if text in line:
                return line
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self._new.empty():
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"worker never printed {text!r}; output:\n{self.output}")

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
    clients = build_vendor_clients(Settings(_env_file=None, sandbox_url=sandbox_url))  # type: ignore[call-arg]
    try:
        guest = ChiliPiperGuest(
            email="slots@example.com", first_name="Slot", last_name="Finder", timezone="UTC"
        )
        found = await clients.chilipiper.find_free_slots(guest, timezone="UTC")
    finally:
        await clients.aclose()
    return found.slots[0]


def outcome_for(call_id: str, *, slot: datetime | None) -> CallOutcome:
    trialist = Trialist(
        email=f"{call_id}@example.com",
        name="Riley Chen",
        company="Chen Consulting",
        phone="+14155550123",
        trial_account_id=f"trial-{call_id}",
        timezone="America/Denver",
    )
    ended = datetime.now(UTC)
    meeting = None
    if slot is not None:
        meeting = BookingRequest(call_id=call_id, slot_start=slot, guest=trialist)
    return CallOutcome(
        call_id=call_id,
        trialist=trialist,
        started_at=ended - timedelta(minutes=5),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        signals=QualificationSignals(team_size=8, use_case="quotes", timeline="next month"),
        notes=["Uses Word templates today"],
        summary="Qualified; wants a walkthrough of approvals.",
        requested_meeting=meeting,
    )


async def call_ended(client: Client, task_queue: str, outcome: CallOutcome) -> WorkflowHandle:
    return await client.start_workflow(
        WORKFLOW_TYPE,
        FollowUpInput(call_id=outcome.call_id),
        id=workflow_id_for(outcome.call_id),
        task_queue=task_queue,
        start_signal=CALL_ENDED_SIGNAL,
        start_signal_args=[outcome],
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def wait_until_activity_running(handle: WorkflowHandle, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = await handle.describe()
        if any(a.attempt >= 1 and a.last_started_time.seconds for a in
               description.raw_description.pending_activities):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no activity started")
