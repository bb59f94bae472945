"""LiveKit server API emulator: Twirp SIP dialing and agent dispatch, with scripted dial outcomes.

It speaks the wire format of `livekit-api`'s own client: POST /twirp/livekit.<Service>/<Method>
with a protobuf body (or Twirp's JSON), a Bearer JWT signed with the API secret (verified with
livekit-api's TokenVerifier, grants checked), and Twirp JSON errors. A dialed number answers,
rings out, is busy, fails, or reaches voicemail, as scripted under `/livekit/__sandbox/numbers`.
An answered call's agent dispatch becomes a job that an agent-side runner claims from
`/livekit/__sandbox/jobs/claim` (the sandbox never runs agent code itself).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api.access_token import TokenVerifier
from livekit.protocol.agent_dispatch import (
    AgentDispatch,
    CreateAgentDispatchRequest,
    ListAgentDispatchRequest,
    ListAgentDispatchResponse,
)
from livekit.protocol.sip import CreateSIPParticipantRequest, SIPParticipantInfo
from pydantic import BaseModel, Field

from config.settings import SANDBOX_LIVEKIT_API_KEY, SANDBOX_LIVEKIT_API_SECRET
from sandbox.faults import ErrorStyle, FaultInjected
from sandbox.request_log import sandbox_of
from sandbox.state import VendorSchema

VENDOR = "livekit"
TWIRP = "/twirp/livekit"
CONTROL = "/__sandbox"
PROTOBUF = "application/protobuf"

Outcome = Literal["answered", "no_answer", "busy", "failed", "voicemail", "garbled"]
DEFAULT_OUTCOME: Outcome = "answered"
# Twirp code, HTTP status and SIP status of each failed dial. The client reads the SIP status.
_SIP_FAILURES: dict[str, tuple[str, int, int, str]] = {
    "no_answer": ("deadline_exceeded", 408, 480, "Temporarily Unavailable"),
    "busy": ("resource_exhausted", 429, 486, "Busy Here"),
    "failed": ("unavailable", 503, 503, "Service Unavailable"),
}
MAX_CLAIM_WAIT_SECONDS = 10.0
CLAIM_POLL_SECONDS = 0.05

_DDL = """
CREATE TABLE IF NOT EXISTS livekit_numbers (
    number TEXT PRIMARY KEY,
    outcomes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS livekit_calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sip_call_id TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL,
    call_to TEXT NOT NULL,
    from_number TEXT NOT NULL,
    identity TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dialed_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS livekit_dispatches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dispatch_id TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    metadata TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    created_at REAL NOT NULL,
    claimed_at REAL,
    finished_at REAL
);
"""

SCHEMA = VendorSchema(vendor=VENDOR, ddl=_DDL)


def _twirp_error(
    status: int, code: str, message: str, meta: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"code": code, "msg": message}
    if meta:
        body["meta"] = meta
    return JSONResponse(body, status_code=status)


_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    429: "resource_exhausted",
    503: "unavailable",
}


def _error(status: int, message: str) -> Response:
    return _twirp_error(
        status, _CODES.get(status, "internal" if status >= 500 else "unknown"), message
    )


def _rate_limited(retry_after: float) -> Response:
    response = _twirp_error(429, "resource_exhausted", "rate limit exceeded")
    response.headers["Retry-After"] = f"{max(retry_after, 0.001):.3f}"
    return response


ERROR_STYLE = ErrorStyle(error=_error, rate_limited=_rate_limited)

router = APIRouter(tags=["livekit"])


def _conn(request: Request) -> sqlite3.Connection:
    return sandbox_of(request).state.conn


# --- wire format and auth ---------------------------------------------------------------------


def _denied(
    request: Request, *, sip_call: bool = False, room_admin: bool = False
) -> Response | None:
    """None when the Bearer JWT is signed by the sandbox's key/secret and carries the grants."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _twirp_error(401, "unauthenticated", "no authorization header")
    try:
        claims = TokenVerifier(SANDBOX_LIVEKIT_API_KEY, SANDBOX_LIVEKIT_API_SECRET).verify(
            token.strip()
        )
    except Exception:  # any refusal by PyJWT: bad signature, issuer, expiry or shape
        return _twirp_error(401, "unauthenticated", "invalid token")
    if sip_call and not (claims.sip is not None and claims.sip.call):
        return _twirp_error(403, "permission_denied", "requires SIP call grant")
    if room_admin and not (claims.video is not None and claims.video.room_admin):
        return _twirp_error(403, "permission_denied", "requires roomAdmin grant")
    return None


