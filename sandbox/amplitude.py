"""Amplitude emulator: HTTP V2 event ingestion with insert_id dedupe, and the User Profile API."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from config.settings import SANDBOX_CREDENTIAL
from devtools.people import DANA, MARCO, PRIYA
from sandbox.faults import ErrorStyle, FaultInjected
from sandbox.json_body import BodyRefused, StrictJsonRoute, parse_json
from sandbox.openapi_bodies import request_body
from sandbox.request_log import sandbox_of
from sandbox.state import VendorSchema

VENDOR = "amplitude"

# The documented HTTP V2 limits: under 1 MB and fewer than 2000 events per request.
DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
DEFAULT_MAX_EVENTS_PER_REQUEST = 2000
DEFAULT_MIN_ID_LENGTH = 5
MAX_MIN_ID_LENGTH = 1024
MAX_EVENT_TIME_MS = 253_402_300_799_999  # the last millisecond of year 9999
EPS_THRESHOLD = 1000  # reported in 429 bodies, as the real API does
NOT_SEEN_BEFORE = "User id and device id not seen before"
PROFILE_THROTTLED = (
    "Number of requests per minute exceeds system limit. "
    "Contact Support if you need this limit raised"
)

_DDL = """
CREATE TABLE IF NOT EXISTS amplitude_events (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT UNIQUE,
    insert_id TEXT,
    user_id TEXT,
    device_id TEXT,
    event_type TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    event_properties TEXT NOT NULL,
    user_properties TEXT NOT NULL,
    server_upload_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS amplitude_profiles (
    user_id TEXT PRIMARY KEY,
    device_id TEXT,
    amp_props TEXT NOT NULL,
    cohort_ids TEXT
);
CREATE TABLE IF NOT EXISTS amplitude_limits (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    max_events_per_request INTEGER NOT NULL,
    max_payload_bytes INTEGER NOT NULL,
    min_id_length INTEGER NOT NULL
);
"""


# --- seed -----------------------------------------------------------------------------------


def _trial_profile(
    now: datetime,
    *,
    email: str,
    signed_up_days_ago: int,
    last_active: timedelta,
    documents_created: int,
    documents_sent: int,
    templates_used: int,
    signatures_requested: int,
    team_members_invited: int,
    features_used: list[str],
) -> dict[str, Any]:
    active_at = now - last_active
    return {
        "email": email,
        "plan": "Business trial",
        "library": "http/2.0",
        "first_used": (now - timedelta(days=signed_up_days_ago)).date().isoformat(),
        "last_used": active_at.date().isoformat(),
        "last_active": active_at.isoformat(timespec="seconds"),
        "documents_created": documents_created,
        "documents_sent": documents_sent,
        "templates_used": templates_used,
        "signatures_requested": signatures_requested,
        "team_members_invited": team_members_invited,
        "features_used": features_used,
    }


def seed_profiles(now: datetime) -> dict[str, dict[str, Any]]:
    """Trial users keyed by trial account id (devtools/people.py); TRIAL_WITHOUT_PROFILE has no
    profile at all."""
    return {
        # A power user: sent 40 documents, uses templates and e-signature daily.
        DANA.trial_account_id: _trial_profile(
            now,
            email=DANA.email,
            signed_up_days_ago=10,
            last_active=timedelta(hours=2),
            documents_created=52,
            documents_sent=40,
            templates_used=6,
            signatures_requested=35,
            team_members_invited=4,
            features_used=["templates", "e-signature", "content_library", "crm_integration"],
        ),
        # Signed up, opened the editor once, never sent anything.
        MARCO.trial_account_id: _trial_profile(
            now,
            email=MARCO.email,
            signed_up_days_ago=8,
            last_active=timedelta(days=6),
            documents_created=1,
            documents_sent=0,
            templates_used=0,
            signatures_requested=0,
            team_members_invited=0,
            features_used=["editor"],
        ),
        # In between: a few documents, one template, tried e-signature.
        PRIYA.trial_account_id: _trial_profile(
            now,
            email=PRIYA.email,
            signed_up_days_ago=5,
            last_active=timedelta(days=1),
            documents_created=9,
            documents_sent=5,
            templates_used=1,
            signatures_requested=3,
            team_members_invited=1,
            features_used=["templates", "e-signature"],
        ),
    }


def _seed(conn: sqlite3.Connection, now: datetime) -> None:
    conn.execute(
        "INSERT INTO amplitude_limits VALUES (1, ?, ?, ?)",
        (DEFAULT_MAX_EVENTS_PER_REQUEST, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MIN_ID_LENGTH),
    )
    for user_id, props in seed_profiles(now).items():
        conn.execute(
            "INSERT INTO amplitude_profiles VALUES (?, NULL, ?, NULL)",
            (user_id, json.dumps(props)),
        )


SCHEMA = VendorSchema(vendor=VENDOR, ddl=_DDL, seed=_seed)


# --- wire formats -----------------------------------------------------------------------------


def _throttled(
    *,
    users: dict[str, int] | None = None,
    devices: dict[str, int] | None = None,
    events: list[int] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": EPS_THRESHOLD,
            "throttled_devices": devices or {},
            "throttled_users": users or {},
            "throttled_events": events or [],
            "exceeded_daily_quota_users": {},
            "exceeded_daily_quota_devices": {},
        },
        status_code=429,
    )


def _error(status: int, message: str) -> Response:
    if status == 429:
        return _throttled()
    if status == 413:
        return JSONResponse({"code": 413, "error": "Payload too large"}, status_code=413)
    return JSONResponse({"code": status, "error": message}, status_code=status)


def _rate_limited(retry_after: float) -> Response:
    # The HTTP V2 API sends no Retry-After; clients back off ~30 s per its docs.
    return _throttled()


ERROR_STYLE = ErrorStyle(error=_error, rate_limited=_rate_limited)


def _bad_request(error: str, **fields: Any) -> JSONResponse:
    return JSONResponse({"code": 400, "error": error, **fields}, status_code=400)


class LimitsUpdate(BaseModel):
    """Lower the documented limits so tests can exercise 413 and short ids cheaply."""

    max_events_per_request: int | None = Field(default=None, ge=1, le=1_000_000)
    max_payload_bytes: int | None = Field(default=None, ge=1, le=1_000_000_000)
    min_id_length: int | None = Field(default=None, ge=1, le=MAX_MIN_ID_LENGTH)


class Event(BaseModel):
    """One HTTP V2 event, as documented (a subset of the optional fields)."""

    model_config = ConfigDict(extra="allow")

    event_type: str = Field(min_length=1)
    user_id: str | None = Field(default=None, min_length=DEFAULT_MIN_ID_LENGTH)
    device_id: str | None = Field(default=None, min_length=DEFAULT_MIN_ID_LENGTH)
    time: int | None = Field(default=None, ge=0, le=MAX_EVENT_TIME_MS)
    event_properties: dict[str, Any] | None = None
    user_properties: dict[str, Any] | None = None
    insert_id: str | None = None
    session_id: int | None = None


class UploadOptions(BaseModel):
    min_id_length: int | None = Field(default=None, ge=1, le=MAX_MIN_ID_LENGTH)


class UploadRequest(BaseModel):
    api_key: str
    events: list[Event] = Field(min_length=1, max_length=DEFAULT_MAX_EVENTS_PER_REQUEST)
    options: UploadOptions | None = None


# --- routes -----------------------------------------------------------------------------------

router = APIRouter(tags=["amplitude"])


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = parse_json(raw)
    except BodyRefused:
        return {}
    return value if isinstance(value, dict) else {}


def _limits(conn: sqlite3.Connection) -> sqlite3.Row:
    row: sqlite3.Row = conn.execute("SELECT * FROM amplitude_limits WHERE id = 1").fetchone()
    return row


async def _throttle_with_senders(request: Request, injected: FaultInjected) -> FaultInjected:
    """A default 429 names the request's users and events, as the real throttle response does."""
    response = injected.response
    default = _json(bytes(_throttled().body))
    if response.status_code != 429 or _json(bytes(response.body)) != default:
        return injected  # a fault's own body is sent as given
    events = _json(await request.body()).get("events")
    if not isinstance(events, list):
        return injected
    per_user = Counter(
        str(e.get("user_id")) for e in events if isinstance(e, dict) and e.get("user_id")
    )
    enriched = _throttled(
        users={user: EPS_THRESHOLD + count for user, count in per_user.items()},
        events=list(range(len(events))),
    )
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "content-type"):
            enriched.headers[name] = value
    return FaultInjected(enriched)


