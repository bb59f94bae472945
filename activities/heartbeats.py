"""Heartbeats of one activity attempt, sent once the attempt has run long enough to need them."""

from __future__ import annotations

import time
from typing import Final

from temporalio import activity

# An attempt stays quiet for this share of its heartbeat timeout. The rest of the timeout must
# cover the longest gap between two heartbeat calls (one vendor request: connect + read timeout).
QUIET_SHARE: Final = 0.25


class AttemptHeartbeats:
    """Report progress of a multi-request attempt, skipping heartbeats it does not need yet.

    The SDK sends an attempt's first heartbeat at once. For an attempt that finishes well inside
    a second, as nearly all of them do, that heartbeat tells the server nothing that the attempt's
    start did not, yet it costs an RPC, a write of the workflow's mutable state and, on Temporal
    Cloud, a billable action. The server times the heartbeat timeout from the attempt's start
    either way, so a dead worker is noticed just as soon. After the quiet period every call
    heartbeats (the SDK throttles them), and the details show in the UI's pending activity.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        info = activity.info()
        # A local activity cannot heartbeat (the server never sees it): its workflow task does.
        self._local = info.is_local
        timeout = info.heartbeat_timeout
        # Without a heartbeat timeout a heartbeat only carries details: send them all.
        self._quiet_seconds = timeout.total_seconds() * QUIET_SHARE if timeout else 0.0

    def beat(self, detail: str) -> None:
        if self._local:
            return
        if time.monotonic() - self._started >= self._quiet_seconds:
            activity.heartbeat(detail)