async def _refused(
    request: Request,
    operation: str,
    message: Message,
    *,
    sip_call: bool = False,
    room_admin: bool = False,
) -> Response | None:
    """Every Twirp route's start: its faults, the caller's token and grants, then the body
    decoded into `message`. None when the request may go on; else the answer to send."""
    await sandbox_of(request).faults.before(VENDOR, operation)
    if (denied := _denied(request, sip_call=sip_call, room_admin=room_admin)) is not None:
        return denied
    return await _decode(request, message)


async def _decode(request: Request, message: Message) -> Response | None:
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        if content_type == "application/json":
            json_format.Parse(body or b"{}", message)
        elif content_type == PROTOBUF:
            message.ParseFromString(body)
        else:
            return _twirp_error(404, "bad_route", f"unexpected Content-Type: {content_type!r}")
    except (DecodeError, json_format.ParseError):
        return _twirp_error(400, "malformed", "the request body could not be decoded")
    return None


def _encode(request: Request, message: Message) -> Response:
    if request.headers.get("content-type", "").startswith("application/json"):
        return Response(json_format.MessageToJson(message), media_type="application/json")
    return Response(message.SerializeToString(), media_type=PROTOBUF)


# --- SIP ----------------------------------------------------------------------------------------


def _next_outcome(conn: sqlite3.Connection, number: str) -> Outcome:
    """The number's next scripted outcome; the last one repeats once the script runs out."""
    row = conn.execute(
        "SELECT outcomes FROM livekit_numbers WHERE number = ?", (number,)
    ).fetchone()
    if row is None:
        return DEFAULT_OUTCOME
    outcomes: list[Outcome] = json.loads(row["outcomes"])
    if len(outcomes) > 1:
        conn.execute(
            "UPDATE livekit_numbers SET outcomes = ? WHERE number = ?",
            (json.dumps(outcomes[1:]), number),
        )
    return outcomes[0]


@router.post(f"{TWIRP}.SIP/CreateSIPParticipant")
async def create_sip_participant(request: Request) -> Response:
    dial = CreateSIPParticipantRequest()
    if (
        refused := await _refused(request, "create_sip_participant", dial, sip_call=True)
    ) is not None:
        return refused
    if not dial.sip_call_to or not dial.room_name or not dial.sip_trunk_id:
        return _twirp_error(
            400, "invalid_argument", "sip_trunk_id, sip_call_to and room_name are required"
        )
    conn = _conn(request)
    outcome = _next_outcome(conn, dial.sip_call_to)
    sip_call_id = f"SCL_{uuid.uuid4().hex[:12]}"
    identity = dial.participant_identity or f"sip_{dial.sip_call_to}"
    answered = outcome in ("answered", "voicemail", "garbled")
    conn.execute(
        "INSERT INTO livekit_calls (sip_call_id, room, call_to, from_number, identity, outcome, "
        "dialed_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            sip_call_id,
            dial.room_name,
            dial.sip_call_to,
            dial.sip_number,
            identity,
            outcome,
            time.time(),
            None if answered else time.time(),
        ),
    )
    if outcome == "garbled":  # a 200 whose body no client can parse
        return Response(b"\xff\x00not-a-protobuf\xfe", media_type=PROTOBUF)
    if not answered:
        code, status, sip_status, reason = _SIP_FAILURES[outcome]
        meta = {"sip_status_code": str(sip_status), "sip_status": reason}
        return _twirp_error(status, code, f"INVITE failed: {sip_status} {reason}", meta)
    info = SIPParticipantInfo(
        participant_id=f"PA_{uuid.uuid4().hex[:12]}",
        participant_identity=identity,
        room_name=dial.room_name,
        sip_call_id=sip_call_id,
    )
    return _encode(request, info)


# --- agent dispatch -----------------------------------------------------------------------------


def _dispatch_message(row: sqlite3.Row) -> AgentDispatch:
    return AgentDispatch(
        id=row["dispatch_id"],
        agent_name=row["agent_name"],
        room=row["room"],
        metadata=row["metadata"],
    )


@router.post(f"{TWIRP}.AgentDispatchService/CreateDispatch")
async def create_dispatch(request: Request) -> Response:
    create = CreateAgentDispatchRequest()
    if (refused := await _refused(request, "create_dispatch", create, room_admin=True)) is not None:
        return refused
    if not create.room or not create.agent_name:
        return _twirp_error(400, "invalid_argument", "room and agent_name are required")
    dispatch_id = f"AD_{uuid.uuid4().hex[:12]}"
    conn = _conn(request)
    conn.execute(
        "INSERT INTO livekit_dispatches (dispatch_id, room, agent_name, metadata, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (dispatch_id, create.room, create.agent_name, create.metadata, time.time()),
    )
    row = conn.execute(
        "SELECT * FROM livekit_dispatches WHERE dispatch_id = ?", (dispatch_id,)
    ).fetchone()
    return _encode(request, _dispatch_message(row))


