"""A durable SQLite outbox for handoffs Temporal could not take in time, and its relay.

Durability: the file is in WAL mode with `synchronous=FULL`. Any committed `put` survives a killed
process under NORMAL too (the WAL write has reached the OS before `put` returns, and the next open
replays it); NORMAL can only lose the last commits on an OS crash or power loss, because it skips
the fsync per commit. FULL fsyncs the WAL on every commit and closes that gap too; measured here it
costs ~0.2 ms p50 / under 1 ms p99 per write (NORMAL: ~0.05 / ~0.3 ms), well inside the 5 ms
budget of a write (bench/realtime.py prints both), so FULL is the default.

Ordering: per call, a `book_meeting` goes before the call's `call_ended`, because the workflow
refuses `book_meeting` once the call has ended. The CallOutcome carries `requested_meeting`, so a
`book_meeting` that still arrives late (and is refused) loses nothing: the workflow books from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from contracts.models import BookingRequest, CallOutcome
from contracts.outreach import OptOutRequest

logger = logging.getLogger(__name__)

OUTBOX_FILE_NAME: Final = "outbox.db"
SCHEMA_VERSION: Final = 2  # 2: opt_out messages (issue 16)
Synchronous = Literal["NORMAL", "FULL"]
DEFAULT_SYNCHRONOUS: Final[Synchronous] = "FULL"
# After this many failed attempts of a book_meeting, its call's call_ended is no longer held
# behind it: the outcome carries requested_meeting, so the workflow books from that instead.
MAX_HOLD_ATTEMPTS: Final = 5
MAX_ERROR_CHARS: Final = 500
BUSY_TIMEOUT_MS: Final = 5000  # another process's relay may hold the write lock for a moment

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('book_meeting', 'call_ended', 'opt_out')),
    call_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    leased_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_pending_call ON outbox (call_id) WHERE delivered_at IS NULL;
"""

_COLUMNS = (
    "id, kind, call_id, dedupe_key, payload, created_at, attempts, next_attempt_at, "
    "leased_until, last_error, delivered_at"
)

# Book_meetings first, then call_endeds; a call_ended waits while its call's book_meeting is
# backed off or leased by another relay (unless that one has failed MAX_HOLD_ATTEMPTS times).
_DUE = f"""
SELECT {_COLUMNS} FROM outbox AS m
WHERE m.delivered_at IS NULL
  AND m.leased_until <= :now
  AND (:ignore_backoff OR m.next_attempt_at <= :now)
  AND (m.kind != 'call_ended' OR NOT EXISTS (
      SELECT 1 FROM outbox AS b
      WHERE b.call_id = m.call_id AND b.kind = 'book_meeting' AND b.delivered_at IS NULL
        AND b.attempts < :hold
        AND ((NOT :ignore_backoff AND b.next_attempt_at > :now) OR b.leased_until > :now)))
ORDER BY CASE m.kind WHEN 'opt_out' THEN 0 WHEN 'book_meeting' THEN 1 ELSE 2 END,
    m.created_at, m.id
LIMIT :limit
"""


class MessageKind(StrEnum):
    BOOK_MEETING = "book_meeting"
    CALL_ENDED = "call_ended"
    OPT_OUT = "opt_out"  # delivered first: no dial may follow it


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    """One stored handoff. Times are Unix seconds."""

    id: int
    kind: MessageKind
    call_id: str
    dedupe_key: str
    payload: str
    created_at: float
    attempts: int
    next_attempt_at: float
    leased_until: float
    last_error: str | None
    delivered_at: float | None

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None

    def booking_request(self) -> BookingRequest:
        if self.kind is not MessageKind.BOOK_MEETING:
            raise ValueError(f"outbox message {self.id} is {self.kind}, not book_meeting")
        return BookingRequest.model_validate_json(self.payload)

    def opt_out_request(self) -> OptOutRequest:
        if self.kind is not MessageKind.OPT_OUT:
            raise ValueError(f"outbox message {self.id} is {self.kind}, not opt_out")
        return OptOutRequest.model_validate_json(self.payload)

    def call_outcome(self) -> CallOutcome:
        if self.kind is not MessageKind.CALL_ENDED:
            raise ValueError(f"outbox message {self.id} is {self.kind}, not call_ended")
        return CallOutcome.model_validate_json(self.payload)


@dataclass(frozen=True)
class PutResult:
    """The stored message's id; `stored` is False when the same message was already there."""

    id: int
    stored: bool


