"""The codec server over real HTTP: the token decodes; anything else is refused, with no payload."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest
import uvicorn
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from contracts.codec import EncryptionCodec, PayloadKey
from operators.codec_server import SESSION_COOKIE, CodecGate, build_codec_app
from tests.servers import free_port

TOKEN = "codec-test-token-0123456789abcdef"
UI = "http://localhost:8233"
KEY = PayloadKey.generate("key-1")
SECRET = b'{"email": "dana.whitfield@northwind-legal.example", "name": "Dana Whitfield"}'


class CodecServer:
    """The codec app served by uvicorn on a thread, as `trialist codec-server` serves it."""

    def __init__(self, codec: EncryptionCodec) -> None:
        self.port = free_port()
        app = build_codec_app(codec=codec, gate=CodecGate(token=TOKEN, allowed_origin=UI))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CodecServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the codec server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[CodecServer]:
    with CodecServer(EncryptionCodec(current=KEY)) as running:
        yield running


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=list(payloads)))


def sealed_secret() -> Payload:
    return EncryptionCodec(current=KEY).seal(
        Payload(metadata={"encoding": b"json/plain"}, data=SECRET)
    )


def post(server: CodecServer, path: str, content: str, **headers: str) -> httpx2.Response:
    return httpx2.post(
        server.url + path,
        content=content,
        headers={"Content-Type": "application/json", **headers},
        timeout=5,
    )


def assert_no_payload(response: httpx2.Response) -> None:
    text = response.text
    assert "dana" not in text.lower() and "northwind" not in text.lower()
    assert base64.b64encode(SECRET).decode()[:16] not in text
    assert set(response.json()) == {"error"}


def test_the_token_decodes_and_encodes(server: CodecServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    decoded = post(server, "/decode", body(sealed_secret()), **auth)
    assert decoded.status_code == 200
    (payload,) = json_format.Parse(decoded.text, Payloads()).payloads
    assert payload.data == SECRET and payload.metadata["encoding"] == b"json/plain"

    plain = Payload(metadata={"encoding": b"json/plain"}, data=SECRET)
    encoded = post(server, "/encode", body(plain), **auth)
    (sealed,) = json_format.Parse(encoded.text, Payloads()).payloads
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert EncryptionCodec(current=KEY).open(sealed) == plain


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}],
    ids=["no token", "wrong token", "not a bearer header"],
)
@pytest.mark.parametrize("path", ["/decode", "/encode"])
def test_without_the_token_it_is_401_and_no_payload(
    server: CodecServer, headers: dict[str, str], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = post(server, path, body(sealed_secret()), **headers)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert_no_payload(refused)
    assert "dana" not in caplog.text.lower() and TOKEN not in caplog.text


def test_another_origin_is_403_even_with_the_token(server: CodecServer) -> None:
    evil = "http://evil.example"
    refused = post(
        server, "/decode", body(sealed_secret()), Authorization=f"Bearer {TOKEN}", Origin=evil
    )
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert_no_payload(refused)
    preflight = httpx2.options(
        server.url + "/decode",
        headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_the_ui_origin_gets_cors_for_credentials_and_still_needs_the_token(
    server: CodecServer,
) -> None:
    preflight = httpx2.options(
        server.url + "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
        timeout=5,
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == UI
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "x-namespace" in preflight.headers["access-control-allow-headers"]
    anonymous = post(server, "/decode", body(sealed_secret()), Origin=UI, **{"X-Namespace": "d"})
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == UI  # so the UI can read why
    assert_no_payload(anonymous)


def test_the_browser_signs_in_once_and_its_cookie_decodes(server: CodecServer) -> None:
    with httpx2.Client(base_url=server.url, timeout=5) as browser:
        assert "Codec server sign-in" in browser.get("/login").text
        wrong = browser.post("/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and SESSION_COOKIE not in browser.cookies
        signed_in = browser.post("/login", data={"token": TOKEN})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == UI + "/"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie  # the cookie is derived from the token, not the token
        decoded = browser.post(
            "/decode",
            content=body(sealed_secret()),
            headers={"Content-Type": "application/json", "Origin": UI},
        )
    assert decoded.status_code == 200
    assert json_format.Parse(decoded.text, Payloads()).payloads[0].data == SECRET


def test_a_payload_under_an_unknown_key_is_422_naming_the_setting(server: CodecServer) -> None:
    other = EncryptionCodec(current=PayloadKey.generate("retired")).seal(Payload(data=SECRET))
    answer = post(server, "/decode", body(other), Authorization=f"Bearer {TOKEN}")
    assert answer.status_code == 422
    assert "PAYLOAD_ENCRYPTION_PREVIOUS_KEYS" in answer.json()["error"]
    assert "'retired'" in answer.json()["error"]
    assert_no_payload(answer)


def test_a_body_that_is_not_payloads_is_400_without_echo(server: CodecServer) -> None:
    junk = json.dumps({"payloads": "dana.whitfield@northwind-legal.example"})
    answer = post(server, "/decode", junk, Authorization=f"Bearer {TOKEN}")
    assert answer.status_code == 400
    assert_no_payload(answer)


def test_a_short_token_is_refused_at_start() -> None:
    from config.encryption import EncryptionSetupError

    with pytest.raises(EncryptionSetupError, match="at least 16 characters"):
        CodecGate(token="short", allowed_origin=UI)
