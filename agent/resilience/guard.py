"""RealtimeGuard: breaker, bounded retry and a spoken fallback around one vendor call."""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from livekit.agents.llm.tool_context import ToolError

from agent.resilience.breaker import BreakerRegistry, CircuitOpenError
from agent.resilience.fallbacks import FallbackKind, SpokenFallbacks, kind_for_error
from agent.resilience.retry import (
    DEFAULT_DEADLINE_SECONDS,
    RetryPolicy,
    call_with_deadline,
    counts_against_service,
)
from integrations.errors import VendorError

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RealtimeGuard:
    """Wraps every vendor call a tool makes during a spoken turn. Make one per call (conversation).

    `breakers` is shared by the host (or fleet); the fallbacks belong to this call, so their
    lines don't repeat within it. On failure `call` raises `ToolError(<spoken line>)`, which
    LiveKit hands to the model to say in its own words. Filler speech is the tool's, through
    LiveKit's `RunContext.with_filler` (see CallServices.filler).
    """

    def __init__(
        self,
        *,
        breakers: BreakerRegistry,
        fallbacks: SpokenFallbacks | None = None,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.breakers = breakers
        self._rng = rng or random.Random()
        self.fallbacks = fallbacks or SpokenFallbacks(rng=self._rng)
        self.deadline = deadline
        self._policy = policy or RetryPolicy()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        breakers: BreakerRegistry,
        fallbacks: SpokenFallbacks | None = None,
        rng: random.Random | None = None,
    ) -> RealtimeGuard:
        """A guard for one call with TOOL_DEADLINE_SECONDS."""
        return cls(
            breakers=breakers,
            fallbacks=fallbacks,
            deadline=settings.tool_deadline_seconds,
            rng=rng,
        )

    async def call(
        self,
        service: str,
        func: Callable[[], Awaitable[T]],
        *,
        fallback_kind: FallbackKind = FallbackKind.TOOL_FAILURE,
        deadline: float | None = None,
        is_failure: Callable[[BaseException], bool] = counts_against_service,
    ) -> T:
        """Run `func` (one vendor call, no arguments) within `deadline` seconds.

        Raises ToolError with a spoken fallback line when the breaker is open, time runs out or
        the call fails. `fallback_kind` is the line for vendor failures with no better match.
        """
        breaker = self.breakers.get(service)
        budget = self.deadline if deadline is None else deadline
        deadline_at = asyncio.get_running_loop().time() + budget
        try:
            return await call_with_deadline(
                func,
                breaker=breaker,
                deadline_at=deadline_at,
                policy=self._policy,
                rng=self._rng,
                is_failure=is_failure,
            )
        except ToolError:
            raise  # already a message for the model
        except Exception as exc:
            kind = kind_for_error(exc, default=fallback_kind)
            _log_failure(service, kind, exc)
            raise ToolError(self.fallbacks.line(kind)) from None


def _log_failure(service: str, kind: FallbackKind, exc: Exception) -> None:
    # Structured fields only: vendor messages and bodies can echo personal data.
    if isinstance(exc, VendorError):
        logger.warning(
            "%s call failed (%s, status=%s, code=%s, correlation_id=%s): speaking %s fallback",
            service,
            exc.kind.value,
            exc.status_code,
            exc.error_code,
            exc.correlation_id,
            kind.value,
        )
        return
    if isinstance(exc, CircuitOpenError):
        # The breaker logged its opening once; each refused call is routine from here on.
        logger.info("%s is unavailable (breaker open): speaking %s fallback", service, kind.value)
        return
    where = ""
    if exc.__traceback__ is not None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" at {frame.filename}:{frame.lineno}"
    level = logging.WARNING if kind is not FallbackKind.GENERIC else logging.ERROR
    logger.log(
        level,
        "%s call failed (%s%s): speaking %s fallback",
        service,
        type(exc).__name__,
        where,
        kind.value,
    )