@router.post("/2/httpapi", openapi_extra=request_body(UploadRequest))
async def http_api(request: Request) -> Response:
    """HTTP V2 ingestion: validate, 413 over the limits, dedupe by (device or user, insert_id)."""
    sandbox = sandbox_of(request)
    try:
        await sandbox.faults.before(VENDOR, "track")
    except FaultInjected as injected:
        raise await _throttle_with_senders(request, injected) from None
    raw = await request.body()
    conn = sandbox.state.conn
    limits = _limits(conn)
    if len(raw) > limits["max_payload_bytes"]:
        return _error(413, "Payload too large")
    try:
        body = parse_json(raw)
    except BodyRefused:
        return _bad_request("Invalid JSON request body")
    if not isinstance(body, dict) or not body.get("api_key"):
        return _bad_request("Request missing required field", missing_field="api_key")
    if body["api_key"] != SANDBOX_CREDENTIAL:
        return _bad_request("Invalid API key")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        return _bad_request("Request missing required field", missing_field="events")
    if len(events) > limits["max_events_per_request"]:
        return _error(413, "Payload too large")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        return _bad_request("Invalid options", invalid_field="options")
    min_id_length = options.get("min_id_length")
    if min_id_length is None:
        min_id_length = limits["min_id_length"]
    if isinstance(min_id_length, bool) or not isinstance(min_id_length, int):
        return _bad_request("Invalid options", invalid_field="min_id_length")
    if not 1 <= min_id_length <= MAX_MIN_ID_LENGTH:
        return _bad_request("Invalid options", invalid_field="min_id_length")
    problems = _event_problems(events, min_id_length)
    if problems:
        return _bad_request("Invalid field values on some events", **problems)
    upload_ms = int(datetime.now(UTC).timestamp() * 1000)
    with sandbox.state.transaction() as tx:
        for event in events:
            _store_event(tx, event, upload_ms)
    await sandbox.faults.after_commit(VENDOR, "track")
    return JSONResponse(
        {
            "code": 200,
            "events_ingested": len(events),
            "payload_size_bytes": len(raw),
            "server_upload_time": upload_ms,
        }
    )


