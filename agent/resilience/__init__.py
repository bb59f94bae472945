"""Error recovery for the real-time turn: breakers, bounded retry, fallbacks, filler, state."""

from agent.resilience.breaker import (
    SERVICES,
    BreakerMetrics,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from agent.resilience.fallbacks import (
    FALLBACK_LINES,
    FallbackKind,
    SpokenFallbacks,
    kind_for_error,
)
from agent.resilience.filler import FILLER_LINES, FillerLines, FillerTimer, SayFiller
from agent.resilience.guard import (
    RealtimeGuard,
    call_with_retry_and_circuit_breaker,
    default_guard,
)
from agent.resilience.retry import (
    DeadlineExceededError,
    RetryPolicy,
    call_with_deadline,
    counts_against_service,
)
from agent.resilience.snapshot import (
    ConversationState,
    Stage,
    StateSnapshot,
    StateTransaction,
    preserved,
)

__all__ = [
    "FALLBACK_LINES",
    "FILLER_LINES",
    "SERVICES",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConversationState",
    "DeadlineExceededError",
    "FallbackKind",
    "FillerLines",
    "FillerTimer",
    "RealtimeGuard",
    "RetryPolicy",
    "SayFiller",
    "SpokenFallbacks",
    "Stage",
    "StateSnapshot",
    "StateTransaction",
    "call_with_deadline",
    "call_with_retry_and_circuit_breaker",
    "counts_against_service",
    "default_guard",
    "kind_for_error",
    "preserved",
]
