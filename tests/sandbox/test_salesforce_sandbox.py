"""The Salesforce emulator's wire format and record semantics, spoken to with raw HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx2
import pytest

from config.settings import SANDBOX_CREDENTIAL
from devtools.people import DUPLICATE_TRIAL_ACCOUNT_ID
from tests.servers import SandboxServer

VERSION = "v62.0"
CLIENT_ID = "3MVG9trialist.connected.app"
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
NOT_FOUND = [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]


def token(sandbox: SandboxServer, **form: str) -> httpx2.Response:
    body = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SANDBOX_CREDENTIAL,
        **form,
    }
    return httpx2.post(f"{sandbox.url}/salesforce/services/oauth2/token", data=body)


class Session:
    """A client-credentials session, used exactly as the REST API documents."""

    def __init__(self, sandbox: SandboxServer) -> None:
        issued = token(sandbox)
        assert issued.status_code == 200, issued.text
        self.access_token: str = issued.json()["access_token"]
        self.instance_url: str = issued.json()["instance_url"]

    def url(self, path: str) -> str:
        return f"{self.instance_url}/services/data/{VERSION}/sobjects/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def patch(self, path: str, body: Any) -> httpx2.Response:
        return httpx2.patch(self.url(path), json=body, headers=self.headers())

    def get(self, path: str) -> httpx2.Response:
        return httpx2.get(self.url(path), headers=self.headers())


def test_client_credentials_token_is_signed_and_names_the_instance(
    sandbox: SandboxServer,
) -> None:
    response = token(sandbox)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["token_type"] == "Bearer" and body["instance_url"] == f"{sandbox.url}/salesforce"
    assert body["issued_at"].isdigit() and body["access_token"].startswith("00D")
    expected = hmac.new(
        SANDBOX_CREDENTIAL.encode(), f"{body['id']}{body['issued_at']}".encode(), hashlib.sha256
    )
    assert body["signature"] == base64.b64encode(expected.digest()).decode()
    assert "sforce-limit-info" not in response.headers


def test_token_accepts_client_credentials_in_basic_auth(sandbox: SandboxServer) -> None:
    basic = base64.b64encode(f"{CLIENT_ID}:{SANDBOX_CREDENTIAL}".encode()).decode()
    response = httpx2.post(
        f"{sandbox.url}/salesforce/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )

    assert response.status_code == 200 and response.json()["access_token"]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"client_secret": "wrong"}, ("invalid_client", "invalid client credentials")),
        ({"client_id": ""}, ("invalid_client_id", "client identifier invalid")),
        ({"grant_type": "password"}, ("unsupported_grant_type", "grant type not supported")),
    ],
)
def test_token_errors_are_oauth_error_bodies(
    sandbox: SandboxServer, form: dict[str, str], error: tuple[str, str]
) -> None:
    response = token(sandbox, **form)

    assert response.status_code == 400
    assert response.json() == {"error": error[0], "error_description": error[1]}
    assert sandbox.state()["salesforce_tokens"] == []


def test_token_needs_a_form_encoded_body(sandbox: SandboxServer) -> None:
    response = httpx2.post(
        f"{sandbox.url}/salesforce/services/oauth2/token",
        json={"grant_type": "client_credentials", "client_secret": SANDBOX_CREDENTIAL},
    )

    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


def test_upsert_by_external_id_creates_then_updates_one_record(sandbox: SandboxServer) -> None:
    api = Session(sandbox)
    lead = {"LastName": "Haddad", "Company": "Cobalt Forms", "Email": "lina@cobalt.example"}

    created = api.patch("Lead/Trial_Account_Id__c/trial-7001", lead)
    updated = api.patch("Lead/Trial_Account_Id__c/TRIAL-7001", {"Title": "COO"})

    assert created.status_code == 201
    record_id = created.json()["id"]
    assert created.json() == {"id": record_id, "success": True, "errors": [], "created": True}
    assert created.headers["location"] == f"/services/data/{VERSION}/sobjects/Lead/{record_id}"
    assert updated.status_code == 200
    assert updated.json() == {"id": record_id, "success": True, "errors": [], "created": False}
    record = api.get(f"Lead/{record_id}").json()
    assert record["attributes"] == {
        "type": "Lead",
        "url": f"/services/data/{VERSION}/sobjects/Lead/{record_id}",
    }
    assert (record["LastName"], record["Title"], record["Status"]) == (
        "Haddad",
        "COO",
        "Open - Not Contacted",
    )
    assert api.get(f"Lead/{record_id[:15]}").json()["Id"] == record_id  # 15-char ids work too
    by_external_id = api.get("Lead/Trial_Account_Id__c/trial-7001")
    assert by_external_id.json()["Id"] == record_id
    stored = [r for r in sandbox.state()["salesforce_records"] if r["id"] == record_id]
    assert len(stored) == 1


def test_an_external_id_on_two_records_answers_300(sandbox: SandboxServer) -> None:
    api = Session(sandbox)
    path = f"Lead/Trial_Account_Id__c/{DUPLICATE_TRIAL_ACCOUNT_ID}"

    upsert = api.patch(path, {"Title": "Owner"})
    read = api.get(path)

    for response in (upsert, read):
        assert response.status_code == 300
        urls = response.json()
        assert len(urls) == 2
        assert all(url.startswith(f"/services/data/{VERSION}/sobjects/Lead/00Q") for url in urls)
    # Neither record was written: each still reads (200) without the Title.
    reads = [api.get(f"Lead/{url.rsplit('/', 1)[1]}") for url in upsert.json()]
    assert [r.status_code for r in reads] == [200, 200]
    assert [r.json()["Title"] for r in reads] == [None, None]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "Widget__c/External__c/1"),
        ("GET", "Lead/00Q5g0000099999AAA"),
        ("GET", "Lead/Trial_Account_Id__c/nobody"),
    ],
)
def test_unknown_resources_are_404_not_found(
    sandbox: SandboxServer, method: str, path: str
) -> None:
    api = Session(sandbox)

    response = httpx2.request(method, api.url(path), json={}, headers=api.headers())

    assert response.status_code == 404 and response.json() == NOT_FOUND


def test_a_field_that_is_not_an_external_id_is_404(sandbox: SandboxServer) -> None:
    response = Session(sandbox).patch("Lead/Email/x@y.example", {"LastName": "X"})

    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"
    assert "external ID field" in response.json()[0]["message"]


def test_missing_expired_or_revoked_sessions_are_401(sandbox: SandboxServer) -> None:
    api = Session(sandbox)
    url = api.url("Lead/Trial_Account_Id__c/trial-7002")
    revoke = httpx2.post(
        f"{sandbox.url}/salesforce/services/oauth2/revoke", data={"token": api.access_token}
    )

    anonymous = httpx2.patch(url, json={})
    unknown = httpx2.patch(url, json={}, headers={"Authorization": "Bearer 00Dfake!token"})
    revoked = api.patch("Lead/Trial_Account_Id__c/trial-7002", {})

    assert revoke.status_code == 200
    for response in (anonymous, unknown, revoked):
        assert response.status_code == 401 and response.json() == INVALID_SESSION


@pytest.mark.parametrize(
    ("path", "body", "code", "fields"),
    [
        (
            "Lead/Trial_Account_Id__c/trial-7003",
            {"LastName": "X"},
            "REQUIRED_FIELD_MISSING",
            ["Company"],
        ),
        (
            "Lead/Trial_Account_Id__c/trial-1001",
            {"Email": "dana at northwind"},
            "INVALID_EMAIL_ADDRESS",
            ["Email"],
        ),
        (
            "Lead/Trial_Account_Id__c/trial-1001",
            {"FirstName": "x" * 41},
            "STRING_TOO_LONG",
            ["FirstName"],
        ),
        ("Lead/Trial_Account_Id__c/trial-1001", {"Nickname__c": "D"}, "INVALID_FIELD", None),
        (
            "Lead/Trial_Account_Id__c/trial-1001",
            {"Id": "00Q"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["Id"],
        ),
        (
            "Task/Voice_Call_Id__c/call-7003",
            {"Status": "Done-ish"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            ["Status"],
        ),
        ("Task/Voice_Call_Id__c/call-7003", {"WhoId": "nope"}, "MALFORMED_ID", ["WhoId"]),
        (
            "Task/Voice_Call_Id__c/call-7003",
            {"CallDurationInSeconds": "long"},
            "JSON_PARSER_ERROR",
            None,
        ),
        (
            "Event/Voice_Meeting_Id__c/m-7003",
            {"StartDateTime": "2025-01-02T10:00:00Z", "EndDateTime": "2025-01-02T09:00:00Z"},
            "FIELD_INTEGRITY_EXCEPTION",
            ["EndDateTime"],
        ),
    ],
)
def test_bad_field_values_are_400_json_array_errors(
    sandbox: SandboxServer, path: str, body: dict[str, Any], code: str, fields: list[str] | None
) -> None:
    before = sandbox.state()["salesforce_records"]

    response = Session(sandbox).patch(path, body)

    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == code and error["message"]
    assert error.get("fields") == fields
    assert sandbox.state()["salesforce_records"] == before


def test_malformed_json_is_a_parser_error(sandbox: SandboxServer) -> None:
    api = Session(sandbox)
    response = httpx2.patch(
        api.url("Lead/Trial_Account_Id__c/trial-7004"),
        content=b"{not json",
        headers={**api.headers(), "Content-Type": "application/json"},
    )

    assert response.status_code == 400 and response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_every_rest_response_carries_sforce_limit_info(sandbox: SandboxServer) -> None:
    api = Session(sandbox)
    sandbox.add_fault(
        vendor="salesforce", operation="upsert_task", error_rate=1.0, status=503, times=1
    )

    ok = api.patch("Lead/Trial_Account_Id__c/trial-1001", {"Title": "CEO"})
    invalid = api.patch("Lead/Trial_Account_Id__c/trial-1001", {"Email": "bad"})
    faulted = api.patch("Task/Voice_Call_Id__c/call-7005", {"Subject": "Call"})

    assert [r.status_code for r in (ok, invalid, faulted)] == [200, 400, 503]
    assert [r.headers["sforce-limit-info"] for r in (ok, invalid, faulted)] == [
        "api-usage=1/15000",
        "api-usage=2/15000",
        "api-usage=3/15000",
    ]
    assert faulted.json() == [{"message": "injected fault", "errorCode": "SERVER_UNAVAILABLE"}]


def test_a_rate_limit_window_answers_403_request_limit_exceeded(sandbox: SandboxServer) -> None:
    api = Session(sandbox)
    sandbox.add_fault(
        vendor="salesforce", operation="upsert_lead", rate_limit={"limit": 1, "window_seconds": 60}
    )

    first = api.patch("Lead/Trial_Account_Id__c/trial-1001", {"Title": "CEO"})
    second = api.patch("Lead/Trial_Account_Id__c/trial-1001", {"Title": "CTO"})

    assert first.status_code == 200
    assert second.status_code == 403
    assert second.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert "retry-after" not in second.headers


def test_reset_restores_the_seeded_org(sandbox: SandboxServer) -> None:
    seeded = sandbox.state()["salesforce_records"]
    api = Session(sandbox)
    api.patch("Lead/Trial_Account_Id__c/trial-7006", {"LastName": "Z", "Company": "Z"})

    sandbox.reset()

    state = sandbox.state()
    assert state["salesforce_tokens"] == [] and state["salesforce_requests"] == []
    leads = [(r["sobject"], r["fields"]) for r in state["salesforce_records"]]
    assert leads == [(r["sobject"], r["fields"]) for r in seeded]
    assert len(leads) == 3
