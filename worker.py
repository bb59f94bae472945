"""The Temporal worker process: the follow-ups and the outreach, each on its own task queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import PollerBehaviorAutoscaling, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.follow_up import FollowUpActivities
from activities.outreach import OutreachActivities
from config.clock import Clock, system_clock
from config.encryption import EncryptionSetupError
from config.log_redaction import install_refused_input_filter
from config.process_exit import exits_cleanly
from config.settings import VENDORS, Settings, VendorMode, get_settings
from config.temporal import (
    MetricsPortError,
    NamespaceMissingError,
    TemporalConnectError,
    TemporalSetupError,
    cache_workflow_bytecode,
    check_namespace,
    check_search_attributes,
    connect,
    prometheus_runtime,
)
from contracts import SEARCH_ATTRIBUTES
from integrations.clients import VendorClients, build_vendor_clients
from integrations.livekit import LiveKitClient
from workflows.dial_slots import DialSlotsWorkflow
from workflows.follow_up import CallFollowUpWorkflow
from workflows.outreach import OutreachWorkflow

logger = logging.getLogger("trialist.worker")
T = TypeVar("T")

WORKER_IDENTITY_PREFIX = "trialist-worker"
# Between reconnects while Temporal is down: doubling from the first to the last, forever.
OUTAGE_INITIAL_WAIT = 0.5
OUTAGE_MAX_WAIT = 15.0
# A namespace still missing after this many checks, one outage wait apart, is a misconfiguration.
NAMESPACE_CHECKS = 4
# What no reconnect fixes: the server refused who we are or what we asked for.
FATAL_STATUSES = frozenset(
    {RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.INVALID_ARGUMENT}
)
# See follow_up_worker and docs/worker.md ("Worker options for a caller who is waiting").
STICKY_TIMEOUT: Final = timedelta(seconds=3)
# How often start-up checks whether the worker finished validating and began polling.
READY_POLL_SECONDS = 0.02


class WorkerStartError(Exception):
    """The worker could not start polling; the message says why."""


def build_worker(
    client: Client, settings: Settings, *, clients: VendorClients, task_queue: str | None = None
) -> Worker:
    """The production worker: the follow-up workflow and its activities on the follow-up queue."""
    activities = FollowUpActivities(clients=clients).activity_methods()
    return follow_up_worker(client, settings, activities=activities, task_queue=task_queue)


# The follow-up's pure helper modules: tables, dataclasses and functions with no module state, no
# clock, no randomness and no I/O. They are shared by every workflow run instead of re-imported
# into each run's sandbox; the workflow class and the modules that hold a run's state stay
# sandboxed. Re-importing them cost the worker about 15 ms of CPU per follow-up
# (bench/follow_up_throughput.py, same load, worker CPU per no-vendor-I/O follow-up: 98-101 ms
# re-imported, 87-92 ms passed through, 79-85 ms for the bare workflow).
FOLLOW_UP_PASSED_THROUGH: Final = (
    "workflows.follow_up_steps",
    "workflows.step_errors",
    "workflows.follow_up_details",
    "workflows.messages",
    "workflows.promises",
)


def follow_up_runner() -> SandboxedWorkflowRunner:
    """The sandbox CallFollowUpWorkflow runs in (the worker, the tests' workers, the replayer)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*FOLLOW_UP_PASSED_THROUGH)
    )


def follow_up_worker(
    client: Client,
    settings: Settings,
    *,
    activities: Sequence[Callable[..., Any]],
    task_queue: str | None = None,
) -> Worker:
    """CallFollowUpWorkflow on `activities`, with the production worker's options.

    `build_worker` passes the real activities; the throughput benchmark passes stand-ins, so both
    share every option.
    """
    role = settings.worker_role
    if role != "activities":
        cache_workflow_bytecode([CallFollowUpWorkflow])
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=[] if role == "activities" else [CallFollowUpWorkflow],
        # A workflows-only worker still holds the activities: it runs the in-call booking as a
        # local activity, in the workflow task, and takes no activity task from the queue.
        activities=activities,
        no_remote_activities=role == "workflows",
        workflow_runner=follow_up_runner(),
        # Temporal's recommended poller setting: as many polls as the server's backlog calls for.
        # For activities too: an activities-only worker gets none by eager dispatch, and with
        # the SDK's fixed five polls a post-call step waited p50 14 s to start in bench/chaos.py
        # (p50 2.5 s autoscaled; docs/worker.md).
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        # A SIGKILLed worker's cached follow-ups wait this long before another worker takes their
        # workflow tasks (the SDK's 10 s would outlast a caller's booking wait several times).
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
    )


