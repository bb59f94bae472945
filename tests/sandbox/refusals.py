"""Each vendor's refusal shape, as tests check it: status class, content type and body fields."""

from __future__ import annotations

from typing import Any

import httpx2

from config.settings import SANDBOX_CREDENTIAL
from tests.servers import SandboxServer

EDGE = "/chilipiper/api/fire-edge"
OBJECTS = "/hubspot/crm/v3/objects"
SF_DATA = "/salesforce/services/data/v60.0/sobjects"
SF_TOKEN = "/salesforce/services/oauth2/token"
BEARER = {"Authorization": f"Bearer {SANDBOX_CREDENTIAL}"}
JSON = {"Content-Type": "application/json"}


def salesforce_token(sandbox: SandboxServer) -> str:
    response = httpx2.post(
        f"{sandbox.url}{SF_TOKEN}",
        data={
            "grant_type": "client_credentials",
            "client_id": "trialist",
            "client_secret": SANDBOX_CREDENTIAL,
        },
        timeout=5,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def _json(response: httpx2.Response) -> Any:
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type"),
        response.text[:200],
    )
    return response.json()


def _assert_client_error(response: httpx2.Response, status: int | None) -> None:
    """A 4xx, and exactly `status` when one is given."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:200])


def salesforce_refusal(response: httpx2.Response, status: int | None = None) -> list[Any]:
    """Salesforce's REST error: a JSON array of {message, errorCode}."""
    _assert_client_error(response, status)
    body = _json(response)
    assert isinstance(body, list) and body, body
    for entry in body:
        assert isinstance(entry.get("message"), str) and isinstance(entry.get("errorCode"), str)
    return body


def oauth_refusal(response: httpx2.Response, error: str | None = None) -> dict[str, Any]:
    """Salesforce's OAuth endpoints answer 400 {error, error_description}."""
    assert response.status_code == 400, (response.status_code, response.text[:200])
    body = _json(response)
    assert isinstance(body.get("error"), str) and isinstance(body.get("error_description"), str)
    if error is not None:
        assert body["error"] == error, body
    return dict(body)


def hubspot_refusal(response: httpx2.Response, status: int | None = None) -> dict[str, Any]:
    """HubSpot's error: {status: error, message, correlationId, category}, id in the header too."""
    _assert_client_error(response, status)
    body = _json(response)
    assert body.get("status") == "error", body
    for key in ("message", "correlationId", "category"):
        assert isinstance(body.get(key), str), body
    assert response.headers["X-HubSpot-Correlation-Id"] == body["correlationId"]
    return dict(body)


def chilipiper_refusal(
    response: httpx2.Response, status: int | None = None
) -> str | dict[str, Any]:
    """Chili Piper: a 400 is text/plain `Invalid value for: …`, others {errorCode, errorMessage}."""
    _assert_client_error(response, status)
    if response.status_code == 400:
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        assert response.text.startswith("Invalid value for: "), response.text[:200]
        return response.text
    body = _json(response)
    assert isinstance(body.get("errorCode"), str) and isinstance(body.get("errorMessage"), str)
    return dict(body)


def amplitude_refusal(response: httpx2.Response, status: int | None = None) -> dict[str, Any]:
    """Amplitude's HTTP V2 error: {code: <status>, error}."""
    _assert_client_error(response, status)
    body = _json(response)
    assert body.get("code") == response.status_code and isinstance(body.get("error"), str), body
    return dict(body)


def control_refusal(response: httpx2.Response) -> dict[str, Any]:
    """The control API is ours: FastAPI's 422 with a `detail` list."""
    assert response.status_code == 422, (response.status_code, response.text[:200])
    body = _json(response)
    assert isinstance(body.get("detail"), list) and body["detail"], body
    return dict(body)


# Each request is logged in these (method, path, status); they change on refusals by design.
REQUEST_LOGS = frozenset({"salesforce_requests", "hubspot_requests"})


def records(sandbox: SandboxServer) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored record but the request logs, read in-process (cheaper than /__sandbox/state)."""
    state = sandbox.app.state.sandbox.state
    return {
        table: [tuple(row) for row in state.conn.execute(f'SELECT * FROM "{table}"')]
        for table in state.tables()
        if table not in REQUEST_LOGS and table != "sandbox_meta"
    }


def amplitude_profile_refusal(response: httpx2.Response, status: int | None = None) -> Any:
    """The User Profile API: 401 in text/plain, 400 as {error}."""
    _assert_client_error(response, status)
    if response.status_code == 401:
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        return response.text
    body = _json(response)
    assert isinstance(body.get("error"), str), body
    return body
