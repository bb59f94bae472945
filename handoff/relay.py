"""The outbox relay: delivers what the outbox holds, many calls at once, each call in its order.

A pass claims a batch of due messages with a short lease (other processes on the same file skip
them) and renews it while it works, so a process killed mid-pass holds its claims for one lease,
not for the longest a whole batch could take. It sends the calls concurrently, and within a call
one message after the other in handoff/ordering.py's order. Back-off is of two kinds. While
Temporal is unreachable the relay as a whole waits, probing with one message at a short, capped
interval, and the messages keep no delay of their own, so the whole backlog flows the moment
Temporal is back. A message that fails on its own (a timeout, a refusal to decode) backs off on
its own, doubling, with jitter.
Delivery is at-least-once; the workflow's handlers are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from handoff.ordering import (
    DELIVERY_TIMEOUT_SECONDS,
    MAX_HOLD_ATTEMPTS,
    MAX_UNREACHABLE_BACKOFF_SECONDS,
    RELAY_BATCH_SIZE,
    RELAY_CONCURRENCY,
    UNREACHABLE_BACKOFF_SECONDS,
    rank,
)
from handoff.outbox import DELIVERED_RETENTION_SECONDS, Outbox, OutboxMessage

logger = logging.getLogger(__name__)

DEFAULT_RELAY_INTERVAL: Final = 5.0
DEFAULT_INITIAL_BACKOFF: Final = 1.0
DEFAULT_MAX_BACKOFF: Final = 300.0


@dataclass(frozen=True)
class Rejection:
    """A terminal refusal by the workflow (e.g. book_meeting after the call ended): not retried."""

    reason: str


# Returns None once the message is durably with the workflow, a Rejection when refused for good;
# raises when it could not be delivered now.
Deliver = Callable[[OutboxMessage], Awaitable[Rejection | None]]
# Whether a delivery error means Temporal itself cannot be reached (the relay then waits as a
# whole) rather than a problem of this one message.
Unreachable = Callable[[BaseException], bool]


class _Attempt(StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    HELD = "held"  # not tried: an earlier message of its call failed, or Temporal is unreachable


@dataclass(frozen=True, kw_only=True)
class RelayPass:
    """What one pass did: delivered, refused for good, failed, or left for later (deferred)."""

    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    deferred: int = 0
    unreachable: bool = False
    last_error: str | None = None

    @property
    def attempted(self) -> int:
        return self.delivered + self.rejected + self.failed


@dataclass
class _Tally:
    counts: dict[_Attempt, int] = field(default_factory=lambda: dict.fromkeys(_Attempt, 0))
    unreachable: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str | None = None
    claimed: set[int] = field(default_factory=set)  # this pass's messages not yet settled

    def result(self) -> RelayPass:
        return RelayPass(
            delivered=self.counts[_Attempt.DELIVERED],
            rejected=self.counts[_Attempt.REJECTED],
            failed=self.counts[_Attempt.FAILED] + self.counts[_Attempt.UNREACHABLE],
            deferred=self.counts[_Attempt.HELD],
            unreachable=self.unreachable.is_set(),
            last_error=self.last_error,
        )


@dataclass(frozen=True, kw_only=True)
class DrainReport:
    """What `drain` did over all its passes, and what is still waiting."""

    delivered: int
    rejected: int
    passes: int
    pending: int
    unreachable: bool
    last_error: str | None


class OutboxRelay:
    """Delivers the outbox at start-up, whenever woken, and every `interval`; see the module doc."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        deliver: Deliver,
        unreachable: Unreachable,
        interval: float = DEFAULT_RELAY_INTERVAL,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        delivery_timeout: float = DELIVERY_TIMEOUT_SECONDS,
        batch_size: int = RELAY_BATCH_SIZE,
        concurrency: int = RELAY_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (
            ("interval", interval),
            ("initial_backoff", initial_backoff),
            ("max_backoff", max_backoff),
            ("delivery_timeout", delivery_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if max_backoff < initial_backoff:
            raise ValueError("max_backoff must be at least initial_backoff")
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.outbox = outbox
        self._deliver = deliver
        self._unreachable = unreachable
        self.interval = interval
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.delivery_timeout = delivery_timeout
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._unreachable_passes = 0

    @property
    def lease(self) -> float:
        """How long a claim lasts unrenewed: one delivery's timeout twice over, plus a pass's
        interval. A live pass renews it every delivery timeout; a dead one's lapses this soon."""
        return 2 * self.delivery_timeout + self.interval

    def backoff(self, attempts: int) -> float:
        """Seconds before a message's next try after `attempts` failures: doubling, capped."""
        base = min(self.initial_backoff * 2.0 ** max(attempts - 1, 0), self.max_backoff)
        # Jitter in [0.5, 1.0] x base spreads retries of many messages (and many relays) apart.
        return base * (0.5 + self._rng.random() / 2)

    def unreachable_wait(self) -> float:
        """Seconds before probing again while Temporal is unreachable: short, capped, jittered."""
        doubling = UNREACHABLE_BACKOFF_SECONDS * 2.0 ** max(self._unreachable_passes - 1, 0)
        return min(doubling, MAX_UNREACHABLE_BACKOFF_SECONDS) * (0.5 + self._rng.random() / 2)

    def wake(self) -> None:
        """Start the next pass now instead of at the next interval."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass at start-up (backoffs ignored), then until `stop`: at once while the last pass
        filled its batch, after a short probe interval while Temporal is unreachable, else every
        `interval` or when woken."""
        with contextlib.suppress(sqlite3.Error):
            self.outbox.purge_delivered(older_than=self._clock() - DELIVERED_RETENTION_SECONDS)
        result = await self._safe_pass(startup=True)
        while not stop.is_set():
            if result is not None and result.unreachable:
                wait = self.unreachable_wait()
            elif result is not None and result.attempted >= self.batch_size:
                wait = 0.0  # more is due: keep going at full speed
            else:
                wait = self.interval
            if wait:
                await _wait_any(stop, self._wake, within=wait)
            self._wake.clear()
            if stop.is_set():
                break
            result = await self._safe_pass(startup=False)

    async def drain(self, *, within: float) -> DrainReport:
        """Passes until nothing is due, Temporal is unreachable, or `within` seconds are up."""
        deadline = time.monotonic() + within
        delivered = rejected = passes = 0
        result = RelayPass()
        while time.monotonic() < deadline:
            result = await self.deliver_due_once(startup=passes == 0)
            passes += 1
            delivered += result.delivered
            rejected += result.rejected
            if result.unreachable or result.attempted == 0:
                break
        return DrainReport(
            delivered=delivered,
            rejected=rejected,
            passes=passes,
            pending=self.outbox.pending_count(),
            unreachable=result.unreachable,
            last_error=result.last_error,
        )

    async def _safe_pass(self, *, startup: bool) -> RelayPass | None:
        try:
            result = await self.deliver_due_once(startup=startup)
        except sqlite3.Error as error:  # a locked or broken file: log, and try again next pass
            logger.error("outbox relay pass failed on the outbox file: %s", error)
            return None
        if result.attempted:
            logger.info(
                "outbox relay: %d delivered, %d refused, %d failed, %d pending",
                result.delivered,
                result.rejected,
                result.failed,
                self.outbox.pending_count(),
            )
        self._unreachable_passes = self._unreachable_passes + 1 if result.unreachable else 0
        return result

    async def deliver_due_once(self, *, startup: bool = False) -> RelayPass:
        """One pass over a batch of due messages; `startup` also takes backed-off ones."""
        now = self._clock()
        batch = self.outbox.due(now, self.batch_size, lease=self.lease, ignore_backoff=startup)
        if not batch:
            return RelayPass()  # an idle pass: nothing claimed, nothing to renew
        calls: dict[str, list[OutboxMessage]] = {}
        for message in batch:
            calls.setdefault(message.call_id, []).append(message)
        tally = _Tally(claimed={message.id for message in batch})
        gate = asyncio.Semaphore(self.concurrency)

        async def one_call(messages: list[OutboxMessage]) -> None:
            async with gate:
                await self._deliver_call(sorted(messages, key=_order), tally)

        renewing = asyncio.create_task(self._keep_claims(tally))
        try:
            await asyncio.gather(*(one_call(messages) for messages in calls.values()))
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        return tally.result()

    async def _keep_claims(self, tally: _Tally) -> None:
        """Renew the pass's claims every delivery timeout, while it has messages left."""
        while tally.claimed:
            await asyncio.sleep(self.delivery_timeout)
            try:
                self.outbox.renew(sorted(tally.claimed), self._clock() + self.lease)
            except sqlite3.Error as error:  # the claims lapse; another relay may take them
                logger.warning("outbox relay could not renew its claims: %s", error)

    async def _deliver_call(self, messages: list[OutboxMessage], tally: _Tally) -> None:
        """A call's messages one after the other; a failure holds the rest of the call back."""
        for index, message in enumerate(messages):
            if tally.unreachable.is_set():
                self._hold(messages[index:], tally)
                return
            outcome = await self._attempt(message, tally)
            tally.counts[outcome] += 1
            if outcome is _Attempt.UNREACHABLE:
                self._hold(messages[index + 1 :], tally)
                return
            if outcome is _Attempt.FAILED and message.attempts + 1 < MAX_HOLD_ATTEMPTS:
                self._hold(messages[index + 1 :], tally)
                return

    def _hold(self, messages: list[OutboxMessage], tally: _Tally) -> None:
        tally.claimed.difference_update(message.id for message in messages)
        self.outbox.release([message.id for message in messages])
        tally.counts[_Attempt.HELD] += len(messages)

    async def _attempt(self, message: OutboxMessage, tally: _Tally) -> _Attempt:
        """Deliver one message and record the result."""
        try:
            async with asyncio.timeout(self.delivery_timeout):
                refusal = await self._deliver(message)
        except Exception as error:  # any failure is retried later; the relay itself never dies
            tally.claimed.discard(message.id)
            return self._failed(message, error, tally)
        tally.claimed.discard(message.id)
        if refusal is not None:
            self.outbox.mark_delivered(message.id, note=f"refused: {refusal.reason}")
            logger.warning(
                "outbox: %s of call %s refused by the workflow, not retried: %s",
                message.kind,
                message.call_id,
                refusal.reason,
            )
            return _Attempt.REJECTED
        self.outbox.mark_delivered(message.id, seq=message.seq)
        logger.info("outbox: %s of call %s delivered", message.kind, message.call_id)
        return _Attempt.DELIVERED

    def _failed(self, message: OutboxMessage, error: Exception, tally: _Tally) -> _Attempt:
        attempts = message.attempts + 1
        described = _describe(error)
        tally.last_error = described
        if self._unreachable(error):
            # The relay waits as a whole; the message must not add a delay of its own.
            self.outbox.mark_failed(message.id, described, next_attempt_at=self._clock())
            if not tally.unreachable.is_set():
                tally.unreachable.set()
                logger.warning("outbox: Temporal unreachable (%s); waiting to retry", described)
            return _Attempt.UNREACHABLE
        delay = self.backoff(attempts)
        self.outbox.mark_failed(message.id, described, next_attempt_at=self._clock() + delay)
        logger.warning(
            "outbox: %s of call %s not delivered (attempt %d, %s); next try in %.1fs",
            message.kind,
            message.call_id,
            attempts,
            type(error).__name__,
            delay,
        )
        return _Attempt.FAILED


def _order(message: OutboxMessage) -> tuple[int, float, int]:
    return rank(message.kind), message.created_at, message.id


def _describe(error: BaseException) -> str:
    """Type and message of a delivery error (Temporal's messages carry no personal data)."""
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


async def _wait_any(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