def build_outreach_worker(
    client: Client,
    settings: Settings,
    *,
    clients: VendorClients,
    livekit: LiveKitClient,
    task_queue: str | None = None,
) -> Worker:
    """Outreach and its dial slots on their own queue: a backlog of outreach bookkeeping never
    delays a follow-up's in-call work (book_meeting waits for a worker on the follow-up queue)."""
    queue = task_queue or settings.outreach_task_queue
    activities = OutreachActivities(clients=clients, livekit=livekit, task_queue=queue)
    cache_workflow_bytecode([OutreachWorkflow, DialSlotsWorkflow])
    return Worker(
        client,
        task_queue=queue,
        workflows=[OutreachWorkflow, DialSlotsWorkflow],
        activities=activities.activity_methods(),
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
    )


def livekit_client(settings: Settings) -> LiveKitClient:
    """The LiveKit API client outreach dials through: a real server, or the sandbox emulator."""
    key, secret = settings.livekit_credentials
    return LiveKitClient(
        url=settings.livekit_api_base_url, api_key=key, api_secret=SecretStr(secret)
    )


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[], object] | None = None,
    clock: Clock = system_clock,
) -> None:
    """Connect, serve follow-ups until `stop` is set (or SIGTERM/SIGINT when `stop` is None).

    `clock` is where the activities' calendar searches start (a pinned one in tests).

    Raises TemporalConnectError, TemporalSetupError, MetricsPortError, WorkerStartError or
    EncryptionSetupError (no payload key: the worker never runs unencrypted).
    """
    if stop is not None:
        await _run(settings, stop=stop, ready=ready, clock=clock)
        return
    stop = asyncio.Event()
    signals = _stop_on_signals(stop, settings.worker_shutdown_grace_seconds)
    try:
        await _run(settings, stop=stop, ready=ready, clock=clock)
    finally:
        for signum in signals:
            asyncio.get_running_loop().remove_signal_handler(signum)


async def _run(
    settings: Settings, *, stop: asyncio.Event, ready: Callable[[], object] | None, clock: Clock
) -> None:
    """Serve until `stop`, riding out Temporal outages: transient failures at start-up or later
    mean waiting (bounded, doubling) and connecting again; only a misconfiguration raises."""
    runtime = _metrics_runtime(settings)
    clients = build_vendor_clients(settings, clock=clock)
    livekit = livekit_client(settings)
    outage = OutageBackoff()
    try:
        while not stop.is_set():
            try:
                client = await _unless_stopped(_connect_checked(settings, runtime, outage), stop)
                if client is None:
                    logger.info("stopped before the worker was ready")
                    return
                await _serve_both(client, settings, clients, livekit, stop, ready, outage)
                if stop.is_set():
                    return
            except Exception as error:
                if _is_fatal(error, outage):
                    raise
                wait = outage.next()
                logger.warning(
                    "Temporal is unavailable (%s); the worker connects again in %.1fs",
                    _short(error),
                    wait,
                )
                await _wait_or_stop(stop, wait)
    finally:
        await livekit.aclose()
        await clients.aclose()


async def _serve_both(
    client: Client,
    settings: Settings,
    clients: VendorClients,
    livekit: LiveKitClient,
    stop: asyncio.Event,
    ready: Callable[[], object] | None,
    outage: OutageBackoff,
) -> None:
    """The follow-up worker, and beside it the outreach worker for as long as it runs."""
    worker = build_worker(client, settings, clients=clients)
    outreach = build_outreach_worker(client, settings, clients=clients, livekit=livekit)
    outreach_run = asyncio.create_task(outreach.run(), name="temporal-outreach-worker")
    try:
        await _serve(worker, settings=settings, stop=stop, ready=ready, outage=outage)
    finally:
        if not outreach_run.done():
            await outreach.shutdown()
        with contextlib.suppress(Exception):
            await outreach_run


class OutageBackoff:
    """How long the worker waits between reconnects: doubling, capped, reset once it serves."""

    def __init__(self) -> None:
        self.failures = 0
        self.missing_namespace = 0

    def next(self) -> float:
        self.failures += 1
        wait: float = min(OUTAGE_INITIAL_WAIT * 2.0 ** (self.failures - 1), OUTAGE_MAX_WAIT)
        return wait

    def served(self) -> None:
        self.failures = 0
        self.missing_namespace = 0


