"""The sandbox ASGI app: vendor APIs and LiveKit under path prefixes, plus `/__sandbox` control."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from config.clock import AdjustableClock, ClockMode
from sandbox import amplitude, chilipiper, hubspot, livekit, salesforce
from sandbox.faults import ErrorStyle, FaultBook, FaultInjected, FaultSpec
from sandbox.json_body import StrictJsonRoute, validation_failure
from sandbox.last_resort import LastResortErrors
from sandbox.state import SandboxState

VENDOR_MODULES = (salesforce, hubspot, chilipiper, amplitude, livekit)


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
# The sandbox's now stays here: seeding and the booking horizon add days to it without overflow.
EARLIEST_NOW = datetime(1971, 1, 1, tzinfo=UTC)
LATEST_NOW = datetime(9000, 1, 1, tzinfo=UTC)


def _within_clock_range(moment: datetime) -> datetime:
    if not EARLIEST_NOW <= moment <= LATEST_NOW:
        raise ValueError(f"the sandbox's now must lie in {EARLIEST_NOW.year}..{LATEST_NOW.year}")
    return moment


ClockInstant = Annotated[AwareDatetime, AfterValidator(_within_clock_range)]


class ClockRequest(BaseModel):
    """Pin the sandbox's now to `at` (frozen or running on), or shift it by `shift_seconds`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    at: ClockInstant | None = None
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
    now: ClockInstant | None = None
    frozen: bool = False


control = APIRouter(prefix="/__sandbox", tags=["sandbox control"], route_class=StrictJsonRoute)


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


@control.post("/clock", response_model=ClockState)
async def set_clock(change: ClockRequest, sandbox: SandboxDep) -> ClockState | Response:
    """Pin or shift the sandbox's now; records already stored keep their times."""
    if change.at is not None:
        sandbox.clock.pin(change.at, frozen=change.frozen)
    elif change.shift_seconds is not None:
        delta = timedelta(seconds=change.shift_seconds)
        try:
            _within_clock_range(sandbox.clock() + delta)
        except ValueError as out_of_range:
            return validation_failure((("body", "shift_seconds"), str(out_of_range), "value_error"))
        sandbox.clock.shift(delta)
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

    styles: dict[str, ErrorStyle] = {
        module.SCHEMA.vendor: module.ERROR_STYLE for module in VENDOR_MODULES
    }

    @app.exception_handler(FaultInjected)
    async def _fault(_: Request, exc: FaultInjected) -> Response:
        return exc.response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's 422 without `input`: a refused value is neither echoed nor re-rendered.
        errors = [(e["loc"], str(e["msg"]), str(e["type"])) for e in exc.errors()]
        return validation_failure(*errors)

    @app.exception_handler(HTTPException)
    async def _routing(request: Request, exc: HTTPException) -> Response:
        """An unknown path or method under a vendor's prefix answers in that vendor's shape."""
        vendor = request.url.path.strip("/").split("/")[0]
        style = styles.get(vendor)
        if style is None:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return style.error(exc.status_code, str(exc.detail))

    # Outermost: a bug answers the vendor's 500 and is logged without the request's values.
    app.add_middleware(LastResortErrors, styles=styles)
    return app
