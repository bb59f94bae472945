"""Where breaker state is shared: a SQLite WAL file for one host, or Redis for the whole fleet.

Why not purgatory or pybreaker's Redis storage: both read the state from Redis on every call (a
round trip on the hot path; pybreaker's client is synchronous and blocks the event loop), update
it by read-modify-write that races between processes, and let every caller through in half-open.
Neither has a probe lease, so a fleet would still probe once per process. The protocol here is
small: each operation is one SQLite transaction or one Lua script, and the engines do the rest.

Every operation is atomic in the store and answers with the service's state afterwards, plus the
transition it made (if any), so exactly one process logs and counts each transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from config.settings import Settings

BREAKER_DB_NAME = "breakers.db"
REDIS_KEY_PREFIX = "trialist:{breakers}:"  # one hash tag: every key in one Redis Cluster slot


class Transition(IntEnum):
    """A state change one store operation made; the process that made it announces it."""

    NONE = 0
    TRIPPED = 1  # closed -> open
    HALF_OPENED = 2  # open -> half_open: the first probe lease of an open spell
    CLOSED = 3  # half_open -> closed: the probe succeeded
    REOPENED = 4  # half_open -> open: the probe failed


@dataclass(frozen=True, slots=True)
class SharedState:
    """One service's breaker as the store holds it; durations are seconds from now."""

    epoch: int = 0  # bumped by every trip, close and reopen; outcomes of older epochs are void
    tripped: bool = False  # open or half-open (half-open once pause_left reaches 0)
    failures: int = 0  # consecutive failures while closed
    pause_left: float = 0.0
    lease_left: float = 0.0  # someone holds the probe lease for this much longer


@dataclass(frozen=True, slots=True)
class StoreAnswer:
    state: SharedState
    transition: Transition = Transition.NONE
    granted: bool = False  # acquire_probe: this caller holds the lease


class StoreUnavailableError(Exception):
    """The store did not answer in time or refused; the breaker falls back to its own state."""


class BreakerStore(Protocol):
    """Atomic breaker operations on shared state. Times are the store's, never the caller's."""

    name: str

    async def prepare(self) -> None:
        """Connect and set up (schema, scripts); called before the first snapshot and after
        the store was lost."""
        ...

    async def snapshot(self, services: Iterable[str]) -> dict[str, SharedState]: ...

    async def record_failure(
        self, service: str, *, epoch: int, threshold: int, reset: float
    ) -> StoreAnswer: ...

    async def record_success(self, service: str, *, epoch: int) -> StoreAnswer: ...

    async def acquire_probe(
        self, service: str, *, epoch: int, token: str, lease: float
    ) -> StoreAnswer: ...

    async def finish_probe(
        self, service: str, *, epoch: int, token: str, succeeded: bool, reset: float
    ) -> StoreAnswer: ...

    async def release_probe(self, service: str, *, token: str) -> StoreAnswer: ...

    async def trip(self, service: str, *, pause: float) -> StoreAnswer: ...

    async def aclose(self) -> None: ...


