"""Circuit breaker: transitions, a single half-open probe under concurrency, metrics and logs."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from agent.resilience.breaker import (
    SERVICES,
    BreakerMetrics,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from integrations.errors import NotFoundError, TransientError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def transient() -> TransientError:
    return TransientError("503", vendor="amplitude", operation="get_user_profile", status_code=503)


def is_failure(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


async def fail() -> None:
    raise transient()


async def succeed() -> str:
    return "ok"


def make_breaker(
    clock: FakeClock, registry: CollectorRegistry | None = None, **kwargs: float
) -> CircuitBreaker:
    metrics = BreakerMetrics.for_registry(registry or CollectorRegistry())
    return CircuitBreaker("amplitude", clock=clock, metrics=metrics, **kwargs)  # type: ignore[arg-type]


async def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(TransientError):
            await breaker.call(fail, is_failure=is_failure)


async def test_opens_after_three_consecutive_failures_and_then_fails_fast() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1
        raise transient()

    for _ in range(2):
        with pytest.raises(TransientError):
            await breaker.call(counted, is_failure=is_failure)
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(TransientError):
        await breaker.call(counted, is_failure=is_failure)
    assert breaker.state is BreakerState.OPEN

    with pytest.raises(CircuitOpenError) as refused:
        await breaker.call(counted, is_failure=is_failure)
    assert calls == 3, "an open breaker must not run the call"
    assert refused.value.service == "amplitude"
    assert refused.value.retry_in == pytest.approx(30.0)


async def test_a_success_resets_the_consecutive_count() -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(2):
        with pytest.raises(TransientError):
            await breaker.call(fail, is_failure=is_failure)
    assert await breaker.call(succeed, is_failure=is_failure) == "ok"
    for _ in range(2):
        with pytest.raises(TransientError):
            await breaker.call(fail, is_failure=is_failure)
    assert breaker.state is BreakerState.CLOSED


async def test_errors_that_are_not_failures_keep_it_closed() -> None:
    breaker = make_breaker(FakeClock())

    async def missing() -> None:
        raise NotFoundError("no profile", vendor="amplitude", operation="get_user_profile")

    for _ in range(5):
        with pytest.raises(NotFoundError):
            await breaker.call(missing, is_failure=is_failure)
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_after_reset_timeout_then_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, reset_timeout=30.0)
    await trip(breaker)

    clock.advance(29.9)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed, is_failure=is_failure)

    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(succeed, is_failure=is_failure) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


async def test_probe_failure_reopens_for_a_full_pause() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, reset_timeout=30.0)
    await trip(breaker)
    clock.advance(30)

    with pytest.raises(TransientError):
        await breaker.call(fail, is_failure=is_failure)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as refused:
        await breaker.call(succeed, is_failure=is_failure)
    assert refused.value.retry_in == pytest.approx(30.0)


@pytest.mark.parametrize("probe_succeeds", [True, False])
async def test_half_open_admits_exactly_one_probe_among_concurrent_callers(
    probe_succeeds: bool,
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    await trip(breaker)
    clock.advance(30)

    gate = asyncio.Event()
    running = 0

    async def probe() -> str:
        nonlocal running
        running += 1
        await gate.wait()
        if not probe_succeeds:
            raise transient()
        return "ok"

    callers = [asyncio.create_task(breaker.call(probe, is_failure=is_failure)) for _ in range(50)]
    await asyncio.sleep(0.01)  # every caller has reached the breaker
    refused = [task for task in callers if task.done()]
    assert running == 1
    assert len(refused) == 49
    assert all(isinstance(task.exception(), CircuitOpenError) for task in refused)

    gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    probes = [result for result in results if not isinstance(result, CircuitOpenError)]
    assert len(probes) == 1
    if probe_succeeds:
        assert probes == ["ok"]
        assert breaker.state is BreakerState.CLOSED
        assert await breaker.call(succeed, is_failure=is_failure) == "ok"
    else:
        assert isinstance(probes[0], TransientError)
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError):
            await breaker.call(succeed, is_failure=is_failure)


async def test_a_cancelled_probe_frees_the_slot_for_the_next_caller() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    await trip(breaker)
    clock.advance(30)

    probe = asyncio.create_task(breaker.call(asyncio.Event().wait, is_failure=is_failure))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(succeed, is_failure=is_failure)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(succeed, is_failure=is_failure) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_a_slow_call_admitted_before_opening_cannot_close_it() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    gate = asyncio.Event()

    async def slow_success() -> str:
        await gate.wait()
        return "late"

    slow = asyncio.create_task(breaker.call(slow_success, is_failure=is_failure))
    await asyncio.sleep(0)
    await trip(breaker)
    gate.set()
    assert await slow == "late"
    assert breaker.state is BreakerState.OPEN


async def test_transitions_are_exported_as_metrics_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    breaker = make_breaker(clock, registry)

    def state_value() -> float | None:
        return registry.get_sample_value("trialist_breaker_state", {"service": "amplitude"})

    def transitions(from_state: str, to_state: str) -> float | None:
        return registry.get_sample_value(
            "trialist_breaker_transitions_total",
            {"service": "amplitude", "from_state": from_state, "to_state": to_state},
        )

    assert state_value() == 0
    with caplog.at_level(logging.INFO, logger="agent.resilience.breaker"):
        await trip(breaker)
        assert state_value() == 1
        clock.advance(30)
        assert breaker.state is BreakerState.HALF_OPEN
        assert state_value() == 2
        await breaker.call(succeed, is_failure=is_failure)
    assert state_value() == 0
    assert transitions("closed", "open") == 1
    assert transitions("open", "half_open") == 1
    assert transitions("half_open", "closed") == 1
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "circuit breaker amplitude: closed -> open",
        "circuit breaker amplitude: open -> half_open",
        "circuit breaker amplitude: half_open -> closed",
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_registry_has_one_breaker_per_service_with_shared_settings() -> None:
    registry = CollectorRegistry()
    breakers = BreakerRegistry(failure_threshold=5, reset_timeout=2.0, registry=registry)
    assert {breaker.service for breaker in breakers} == set(SERVICES)
    assert breakers.get("chilipiper") is breakers.get("chilipiper")
    assert breakers.get("hubspot").failure_threshold == 5
    assert breakers.get("temporal").reset_timeout == 2.0
    for service in SERVICES:
        assert registry.get_sample_value("trialist_breaker_state", {"service": service}) == 0
    with pytest.raises(KeyError, match="known services: amplitude"):
        breakers.get("amplitud")


def test_two_registries_on_one_prometheus_registry_share_metrics() -> None:
    registry = CollectorRegistry()
    BreakerRegistry(registry=registry)
    BreakerRegistry(registry=registry)  # must not fail with a duplicated time series


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("amplitude", failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreaker("amplitude", reset_timeout=0)
