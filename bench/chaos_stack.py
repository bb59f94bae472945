"""The chaos run's real processes on loopback: Temporal, the sandbox, workers and agent hosts.

Every part is its own child process, so the run can SIGKILL any of them: a Temporal dev server
with a db file (restartable on the same port and file), `python -m sandbox`, `python worker.py`
and `python -m bench.chaos_agent`. Their output goes to log files in the run directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import httpx2
from temporalio.client import Client

from config.settings import Settings
from contracts.codec import PayloadKey, encrypted_data_converter
from devtools.devstack import SEARCH_ATTRIBUTE_FLAGS, binary

REPO: Final = Path(__file__).resolve().parent.parent
STOP_SECONDS: Final = 20.0
READY_SECONDS: Final = 90.0


def clean_environment() -> dict[str, str]:
    """Our environment without any of the project's settings (the run sets its own)."""
    return {
        key: value for key, value in os.environ.items() if key.lower() not in Settings.model_fields
    }


@dataclass(kw_only=True)
class Child:
    """One child process with its output in a log file; started again under a new log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        self.log = self.logs / f"{self.name}.{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """What the current process has printed."""
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def all_output(self) -> str:
        """What every start of this child has printed, in order."""
        logs = [self.logs / f"{self.name}.{start}.log" for start in range(1, self.starts + 1)]
        return "".join(log.read_text(errors="replace") for log in logs if log.exists())

    async def wait_for(self, text: str, seconds: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.output():
            if not self.alive:
                raise RuntimeError(f"{self.name} exited before {text!r}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not print {text!r} within {seconds:g}s")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash, an OOM kill, a lost node."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_SECONDS)
        return self.process.returncode


def temporal_child(*, port: int, ui_port: int, db: Path, env: dict[str, str], logs: Path) -> Child:
    argv = [
        binary("temporal"),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(db),
        "--log-level",
        "warn",
    ]
    for flag in SEARCH_ATTRIBUTE_FLAGS:
        argv += ["--search-attribute", flag]
    return Child(name="temporal", argv=argv, env=env, logs=logs)


async def temporal_answers(target: str, key: PayloadKey) -> Client | None:
    """A fresh client when the server answers now (its namespace described), else None."""
    try:
        client = await asyncio.wait_for(
            Client.connect(target, data_converter=encrypted_data_converter(key)), 2.0
        )
        await client.workflow_service.get_system_info(
            _system_info_request(), timeout=timedelta(seconds=1)
        )
    except Exception:  # refused, reset, still starting, namespace not there yet: not back yet
        return None
    return client


def _system_info_request() -> Any:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    return GetSystemInfoRequest()


async def wait_for_temporal(target: str, key: PayloadKey, seconds: float = READY_SECONDS) -> Client:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client = await temporal_answers(target, key)
        if client is not None:
            return client
        await asyncio.sleep(0.1)
    raise RuntimeError(f"Temporal at {target} did not answer within {seconds:g}s")


async def wait_for_sandbox(url: str, child: Child) -> None:
    deadline = time.monotonic() + READY_SECONDS
    async with httpx2.AsyncClient(base_url=url, timeout=1.0) as http:
        while time.monotonic() < deadline:
            if not child.alive:
                raise RuntimeError(f"the sandbox exited:\n{child.output()[-3000:]}")
            try:
                (await http.get("/__sandbox/health")).raise_for_status()
                return
            except httpx2.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the sandbox did not answer in time")


# --- the sandbox's calendar and trial users ----------------------------------------------------


@dataclass(frozen=True)
class Rep:
    user_id: str
    name: str
    timezone: str


EXTRA_REPS: Final = (
    Rep("rep-chaos-1", "Riley Park", "America/New_York"),
    Rep("rep-chaos-2", "Sam Ortiz", "America/New_York"),
    Rep("rep-chaos-3", "Alex Chen", "America/Chicago"),
    Rep("rep-chaos-4", "Jamie Cole", "America/Los_Angeles"),
    Rep("rep-chaos-5", "Morgan Fox", "America/Los_Angeles"),
)


def seed_sandbox(db: Path, *, profiles: dict[str, str]) -> int:
    """Create the sandbox's file with its own seed, then more reps and the calls' trial users.

    One rep has about 70 free slots in the booking horizon; a run of 200 calls needs more. The
    reps and profiles go in before the sandbox process opens the file (it seeds only a new file).
    `profiles` maps trial account ids to emails. Returns the number of reps.
    """
    from sandbox.app import create_app
    from sandbox.chilipiper import LINK_ID, WORK_DAY_END_HOUR, WORK_DAY_START_HOUR

    app = create_app(db_path=str(db))
    app.state.sandbox.state.close()
    with sqlite3.connect(db) as conn:
        for rep in EXTRA_REPS:
            conn.execute(
                "INSERT INTO chilipiper_reps VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    rep.user_id,
                    LINK_ID,
                    rep.name,
                    f"{rep.user_id}@pandadoc.example",
                    rep.timezone,
                    WORK_DAY_START_HOUR,
                    WORK_DAY_END_HOUR,
                ),
            )
        for account, email in profiles.items():
            conn.execute(
                "INSERT INTO amplitude_profiles (user_id, device_id, amp_props, cohort_ids) "
                "VALUES (?, NULL, ?, NULL)",
                (account, _profile_props(email)),
            )
        reps = conn.execute("SELECT COUNT(*) FROM chilipiper_reps").fetchone()[0]
    return int(reps)


def _profile_props(email: str) -> str:
    import json

    return json.dumps(
        {
            "email": email,
            "plan": "Business trial",
            "documents_created": 3,
            "documents_sent": 1,
            "templates_used": 1,
            "features_used": ["editor", "templates"],
        }
    )


# --- vendor faults ------------------------------------------------------------------------------

# All at once, for the whole run: retryable ones only, so every follow-up can finish.
FAULTS: Final[tuple[dict[str, Any], ...]] = (
    # Salesforce: latency on everything, 503s on Task writes, two requests that hang.
    {"vendor": "salesforce", "operation": "*", "latency_ms": 80},
    {"vendor": "salesforce", "operation": "upsert_task", "error_rate": 0.12, "status": 503},
    {"vendor": "salesforce", "operation": "upsert_lead", "hang": True, "times": 2},
    # HubSpot: a rolling rate limit (429 with Retry-After), 503s on calls, hung note writes.
    {"vendor": "hubspot", "operation": "*", "rate_limit": {"limit": 20, "window_seconds": 1.0}},
    {"vendor": "hubspot", "operation": "batch_upsert_contacts", "error_rate": 0.15, "status": 429,
     "headers": {"Retry-After": "1"}},
    {"vendor": "hubspot", "operation": "create_call", "error_rate": 0.1, "status": 503},
    {"vendor": "hubspot", "operation": "create_note", "hang": True, "times": 2},
    # Chili Piper: bookings that commit and then time out (ambiguous), 503s, slow slot reads.
    {"vendor": "chilipiper", "operation": "schedule_simple", "after_commit_latency_ms": 4000,
     "times": 4},
    {"vendor": "chilipiper", "operation": "schedule_simple", "error_rate": 0.04, "status": 503},
    {"vendor": "chilipiper", "operation": "init_simple", "latency_ms": 120},
    # Amplitude: 503s on tracking, slow profile reads.
    {"vendor": "amplitude", "operation": "track", "error_rate": 0.15, "status": 503},
    {"vendor": "amplitude", "operation": "user_profile", "latency_ms": 150},
)  # fmt: skip


async def set_faults(url: str) -> None:
    async with httpx2.AsyncClient(base_url=url, timeout=5.0) as http:
        for spec in FAULTS:
            (await http.post("/__sandbox/faults", json=spec)).raise_for_status()


async def clear_faults(url: str) -> None:
    """Release the hung requests too (they answer 503 and are retried)."""
    async with httpx2.AsyncClient(base_url=url, timeout=5.0) as http:
        (await http.delete("/__sandbox/faults")).raise_for_status()


async def sandbox_state(url: str) -> dict[str, list[dict[str, Any]]]:
    async with httpx2.AsyncClient(base_url=url, timeout=120.0) as http:
        response = await http.get("/__sandbox/state")
        response.raise_for_status()
        state: dict[str, list[dict[str, Any]]] = response.json()
        return state


@dataclass
class Processes:
    """Every child of the run, for the stop at the end."""

    children: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        # Agents first (their relays), then workers, the sandbox, and Temporal last.
        order = sorted(self.children, key=lambda c: _STOP_ORDER.get(c.name.split("-")[0], 9))
        for child in order:
            child.stop()


_STOP_ORDER: Final = {"agent": 0, "worker": 1, "sandbox": 2, "temporal": 3}


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU of a live process (Linux /proc), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_child(name: str, *args: str, env: dict[str, str], logs: Path) -> Child:
    return Child(name=name, argv=[sys.executable, *args], env=env, logs=logs)
