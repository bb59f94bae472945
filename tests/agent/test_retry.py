"""Deadline-bounded retry: the deadline holds, only retryable errors retry, Retry-After counts."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import ToolError
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from agent.resilience.breaker import BreakerRegistry, BreakerState, CircuitBreaker, CircuitOpenError
from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from agent.resilience.guard import RealtimeGuard
from agent.resilience.retry import DeadlineExceededError, RetryPolicy, call_with_deadline
from config.settings import SANDBOX_CREDENTIAL, Settings
from integrations.amplitude import AmplitudeClient, AmplitudeUserProfile
from integrations.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from integrations.http import build_http_client
from tests.servers import SandboxServer

# Generous for a noisy 2-core machine; the benchmark measures the real overshoot.
MARGIN = 0.25
FAST = RetryPolicy(min_delay=0.02, max_delay=0.05, base_delay=0.02, min_attempt=0.01)


def vendor_kwargs() -> dict[str, Any]:
    return {"vendor": "amplitude", "operation": "get_user_profile"}


def transient() -> TransientError:
    return TransientError("unavailable", status_code=503, **vendor_kwargs())


class Script:
    """A vendor call that raises the scripted errors in turn, then answers; records call times."""

    def __init__(self, *errors: Exception, answer: str = "profile") -> None:
        self.errors = list(errors)
        self.answer = answer
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return self.answer

    @property
    def calls(self) -> int:
        return len(self.times)

    def gaps(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.times, self.times[1:], strict=False)]


def breaker(threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker("amplitude", failure_threshold=threshold)


async def run(
    func: Script | object,
    *,
    deadline: float = 2.5,
    policy: RetryPolicy = FAST,
    on: CircuitBreaker | None = None,
    seed: int = 1,
) -> str:
    loop = asyncio.get_running_loop()
    return await call_with_deadline(
        func,  # type: ignore[arg-type]
        breaker=on or breaker(),
        deadline_at=loop.time() + deadline,
        policy=policy,
        rng=random.Random(seed),
    )


async def test_retryable_errors_are_retried_until_success() -> None:
    script = Script(transient(), transient())
    assert await run(script) == "profile"
    assert script.calls == 3


async def test_at_most_two_retries() -> None:
    script = Script(*(transient() for _ in range(5)))
    target = breaker(threshold=10)
    with pytest.raises(TransientError):
        await run(script, on=target)
    assert script.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        NotFoundError("no such user", status_code=404, **vendor_kwargs()),
        PermanentError("bad request", status_code=400, **vendor_kwargs()),
        AuthError("bad key", status_code=401, **vendor_kwargs()),
        KeyError("a bug of ours"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_non_retryable_errors_are_not_retried_and_do_not_trip_the_breaker(
    error: Exception,
) -> None:
    target = breaker(threshold=1)
    script = Script(error)
    with pytest.raises(type(error)):
        await run(script, on=target)
    assert script.calls == 1
    assert target.state is BreakerState.CLOSED


async def test_a_hung_vendor_is_cut_off_at_the_deadline_and_counts_as_a_failure() -> None:
    target = breaker(threshold=1)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as exceeded:
        await run(asyncio.Event().wait, deadline=0.3, on=target)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed <= 0.3 + MARGIN
    assert exceeded.value.attempts == 1
    assert isinstance(exceeded.value, TimeoutError)
    assert target.state is BreakerState.OPEN


async def test_a_retry_that_cannot_finish_before_the_deadline_is_not_started() -> None:
    # Each pause is exactly 0.2 s. The first retry starts at 0.2 s with 0.15 s left; a second
    # would start at 0.4 s, after the 0.35 s deadline, so the call gives up at once instead.
    policy = RetryPolicy(min_delay=0.2, max_delay=0.2, base_delay=0.2, min_attempt=0.1)
    script = Script(transient(), transient(), transient())
    started = time.monotonic()
    with pytest.raises(TransientError):
        await run(script, deadline=0.35, policy=policy)
    elapsed = time.monotonic() - started
    assert script.calls == 2
    assert elapsed < 0.35, "it gave up without waiting for the deadline"


async def test_default_policy_spaces_retries_between_half_a_second_and_three_seconds() -> None:
    script = Script(*(transient() for _ in range(5)))
    started = time.monotonic()
    with pytest.raises(TransientError):
        await run(script, deadline=2.5, policy=RetryPolicy(), on=breaker(threshold=10), seed=3)
    elapsed = time.monotonic() - started
    assert 2 <= script.calls <= 3
    assert all(0.5 <= gap <= 3.0 + 0.05 for gap in script.gaps()), script.gaps()
    assert elapsed <= 2.5 + MARGIN


def test_backoff_is_jittered_within_the_caps() -> None:
    policy = RetryPolicy()
    rng = random.Random(5)
    for retry in (1, 2, 3, 6):
        delays = [policy.backoff(retry, rng) for _ in range(500)]
        assert all(0.5 <= delay <= 3.0 for delay in delays)
        assert len({round(delay, 3) for delay in delays}) > 100, "jitter spreads the delays"
    assert max(policy.backoff(1, rng) for _ in range(500)) <= 1.0
    assert max(policy.backoff(2, rng) for _ in range(500)) <= 2.0
    with pytest.raises(ValueError):
        RetryPolicy(min_delay=2.0, max_delay=1.0)


async def test_retry_after_is_honoured() -> None:
    limited = RateLimitedError("slow down", retry_after=0.3, status_code=429, **vendor_kwargs())
    script = Script(limited)
    policy = RetryPolicy(min_delay=0.02, max_delay=0.5, base_delay=0.02, min_attempt=0.01)
    assert await run(script, deadline=1.0, policy=policy) == "profile"
    assert script.calls == 2
    assert script.gaps()[0] >= 0.3


@pytest.mark.parametrize("retry_after", [0.9, 5.0], ids=["past-deadline", "past-max-delay"])
async def test_retry_after_that_cannot_be_honoured_gives_up_at_once(retry_after: float) -> None:
    limited = RateLimitedError(
        "slow down", retry_after=retry_after, status_code=429, **vendor_kwargs()
    )
    script = Script(limited)
    policy = RetryPolicy(min_delay=0.02, max_delay=3.0, base_delay=0.02, min_attempt=0.2)
    started = time.monotonic()
    with pytest.raises(RateLimitedError):
        await run(script, deadline=1.0, policy=policy)
    assert script.calls == 1
    assert time.monotonic() - started < 0.3, "it did not wait for the Retry-After"


async def test_no_retry_once_the_failure_trips_the_breaker() -> None:
    target = breaker(threshold=2)
    script = Script(*(transient() for _ in range(5)))
    with pytest.raises(TransientError):
        await run(script, on=target)
    assert script.calls == 2
    assert target.state is BreakerState.OPEN


async def test_an_open_breaker_fails_fast_without_calling() -> None:
    target = breaker(threshold=1)
    with pytest.raises(TransientError):
        await run(Script(transient()), on=target, policy=RetryPolicy(max_retries=0))
    script = Script()
    with pytest.raises(CircuitOpenError):
        await run(script, on=target)
    assert script.calls == 0


# --- through the guard, with real HTTP to the sandbox ------------------------------------------


def guard(**kwargs: object) -> RealtimeGuard:
    return RealtimeGuard(
        breakers=BreakerRegistry(registry=CollectorRegistry()),
        policy=FAST,
        rng=random.Random(2),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_guard_speaks_the_fallback_that_fits_each_failure() -> None:
    no_response = [TransientError("no response", **vendor_kwargs()) for _ in range(3)]
    cases: list[tuple[object, FallbackKind]] = [
        (Script(NotFoundError("none", **vendor_kwargs())), FallbackKind.DATA_NOT_FOUND),
        (Script(PermanentError("bad", **vendor_kwargs())), FallbackKind.TOOL_FAILURE),
        (Script(*no_response), FallbackKind.CONNECTION_ISSUE),
        (asyncio.Event().wait, FallbackKind.TIMEOUT),
        (Script(ValueError("bug")), FallbackKind.GENERIC),
    ]
    for func, kind in cases:
        with pytest.raises(ToolError) as spoken:
            await guard(deadline=0.2).call("chilipiper", func)  # type: ignore[arg-type]
        assert spoken.value.message in FALLBACK_LINES[kind], kind
        assert spoken.value.__cause__ is None and spoken.value.__suppress_context__


async def test_guard_passes_answers_through_and_uses_the_tool_kind() -> None:
    realtime = guard()
    assert await realtime.call("amplitude", Script()) == "profile"
    with pytest.raises(ToolError) as spoken:
        await realtime.call(
            "amplitude",
            Script(PermanentError("bad", **vendor_kwargs())),
            fallback_kind=FallbackKind.SERVICE_UNAVAILABLE,
        )
    assert spoken.value.message in FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE]


@pytest.fixture
async def amplitude(sandbox: SandboxServer) -> AsyncIterator[AmplitudeClient]:
    async with build_http_client() as http:
        yield AmplitudeClient(
            http=http,
            base_url=f"{sandbox.url}/amplitude",
            profile_base_url=f"{sandbox.url}/amplitude",
            api_key=SecretStr(SANDBOX_CREDENTIAL),
            secret_key=SecretStr(SANDBOX_CREDENTIAL),
        )


async def test_amplitude_outage_over_real_http_opens_the_breaker(
    sandbox: SandboxServer, amplitude: AmplitudeClient
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="user_profile", error_rate=1.0, status=503)
    realtime = guard()
    hits = 0

    async def get_profile() -> AmplitudeUserProfile:
        nonlocal hits
        hits += 1
        return await amplitude.get_user_profile("trial-user-1")

    with pytest.raises(ToolError) as first:
        await realtime.call("amplitude", get_profile)
    assert hits == 3, "the 503 got two quick retries"
    assert first.value.message in FALLBACK_LINES[FallbackKind.TOOL_FAILURE]
    assert realtime.breakers.get("amplitude").state is BreakerState.OPEN

    started = time.monotonic()
    with pytest.raises(ToolError) as refused:
        await realtime.call("amplitude", get_profile)
    assert time.monotonic() - started < 0.1
    assert hits == 3, "the open breaker did not touch the network"
    assert refused.value.message in FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE]


async def test_an_unknown_amplitude_user_is_data_not_found_and_keeps_the_breaker_closed(
    amplitude: AmplitudeClient,
) -> None:
    realtime = guard()
    for _ in range(4):
        with pytest.raises(ToolError) as spoken:
            await realtime.call(
                "amplitude", lambda: amplitude.get_user_profile("never-seen-before")
            )
        assert spoken.value.message in FALLBACK_LINES[FallbackKind.DATA_NOT_FOUND]
    assert realtime.breakers.get("amplitude").state is BreakerState.CLOSED


async def test_settings_set_the_breaker_and_the_deadline() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        breaker_failure_threshold=2,
        breaker_reset_seconds=7.0,
        tool_deadline_seconds=0.3,
    )
    breakers = BreakerRegistry.from_settings(settings, registry=CollectorRegistry())
    realtime = RealtimeGuard.from_settings(settings, breakers=breakers)
    assert breakers.get("salesforce").failure_threshold == 2
    assert breakers.get("salesforce").reset_timeout == 7.0

    started = time.monotonic()
    with pytest.raises(ToolError) as spoken:
        await realtime.call(
            "chilipiper", asyncio.Event().wait, fallback_kind=FallbackKind.TOOL_FAILURE
        )
    assert time.monotonic() - started <= 0.3 + MARGIN
    assert spoken.value.message in FALLBACK_LINES[FallbackKind.TIMEOUT]
    assert breakers.backend == "sqlite"  # the default: shared by every job process on the host
