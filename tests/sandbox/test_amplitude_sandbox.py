"""The Amplitude emulator's documented bodies (200, 400, 413, 429) and profiles, over raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from config.settings import SANDBOX_CREDENTIAL
from devtools.people import DANA, MARCO, PRIYA
from tests.servers import SandboxServer

PROFILE_AUTH = {"Authorization": f"Api-Key {SANDBOX_CREDENTIAL}"}


def event(index: int, **fields: Any) -> dict[str, Any]:
    base = {
        "user_id": "trial-1003",
        "event_type": "voice_call_completed",
        "time": 1_900_000_000_000 + index,
        "insert_id": f"call-9:{index}",
    }
    return {**base, **fields}


def post_events(sandbox: SandboxServer, events: list[Any], **body: Any) -> httpx2.Response:
    payload = {"api_key": SANDBOX_CREDENTIAL, "events": events, **body}
    return httpx2.post(f"{sandbox.url}/amplitude/2/httpapi", json=payload)


def profile(sandbox: SandboxServer, user_id: str, **params: str) -> httpx2.Response:
    return httpx2.get(
        f"{sandbox.url}/amplitude/v1/userprofile",
        params={"user_id": user_id, **params},
        headers=PROFILE_AUTH,
    )


def test_success_body(sandbox: SandboxServer) -> None:
    response = post_events(sandbox, [event(0), event(1)])

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"code", "events_ingested", "payload_size_bytes", "server_upload_time"}
    assert body["code"] == 200
    assert body["events_ingested"] == 2
    assert body["payload_size_bytes"] == len(response.request.content)
    assert isinstance(body["server_upload_time"], int)


def test_same_insert_id_is_stored_once_per_user(sandbox: SandboxServer) -> None:
    post_events(sandbox, [event(0), event(0)])
    post_events(sandbox, [event(0)])
    post_events(sandbox, [event(0, user_id="trial-1001")])  # another user, another event

    rows = sandbox.state()["amplitude_events"]
    assert sorted((r["user_id"], r["insert_id"]) for r in rows) == [
        ("trial-1001", "call-9:0"),
        ("trial-1003", "call-9:0"),
    ]


def test_400_names_each_bad_event_by_field(sandbox: SandboxServer) -> None:
    response = post_events(
        sandbox,
        [
            event(0),
            event(1, event_type=""),
            event(2, time="yesterday"),
            event(3, user_id="abc"),
            {"event_type": "orphan"},
        ],
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_missing_fields": {"event_type": [1], "user_id": [4]},
        "events_with_invalid_fields": {"time": [2]},
        "events_with_invalid_id_lengths": {"user_id": [3]},
    }
    assert sandbox.state()["amplitude_events"] == []


def test_missing_api_key_and_events_name_the_missing_field(sandbox: SandboxServer) -> None:
    no_key = httpx2.post(f"{sandbox.url}/amplitude/2/httpapi", json={"events": [event(0)]})
    assert no_key.json() == {
        "code": 400,
        "error": "Request missing required field",
        "missing_field": "api_key",
    }
    no_events = post_events(sandbox, [])
    assert no_events.json()["missing_field"] == "events"


def test_413_over_the_event_or_byte_limit(sandbox: SandboxServer) -> None:
    limits = f"{sandbox.url}/amplitude/__sandbox/limits"
    httpx2.put(limits, json={"max_events_per_request": 2}).raise_for_status()
    too_many = post_events(sandbox, [event(i) for i in range(3)])
    assert too_many.status_code == 413
    assert too_many.json() == {"code": 413, "error": "Payload too large"}

    httpx2.put(
        limits, json={"max_events_per_request": 10, "max_payload_bytes": 300}
    ).raise_for_status()
    too_big = post_events(sandbox, [event(0, event_properties={"blob": "x" * 400})])
    assert too_big.status_code == 413

    sandbox.reset()
    assert httpx2.get(limits).json() == {
        "max_events_per_request": 2000,
        "max_payload_bytes": 1_000_000,
        "min_id_length": 5,
    }


def test_injected_429_names_the_requests_users(sandbox: SandboxServer) -> None:
    sandbox.add_fault(vendor="amplitude", operation="track", error_rate=1.0, status=429)

    response = post_events(sandbox, [event(0), event(1), event(2, user_id="trial-1001")])

    body = response.json()
    assert response.status_code == 429
    assert body["code"] == 429
    assert body["eps_threshold"] == 1000
    assert set(body["throttled_users"]) == {"trial-1003", "trial-1001"}
    assert body["throttled_events"] == [0, 1, 2]
    assert body["exceeded_daily_quota_users"] == {}
    assert "retry-after" not in response.headers


def test_profile_shape_and_flags(sandbox: SandboxServer) -> None:
    full = profile(sandbox, "trial-1001", get_amp_props="true").json()
    bare = profile(sandbox, "trial-1001").json()

    assert set(full["userData"]) == {
        "recommendations",
        "user_id",
        "device_id",
        "amp_props",
        "cohort_ids",
    }
    assert full["userData"]["recommendations"] is None
    assert full["userData"]["amp_props"]["documents_sent"] == 40
    assert bare["userData"]["amp_props"] is None


def test_profile_errors_as_documented(sandbox: SandboxServer) -> None:
    unknown = profile(sandbox, "trial-1004")
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "User id and device id not seen before"}

    url = f"{sandbox.url}/amplitude/v1/userprofile?user_id=trial-1001"
    missing = httpx2.get(url)
    wrong = httpx2.get(url, headers={"Authorization": "Api-Key nope"})
    assert (missing.status_code, missing.text) == (401, "Missing Api-Key in Authorization header")
    assert (wrong.status_code, wrong.text) == (401, "Invalid Api-Key")


def test_events_update_the_profile_and_reset_restores_it(sandbox: SandboxServer) -> None:
    post_events(sandbox, [event(0, user_properties={"$set": {"documents_sent": 6}})])
    props = profile(sandbox, "trial-1003", get_amp_props="true").json()["userData"]["amp_props"]
    assert props["documents_sent"] == 6

    sandbox.reset()
    state = sandbox.state()
    assert state["amplitude_events"] == []
    seeded = {
        row["user_id"]: json.loads(str(row["amp_props"])) for row in state["amplitude_profiles"]
    }
    assert set(seeded) == {p.trial_account_id for p in (DANA, MARCO, PRIYA)}  # devtools.people
    assert seeded["trial-1003"]["documents_sent"] == 5
