"""Chaos run: many scripted calls through real processes while everything around them fails.

Run `python bench/chaos.py --n 200`. It prints figures; it is not a test (tests/e2e/test_chaos.py
runs it small and checks the verdicts). Real processes on loopback: a Temporal dev server with
a db file, the vendor sandbox, two workers on one task queue, and agent processes
(bench/chaos_agent.py) that play scripted calls through the real agent session, tools,
checkpoints and handoff; only the LLM is a stand-in (scripted, labelled as such). Agent processes
share one outbox file, as LiveKit job processes on one host do.

In one run: vendor faults (503s, 429s with Retry-After, latency, hung requests, bookings that
commit and then time out), each worker SIGKILLed once and restarted, Temporal SIGKILLed and
restarted once on the same port and db file after an outage during which calls book and hang
up, and agent processes SIGKILLed mid-call. Then it checks, from the sandbox's records and
Temporal, that every call reached the CRM exactly once and that no promise was silently broken.
The last line is the verdict.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

if __package__ in (None, ""):  # `python bench/chaos.py`: the repository is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_calls import CallPlan, plan_calls
from bench.chaos_checks import CallJournal, OutboxRow, call_journals
from bench.chaos_plan import OUTAGE_GATE, START_GATE, AgentPlan, PlannedCall, read_journal
from bench.chaos_report import Observed, print_header, report
from bench.chaos_stack import (
    REPO,
    Child,
    Processes,
    clean_environment,
    clear_faults,
    cpu_seconds,
    python_child,
    sandbox_state,
    seed_sandbox,
    set_faults,
    temporal_child,
    wait_for_sandbox,
    wait_for_temporal,
)
from bench.chaos_temporal import follow_ups, take_slots, task_timings
from config.process_exit import exits_cleanly
from config.settings import Settings
from contracts.codec import PayloadKey
from integrations.chilipiper import ChiliPiperGuest
from integrations.clients import build_vendor_clients

AGENT_READY = "chaos agent ready"
WORKER_READY = "worker ready:"
WORKER_DOWN_SECONDS = 3.0
KILL_MIN_IN_FLIGHT = 2  # an agent kill waits (a while) for this many calls mid-call
KILL_WAIT_SECONDS = 15.0
POLL_SECONDS = 1.0
CPU_SAMPLE_SECONDS = 2.0


@dataclass(frozen=True, kw_only=True)
class Options:
    n: int
    agents: int
    agent_kills: int
    outage_seconds: float
    liveness_seconds: float
    ramp_seconds: float
    grace_seconds: float
    checkpoint_interval: float
    seed: int
    keep: bool
    # What goes down mid-run: "temporal" (SIGKILLed, restarted on its db file) or "workers" (both
    # SIGKILLed, Temporal stays up: the post-call backlog builds on a warm server instead).
    outage_of: str = "temporal"
    # Each of the two workers runs the workflows (and the in-call booking, a local activity)
    # only, and two more processes run the activities (WORKER_ROLE).
    split_workers: bool = False

    @property
    def down_name(self) -> str:
        return "Temporal" if self.outage_of == "temporal" else "the workers"

    @property
    def was(self) -> str:
        return "was" if self.outage_of == "temporal" else "were"

    @property
    def return_name(self) -> str:
        return "Temporal's return" if self.outage_of == "temporal" else "the workers' return"

    @property
    def outage_at(self) -> float:
        return max(16.0, 0.45 * self.ramp_seconds)

    def agent_settings(self) -> dict[str, str]:
        return {
            "FOLLOW_UP_LIVENESS_SECONDS": f"{self.liveness_seconds:g}",
            "CHECKPOINT_INTERVAL_SECONDS": f"{self.checkpoint_interval:g}",
            "CHECKPOINT_KEEPALIVE_SECONDS": "5",
            "OUTBOX_RELAY_INTERVAL_SECONDS": "1",
            "FOLLOW_UP_ALTERNATIVE_WINDOW_MINUTES": "30",
        }


@dataclass
class AgentHost:
    """One agent host: its current process, and the calls its processes were given."""

    letter: str
    calls: list[PlannedCall]
    child: Child | None = None
    journals: list[Path] = field(default_factory=list)
    generation: int = 0
    killed: int = 0


@dataclass(frozen=True)
class Kill:
    host: str
    pid: int
    at: float
    in_flight: tuple[str, ...]


@dataclass
class Run:
    """Everything the run started and saw."""

    options: Options
    root: Path
    key: PayloadKey
    target: str
    sandbox_url: str
    processes: Processes
    temporal: Child
    workers: list[Child]
    base_env: dict[str, str]
    plan: CallPlan | None = None
    hosts: list[AgentHost] = field(default_factory=list)
    start: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    worker_kills: int = 0
    server_restarts: int = 0
    down_at: float | None = None
    back_at: float | None = None
    cpu: dict[tuple[str, int], float] = field(default_factory=dict)  # (child, start) -> CPU-s
    waiting_at_return: set[int] = field(default_factory=set)
    taken: int = 0
    temporal_startup: float = 0.0  # seconds from launch to answering, the first time

    @property
    def gates(self) -> Path:
        return self.root / "gates"

    @property
    def outbox_file(self) -> Path:
        return self.root / "agent-host" / "outbox.db"

    def note(self, text: str) -> None:
        self.events.append((time.time(), text))

    def journal_entries(self) -> list[dict[str, Any]]:
        return [
            entry for host in self.hosts for path in host.journals for entry in read_journal(path)
        ]

    def bench_settings(self) -> Settings:
        return Settings(
            _env_file=None,
            sandbox_url=self.sandbox_url,
            salesforce_base_url=None,
            hubspot_base_url=None,
            chilipiper_base_url=None,
            amplitude_base_url=None,
            amplitude_profile_base_url=None,
        )


# --- starting the stack ---------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_stack(options: Options, root: Path) -> Run:
    logs = root / "logs"
    logs.mkdir(parents=True)
    (root / "gates").mkdir()
    key = PayloadKey.generate("chaos")
    port, sandbox_port = _free_port(), _free_port()
    target, sandbox_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    env = clean_environment() | {
        "PYTHONPATH": str(REPO),
        "TEMPORAL_ADDRESS": target,
        "SANDBOX_URL": sandbox_url,
        "PAYLOAD_ENCRYPTION_KEY": key.to_base64(),
        "PAYLOAD_ENCRYPTION_KEY_ID": key.id,
    }
    processes = Processes()
    temporal = processes.add(
        temporal_child(port=port, ui_port=_free_port(), db=root / "temporal.db", env=env, logs=logs)
    )
    temporal.start()
    temporal_started = time.monotonic()
    await wait_for_temporal(target, key)
    startup = time.monotonic() - temporal_started
    db = root / "sandbox.db"
    reps = seed_sandbox(db, profiles=_profiles(options.n))
    sandbox = processes.add(
        python_child(
            "sandbox", "-m", "sandbox", "--port", str(sandbox_port), "--db", str(db),
            env=env, logs=logs,
        )
    )  # fmt: skip
    sandbox.start()
    await wait_for_sandbox(sandbox_url, sandbox)
    role = "workflows" if options.split_workers else "all"
    workers = [_worker(processes, env, root, logs, number, role) for number in (1, 2)]
    activity_workers = (
        [_worker(processes, env, root, logs, number, "activities") for number in (3, 4)]
        if options.split_workers
        else []
    )
    run = Run(
        options=options, root=root, key=key, target=target, sandbox_url=sandbox_url,
        processes=processes, temporal=temporal, workers=workers, base_env=env,
        temporal_startup=startup,
    )  # fmt: skip
    run.plan = await _plan(run, reps)
    # Held by other guests before any call: the calls that ask for them book during the outage,
    # so their follow-ups find them taken only after the caller was told the invite will follow.
    run.taken = await take_slots(run.bench_settings(), run.plan.take)
    run.note(f"{run.taken} bookings by other guests hold the slots of the contended calls")
    for worker in workers + activity_workers:
        await worker.wait_for(WORKER_READY)
    return run


def _profiles(n: int) -> dict[str, str]:
    from bench.chaos_calls import trialist

    people = [trialist(index) for index in range(n)]
    return {person.trial_account_id: str(person.email) for person in people}


def _worker(
    processes: Processes, env: dict[str, str], root: Path, logs: Path, number: int, role: str
) -> Child:
    worker_env = env | {
        "WORKER_ROLE": role,
        "DATA_DIR": str(root / f"worker-{number}"),
        "WORKER_METRICS_PORT": "0",
        "WORKER_CONNECT_ATTEMPTS": "60",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "2",
        # Shorter than the bookings' commit-then-timeout fault, so those are ambiguous.
        "HTTP_READ_TIMEOUT_SECONDS": "3",
    }
    child = processes.add(
        python_child(f"worker-{number}", str(REPO / "worker.py"), env=worker_env, logs=logs)
    )
    child.start()
    return child


async def _plan(run: Run, reps: int) -> CallPlan:
    settings = run.bench_settings()
    clients = build_vendor_clients(settings)
    guest = ChiliPiperGuest(
        email="planner@chaos-bench.example", first_name="Chaos", last_name="Planner",
        timezone="America/New_York",
    )  # fmt: skip
    try:
        free = await clients.chilipiper.find_free_slots(guest, timezone="America/New_York")
    finally:
        await clients.aclose()
    options = run.options
    return plan_calls(
        n=options.n,
        run_tag=uuid.uuid4().hex[:6],
        slots=list(free.slots),
        now=datetime.now(UTC),
        reps=reps,
        ramp_seconds=options.ramp_seconds,
        outage_at=options.outage_at,
        seed=options.seed,
    )


async def start_agents(run: Run) -> None:
    """Hosts a, b, ...: host a plays the calls that book during the outage and is never killed."""
    assert run.plan is not None
    hosts = [AgentHost(letter=chr(ord("a") + i), calls=[]) for i in range(run.options.agents)]
    ordinary = [call for call in run.plan.calls if call.call_id not in run.plan.gated]
    hosts[0].calls += [call for call in run.plan.calls if call.call_id in run.plan.gated]
    for index, call in enumerate(ordinary):
        hosts[index % len(hosts)].calls.append(call)
    run.hosts = hosts
    for host in hosts:
        _launch(run, host, host.calls)
    for host in hosts:
        assert host.child is not None
        await host.child.wait_for(AGENT_READY)


def _launch(run: Run, host: AgentHost, calls: list[PlannedCall]) -> None:
    host.generation += 1
    stem = f"agent-{host.letter}{host.generation}"
    plan = run.root / f"{stem}.plan.json"
    plan.write_text(AgentPlan(calls=calls).model_dump_json())
    journal = run.root / f"{stem}.journal.jsonl"
    host.journals.append(journal)
    env = run.base_env | {"DATA_DIR": str(run.root / "agent-host")} | run.options.agent_settings()
    host.child = run.processes.add(
        python_child(
            stem, "-m", "bench.chaos_agent", "--plan", str(plan), "--journal", str(journal),
            "--gates", str(run.gates), env=env, logs=run.root / "logs",
        )
    )  # fmt: skip
    host.child.start()


def open_gate(run: Run, name: str, text: str = "") -> None:
    staged = run.gates / f".{name}"
    staged.write_text(text)
    staged.rename(run.gates / name)  # atomic: a reader never sees half of it


# --- the faults on a timeline ---------------------------------------------------------------------


async def at(run: Run, offset: float) -> None:
    await asyncio.sleep(max(0.0, run.start + offset - time.time()))


async def kill_worker(run: Run, index: int) -> None:
    worker = run.workers[index]
    worker.kill()
    run.worker_kills += 1
    run.note(f"{worker.name} SIGKILLed")
    await asyncio.sleep(WORKER_DOWN_SECONDS)
    worker.start()
    run.note(f"{worker.name} restarted")


def in_flight(run: Run, host: AgentHost) -> list[str]:
    """The host's calls that have begun, said something, and not ended."""
    if not host.journals:
        return []
    entries = read_journal(host.journals[-1])
    spoken = {e["call"] for e in entries if e["event"] == "said"}
    ended = {e["call"] for e in entries if e["event"] == "ended"}
    return sorted(spoken - ended)