Payload = BookingRequest | CallOutcome | OptOutRequest


def dedupe_key(payload: Payload) -> str:
    """One key per logical message: a call's outcome, or a call's request for one slot."""
    if isinstance(payload, OptOutRequest):
        return f"{MessageKind.OPT_OUT}:{payload.trialist.trial_account_id}:{payload.call_id or ''}"
    if isinstance(payload, CallOutcome):
        return f"{MessageKind.CALL_ENDED}:{payload.call_id}"
    start = int(payload.slot_start.timestamp())
    return f"{MessageKind.BOOK_MEETING}:{payload.call_id}:{start}:{payload.duration_minutes}"


def kind_of(payload: Payload) -> MessageKind:
    if isinstance(payload, OptOutRequest):
        return MessageKind.OPT_OUT
    if isinstance(payload, CallOutcome):
        return MessageKind.CALL_ENDED
    if isinstance(payload, BookingRequest):
        return MessageKind.BOOK_MEETING
    raise TypeError(
        f"the outbox stores BookingRequest or CallOutcome, not {type(payload).__name__}"
    )


class Outbox:
    """The SQLite outbox file. Every method is a short synchronous call, safe from any thread."""

    def __init__(self, path: Path | str, *, synchronous: Synchronous = DEFAULT_SYNCHRONOUS) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit: each statement is its own transaction unless a method opens one.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"outbox {self.path} could not switch to WAL (got {mode!r})")
        self._db.execute(f"PRAGMA synchronous = {synchronous}")
        _allow_opt_outs(self._db)
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def in_dir(
        cls, data_dir: Path | str, *, synchronous: Synchronous = DEFAULT_SYNCHRONOUS
    ) -> Outbox:
        """The outbox file of a data directory (`settings.data_dir`)."""
        return cls(Path(data_dir) / OUTBOX_FILE_NAME, synchronous=synchronous)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing -----------------------------------------------------------------------------

    def put(self, payload: Payload, *, now: float | None = None) -> PutResult:
        """Store a handoff for the relay; the same message twice is stored once."""
        kind = kind_of(payload)
        key = dedupe_key(payload)
        body = payload.model_dump_json()
        at = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "INSERT INTO outbox (dedupe_key, kind, call_id, payload, created_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                (key, kind.value, _call_id_of(payload), body, at, at),
            ).fetchone()
            if row is not None:
                return PutResult(int(row[0]), stored=True)
            existing = self._db.execute(
                "SELECT id FROM outbox WHERE dedupe_key = ?", (key,)
            ).fetchone()
        return PutResult(int(existing[0]), stored=False)

    def mark_delivered(self, id: int, *, note: str | None = None, now: float | None = None) -> None:
        """Done with this message; `note` records why when the workflow refused it (terminal)."""
        at = time.time() if now is None else now
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, leased_until = 0, "
                "last_error = COALESCE(?, last_error) WHERE id = ?",
                (at, _clip(note), id),
            )

    def mark_failed(self, id: int, error: str, next_attempt_at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, leased_until = 0 WHERE id = ? AND delivered_at IS NULL",
                (_clip(error), next_attempt_at, id),
            )

    def release(self, ids: list[int]) -> None:
        """Give back leased messages untried, so the next pass (of any relay) takes them."""
        if not ids:
            return
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET leased_until = 0 WHERE id = ?", [(id,) for id in ids]
            )

    def purge_delivered(self, *, older_than: float) -> int:
        """Delete messages delivered before `older_than`; returns how many."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?",
                (older_than,),
            )
        return cursor.rowcount

    # --- reading -----------------------------------------------------------------------------

    def due(
        self,
        now: float,
        limit: int = 100,
        *,
        lease: float | None = None,
        ignore_backoff: bool = False,
    ) -> list[OutboxMessage]:
        """Undelivered messages to send now, in delivery order.

        With `lease`, the returned messages are claimed for that many seconds in the same
        transaction, so another relay (another process on the same file) skips them meanwhile.
        `ignore_backoff` takes messages still waiting out a backoff (a fresh start retries all).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        params = {
            "now": now,
            "limit": limit,
            "hold": MAX_HOLD_ATTEMPTS,
            "ignore_backoff": int(ignore_backoff),
        }
        with self._lock, self._transaction():
            rows = self._db.execute(_DUE, params).fetchall()
            if lease is not None and rows:
                self._db.executemany(
                    "UPDATE outbox SET leased_until = ? WHERE id = ?",
                    [(now + lease, row[0]) for row in rows],
                )
        return [_message(row) for row in rows]

    def get(self, id: int) -> OutboxMessage | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (id,)).fetchone()
        return _message(row) if row is not None else None

    def pending_for(self, call_id: str) -> list[OutboxMessage]:
        """A call's undelivered messages, book_meeting first, whatever their backoff."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE call_id = ? AND delivered_at IS NULL "
                "ORDER BY CASE kind WHEN 'opt_out' THEN 0 WHEN 'book_meeting' THEN 1 ELSE 2 END, "
                "created_at, id",
                (call_id,),
            ).fetchall()
        return [_message(row) for row in rows]

    def pending_count(self, call_id: str | None = None) -> int:
        query = "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"
        args: tuple[str, ...] = ()
        if call_id is not None:
            query += " AND call_id = ?"
            args = (call_id,)
        with self._lock:
            return int(self._db.execute(query, args).fetchone()[0])

    def messages(self, call_id: str | None = None) -> list[OutboxMessage]:
        """Every message (delivered or not), oldest first: for operators and tests."""
        query = f"SELECT {_COLUMNS} FROM outbox"
        args: tuple[str, ...] = ()
        if call_id is not None:
            query += " WHERE call_id = ?"
            args = (call_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [_message(row) for row in rows]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two relays cannot claim the same rows.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _call_id_of(payload: Payload) -> str:
    if isinstance(payload, OptOutRequest):  # an operator's opt-out has no call
        return payload.call_id or f"opt-out-{payload.trialist.trial_account_id}"
    return payload.call_id


def _allow_opt_outs(db: sqlite3.Connection) -> None:
    """Version 1 files refuse kind 'opt_out' (a CHECK): rebuild the table once, rows kept."""
    row = db.execute(
        "SELECT sql FROM sqlite_master WHERE type='table' AND name='outbox'"
    ).fetchone()
    if row is None or "opt_out" in row[0]:
        return
    script = (
        "BEGIN IMMEDIATE; ALTER TABLE outbox RENAME TO outbox_v1;"
        " DROP INDEX IF EXISTS outbox_pending; DROP INDEX IF EXISTS outbox_pending_call;"
        f"{_SCHEMA} INSERT INTO outbox ({_COPY}) SELECT {_COPY} FROM outbox_v1;"
        " DROP TABLE outbox_v1; COMMIT;"
    )
    try:
        db.executescript(script)
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


_COPY: Final = (
    "id, dedupe_key, kind, call_id, payload, created_at, attempts, next_attempt_at, "
    "leased_until, last_error, delivered_at"
)


def _message(row: tuple[Any, ...]) -> OutboxMessage:
    (id, kind, call_id, key, payload, created, attempts, next_at, leased, error, delivered) = row
    return OutboxMessage(
        id=int(id),
        kind=MessageKind(kind),
        call_id=str(call_id),
        dedupe_key=str(key),
        payload=str(payload),
        created_at=float(created),
        attempts=int(attempts),
        next_attempt_at=float(next_at),
        leased_until=float(leased),
        last_error=None if error is None else str(error),
        delivered_at=None if delivered is None else float(delivered),
    )


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:MAX_ERROR_CHARS]


# --- the relay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A terminal refusal by the workflow (e.g. book_meeting after the call ended): not retried."""

    reason: str


