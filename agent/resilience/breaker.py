"""Circuit breakers, one per vendor service, whose state a host or fleet shares; Prometheus metrics.

Each process keeps a view of every breaker, so checking one costs what an in-process breaker
costs. With a store (SQLite for a host, Redis for the fleet; see breaker_store.py), the view
follows the store: failures anywhere count toward one threshold, a probe lease admits one probe
at a time for everyone, and its verdict closes or reopens the breaker for everyone. Without one,
or while the store is unavailable, the view is the breaker: state local to this process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from agent.resilience.breaker_sharing import (
    DEFAULT_STORE_TIMEOUT_SECONDS,
    DEFAULT_SYNC_SECONDS,
    StoreCall,
    StoreLink,
)
from agent.resilience.breaker_store import (
    BreakerStore,
    SharedState,
    StoreAnswer,
    StoreUnavailableError,
    Transition,
    store_from_settings,
)

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_RESET_TIMEOUT_SECONDS = 30.0
# How long a probe may hold the half-open lease when the caller names no deadline.
DEFAULT_PROBE_LEASE_SECONDS = 5.0
MAX_PROBE_LEASE_SECONDS = 60.0
SERVICES: tuple[str, ...] = ("amplitude", "chilipiper", "salesforce", "hubspot", "temporal")

Clock = Callable[[], float]


class BreakerState(IntEnum):
    """The gauge value of `trialist_breaker_state` is this number."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


