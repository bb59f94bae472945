"""The store protocol, with two registries in this process as two job processes' views of one
SQLite file (each has its own connection and thread), or of one real redis-server."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.resilience.breaker import BreakerRegistry, BreakerState, CircuitOpenError
from agent.resilience.breaker_store import (
    BreakerStore,
    RedisBreakerStore,
    SqliteBreakerStore,
    store_from_settings,
)
from config.settings import Settings
from tests.agent.breaker_processes import RedisServer, running_redis

RESET = 0.4


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def new_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> BreakerStore:
    if kind == "sqlite":
        return SqliteBreakerStore.in_dir(tmp_path, timeout=0.5)
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisBreakerStore(server.url, timeout=0.5)


@pytest.fixture(params=["sqlite", "redis"])
async def two_views(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[BreakerRegistry, BreakerRegistry]]:
    if request.param == "redis":
        request.getfixturevalue("redis_server").flush()
    views = tuple(
        BreakerRegistry(
            reset_timeout=RESET,
            registry=CollectorRegistry(),
            store=new_store(request.param, tmp_path, request),
            sync_interval=0.02,
        )
        for _ in range(2)
    )
    for view in views:
        await view.start()
    await until(lambda: all(view.link is not None and view.link.shared for view in views))
    try:
        yield views  # type: ignore[misc]
    finally:
        for view in views:
            await view.aclose()


async def until(condition: object, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def trip(view: BreakerRegistry) -> None:
    breaker = view.get("amplitude")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(await breaker.admit())


async def test_a_call_admitted_before_the_trip_cannot_undo_it(
    two_views: tuple[BreakerRegistry, BreakerRegistry],
) -> None:
    first, second = two_views
    slow = await first.get("amplitude").admit()  # closed: a slow call starts here
    await trip(second)
    await until(lambda: first.get("amplitude").state is BreakerState.OPEN)
    first.get("amplitude").record_success(slow)  # its late answer
    await asyncio.sleep(0.1)
    assert {view.get("amplitude").state for view in two_views} == {BreakerState.OPEN}


async def test_a_cancelled_probe_hands_its_lease_back_at_once(
    two_views: tuple[BreakerRegistry, BreakerRegistry],
) -> None:
    first, second = two_views
    await trip(first)
    await until(lambda: second.get("amplitude").state is BreakerState.OPEN)
    await asyncio.sleep(RESET)
    probe = await first.get("amplitude").admit(lease=30)
    assert probe.probe
    with pytest.raises(CircuitOpenError):
        await second.get("amplitude").admit()
    first.get("amplitude").release(probe)  # cancelled: no verdict on the service
    await asyncio.sleep(0.1)
    # Without the release, the lease would hold the breaker for 30 s.
    assert (await second.get("amplitude").admit()).probe


async def test_a_probe_failure_reopens_for_a_full_pause_for_everyone(
    two_views: tuple[BreakerRegistry, BreakerRegistry],
) -> None:
    first, second = two_views
    await trip(first)
    await asyncio.sleep(RESET + 0.05)
    probe = await second.get("amplitude").admit()
    second.get("amplitude").record_failure(probe)
    await until(lambda: first.get("amplitude").state is BreakerState.OPEN)
    assert first.get("amplitude").retry_in() > RESET / 2


def test_a_stepped_clock_cannot_hold_a_breaker_open(tmp_path: Path) -> None:
    """A pause written under a clock far ahead is read back capped at the reset timeout."""

    async def scenario() -> float:
        view = BreakerRegistry(
            reset_timeout=RESET,
            registry=CollectorRegistry(),
            store=SqliteBreakerStore.in_dir(tmp_path, timeout=0.5),
            sync_interval=0.02,
        )
        await view.start()
        await until(lambda: view.link is not None and view.link.shared)
        db = sqlite3.connect(tmp_path / "breakers.db", isolation_level=None)
        db.execute(
            "INSERT OR REPLACE INTO breaker (service, epoch, tripped, reopen_at)"
            " VALUES ('amplitude', 1, 1, ?)",
            (time.time() + 86_400,),
        )
        db.close()
        await until(lambda: view.get("amplitude").state is BreakerState.OPEN)
        retry_in = view.get("amplitude").retry_in()
        await view.aclose()
        return retry_in

    assert asyncio.run(scenario()) <= RESET


def test_settings_choose_the_store(tmp_path: Path) -> None:
    def store(**values: object) -> BreakerStore | None:
        return store_from_settings(Settings(_env_file=None, data_dir=tmp_path, **values))  # type: ignore[arg-type]

    assert store(breaker_store="process") is None
    sqlite_store = store()
    assert isinstance(sqlite_store, SqliteBreakerStore)
    assert sqlite_store.path == tmp_path / "breakers.db"
    redis_store = store(breaker_store="redis", breaker_redis_url="redis://h:1/0")
    assert isinstance(redis_store, RedisBreakerStore)
    with pytest.raises(ValueError, match="BREAKER_REDIS_URL is missing"):
        Settings(_env_file=None, breaker_store="redis")  # type: ignore[call-arg]


def test_the_redis_url_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store that can't be reached logs once, naming the store and an error type only."""

    async def scenario() -> None:
        view = BreakerRegistry(
            registry=CollectorRegistry(),
            store=RedisBreakerStore("redis://:hunter2@127.0.0.1:1/0", timeout=0.2),
        )
        await view.start()
        await until(lambda: view.link is not None and view.link.degraded)
        breaker = view.get("amplitude")
        for _ in range(3):  # decides alone, at once
            breaker.record_failure(await breaker.admit())
        assert breaker.state is BreakerState.OPEN
        await view.aclose()

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "breaker store" in r.getMessage()]
    assert len(warnings) == 1 and "unavailable" in warnings[0]
    assert "hunter2" not in caplog.text and "127.0.0.1:1" not in caplog.text
