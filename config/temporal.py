"""One way to reach Temporal: the encrypting converter, start-up retries, set-up checks, metrics."""

from __future__ import annotations

import asyncio
import compileall
import logging
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Final

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from config.encryption import data_converter_for
from config.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_RETRY_DELAY_SECONDS: Final = 0.5
MAX_RETRY_DELAY_SECONDS: Final = 5.0
# Bounds one TCP/TLS handshake, so a black-holed address fails an attempt instead of hanging.
CONNECT_TIMEOUT: Final = timedelta(seconds=5)
HOW_TO_START: Final = "start it with `make dev` or set TEMPORAL_ADDRESS"

# Statuses that mean "not up yet" and are worth another attempt; others (auth, bad TLS) are not.
_RETRYABLE_STATUSES: Final = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNKNOWN}
)


class TemporalConnectError(Exception):
    """Temporal could not be reached; the message says where, how often, and what to do."""

    def __init__(self, *, target: str, attempts: int, cause: BaseException) -> None:
        self.target = target
        self.attempts = attempts
        self.cause = cause
        tries = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"cannot reach Temporal at {target} after {attempts} {tries}: {cause} — {HOW_TO_START}"
        )


class TemporalSetupError(Exception):
    """The server is up but not ready for us: a missing namespace or search attribute."""


class NamespaceMissingError(TemporalSetupError):
    """The server answers but does not know the namespace (TEMPORAL_NAMESPACE)."""


class MetricsPortError(Exception):
    """The Prometheus exporter could not bind; the message names the setting to change."""


async def connect(
    settings: Settings,
    *,
    attempts: int | None = None,
    delay: float = DEFAULT_RETRY_DELAY_SECONDS,
    max_delay: float = MAX_RETRY_DELAY_SECONDS,
    runtime: Runtime | None = None,
    identity: str | None = None,
    rpc_retries: RetryConfig | None = None,
) -> Client:
    """A client for `settings.temporal_target`, retried with doubling delays while it starts.

    Every client gets the one data converter (pydantic + the payload codec, keys from settings).
    `attempts` defaults to `settings.worker_connect_attempts`; raises `TemporalConnectError`, or
    `EncryptionSetupError` (before any attempt) when there is no payload key.
    `rpc_retries` replaces the SDK's retries of each later RPC (the handoff fails fast).
    """
    converter = data_converter_for(settings)
    total = attempts if attempts is not None else settings.worker_connect_attempts
    if total < 1:
        raise ValueError(f"attempts must be at least 1, got {total}")
    target = settings.temporal_target
    wait = delay
    for attempt in range(1, total + 1):
        try:
            return await _connect_once(
                settings,
                converter=converter,
                runtime=runtime,
                identity=identity,
                rpc_retries=rpc_retries,
            )
        except RPCError as error:
            if error.status not in _RETRYABLE_STATUSES or attempt == total:
                raise TemporalConnectError(target=target, attempts=attempt, cause=error) from None
            last: BaseException = error
        except RuntimeError as error:  # the SDK's bridge reports transport failures this way
            if attempt == total:
                raise TemporalConnectError(target=target, attempts=attempt, cause=error) from None
            last = error
        logger.warning(
            "Temporal at %s not reachable (attempt %d/%d): %s; retrying in %.1fs",
            target,
            attempt,
            total,
            last,
            wait,
        )
        await asyncio.sleep(wait)
        wait = min(wait * 2, max_delay)
    raise AssertionError("unreachable: the loop returns or raises")


async def _connect_once(
    settings: Settings,
    *,
    converter: DataConverter,
    runtime: Runtime | None,
    identity: str | None,
    rpc_retries: RetryConfig | None = None,
) -> Client:
    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=converter,
        api_key=api_key.get_secret_value() if api_key is not None else None,
        # None lets the SDK turn TLS on by itself when an API key is set (Temporal Cloud).
        tls=True if settings.temporal_tls else None,
        connect_timeout=CONNECT_TIMEOUT,
        runtime=runtime,
        identity=identity,
        retry_config=rpc_retries,
    )


