"""One test per class of hostile input that made the sandbox answer 500 (issue 12)."""

from __future__ import annotations

import base64
from typing import Any

import httpx2
import pytest

from tests.sandbox.refusals import (
    BEARER,
    EDGE,
    JSON,
    OBJECTS,
    SF_DATA,
    SF_TOKEN,
    amplitude_refusal,
    chilipiper_refusal,
    control_refusal,
    hubspot_refusal,
    oauth_refusal,
    records,
    salesforce_refusal,
    salesforce_token,
)
from tests.servers import SandboxServer

TIMESTAMP = {"hs_timestamp": "2026-03-03T15:00:00Z"}
CONTACT_TYPE = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]


@pytest.mark.parametrize(
    "item",
    [
        "1001",
        1001,
        None,
        ["1001"],
        {"to": "1001", "types": CONTACT_TYPE},
        {"to": {"id": "1001"}, "types": "HUBSPOT_DEFINED"},
        {"to": {"id": "1001"}, "types": [194]},
        {"to": {"id": "1001"}, "types": 194},
        {"to": {"id": "²"}, "types": CONTACT_TYPE},
        {"to": {"id": "9" * 30}, "types": CONTACT_TYPE},
    ],
)
def test_non_object_association_items_get_hubspots_400(sandbox: SandboxServer, item: Any) -> None:
    before = records(sandbox)
    response = httpx2.post(
        f"{sandbox.url}{OBJECTS}/calls",
        json={"properties": TIMESTAMP, "associations": [item]},
        headers=BEARER,
    )
    hubspot_refusal(response, 400)
    assert records(sandbox) == before


@pytest.mark.parametrize(
    "body",
    [
        {"filterGroups": ["email"]},
        {"filterGroups": [7]},
        {"filterGroups": [{"filters": 5}]},
        {"filterGroups": [{"filters": "EQ"}]},
        {"filterGroups": [{"filters": [["email", "EQ"]]}]},
        {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "IN", "values": 3}]}]},
        {"filterGroups": {"filters": []}},
        {"properties": 5},
        {"properties": [["email"]]},
        {"after": "²"},
        {"limit": "10"},
        {"limit": True},
    ],
)
def test_wrongly_typed_search_filters_get_hubspots_400(
    sandbox: SandboxServer, body: dict[str, Any]
) -> None:
    response = httpx2.post(f"{sandbox.url}{OBJECTS}/contacts/search", json=body, headers=BEARER)
    hubspot_refusal(response, 400)


DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 3000 + b"1" + b"}" * 3000


@pytest.mark.parametrize("raw", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
def test_deeply_nested_json_is_refused_in_each_vendors_shape(
    sandbox: SandboxServer, raw: bytes
) -> None:
    sf_auth = {"Authorization": f"Bearer {salesforce_token(sandbox)}", **JSON}
    before = records(sandbox)
    with httpx2.Client(base_url=sandbox.url, timeout=10) as client:
        salesforce_refusal(
            client.patch(
                f"{SF_DATA}/Lead/Trial_Account_Id__c/t-deep", content=raw, headers=sf_auth
            ),
            400,
        )
        hs_auth = {**BEARER, **JSON}
        hubspot_refusal(client.post(f"{OBJECTS}/notes", content=raw, headers=hs_auth), 400)
        hubspot_refusal(client.post(f"{OBJECTS}/contacts/search", content=raw, headers=hs_auth))
        chilipiper_refusal(
            client.post(f"{EDGE}/v1/org/schedulingLinks/init-simple", content=raw, headers=hs_auth),
            400,
        )
        amplitude_refusal(client.post("/amplitude/2/httpapi", content=raw, headers=JSON), 400)
        control_refusal(client.post("/__sandbox/faults", content=raw, headers=JSON))
        assert client.get("/__sandbox/faults").json() == []
    assert records(sandbox) == before


@pytest.mark.parametrize("secret", ["sécret", "秘密", "\u00a0", "\x00", "😀" * 40])
def test_non_ascii_client_secret_is_an_invalid_client(sandbox: SandboxServer, secret: str) -> None:
    before = records(sandbox)
    form = {"grant_type": "client_credentials", "client_id": "trialist", "client_secret": secret}
    oauth_refusal(httpx2.post(f"{sandbox.url}{SF_TOKEN}", data=form), "invalid_client")
    basic = base64.b64encode(f"trialist:{secret}".encode()).decode()
    oauth_refusal(
        httpx2.post(
            f"{sandbox.url}{SF_TOKEN}",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        ),
        "invalid_client",
    )
    assert records(sandbox) == before


NAN_CONTROL_BODIES = [
    ("/__sandbox/faults", "post", b'{"vendor": NaN}'),
    ("/__sandbox/faults", "post", b'{"vendor": "hubspot", "operation": "x", "body": NaN}'),
    ("/__sandbox/faults", "post", b'{"vendor": "hubspot", "body": {"a": [Infinity]}}'),
    ("/__sandbox/faults", "post", b'{"vendor": "hubspot", "latency_ms": Infinity}'),
    ("/__sandbox/faults", "post", b'{"vendor": "hubspot", "error_rate": NaN}'),
    ("/__sandbox/faults", "post", b'{"vendor": "hubspot", "latency_ms": 1e400}'),
    (
        "/__sandbox/faults",
        "post",
        b'{"vendor": "hubspot", "rate_limit": {"limit": 0, "window_seconds": Infinity}}',
    ),
    ("/__sandbox/clock", "post", b'{"shift_seconds": NaN}'),
    ("/__sandbox/reset", "post", b'{"seed": NaN}'),
    ("/amplitude/__sandbox/limits", "put", b'{"min_id_length": NaN}'),
]


@pytest.mark.parametrize(("path", "method", "raw"), NAN_CONTROL_BODIES)
def test_nan_in_control_bodies_gets_422_and_changes_nothing(
    sandbox: SandboxServer, path: str, method: str, raw: bytes
) -> None:
    before = records(sandbox)
    with httpx2.Client(base_url=sandbox.url, timeout=5) as client:
        clock_before = client.get("/__sandbox/clock").json()
        control_refusal(client.request(method.upper(), path, content=raw, headers=JSON))
        faults = client.get("/__sandbox/faults")
        assert faults.status_code == 200 and faults.json() == []
        clock_after = client.get("/__sandbox/clock").json()
        # Unmoved: a ticking clock runs on the monotonic clock, so its offset to the wall
        # clock may differ by a few milliseconds between two readings; a refused change
        # would have moved it by the request's value or reset it.
        assert clock_after["mode"] == clock_before["mode"]
        assert abs(clock_after["offset_seconds"] - clock_before["offset_seconds"]) < 0.5
        assert client.get("/amplitude/__sandbox/limits").json()["min_id_length"] == 5
    assert records(sandbox) == before
