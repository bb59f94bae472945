"""Breakers shared by real processes through the real stores: a host's SQLite file and Redis.

Each child process builds its breakers from settings the way a job process does. Reset timeouts
are short so that each test takes a few seconds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.agent.breaker_processes import (
    RedisServer,
    breaker_processes,
    running_redis,
    wait_for,
)

RESET = 0.6
DEADLINE = 0.5
SLACK = 0.25  # scheduling slack on a busy 2-core box


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """Settings of a host sharing a SQLite file, or of a fleet sharing Redis."""
    settings: dict[str, object] = {
        "data_dir": tmp_path,
        "breaker_store": request.param,
        "breaker_reset_seconds": RESET,
        "breaker_failure_threshold": 3,
    }
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        settings["breaker_redis_url"] = server.url
    return settings


def states(children: list[Any]) -> set[str]:
    return {child.state()["state"] for child in children}


def view(child: Any) -> tuple[str, bool]:
    """The child's breaker state and whether it follows the shared store."""
    found = child.state()
    return found["state"], found["shared"]


def test_failures_in_three_processes_open_the_breaker_for_every_process(
    store_settings: dict[str, object],
) -> None:
    with breaker_processes(4, **store_settings) as children:
        for child in children[:3]:
            assert child.call_now("fail")["outcome"] == "failed"
        wait_for(lambda: states(children) == {"open"})
        # The fourth process never failed, and still refuses without calling the vendor.
        refused = children[3].call_now("ok")
        assert refused["outcome"] == "open" and not refused["ran"]
        assert refused["elapsed"] < 0.05


def test_a_success_anywhere_resets_the_count_for_everyone(
    store_settings: dict[str, object],
) -> None:
    with breaker_processes(2, **store_settings) as (first, second):
        for _ in range(2):
            assert first.call_now("fail")["outcome"] == "failed"
        time.sleep(0.3)  # the second process has read the two failures
        assert second.call_now("ok")["outcome"] == "ok"
        time.sleep(0.3)  # its reset is written (in the background) and read by the first
        for _ in range(2):
            assert first.call_now("fail")["outcome"] == "failed"
        time.sleep(0.3)
        assert states([first, second]) == {"closed"}