def _event_problems(events: list[Any], min_id_length: int) -> dict[str, dict[str, list[int]]]:
    """Bad events by field, as the 400 body names them (indices into the request's events)."""
    missing: dict[str, list[int]] = {}
    invalid: dict[str, list[int]] = {}
    short_ids: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            invalid.setdefault("event", []).append(index)
            continue
        if not isinstance(event.get("event_type"), str) or not event["event_type"]:
            missing.setdefault("event_type", []).append(index)
        ids = {name: event.get(name) for name in ("user_id", "device_id") if event.get(name)}
        if not ids:
            missing.setdefault("user_id", []).append(index)
        for name, value in ids.items():
            if not isinstance(value, str) or len(value) < min_id_length:
                short_ids.setdefault(name, []).append(index)
        if "time" in event and not _valid_time(event["time"]):
            invalid.setdefault("time", []).append(index)
        for name in ("event_properties", "user_properties"):
            if name in event and not isinstance(event[name], dict):
                invalid.setdefault(name, []).append(index)
        updates = event.get("user_properties")
        if isinstance(updates, dict) and not isinstance(updates.get("$set", {}), dict):
            invalid.setdefault("user_properties", []).append(index)
        if "insert_id" in event and not isinstance(event["insert_id"], str):
            invalid.setdefault("insert_id", []).append(index)
        session = event.get("session_id")
        if session is not None and (isinstance(session, bool) or not isinstance(session, int)):
            invalid.setdefault("session_id", []).append(index)
    problems: dict[str, dict[str, list[int]]] = {}
    if missing:
        problems["events_with_missing_fields"] = missing
    if invalid:
        problems["events_with_invalid_fields"] = invalid
    if short_ids:
        problems["events_with_invalid_id_lengths"] = short_ids
    return problems


