"""Breaker fleet benchmark: K job processes against a hung vendor, per-process vs shared breakers.

Every job process is a real OS process built by the agent's own `prewarm` (vendor clients,
breakers, handoff, VAD). Each plays one caller after another: a short pause, then the tool's
Amplitude read over real HTTP to the sandbox, whose `hang` fault never answers. The phases run
one after another in the same run: today's per-process breakers, the host's SQLite store, and two
"hosts" (process groups) sharing Redis. A first section times the hot path of each store against
the per-process registry in this process.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tests.servers import SandboxServer

# `python bench/breaker_fleet.py` puts bench/ on sys.path, not the repository root.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config.process_exit import exits_cleanly  # noqa: E402

THRESHOLD = 3


@dataclass(frozen=True)
class Phase:
    key: str
    label: str
    hosts: int
    store: str


PHASES = [
    Phase("process", "per-process", 1, "process"),
    Phase("sqlite", "SQLite host", 1, "sqlite"),
    Phase("redis", "Redis", 2, "redis"),
]


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


# --- one job process (the `job` command) ---------------------------------------------------------


async def play_callers(*, host: int, index: int, seconds: float, seed: int) -> list[dict[str, Any]]:
    """Prewarm like LiveKit does, then play callers until `seconds` after the start signal."""
    from livekit.agents import JobExecutorType, JobProcess

    from agent.entrypoint import RUNTIME_KEY, prewarm
    from agent.services import AgentRuntime

    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    prewarm(proc)
    runtime: AgentRuntime = proc.userdata[RUNTIME_KEY]
    await runtime.start_background()
    # A warm job process has made calls before: connection pool, lazy imports, the store link.
    warm = await one_caller(runtime, f"bench-{host}-{index}-warm-up")
    if warm["kind"] != "answer":
        raise RuntimeError(f"the warm-up lookup failed: {warm}")
    print("ready", flush=True)
    start_at = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    rng = random.Random(seed)
    await asyncio.sleep(max(start_at - time.time(), 0) + rng.uniform(0, 1.5))
    records: list[dict[str, Any]] = []
    while time.time() < start_at + seconds:
        records.append(await one_caller(runtime, f"bench-{host}-{index}-{len(records)}"))
        await asyncio.sleep(rng.uniform(0.5, 1.5))  # the caller talks before the next lookup
    await runtime.aclose()
    return records


async def one_caller(runtime: Any, call_id: str) -> dict[str, Any]:
    """One caller's trial-activity lookup, as the tool makes it: what they heard, and when."""
    from livekit.agents import ToolError

    from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
    from devtools.people import DANA

    services = runtime.services_for(call_id=call_id, trialist=DANA)
    breaker = runtime.breakers.get("amplitude")
    reached = False

    async def read() -> object:
        nonlocal reached
        reached = True
        return await services.trial_activity.get_user_profile(DANA.trial_account_id)

    was = breaker.state  # what this process believed as the caller arrived
    began, started = time.time(), time.perf_counter()
    kind = "answer"
    try:
        await services.guard.call("amplitude", read, fallback_kind=FallbackKind.DATA_NOT_FOUND)
    except ToolError as spoken:
        kind = next(k.value for k, lines in FALLBACK_LINES.items() if spoken.message in lines)
    elapsed = time.perf_counter() - started
    return {"at": began, "elapsed": elapsed, "reached": reached, "was": was.label, "kind": kind}


# --- the phases -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HostFigures:
    calls: int
    store_lost: int  # times a job process lost the store and decided alone
    waited_before_open: int
    probes: int
    probes_per_interval: list[int]
    cut: int
    cut_waits: list[float]
    fallbacks_ms: list[float]

    @classmethod
    def of(cls, records: list[dict[str, Any]], *, reset: float, logs: list[str]) -> HostFigures:
        # Waited out the deadline: heard the timeout line (a call cut short hears another).
        waited = [r for r in records if r["reached"] and r["kind"] == "timeout"]
        probes = sorted(r["at"] for r in records if r["reached"] and r["was"] == "half_open")
        cut = [r for r in records if r["reached"] and r["kind"] == "service_unavailable"]
        return cls(
            calls=len(records),
            store_lost=sum("breaker store" in line and "unavailable" in line for line in logs),
            waited_before_open=sum(1 for r in waited if r["was"] == "closed"),
            probes=len(probes),
            probes_per_interval=_per_interval(probes, reset),
            cut=len(cut),
            cut_waits=[r["elapsed"] for r in cut],
            fallbacks_ms=[r["elapsed"] * 1000 for r in records if not r["reached"]],
        )


