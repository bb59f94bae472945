"""AmplitudeClient against the sandbox over loopback HTTP: tracking, profiles and error classes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx2
import pytest
from pydantic import SecretStr, ValidationError

from config.settings import SANDBOX_CREDENTIAL
from integrations.amplitude import (
    THROTTLED_RETRY_SECONDS,
    AmplitudeClient,
    AmplitudeEvent,
    insert_id_for,
)
from integrations.errors import (
    AuthError,
    InvalidEventsError,
    NotFoundError,
    PayloadTooLargeError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from integrations.http import build_http_client
from tests.servers import SandboxServer

CALL_ID = "call-4821"
ErrorT = TypeVar("ErrorT", bound=Exception)


def make_client(
    sandbox: SandboxServer,
    http: httpx2.AsyncClient,
    *,
    api_key: str = SANDBOX_CREDENTIAL,
    secret_key: str = SANDBOX_CREDENTIAL,
) -> AmplitudeClient:
    return AmplitudeClient(
        http=http,
        base_url=f"{sandbox.url}/amplitude",
        profile_base_url=f"{sandbox.url}/amplitude",
        api_key=SecretStr(api_key),
        secret_key=SecretStr(secret_key),
    )


def call_events(count: int, *, user_id: str = "trial-1002") -> list[AmplitudeEvent]:
    at = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    return [
        AmplitudeEvent(
            user_id=user_id,
            event_type=f"voice_call_step_{index}",
            time=at + timedelta(seconds=index),
            insert_id=insert_id_for(CALL_ID, f"voice_call_step_{index}"),
            event_properties={"call_id": CALL_ID, "step": index},
        )
        for index in range(count)
    ]


def stored(sandbox: SandboxServer) -> list[dict[str, object]]:
    return sandbox.state()["amplitude_events"]


def set_limits(sandbox: SandboxServer, **limits: int) -> None:
    httpx2.put(f"{sandbox.url}/amplitude/__sandbox/limits", json=limits).raise_for_status()


async def track_refused(
    sandbox: SandboxServer,
    http: httpx2.AsyncClient,
    expected: type[ErrorT],
    *,
    events: int = 1,
    **answer: object,
) -> ErrorT:
    """What tracking `events` events raises while Amplitude gives every upload `answer`."""
    sandbox.add_fault(vendor="amplitude", operation="track", error_rate=1.0, **answer)
    with pytest.raises(expected) as caught:
        await make_client(sandbox, http).track(call_events(events))
    return caught.value


async def test_track_stores_events_with_millisecond_times(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    events = call_events(3)
    result = await make_client(sandbox, http).track(events)

    assert result.events_ingested == 3
    assert result.requests == 1
    assert result.payload_size_bytes > 0
    assert result.server_upload_time is not None
    # The emulator stamps uploads with the wall clock, as Amplitude's servers do.
    assert abs(result.server_upload_time - datetime.now(UTC)) < timedelta(minutes=1)
    rows = stored(sandbox)
    assert [(r["insert_id"], r["time_ms"]) for r in rows] == [
        (e.insert_id, int(e.time.timestamp() * 1000)) for e in events
    ]


async def test_tracking_twice_stores_each_insert_id_once(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    await client.track(call_events(2))
    await client.track(call_events(3))

    insert_ids = [r["insert_id"] for r in stored(sandbox)]
    assert insert_ids == [insert_id_for(CALL_ID, f"voice_call_step_{i}") for i in range(3)]


async def test_payload_too_large_splits_until_every_event_is_ingested_once(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    set_limits(sandbox, max_events_per_request=2)
    events = call_events(7)

    result = await make_client(sandbox, http).track(events)

    assert result.events_ingested == 7
    # 7 -> 413; its halves 3 -> 413 -> 1 + 2 and 4 -> 413 -> 2 + 2: four accepted requests.
    assert result.requests == 4
    assert sorted(str(r["insert_id"]) for r in stored(sandbox)) == sorted(
        e.insert_id for e in events
    )


async def test_a_single_event_over_the_limit_is_payload_too_large(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    set_limits(sandbox, max_payload_bytes=200)
    [event] = call_events(1)
    big = event.model_copy(update={"event_properties": {"notes": "x" * 500}})

    with pytest.raises(PayloadTooLargeError) as caught:
        await make_client(sandbox, http).track([big])
    assert caught.value.status_code == 413
    assert stored(sandbox) == []


async def test_rejected_events_are_named_by_their_index_in_the_callers_batch(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    # Ids of 6 characters pass the documented minimum (5) but not this sandbox's (7),
    # and the 2-event limit forces a split, so indices must be mapped back to the whole batch.
    set_limits(sandbox, max_events_per_request=2, min_id_length=7)
    events = call_events(2, user_id="trial-1001") + call_events(2, user_id="tr-105")

    with pytest.raises(InvalidEventsError) as caught:
        await make_client(sandbox, http).track(events)

    assert caught.value.event_indices == [2, 3]
    assert caught.value.status_code == 400
    assert not caught.value.retryable
    assert caught.value.details()["event_indices"] == [2, 3]


async def test_injected_400_body_names_bad_events(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    body = {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [1]},
        "events_with_missing_fields": {"event_type": [0, 1]},
    }
    error = await track_refused(sandbox, http, InvalidEventsError, events=3, status=400, body=body)
    assert error.event_indices == [0, 1]


async def test_throttled_users_are_rate_limited_for_thirty_seconds(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    error = await track_refused(sandbox, http, RateLimitedError, events=2, status=429)

    assert error.retry_after == THROTTLED_RETRY_SECONDS == 30.0
    assert isinstance(error.body, dict)
    assert set(error.body["throttled_users"]) == {"trial-1002"}


async def test_retry_after_header_overrides_the_default_backoff(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    retry_after = {"Retry-After": "3"}
    error = await track_refused(sandbox, http, RateLimitedError, status=429, headers=retry_after)
    assert error.retry_after == 3.0


async def test_exceeded_daily_quota_only_is_permanent(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    body = {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": 1000,
        "throttled_users": {},
        "throttled_devices": {},
        "exceeded_daily_quota_users": {"trial-1002": 500001},
        "exceeded_daily_quota_devices": {},
    }
    error = await track_refused(sandbox, http, PermanentError, status=429, body=body)
    assert not isinstance(error, RateLimitedError)
    assert error.error_code == "ExceededDailyQuota"


async def test_server_errors_and_hangs_are_transient(sandbox: SandboxServer) -> None:
    sandbox.add_fault(vendor="amplitude", operation="track", error_rate=1.0, status=502, times=1)
    async with build_http_client(read_timeout=0.3) as http:
        client = make_client(sandbox, http)
        with pytest.raises(TransientError) as caught:
            await client.track(call_events(1))
        assert caught.value.status_code == 502
        # The fault applied once: the retry goes through and the event is stored once.
        assert (await client.track(call_events(1))).events_ingested == 1

        sandbox.add_fault(vendor="amplitude", operation="user_profile", hang=True)
        with pytest.raises(TransientError) as hung:
            await client.get_user_profile("trial-1001")
        assert hung.value.status_code is None
    sandbox.reset()  # releases the hung handler
    assert len(stored(sandbox)) == 0


async def test_wrong_api_key_is_an_auth_error(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http, api_key="wrong-key", secret_key="wrong-secret")
    with pytest.raises(AuthError):
        await client.track(call_events(1))
    with pytest.raises(AuthError) as caught:
        await client.get_user_profile("trial-1001")
    assert caught.value.status_code == 401
    assert "wrong-secret" not in str(caught.value)


async def test_power_user_profile_has_typed_trial_activity(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    profile = await make_client(sandbox, http).get_user_profile("trial-1001")

    assert profile.user_id == "trial-1001"
    assert profile.email == "dana.whitfield@northwind-legal.example"
    assert profile.documents_sent == 40
    assert profile.templates_used == 6
    assert {"templates", "e-signature"} <= set(profile.features_used)
    assert profile.last_active is not None
    assert sandbox.clock() - profile.last_active < timedelta(hours=3)  # seeded at its now
    assert profile.amp_props["documents_sent"] == 40


async def test_profiles_differ_by_activity(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    quiet = await client.get_user_profile("trial-1002")
    middle = await client.get_user_profile("trial-1003")
    power = await client.get_user_profile("trial-1001")
    assert quiet.documents_sent < middle.documents_sent < power.documents_sent
    assert quiet.templates_used == 0
    assert quiet.last_active is not None and middle.last_active is not None
    assert quiet.last_active < middle.last_active


async def test_user_without_profile_is_not_found_until_events_arrive(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    with pytest.raises(NotFoundError) as caught:
        await client.get_user_profile("trial-1004")
    assert caught.value.error_code == "UserNotSeen"

    [event] = call_events(1, user_id="trial-1004")
    await client.track([event.model_copy(update={"user_properties": {"documents_sent": 2}})])

    profile = await client.get_user_profile("trial-1004")
    assert profile.documents_sent == 2


async def test_profile_rate_limit_backs_off_a_minute(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    sandbox.add_fault(
        vendor="amplitude",
        operation="user_profile",
        rate_limit={"limit": 0, "window_seconds": 60},
    )
    with pytest.raises(RateLimitedError) as caught:
        await make_client(sandbox, http).get_user_profile("trial-1001")
    assert caught.value.retry_after == 60.0
    assert isinstance(caught.value.body, dict) and "per minute" in caught.value.body["error"]


async def test_bad_input_is_refused_before_any_request(sandbox: SandboxServer) -> None:
    sent: list[httpx2.Request] = []

    async def count(request: httpx2.Request) -> None:
        sent.append(request)

    async with httpx2.AsyncClient(event_hooks={"request": [count]}) as http:
        client = make_client(sandbox, http)
        with pytest.raises(ValidationError, match="user_id"):
            await client.get_user_profile("  ")
        assert (await client.track([])).requests == 0
    assert sent == []

    with pytest.raises(ValidationError, match="time"):
        AmplitudeEvent(
            user_id="trial-1001", event_type="x", time=datetime(2030, 1, 1), insert_id="c:x"
        )
    with pytest.raises(ValidationError, match="insert_id"):
        AmplitudeEvent(  # type: ignore[call-arg]
            user_id="trial-1001",
            event_type="x",
            time=datetime.now(UTC),  # any time will do
        )
    with pytest.raises(ValidationError, match="user_id"):
        AmplitudeEvent(user_id="abc", event_type="x", time=datetime.now(UTC), insert_id="c:x")
    with pytest.raises(ValueError, match="non-empty"):
        insert_id_for("", "call_completed")


def test_insert_ids_are_derived_from_the_call() -> None:
    assert insert_id_for("call-1", "call_completed") == "call-1:call_completed"
    assert insert_id_for("call-1", "note", index=2) == "call-1:note:2"
    assert AmplitudeClient.insert_id_for("call-1", "note") == "call-1:note"
