"""The codec server: Temporal's remote-codec `/encode` and `/decode`, for the UI and the CLI.

It opens payloads with the same keys as every client (config/encryption.py), so whoever holds the
token can read a history the server itself only stores encrypted. The rules:

- `/encode` and `/decode` need `Authorization: Bearer <CODEC_SERVER_TOKEN>` (the `temporal` CLI's
  `--codec-auth`), or the session cookie that `/login` sets once the token is typed there (the
  browser's way: the UI cannot send a token of ours; see docs/operators.md).
- CORS answers one origin, the UI's (CODEC_SERVER_UI_ORIGIN). A request from any other origin gets
  403, one without a valid token or cookie 401. A refusal carries no payload, and nothing here logs
  a request body.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final
from urllib.parse import parse_qs

import uvicorn
from google.protobuf import json_format
from google.protobuf.json_format import ParseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from config.encryption import EncryptionSetupError, codec_server_token, payload_keys
from config.settings import Settings
from contracts.codec import EncryptionCodec, PayloadKeyError

logger = logging.getLogger(__name__)

SESSION_COOKIE: Final = "trialist_codec_session"
SESSION_SECONDS: Final = 12 * 3600
MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # a page of a large history, well above one payload
MIN_TOKEN_CHARS: Final = 16
MAX_FORM_BYTES: Final = 4096
ALLOWED_HEADERS: Final = "content-type, x-namespace, authorization"

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


class CodecGate:
    """Who may use the codec: the token, its session cookie, and the one allowed origin."""

    def __init__(self, *, token: str, allowed_origin: str) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise EncryptionSetupError(
                f"CODEC_SERVER_TOKEN must be at least {MIN_TOKEN_CHARS} characters"
            )
        self._token = token.encode()
        self.allowed_origin = allowed_origin.rstrip("/")
        # The cookie holds a value derived from the token, not the token; it changes with it.
        self._session = hmac.new(self._token, b"trialist codec ui session", hashlib.sha256)

    def origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is None or origin.rstrip("/") == self.allowed_origin

    def token_valid(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def authorised(self, request: Request) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_valid(credential.strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())

    def session_value(self) -> str:
        return self._session.hexdigest()

    def cors_headers(self, request: Request) -> dict[str, str]:
        if request.headers.get("origin") is None:
            return {}
        return {
            "Access-Control-Allow-Origin": self.allowed_origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }


def build_codec_app(*, codec: EncryptionCodec, gate: CodecGate) -> Starlette:
    """The ASGI app: /encode, /decode, their CORS preflights, /login, /health."""

    async def preflight(request: Request) -> Response:
        if request.headers.get("origin") is None or not gate.origin_allowed(request):
            return _refusal(request, 403, "origin not allowed")
        headers = gate.cors_headers(request) | {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        }
        return Response(status_code=204, headers=headers)

    def endpoint(transform: Transform) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if not gate.origin_allowed(request):
                return _refusal(request, 403, "origin not allowed")
            cors = gate.cors_headers(request)
            if not gate.authorised(request):
                return _refusal(request, 401, "a valid bearer token is required", headers=cors)
            return await _transform(request, transform, cors)

        return handle

    async def login_form(request: Request) -> Response:
        return HTMLResponse(_login_page(gate.allowed_origin, failed=False))

    async def login(request: Request) -> Response:
        # One form field: the standard library's parser (starlette's form needs python-multipart).
        fields = parse_qs((await request.body())[:MAX_FORM_BYTES].decode("utf-8", "replace"))
        token = (fields.get("token") or [""])[0]
        if not gate.token_valid(token.strip()):
            logger.warning("codec server: refused a sign-in with a wrong token")
            return HTMLResponse(_login_page(gate.allowed_origin, failed=True), status_code=401)
        response = RedirectResponse(gate.allowed_origin + "/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            gate.session_value(),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/encode", endpoint(codec.encode), methods=["POST"]),
        Route("/decode", endpoint(codec.decode), methods=["POST"]),
        Route("/encode", preflight, methods=["OPTIONS"]),
        Route("/decode", preflight, methods=["OPTIONS"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


async def _transform(request: Request, transform: Transform, cors: dict[str, str]) -> Response:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _refusal(request, 415, "the body must be application/json", headers=cors)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _refusal(request, 413, f"the body is over {MAX_BODY_BYTES} bytes", headers=cors)
    try:
        payloads = json_format.Parse(body, Payloads())
    except (ParseError, UnicodeDecodeError):
        return _refusal(request, 400, "the body is not a JSON Payloads object", headers=cors)
    try:
        result = Payloads(payloads=await transform(payloads.payloads))
    except PayloadKeyError as error:  # names a key id and a setting, never the payload
        logger.warning("codec server: %s %s", request.url.path, error)
        return JSONResponse({"error": str(error)}, status_code=422, headers=cors)
    return Response(json_format.MessageToJson(result), media_type="application/json", headers=cors)


def _refusal(
    request: Request, status: int, reason: str, *, headers: dict[str, str] | None = None
) -> Response:
    origin = request.headers.get("origin") or "no origin"
    logger.warning(
        "codec server: refused %s %s (%s): %s", request.method, request.url.path, origin, reason
    )
    auth = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return JSONResponse({"error": reason}, status_code=status, headers=(headers or {}) | auth)


def _login_page(ui_origin: str, *, failed: bool) -> str:
    notice = "<p class=bad>That is not the codec server token.</p>" if failed else ""
    return f"""<!doctype html><html><head><meta charset=utf-8><title>Codec server sign-in</title>
<style>body{{font:15px system-ui;margin:3em auto;max-width:36em}}.bad{{color:#b00}}</style></head>
<body><h1>Codec server sign-in</h1>{notice}
<p>Paste the codec server token (CODEC_SERVER_TOKEN; with <code>make dev</code>, the file
<code>.data/codec-server-token</code>). This browser then decodes payloads in the Temporal UI at
{html.escape(ui_origin)}, with "Include cross-origin credentials" on in its codec settings.</p>
<form method=post action=/login><input name=token type=password size=48 autofocus required>
<button type=submit>Sign in</button></form></body></html>"""


def codec_app_from_settings(settings: Settings) -> Starlette:
    """The app with this deployment's keys and token; EncryptionSetupError when one is missing."""
    gate = CodecGate(
        token=codec_server_token(settings), allowed_origin=settings.codec_allowed_origin
    )
    return build_codec_app(codec=payload_keys(settings).codec(), gate=gate)


def serve_codec_server(settings: Settings) -> None:
    """Serve until interrupted on CODEC_SERVER_HOST:CODEC_SERVER_PORT."""
    app = codec_app_from_settings(settings)
    logger.info(
        "codec server on http://%s:%d (UI origin %s, public URL %s)",
        settings.codec_server_host,
        settings.codec_server_port,
        settings.codec_allowed_origin,
        settings.codec_server_public_url,
    )
    uvicorn.run(
        app,
        host=settings.codec_server_host,
        port=settings.codec_server_port,
        log_level="warning",
        server_header=False,
    )
