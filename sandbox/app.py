"""The sandbox ASGI app: vendor APIs and LiveKit under path prefixes, plus `/__sandbox` control."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel

from sandbox import amplitude, chilipiper, hubspot, livekit, salesforce
from sandbox.faults import FaultBook, FaultInjected, FaultSpec
from sandbox.state import SandboxState

VENDOR_MODULES = (salesforce, hubspot, chilipiper, amplitude, livekit)


@dataclass
class Sandbox:
    state: SandboxState
    faults: FaultBook


def get_sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]


class ResetRequest(BaseModel):
    seed: int | None = None


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
    sandbox.faults.clear()
    if body is not None and body.seed is not None:
        sandbox.faults.seed = body.seed
    sandbox.state.reset()
    return {"status": "reset"}


@control.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app(*, db_path: str = ":memory:", seed: int = 7) -> FastAPI:
    """Build the sandbox app over a SQLite file (or memory) with seeded data."""
    app = FastAPI(title="Trialist vendor sandbox", docs_url="/__sandbox/docs", redoc_url=None)
    state = SandboxState(db_path)
    state.install([module.SCHEMA for module in VENDOR_MODULES])
    faults = FaultBook(seed=seed)
    for module in VENDOR_MODULES:
        faults.register_style(module.SCHEMA.vendor, module.ERROR_STYLE)
        app.include_router(module.router, prefix=f"/{module.SCHEMA.vendor}")
    app.include_router(control)
    app.state.sandbox = Sandbox(state=state, faults=faults)

    @app.exception_handler(FaultInjected)
    async def _fault(_: Request, exc: FaultInjected) -> Response:
        return exc.response

    return app