def _per_interval(starts: list[float], reset: float) -> list[int]:
    """Probes grouped into reset-long windows, each opened by the first probe after the last."""
    windows: list[int] = []
    window_end = -math.inf
    for start in starts:
        if start >= window_end:
            windows.append(0)
            window_end = start + reset
        windows[-1] += 1
    return windows


def run_phase(
    phase: Phase,
    *,
    processes: int,
    seconds: float,
    reset: float,
    deadline: float,
    sandbox: SandboxServer,
    redis_url: str | None,
    workdir: Path,
) -> list[HostFigures]:
    children: list[tuple[int, subprocess.Popen[str], Path]] = []
    for host in range(phase.hosts):
        host_dir = workdir / phase.key / f"host-{host}"
        host_dir.mkdir(parents=True)
        # A host that ran before has its outbox file. Fresh, K processes switching it to WAL at
        # the same instant can fail with "database is locked" (handoff/outbox.py; reported).
        from handoff.outbox import Outbox

        Outbox.in_dir(host_dir).close()
        env = job_env(
            phase, host_dir=host_dir, sandbox_url=sandbox.url, redis_url=redis_url, reset=reset
        )
        env["TOOL_DEADLINE_SECONDS"] = str(deadline)
        for index in range(processes):
            out = host_dir / f"job-{index}.jsonl"
            command = [
                sys.executable,
                __file__,
                "job",
                str(host),
                str(index),
                str(seconds),
                str(out),
            ]
            with (host_dir / f"job-{index}.log").open("w") as log:
                child = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            children.append((host, child, out))
    try:
        for _, child, _ in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a job process failed to prewarm")
        sandbox.add_fault(vendor="amplitude", operation="user_profile", hang=True)
        start_at = time.time() + 1.0
        for _, child, _ in children:
            assert child.stdin is not None
            child.stdin.write(f"{start_at}\n")
            child.stdin.flush()
        for _, child, _ in children:
            if child.wait(timeout=seconds + 60) != 0:
                raise RuntimeError(f"a job process exited with {child.returncode}")
    finally:
        for _, child, _ in children:
            if child.poll() is None:
                child.kill()
        sandbox.reset()  # releases the hung handlers and clears the fault
    by_host: list[list[dict[str, Any]]] = [[] for _ in range(phase.hosts)]
    logs: list[list[str]] = [[] for _ in range(phase.hosts)]
    for host, _, out in children:
        by_host[host].extend(json.loads(line) for line in out.read_text().splitlines() if line)
        logs[host].extend(out.with_suffix(".log").read_text().splitlines())
    figures = [
        HostFigures.of(records, reset=reset, logs=host_logs)
        for records, host_logs in zip(by_host, logs, strict=True)
    ]
    if phase.hosts > 1:  # the fleet as one host too
        merged = [record for records in by_host for record in records]
        figures.append(
            HostFigures.of(
                merged, reset=reset, logs=[line for host_logs in logs for line in host_logs]
            )
        )
    return figures


def job_env(
    phase: Phase, *, host_dir: Path, sandbox_url: str, redis_url: str | None, reset: float
) -> dict[str, str]:
    from tests.servers import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREAKER_", "PROMETHEUS_"))}
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(host_dir),
        SANDBOX_URL=sandbox_url,
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # unused: no call ends during the bench
        BREAKER_STORE=phase.store,
        BREAKER_FAILURE_THRESHOLD=str(THRESHOLD),
        BREAKER_RESET_SECONDS=str(reset),
        LIVEKIT_LOG_LEVEL="WARNING",
    )
    if phase.store == "redis" and redis_url is not None:
        env["BREAKER_REDIS_URL"] = redis_url
    return env


# --- the hot path, in this process ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HotPath:
    closed_overhead_us: float
    open_p50_us: float
    open_p99_us: float


