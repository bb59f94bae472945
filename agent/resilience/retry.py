"""Deadline-bounded retry under a circuit breaker: quick retries that never outlive a turn."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx2

from agent.resilience.breaker import Admission, CircuitBreaker, CircuitOpenError
from integrations.errors import AmbiguousOutcomeError, RateLimitedError, VendorError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DEADLINE_SECONDS = 2.5
# A probe's lease outlives its deadline by this much, so a slow answer can't let a second in.
PROBE_LEASE_MARGIN = 1.0


class DeadlineExceededError(TimeoutError):
    """The call used its whole time budget without an answer."""

    def __init__(self, service: str, *, deadline: float, attempts: int) -> None:
        super().__init__(f"{service} gave no answer within {deadline:.2f}s ({attempts} attempts)")
        self.service = service
        self.deadline = deadline
        self.attempts = attempts


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter between `min_delay` and a ceiling that doubles.

    Retry n waits uniform(min_delay, min(max_delay, base_delay * 2**(n-1))) seconds: with the
    defaults, 0.5-1.0 s before the first retry and 0.5-2.0 s before the second.
    """

    max_retries: int = 2
    base_delay: float = 1.0
    min_delay: float = 0.5
    max_delay: float = 3.0
    # Less time than this after the backoff cannot fit a vendor round trip, so no retry starts.
    min_attempt: float = 0.25

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        if not 0 < self.min_delay <= self.max_delay:
            raise ValueError(
                f"need 0 < min_delay <= max_delay, got {self.min_delay} and {self.max_delay}"
            )
        if self.base_delay <= 0 or self.min_attempt < 0:
            raise ValueError("base_delay must be positive and min_attempt not negative")

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """The pause before retry `retry_number` (1-based), always within [min_delay, max_delay]."""
        ceiling = min(
            self.max_delay, max(self.min_delay, self.base_delay * 2 ** (retry_number - 1))
        )
        return rng.uniform(self.min_delay, ceiling)


def counts_against_service(exc: BaseException) -> bool:
    """Whether an error is evidence that the service is unhealthy (and trips its breaker).

    A 404, a validation error or refused credentials prove the service answered, so they count
    as a working service. Throttling, 5xx, lost connections and timeouts count against it.
    """
    if isinstance(exc, VendorError):
        return exc.retryable or isinstance(exc, AmbiguousOutcomeError)
    return isinstance(exc, TimeoutError | httpx2.TransportError | ConnectionError)


async def call_with_deadline(
    func: Callable[[], Awaitable[T]],
    *,
    breaker: CircuitBreaker,
    deadline_at: float,
    policy: RetryPolicy,
    rng: random.Random,
    is_failure: Callable[[BaseException], bool] = counts_against_service,
) -> T:
    """Run `func` under `breaker`, retrying retryable vendor errors, finishing by `deadline_at`.

    `deadline_at` is in event-loop time. Each attempt runs under `asyncio.timeout_at`, so a hung
    vendor is cut off at the deadline; a retry whose backoff would leave less than
    `policy.min_attempt` before the deadline is not started and the last error is raised.
    Raises CircuitOpenError when the breaker refuses, or opens while the attempt runs (the
    attempt is cut short then), and DeadlineExceededError when time runs out.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempt = 0
    while True:
        attempt += 1
        # A probe holds the half-open lease for as long as this attempt may run.
        admission = await breaker.admit(lease=deadline_at - loop.time() + PROBE_LEASE_MARGIN)
        try:
            async with asyncio.timeout_at(deadline_at) as scope:
                breaker.track(admission, scope)
                try:
                    result = await func()
                finally:
                    breaker.untrack(admission)
        except TimeoutError as exc:
            if admission.cut:  # the service was found down while this attempt waited
                raise CircuitOpenError(breaker.service, retry_in=breaker.retry_in()) from None
            breaker.record_failure(admission)
            if scope.expired():
                raise DeadlineExceededError(
                    breaker.service, deadline=deadline_at - started, attempts=attempt
                ) from exc
            raise
        except VendorError as exc:
            _record(breaker, admission, exc, is_failure)
            delay = _retry_delay(exc, attempt, breaker, deadline_at - loop.time(), policy, rng)
            if delay is None:
                raise
            logger.info(
                "retrying %s after %s in %.2fs (attempt %d)",
                breaker.service,
                exc.kind.value,
                delay,
                attempt + 1,
            )
            await asyncio.sleep(delay)
            continue
        except Exception as exc:
            _record(breaker, admission, exc, is_failure)
            raise
        except BaseException:
            breaker.release(admission)
            raise
        breaker.record_success(admission)
        return result


def _record(
    breaker: CircuitBreaker,
    admission: Admission,
    exc: Exception,
    is_failure: Callable[[BaseException], bool],
) -> None:
    if is_failure(exc):
        breaker.record_failure(admission)
    elif isinstance(exc, VendorError):
        breaker.record_success(admission)
    else:
        breaker.release(admission)  # our own bug says nothing about the service


def _retry_delay(
    exc: VendorError,
    attempt: int,
    breaker: CircuitBreaker,
    remaining: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> float | None:
    """The pause before the next attempt, or None when no retry may start."""
    if not exc.retryable or attempt > policy.max_retries:
        return None
    if breaker.tripping:
        return None  # this failure tripped the breaker: a retry would only be refused
    delay = policy.backoff(attempt, rng)
    if isinstance(exc, RateLimitedError):
        if exc.retry_after > policy.max_delay:
            return None
        delay = max(delay, exc.retry_after)
    if remaining - delay < policy.min_attempt:
        return None
    return delay