# The probe takes a while either way, so the others arrive while it runs.
@pytest.mark.parametrize("probe", ["hang", "slow"])
def test_half_open_admits_exactly_one_probe_among_all_processes(
    store_settings: dict[str, object], probe: str
) -> None:
    with breaker_processes(3, **store_settings) as children:
        for child in children:
            child.call_now("fail")
        wait_for(lambda: states(children) == {"open"})
        time.sleep(RESET + 0.05)
        sent = [child.call(probe, deadline=DEADLINE) for child in children for _ in range(3)]
        results = [children[i // 3].result(command) for i, command in enumerate(sent)]
        ran = [result for result in results if result["ran"]]
        assert len(ran) == 1, results
        refused = [result for result in results if not result["ran"]]
        assert all(result["outcome"] == "open" for result in refused)
        assert max(result["elapsed"] for result in refused) < DEADLINE / 2
        # The probe's verdict is everyone's.
        expected = "closed" if probe == "slow" else "open"
        wait_for(lambda: states(children) == {expected})


def test_a_probe_holder_killed_mid_probe_cannot_wedge_the_breaker(
    store_settings: dict[str, object],
) -> None:
    with breaker_processes(2, **store_settings) as (holder, other):
        for _ in range(3):
            holder.call_now("fail")
        wait_for(lambda: other.state()["state"] == "open")
        time.sleep(RESET + 0.05)
        holder.call("hang", deadline=DEADLINE)  # the probe; its lease lasts DEADLINE + 1 s
        time.sleep(0.2)  # the holder has its lease
        assert other.call_now("ok")["outcome"] == "open"  # refused: the lease is held
        holder.kill()  # mid-probe: the lease is never handed back
        killed_at = time.monotonic()
        while (result := other.call_now("ok"))["outcome"] == "open":
            assert time.monotonic() - killed_at < DEADLINE + 1.0 + 1.0, "the lease never expired"
            time.sleep(0.05)
        assert result["outcome"] == "ok" and result["ran"]
        wait_for(lambda: other.state()["state"] == "closed")


def test_calls_in_flight_elsewhere_are_cut_when_the_breaker_opens(
    store_settings: dict[str, object],
) -> None:
    with breaker_processes(2, **store_settings) as (waiting, failing):
        in_flight = waiting.call("hang", deadline=3.0)
        time.sleep(0.2)
        for _ in range(3):
            failing.call_now("fail")
        result = waiting.result(in_flight)
        # The caller heard the fallback within a sync or two, not at the 3 s deadline.
        assert result["outcome"] == "cut"
        assert result["elapsed"] < 0.2 + 0.5 + SLACK


# --- the store goes away: calls never wait on it ----------------------------------------------


def test_redis_stopped_mid_call_then_started_again(tmp_path: Path) -> None:
    with running_redis() as server:
        settings: dict[str, object] = {
            "data_dir": tmp_path,
            "breaker_store": "redis",
            "breaker_redis_url": server.url,
            "breaker_reset_seconds": 30,
        }
        with breaker_processes(2, **settings) as (caller, later):
            in_flight = caller.call("hang", deadline=DEADLINE)
            time.sleep(0.1)
            server.stop()  # mid-call
            result = caller.result(in_flight)
            assert result["outcome"] == "deadline"
            assert result["elapsed"] < DEADLINE + SLACK, "the caller waited on the store"
            # On its own now: two more failures open this process's breaker, without delay.
            for _ in range(2):
                failed = caller.call_now("fail")
                assert failed["outcome"] == "failed" and failed["elapsed"] < 0.05
            assert view(caller) == ("open", False)
            assert sum("unavailable" in line for line in caller.log) == 1

            server.start()  # same port
            wait_for(lambda: caller.state()["shared"], within=5)
            assert any("is back" in line for line in caller.log)
            # What the caller learned alone is pushed to the store: the other process sees it.
            wait_for(lambda: view(later) == ("open", True))


def test_a_frozen_redis_costs_a_caller_at_most_the_store_timeout(tmp_path: Path) -> None:
    with running_redis() as server:
        settings: dict[str, object] = {
            "data_dir": tmp_path,
            "breaker_store": "redis",
            "breaker_redis_url": server.url,
            "breaker_reset_seconds": RESET,
            "breaker_store_timeout_seconds": 0.05,
        }
        with breaker_processes(1, **settings) as (caller,):
            for _ in range(3):
                caller.call_now("fail")
            wait_for(lambda: caller.state()["state"] == "open")
            time.sleep(RESET + 0.05)
            server.pause()  # connections stay open, nothing answers
            try:
                # Half-open: the would-be probe asks for the lease and gives up after 50 ms,
                # with the fallback line: it neither waits longer nor probes unleased.
                refused = caller.call_now("ok")
                assert refused["outcome"] == "open" and not refused["ran"]
                assert refused["elapsed"] < 0.05 + SLACK
                # The background writes give up too (0.5 s): from then on it decides alone.
                wait_for(lambda: caller.state()["shared"] is False, within=3)
                probe = caller.call_now("ok")
                assert probe["outcome"] == "ok" and probe["ran"]
            finally:
                server.resume()
            wait_for(lambda: caller.state()["shared"], within=5)


def test_a_locked_sqlite_store_is_bypassed_and_rejoined(tmp_path: Path) -> None:
    settings: dict[str, object] = {
        "data_dir": tmp_path,
        "breaker_store": "sqlite",
        "breaker_reset_seconds": 30,
    }
    with breaker_processes(2, **settings) as (caller, later):
        lock = sqlite3.connect(tmp_path / "breakers.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another writer holds the file
        try:
            for _ in range(3):
                failed = caller.call_now("fail")
                assert failed["outcome"] == "failed" and failed["elapsed"] < 0.05
            wait_for(lambda: caller.state()["shared"] is False)
            assert caller.state()["state"] == "open"
            assert caller.call_now("ok")["outcome"] == "open"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_for(lambda: caller.state()["shared"], within=5)
        wait_for(lambda: later.state()["state"] == "open")
        assert sum("unavailable" in line for line in caller.log) == 1


# --- one scrape point per host ----------------------------------------------------------------


def test_the_host_scrape_shows_each_transition_once(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    settings: dict[str, object] = {
        "data_dir": tmp_path,
        "breaker_store": "sqlite",
        "breaker_reset_seconds": RESET,
        "prometheus_multiproc_dir": metrics_dir,
    }
    with breaker_processes(3, **settings) as children:
        for child in children:
            child.call_now("fail")
        wait_for(lambda: states(children) == {"open"})
        time.sleep(RESET + 0.05)
        probes = [child.call("hang", deadline=DEADLINE) for child in children]
        ran = [child.result(probe)["ran"] for child, probe in zip(children, probes, strict=True)]
        assert sum(ran) == 1
        wait_for(lambda: states(children) == {"open"})
        time.sleep(RESET + 0.05)
        assert children[0].call_now("ok")["ran"]
        wait_for(lambda: states(children) == {"closed"})
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))

    def transitions(from_state: str, to_state: str) -> float | None:
        labels = {"service": "amplitude", "from_state": from_state, "to_state": to_state}
        return registry.get_sample_value("trialist_breaker_transitions_total", labels)

    assert transitions("closed", "open") == 1
    assert transitions("open", "half_open") == 2
    assert transitions("half_open", "open") == 1
    assert transitions("half_open", "closed") == 1
    assert registry.get_sample_value("trialist_breaker_state", {"service": "amplitude"}) == 0