async def measure_hot_path(registry_for: Callable[[], Any], iterations: int) -> HotPath:
    """Guarded minus direct p50 (closed), and time to the fallback (open), interleaved."""
    from livekit.agents import ToolError

    from agent.resilience.guard import RealtimeGuard

    registry = registry_for()
    await registry.start()
    await _until(lambda: registry.link is None or registry.link.shared)
    guard = RealtimeGuard(breakers=registry, rng=random.Random(1))

    async def vendor_read() -> int:
        return 1

    async def down() -> int:
        raise ConnectionResetError

    direct: list[float] = []
    guarded: list[float] = []
    clock = time.perf_counter_ns
    for index in range(iterations):
        started = clock()
        await vendor_read()
        middle = clock()
        await guard.call("amplitude", vendor_read)
        ended = clock()
        direct.append((middle - started) / 1000)
        guarded.append((ended - middle) / 1000)
        if index % 100 == 0:
            await asyncio.sleep(0)
    with suppress(ToolError):
        await guard.call("chilipiper", down)  # threshold 1: opens chilipiper's breaker
    await _until(lambda: registry.get("chilipiper").state.label == "open")
    refused: list[float] = []
    for index in range(iterations):
        started = clock()
        with suppress(ToolError):
            await guard.call("chilipiper", down)
        refused.append((clock() - started) / 1000)
        if index % 100 == 0:
            await asyncio.sleep(0)
    await registry.aclose()
    return HotPath(
        closed_overhead_us=percentile(guarded, 0.5) - percentile(direct, 0.5),
        open_p50_us=percentile(refused, 0.5),
        open_p99_us=percentile(refused, 0.99),
    )


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the breaker store did not answer")
        await asyncio.sleep(0.01)


def hot_path_section(iterations: int, redis_url: str | None, workdir: Path) -> None:
    from prometheus_client import CollectorRegistry

    from agent.resilience.breaker import BreakerRegistry
    from agent.resilience.breaker_store import RedisBreakerStore, SqliteBreakerStore

    def registry(store: Any = None) -> Callable[[], BreakerRegistry]:
        return lambda: BreakerRegistry(
            failure_threshold=1, reset_timeout=3600, registry=CollectorRegistry(), store=store
        )

    stores: list[tuple[str, Callable[[], Any]]] = [
        ("per-process (today)", registry()),
        ("SQLite", registry(SqliteBreakerStore.in_dir(workdir / "hot", timeout=0.05))),
    ]
    if redis_url is not None:
        stores.append(("Redis", registry(RedisBreakerStore(redis_url, timeout=0.05))))

    async def run_all() -> list[HotPath]:
        return [await measure_hot_path(make, iterations) for _, make in stores]

    from bench.realtime import logs_to_memory

    with logs_to_memory():  # formatted as production would, but not onto the terminal
        results = asyncio.run(run_all())
    base = results[0]
    print(f"hot path, {iterations} calls each (in one process, same run):")
    print(f"  {'store':<22}{'closed overhead p50':>22}{'open: fallback p50':>20}{'p99':>10}")
    for (name, _), result in zip(stores, results, strict=True):
        ratio = result.closed_overhead_us / base.closed_overhead_us
        open_ratio = result.open_p50_us / base.open_p50_us
        print(
            f"  {name:<22}{result.closed_overhead_us:>12.2f} µs (x{ratio:.2f})"
            f"{result.open_p50_us:>11.2f} µs (x{open_ratio:.2f}){result.open_p99_us:>7.1f} µs"
        )
    print()


# --- the report -----------------------------------------------------------------------------------


def print_table(
    results: list[tuple[Phase, list[HostFigures]]], *, processes: int, seconds: float, reset: float
) -> None:
    columns: list[tuple[str, HostFigures]] = []
    for phase, figures in results:
        if phase.hosts == 1:
            columns.append((phase.label, figures[0]))
            continue
        for host, host_figures in enumerate(figures[:-1]):
            columns.append((f"{phase.label} host {host + 1}", host_figures))
        columns.append((f"{phase.label} fleet", figures[-1]))
    width = max(22, *(len(name) + 2 for name, _ in columns))
    rows: list[tuple[str, Callable[[HostFigures], str]]] = [
        ("calls", lambda f: str(f.calls)),
        ("store lost by a job process (times)", lambda f: str(f.store_lost)),
        (
            f"waited out the deadline before open (≤ {THRESHOLD})",
            lambda f: str(f.waited_before_open),
        ),
        ("probes (each waits out the deadline)", lambda f: str(f.probes)),
        ("probes per reset interval (1)", lambda f: _intervals(f.probes_per_interval)),
        ("cut short when it opened", lambda f: _cut(f)),
        ("fallback latency p50 / p99", lambda f: _latency(f.fallbacks_ms)),
    ]
    label_width = max(len(label) for label, _ in rows) + 2
    print(
        f"{processes} job processes per host, {seconds:.0f} s, reset {reset:g} s, "
        f"threshold {THRESHOLD}, hung Amplitude (sandbox hang fault); Redis: 2 hosts share it:"
    )
    print(" " * label_width + "".join(f"{name:>{width}}" for name, _ in columns))
    for label, cell in rows:
        print(f"{label:<{label_width}}" + "".join(f"{cell(f):>{width}}" for _, f in columns))