@router.post(f"{TWIRP}.AgentDispatchService/ListDispatch")
async def list_dispatch(request: Request) -> Response:
    listing = ListAgentDispatchRequest()
    if (refused := await _refused(request, "list_dispatch", listing, room_admin=True)) is not None:
        return refused
    rows = (
        _conn(request)
        .execute("SELECT * FROM livekit_dispatches WHERE room = ? ORDER BY seq", (listing.room,))
        .fetchall()
    )
    return _encode(
        request, ListAgentDispatchResponse(agent_dispatches=[_dispatch_message(r) for r in rows])
    )


# --- the control API: scripted numbers, the dial log, and jobs for the agent-side runner --------


class NumberScript(BaseModel):
    outcomes: list[Outcome] = Field(min_length=1, max_length=50)


class DispatchJob(BaseModel):
    """An answered call's dispatch, as the agent-side runner plays it."""

    dispatch_id: str
    room: str
    agent_name: str
    metadata: str
    answered_by: Literal["human", "machine"]


@router.put(f"{CONTROL}/numbers/{{number}}")
async def script_number(number: str, script: NumberScript, request: Request) -> dict[str, Any]:
    _conn(request).execute(
        "INSERT INTO livekit_numbers (number, outcomes) VALUES (?, ?) "
        "ON CONFLICT (number) DO UPDATE SET outcomes = excluded.outcomes",
        (number, json.dumps(script.outcomes)),
    )
    return {"number": number, "outcomes": script.outcomes}


@router.get(f"{CONTROL}/calls")
async def list_calls(request: Request) -> list[dict[str, Any]]:
    rows = _conn(request).execute("SELECT * FROM livekit_calls ORDER BY seq").fetchall()
    return [dict(row) for row in rows]


@router.post(f"{CONTROL}/jobs/claim", response_model=None)
async def claim_job(
    request: Request,
    agent_name: Annotated[str, Query(min_length=1)],
    wait: Annotated[float, Query(ge=0, le=MAX_CLAIM_WAIT_SECONDS)] = 0.0,
) -> DispatchJob | Response:
    """The oldest queued dispatch of an answered call for `agent_name`; 204 after `wait` s."""
    conn = _conn(request)
    deadline = time.monotonic() + wait
    while True:
        job = _claim(conn, agent_name)
        if job is not None:
            return job
        if time.monotonic() >= deadline:
            return Response(status_code=204)
        await asyncio.sleep(CLAIM_POLL_SECONDS)


def _claim(conn: sqlite3.Connection, agent_name: str) -> DispatchJob | None:
    row = conn.execute(
        "SELECT d.*, c.outcome FROM livekit_dispatches d JOIN livekit_calls c ON c.room = d.room "
        "WHERE d.state = 'queued' AND d.agent_name = ? AND c.ended_at IS NULL "
        "ORDER BY d.seq LIMIT 1",
        (agent_name,),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE livekit_dispatches SET state = 'claimed', claimed_at = ? WHERE dispatch_id = ?",
        (time.time(), row["dispatch_id"]),
    )
    return DispatchJob(
        dispatch_id=row["dispatch_id"],
        room=row["room"],
        agent_name=row["agent_name"],
        metadata=row["metadata"],
        answered_by="machine" if row["outcome"] == "voicemail" else "human",
    )


@router.post(f"{CONTROL}/jobs/{{dispatch_id}}/finish")
async def finish_job(dispatch_id: str, request: Request) -> dict[str, str]:
    """The runner's call is over: the room closes and the SIP call ends."""
    conn = _conn(request)
    row = conn.execute(
        "SELECT room FROM livekit_dispatches WHERE dispatch_id = ?", (dispatch_id,)
    ).fetchone()
    if row is None:
        raise FaultInjected(_twirp_error(404, "not_found", "no such dispatch"))
    now = time.time()
    conn.execute(
        "UPDATE livekit_dispatches SET state = 'finished', finished_at = ? WHERE dispatch_id = ?",
        (now, dispatch_id),
    )
    conn.execute(
        "UPDATE livekit_calls SET ended_at = ? WHERE room = ? AND ended_at IS NULL",
        (now, row["room"]),
    )
    return {"dispatch_id": dispatch_id, "state": "finished", "at": datetime.now(UTC).isoformat()}
