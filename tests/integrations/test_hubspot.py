"""HubSpotClient against the sandbox over loopback HTTP: upserts, idempotent engagements, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr, ValidationError

from config.settings import SANDBOX_CREDENTIAL
from integrations.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from integrations.http import build_http_client
from integrations.hubspot import (
    SECONDLY_DELAY_SECONDS,
    TEN_SECONDLY_DELAY_SECONDS,
    HubSpotCall,
    HubSpotClient,
    HubSpotContact,
    HubSpotMeeting,
    HubSpotNote,
    classify_response,
)
from tests.servers import SandboxServer

SEEDED_CONTACT_ID = "1001"
CORRELATION_ID = "5d3f0c1e-8a51-4b1b-9f0e-0c2b7d9a4e11"


def make_client(
    sandbox: SandboxServer, http: httpx2.AsyncClient, *, token: str = SANDBOX_CREDENTIAL
) -> HubSpotClient:
    return HubSpotClient(
        http=http, base_url=f"{sandbox.url}/hubspot", access_token=SecretStr(token)
    )


def contact(email: str = "sam.oduya@quarry-labs.example", **changes: Any) -> HubSpotContact:
    values: dict[str, Any] = {
        "email": email,
        "first_name": "Sam",
        "last_name": "Oduya",
        "company": "Quarry Labs",
        "trial_account_id": "trial-6001",
        "qualification_signals": {"team_size": "8", "use_case": "sales proposals"},
    }
    return HubSpotContact(**{**values, **changes})


def objects(sandbox: SandboxServer, object_type: str) -> list[dict[str, Any]]:
    rows = [r for r in sandbox.state()["hubspot_objects"] if r["object_type"] == object_type]
    return [{**row, "properties": json.loads(str(row["properties"]))} for row in rows]


def requests_made(sandbox: SandboxServer) -> list[dict[str, object]]:
    return sandbox.state()["hubspot_requests"]


def call(call_id: str = "call-6001") -> HubSpotCall:
    return HubSpotCall(
        call_id=call_id,
        body="Talked about proposal templates.",
        started_at=datetime(2025, 5, 6, 15, 0, tzinfo=UTC),
        duration_seconds=245,
    )


def rate_limit_body(policy: str) -> dict[str, Any]:
    return {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": CORRELATION_ID,
        "policyName": policy,
        "requestId": "0b8f1c52-2f3e-4a8e-9d6b-1b9c2e7f5a10",
    }


async def test_contact_upsert_by_email_creates_once_then_updates(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)

    first = await client.upsert_contact(contact())
    second = await client.upsert_contact(contact("Sam.Oduya@Quarry-Labs.example", company="QL"))

    assert first.created and not second.created
    assert first.id == second.id and first.email == "sam.oduya@quarry-labs.example"
    stored = [c for c in objects(sandbox, "contacts") if c["email"] == first.email]
    assert len(stored) == 1
    properties = stored[0]["properties"]
    assert properties["company"] == "QL" and properties["firstname"] == "Sam"
    assert properties["trial_qualification"] == "team_size: 8; use_case: sales proposals"


async def test_seeded_contact_is_updated_and_keeps_fields_not_sent(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    ref = await make_client(sandbox, http).upsert_contact(
        HubSpotContact(email="dana.whitfield@northwind-legal.example", phone="+12125550147")
    )

    assert ref.id == SEEDED_CONTACT_ID and not ref.created
    [dana] = [c for c in objects(sandbox, "contacts") if c["id"] == int(SEEDED_CONTACT_ID)]
    assert dana["properties"]["phone"] == "+12125550147"
    assert dana["properties"]["company"] == "Northwind Legal"


async def test_batch_upsert_returns_refs_in_input_order_in_chunks_of_100(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    people = [contact(f"person{n:03d}@batch.example", first_name=f"P{n}") for n in range(150)]
    people.insert(75, HubSpotContact(email="dana.whitfield@northwind-legal.example"))

    refs = await make_client(sandbox, http).batch_upsert_contacts(people)

    assert [r.email for r in refs] == [str(p.email) for p in people]
    assert refs[75].id == SEEDED_CONTACT_ID and not refs[75].created
    assert sum(r.created for r in refs) == 150
    assert len({r.id for r in refs}) == 151
    assert len(requests_made(sandbox)) == 2


async def test_engagements_are_created_once_per_call_and_associated_to_the_contact(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    contact_id = (await client.upsert_contact(contact())).id
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)  # record times only
    note = HubSpotNote(call_id="call-6002", body="Wants a demo for the team.", timestamp=start)
    meeting = HubSpotMeeting(
        call_id="call-6002",
        meeting_id="cp-meeting-1",
        start=start,
        end=start + timedelta(minutes=30),
    )

    made = [
        await client.create_call(call("call-6002"), contact_id=contact_id),
        await client.create_note(note, contact_id=contact_id),
        await client.create_meeting(meeting, contact_id=contact_id),
    ]
    again = [
        await client.create_call(call("call-6002"), contact_id=contact_id),
        await client.create_note(note, contact_id=contact_id),
        await client.create_meeting(meeting, contact_id=contact_id),
    ]

    assert [ref.created for ref in made] == [True, True, True]
    assert [ref.created for ref in again] == [False, False, False]
    assert [ref.id for ref in made] == [ref.id for ref in again]
    for object_type, key in (
        ("calls", "call-6002:call"),
        ("notes", "call-6002:note"),
        ("meetings", "call-6002:meeting"),
    ):
        rows = objects(sandbox, object_type)
        assert [row["voice_call_id"] for row in rows] == [key]
    call_row = objects(sandbox, "calls")[0]["properties"]
    assert call_row["hs_call_duration"] == "245000" and call_row["hs_call_status"] == "COMPLETED"
    links = {
        (a["from_type"], a["to_id"], a["type_id"]) for a in sandbox.state()["hubspot_associations"]
    }
    assert links == {
        ("calls", int(contact_id), 194),
        ("notes", int(contact_id), 202),
        ("meetings", int(contact_id), 200),
    }


async def test_a_create_not_yet_searchable_is_found_through_the_conflict(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    first = await client.create_call(call("call-6003"), contact_id=SEEDED_CONTACT_ID)
    # Real search indexes new objects seconds late: hide recent ones from search.
    sandbox.app.state.sandbox.state.conn.execute("UPDATE hubspot_portal SET search_lag_ms = 60000")

    again = await client.create_call(call("call-6003"), contact_id=SEEDED_CONTACT_ID)

    assert again.id == first.id and not again.created
    assert len(objects(sandbox, "calls")) == 1
    statuses = [(r["path"], r["status"]) for r in requests_made(sandbox)][-2:]
    assert statuses == [
        ("/hubspot/crm/v3/objects/calls/search", 200),
        ("/hubspot/crm/v3/objects/calls", 409),
    ]


async def test_association_to_a_missing_contact_is_permanent(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(PermanentError) as caught:
        await make_client(sandbox, http).create_call(call(), contact_id="999999")

    assert caught.value.status_code == 400 and caught.value.error_code == "VALIDATION_ERROR"
    assert caught.value.correlation_id
    assert objects(sandbox, "calls") == []


async def test_refused_token_is_an_auth_error_with_the_correlation_id(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(AuthError) as caught:
        await make_client(sandbox, http, token="pat-na1-wrong").upsert_contact(contact())

    error = caught.value
    assert error.status_code == 401 and error.error_code == "INVALID_AUTHENTICATION"
    assert isinstance(error.body, dict) and error.correlation_id == error.body["correlationId"]


@pytest.mark.parametrize(
    ("status", "category", "expected"),
    [
        (400, "VALIDATION_ERROR", PermanentError),
        (403, "MISSING_SCOPES", AuthError),
        (404, "OBJECT_NOT_FOUND", NotFoundError),
        (409, "CONFLICT", PermanentError),
        (423, "LOCKED", TransientError),
        (500, "INTERNAL_ERROR", TransientError),
        (502, "INTERNAL_ERROR", TransientError),
    ],
)
async def test_error_statuses_map_to_the_taxonomy(
    sandbox: SandboxServer,
    http: httpx2.AsyncClient,
    status: int,
    category: str,
    expected: type[Exception],
) -> None:
    sandbox.add_fault(
        vendor="hubspot", operation="batch_upsert_contacts", error_rate=1.0, status=status
    )

    with pytest.raises(expected) as caught:
        await make_client(sandbox, http).upsert_contact(contact())

    error = caught.value
    assert type(error) is expected
    assert getattr(error, "status_code", None) == status
    assert getattr(error, "error_code", None) == category
    assert getattr(error, "correlation_id", None)


async def test_rate_limit_window_uses_retry_after(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    sandbox.add_fault(
        vendor="hubspot", operation="search_notes", rate_limit={"limit": 1, "window_seconds": 30}
    )
    client = make_client(sandbox, http)
    note = HubSpotNote(call_id="call-6004", body="n", timestamp=datetime.now(UTC))  # any time
    await client.create_note(note, contact_id=SEEDED_CONTACT_ID)

    with pytest.raises(RateLimitedError) as caught:
        await client.create_note(note, contact_id=SEEDED_CONTACT_ID)

    assert caught.value.error_code == "TEN_SECONDLY_ROLLING"
    assert caught.value.retry_after == 30.0  # the window's Retry-After, in whole seconds


@pytest.mark.parametrize(
    ("policy", "headers", "delay"),
    [
        ("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, 10.0),
        ("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "2500"}, 2.5),
        ("TEN_SECONDLY_ROLLING", {"Retry-After": "4"}, 4.0),
        ("SECONDLY", {}, SECONDLY_DELAY_SECONDS),
    ],
)
async def test_throttles_without_retry_after_use_the_policy_window(
    sandbox: SandboxServer,
    http: httpx2.AsyncClient,
    policy: str,
    headers: dict[str, str],
    delay: float,
) -> None:
    sandbox.add_fault(
        vendor="hubspot",
        operation="create_call",
        error_rate=1.0,
        status=429,
        body=rate_limit_body(policy),
        headers=headers,
    )

    with pytest.raises(RateLimitedError) as caught:
        await make_client(sandbox, http).create_call(call(), contact_id=SEEDED_CONTACT_ID)

    assert caught.value.retry_after == delay
    assert caught.value.error_code == policy and caught.value.correlation_id == CORRELATION_ID


def test_ten_secondly_default_delay_without_any_header() -> None:
    response = httpx2.Response(429, json=rate_limit_body("TEN_SECONDLY_ROLLING"))

    error = classify_response(response, "create_call")

    assert isinstance(error, RateLimitedError)
    assert error.retry_after == TEN_SECONDLY_DELAY_SECONDS


async def test_daily_limit_is_permanent(sandbox: SandboxServer, http: httpx2.AsyncClient) -> None:
    sandbox.add_fault(
        vendor="hubspot",
        operation="batch_upsert_contacts",
        error_rate=1.0,
        status=429,
        body=rate_limit_body("DAILY"),
    )

    with pytest.raises(PermanentError) as caught:
        await make_client(sandbox, http).upsert_contact(contact())

    assert not isinstance(caught.value, RateLimitedError)
    assert caught.value.error_code == "DAILY" and caught.value.correlation_id == CORRELATION_ID


async def test_hung_request_times_out_as_transient(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    sandbox.add_fault(vendor="hubspot", operation="search_calls", hang=True)
    try:
        async with build_http_client(read_timeout=0.3) as impatient:
            with pytest.raises(TransientError) as caught:
                await make_client(sandbox, impatient).create_call(
                    call(), contact_id=SEEDED_CONTACT_ID
                )
    finally:
        await http.delete(f"{sandbox.url}/__sandbox/faults")

    assert caught.value.operation == "search_calls" and "ReadTimeout" in caught.value.message
    assert objects(sandbox, "calls") == []


async def test_bad_input_is_refused_before_any_request(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    naive = datetime(2025, 5, 6, 15, 0)
    aware = naive.replace(tzinfo=UTC)
    builders: list[tuple[str, Any]] = [
        ("email", lambda: HubSpotContact(email="sam@")),
        ("phone", lambda: HubSpotContact(email="a@b.example", phone="0800 123")),
        ("started_at", lambda: HubSpotCall(call_id="c", started_at=naive, duration_seconds=1)),
        ("timestamp", lambda: HubSpotNote(call_id="c", body="x", timestamp=naive)),
        ("call_id", lambda: HubSpotNote(call_id="bad id!", body="x", timestamp=aware)),
        (
            "end",
            lambda: HubSpotMeeting(call_id="c", meeting_id="m", start=aware, end=aware),
        ),
    ]
    for field, build in builders:
        with pytest.raises(ValidationError) as caught:
            build()
        assert field in str(caught.value), field
    with pytest.raises(ValidationError, match="contact_id"):
        await client.create_call(call(), contact_id="not-a-number")
    with pytest.raises(ValidationError, match="same email"):
        await client.batch_upsert_contacts([contact(), contact("SAM.ODUYA@quarry-labs.example")])
    with pytest.raises(ValidationError, match="contacts"):
        await client.batch_upsert_contacts([])

    assert requests_made(sandbox) == []