def prometheus_runtime(
    port: int, *, host: str = "127.0.0.1", setting: str = "WORKER_METRICS_PORT"
) -> Runtime:
    """A Temporal runtime whose SDK metrics are served at http://{host}:{port}/metrics.

    Raises `MetricsPortError` naming `setting` when the address cannot be bound.
    """
    if not 1 <= port <= 65535:
        raise MetricsPortError(f"{setting}={port} is not a TCP port (1-65535; 0 disables metrics)")
    address = f"{host}:{port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except ValueError as error:  # the core raises ValueError when the exporter cannot bind
        raise MetricsPortError(
            f"cannot serve Temporal metrics on {address}: {error} — free the port, "
            f"choose another with {setting}, or set {setting}=0 to disable metrics"
        ) from None


async def check_namespace(client: Client) -> None:
    """Raise `TemporalSetupError` when the client's namespace does not exist on the server."""
    namespace = client.namespace
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        raise NamespaceMissingError(
            f"namespace {namespace!r} does not exist on Temporal at "
            f"{client.service_client.config.target_host} — create it with "
            f"`temporal operator namespace create --namespace {namespace}` "
            "or set TEMPORAL_NAMESPACE"
        ) from None


async def check_search_attributes(
    client: Client, keys: tuple[SearchAttributeKey[str], ...]
) -> None:
    """Raise `TemporalSetupError` naming each custom search attribute the namespace lacks.

    Without them every workflow task that upserts them fails, so the worker refuses to start.
    A server that does not let us list them (permissions on a cloud namespace) only gets a warning.
    """
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as error:
        logger.warning("could not list search attributes to check them: %s", error.message)
        return
    registered = dict(response.custom_attributes)
    missing = [key for key in keys if key.name not in registered]
    if missing:
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {client.namespace} "
            f"--name {key.name} --type {key.indexed_value_type.name.title().replace('_', '')}"
            for key in missing
        )
        raise TemporalSetupError(
            f"search attributes {', '.join(key.name for key in missing)} are not registered "
            f"in namespace {client.namespace!r}: {commands}"
        )


def _workflow_sources(workflows: Iterable[type]) -> list[str]:
    """Each workflow's module, its packages, and the loaded modules of its package beside it.

    The sandbox re-imports the sibling modules a workflow module imports (its step table, its
    markdown) as well, so they need a cache too.
    """
    names: list[str] = []
    for workflow_class in workflows:
        parts = workflow_class.__module__.split(".")
        names += [".".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
        package = ".".join(parts[:-1])
        if package:
            names += sorted(name for name in sys.modules if name.startswith(f"{package}."))
    sources: list[str] = []
    for name in dict.fromkeys(names):
        source = getattr(sys.modules.get(name), "__file__", None)
        if source is not None and source.endswith(".py"):
            sources.append(source)
    return sources


def cache_workflow_bytecode(workflows: Iterable[type]) -> list[Path]:
    """Write the bytecode cache of each workflow's module and its packages; the files it could not.

    Temporal's workflow sandbox imports a workflow's module afresh for every workflow run. Without
    a cached `.pyc` (PYTHONDONTWRITEBYTECODE=1, as in our image and on many CI machines) each run
    compiles the source again, which cost the worker about a quarter of its CPU per follow-up
    (docs/worker.md). Reading the cache is unaffected by that variable, so writing it once here
    (what a normal import would have done) removes the cost. Up-to-date caches are left alone.
    """
    failed: list[Path] = []
    for source in _workflow_sources(workflows):
        if not compileall.compile_file(source, quiet=2):
            failed.append(Path(source))
    for path in failed:
        logger.warning(
            "could not write the bytecode cache of %s (is its directory read-only?): every "
            "workflow run will compile it again; run `python -m compileall` when building",
            path,
        )
    return failed