# --- one host: SQLite in WAL mode ----------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS breaker (
    service TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL DEFAULT 0,
    tripped INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    reopen_at REAL NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    half_open_epoch INTEGER NOT NULL DEFAULT -1
)
"""


@dataclass(slots=True)
class _Row:
    epoch: int
    tripped: bool
    failures: int
    reopen_at: float
    lease_token: str | None
    lease_until: float
    half_open_epoch: int

    def shared(self, now: float) -> SharedState:
        lease_held = self.lease_token is not None and self.lease_until > now
        return SharedState(
            epoch=self.epoch,
            tripped=self.tripped,
            failures=self.failures,
            pause_left=max(self.reopen_at - now, 0.0) if self.tripped else 0.0,
            lease_left=self.lease_until - now if lease_held else 0.0,
        )


class SqliteBreakerStore:
    """Breaker state of every job process on a host, in a SQLite file in WAL mode.

    Chosen over shared memory: SQLite's file locks are released by the kernel when a process dies,
    so a job process killed mid-write can't wedge the others (a lock in shared memory would), each
    operation is a real transaction, and the file is readable with the sqlite3 CLI. WAL lets the
    snapshot reads run beside a writer. Times are wall-clock (time.time()), the one clock every
    process shares that survives a reboot; readers cap a pause at the reset timeout, so a clock
    step can't hold a breaker open. Local disks only: WAL needs shared memory between processes.
    All SQLite work runs on one thread of its own, so the event loop never waits on a lock.
    """

    name = "sqlite"

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self._timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="breaker-sqlite")
        self._db: sqlite3.Connection | None = None
        self._seen_version: int | None = None
        self._rows: dict[str, _Row] = {}

    @classmethod
    def in_dir(cls, data_dir: Path, *, timeout: float) -> SqliteBreakerStore:
        return cls(data_dir / BREAKER_DB_NAME, timeout=timeout)

    async def _run(self, work: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work, *args)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"sqlite: {type(error).__name__}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                # WAL is a property of the file: only its first user switches (and may race; a
                # "locked" here is a store unavailable for a moment, retried by the link).
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                # Breaker state is disposable: losing the last change to a power cut is harmless.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    async def prepare(self) -> None:
        """Open the file and take the write lock once: a store that only reads is no store."""

        def check() -> None:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")

        await self._run(check)

    def _read(self, db: sqlite3.Connection, service: str) -> _Row:
        db.execute("INSERT OR IGNORE INTO breaker (service) VALUES (?)", (service,))
        found = db.execute(
            "SELECT epoch, tripped, failures, reopen_at, lease_token, lease_until, half_open_epoch"
            " FROM breaker WHERE service = ?",
            (service,),
        ).fetchone()
        return _Row(*found)

    def _write(self, db: sqlite3.Connection, service: str, row: _Row) -> None:
        db.execute(
            "UPDATE breaker SET epoch = ?, tripped = ?, failures = ?, reopen_at = ?,"
            " lease_token = ?, lease_until = ?, half_open_epoch = ? WHERE service = ?",
            (
                row.epoch,
                int(row.tripped),
                row.failures,
                row.reopen_at,
                row.lease_token,
                row.lease_until,
                row.half_open_epoch,
                service,
            ),
        )

    def _transaction(self, service: str, change: Any) -> StoreAnswer:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = self._read(db, service)
            now = time.time()
            transition, granted = change(row, now)
            if transition is not None:
                self._write(db, service, row)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return StoreAnswer(
            state=row.shared(now), transition=transition or Transition.NONE, granted=granted
        )

    def _snapshot(self, services: tuple[str, ...]) -> dict[str, SharedState]:
        db = self._connection()
        # data_version changes only when another connection commits: an idle poll reads no rows.
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if version != self._seen_version or any(s not in self._rows for s in services):
            found = db.execute(
                "SELECT service, epoch, tripped, failures, reopen_at, lease_token, lease_until,"
                " half_open_epoch FROM breaker"
            ).fetchall()
            self._rows = {service: _Row(*rest) for service, *rest in found}
            self._seen_version = version
        now = time.time()
        return {
            s: self._rows[s].shared(now) if s in self._rows else SharedState() for s in services
        }

    async def snapshot(self, services: Iterable[str]) -> dict[str, SharedState]:
        result: dict[str, SharedState] = await self._run(self._snapshot, tuple(services))
        return result

    async def record_failure(
        self, service: str, *, epoch: int, threshold: int, reset: float
    ) -> StoreAnswer:
        def change(row: _Row, now: float) -> tuple[Transition | None, bool]:
            if row.epoch != epoch or row.tripped:
                return None, False
            row.failures += 1
            if row.failures < threshold:
                return Transition.NONE, False
            _open(row, now, reset)
            return Transition.TRIPPED, False

        return await self._apply(service, change)

    async def record_success(self, service: str, *, epoch: int) -> StoreAnswer:
        def change(row: _Row, now: float) -> tuple[Transition | None, bool]:
            if row.epoch != epoch or row.tripped or row.failures == 0:
                return None, False
            row.failures = 0
            return Transition.NONE, False

        return await self._apply(service, change)

    async def acquire_probe(
        self, service: str, *, epoch: int, token: str, lease: float
    ) -> StoreAnswer:
        def change(row: _Row, now: float) -> tuple[Transition | None, bool]:
            if row.epoch != epoch or not row.tripped or row.reopen_at > now:
                return None, False
            if row.lease_token is not None and row.lease_until > now:
                return None, False  # someone else is probing
            row.lease_token, row.lease_until = token, now + lease
            first = row.half_open_epoch != epoch
            row.half_open_epoch = epoch
            return (Transition.HALF_OPENED if first else Transition.NONE), True

        return await self._apply(service, change)

    async def finish_probe(
        self, service: str, *, epoch: int, token: str, succeeded: bool, reset: float
    ) -> StoreAnswer:
        def change(row: _Row, now: float) -> tuple[Transition | None, bool]:
            if row.epoch != epoch or row.lease_token != token:
                return None, False  # the lease expired and another probe decided
            if succeeded:
                row.epoch += 1
                row.tripped, row.failures = False, 0
                row.lease_token, row.lease_until = None, 0.0
                return Transition.CLOSED, False
            _open(row, now, reset)
            return Transition.REOPENED, False

        return await self._apply(service, change)

    async def release_probe(self, service: str, *, token: str) -> StoreAnswer:
        def change(row: _Row, now: float) -> tuple[Transition | None, bool]:
            if row.lease_token != token:
                return None, False
            row.lease_token, row.lease_until = None, 0.0
            return Transition.NONE, False

        return await self._apply(service, change)

    async def trip(self, service: str, *, pause: float) -> StoreAnswer:
        def change(row: _Row, now: float) -> tuple[Transition | None, bool]:
            if row.tripped:
                return None, False
            _open(row, now, pause)
            return Transition.TRIPPED, False

        return await self._apply(service, change)

    async def _apply(self, service: str, change: Any) -> StoreAnswer:
        answer: StoreAnswer = await self._run(self._transaction, service, change)
        return answer

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)


def _open(row: _Row, now: float, pause: float) -> None:
    row.epoch += 1
    row.tripped, row.failures = True, 0
    row.reopen_at = now + pause
    row.lease_token, row.lease_until = None, 0.0


# --- the fleet: Redis ----------------------------------------------------------------------------

# KEYS[1] the service's hash (epoch, tripped, failures, half_open_epoch), KEYS[2] the pause key
# (exists while open, expires into half-open), KEYS[3] the probe lease (token, expires).
# Redis's own expiry is the clock, so hosts with skewed clocks agree.
_LUA_STATE = """
local function state(code, granted)
  local v = redis.call('HMGET', KEYS[1], 'epoch', 'tripped', 'failures')
  local pause = redis.call('PTTL', KEYS[2])
  local lease = redis.call('PTTL', KEYS[3])
  if pause < 0 then pause = 0 end
  if lease < 0 then lease = 0 end
  return {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, pause, lease,
          code, granted}
