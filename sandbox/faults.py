"""Fault injection: error rates, latency, hangs, rate-limit windows and slow commits."""

from __future__ import annotations

import asyncio
import builtins
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Vendor = Literal["salesforce", "hubspot", "chilipiper", "amplitude", "livekit"]

# Bounds keep every delay, window and header a fault sets inside what asyncio and HTTP accept.
MAX_DELAY_MS = 600_000.0
MAX_WINDOW_SECONDS = 86_400.0
MAX_FAULT_HEADERS = 32
HeaderName = Annotated[
    str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=256)
]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]*$", max_length=4096)]


class RateLimitWindow(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    limit: int = Field(
        ge=0, le=1_000_000, description="Requests allowed per window; the rest get a 429."
    )
    window_seconds: float = Field(gt=0, le=MAX_WINDOW_SECONDS)


class FaultSpec(BaseModel):
    """One fault rule. `operation="*"` matches every operation of the vendor."""

    model_config = ConfigDict(allow_inf_nan=False)

    vendor: Vendor
    operation: str = Field(default="*", max_length=200)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    status: int = Field(default=500, ge=400, le=599)
    body: Any = Field(default=None, description="Error body; None uses the vendor's own format.")
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_FAULT_HEADERS,
        description="Set on the fault's response: visible ASCII only, as HTTP/1.1 sends them.",
    )
    latency_ms: float = Field(
        default=0.0, ge=0.0, le=MAX_DELAY_MS, description="Added before the handler runs."
    )
    hang: bool = Field(
        default=False,
        description="Never respond until the fault is cleared (then answer 503); clients time out.",
    )
    rate_limit: RateLimitWindow | None = None
    after_commit_latency_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_DELAY_MS,
        description="Delay after the write commits: a timeout that still books.",
    )
    times: int | None = Field(default=None, ge=1, description="Apply at most this many times.")
    seed: int | None = Field(default=None, description="Makes error_rate draws reproducible.")


@dataclass
class ErrorStyle:
    """How a vendor shapes its error and 429 responses."""

    error: Callable[[int, str], Response]
    rate_limited: Callable[[float], Response]


@dataclass
class _ActiveFault:
    spec: FaultSpec
    rng: random.Random
    applied: int = 0
    hits: deque[float] = field(default_factory=deque)
    # Set when the fault is cleared: uvicorn does not cancel a handler whose client went away.
    released: asyncio.Event | None = None

    def exhausted(self) -> bool:
        return self.spec.times is not None and self.applied >= self.spec.times


class FaultInjected(Exception):
    """Raised inside a route; the app turns it into `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class FaultBook:
    """The faults currently set, keyed by vendor and operation."""

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._faults: list[_ActiveFault] = []
        self._styles: dict[str, ErrorStyle] = {}

    def register_style(self, vendor: str, style: ErrorStyle) -> None:
        self._styles[vendor] = style

    def add(self, spec: FaultSpec) -> None:
        seed = spec.seed if spec.seed is not None else self.seed
        self._faults.append(_ActiveFault(spec=spec, rng=random.Random(seed)))

    def clear(self, vendor: str | None = None) -> None:
        kept = [f for f in self._faults if vendor is not None and f.spec.vendor != vendor]
        kept_ids = {id(f) for f in kept}
        for fault in self._faults:
            if id(fault) not in kept_ids and fault.released is not None:
                fault.released.set()
        self._faults = kept

    def list(self) -> list[FaultSpec]:
        return [f.spec for f in self._faults if not f.exhausted()]

    # `builtins.list`: inside this class, `list` names the method above.
    def _matching(self, vendor: str, operation: str) -> builtins.list[_ActiveFault]:
        return [
            f
            for f in self._faults
            if f.spec.vendor == vendor
            and f.spec.operation in ("*", operation)
            and not f.exhausted()
        ]

    async def before(self, vendor: str, operation: str) -> None:
        """Apply latency, hangs, rate limits and errors; raise FaultInjected to answer early."""
        for fault in self._matching(vendor, operation):
            spec = fault.spec
            if spec.latency_ms:
                await asyncio.sleep(spec.latency_ms / 1000)
            if spec.hang:
                fault.applied += 1
                if fault.released is None:
                    fault.released = asyncio.Event()
                await fault.released.wait()
                # Never run the handler after a reset: a released hang answers with an error.
                raise FaultInjected(self._styles[vendor].error(503, "hang released"))
            if spec.rate_limit is not None:
                self._check_window(fault, vendor)
            if spec.error_rate and fault.rng.random() < spec.error_rate:
                fault.applied += 1
                raise FaultInjected(self._error_response(vendor, spec))
            if spec.latency_ms and spec.times is not None:
                fault.applied += 1

    async def after_commit(self, vendor: str, operation: str) -> None:
        """Delay the response of a write that has already committed."""
        for fault in self._matching(vendor, operation):
            if fault.spec.after_commit_latency_ms:
                fault.applied += 1
                await asyncio.sleep(fault.spec.after_commit_latency_ms / 1000)

    def _check_window(self, fault: _ActiveFault, vendor: str) -> None:
        window = fault.spec.rate_limit
        assert window is not None
        now = time.monotonic()
        while fault.hits and now - fault.hits[0] >= window.window_seconds:
            fault.hits.popleft()
        if len(fault.hits) >= window.limit:
            retry_after = window.window_seconds - (now - fault.hits[0]) if fault.hits else 1.0
            raise FaultInjected(self._styles[vendor].rate_limited(max(retry_after, 0.001)))
        fault.hits.append(now)

    def _error_response(self, vendor: str, spec: FaultSpec) -> Response:
        if spec.body is None:
            response = self._styles[vendor].error(spec.status, "injected fault")
        else:
            response = JSONResponse(status_code=spec.status, content=spec.body)
        for name, value in spec.headers.items():
            response.headers[name] = value
        return response
