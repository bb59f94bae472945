"""The clock that calendar logic reads: the wall clock, or one pinned or shifted on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

# Everything that decides "today", "too soon" or "free now" takes one of these.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, in UTC, from the wall clock."""
    return datetime.now(UTC)


class ClockMode(StrEnum):
    REAL = "real"  # the wall clock
    FROZEN = "frozen"  # stands still at the pinned instant
    TICKING = "ticking"  # starts at the pinned instant and runs on
    SHIFTED = "shifted"  # the wall clock plus an offset


@dataclass(frozen=True, kw_only=True)
class ClockReading:
    """What an AdjustableClock says now, for the sandbox's control API and logs."""

    mode: ClockMode
    now: datetime
    offset_seconds: float


class AdjustableClock:
    """A thread-safe clock: the wall clock until pinned (frozen or ticking) or shifted.

    The sandbox serves requests on its own thread while tests and operators change its time
    through the control API, hence the lock. Ticking time is measured with the monotonic clock,
    so a pinned clock runs on at the wall clock's pace without following its jumps.
    """

    def __init__(self, *, wall: Clock = system_clock) -> None:
        self._wall = wall
        self._lock = threading.Lock()
        self._mode = ClockMode.REAL
        self._anchor: datetime | None = None
        self._anchored_at = 0.0
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        with self._lock:
            if self._mode is ClockMode.FROZEN and self._anchor is not None:
                return self._anchor
            if self._mode is ClockMode.TICKING and self._anchor is not None:
                return self._anchor + timedelta(seconds=time.monotonic() - self._anchored_at)
            return self._wall() + self._offset

    def pin(self, at: datetime, *, frozen: bool = False) -> None:
        """From now on the clock reads `at` (and runs on from it unless `frozen`)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("a pinned instant needs a UTC offset")
        with self._lock:
            self._mode = ClockMode.FROZEN if frozen else ClockMode.TICKING
            self._anchor = at.astimezone(UTC)
            self._anchored_at = time.monotonic()
            self._offset = timedelta(0)

    def shift(self, delta: timedelta) -> None:
        """Move the clock by `delta`: a pinned clock moves its instant, the wall clock an offset."""
        with self._lock:
            if self._anchor is not None and self._mode is not ClockMode.REAL:
                self._anchor += delta
            else:
                self._offset += delta
                self._mode = ClockMode.SHIFTED if self._offset else ClockMode.REAL

    def reset(self) -> None:
        """Back to the wall clock."""
        with self._lock:
            self._mode = ClockMode.REAL
            self._anchor = None
            self._offset = timedelta(0)

    def reading(self) -> ClockReading:
        now = self()
        return ClockReading(
            mode=self._mode,
            now=now,
            offset_seconds=(now - self._wall()).total_seconds(),
        )
