"""SalesforceClient against the sandbox over loopback HTTP: upsert semantics and error classes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx2
import pytest
from pydantic import SecretStr, ValidationError

from config.settings import SANDBOX_CREDENTIAL
from devtools.people import DUPLICATE_TRIAL_ACCOUNT_ID
from integrations.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from integrations.http import build_http_client
from integrations.salesforce import (
    ALLOCATION_EXHAUSTED_RETRY_SECONDS,
    REQUEST_LIMIT_RETRY_SECONDS,
    UNKNOWN_COMPANY,
    SalesforceCallTask,
    SalesforceClient,
    SalesforceLead,
    SalesforceMeetingEvent,
)
from tests.servers import SandboxServer, free_port

ErrorT = TypeVar("ErrorT", bound=Exception)
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def make_client(
    sandbox: SandboxServer,
    http: httpx2.AsyncClient,
    *,
    secret: str = SANDBOX_CREDENTIAL,
    **options: Any,
) -> SalesforceClient:
    return SalesforceClient(
        http=http,
        base_url=f"{sandbox.url}/salesforce",
        client_id="trialist-connected-app",
        client_secret=SecretStr(secret),
        **options,
    )


def lead(trial_account_id: str = "trial-5001", **changes: Any) -> SalesforceLead:
    values: dict[str, Any] = {
        "trial_account_id": trial_account_id,
        "first_name": "Robin",
        "last_name": "Castillo",
        "email": "robin.castillo@tidewater.example",
        "company": "Tidewater Analytics",
        "phone": "+14155550188",
        "description": "Called by the voice agent.",
        "qualification_signals": {"team_size": "12", "timeline": "this quarter"},
    }
    return SalesforceLead(**{**values, **changes})


def records(sandbox: SandboxServer, sobject: str) -> list[dict[str, Any]]:
    rows = sandbox.state()["salesforce_records"]
    found = []
    for row in rows:
        if row["sobject"] == sobject:
            fields = json.loads(str(row["fields"]))
            found.append({"Id": row["id"], **fields})
    return found


def data_requests(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [
        r for r in sandbox.state()["salesforce_requests"] if "/services/data/" in str(r["path"])
    ]


async def lead_upsert_refused(
    sandbox: SandboxServer,
    http: httpx2.AsyncClient,
    expected: type[ErrorT],
    *,
    operation: str = "upsert_lead",
    **fault: object,
) -> ErrorT:
    """What upserting a lead raises while the sandbox injects `fault` into `operation`."""
    sandbox.add_fault(vendor="salesforce", operation=operation, **fault)
    with pytest.raises(expected) as caught:
        await make_client(sandbox, http).upsert_lead(lead())
    return caught.value


async def test_lead_upsert_creates_once_then_updates_the_same_record(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)

    first = await client.upsert_lead(lead())
    second = await client.upsert_lead(lead(title="Head of Operations", company="Tidewater Inc"))

    assert first.created and not second.created
    assert first.id == second.id and first.id.startswith("00Q") and len(first.id) == 18
    matching = [r for r in records(sandbox, "Lead") if r["Trial_Account_Id__c"] == "trial-5001"]
    assert len(matching) == 1
    stored = matching[0]
    assert stored["Company"] == "Tidewater Inc" and stored["Title"] == "Head of Operations"
    assert stored["Email"] == "robin.castillo@tidewater.example"
    assert (
        "team_size: 12" in stored["Description"]
        and "Qualification signals" in (stored["Description"])
    )


async def test_seeded_lead_is_updated_not_duplicated(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    before = [r for r in records(sandbox, "Lead") if r["Trial_Account_Id__c"] == "trial-1001"]

    result = await make_client(sandbox, http).upsert_lead(
        lead("TRIAL-1001", email="dana.whitfield@northwind-legal.example", company=None)
    )

    after = [r for r in records(sandbox, "Lead") if r["Trial_Account_Id__c"] == "trial-1001"]
    assert not result.created and result.id == before[0]["Id"]
    assert len(after) == 1
    assert after[0]["Company"] == "Northwind Legal"  # an unknown company keeps the CRM's value


async def test_new_lead_without_company_gets_the_placeholder(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    result = await make_client(sandbox, http).upsert_lead(lead("trial-5002", company=None))

    assert result.created
    stored = next(r for r in records(sandbox, "Lead") if r["Id"] == result.id)
    assert stored["Company"] == UNKNOWN_COMPANY


async def test_call_task_and_meeting_event_are_idempotent_and_linked_to_the_lead(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    lead_id = (await client.upsert_lead(lead("trial-5003"))).id
    started = datetime(2025, 3, 4, 23, 30, tzinfo=ZoneInfo("America/Los_Angeles"))
    task = SalesforceCallTask(
        call_id="call-5003",
        lead_id=lead_id,
        description="Discussed templates and e-signature.",
        started_at=started,
        duration_seconds=312,
        disposition="Meeting booked",
    )
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(
        days=2
    )  # an Event's time, no check
    event = SalesforceMeetingEvent(
        meeting_id="5f6d2a90-meeting", lead_id=lead_id, start=start, end=start + timedelta(hours=1)
    )

    first_task = await client.upsert_call_task(task)
    again_task = await client.upsert_call_task(task)
    first_event = await client.upsert_meeting_event(event)
    again_event = await client.upsert_meeting_event(event)

    assert (first_task.created, again_task.created) == (True, False)
    assert first_task.id == again_task.id and first_task.id.startswith("00T")
    assert (first_event.created, again_event.created) == (True, False)
    assert first_event.id == again_event.id and first_event.id.startswith("00U")
    tasks = [r for r in records(sandbox, "Task") if r["Voice_Call_Id__c"] == "call-5003"]
    assert len(tasks) == 1
    assert tasks[0]["WhoId"] == lead_id and tasks[0]["Status"] == "Completed"
    assert tasks[0]["TaskSubtype"] == "Call" and tasks[0]["CallDurationInSeconds"] == 312
    assert tasks[0]["ActivityDate"] == "2025-03-04"  # the caller's local date, not UTC's
    events = [r for r in records(sandbox, "Event") if r["Voice_Meeting_Id__c"] == event.meeting_id]
    assert len(events) == 1
    assert events[0]["WhoId"] == lead_id and events[0]["DurationInMinutes"] == 60


async def test_limit_info_reports_the_org_api_usage(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    assert client.limit_info is None

    await client.upsert_lead(lead("trial-5004"))
    await client.upsert_lead(lead("trial-5005"))

    assert client.limit_info is not None
    assert client.limit_info.used == len(data_requests(sandbox)) == 2
    assert client.limit_info.max == 15_000 and client.limit_info.remaining == 14_998


async def test_revoked_session_is_refreshed_once_and_the_request_retried(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http)
    await client.upsert_lead(lead("trial-5006"))
    [issued] = sandbox.state()["salesforce_tokens"]
    revoked = await http.post(
        f"{sandbox.url}/salesforce/services/oauth2/revoke", data={"token": issued["access_token"]}
    )
    assert revoked.status_code == 200

    result = await client.upsert_lead(lead("trial-5006", title="Founder"))

    assert not result.created
    tokens = sandbox.state()["salesforce_tokens"]
    assert len(tokens) == 2  # one refresh
    statuses = [r["status"] for r in data_requests(sandbox)]
    assert statuses == [201, 401, 200]


async def test_invalid_session_after_the_refresh_is_an_auth_error(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    error = await lead_upsert_refused(
        sandbox, http, AuthError, error_rate=1.0, status=401, body=INVALID_SESSION
    )

    assert error.error_code == "INVALID_SESSION_ID" and error.status_code == 401
    assert error.body == INVALID_SESSION
    assert len(sandbox.state()["salesforce_tokens"]) == 2  # the first session and one refresh
    assert [r["status"] for r in data_requests(sandbox)] == [401, 401]


async def test_refused_client_secret_is_an_auth_error_and_no_data_call_is_made(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(AuthError) as caught:
        await make_client(sandbox, http, secret="wrong-secret").upsert_lead(lead())

    assert caught.value.operation == "token" and caught.value.status_code == 400
    assert caught.value.error_code == "invalid_client"
    assert caught.value.body == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }
    assert data_requests(sandbox) == []


async def test_external_id_matching_two_leads_is_a_permanent_ambiguous_match(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    with pytest.raises(PermanentError) as caught:
        await make_client(sandbox, http).upsert_lead(lead(DUPLICATE_TRIAL_ACCOUNT_ID))

    error = caught.value
    assert error.status_code == 300 and error.error_code == "MULTIPLE_CHOICES"
    assert isinstance(error.body, list) and len(error.body) == 2
    assert all("/sobjects/Lead/00Q" in url for url in error.body)
    duplicates = [
        r
        for r in records(sandbox, "Lead")
        if r["Trial_Account_Id__c"] == DUPLICATE_TRIAL_ACCOUNT_ID
    ]
    assert len(duplicates) == 2  # neither record was touched


async def test_request_limit_exceeded_is_rate_limited_with_the_documented_delay(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    none_left = {"limit": 0, "window_seconds": 60}
    error = await lead_upsert_refused(sandbox, http, RateLimitedError, rate_limit=none_left)

    assert error.status_code == 403 and error.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert error.retry_after == REQUEST_LIMIT_RETRY_SECONDS


async def test_exhausted_daily_allocation_waits_longer(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    sandbox.add_fault(
        vendor="salesforce",
        operation="upsert_task",
        error_rate=1.0,
        status=403,
        body=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
        headers={"Sforce-Limit-Info": "api-usage=15000/15000"},
    )
    client = make_client(sandbox, http)
    # A timestamp on a record, not a calendar decision: the wall clock is fine.
    task = SalesforceCallTask(call_id="call-5008", started_at=datetime.now(UTC), duration_seconds=5)

    with pytest.raises(RateLimitedError) as caught:
        await client.upsert_call_task(task)

    assert caught.value.retry_after == ALLOCATION_EXHAUSTED_RETRY_SECONDS
    assert client.limit_info is not None and client.limit_info.remaining == 0


async def test_other_403_is_an_auth_error(sandbox: SandboxServer, http: httpx2.AsyncClient) -> None:
    error = await lead_upsert_refused(sandbox, http, AuthError, error_rate=1.0, status=403)

    assert error.error_code == "INSUFFICIENT_ACCESS"


async def test_unknown_external_id_field_is_not_found(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    client = make_client(sandbox, http, lead_external_id_field="Missing_Field__c")

    with pytest.raises(NotFoundError) as caught:
        await client.upsert_lead(lead())

    assert caught.value.status_code == 404 and caught.value.error_code == "NOT_FOUND"


async def test_invalid_field_value_is_permanent_with_the_vendor_code(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    task = SalesforceCallTask(
        call_id="call-5009",
        lead_id="00Q5g0000099999AAA",  # well-formed, but no such Lead
        started_at=datetime.now(UTC),  # a timestamp on a record, not a calendar decision
        duration_seconds=40,
    )

    with pytest.raises(PermanentError) as caught:
        await make_client(sandbox, http).upsert_call_task(task)

    assert caught.value.status_code == 400
    assert caught.value.error_code == "INVALID_CROSS_REFERENCE_KEY"
    assert records(sandbox, "Task") == []


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(
    sandbox: SandboxServer, http: httpx2.AsyncClient, status: int
) -> None:
    sandbox.add_fault(
        vendor="salesforce", operation="upsert_event", error_rate=1.0, status=status, times=1
    )
    start = datetime.now(UTC) + timedelta(days=1)  # an Event's time, no calendar check
    event = SalesforceMeetingEvent(
        meeting_id="m-5010", start=start, end=start + timedelta(minutes=30)
    )
    client = make_client(sandbox, http)

    with pytest.raises(TransientError) as caught:
        await client.upsert_meeting_event(event)

    assert caught.value.status_code == status
    assert (await client.upsert_meeting_event(event)).created  # the retry goes through


async def test_token_endpoint_outage_is_transient(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    error = await lead_upsert_refused(
        sandbox, http, TransientError, operation="token", error_rate=1.0, status=503
    )

    assert error.operation == "token" and error.status_code == 503


async def test_hung_upsert_times_out_as_transient(
    sandbox: SandboxServer, http: httpx2.AsyncClient
) -> None:
    sandbox.add_fault(vendor="salesforce", operation="upsert_lead", hang=True)
    try:
        async with build_http_client(read_timeout=0.3) as impatient:
            with pytest.raises(TransientError) as caught:
                await make_client(sandbox, impatient).upsert_lead(lead())
    finally:
        await http.delete(f"{sandbox.url}/__sandbox/faults")

    assert "ReadTimeout" in caught.value.message


async def test_unreachable_salesforce_is_transient(http: httpx2.AsyncClient) -> None:
    client = SalesforceClient(
        http=http,
        base_url=f"http://127.0.0.1:{free_port()}",
        client_id="trialist-connected-app",
        client_secret=SecretStr(SANDBOX_CREDENTIAL),
    )

    with pytest.raises(TransientError) as caught:
        await client.upsert_lead(lead())

    assert caught.value.operation == "token" and "ConnectError" in caught.value.message


def test_bad_input_is_refused_before_any_request(sandbox: SandboxServer) -> None:
    naive = datetime(2025, 1, 1, 10, 0)
    aware = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    cases: list[tuple[str, Any]] = [
        ("email", lambda: lead(email="not-an-email")),
        ("phone", lambda: lead(phone="555-0100")),
        ("trial_account_id", lambda: lead("trial/5001")),
        ("last_name", lambda: lead(last_name="")),
        (
            "started_at",
            lambda: SalesforceCallTask(call_id="c", started_at=naive, duration_seconds=1),
        ),
        (
            "lead_id",
            lambda: SalesforceCallTask(
                call_id="c", lead_id="not-an-id", started_at=aware, duration_seconds=1
            ),
        ),
        (
            "end",
            lambda: SalesforceMeetingEvent(meeting_id="m", start=aware, end=aware),
        ),
    ]
    for field, build in cases:
        with pytest.raises(ValidationError) as caught:
            build()
        assert field in str(caught.value), field

    assert sandbox.state()["salesforce_requests"] == []
    assert sandbox.state()["salesforce_tokens"] == []


async def test_client_configuration_is_checked_at_construction(http: httpx2.AsyncClient) -> None:
    with pytest.raises(ValueError, match="api_version"):
        SalesforceClient(
            http=http, base_url="x", client_id="a", client_secret=SecretStr("b"), api_version="62"
        )
    with pytest.raises(ValueError, match="lead_external_id_field"):
        SalesforceClient(
            http=http,
            base_url="x",
            client_id="a",
            client_secret=SecretStr("b"),
            lead_external_id_field="Bad Field",
        )


async def test_logs_name_the_operation_never_the_url_or_its_ids(
    sandbox: SandboxServer, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The Lead upsert's URL carries the trial account id; httpx2 would log it at INFO.
    with caplog.at_level(logging.DEBUG):
        await make_client(sandbox, http).upsert_lead(lead("trial-private-7001"))

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "upsert" in logged  # our own line: vendor, operation, status, time
    assert "trial-private-7001" not in logged
    assert sandbox.url not in logged and "/services/data/" not in logged
