"""The sandbox ASGI app: four vendor APIs under path prefixes plus the `/__sandbox` control API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from config.clock import AdjustableClock, ClockMode
from sandbox import amplitude, chilipiper, hubspot, salesforce
from sandbox.faults import FaultBook, FaultInjected, FaultSpec
from sandbox.state import SandboxState

VENDOR_MODULES = (salesforce, hubspot, chilipiper, amplitude)


@dataclass
class Sandbox:
    state: SandboxState
    faults: FaultBook
    # Free slots, minimum notice and booking checks read this: pinned by tests and the demo.
    clock: AdjustableClock


def get_sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]


# A year is far more than any calendar check needs, and keeps datetime arithmetic in range.
MAX_CLOCK_SHIFT_SECONDS = 366 * 86400.0


class ClockRequest(BaseModel):
    """Pin the sandbox's now to `at` (frozen or running on), or shift it by `shift_seconds`."""

    model_config = ConfigDict(extra="forbid")

    at: AwareDatetime | None = None
    frozen: bool = False
    shift_seconds: float | None = Field(
        default=None, ge=-MAX_CLOCK_SHIFT_SECONDS, le=MAX_CLOCK_SHIFT_SECONDS, allow_inf_nan=False
    )

    @model_validator(mode="after")
    def _one_change(self) -> ClockRequest:
        if (self.at is None) == (self.shift_seconds is None):
            raise ValueError("give either `at` (an ISO 8601 instant with offset) or shift_seconds")
        return self


class ClockState(BaseModel):
    mode: ClockMode
    now: AwareDatetime
    offset_seconds: float


class ResetRequest(BaseModel):
    """Drop every record and seed again; `now` pins the clock first, so the seed follows it."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    now: AwareDatetime | None = None
    frozen: bool = False


control = APIRouter(prefix="/__sandbox", tags=["sandbox control"])


@control.get("/faults")
async def list_faults(sandbox: SandboxDep) -> list[FaultSpec]:
    return sandbox.faults.list()


@control.post("/faults", status_code=201)
async def add_fault(spec: FaultSpec, sandbox: SandboxDep) -> FaultSpec:
    sandbox.faults.add(spec)
    return spec


@control.delete("/faults", status_code=204)
async def clear_faults(
    sandbox: SandboxDep, vendor: Annotated[str | None, Query()] = None
) -> Response:
    sandbox.faults.clear(vendor)
    return Response(status_code=204)


@control.get("/state")
async def dump_state(sandbox: SandboxDep) -> dict[str, list[dict[str, Any]]]:
    return sandbox.state.dump()


@control.post("/reset")
async def reset(sandbox: SandboxDep, body: ResetRequest | None = None) -> dict[str, str]:
    """Faults cleared, the real clock back (unless `now` pins it), every record seeded again."""
    sandbox.faults.clear()
    if body is not None and body.seed is not None:
        sandbox.faults.seed = body.seed
    if body is not None and body.now is not None:
        sandbox.clock.pin(body.now, frozen=body.frozen)
    else:
        sandbox.clock.reset()
    sandbox.state.reset()
    return {"status": "reset"}


@control.get("/clock")
async def read_clock(sandbox: SandboxDep) -> ClockState:
    return _clock_state(sandbox.clock)


@control.post("/clock")
async def set_clock(change: ClockRequest, sandbox: SandboxDep) -> ClockState:
    """Pin or shift the sandbox's now; records already stored keep their times."""
    if change.at is not None:
        sandbox.clock.pin(change.at, frozen=change.frozen)
    elif change.shift_seconds is not None:
        sandbox.clock.shift(timedelta(seconds=change.shift_seconds))
    return _clock_state(sandbox.clock)


def _clock_state(clock: AdjustableClock) -> ClockState:
    reading = clock.reading()
    return ClockState(
        mode=reading.mode, now=reading.now, offset_seconds=round(reading.offset_seconds, 3)
    )


@control.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app(
    *, db_path: str = ":memory:", seed: int = 7, clock: AdjustableClock | None = None
) -> FastAPI:
    """Build the sandbox app over a SQLite file (or memory) with seeded data.

    `clock` is the sandbox's now (default: the wall clock until pinned through the control API).
    """
    app = FastAPI(title="Trialist vendor sandbox", docs_url="/__sandbox/docs", redoc_url=None)
    clock = clock or AdjustableClock()
    state = SandboxState(db_path, clock=clock)
    state.install([module.SCHEMA for module in VENDOR_MODULES])
    faults = FaultBook(seed=seed)
    for module in VENDOR_MODULES:
        faults.register_style(module.SCHEMA.vendor, module.ERROR_STYLE)
        app.include_router(module.router, prefix=f"/{module.SCHEMA.vendor}")
    app.include_router(control)
    app.state.sandbox = Sandbox(state=state, faults=faults, clock=clock)

    @app.exception_handler(FaultInjected)
    async def _fault(_: Request, exc: FaultInjected) -> Response:
        return exc.response

    return app