def _intervals(counts: list[int]) -> str:
    if not counts:
        return "none"
    return (
        f"{min(counts)}-{max(counts)} over {len(counts)}"
        if min(counts) != max(counts)
        else (f"{counts[0]} x {len(counts)}")
    )


def _cut(figures: HostFigures) -> str:
    if not figures.cut:
        return "0"
    return f"{figures.cut} (waited p50 {percentile(figures.cut_waits, 0.5):.2f} s)"


def _latency(samples: list[float]) -> str:
    return f"{percentile(samples, 0.5):.3f} / {percentile(samples, 0.99):.3f} ms"


# --- the command line -----------------------------------------------------------------------------

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def bench(
    processes: Annotated[int, typer.Option(min=1, help="Job processes per host (K).")] = 8,
    seconds: Annotated[float, typer.Option(min=5, help="How long each phase plays callers.")] = 60,
    reset: Annotated[float, typer.Option(min=1, help="BREAKER_RESET_SECONDS.")] = 10,
    deadline: Annotated[float, typer.Option(min=0.1, help="TOOL_DEADLINE_SECONDS.")] = 2.5,
    iterations: Annotated[int, typer.Option(min=100, help="Hot-path calls per store.")] = 20_000,
    only: Annotated[list[str] | None, typer.Option(help="Phases: process, sqlite, redis.")] = None,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the job processes' records and logs here.")
    ] = None,
) -> None:
    """Print the hot path per store, then the fleet figures of every phase side by side."""
    chosen = [phase for phase in PHASES if not only or phase.key in only]
    print(f"breaker fleet benchmark (Python {sys.version.split()[0]}, {os.cpu_count()} cores)\n")
    with ExitStack() as stack:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        workdir = keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="breaker-fleet-"))
        )
        redis_url = stack.enter_context(_redis())
        hot_path_section(iterations, redis_url, workdir)
        sandbox = stack.enter_context(_sandbox())
        results = []
        for phase in chosen:
            if phase.store == "redis" and redis_url is None:
                print("(redis-server is not installed: the Redis phase is skipped)")
                continue
            figures = run_phase(
                phase,
                processes=processes,
                seconds=seconds,
                reset=reset,
                deadline=deadline,
                sandbox=sandbox,
                redis_url=redis_url,
                workdir=workdir,
            )
            results.append((phase, figures))
        print_table(results, processes=processes, seconds=seconds, reset=reset)


@contextmanager
def _redis() -> Iterator[str | None]:
    import shutil

    if shutil.which("redis-server") is None:
        yield None
        return
    from tests.agent.breaker_processes import RedisServer

    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def _sandbox() -> Iterator[SandboxServer]:
    from tests.servers import running_sandbox

    with running_sandbox() as sandbox:
        try:
            yield sandbox
        finally:
            sandbox.reset()  # releases any hung handler, so the sandbox stops at once


def job_main(argv: list[str]) -> None:
    import logging

    host, index, seconds, out = int(argv[0]), int(argv[1]), float(argv[2]), Path(argv[3])
    logging.basicConfig(level=logging.WARNING, format="%(created).3f %(levelname)s %(message)s")
    logging.getLogger("agent.resilience").setLevel(logging.INFO)  # the store's comings and goings
    records = asyncio.run(
        play_callers(host=host, index=index, seconds=seconds, seed=host * 100 + index)
    )
    out.write_text("\n".join(json.dumps(record) for record in records))


@exits_cleanly
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "job":
        job_main(sys.argv[2:])
        return
    app()


if __name__ == "__main__":
    main()