end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local tripped = redis.call('HGET', KEYS[1], 'tripped') == '1'
local function open(pause_ms)
  redis.call('HSET', KEYS[1], 'epoch', epoch + 1, 'tripped', 1, 'failures', 0)
  redis.call('SET', KEYS[2], 1, 'PX', pause_ms)
  redis.call('DEL', KEYS[3])
end
"""

_LUA_FAILURE = """
-- ARGV: epoch, threshold, reset_ms
if epoch ~= tonumber(ARGV[1]) or tripped then return state(0, 0) end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if n < tonumber(ARGV[2]) then return state(0, 0) end
open(ARGV[3])
return state(1, 0)
"""

_LUA_SUCCESS = """
-- ARGV: epoch
if epoch == tonumber(ARGV[1]) and not tripped then redis.call('HSET', KEYS[1], 'failures', 0) end
return state(0, 0)
"""

_LUA_ACQUIRE = """
-- ARGV: epoch, token, lease_ms
if epoch ~= tonumber(ARGV[1]) or not tripped or redis.call('EXISTS', KEYS[2]) == 1 then
  return state(0, 0)
end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return state(0, 0) end
local first = tonumber(redis.call('HGET', KEYS[1], 'half_open_epoch') or '-1') ~= epoch
redis.call('HSET', KEYS[1], 'half_open_epoch', epoch)
if first then return state(2, 1) end
return state(0, 1)
"""

_LUA_FINISH = """
-- ARGV: epoch, token, succeeded (1/0), reset_ms
if epoch ~= tonumber(ARGV[1]) or redis.call('GET', KEYS[3]) ~= ARGV[2] then return state(0, 0) end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'epoch', epoch + 1, 'tripped', 0, 'failures', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  return state(3, 0)
end
open(ARGV[4])
return state(4, 0)
"""

_LUA_RELEASE = """
-- ARGV: token
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return state(0, 0)
"""

_LUA_TRIP = """
-- ARGV: pause_ms
if tripped then return state(0, 0) end
open(ARGV[1])
return state(1, 0)
"""

# Every service in one round trip: KEYS holds (hash, pause, lease) per service, in order.
_LUA_READ_ALL = """
local out = {}
for i = 1, #KEYS, 3 do
  local v = redis.call('HMGET', KEYS[i], 'epoch', 'tripped', 'failures')
  local pause = redis.call('PTTL', KEYS[i + 1])
  local lease = redis.call('PTTL', KEYS[i + 2])
  if pause < 0 then pause = 0 end
  if lease < 0 then lease = 0 end
  local row = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, pause, lease}
  for _, x in ipairs(row) do table.insert(out, x) end
