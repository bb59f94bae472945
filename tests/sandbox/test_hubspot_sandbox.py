"""The HubSpot emulator's wire format and CRM semantics, spoken to with raw HTTP."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx2
import pytest

from config.settings import SANDBOX_CREDENTIAL
from tests.servers import SandboxServer

AUTH = {"Authorization": f"Bearer {SANDBOX_CREDENTIAL}"}
RATE_LIMIT_HEADERS = (
    "x-hubspot-ratelimit-daily",
    "x-hubspot-ratelimit-daily-remaining",
    "x-hubspot-ratelimit-interval-milliseconds",
    "x-hubspot-ratelimit-max",
    "x-hubspot-ratelimit-remaining",
    "x-hubspot-ratelimit-secondly",
    "x-hubspot-ratelimit-secondly-remaining",
)


def api(sandbox: SandboxServer, path: str) -> str:
    return f"{sandbox.url}/hubspot/crm/v3/objects{path}"


def post(sandbox: SandboxServer, path: str, body: Any) -> httpx2.Response:
    return httpx2.post(api(sandbox, path), json=body, headers=AUTH)


def upsert(sandbox: SandboxServer, *people: tuple[str, dict[str, str]]) -> httpx2.Response:
    inputs = [{"idProperty": "email", "id": email, "properties": props} for email, props in people]
    return post(sandbox, "/contacts/batch/upsert", {"inputs": inputs})


def to_contact(contact_id: str, type_id: int) -> list[dict[str, Any]]:
    return [
        {
            "to": {"id": contact_id},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
        }
    ]


def search_body(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "filterGroups": [
            {"filters": [{"propertyName": "voice_call_id", "operator": "EQ", "value": value}]}
        ],
        **extra,
    }


def assert_error(response: httpx2.Response, status: int, category: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error" and body["category"] == category and body["message"]
    uuid.UUID(body["correlationId"])
    assert response.headers["x-hubspot-correlation-id"] == body["correlationId"]
    return body


def test_batch_upsert_by_email_reports_new_and_existing(sandbox: SandboxServer) -> None:
    response = upsert(
        sandbox,
        ("Dana.Whitfield@northwind-legal.example", {"jobtitle": "Managing Partner"}),
        ("eli.brandt@harbor.example", {"firstname": "Eli", "trial_account_id": "trial-8001"}),
    )

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "COMPLETE"
    assert {"requestedAt", "startedAt", "completedAt"} <= set(body)
    dana, eli = body["results"]
    assert (dana["id"], dana["new"], eli["new"]) == ("1001", False, True)
    assert dana["properties"]["jobtitle"] == "Managing Partner"
    assert dana["properties"]["company"] == "Northwind Legal"  # untouched properties stay
    assert eli["properties"]["email"] == "eli.brandt@harbor.example"
    assert eli["properties"]["hs_object_id"] == eli["id"]
    assert {"createdAt", "updatedAt", "archived"} <= set(eli) and eli["archived"] is False
    for name in RATE_LIMIT_HEADERS:
        assert response.headers[name].isdigit(), name
    again = upsert(sandbox, ("ELI.BRANDT@harbor.example", {"lastname": "Brandt"}))
    [eli_again] = again.json()["results"]
    assert eli_again["new"] is False and eli_again["id"] == eli["id"]
    assert eli_again["properties"]["lastname"] == "Brandt"
    contacts = [r for r in sandbox.state()["hubspot_objects"] if r["object_type"] == "contacts"]
    assert sorted(str(r["email"]) for r in contacts) == [
        "dana.whitfield@northwind-legal.example",
        "eli.brandt@harbor.example",
    ]


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([("nobody", {})], "INVALID_EMAIL"),
        ([("a@b.example", {"shoe_size": "9"})], "PROPERTY_DOESNT_EXIST"),
        ([("a@b.example", {"lifecyclestage": "friend"})], "INVALID_OPTION"),
        ([("a@b.example", {"createdate": "2020-01-01"})], "READ_ONLY_VALUE"),
        ([("a@b.example", {}), ("A@b.example", {})], "Duplicate IDs"),
        ([(f"p{n}@b.example", {}) for n in range(101)], "between 1 and 100"),
    ],
)
def test_batch_upsert_validation_errors(
    sandbox: SandboxServer, inputs: list[tuple[str, dict[str, str]]], fragment: str
) -> None:
    body = assert_error(upsert(sandbox, *inputs), 400, "VALIDATION_ERROR")

    assert fragment in body["message"]
    contacts = [r for r in sandbox.state()["hubspot_objects"] if r["object_type"] == "contacts"]
    assert len(contacts) == 1  # only the seed


def test_missing_or_wrong_token_is_401(sandbox: SandboxServer) -> None:
    for headers in ({}, {"Authorization": "Bearer pat-na1-nope"}):
        response = httpx2.get(api(sandbox, "/contacts/1001"), headers=headers)
        body = assert_error(response, 401, "INVALID_AUTHENTICATION")
        assert "Authentication credentials not found" in body["message"]


def test_engagement_create_associates_and_its_unique_key_conflicts(
    sandbox: SandboxServer,
) -> None:
    properties = {
        "hs_timestamp": "2025-05-06T15:00:00.000Z",
        "hs_call_title": "Trial call",
        "hs_call_duration": "245000",
        "hs_call_direction": "OUTBOUND",
        "hs_call_status": "COMPLETED",
        "voice_call_id": "call-8002:call",
    }

    created = post(
        sandbox, "/calls", {"properties": properties, "associations": to_contact("1001", 194)}
    )
    duplicate = post(sandbox, "/calls", {"properties": properties})

    assert created.status_code == 201
    call = created.json()
    assert call["properties"]["voice_call_id"] == "call-8002:call"
    assert call["properties"]["hs_object_id"] == call["id"]
    body = assert_error(duplicate, 409, "CONFLICT")
    assert body["message"].endswith(f"Existing ID: {call['id']}")
    read = httpx2.get(api(sandbox, f"/calls/{call['id']}?associations=contacts"), headers=AUTH)
    assert read.json()["associations"] == {
        "contacts": {"results": [{"id": "1001", "type": "call_to_contact"}]}
    }


@pytest.mark.parametrize(
    ("object_type", "properties", "associations", "fragment"),
    [
        ("notes", {"hs_note_body": "no time"}, None, "REQUIRED_PROPERTY"),
        ("notes", {"hs_timestamp": "yesterday"}, None, "INVALID_DATE"),
        (
            "calls",
            {"hs_timestamp": "1746543600000", "hs_call_duration": "long"},
            None,
            "INVALID_LONG",
        ),
        ("meetings", {"hs_timestamp": "1746543600000"}, to_contact("1001", 194), "not valid"),
        ("notes", {"hs_timestamp": "1746543600000"}, to_contact("424242", 202), "424242"),
    ],
)
def test_engagement_validation_errors(
    sandbox: SandboxServer,
    object_type: str,
    properties: dict[str, str],
    associations: list[dict[str, Any]] | None,
    fragment: str,
) -> None:
    body: dict[str, Any] = {"properties": properties}
    if associations is not None:
        body["associations"] = associations

    error = assert_error(post(sandbox, f"/{object_type}", body), 400, "VALIDATION_ERROR")

    assert fragment in error["message"]
    assert [r for r in sandbox.state()["hubspot_objects"] if r["object_type"] == object_type] == []


def test_creating_a_contact_whose_email_exists_is_409(sandbox: SandboxServer) -> None:
    response = post(
        sandbox, "/contacts", {"properties": {"email": "DANA.WHITFIELD@northwind-legal.example"}}
    )

    body = assert_error(response, 409, "CONFLICT")
    assert body["message"] == "Contact already exists. Existing ID: 1001"


def test_search_filters_groups_and_pages(sandbox: SandboxServer) -> None:
    for n in range(3):
        properties = {"hs_timestamp": "1746543600000", "voice_call_id": f"call-80{n}:note"}
        assert post(sandbox, "/notes", {"properties": properties}).status_code == 201

    one = post(sandbox, "/notes/search", search_body("CALL-801:NOTE", properties=["voice_call_id"]))
    either = post(
        sandbox,
        "/notes/search",
        {
            "filterGroups": [
                {"filters": [{"propertyName": "voice_call_id", "operator": "EQ", "value": v}]}
                for v in ("call-800:note", "call-802:note")
            ],
            "limit": 1,
        },
    )
    rest = post(sandbox, "/notes/search", {"limit": 1, "after": "1", "filterGroups": []})
    none = post(sandbox, "/calls/search", search_body("call-801:note"))

    assert one.status_code == 200
    assert one.json()["total"] == 1
    [hit] = one.json()["results"]
    assert hit["properties"]["voice_call_id"] == "call-801:note"
    assert set(hit["properties"]) == {
        "voice_call_id",
        "hs_createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    }
    assert either.json()["total"] == 2 and either.json()["paging"] == {"next": {"after": "1"}}
    assert rest.json()["total"] == 3 and len(rest.json()["results"]) == 1
    assert none.json() == {"total": 0, "results": []}


def test_search_refuses_too_many_filter_groups(sandbox: SandboxServer) -> None:
    groups = [search_body(f"x{n}")["filterGroups"][0] for n in range(6)]

    assert_error(post(sandbox, "/calls/search", {"filterGroups": groups}), 400, "VALIDATION_ERROR")


def test_rate_limit_window_answers_like_hubspot(sandbox: SandboxServer) -> None:
    sandbox.add_fault(
        vendor="hubspot",
        operation="batch_upsert_contacts",
        rate_limit={"limit": 1, "window_seconds": 10},
    )

    first = upsert(sandbox, ("a@b.example", {}))
    second = upsert(sandbox, ("a@b.example", {}))

    assert first.status_code == 200
    body = assert_error(second, 429, "RATE_LIMITS")
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert second.headers["x-hubspot-ratelimit-remaining"] == "0"
    assert second.headers["x-hubspot-ratelimit-interval-milliseconds"] == "10000"
    assert 1 <= int(second.headers["retry-after"]) <= 10


def test_injected_faults_use_hubspot_error_bodies(sandbox: SandboxServer) -> None:
    sandbox.add_fault(vendor="hubspot", operation="create_note", error_rate=1.0, status=423)

    response = post(sandbox, "/notes", {"properties": {"hs_timestamp": "1746543600000"}})

    assert_error(response, 423, "LOCKED")


def test_reset_restores_the_seeded_portal(sandbox: SandboxServer) -> None:
    upsert(sandbox, ("new@b.example", {}))
    post(sandbox, "/notes", {"properties": {"hs_timestamp": "1746543600000"}})

    sandbox.reset()

    state = sandbox.state()
    assert [(r["id"], r["email"]) for r in state["hubspot_objects"]] == [
        (1001, "dana.whitfield@northwind-legal.example")
    ]
    assert state["hubspot_associations"] == [] and state["hubspot_requests"] == []
    assert json.loads(str(state["hubspot_objects"][0]["properties"]))["firstname"] == "Dana"