async def kill_agent(run: Run) -> None:
    """SIGKILL the host with the most calls in flight; a new process takes the calls that had
    not started, as a new LiveKit host would take new dispatches. Host a, which plays the calls
    that book during the outage, is spared until the outage is over."""
    hosts = run.hosts if run.back_at is not None else run.hosts[1:]
    candidates = [host for host in hosts if host.child is not None and host.child.alive]
    if not candidates:
        return
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while True:
        host = max(candidates, key=lambda h: len(in_flight(run, h)) - 100 * h.killed)
        if len(in_flight(run, host)) >= KILL_MIN_IN_FLIGHT or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert host.child is not None and host.child.process is not None
    pid = host.child.process.pid
    host.child.kill()
    killed_at = time.time()
    entries = read_journal(host.journals[-1])
    started = {e["call"] for e in entries if e["event"] == "start"}
    ended = {e["call"] for e in entries if e["event"] == "ended"}
    flying = tuple(sorted(started - ended))
    run.kills.append(Kill(host=f"agent-{host.letter}{host.generation}", pid=pid, at=killed_at,
                          in_flight=flying))  # fmt: skip
    host.killed += 1
    run.note(f"agent-{host.letter}{host.generation} SIGKILLed with {len(flying)} calls in flight")
    remaining = [call for call in host.calls if call.call_id not in started]
    host.calls = remaining
    _launch(run, host, remaining)