end
return out
"""


def _keys(service: str) -> list[str]:
    hash_key = f"{REDIS_KEY_PREFIX}{service}"
    return [hash_key, f"{hash_key}:pause", f"{hash_key}:lease"]


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class RedisBreakerStore:
    """Breaker state shared by every agent host, in Redis: one Lua script per operation.

    The client never retries and gives up after `timeout`, so a slow or gone Redis costs a
    breaker one timeout before it falls back to its own state.
    """

    name = "redis"

    def __init__(self, url: str, *, timeout: float) -> None:
        import redis.asyncio  # noqa: F401  (imported now, not inside the first timed contact)

        self._url = url
        self._timeout = timeout
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    async def prepare(self) -> None:
        """Connect afresh and load every script, so no operation pays for a NOSCRIPT round trip.

        A fresh client each time: a command cut off by a timeout can leave a connection with an
        unread reply, and the next command on it would read the wrong answer.
        """
        from redis.exceptions import RedisError

        await self.aclose()
        client = self._redis()
        try:
            for script in self._scripts.values():
                await client.script_load(script.script)
        except (RedisError, OSError) as error:
            raise StoreUnavailableError(f"redis: {type(error).__name__}") from None

    def _redis(self) -> Redis:
        if self._client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
            )
            for name, body in (
                ("failure", _LUA_FAILURE),
                ("success", _LUA_SUCCESS),
                ("acquire", _LUA_ACQUIRE),
                ("finish", _LUA_FINISH),
                ("release", _LUA_RELEASE),
                ("trip", _LUA_TRIP),
            ):
                self._scripts[name] = client.register_script(_LUA_STATE + body)
            self._scripts["read_all"] = client.register_script(_LUA_READ_ALL)
            self._client = client
        return self._client

    async def _script(self, name: str, service: str, *args: str | int) -> StoreAnswer:
        from redis.exceptions import RedisError

        client = self._redis()
        keys = _keys(service)
        try:
            raw = await self._scripts[name](keys=keys, args=list(args), client=client)
            epoch, tripped, failures, pause_ms, lease_ms, code, granted = (int(x) for x in raw)
        except (RedisError, OSError, TypeError, ValueError) as error:
            raise StoreUnavailableError(f"redis: {type(error).__name__}") from None
        state = SharedState(
            epoch=epoch,
            tripped=bool(tripped),
            failures=failures,
            pause_left=pause_ms / 1000 if tripped else 0.0,
            lease_left=lease_ms / 1000,
        )
        return StoreAnswer(state=state, transition=Transition(code), granted=bool(granted))

    async def snapshot(self, services: Iterable[str]) -> dict[str, SharedState]:
        from redis.exceptions import RedisError

        names = list(services)
        keys = [key for name in names for key in _keys(name)]
        try:
            raw = await self._scripts["read_all"](keys=keys, args=[], client=self._redis())
            numbers = [int(x) for x in raw]
        except (RedisError, OSError, TypeError, ValueError) as error:
            raise StoreUnavailableError(f"redis: {type(error).__name__}") from None
        states = {}
        for index, name in enumerate(names):
            epoch, tripped, failures, pause_ms, lease_ms = numbers[index * 5 : index * 5 + 5]
            states[name] = SharedState(
                epoch=epoch,
                tripped=bool(tripped),
                failures=failures,
                pause_left=pause_ms / 1000 if tripped else 0.0,
                lease_left=lease_ms / 1000,
            )
        return states

    async def record_failure(
        self, service: str, *, epoch: int, threshold: int, reset: float
    ) -> StoreAnswer:
        return await self._script("failure", service, epoch, threshold, _ms(reset))

    async def record_success(self, service: str, *, epoch: int) -> StoreAnswer:
        return await self._script("success", service, epoch)

    async def acquire_probe(
        self, service: str, *, epoch: int, token: str, lease: float
    ) -> StoreAnswer:
        return await self._script("acquire", service, epoch, token, _ms(lease))

    async def finish_probe(
        self, service: str, *, epoch: int, token: str, succeeded: bool, reset: float
    ) -> StoreAnswer:
        return await self._script("finish", service, epoch, token, int(succeeded), _ms(reset))

    async def release_probe(self, service: str, *, token: str) -> StoreAnswer:
        return await self._script("release", service, token)

    async def trip(self, service: str, *, pause: float) -> StoreAnswer:
        return await self._script("trip", service, _ms(pause))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # A client that lost its server closes anyway; one that hangs on it is left behind.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.aclose()


def store_from_settings(settings: Settings) -> BreakerStore | None:
    """BREAKER_STORE: None for `process`, the host's SQLite file, or Redis at BREAKER_REDIS_URL."""
    from agent.resilience.breaker_sharing import write_timeout_for

    timeout = write_timeout_for(settings.breaker_store_timeout_seconds)
    if settings.breaker_store == "process":
        return None
    if settings.breaker_store == "sqlite":
        return SqliteBreakerStore.in_dir(settings.data_dir, timeout=timeout)
    if settings.breaker_redis_url is None:  # the settings validator refuses this already
        raise ValueError("BREAKER_STORE=redis needs BREAKER_REDIS_URL")
    return RedisBreakerStore(settings.breaker_redis_url.get_secret_value(), timeout=timeout)
