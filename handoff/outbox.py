"""A durable SQLite outbox for handoffs Temporal could not take in time (handoff/relay.py sends it).

Durability: the file is in WAL mode with `synchronous=FULL`. Any committed `put` survives a killed
process under NORMAL too (the WAL write has reached the OS before `put` returns, and the next open
replays it); NORMAL can only lose the last commits on an OS crash or power loss, because it skips
the fsync per commit. FULL fsyncs the WAL on every commit and closes that gap too; measured here it
costs ~0.2 ms p50 / under 1 ms p99 per write (NORMAL: ~0.05 / ~0.3 ms), well inside the 5 ms
budget of a write (bench/realtime.py prints both), so FULL is the default.

Ordering: a call's messages are due in handoff/ordering.py's order (a booking, then the latest
checkpoint, then call_ended); a later one waits while an earlier one of its call backs off or is
being sent by another relay. A call keeps one checkpoint row: a newer checkpoint replaces it.
Several processes may share the file: `due(lease=...)` claims rows in one transaction.

At rest: payloads are sealed with the Temporal payload codec's keys (handoff/sealing.py), the file
is mode 0600, and a delivered row's payload is erased at once; its row (ids and notes, no personal
data) is deleted after DELIVERED_RETENTION_SECONDS. Whom a call with queued messages is with is
kept beside them (sealed too, for a relay in another process that may start the call's follow-up)
and erased with the last of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from config.settings import get_settings
from contracts.models import BookingRequest, CallCheckpoint, CallOutcome, Trialist
from contracts.outreach import OptOutRequest
from handoff.ordering import MAX_HOLD_ATTEMPTS, MessageKind, sql_rank
from handoff.sealing import OutboxSealer

logger = logging.getLogger(__name__)

OUTBOX_FILE_NAME: Final = "outbox.db"
SCHEMA_VERSION: Final = 2
Synchronous = Literal["NORMAL", "FULL"]
DEFAULT_SYNCHRONOUS: Final[Synchronous] = "FULL"
MAX_ERROR_CHARS: Final = 500
FILE_MODE: Final = 0o600  # SQLite gives the -wal and -shm files the database file's mode
# A delivered row (payload erased) stays this long, so a repeat of it is recognised, then goes.
DELIVERED_RETENTION_SECONDS: Final = 3600
Payload = BookingRequest | CallCheckpoint | CallOutcome | OptOutRequest
BUSY_TIMEOUT_MS: Final = 5000  # another process's relay may hold the write lock for a moment
OPEN_LOCKED_SECONDS: Final = 10.0

_KINDS: Final = ", ".join(f"'{kind.value}'" for kind in MessageKind)
_TABLE = f"""
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ({_KINDS})),
    call_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    leased_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at REAL,
    seq INTEGER NOT NULL DEFAULT 0
);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_pending_call ON outbox (call_id) WHERE delivered_at IS NULL;
"""

# Whom a queued call is with, for a relay in another process (or after a restart) that replays
# a message which may start the call's follow-up: one row per call, sealed, erased with the last
# of the call's pending messages.
_IDENTITY_TABLE = """
CREATE TABLE IF NOT EXISTS call_identity (
    call_id TEXT PRIMARY KEY,
    identity BLOB NOT NULL,
    stored_at REAL NOT NULL
);
"""

_COLUMNS = (
    "id, kind, call_id, dedupe_key, payload, created_at, attempts, next_attempt_at, "
    "leased_until, last_error, delivered_at, seq"
)

# In the order of handoff/ordering.py; a message waits while an earlier-ranked message of its
# call is backed off or leased by another relay (unless that one failed MAX_HOLD_ATTEMPTS times).
_DUE = f"""
SELECT {_COLUMNS} FROM outbox AS m
WHERE m.delivered_at IS NULL
  AND m.leased_until <= :now
  AND (:ignore_backoff OR m.next_attempt_at <= :now)
  AND NOT EXISTS (
      SELECT 1 FROM outbox AS b
      WHERE b.call_id = m.call_id AND b.delivered_at IS NULL AND b.id != m.id
        AND {sql_rank("b.kind")} < {sql_rank("m.kind")}
        AND b.attempts < :hold
        AND ((NOT :ignore_backoff AND b.next_attempt_at > :now) OR b.leased_until > :now))