_ANNOUNCED: dict[Transition, tuple[BreakerState, BreakerState]] = {
    Transition.TRIPPED: (BreakerState.CLOSED, BreakerState.OPEN),
    Transition.HALF_OPENED: (BreakerState.OPEN, BreakerState.HALF_OPEN),
    Transition.CLOSED: (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    Transition.REOPENED: (BreakerState.HALF_OPEN, BreakerState.OPEN),
}


class CircuitOpenError(Exception):
    """The breaker refused the call without running it: the service is presumed down."""

    def __init__(self, service: str, *, retry_in: float) -> None:
        super().__init__(f"circuit for {service} is open; next probe in {retry_in:.1f}s")
        self.service = service
        self.retry_in = retry_in


@dataclass(eq=False, slots=True)
class Admission:
    """A permit to make one call; hand it back with the call's outcome."""

    generation: int
    probe: bool
    epoch: int = 0  # the store's epoch at admission
    token: str | None = None  # the probe lease, when the store granted one
    cut: bool = False  # the breaker opened while this call ran, and cut it short


class BreakerMetrics:
    """The two breaker metrics, registered once per Prometheus registry.

    Under prometheus-client's multiprocess mode (LiveKit's PROMETHEUS_MULTIPROC_DIR) the worker's
    one endpoint shows the host: the state gauge is the most recent view any job process wrote,
    and a transition is counted once, by the process whose store operation made it.
    """

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, BreakerMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "trialist_breaker_state",
            "Circuit breaker state per service: 0 closed, 1 open, 2 half-open.",
            ["service"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.transitions = Counter(
            "trialist_breaker_transitions_total",
            "Circuit breaker state changes per service.",
            ["service", "from_state", "to_state"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> BreakerMetrics:
        """The metrics of `registry` (default: the global one), created on first use."""
        registry = registry if registry is not None else REGISTRY
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls(registry)
            cls._by_registry[registry] = metrics
        return metrics


class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open after a pause → one probe decides.

    Callers use `admit()` before a call and then exactly one of `record_success`,
    `record_failure` or `release` with the returned admission. Outcomes of calls admitted before
    the last state change are ignored, so a slow call cannot undo a newer decision. A call that
    registered its timeout with `track()` is cut short when the breaker opens while it runs.
    """

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_SECONDS,
        clock: Clock = time.monotonic,
        metrics: BreakerMetrics | None = None,
        link: StoreLink | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout <= 0:
            raise ValueError(f"reset_timeout must be positive, got {reset_timeout}")
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._link = link
        self._epoch = 0
        self._lease_until = 0.0  # another process holds the probe lease until then
        self._pending_writes = 0
        self._no_writes_pending = asyncio.Event()
        self._no_writes_pending.set()
        self._in_flight: dict[Admission, asyncio.Timeout] = {}
        self._metrics = metrics
        if metrics is not None:
            self._gauge = metrics.state.labels(service=service)
            self._gauge.set(BreakerState.CLOSED)
        if link is not None:
            link.attach(self)

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose pause has passed turns half-open here."""
        self._maybe_half_open()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def shared(self) -> bool:
        """Whether this breaker follows a shared store right now."""
        return self._link is not None and self._link.shared

    async def admit(self, *, lease: float = DEFAULT_PROBE_LEASE_SECONDS) -> Admission:
        """Permit one call, or raise CircuitOpenError without running anything.

        `lease` is how long a probe may run: past it, another caller may probe.
        """
        if self._state is BreakerState.CLOSED:
            return Admission(self._generation, False, self._epoch)
        self._maybe_half_open()
        if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            if self.shared:
                return await self._admit_shared_probe(min(lease, MAX_PROBE_LEASE_SECONDS))
            self._probe_in_flight = True
            return Admission(self._generation, True, self._epoch)
        raise CircuitOpenError(self.service, retry_in=self._retry_in())

    async def _admit_shared_probe(self, lease: float) -> Admission:
        assert self._link is not None
        if self._lease_until > self._clock():
            raise CircuitOpenError(self.service, retry_in=0.0)  # another process is probing
        self._probe_in_flight = True  # one lease request per process at a time
        token = secrets.token_hex(8)
        service, epoch = self.service, self._epoch

        async def acquire(store: BreakerStore) -> StoreAnswer:
            return await store.acquire_probe(service, epoch=epoch, token=token, lease=lease)

        try:
            answer = await self._link.ask(self, acquire, token=token)
        except StoreUnavailableError:
            self._probe_in_flight = False
            return await self.admit(lease=lease)  # the link is degraded now: a local decision
        self._probe_in_flight = False
        if answer is None:  # too slow to grant a lease: this caller neither waits nor probes
            raise CircuitOpenError(self.service, retry_in=0.0)
        self._apply(answer.state)
        self._announce(answer.transition)
        if answer.granted and self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = True
            self._lease_until = 0.0  # the lease is ours
            return Admission(self._generation, True, answer.state.epoch, token)
        if self._state is BreakerState.CLOSED:  # another process's probe closed it meanwhile
            return Admission(self._generation, False, self._epoch)
        raise CircuitOpenError(self.service, retry_in=self._retry_in())

    def record_success(self, admission: Admission) -> None:
        if admission.generation != self._generation:
            return
        if admission.probe:
            self._probe_in_flight = False
            sent = self._send_probe_verdict(admission, succeeded=True)
            self._transition(BreakerState.CLOSED, announce=not sent)
            self._failures = 0
            return
        if self._failures:
            self._failures = 0
            if self.shared:
                service, epoch = self.service, admission.epoch

                async def succeeded(store: BreakerStore) -> StoreAnswer:
                    return await store.record_success(service, epoch=epoch)

                self._send(succeeded)

    def record_failure(self, admission: Admission) -> None:
        if admission.generation != self._generation:
            return
        if admission.probe:
            self._probe_in_flight = False
            sent = self._send_probe_verdict(admission, succeeded=False)
            self._open(announce=not sent)
            return
        self._failures += 1
        sent = False
        if self.shared:
            service, epoch = self.service, admission.epoch
            threshold, reset = self.failure_threshold, self.reset_timeout

            async def failed(store: BreakerStore) -> StoreAnswer:
                return await store.record_failure(
                    service, epoch=epoch, threshold=threshold, reset=reset
                )

            # Shared, the store's answer opens it (within a millisecond): this process's count
            # may be stale, and opening on it would refuse callers the store would admit.
            sent = self._send(failed)
        if self._failures >= self.failure_threshold and not sent:
            self._open(announce=True)

    def release(self, admission: Admission) -> None:
        """The call ended with no verdict on the service (cancelled, or a bug of ours)."""
        if admission.probe and admission.generation == self._generation:
            self._probe_in_flight = False
            if admission.token is not None and self.shared:
                service, token = self.service, admission.token

                async def release(store: BreakerStore) -> StoreAnswer:
                    return await store.release_probe(service, token=token)

                self._send(release)

    def track(self, admission: Admission, scope: asyncio.Timeout) -> None:
        """Cut the call under `scope` short (its timeout fires now) if the breaker opens."""
        self._in_flight[admission] = scope

    def untrack(self, admission: Admission) -> None:
        self._in_flight.pop(admission, None)

    async def call(
        self, func: Callable[[], Awaitable[T]], *, is_failure: Callable[[BaseException], bool]
    ) -> T:
        """Run `func` once under the breaker; `is_failure` says which errors count against it."""
        admission = await self.admit()
        try:
            result = await func()
        except Exception as exc:
            if is_failure(exc):
                self.record_failure(admission)
            else:
                self.record_success(admission)
            raise
        except BaseException:
            self.release(admission)
            raise
        self.record_success(admission)
        return result

    async def settled(self) -> None:
        """Return once no write of this process is on its way to the shared store (whose answer
        sets the state: until then `state` may show the state before this process's failures)."""
        await self._no_writes_pending.wait()

    @property
    def tripping(self) -> bool:
        """Open, or about to be: the failures counted here reached the threshold."""
        return self.state is BreakerState.OPEN or self._failures >= self.failure_threshold

    def retry_in(self) -> float:
        """Seconds until the next probe may start (0 when half-open)."""
        return self._retry_in()

    # --- what the store link calls -------------------------------------------------------------

    def write_done(self, answer: StoreAnswer | None) -> None:
        """A queued write came back; the last one outstanding sets the view."""
        self._pending_writes = max(self._pending_writes - 1, 0)
        if self._pending_writes == 0:
            self._no_writes_pending.set()
        if answer is None:
            return
        self._announce(answer.transition)
        if self._pending_writes == 0:
            self._apply(answer.state)

    def apply_shared(self, shared: SharedState) -> None:
        """A sync read the store; ignored while this process's own writes are on their way."""
        if self._pending_writes == 0:
            self._apply(shared)

    def store_lost(self) -> None:
        """From now on this breaker decides alone, from the state it has."""
        self._pending_writes = 0
        self._no_writes_pending.set()
        self._lease_until = 0.0
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open(announce=True)  # failures whose writes the store never took

    def pause_left(self) -> float | None:
        """None when closed; else the seconds until half-open (0 once there)."""
        if self._state is BreakerState.CLOSED:
            return None
        return self._retry_in()

    # --- internals ------------------------------------------------------------------------------

    def _send(self, call: StoreCall) -> bool:
        if self._link is None or not self._link.shared:
            return False
        self._pending_writes += 1
        self._no_writes_pending.clear()
        self._link.send(self, call)
        return True

    def _send_probe_verdict(self, admission: Admission, *, succeeded: bool) -> bool:
        if admission.token is None or not self.shared:
            return False  # a probe this process made alone: the store never knew of it
        service, epoch, token = self.service, admission.epoch, admission.token
        reset = self.reset_timeout

        async def verdict(store: BreakerStore) -> StoreAnswer:
            return await store.finish_probe(
                service, epoch=epoch, token=token, succeeded=succeeded, reset=reset
            )

        return self._send(verdict)

    def _apply(self, shared: SharedState) -> None:
        now = self._clock()
        # A pause never exceeds the reset timeout, whatever a stepped clock stored.
        pause = min(shared.pause_left, self.reset_timeout)
        if not shared.tripped:
            target = BreakerState.CLOSED
        else:
            target = BreakerState.OPEN if pause > 0 else BreakerState.HALF_OPEN
            self._opened_at = now + pause - self.reset_timeout
        self._transition(target, announce=False)
        self._epoch = shared.epoch
        self._failures = shared.failures
        self._lease_until = now + min(shared.lease_left, MAX_PROBE_LEASE_SECONDS)

    def _announce(self, transition: Transition) -> None:
        if transition is not Transition.NONE:
            previous, to = _ANNOUNCED[transition]
            self._log_and_count(previous, to)

    def _retry_in(self) -> float:
        if self._state is BreakerState.HALF_OPEN:
            return 0.0
        return max(self._opened_at + self.reset_timeout - self._clock(), 0.0)

    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout
        ):
            # Shared: the process granted the first lease announces it, not every watcher.
            self._transition(BreakerState.HALF_OPEN, announce=not self.shared)

    def _open(self, *, announce: bool) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._transition(BreakerState.OPEN, announce=announce)

    def _transition(self, to: BreakerState, *, announce: bool) -> None:
        previous = self._state
        if previous is to:
            return
        self._state = to
        self._generation += 1
        self._probe_in_flight = False
        self._lease_until = 0.0
        if self._metrics is not None:
            self._gauge.set(to)
        if announce:
            self._log_and_count(previous, to)
        if to is BreakerState.OPEN and self._in_flight:
            self._cut_in_flight()

    def _cut_in_flight(self) -> None:
        """Calls admitted before the service was known down answer now, not at their deadline."""
        now = asyncio.get_running_loop().time()
        for admission, scope in list(self._in_flight.items()):
            admission.cut = True
            scope.reschedule(now)
        self._in_flight.clear()

    def _log_and_count(self, previous: BreakerState, to: BreakerState) -> None:
        # Only the service name and states: nothing about the caller or the request.
        log = logger.warning if to is BreakerState.OPEN else logger.info
        log(
            "circuit breaker %s: %s -> %s",
            self.service,
            previous.label,
            to.label,
            extra={"service": self.service, "from_state": previous.label, "to_state": to.label},
        )
        if self._metrics is not None:
            self._metrics.transitions.labels(
                service=self.service, from_state=previous.label, to_state=to.label
            ).inc()


class BreakerRegistry:
    """One breaker per known service, for every call in the process; shared further by a store.

    `store=None` keeps each process's breakers to itself (BREAKER_STORE=process). With a store,
    call `start()` in the event loop that makes the calls, and `aclose()` at the end.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_SECONDS,
        clock: Clock = time.monotonic,
        registry: CollectorRegistry | None = None,
        services: Iterable[str] = SERVICES,
        store: BreakerStore | None = None,
        store_timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS,
        sync_interval: float = DEFAULT_SYNC_SECONDS,
    ) -> None:
        metrics = BreakerMetrics.for_registry(registry)
        self.link = (
            StoreLink(store, timeout=store_timeout, sync_interval=sync_interval)
            if store is not None
            else None
        )
        self._breakers = {
            service: CircuitBreaker(
                service,
                failure_threshold=failure_threshold,
                reset_timeout=reset_timeout,
                clock=clock,
                metrics=metrics,
                link=self.link,
            )
            for service in services
        }
        if not self._breakers:
            raise ValueError("a BreakerRegistry needs at least one service")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> BreakerRegistry:
        """Breakers with BREAKER_FAILURE_THRESHOLD, BREAKER_RESET_SECONDS and BREAKER_STORE."""
        return cls(
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_seconds,
            registry=registry,
            store=store_from_settings(settings),
            store_timeout=settings.breaker_store_timeout_seconds,
            sync_interval=settings.breaker_sync_seconds,
        )

    @property
    def backend(self) -> str:
        """`process`, or the store's name (`sqlite`, `redis`)."""
        return "process" if self.link is None else self.link.store.name

    async def start(self) -> None:
        """Start following the store in this event loop (idempotent; no-op without a store)."""
        if self.link is not None:
            await self.link.start()

    async def aclose(self) -> None:
        if self.link is not None:
            await self.link.aclose()

    def get(self, service: str) -> CircuitBreaker:
        """The breaker of `service`; an unknown name is a bug, so it raises instead of creating."""
        try:
            return self._breakers[service]
        except KeyError:
            known = ", ".join(sorted(self._breakers))
            raise KeyError(f"no circuit breaker for {service!r}; known services: {known}") from None

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self._breakers.values())

    def states(self) -> dict[str, BreakerState]:
        return {service: breaker.state for service, breaker in self._breakers.items()}