async def outage(run: Run) -> None:
    """Temporal SIGKILLed while calls book and hang up, then back on the same port and db file.

    It is launched early by its own start-up time, so it answers about `outage_seconds` after
    the kill.
    """
    run.temporal.kill()
    run.down_at = time.time()
    run.note("Temporal SIGKILLed")
    open_gate(run, OUTAGE_GATE)
    relaunch = run.down_at + run.options.outage_seconds - run.temporal_startup
    await asyncio.sleep(max(0.0, relaunch - time.time()))
    run.temporal.start()
    run.server_restarts += 1
    await wait_for_temporal(run.target, run.key)
    run.back_at = time.time()
    run.waiting_at_return = _pending_ids(run.outbox_file)
    run.note(f"Temporal back ({len(run.waiting_at_return)} messages waiting in the outbox)")


async def worker_outage(run: Run) -> None:
    """Both workers SIGKILLed while calls book and hang up, Temporal up, then both restarted.

    The follow-ups of the calls that end meanwhile wait at the server, so the workers come back
    to a deep post-call backlog on a server that never restarted.
    """
    for worker in run.workers:
        worker.kill()
    run.down_at = time.time()
    run.note("both workers SIGKILLed (Temporal stays up)")
    open_gate(run, OUTAGE_GATE)
    await asyncio.sleep(run.options.outage_seconds)
    for worker in run.workers:
        worker.start()
    run.back_at = time.time()
    run.waiting_at_return = _pending_ids(run.outbox_file)
    run.note(f"workers back ({len(run.waiting_at_return)} messages waiting in the outbox)")


