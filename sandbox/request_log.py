"""The emulated vendors' request log: every request (faults included) recorded, then stamped."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from sandbox.faults import FaultInjected

if TYPE_CHECKING:
    from sandbox.app import Sandbox


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


class LoggedRoute(APIRoute):
    """A vendor route that logs each request in `table` and lets `stamp` add the vendor's
    headers (usage, correlation ids) to every response, an injected fault's too."""

    table: ClassVar[str]

    @staticmethod
    def stamp(conn: sqlite3.Connection, request: Request, response: Response) -> None:
        """The vendor's headers on a response; none by default."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def logged(request: Request) -> Response:
            try:
                response = await handler(request)
            except FaultInjected as fault:
                response = fault.response
            conn = sandbox_of(request).state.conn
            conn.execute(
                f"INSERT INTO {self.table} (at, method, path, status) VALUES (?, ?, ?, ?)",
                (
                    datetime.now(UTC).isoformat(),
                    request.method,
                    request.url.path,
                    response.status_code,
                ),
            )
            self.stamp(conn, request, response)
            return response

        return logged