def _valid_time(value: Any) -> bool:
    """Epoch milliseconds, in the range a datetime (and SQLite's integer) holds."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return is_int and 0 <= value <= MAX_EVENT_TIME_MS


def _store_event(tx: sqlite3.Connection, event: dict[str, Any], upload_ms: int) -> None:
    user_id, device_id = event.get("user_id"), event.get("device_id")
    insert_id = event.get("insert_id")
    # Amplitude drops a later event with the same device (or user) and insert_id.
    dedupe_key = f"{device_id or ''}|{user_id or ''}|{insert_id}" if insert_id else None
    cursor = tx.execute(
        "INSERT OR IGNORE INTO amplitude_events (dedupe_key, insert_id, user_id, device_id,"
        " event_type, time_ms, event_properties, user_properties, server_upload_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            dedupe_key,
            insert_id,
            user_id,
            device_id,
            event["event_type"],
            event.get("time", upload_ms),
            json.dumps(event.get("event_properties") or {}),
            json.dumps(event.get("user_properties") or {}),
            upload_ms,
        ),
    )
    if cursor.rowcount and user_id:
        _update_profile(tx, user_id, device_id, event, upload_ms)


def _update_profile(
    tx: sqlite3.Connection,
    user_id: str,
    device_id: str | None,
    event: dict[str, Any],
    upload_ms: int,
) -> None:
    """Events create the user's profile and `$set` (or plain) user properties update it."""
    row = tx.execute(
        "SELECT amp_props FROM amplitude_profiles WHERE user_id = ?", (user_id,)
    ).fetchone()
    day = datetime.fromtimestamp(event.get("time", upload_ms) / 1000, UTC).date().isoformat()
    props: dict[str, Any] = json.loads(row["amp_props"]) if row else {"first_used": day}
    updates = event.get("user_properties") or {}
    props.update(updates.get("$set", {}) if "$set" in updates else updates)
    previous = props.get("last_used")
    # A `$set` may have stored anything under last_used; only an ISO day compares.
    props["last_used"] = max(previous, day) if isinstance(previous, str) else day
    tx.execute(
        "INSERT INTO amplitude_profiles (user_id, device_id, amp_props) VALUES (?, ?, ?)"
        " ON CONFLICT(user_id) DO UPDATE SET amp_props = excluded.amp_props,"
        " device_id = coalesce(excluded.device_id, amplitude_profiles.device_id)",
        (user_id, device_id, json.dumps(props)),
    )


def _profile_auth_error(request: Request) -> Response | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme != "Api-Key" or not key.strip():
        return PlainTextResponse("Missing Api-Key in Authorization header", status_code=401)
    if key.strip() != SANDBOX_CREDENTIAL:
        return PlainTextResponse("Invalid Api-Key", status_code=401)
    return None


def _flag(value: str | None) -> bool:
    return (value or "").lower() == "true"


@router.get("/v1/userprofile")
async def user_profile(request: Request) -> Response:
    """The User Profile API (profile-api.amplitude.com in production)."""
    sandbox = sandbox_of(request)
    try:
        await sandbox.faults.before(VENDOR, "user_profile")
    except FaultInjected as injected:
        response = injected.response
        if response.status_code == 429 and "eps_threshold" in _json(bytes(response.body)):
            raise FaultInjected(
                JSONResponse({"error": PROFILE_THROTTLED}, status_code=429)
            ) from None
        raise
    if (denied := _profile_auth_error(request)) is not None:
        return denied
    user_id = request.query_params.get("user_id")
    device_id = request.query_params.get("device_id")
    if not user_id and not device_id:
        return JSONResponse({"error": "Must provide user_id or device_id"}, status_code=400)
    row = sandbox.state.conn.execute(
        "SELECT * FROM amplitude_profiles WHERE user_id = ? OR (? IS NOT NULL AND device_id = ?)",
        (user_id or "", device_id, device_id),
    ).fetchone()
    if row is None:
        return JSONResponse({"error": NOT_SEEN_BEFORE}, status_code=400)
    params = request.query_params
    cohorts = json.loads(row["cohort_ids"]) if row["cohort_ids"] else []
    return JSONResponse(
        {
            "userData": {
                "recommendations": None,
                "user_id": row["user_id"],
                "device_id": row["device_id"],
                "amp_props": json.loads(row["amp_props"])
                if _flag(params.get("get_amp_props"))
                else None,
                "cohort_ids": cohorts if _flag(params.get("get_cohort_ids")) else None,
            }
        }
    )


@router.get("/__sandbox/limits")
async def get_limits(request: Request) -> dict[str, int]:
    """Sandbox control (not an Amplitude API): the ingestion limits in force."""
    row = _limits(sandbox_of(request).state.conn)
    return {
        key: row[key] for key in ("max_events_per_request", "max_payload_bytes", "min_id_length")
    }


async def set_limits(update: LimitsUpdate, request: Request) -> dict[str, int]:
    """Sandbox control: lower the limits for a test; `/__sandbox/reset` restores the defaults."""
    sandbox = sandbox_of(request)
    changes = update.model_dump(exclude_none=True)
    if changes:
        with sandbox.state.transaction() as tx:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            tx.execute(
                f"UPDATE amplitude_limits SET {assignments} WHERE id = 1", tuple(changes.values())
            )
    return await get_limits(request)


# Sandbox control takes FastAPI's 422, with the control API's strict JSON (no NaN, no deep nesting).
router.add_api_route(
    "/__sandbox/limits", set_limits, methods=["PUT"], route_class_override=StrictJsonRoute
)