def _pending_ids(path: Path) -> set[int]:
    if not path.exists():
        return set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id FROM outbox WHERE delivered_at IS NULL").fetchall()
    return {int(row[0]) for row in rows}


def outbox_rows(path: Path) -> list[OutboxRow]:
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT id, kind, call_id, created_at, delivered_at, last_error FROM outbox"
        ).fetchall()
    return [OutboxRow(*row) for row in rows]


async def timeline(run: Run) -> None:
    """The faults, in order, spread over the calls."""
    options = run.options
    ramp, outage_at = options.ramp_seconds, options.outage_at
    await at(run, 0.25 * outage_at)
    await kill_worker(run, 0)
    if options.agent_kills >= 1:
        await at(run, 0.7 * outage_at)
        await kill_agent(run)
    await at(run, outage_at)
    await (outage(run) if options.outage_of == "temporal" else worker_outage(run))
    back = (run.back_at or time.time()) - run.start
    await at(run, back + max(4.0, 0.08 * ramp))
    await kill_worker(run, 1)
    for number in range(1, options.agent_kills):
        await at(run, back + max(7.0, 0.15 * ramp) + 6.0 * (number - 1))
        await kill_agent(run)


async def sample_cpu(run: Run) -> None:
    """Each child's CPU time every few seconds (a killed one keeps its last reading)."""
    while True:
        for child in run.processes.children:
            if child.alive and child.process is not None:
                used = cpu_seconds(child.process.pid)
                if used is not None:
                    run.cpu[(child.name, child.starts)] = used
        await asyncio.sleep(CPU_SAMPLE_SECONDS)


# --- waiting for the calls and their follow-ups ---------------------------------------------------


def journals_now(run: Run) -> dict[str, CallJournal]:
    assert run.plan is not None
    journals = call_journals(run.plan.calls, run.journal_entries())
    for kill in run.kills:
        for call_id in kill.in_flight:
            journals[call_id].killed_at = kill.at
    return journals


def calls_settled(run: Run) -> bool:
    journals = journals_now(run)
    return all(j.ended_at is not None or j.killed_at is not None for j in journals.values())


async def wait_for_calls(run: Run, timeline_task: asyncio.Task[None]) -> None:
    while not (timeline_task.done() and calls_settled(run)):
        if timeline_task.done() and timeline_task.exception() is not None:
            return
        await asyncio.sleep(POLL_SECONDS)
    run.note("every call has ended or lost its agent")


