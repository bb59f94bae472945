"""The link between a process's breakers and the shared store: ordered writes, sync, fallback.

The hot path never waits on the store, with one exception: a caller who would be the probe of a
half-open breaker asks for the lease, for at most the store timeout. Everything else is sent in
the background, one operation at a time and in order, and each answer updates the breaker. A
background sync keeps every breaker's view current. When the store is slow, locked or gone, the
link logs it once and the breakers run on their own state until the store answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.resilience.breaker_store import (
    BreakerStore,
    SharedState,
    StoreAnswer,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from agent.resilience.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

DEFAULT_STORE_TIMEOUT_SECONDS = 0.05
DEFAULT_SYNC_SECONDS = 0.05
# Background writes and syncs wait longer than a caller would (no caller waits on them): a
# CPU-starved host must not drop to per-process state over a 50 ms hiccup.
WRITE_TIMEOUT_FLOOR_SECONDS = 0.5
# How often a link that lost its store tries it again.
RECOVERY_SECONDS = 1.0
# The first contact (connect, schema, scripts) runs in the background and may take longer.
FIRST_CONTACT_SECONDS = 2.0
# start() waits this long for it (milliseconds, normally): a failure counted before the first
# contact would be lost when the breaker takes the store's state.
START_WAIT_SECONDS = 0.5
# Writes queued behind a slow store beyond this are dropped: the local state already has them.
MAX_QUEUED = 256
CLOSE_SECONDS = 2.0

StoreCall = Callable[[BreakerStore], Awaitable[StoreAnswer]]


@dataclass(eq=False)
class _Op:
    breaker: CircuitBreaker
    call: StoreCall
    answered: asyncio.Future[StoreAnswer | None] | None = None
    # Set when the waiting caller gave up: a lease granted after that is handed straight back.
    abandoned: bool = False
    token: str | None = field(default=None)


class StoreLink:
    """One per process: runs the store operations of every breaker of a BreakerRegistry."""

    def __init__(
        self,
        store: BreakerStore,
        *,
        timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS,
        sync_interval: float = DEFAULT_SYNC_SECONDS,
    ) -> None:
        if timeout <= 0 or sync_interval <= 0:
            raise ValueError("the store timeout and the sync interval must be positive")
        self.store = store
        self.timeout = timeout
        self.write_timeout = write_timeout_for(timeout)
        self.sync_interval = sync_interval
        self.degraded = False
        self._ready = False  # the first contact succeeded
        self._breakers: dict[str, CircuitBreaker] = {}
        self._queue: asyncio.Queue[_Op] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._contacted = asyncio.Event()

    @property
    def shared(self) -> bool:
        """Whether breakers follow the store now: started, and the store answering."""
        return self._ready and not self.degraded and self._queue is not None

    def attach(self, breaker: CircuitBreaker) -> None:
        self._breakers[breaker.service] = breaker

    @property
    def started(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def start(self) -> None:
        """Start the writer and the sync in this event loop (idempotent), and wait up to 0.5 s
        for the first contact with the store. Until it succeeds, breakers decide alone."""
        if self.started:
            return
        self._queue = asyncio.Queue()
        self._contacted = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="breaker-store-writer"),
            asyncio.create_task(self._sync_loop(), name="breaker-store-sync"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_WAIT_SECONDS):
                await self._contacted.wait()

    async def aclose(self) -> None:
        # The loops also stop on the flag: a store client may turn a cancellation into an error.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_SECONDS)
        self._tasks = []
        self._queue = None
        with contextlib.suppress(Exception):  # a store that hangs on close is left behind
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.store.aclose()

    # --- what breakers call ------------------------------------------------------------------

    def send(self, breaker: CircuitBreaker, call: StoreCall) -> None:
        """Queue a write for `breaker`; its answer updates the breaker. Never waits."""
        if self.degraded or self._queue is None:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self._lost("its writes queue up faster than it answers")
            return
        self._queue.put_nowait(_Op(breaker=breaker, call=call))

    async def ask(
        self, breaker: CircuitBreaker, call: StoreCall, *, token: str
    ) -> StoreAnswer | None:
        """Run `call` (a probe lease) and wait for its answer at most the store timeout.

        None when the store is slower than that: the caller doesn't wait and doesn't probe, and a
        lease granted later is handed back. Raises StoreUnavailableError when the store is gone.
        """
        if not self.shared or self._queue is None:
            raise StoreUnavailableError("the breaker store link is not running")
        answered: asyncio.Future[StoreAnswer | None] = asyncio.get_running_loop().create_future()
        op = _Op(breaker=breaker, call=call, answered=answered, token=token)
        self._queue.put_nowait(op)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await asyncio.shield(answered)
        except TimeoutError:
            op.abandoned = True
            return None
        if answer is None:
            raise StoreUnavailableError("the breaker store did not answer")
        return answer

    # --- background work ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self._queue is not None
        while not self._closing:
            op = await self._queue.get()
            answer = None if self.degraded else await self._call(op.call)
            if op.answered is None:
                op.breaker.write_done(answer)
            elif op.abandoned and answer is not None:
                if answer.granted:
                    # Nobody waits for this lease any more: hand it back (or let it expire).
                    await self._call(_release(op.breaker.service, op.token or ""))
                else:
                    op.breaker.apply_shared(answer.state)
            _resolve(op, answer)

    async def _call(self, call: StoreCall) -> StoreAnswer | None:
        try:
            async with asyncio.timeout(self.write_timeout):
                return await call(self.store)
        except Exception as error:  # whatever the store did, the breakers carry on without it
            self._lost(_why(error))
            return None

    async def _sync_loop(self) -> None:
        contacted = await self._first_contact()
        self._contacted.set()
        while not self._closing:
            await asyncio.sleep(RECOVERY_SECONDS if self.degraded else self.sync_interval)
            if contacted:
                await self._sync_once()
            else:
                contacted = await self._first_contact()

    async def _first_contact(self) -> bool:
        try:
            async with asyncio.timeout(FIRST_CONTACT_SECONDS):
                await self.store.prepare()
                snapshot = await self.store.snapshot(self._breakers)
        except Exception as error:
            self._lost(_why(error))
            return False
        self._ready = True
        await self._adopt(snapshot)
        return True

    async def _sync_once(self) -> None:
        try:
            async with asyncio.timeout(
                self.write_timeout if not self.degraded else FIRST_CONTACT_SECONDS
            ):
                if self.degraded:
                    await self.store.prepare()
                snapshot = await self.store.snapshot(self._breakers)
        except Exception as error:
            self._lost(_why(error))
            return
        await self._adopt(snapshot)

    async def _adopt(self, snapshot: dict[str, SharedState]) -> None:
        if self.degraded:
            await self._recover(snapshot)
            return
        for service, state in snapshot.items():
            self._breakers[service].apply_shared(state)

    async def _recover(self, snapshot: dict[str, SharedState]) -> None:
        """The store is back: push what this process learned alone, then follow the store."""
        for service, state in snapshot.items():
            breaker = self._breakers[service]
            pause = breaker.pause_left()
            if pause is not None and not state.tripped:
                try:
                    async with asyncio.timeout(self.write_timeout):
                        state = (await self.store.trip(service, pause=pause)).state
                except Exception:
                    return  # gone again; the next sync retries
            breaker.apply_shared(state)
        self.degraded = False
        logger.info("breaker store %s is back: breaker state is shared again", self.store.name)

    def _lost(self, why: str) -> None:
        if self.degraded:
            return
        self.degraded = True
        # The reason names an error type only: a Redis URL can carry a password.
        logger.warning(
            "breaker store %s unavailable (%s): each process keeps its own breaker state "
            "until it is back",
            self.store.name,
            why,
        )
        for breaker in self._breakers.values():
            breaker.store_lost()


def _why(error: Exception) -> str:
    """What went wrong, as an error type: store errors carry their own, safe, text."""
    if isinstance(error, StoreUnavailableError):
        return str(error)
    if isinstance(error, TimeoutError):
        return "it did not answer in time"
    return type(error).__name__


def _resolve(op: _Op, answer: StoreAnswer | None) -> None:
    if op.answered is not None and not op.answered.done():
        op.answered.set_result(answer)


def _release(service: str, token: str) -> StoreCall:
    async def call(store: BreakerStore) -> StoreAnswer:
        return await store.release_probe(service, token=token)

    return call


def write_timeout_for(timeout: float) -> float:
    """How long a background write or sync may take before the store counts as unavailable."""
    return max(timeout * 10, WRITE_TIMEOUT_FLOOR_SECONDS)
