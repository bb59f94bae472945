"""The sandbox's fault injection and `/__sandbox` control API, driven over loopback HTTP."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx2
import pytest

from config.settings import SANDBOX_CREDENTIAL
from tests.servers import SandboxServer

PROFILE_AUTH = {"Authorization": f"Api-Key {SANDBOX_CREDENTIAL}"}
EDGE_AUTH = {"Authorization": f"Bearer {SANDBOX_CREDENTIAL}"}


def profile(sandbox: SandboxServer, *, timeout: float = 5.0) -> httpx2.Response:
    return httpx2.get(
        f"{sandbox.url}/amplitude/v1/userprofile",
        params={"user_id": "trial-1001"},
        headers=PROFILE_AUTH,
        timeout=timeout,
    )


def init_slots(sandbox: SandboxServer) -> httpx2.Response:
    return httpx2.post(
        f"{sandbox.url}/chilipiper/api/fire-edge/v1/org/schedulingLinks/init-simple",
        json={"link": {"slug": "pandadoc-trial-demo"}},
        headers=EDGE_AUTH,
    )


def reset(sandbox: SandboxServer, **body: Any) -> None:
    httpx2.post(f"{sandbox.url}/__sandbox/reset", json=body or None).raise_for_status()


def failures(sandbox: SandboxServer, count: int = 24) -> list[bool]:
    """Which of `count` profile reads the fault turned into an error."""
    url = f"{sandbox.url}/amplitude/v1/userprofile?user_id=trial-1001"
    with httpx2.Client(headers=PROFILE_AUTH) as client:  # one connection keeps this quick
        statuses = [client.get(url).status_code for _ in range(count)]
    assert set(statuses) <= {200, 500}
    return [status == 500 for status in statuses]


def test_error_rate_draws_repeat_with_the_same_seed(sandbox: SandboxServer) -> None:
    fault = {"vendor": "amplitude", "operation": "user_profile", "error_rate": 0.5}
    sandbox.add_fault(**fault, seed=1234)
    first = failures(sandbox)
    reset(sandbox)
    sandbox.add_fault(**fault, seed=1234)
    again = failures(sandbox)
    reset(sandbox)
    sandbox.add_fault(**fault, seed=98765)
    other = failures(sandbox)

    assert first == again
    assert other != first  # 24 fair draws agree by chance once in 16 million
    assert 3 <= sum(first) <= 21


def test_reset_seed_makes_unseeded_faults_reproducible(sandbox: SandboxServer) -> None:
    fault = {"vendor": "amplitude", "operation": "user_profile", "error_rate": 0.5}
    reset(sandbox, seed=42)
    sandbox.add_fault(**fault)
    first = failures(sandbox)
    reset(sandbox, seed=42)
    sandbox.add_fault(**fault)
    assert failures(sandbox) == first
    reset(sandbox, seed=7)  # the session's default seed, for the tests that follow


def test_latency_adds_delay(sandbox: SandboxServer) -> None:
    def elapsed() -> float:
        started = time.perf_counter()
        assert profile(sandbox).status_code == 200
        return time.perf_counter() - started

    baseline = statistics.median(elapsed() for _ in range(3))
    sandbox.add_fault(vendor="amplitude", operation="user_profile", latency_ms=300)
    slowed = statistics.median(elapsed() for _ in range(3))

    assert slowed >= 0.25
    assert slowed - baseline >= 0.2


def test_hang_times_the_client_out_and_reset_releases_it_without_running_the_handler(
    sandbox: SandboxServer,
) -> None:
    sandbox.add_fault(vendor="amplitude", operation="track", hang=True)
    payload = {
        "api_key": SANDBOX_CREDENTIAL,
        "events": [{"user_id": "trial-1001", "event_type": "hung", "insert_id": "h:1"}],
    }
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(f"{sandbox.url}/amplitude/2/httpapi", json=payload, timeout=0.3)

    reset(sandbox)
    time.sleep(0.1)  # give a wrongly released handler the chance to write

    assert sandbox.state()["amplitude_events"] == []
    after = httpx2.post(f"{sandbox.url}/amplitude/2/httpapi", json=payload, timeout=2)
    assert after.status_code == 200


def test_rate_limit_window_returns_429_then_recovers(sandbox: SandboxServer) -> None:
    sandbox.add_fault(
        vendor="chilipiper",
        operation="init_simple",
        rate_limit={"limit": 2, "window_seconds": 1.0},
    )
    url = f"{sandbox.url}/chilipiper/api/fire-edge/v1/org/schedulingLinks/init-simple"
    body = {"link": {"slug": "pandadoc-trial-demo"}}
    with httpx2.Client(headers=EDGE_AUTH) as client:  # one connection: well inside the window
        statuses = [client.post(url, json=body).status_code for _ in range(2)]
        limited = client.post(url, json=body)
        time.sleep(1.05)
        recovered = client.post(url, json=body)

    assert statuses == [200, 200]
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["errorCode"] == "TooManyRequests"
    assert recovered.status_code == 200


def test_times_limits_how_often_a_fault_applies(sandbox: SandboxServer) -> None:
    sandbox.add_fault(
        vendor="chilipiper", operation="init_simple", error_rate=1.0, status=503, times=2
    )
    statuses = [init_slots(sandbox).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert httpx2.get(f"{sandbox.url}/__sandbox/faults").json() == []


def test_a_fault_matches_its_vendor_and_operation_only(sandbox: SandboxServer) -> None:
    sandbox.add_fault(vendor="chilipiper", operation="list_meetings", error_rate=1.0)
    assert init_slots(sandbox).status_code == 200
    sandbox.add_fault(vendor="chilipiper", error_rate=1.0, status=502)  # "*": every operation
    assert init_slots(sandbox).status_code == 502
    assert profile(sandbox).status_code == 200


def test_faults_can_be_listed_and_cleared_per_vendor(sandbox: SandboxServer) -> None:
    faults_url = f"{sandbox.url}/__sandbox/faults"
    sandbox.add_fault(vendor="chilipiper", operation="schedule_simple", after_commit_latency_ms=50)
    sandbox.add_fault(vendor="amplitude", operation="track", error_rate=0.1, seed=3)

    listed = httpx2.get(faults_url).json()
    assert [(f["vendor"], f["operation"]) for f in listed] == [
        ("chilipiper", "schedule_simple"),
        ("amplitude", "track"),
    ]
    assert listed[1]["error_rate"] == 0.1 and listed[1]["seed"] == 3

    assert httpx2.delete(faults_url, params={"vendor": "chilipiper"}).status_code == 204
    assert [f["vendor"] for f in httpx2.get(faults_url).json()] == ["amplitude"]
    httpx2.delete(faults_url)
    assert httpx2.get(faults_url).json() == []


def test_invalid_fault_specs_are_refused(sandbox: SandboxServer) -> None:
    faults_url = f"{sandbox.url}/__sandbox/faults"
    assert (
        httpx2.post(faults_url, json={"vendor": "chilipiper", "error_rate": 2}).status_code == 422
    )
    assert httpx2.post(faults_url, json={"vendor": "zoom"}).status_code == 422
    assert httpx2.get(faults_url).json() == []


def test_state_lists_every_vendor_table(sandbox: SandboxServer) -> None:
    state = sandbox.state()
    assert {
        "chilipiper_links",
        "chilipiper_reps",
        "chilipiper_routes",
        "chilipiper_meetings",
        "amplitude_events",
        "amplitude_profiles",
        "amplitude_limits",
    } <= set(state)
    assert "sandbox_meta" not in state
