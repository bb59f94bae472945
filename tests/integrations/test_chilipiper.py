"""ChiliPiperClient against the sandbox over loopback HTTP: booking semantics and error classes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import httpx2
import pytest
from pydantic import SecretStr, ValidationError

from config.settings import SANDBOX_CREDENTIAL
from integrations.chilipiper import ChiliPiperClient, ChiliPiperGuest, MeetingStatus
from integrations.errors import (
    AmbiguousOutcomeError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from integrations.http import build_http_client
from tests.servers import SandboxServer

LINK = "pandadoc-trial-demo"


def make_client(
    sandbox: SandboxServer, http: httpx2.AsyncClient, *, token: str = SANDBOX_CREDENTIAL
) -> ChiliPiperClient:
    return ChiliPiperClient(
        http=http,
        base_url=f"{sandbox.url}/chilipiper",
        api_token=SecretStr(token),
        scheduling_link=LINK,
        clock=sandbox.clock,
    )


@pytest.fixture
def guest() -> ChiliPiperGuest:
    return ChiliPiperGuest(
        email="casey.morgan@orbitworks.example",
        first_name="Casey",
        last_name="Morgan",
        company="Orbitworks",
        phone="+14155550123",
        timezone="America/Chicago",
    )


def meeting_rows(sandbox: SandboxServer, email: str) -> list[dict[str, object]]:
    return [m for m in sandbox.state()["chilipiper_meetings"] if m["guest_email"] == email]


async def test_free_slots_are_future_working_hours_of_the_rep(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    free = await make_client(sandbox, http).find_free_slots(guest, timezone="Europe/Berlin")

    assert free.route_id
    assert free.meeting_minutes == 30
    assert len(free.slots) >= 40  # five business days of 30-minute slots, minus a few
    assert free.slots == sorted(free.slots)
    now = sandbox.clock()
    assert all(slot.tzinfo is not None and slot > now for slot in free.slots)
    assert all(slot.minute in (0, 30) for slot in free.slots)
    assert all(slot - now < timedelta(days=8) for slot in free.slots)


async def test_booking_takes_the_slot_off_the_free_list(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    client = make_client(sandbox, http)
    free = await client.find_free_slots(guest, timezone=guest.timezone)
    slot = free.slots[3]

    meeting = await client.book_slot(route_id=free.route_id, slot_start=slot, guest=guest)

    assert meeting.start == slot
    assert meeting.end == slot + timedelta(minutes=30)
    assert meeting.status is MeetingStatus.ACTIVE
    after = await client.find_free_slots(guest, timezone=guest.timezone)
    assert slot not in after.slots
    assert len(after.slots) == len(free.slots) - 1
    rows = meeting_rows(sandbox, guest.email)
    assert [(r["meeting_id"], r["guest_first_name"], r["guest_company"]) for r in rows] == [
        (meeting.meeting_id, "Casey", "Orbitworks")
    ]


async def test_booking_a_taken_slot_is_a_permanent_conflict(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    client = make_client(sandbox, http)
    first = await client.find_free_slots(guest, timezone=guest.timezone)
    second = await client.find_free_slots(guest, timezone=guest.timezone)
    slot = first.slots[0]
    await client.book_slot(route_id=first.route_id, slot_start=slot, guest=guest)

    with pytest.raises(PermanentError) as caught:
        await client.book_slot(route_id=second.route_id, slot_start=slot, guest=guest)

    assert caught.value.status_code == 409
    assert caught.value.error_code == "SlotNotAvailable"
    assert not caught.value.retryable
    assert len(meeting_rows(sandbox, guest.email)) == 1


async def test_list_and_cancel_guest_meetings(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    client = make_client(sandbox, http)
    assert await client.list_guest_meetings(guest.email) == []
    free = await client.find_free_slots(guest, timezone=guest.timezone)
    booked = await client.book_slot(route_id=free.route_id, slot_start=free.slots[-1], guest=guest)

    listed = await client.list_guest_meetings(guest.email.upper())

    assert [(m.meeting_id, m.start, m.end, m.status) for m in listed] == [
        (booked.meeting_id, booked.start, booked.end, MeetingStatus.ACTIVE)
    ]
    assert listed[0].guest_email == guest.email
    await client.cancel_meeting(booked.meeting_id)
    await client.cancel_meeting(booked.meeting_id)  # cancelling twice is harmless
    [cancelled] = await client.list_guest_meetings(guest.email)
    assert cancelled.status is MeetingStatus.CANCELED
    again = await client.find_free_slots(guest, timezone=guest.timezone)
    assert booked.start in again.slots


async def test_booking_timeout_that_still_books_is_ambiguous_then_reconciles(
    sandbox: SandboxServer, guest: ChiliPiperGuest
) -> None:
    sandbox.add_fault(
        vendor="chilipiper", operation="schedule_simple", after_commit_latency_ms=1500
    )
    async with build_http_client(read_timeout=0.4) as http:
        client = make_client(sandbox, http)
        free = await client.find_free_slots(guest, timezone=guest.timezone)

        with pytest.raises(AmbiguousOutcomeError) as caught:
            await client.book_slot(route_id=free.route_id, slot_start=free.slots[0], guest=guest)

        assert caught.value.operation == "schedule_simple"
        [meeting] = await client.list_guest_meetings(guest.email)
        assert meeting.start == free.slots[0]
        assert meeting.status is MeetingStatus.ACTIVE


async def test_gateway_timeout_on_booking_is_ambiguous(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    sandbox.add_fault(vendor="chilipiper", operation="schedule_simple", error_rate=1.0, status=504)
    client = make_client(sandbox, http)
    free = await client.find_free_slots(guest, timezone=guest.timezone)
    with pytest.raises(AmbiguousOutcomeError) as caught:
        await client.book_slot(route_id=free.route_id, slot_start=free.slots[0], guest=guest)
    assert caught.value.status_code == 504


async def test_hang_on_a_read_is_transient(sandbox: SandboxServer, guest: ChiliPiperGuest) -> None:
    sandbox.add_fault(vendor="chilipiper", operation="init_simple", hang=True)
    async with build_http_client(read_timeout=0.3) as http:
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await make_client(sandbox, http).find_free_slots(guest, timezone=guest.timezone)
    sandbox.reset()  # releases the hung handler
    assert time.monotonic() - started < 3
    assert caught.value.retryable


async def test_server_error_is_transient_and_keeps_the_vendor_body(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    sandbox.add_fault(
        vendor="chilipiper",
        operation="init_simple",
        error_rate=1.0,
        status=503,
        headers={"X-Request-Id": "req-7f3a"},
    )
    with pytest.raises(TransientError) as caught:
        await make_client(sandbox, http).find_free_slots(guest, timezone=guest.timezone)

    error = caught.value
    assert error.status_code == 503
    assert error.correlation_id == "req-7f3a"
    assert isinstance(error.body, dict) and error.body["errorCode"] == "InternalServerError"
    assert error.details()["kind"] == "transient"


async def test_rate_limit_carries_the_retry_after_delay(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    sandbox.add_fault(
        vendor="chilipiper",
        operation="list_meetings",
        error_rate=1.0,
        status=429,
        headers={"Retry-After": "7"},
    )
    with pytest.raises(RateLimitedError) as caught:
        await make_client(sandbox, http).list_guest_meetings(guest.email)
    assert caught.value.retry_after == 7.0
    assert caught.value.error_code == "TooManyRequests"


async def test_rate_limit_window_delay_comes_from_the_window(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    sandbox.add_fault(
        vendor="chilipiper",
        operation="init_simple",
        rate_limit={"limit": 1, "window_seconds": 30},
    )
    client = make_client(sandbox, http)
    await client.find_free_slots(guest, timezone=guest.timezone)
    with pytest.raises(RateLimitedError) as caught:
        await client.find_free_slots(guest, timezone=guest.timezone)
    assert 25 <= caught.value.retry_after <= 30


async def test_unknown_meeting_is_not_found(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(NotFoundError) as caught:
        await make_client(sandbox, http).cancel_meeting("00000000-0000-4000-8000-000000000000")
    assert caught.value.error_code == "MeetingNotFound"


async def test_used_route_is_not_found(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    client = make_client(sandbox, http)
    free = await client.find_free_slots(guest, timezone=guest.timezone)
    await client.book_slot(route_id=free.route_id, slot_start=free.slots[0], guest=guest)
    with pytest.raises(NotFoundError):
        await client.book_slot(route_id=free.route_id, slot_start=free.slots[1], guest=guest)


async def test_wrong_token_is_an_auth_error(
    sandbox: SandboxServer, http: httpx2.AsyncClient, guest: ChiliPiperGuest
) -> None:
    client = make_client(sandbox, http, token="not-the-token")
    with pytest.raises(AuthError) as caught:
        await client.find_free_slots(guest, timezone=guest.timezone)
    assert caught.value.status_code == 401
    assert "not-the-token" not in str(caught.value)


async def test_bad_input_is_refused_before_any_request(
    sandbox: SandboxServer, guest: ChiliPiperGuest
) -> None:
    sent: list[httpx2.Request] = []

    async def count(request: httpx2.Request) -> None:
        sent.append(request)

    async with httpx2.AsyncClient(event_hooks={"request": [count]}) as http:
        client = make_client(sandbox, http)
        with pytest.raises(ValidationError, match="timezone"):
            await client.find_free_slots(guest, timezone="Mars/Olympus_Mons")
        with pytest.raises(ValidationError, match="slot_start"):
            await client.book_slot(
                route_id="r-1", slot_start=datetime(2030, 1, 7, 15, 0), guest=guest
            )
        with pytest.raises(ValidationError, match="email"):
            await client.list_guest_meetings("casey at orbitworks")
        with pytest.raises(ValidationError, match="meeting_id"):
            await client.cancel_meeting("../../admin")
    assert sent == []

    with pytest.raises(ValidationError, match="email"):
        ChiliPiperGuest(email="nope", first_name="A", last_name="B", timezone="UTC")
    with pytest.raises(ValidationError, match="timezone"):
        ChiliPiperGuest(email="a@b.example", first_name="A", last_name="B", timezone="EST5")
    with pytest.raises(ValidationError, match="phone"):
        ChiliPiperGuest(
            email="a@b.example", first_name="A", last_name="B", timezone="UTC", phone="555-0100"
        )