async def wait_for_follow_ups(run: Run, expected: set[str]) -> float:
    """Until the expected calls' follow-ups exist, every follow-up has closed and the outbox is
    empty, or the deadline."""
    deadline = time.time() + run.options.liveness_seconds + run.options.grace_seconds
    client = await wait_for_temporal(run.target, run.key)
    while time.time() < deadline:
        listed = await follow_ups(client, query=False)
        closed = all(f.status != "RUNNING" for f in listed.values())
        if closed and expected <= listed.keys() and not _pending_ids(run.outbox_file):
            break
        await asyncio.sleep(2.0)
    run.note("follow-ups settled (or the deadline passed)")
    return deadline


async def chaos(options: Options) -> int:
    began = time.time()
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    run: Run | None = None
    try:
        print_header(options)
        run = await start_stack(options, root)
        sampler = asyncio.create_task(sample_cpu(run))
        await start_agents(run)
        await set_faults(run.sandbox_url)
        run.start = time.time() + 1.0
        open_gate(run, START_GATE, repr(run.start))
        run.note("calls start")
        timeline_task = asyncio.create_task(timeline(run))
        await wait_for_calls(run, timeline_task)
        await timeline_task
        journals = journals_now(run)
        expected = {c for c, j in journals.items() if j.started and not j.killed_unheard}
        await wait_for_follow_ups(run, expected)
        client = await wait_for_temporal(run.target, run.key)
        listed = await follow_ups(client, query=True)
        timings = await task_timings(client, sorted(listed))
        await clear_faults(run.sandbox_url)
        state = await sandbox_state(run.sandbox_url)
        sampler.cancel()
        run.processes.stop_all()  # before the figures: their CPU time is counted once reaped
        observed = Observed(
            journals=journals_now(run),
            follow_ups=listed,
            timings=timings,
            state=state,
            outbox=outbox_rows(run.outbox_file),
            logs={child.name: child.all_output() for child in run.processes.children},
        )
        code = report(run, observed, began=began, load_before=load_before)
    finally:
        if run is not None:
            run.processes.stop_all()
        if options.keep or run is None:
            print(f"run directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return code


def main(
    n: Annotated[int, typer.Option(help="Calls in the run.")] = 200,
    agents: Annotated[int, typer.Option(help="Agent processes (hosts).")] = 4,
    agent_kills: Annotated[int, typer.Option(help="Agent processes SIGKILLed mid-call.")] = 2,
    outage_seconds: Annotated[float, typer.Option(help="How long Temporal stays down.")] = 25.0,
    liveness_seconds: Annotated[float, typer.Option(help="FOLLOW_UP_LIVENESS_SECONDS.")] = 20.0,
    ramp_seconds: Annotated[
        float | None, typer.Option(help="Calls start over this long (default: n * 0.45 s).")
    ] = None,
    grace_seconds: Annotated[
        float, typer.Option(help="After the last call, how long follow-ups may take.")
    ] = 150.0,
    checkpoint_interval: Annotated[
        float, typer.Option(help="CHECKPOINT_INTERVAL_SECONDS of the agents.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the call mix.")] = 13,
    keep: Annotated[bool, typer.Option(help="Keep the run directory (logs, journals).")] = False,
    outage_of: Annotated[
        str,
        typer.Option(
            help="What goes down mid-run: 'temporal' (the issue's run) or 'workers' (both "
            "workers, Temporal up: a deep post-call backlog on a warm server)."
        ),
    ] = "temporal",
    split_workers: Annotated[
        bool,
        typer.Option(
            help="The two workers run the workflows and the in-call booking only "
            "(WORKER_ROLE=workflows); two more processes run the activities."
        ),
    ] = False,
) -> None:
    """Chaos run (prints figures, not a test)."""
    if n < 4 or agents < 2 or not 0 <= agent_kills <= 4:
        raise typer.BadParameter("need n >= 4, agents >= 2 and 0 <= agent-kills <= 4")
    if outage_of not in ("temporal", "workers"):
        raise typer.BadParameter("--outage-of is 'temporal' or 'workers'")
    options = Options(
        n=n, agents=agents, agent_kills=agent_kills, outage_seconds=outage_seconds,
        liveness_seconds=liveness_seconds, ramp_seconds=ramp_seconds or max(30.0, 0.45 * n),
        grace_seconds=grace_seconds, checkpoint_interval=checkpoint_interval, seed=seed,
        keep=keep, outage_of=outage_of, split_workers=split_workers,
    )  # fmt: skip
    code = asyncio.run(chaos(options))
    raise SystemExit(code)


@exits_cleanly
def cli() -> None:
    # The vendor clients' retries and the SDK would log at WARNING; the figures say what matters.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    typer.run(main)


if __name__ == "__main__":
    cli()