ORDER BY {sql_rank("m.kind")}, m.created_at, m.id
LIMIT :limit
"""
_PENDING_FOR = f"""
SELECT {_COLUMNS} FROM outbox WHERE call_id = ? AND delivered_at IS NULL
ORDER BY {sql_rank("kind")}, created_at, id
"""


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
    seq: int = 0

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None

    def payload_model(self) -> Payload:
        """The stored handoff, validated again (raises pydantic's ValidationError)."""
        if self.kind is MessageKind.OPT_OUT:
            return self.opt_out_request()
        if self.kind is MessageKind.BOOK_MEETING:
            return self.booking_request()
        if self.kind is MessageKind.CHECKPOINT:
            return self.checkpoint()
        return self.call_outcome()

    def checkpoint(self) -> CallCheckpoint:
        if self.kind is not MessageKind.CHECKPOINT:
            raise ValueError(f"outbox message {self.id} is {self.kind}, not checkpoint")
        return CallCheckpoint.model_validate_json(self.payload)

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


def dedupe_key(payload: Payload) -> str:
    """One key per logical message: a call's outcome, its latest checkpoint, a slot's request."""
    if isinstance(payload, OptOutRequest):
        return f"{MessageKind.OPT_OUT}:{payload.trialist.trial_account_id}:{payload.call_id or ''}"
    if isinstance(payload, CallOutcome):
        return f"{MessageKind.CALL_ENDED}:{payload.call_id}"
    if isinstance(payload, CallCheckpoint):
        return f"{MessageKind.CHECKPOINT}:{payload.call_id}"
    start = int(payload.slot_start.timestamp())
    return f"{MessageKind.BOOK_MEETING}:{payload.call_id}:{start}:{payload.duration_minutes}"


def kind_of(payload: Payload) -> MessageKind:
    if isinstance(payload, OptOutRequest):
        return MessageKind.OPT_OUT
    if isinstance(payload, CallOutcome):
        return MessageKind.CALL_ENDED
    if isinstance(payload, CallCheckpoint):
        return MessageKind.CHECKPOINT
    if isinstance(payload, BookingRequest):
        return MessageKind.BOOK_MEETING
    raise TypeError(
        "the outbox stores BookingRequest, CallCheckpoint, CallOutcome or OptOutRequest, "
        f"not {type(payload).__name__}"
    )


class Outbox:
    """The SQLite outbox file. Every method is a short synchronous call, safe from any thread.

    Payloads are sealed with `sealer`, by default the keys of this process's settings.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Synchronous = DEFAULT_SYNCHRONOUS,
        sealer: OutboxSealer | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Callers that only pass a path (`python -m agent drain-outbox`) seal with their settings.
        self._sealer = sealer or OutboxSealer.from_settings(get_settings())
        _create_private(self.path)
        # Autocommit: each statement is its own transaction unless a method opens one.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _while_locked(self._switch_to_wal)
        self._db.execute(f"PRAGMA synchronous = {synchronous}")
        _while_locked(self._install)

    def _switch_to_wal(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"outbox {self.path} could not switch to WAL (got {mode!r})")

    def _install(self) -> None:
        """Create the table, or bring a file written by an earlier version up to date."""
        with self._lock, self._transaction():
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            exists = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
            ).fetchone()
            if exists and version < SCHEMA_VERSION:
                # Version 1 allowed two kinds and had no seq: its rows are copied, none lost.
                self._db.execute("ALTER TABLE outbox RENAME TO outbox_v1")
                self._db.execute(_TABLE)
                self._db.execute(
                    "INSERT INTO outbox (id, dedupe_key, kind, call_id, payload, created_at, "
                    "attempts, next_attempt_at, leased_until, last_error, delivered_at) "
                    "SELECT id, dedupe_key, kind, call_id, payload, created_at, attempts, "
                    "next_attempt_at, leased_until, last_error, delivered_at FROM outbox_v1"
                )
                self._db.execute("DROP TABLE outbox_v1")
            self._db.execute(_TABLE)
            self._db.execute(_IDENTITY_TABLE)
            for statement in filter(str.strip, _INDEXES.split(";")):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def in_dir(
        cls,
        data_dir: Path | str,
        *,
        synchronous: Synchronous = DEFAULT_SYNCHRONOUS,
        sealer: OutboxSealer | None = None,
    ) -> Outbox:
        """The outbox file of a data directory (`settings.data_dir`)."""
        return cls(Path(data_dir) / OUTBOX_FILE_NAME, synchronous=synchronous, sealer=sealer)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing -----------------------------------------------------------------------------

    def put(self, payload: Payload, *, now: float | None = None) -> PutResult:
        """Store a handoff for the relay; the same message twice is stored once.

        A checkpoint replaces its call's stored one when it is newer (a higher seq), even one
        already delivered: only the latest checkpoint matters.
        """
        kind = kind_of(payload)
        key = dedupe_key(payload)
        body = self._sealer.seal(payload.model_dump_json())
        seq = payload.seq if isinstance(payload, CallCheckpoint) else 0
        at = time.time() if now is None else now
        conflict = (
            "DO UPDATE SET payload = excluded.payload, seq = excluded.seq, attempts = 0, "
            "next_attempt_at = excluded.next_attempt_at, delivered_at = NULL, last_error = NULL "
            "WHERE excluded.seq > outbox.seq"
            if kind is MessageKind.CHECKPOINT
            else "DO NOTHING"
        )
        with self._lock:
            row = self._db.execute(
                "INSERT INTO outbox (dedupe_key, kind, call_id, payload, created_at, "
                f"next_attempt_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) "
                f"{conflict} RETURNING id",
                (key, kind.value, _call_id_of(payload), body, at, at, seq),
            ).fetchone()
            if row is not None:
                return PutResult(int(row[0]), stored=True)
            existing = self._db.execute(
                "SELECT id FROM outbox WHERE dedupe_key = ?", (key,)
            ).fetchone()
        return PutResult(int(existing[0]), stored=False)

    def mark_delivered(
        self,
        id: int,
        *,
        note: str | None = None,
        now: float | None = None,
        seq: int | None = None,
    ) -> None:
        """Done with this message; `note` records why when the workflow refused it (terminal).

        With `seq`, only if the row still holds that checkpoint: a newer one stored meanwhile
        must still be sent, so its lease is given back at once rather than waited out. Its
        payload is erased now; rows delivered more than DELIVERED_RETENTION_SECONDS ago go.
        """
        at = time.time() if now is None else now
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, leased_until = 0, "
                "last_error = COALESCE(?, last_error), payload = X'' "
                "WHERE id = ? AND (? IS NULL OR seq = ?)",
                (at, _clip(note), id, seq, seq),
            )
            if seq is not None:
                self._db.execute(
                    "UPDATE outbox SET leased_until = 0 "
                    "WHERE id = ? AND seq != ? AND delivered_at IS NULL",
                    (id, seq),
                )
            self._db.execute(_ERASE_IDENTITY, (id,))
            self._db.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?",
                (at - DELIVERED_RETENTION_SECONDS,),
            )

    def put_identity(
        self, call_id: str, *, trialist: Trialist, started_at: datetime | None
    ) -> None:
        """Remember whom a call with queued messages is with (see `identity`)."""
        body = json.dumps(
            {
                "trialist": trialist.model_dump(mode="json"),
                "started_at": None if started_at is None else started_at.isoformat(),
            }
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO call_identity VALUES (?, ?, ?)",
                (call_id, self._sealer.seal(body), time.time()),
            )

    def identity(self, call_id: str) -> tuple[Trialist, datetime | None] | None:
        """Whom the call is with and since when, as the process that queued its messages knew."""
        with self._lock:
            row = self._db.execute(
                "SELECT identity FROM call_identity WHERE call_id = ?", (call_id,)
            ).fetchone()
        if row is None:
            return None
        stored = json.loads(_opened(row[0], self._sealer))
        started = stored["started_at"]
        return (
            Trialist.model_validate(stored["trialist"]),
            None if started is None else datetime.fromisoformat(started),
        )

    def mark_failed(self, id: int, error: str, next_attempt_at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, leased_until = 0 WHERE id = ? AND delivered_at IS NULL",
                (_clip(error), next_attempt_at, id),
            )

    def renew(self, ids: list[int], until: float) -> None:
        """Keep this relay's claims on messages it has not settled yet (see handoff/relay.py).

        Only rows still claimed and undelivered: one already given back stays free to take.
        """
        if not ids:
            return
        with self._lock:
            self._db.executemany(
                "UPDATE outbox SET leased_until = ? "
                "WHERE id = ? AND delivered_at IS NULL AND leased_until > 0",
                [(until, id) for id in ids],
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
            # Opened inside the transaction: a row that can't be opened leaves nothing leased.
            messages = [_message(row, self._sealer) for row in rows]
            if lease is not None and rows:
                self._db.executemany(
                    "UPDATE outbox SET leased_until = ? WHERE id = ?",
                    [(now + lease, row[0]) for row in rows],
                )
        return messages

    def get(self, id: int) -> OutboxMessage | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (id,)).fetchone()
        return _message(row, self._sealer) if row is not None else None

    def pending_for(self, call_id: str) -> list[OutboxMessage]:
        """A call's undelivered messages in delivery order, whatever their backoff."""
        with self._lock:
            rows = self._db.execute(_PENDING_FOR, (call_id,)).fetchall()
        return [_message(row, self._sealer) for row in rows]

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
        return [_message(row, self._sealer) for row in rows]

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


# Once a call has nothing left to send, whom it was with is no longer kept.
_ERASE_IDENTITY = """
DELETE FROM call_identity
WHERE call_id = (SELECT call_id FROM outbox WHERE id = ?)
  AND NOT EXISTS (
      SELECT 1 FROM outbox
      WHERE outbox.call_id = call_identity.call_id AND outbox.delivered_at IS NULL)
"""


def _message(row: tuple[Any, ...], sealer: OutboxSealer) -> OutboxMessage:
    (id, kind, call_id, key, payload, created, attempts, next_at, leased, error, done, seq) = row
    return OutboxMessage(
        id=int(id),
        kind=MessageKind(kind),
        call_id=str(call_id),
        dedupe_key=str(key),
        payload=_opened(payload, sealer),
        created_at=float(created),
        attempts=int(attempts),
        next_attempt_at=float(next_at),
        leased_until=float(leased),
        last_error=None if error is None else str(error),
        delivered_at=None if done is None else float(done),
        seq=int(seq),
    )


def _while_locked(step: Callable[[], None]) -> None:
    """Run `step`, again while another process holds the file's lock, for OPEN_LOCKED_SECONDS.

    Several job processes open one outbox at once on a fresh host; switching a new file to WAL
    needs a lock that SQLite's busy timeout does not always wait for.
    """
    deadline = time.monotonic() + OPEN_LOCKED_SECONDS
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _call_id_of(payload: Payload) -> str:
    if isinstance(payload, OptOutRequest):  # an operator's opt-out has no call
        return payload.call_id or f"opt-out-{payload.trialist.trial_account_id}"
    return payload.call_id


def _opened(stored: bytes | str, sealer: OutboxSealer) -> str:
    """A row's payload: sealed bytes; text in rows written before sealing; empty once delivered."""
    if isinstance(stored, str):
        return stored
    return sealer.open(stored) if stored else ""


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it (tighten an older one)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    os.chmod(path, FILE_MODE)
    for suffix in ("-wal", "-shm"):
        sibling = path.with_name(path.name + suffix)
        if sibling.exists():
            os.chmod(sibling, FILE_MODE)


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:MAX_ERROR_CHARS]


__all__ = [
    "DEFAULT_SYNCHRONOUS",
    "MAX_HOLD_ATTEMPTS",
    "OUTBOX_FILE_NAME",
    "MessageKind",
    "Outbox",
    "OutboxMessage",
    "Payload",
    "PutResult",
    "dedupe_key",
    "kind_of",
]
