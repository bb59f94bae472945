"""The safety net: a sandbox bug answers the vendor's 500 (which every property test flags)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx2
import pytest

from sandbox import hubspot
from tests.sandbox.refusals import BEARER, OBJECTS
from tests.servers import SandboxServer

SECRET_IN_MESSAGE = "dana.whitfield@northwind-legal.example"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_logs() -> Iterator[Lines]:
    lines = Lines()
    # The root sees the sandbox's loggers; uvicorn's own do not propagate past "uvicorn".
    names = ("", "uvicorn")
    for name in names:
        logging.getLogger(name).addHandler(lines)
    yield lines
    for name in names:
        logging.getLogger(name).removeHandler(lines)


def test_a_parser_bug_is_a_vendor_shaped_500_logged_without_values(
    sandbox: SandboxServer, server_logs: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: object) -> None:
        raise ValueError(f"cannot read {SECRET_IN_MESSAGE}")

    monkeypatch.setattr(hubspot, "_search_failure", broken)
    response = httpx2.post(
        f"{sandbox.url}{OBJECTS}/contacts/search", json={"limit": 1}, headers=BEARER
    )

    assert response.status_code == 500
    body = response.json()
    assert body["status"] == "error" and body["category"] == "INTERNAL_ERROR"
    assert response.headers["X-HubSpot-Correlation-Id"] == body["correlationId"]
    assert SECRET_IN_MESSAGE not in response.text
    [bug] = [r for r in server_logs.records if r.name == "sandbox.last_resort"]
    assert bug.getMessage() == (
        "sandbox bug: ValueError in POST hubspot /crm/v3/objects/{object_type}/search"
    )
    for record in server_logs.records:
        assert SECRET_IN_MESSAGE not in record.getMessage()
        assert record.exc_info is None  # no traceback: its message would quote the value
    # The connection stays usable: the next request is answered normally.
    monkeypatch.undo()
    again = httpx2.post(f"{sandbox.url}{OBJECTS}/contacts/search", json={}, headers=BEARER)
    assert again.status_code == 200


async def test_a_client_that_hangs_up_mid_request_is_no_sandbox_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker stopping, or an activity cancelled, drops its request: an INFO line, no ERROR."""
    from sandbox.app import create_app

    app = create_app(db_path=":memory:")
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}  # gone before its body arrived

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{OBJECTS}/contacts/search",
        "raw_path": f"{OBJECTS}/contacts/search".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", BEARER["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"20"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8900),
        "app": app,
    }
    caplog.set_level(logging.INFO, logger="sandbox.last_resort")
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)

    assert sent == []  # nobody is left to answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    gone = [r for r in caplog.records if r.name == "sandbox.last_resort"]
    assert [r.getMessage() for r in gone] == [
        "client went away during POST /crm/v3/objects/{object_type}/search"
    ]
