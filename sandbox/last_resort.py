"""Safety net: a sandbox bug answers the vendor's own 500 and is logged without request values.

Bad input never gets here (each route refuses it with a 4xx); tests treat any 500 as a defect.
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.faults import ErrorStyle

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "An unexpected error occurred in the sandbox"


class LastResortErrors:
    """Pure ASGI middleware: uvicorn would log the traceback, whose message may quote the body."""

    def __init__(self, app: ASGIApp, *, styles: dict[str, ErrorStyle]) -> None:
        self.app = app
        self.styles = styles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            # The client gave up (its timeout, a cancelled activity, a worker stopping): nobody
            # is left to answer, and it is no bug of ours.
            logger.info("client went away during %s %s", scope.get("method", "?"), _template(scope))
            return
        except Exception as exc:
            vendor = str(scope.get("path", "")).strip("/").split("/")[0]
            style = self.styles.get(vendor)
            # The route's template and the error's type only: the path and message may hold values.
            logger.error(
                "sandbox bug: %s in %s %s %s",
                type(exc).__name__,
                scope.get("method", "?"),
                vendor if style is not None else "control",
                _template(scope),
            )
            if started:
                raise
            response = (
                style.error(500, INTERNAL_ERROR_MESSAGE)
                if style is not None
                else JSONResponse({"detail": INTERNAL_ERROR_MESSAGE}, status_code=500)
            )
            await response(scope, receive, send)


def _template(scope: Scope) -> str:
    """The route's template, never the path itself (it may hold values)."""
    return str(getattr(scope.get("route"), "path", "an unmatched path"))