# Returns None once the message is durably with the workflow, a Rejection when refused for good;
# raises when it could not be delivered now (it is retried with backoff).
Deliver = Callable[[OutboxMessage], Awaitable[Rejection | None]]


class _Attempt(StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class RelayPass:
    """What one pass did: delivered, refused for good, failed (backed off), or left for later."""

    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    deferred: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.rejected + self.failed


DEFAULT_RELAY_INTERVAL: Final = 5.0
DEFAULT_INITIAL_BACKOFF: Final = 1.0
DEFAULT_MAX_BACKOFF: Final = 300.0
DEFAULT_DELIVERY_TIMEOUT: Final = 5.0
DEFAULT_BATCH_SIZE: Final = 10
DELIVERED_RETENTION_SECONDS: Final = 7 * 24 * 3600


class OutboxRelay:
    """Delivers pending outbox messages at start-up and then every `interval`, at least once.

    Each failed message backs off exponentially (with jitter) on its own. A pass stops at the
    first failure, since that usually means Temporal is down: one probe per pass, not a storm.
    Delivery is at-least-once; the workflow's handlers are idempotent, so a repeat changes nothing.
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        deliver: Deliver,
        interval: float = DEFAULT_RELAY_INTERVAL,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
        batch_size: int = DEFAULT_BATCH_SIZE,
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
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.outbox = outbox
        self._deliver = deliver
        self.interval = interval
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.delivery_timeout = delivery_timeout
        self.batch_size = batch_size
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failures: doubling, capped, jittered."""
        base = min(self.initial_backoff * 2.0 ** max(attempts - 1, 0), self.max_backoff)
        # Jitter in [0.5, 1.0] x base spreads retries of many messages (and many relays) apart.
        return base * (0.5 + self._rng.random() / 2)

    def wake(self) -> None:
        """Start the next pass now instead of at the next interval."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass at start-up (backoffs ignored), then every `interval` until `stop` is set."""
        with contextlib.suppress(sqlite3.Error):
            self.outbox.purge_delivered(older_than=self._clock() - DELIVERED_RETENTION_SECONDS)
        await self._safe_pass(startup=True)
        while not stop.is_set():
            await _wait_any(stop, self._wake, within=self.interval)
            self._wake.clear()
            if stop.is_set():
                break
            await self._safe_pass(startup=False)

    async def _safe_pass(self, *, startup: bool) -> None:
        try:
            result = await self.deliver_due_once(startup=startup)
        except sqlite3.Error as error:  # a locked or broken file: log, and try again next pass
            logger.error("outbox relay pass failed on the outbox file: %s", error)
            return
        if result.attempted:
            logger.info(
                "outbox relay: %d delivered, %d refused, %d failed, %d pending",
                result.delivered,
                result.rejected,
                result.failed,
                self.outbox.pending_count(),
            )

    async def deliver_due_once(self, *, startup: bool = False) -> RelayPass:
        """One pass over the due messages, in order; `startup` also takes backed-off ones."""
        now = self._clock()
        lease = self.delivery_timeout * self.batch_size + self.interval
        batch = self.outbox.due(now, self.batch_size, lease=lease, ignore_backoff=startup)
        delivered = rejected = failed = 0
        held_calls: set[str] = set()  # calls whose book_meeting failed in this pass
        for index, message in enumerate(batch):
            if message.kind is MessageKind.CALL_ENDED and message.call_id in held_calls:
                self.outbox.release([message.id])
                continue
            outcome = await self._attempt(message)
            if outcome is _Attempt.DELIVERED:
                delivered += 1
            elif outcome is _Attempt.REJECTED:
                rejected += 1
            else:
                failed += 1
                if message.attempts + 1 < MAX_HOLD_ATTEMPTS:
                    held_calls.add(message.call_id)
                rest = [later.id for later in batch[index + 1 :]]
                self.outbox.release(rest)
                return RelayPass(
                    delivered=delivered, rejected=rejected, failed=failed, deferred=len(rest)
                )
        return RelayPass(delivered=delivered, rejected=rejected)

    async def _attempt(self, message: OutboxMessage) -> _Attempt:
        """Deliver one message and record the result; a failure is backed off."""
        try:
            async with asyncio.timeout(self.delivery_timeout):
                refusal = await self._deliver(message)
        except Exception as error:  # any failure is retried later; the relay itself never dies
            attempts = message.attempts + 1
            delay = self.backoff(attempts)
            self.outbox.mark_failed(
                message.id, _describe(error), next_attempt_at=self._clock() + delay
            )
            logger.warning(
                "outbox: %s of call %s not delivered (attempt %d, %s); next try in %.1fs",
                message.kind,
                message.call_id,
                attempts,
                type(error).__name__,
                delay,
            )
            return _Attempt.FAILED
        if refusal is not None:
            self.outbox.mark_delivered(message.id, note=f"refused: {refusal.reason}")
            logger.warning(
                "outbox: %s of call %s refused by the workflow, not retried: %s",
                message.kind,
                message.call_id,
                refusal.reason,
            )
            return _Attempt.REJECTED
        self.outbox.mark_delivered(message.id)
        logger.info("outbox: %s of call %s delivered", message.kind, message.call_id)
        return _Attempt.DELIVERED


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


__all__ = [
    "DEFAULT_SYNCHRONOUS",
    "MAX_HOLD_ATTEMPTS",
    "OUTBOX_FILE_NAME",
    "Deliver",
    "MessageKind",
    "Outbox",
    "OutboxMessage",
    "OutboxRelay",
    "PutResult",
    "Rejection",
    "RelayPass",
    "dedupe_key",
]
