"""In-process circuit breakers, one per vendor service, exported as Prometheus metrics."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_RESET_TIMEOUT_SECONDS = 30.0
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


class CircuitOpenError(Exception):
    """The breaker refused the call without running it: the service is presumed down."""

    def __init__(self, service: str, *, retry_in: float) -> None:
        super().__init__(f"circuit for {service} is open; next probe in {retry_in:.1f}s")
        self.service = service
        self.retry_in = retry_in


@dataclass(frozen=True, slots=True)
class Admission:
    """A permit to make one call; hand it back with the call's outcome."""

    generation: int
    probe: bool


class BreakerMetrics:
    """The two breaker metrics, registered once per Prometheus registry."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, BreakerMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "trialist_breaker_state",
            "Circuit breaker state per service: 0 closed, 1 open, 2 half-open.",
            ["service"],
            registry=registry,
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
    the last state change are ignored, so a slow call cannot undo a newer decision.
    """

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_SECONDS,
        clock: Clock = time.monotonic,
        metrics: BreakerMetrics | None = None,
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
        self._metrics = metrics
        if metrics is not None:
            self._gauge = metrics.state.labels(service=service)
            self._gauge.set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose pause has passed turns half-open here."""
        self._maybe_half_open()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def admit(self) -> Admission:
        """Permit one call, or raise CircuitOpenError without running anything."""
        if self._state is BreakerState.CLOSED:
            return Admission(self._generation, probe=False)
        self._maybe_half_open()
        if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Admission(self._generation, probe=True)
        raise CircuitOpenError(self.service, retry_in=self._retry_in())

    def record_success(self, admission: Admission) -> None:
        if admission.generation != self._generation:
            return
        if admission.probe:
            self._probe_in_flight = False
            self._transition(BreakerState.CLOSED)
        self._failures = 0

    def record_failure(self, admission: Admission) -> None:
        if admission.generation != self._generation:
            return
        if admission.probe:
            self._probe_in_flight = False
            self._open()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open()

    def release(self, admission: Admission) -> None:
        """The call ended with no verdict on the service (cancelled, or a bug of ours)."""
        if admission.probe and admission.generation == self._generation:
            self._probe_in_flight = False

    async def call(
        self, func: Callable[[], Awaitable[T]], *, is_failure: Callable[[BaseException], bool]
    ) -> T:
        """Run `func` once under the breaker; `is_failure` says which errors count against it."""
        admission = self.admit()
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

    def _retry_in(self) -> float:
        if self._state is BreakerState.HALF_OPEN:
            return 0.0
        return max(self._opened_at + self.reset_timeout - self._clock(), 0.0)

    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._transition(BreakerState.OPEN)

    def _transition(self, to: BreakerState) -> None:
        previous = self._state
        if previous is to:
            return
        self._state = to
        self._generation += 1
        self._probe_in_flight = False
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
            self._gauge.set(to)
            self._metrics.transitions.labels(
                service=self.service, from_state=previous.label, to_state=to.label
            ).inc()


class BreakerRegistry:
    """One breaker per known service, shared by every call in the process."""

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_SECONDS,
        clock: Clock = time.monotonic,
        registry: CollectorRegistry | None = None,
        services: Iterable[str] = SERVICES,
    ) -> None:
        metrics = BreakerMetrics.for_registry(registry)
        self._breakers = {
            service: CircuitBreaker(
                service,
                failure_threshold=failure_threshold,
                reset_timeout=reset_timeout,
                clock=clock,
                metrics=metrics,
            )
            for service in services
        }
        if not self._breakers:
            raise ValueError("a BreakerRegistry needs at least one service")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> BreakerRegistry:
        """Breakers with BREAKER_FAILURE_THRESHOLD and BREAKER_RESET_SECONDS from settings."""
        return cls(
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_seconds,
            registry=registry,
        )

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