def _is_fatal(error: BaseException, outage: OutageBackoff) -> bool:
    """A misconfiguration no reconnect can fix; everything else is an outage to wait out."""
    if isinstance(error, MetricsPortError | EncryptionSetupError):
        return True
    if isinstance(error, NamespaceMissingError):
        # A restarting server can miss its namespaces for a moment; a healthy one never does.
        outage.missing_namespace += 1
        return outage.missing_namespace >= NAMESPACE_CHECKS
    if isinstance(error, TemporalSetupError):
        return True  # search attributes missing on a server that answers
    if isinstance(error, TemporalConnectError):
        cause = error.cause
        return isinstance(cause, RPCError) and cause.status in FATAL_STATUSES
    return False


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"


async def _connect_checked(
    settings: Settings, runtime: Runtime | None, outage: OutageBackoff
) -> Client:
    identity = f"{WORKER_IDENTITY_PREFIX}@{socket.gethostname()}"
    client = await connect(settings, runtime=runtime, identity=identity)
    await check_namespace(client)
    outage.missing_namespace = 0
    await check_search_attributes(client, SEARCH_ATTRIBUTES)
    return client


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """The result of `work`, or None when `stop` is set first (start-up retries are cut short)."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _serve(
    worker: Worker,
    *,
    settings: Settings,
    stop: asyncio.Event,
    ready: Callable[[], object] | None,
    outage: OutageBackoff,
) -> None:
    run = asyncio.create_task(worker.run(), name="temporal-worker")
    stopping = asyncio.create_task(stop.wait(), name="worker-stop")
    try:
        # The SDK exposes no "started" event; is_running turns true once its namespace check passed.
        while not worker.is_running and not run.done():  # noqa: ASYNC110
            await asyncio.sleep(READY_POLL_SECONDS)
        if run.done():
            raise WorkerStartError(f"the worker stopped while starting: {run.exception()}")
        logger.info("%s", ready_line(settings))
        outage.served()
        if ready is not None:
            ready()
        done, _ = await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if run in done:
            run.result()  # a fatal worker error surfaces here
            return
        logger.info(
            "shutting down: no new tasks; running activities get up to %gs to finish",
            settings.worker_shutdown_grace_seconds,
        )
    finally:
        stopping.cancel()
        if not run.done():  # stopped, or our caller was cancelled: shut down gracefully either way
            await worker.shutdown()
            await run
    logger.info("worker stopped")


def ready_line(settings: Settings) -> str:
    """What the worker serves, without secrets: address, namespace, queue, vendor modes."""
    modes = " ".join(f"{vendor}={settings.vendor_mode(vendor).value}" for vendor in VENDORS)
    sandbox = any(settings.vendor_mode(vendor) is VendorMode.SANDBOX for vendor in VENDORS)
    parts = [
        f"worker ready: temporal={settings.temporal_target}",
        f"namespace={settings.temporal_namespace}",
        f"task_queue={settings.temporal_task_queue}",
        f"role={settings.worker_role}",
        f"outreach_queue={settings.outreach_task_queue}",
        f"vendors: {modes}",
    ]
    if sandbox:
        parts.append(f"sandbox={settings.sandbox_base_url}")
    port = settings.worker_metrics_port
    metrics = f"http://{settings.worker_metrics_host}:{port}/metrics" if port else "off"
    parts.append(f"metrics={metrics}")
    return " ".join(parts)


def _metrics_runtime(settings: Settings) -> Runtime | None:
    if settings.worker_metrics_port == 0:
        return None
    return prometheus_runtime(settings.worker_metrics_port, host=settings.worker_metrics_host)


def _stop_on_signals(stop: asyncio.Event, grace_seconds: float) -> tuple[signal.Signals, ...]:
    loop = asyncio.get_running_loop()

    def request_stop(signum: signal.Signals) -> None:
        if stop.is_set():
            logger.info("%s again: already shutting down (grace %gs)", signum.name, grace_seconds)
            return
        logger.info("%s received", signum.name)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, request_stop, signum)
    return signals


@exits_cleanly
def main() -> None:
    """`python worker.py`: serve until SIGTERM/SIGINT; a start-up error exits 1 with one line."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The SDK logs an undecodable signal with pydantic's error, which quotes the refused input.
    install_refused_input_filter()
    settings = get_settings()
    try:
        asyncio.run(run_worker(settings))
    except (
        TemporalConnectError,
        TemporalSetupError,
        MetricsPortError,
        WorkerStartError,
        EncryptionSetupError,
    ) as error:
        raise SystemExit(f"worker: {error}") from None


if __name__ == "__main__":
    main()
