"""HubSpot CRM v3 emulator: contact batch upsert by email, calls/notes/meetings, search, reads."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from config.settings import SANDBOX_CREDENTIAL
from devtools.people import DANA_WHITFIELD
from sandbox.faults import ErrorStyle
from sandbox.json_body import BodyRefused, is_json_content, parse_json
from sandbox.openapi_bodies import request_body
from sandbox.request_log import LoggedRoute, sandbox_of
from sandbox.state import VendorSchema

VENDOR = "hubspot"
OBJECTS = "/crm/v3/objects"

# The published limits of a private app on a Free/Starter portal.
TEN_SECONDLY_MAX = 100
TEN_SECONDLY_INTERVAL_MS = 10_000
SECONDLY_MAX = 10
DAILY_MAX = 250_000
BATCH_MAX_INPUTS = 100
SEARCH_MAX_LIMIT = 200
SEARCH_MAX_FILTER_GROUPS = 5
SEARCH_MAX_FILTERS = 6
FIRST_CONTACT_ID = 1001

# HUBSPOT_DEFINED association type ids from an engagement to a contact.
ASSOCIATION_TO_CONTACT = {"calls": 194, "notes": 202, "meetings": 200}
ENGAGEMENT_TYPES = tuple(ASSOCIATION_TO_CONTACT)
IDEMPOTENCY_PROPERTY = "voice_call_id"  # a custom unique-value property on each engagement

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)

_DDL = """
CREATE TABLE IF NOT EXISTS hubspot_objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    object_type TEXT NOT NULL,
    email TEXT,
    voice_call_id TEXT,
    properties TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (object_type, email),
    UNIQUE (object_type, voice_call_id)
);
CREATE TABLE IF NOT EXISTS hubspot_associations (
    from_type TEXT NOT NULL,
    from_id INTEGER NOT NULL,
    to_type TEXT NOT NULL,
    to_id INTEGER NOT NULL,
    type_id INTEGER NOT NULL,
    category TEXT NOT NULL,
    PRIMARY KEY (from_type, from_id, to_type, to_id, type_id)
);
CREATE TABLE IF NOT EXISTS hubspot_portal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    search_lag_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hubspot_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL
);
"""


# --- the emulated portal's properties -----------------------------------------------------------

PropertyKind = Literal["string", "email", "number", "datetime", "enumeration"]


@dataclass(frozen=True)
class PropertySpec:
    kind: PropertyKind = "string"
    options: tuple[str, ...] = ()


_CALL_STATUSES = (
    "BUSY",
    "CALLING_CRM_USER",
    "CANCELED",
    "COMPLETED",
    "CONNECTING",
    "FAILED",
    "IN_PROGRESS",
    "NO_ANSWER",
    "QUEUED",
    "RINGING",
)
_MEETING_OUTCOMES = ("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED")
_OWNER = {"hubspot_owner_id": PropertySpec()}
_IDEMPOTENCY = {IDEMPOTENCY_PROPERTY: PropertySpec()}

PROPERTIES: dict[str, dict[str, PropertySpec]] = {
    "contacts": {
        "email": PropertySpec("email"),
        "firstname": PropertySpec(),
        "lastname": PropertySpec(),
        "company": PropertySpec(),
        "phone": PropertySpec(),
        "jobtitle": PropertySpec(),
        "website": PropertySpec(),
        "lifecyclestage": PropertySpec(
            "enumeration",
            ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity"),
        ),
        "hs_lead_status": PropertySpec(
            "enumeration", ("NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "CONNECTED")
        ),
        "trial_account_id": PropertySpec(),
        "trial_qualification": PropertySpec(),
        # Outreach (issue 16): a do-not-call checkbox (a portal's custom property), the standard
        # email opt-out, and the outreach's final state.
        "do_not_call": PropertySpec("enumeration", ("true", "false")),
        "hs_email_optout": PropertySpec("enumeration", ("true", "false")),
        "trial_outreach_status": PropertySpec(),
        **_OWNER,
    },
    "calls": {
        "hs_timestamp": PropertySpec("datetime"),
        "hs_call_title": PropertySpec(),
        "hs_call_body": PropertySpec(),
        "hs_call_duration": PropertySpec("number"),
        "hs_call_direction": PropertySpec("enumeration", ("INBOUND", "OUTBOUND")),
        "hs_call_status": PropertySpec("enumeration", _CALL_STATUSES),
        "hs_call_disposition": PropertySpec(),
        "hs_call_to_number": PropertySpec(),
        "hs_call_from_number": PropertySpec(),
        **_OWNER,
        **_IDEMPOTENCY,
    },
    "notes": {
        "hs_timestamp": PropertySpec("datetime"),
        "hs_note_body": PropertySpec(),
        **_OWNER,
        **_IDEMPOTENCY,
    },
    "meetings": {
        "hs_timestamp": PropertySpec("datetime"),
        "hs_meeting_title": PropertySpec(),
        "hs_meeting_body": PropertySpec(),
        "hs_internal_meeting_notes": PropertySpec(),
        "hs_meeting_location": PropertySpec(),
        "hs_meeting_start_time": PropertySpec("datetime"),
        "hs_meeting_end_time": PropertySpec("datetime"),
        "hs_meeting_outcome": PropertySpec("enumeration", _MEETING_OUTCOMES),
        "hs_meeting_external_url": PropertySpec(),
        **_OWNER,
        **_IDEMPOTENCY,
    },
}
READ_ONLY = (
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    "hs_createdate",
    "hs_lastmodifieddate",
)
REQUIRED = {"calls": ("hs_timestamp",), "notes": ("hs_timestamp",), "meetings": ("hs_timestamp",)}


# --- request bodies as HubSpot documents them (OpenAPI only: the routes parse raw bytes) --------


def _properties_body(object_type: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: ((Literal[spec.options] if spec.options else str) | None, None)
        for name, spec in PROPERTIES[object_type].items()
    }
    model: type[BaseModel] = create_model(
        f"{object_type.title()}Properties", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


PROPERTY_BODIES = {object_type: _properties_body(object_type) for object_type in PROPERTIES}


class AssociationType(BaseModel):
    associationCategory: Literal["HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"]
    associationTypeId: int


class AssociationTarget(BaseModel):
    id: str


class Association(BaseModel):
    to: AssociationTarget
    types: list[AssociationType] = Field(min_length=1)


def _create_body(object_type: str) -> type[BaseModel]:
    fields: dict[str, Any] = {"properties": (PROPERTY_BODIES[object_type], ...)}
    if object_type != "contacts":
        fields["associations"] = (list[Association] | None, None)
    model: type[BaseModel] = create_model(f"Create{object_type.title()}", **fields)
    return model


def _batch_upsert_body() -> type[BaseModel]:
    """Built, not declared: the contact properties model is itself built from PROPERTIES."""
    item: dict[str, Any] = {
        "idProperty": (Literal["email"], ...),
        "id": (str, ...),
        "properties": (PROPERTY_BODIES["contacts"] | None, None),
    }
    entry: type[BaseModel] = create_model("BatchUpsertInput", **item)
    inputs: dict[str, Any] = {
        "inputs": (list[entry], Field(min_length=1, max_length=BATCH_MAX_INPUTS))
    }
    model: type[BaseModel] = create_model("BatchUpsertContacts", **inputs)
    return model


class SearchFilter(BaseModel):
    propertyName: str
    operator: Literal["EQ", "NEQ", "IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"]
    value: str | None = None
    values: list[str] | None = None


class SearchFilterGroup(BaseModel):
    filters: list[SearchFilter] = Field(max_length=SEARCH_MAX_FILTERS)


class SearchRequest(BaseModel):
    filterGroups: list[SearchFilterGroup] = Field(
        default_factory=list, max_length=SEARCH_MAX_FILTER_GROUPS
    )
    properties: list[str] | None = None
    limit: int = Field(default=10, ge=1, le=SEARCH_MAX_LIMIT)
    after: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")


# --- wire helpers -------------------------------------------------------------------------------


def hs_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: str) -> datetime | None:
    """HubSpot datetimes are epoch milliseconds or ISO-8601 (UTC when no offset)."""
    text = value.strip()
    try:
        if re.fullmatch(r"[0-9]{10,15}", text):
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):  # OSError: a platform's fromtimestamp range
        return None


def error_body(
    category: str, message: str, *, correlation_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "status": "error",
        "message": message,
        "correlationId": correlation_id or str(uuid.uuid4()),
        "category": category,
        **extra,
    }


def _failure(status: int, category: str, message: str, **extra: Any) -> JSONResponse:
    body = error_body(category, message, **extra)
    response = JSONResponse(body, status_code=status)
    # Here too, not only in the route class: an unknown path under /hubspot has no route.
    response.headers["X-HubSpot-Correlation-Id"] = body["correlationId"]
    return response


_CATEGORIES = {
    400: "VALIDATION_ERROR",
    401: "INVALID_AUTHENTICATION",
    403: "MISSING_SCOPES",
    404: "OBJECT_NOT_FOUND",
    409: "CONFLICT",
    415: "UNSUPPORTED_MEDIA_TYPE",
    423: "LOCKED",
}


def _error(status: int, message: str) -> Response:
    if status == 429:
        return _rate_limited_response("TEN_SECONDLY_ROLLING", None)
    category = _CATEGORIES.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
    return _failure(status, category, message)


def _rate_limited_response(policy: str, retry_after: float | None) -> Response:
    body = error_body(
        "RATE_LIMITS",
        f"You have reached your {policy.lower()} limit.",
        errorType="RATE_LIMIT",
        policyName=policy,
        requestId=str(uuid.uuid4()),
    )
    response = JSONResponse(body, status_code=429)
    response.headers["X-HubSpot-RateLimit-Max"] = str(TEN_SECONDLY_MAX)
    response.headers["X-HubSpot-RateLimit-Remaining"] = "0"
    response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(TEN_SECONDLY_INTERVAL_MS)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _rate_limited(retry_after: float) -> Response:
    # A rate-limit window fault: the rolling ten-second policy, with the window's own delay.
    return _rate_limited_response("TEN_SECONDLY_ROLLING", retry_after)


ERROR_STYLE = ErrorStyle(error=_error, rate_limited=_rate_limited)


def _conn(request: Request) -> sqlite3.Connection:
    return sandbox_of(request).state.conn


def _usage_headers(conn: sqlite3.Connection, response: Response) -> None:
    now = datetime.now(UTC)

    def since(delta: timedelta) -> int:
        row = conn.execute(
            "SELECT count(*) FROM hubspot_requests WHERE at > ?", ((now - delta).isoformat(),)
        ).fetchone()
        return int(row[0])

    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    used_today = since(now - day_start)
    defaults = {
        "X-HubSpot-RateLimit-Daily": str(DAILY_MAX),
        "X-HubSpot-RateLimit-Daily-Remaining": str(max(DAILY_MAX - used_today, 0)),
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(TEN_SECONDLY_INTERVAL_MS),
        "X-HubSpot-RateLimit-Max": str(TEN_SECONDLY_MAX),
        "X-HubSpot-RateLimit-Remaining": str(
            max(TEN_SECONDLY_MAX - since(timedelta(seconds=10)), 0)
        ),
        "X-HubSpot-RateLimit-Secondly": str(SECONDLY_MAX),
        "X-HubSpot-RateLimit-Secondly-Remaining": str(
            max(SECONDLY_MAX - since(timedelta(seconds=1)), 0)
        ),
    }
    for name, value in defaults.items():
        if name not in response.headers:
            response.headers[name] = value


def _correlation_id(response: Response) -> str:
    """The body's correlationId (errors carry one), so the header and the body agree."""
    try:
        body = json.loads(bytes(response.body))
    except (ValueError, AttributeError, TypeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("correlationId"), str):
        return str(body["correlationId"])
    return str(uuid.uuid4())


class _HubSpotRoute(LoggedRoute):
    """Logs each request and adds HubSpot's rate-limit and correlation headers (faults too)."""

    table = "hubspot_requests"

    @staticmethod
    def stamp(conn: sqlite3.Connection, request: Request, response: Response) -> None:
        _usage_headers(conn, response)
        response.headers.setdefault("X-HubSpot-Correlation-Id", _correlation_id(response))


router = APIRouter(tags=["hubspot"], route_class=_HubSpotRoute)


# --- seed ---------------------------------------------------------------------------------------


def _seed(conn: sqlite3.Connection, now: datetime) -> None:
    # Dana is already a contact: her first upsert is an update (`new: false`).
    dana = DANA_WHITFIELD.trialist
    email = dana.email
    properties = {
        "email": email,
        "firstname": DANA_WHITFIELD.first_name,
        "lastname": DANA_WHITFIELD.last_name,
        "company": dana.company,
        "lifecyclestage": "lead",
        "trial_account_id": dana.trial_account_id,
    }
    # Real search indexes a new object seconds after it is written; 0 here unless a test sets it.
    conn.execute("INSERT INTO hubspot_portal VALUES (1, 0)")
    conn.execute(
        "INSERT INTO hubspot_objects (id, object_type, email, properties, created_at, updated_at)"
        " VALUES (?, 'contacts', ?, ?, ?, ?)",
        (FIRST_CONTACT_ID, email, json.dumps(properties), hs_time(now), hs_time(now)),
    )


SCHEMA = VendorSchema(vendor=VENDOR, ddl=_DDL, seed=_seed)


# --- request checks -----------------------------------------------------------------------------


def _unauthorized(request: Request) -> Response | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token.strip() != SANDBOX_CREDENTIAL:
        return _failure(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE)
    return None


async def _json_body(request: Request) -> dict[str, Any] | Response:
    if not is_json_content(request):
        return _failure(415, "UNSUPPORTED_MEDIA_TYPE", "HTTP 415 Unsupported Media Type")
    try:
        body = parse_json(await request.body() or b"null")
    except BodyRefused as refused:
        return _failure(400, "VALIDATION_ERROR", f"Invalid input JSON: {refused.reason}")
    if not isinstance(body, dict):
        return _failure(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
    return body


def _invalid_properties(problems: list[dict[str, Any]]) -> JSONResponse:
    """HubSpot's 400 for bad property values: the per-property results embedded in message."""
    return _failure(
        400, "VALIDATION_ERROR", f"Property values were not valid: {json.dumps(problems)}"
    )


def _problem(name: str, code: str, message: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": code, "name": name}


def _check_properties(
    object_type: str, properties: Any, *, creating: bool
) -> tuple[dict[str, str], JSONResponse | None]:
    """Stored (string) values of the given properties, or HubSpot's validation error."""
    if not isinstance(properties, dict):
        return {}, _failure(400, "VALIDATION_ERROR", "properties must be an object")
    known = PROPERTIES[object_type]
    values: dict[str, str] = {}
    problems: list[dict[str, Any]] = []
    for name, raw in properties.items():
        if name in READ_ONLY:
            problems.append(_problem(name, "READ_ONLY_VALUE", f'"{name}" is a read only property'))
            continue
        spec = known.get(name)
        if spec is None:
            problems.append(
                _problem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            )
            continue
        if isinstance(raw, dict | list):
            message = f"Invalid input JSON: property {name} must be a string, number or boolean"
            return {}, _failure(400, "VALIDATION_ERROR", message)
        text = "" if raw is None else str(raw).lower() if isinstance(raw, bool) else str(raw)
        problem = _check_value(name, spec, text)
        if problem is not None:
            problems.append(problem)
        values[name] = text
    if creating:
        problems.extend(
            _problem(name, "REQUIRED_PROPERTY", f'"{name}" is required')
            for name in REQUIRED.get(object_type, ())
            if not values.get(name)
        )
    return values, (_invalid_properties(problems) if problems else None)


_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # finite, ASCII digits
_OBJECT_ID = re.compile(r"[0-9]{1,18}")  # fits SQLite's 64-bit integer


def _check_value(name: str, spec: PropertySpec, text: str) -> dict[str, Any] | None:
    if not text:
        return None  # an empty string clears a property
    if spec.kind == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        return _problem(name, "INVALID_EMAIL", f"Email address {text} is invalid")
    if spec.kind == "number" and not _NUMBER.fullmatch(text):
        return _problem(name, "INVALID_LONG", f"{text} was not a valid long.")
    if spec.kind == "datetime" and _parse_time(text) is None:
        return _problem(name, "INVALID_DATE", f"{text} was not a valid date.")
    if spec.kind == "enumeration" and text not in spec.options:
        return _problem(
            name, "INVALID_OPTION", f"{text} was not one of the allowed options: {spec.options}"
        )
    return None


# --- records ------------------------------------------------------------------------------------


def _object_json(
    row: sqlite3.Row, requested: list[str] | None = None, *, new: bool | None = None
) -> dict[str, Any]:
    stored: dict[str, str] = json.loads(row["properties"])
    shown = stored if requested is None else {n: stored.get(n) for n in requested}
    created_key = "createdate" if row["object_type"] == "contacts" else "hs_createdate"
    modified_key = "lastmodifieddate" if row["object_type"] == "contacts" else "hs_lastmodifieddate"
    record: dict[str, Any] = {
        "id": str(row["id"]),
        "properties": {
            **shown,
            created_key: row["created_at"],
            modified_key: row["updated_at"],
            "hs_object_id": str(row["id"]),
        },
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "archived": False,
    }
    if new is not None:
        record["new"] = new
    return record


def _contact_by_email(conn: sqlite3.Connection, email: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM hubspot_objects WHERE object_type = 'contacts' AND email = ?",
        (email.lower(),),
    ).fetchone()
    return row


def _object(conn: sqlite3.Connection, object_type: str, object_id: str) -> sqlite3.Row | None:
    if not _OBJECT_ID.fullmatch(object_id):
        return None
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM hubspot_objects WHERE object_type = ? AND id = ?",
        (object_type, int(object_id)),
    ).fetchone()
    return row


def _insert(
    conn: sqlite3.Connection, object_type: str, properties: dict[str, str], now: datetime
) -> sqlite3.Row:
    email = properties.get("email", "").lower() if object_type == "contacts" else ""
    if email:
        properties = {**properties, "email": email}
    cursor = conn.execute(
        "INSERT INTO hubspot_objects (object_type, email, voice_call_id, properties, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            object_type,
            email or None,
            properties.get(IDEMPOTENCY_PROPERTY) or None,
            json.dumps(properties),
            hs_time(now),
            hs_time(now),
        ),
    )
    row: sqlite3.Row = conn.execute(
        "SELECT * FROM hubspot_objects WHERE id = ?", (cursor.lastrowid,)
    ).fetchone()
    return row


def _update(
    conn: sqlite3.Connection, row: sqlite3.Row, properties: dict[str, str], now: datetime
) -> sqlite3.Row:
    merged = {**json.loads(row["properties"]), **properties}
    conn.execute(
        "UPDATE hubspot_objects SET properties = ?, updated_at = ? WHERE id = ?",
        (json.dumps(merged), hs_time(now), row["id"]),
    )
    updated: sqlite3.Row = conn.execute(
        "SELECT * FROM hubspot_objects WHERE id = ?", (row["id"],)
    ).fetchone()
    return updated


@router.post(f"{OBJECTS}/contacts/batch/upsert", openapi_extra=request_body(_batch_upsert_body()))
async def batch_upsert_contacts(request: Request) -> Response:
    """Create or update contacts by email (`idProperty: email`); `new` says which happened."""
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, "batch_upsert_contacts")
    if (denied := _unauthorized(request)) is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= BATCH_MAX_INPUTS:
        message = f"inputs must hold between 1 and {BATCH_MAX_INPUTS} objects"
        return _failure(400, "VALIDATION_ERROR", message)
    parsed: list[tuple[str, dict[str, str]]] = []
    for item in inputs:
        if not isinstance(item, dict) or item.get("idProperty") != "email":
            return _failure(
                400, "VALIDATION_ERROR", "idProperty must be email, a unique property of contacts"
            )
        raw_id = item.get("id")
        email = raw_id.strip().lower() if isinstance(raw_id, str) else ""
        if not email:
            return _failure(400, "VALIDATION_ERROR", "Each input needs the id (the email)")
        properties = item.get("properties") or {}
        if not isinstance(properties, dict):
            return _failure(400, "VALIDATION_ERROR", "properties must be an object")
        values, invalid = _check_properties(
            "contacts", {**properties, "email": email}, creating=True
        )
        if invalid is not None:
            return invalid
        parsed.append((email, values))
    emails = [email for email, _ in parsed]
    duplicates = sorted({email for email in emails if emails.count(email) > 1})
    if duplicates:
        return _failure(
            400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicates}"
        )
    started = datetime.now(UTC)
    results = []
    with sandbox.state.transaction() as tx:
        for email, values in parsed:
            existing = _contact_by_email(tx, email)
            if existing is None:
                results.append(_object_json(_insert(tx, "contacts", values, started), new=True))
            else:
                row = _update(tx, existing, values, started)
                results.append(_object_json(row, new=False))
    await sandbox.faults.after_commit(VENDOR, "batch_upsert_contacts")
    return JSONResponse(
        {
            "status": "COMPLETE",
            "results": results,
            "requestedAt": hs_time(started),
            "startedAt": hs_time(started),
            "completedAt": hs_time(datetime.now(UTC)),
        }
    )


def _association_targets(
    tx: sqlite3.Connection, object_type: str, associations: Any
) -> tuple[list[tuple[int, int, str]], JSONResponse | None]:
    """(contact id, type id, category) for each association, or HubSpot's 400."""
    if associations is None:
        return [], None
    if not isinstance(associations, list):
        return [], _failure(400, "VALIDATION_ERROR", "associations must be a list")
    targets: list[tuple[int, int, str]] = []
    for association in associations:
        to_id, kinds, malformed = _association_parts(association)
        if malformed is not None:
            return [], malformed
        for type_id, category in kinds:
            if category != "HUBSPOT_DEFINED" or type_id != ASSOCIATION_TO_CONTACT.get(object_type):
                return [], _failure(
                    400,
                    "VALIDATION_ERROR",
                    f"{category} association type {type_id} is not valid from {object_type}",
                )
            if _object(tx, "contacts", to_id) is None:
                return [], _failure(
                    400,
                    "VALIDATION_ERROR",
                    f"One or more associations are invalid: contact {to_id} does not exist",
                    subCategory="crm.associations.INVALID_OBJECT_IDS",
                )
            targets.append((int(to_id), type_id, category))
    return targets, None


def _association_parts(association: Any) -> tuple[str, list[tuple[int, str]], JSONResponse | None]:
    """The target id and (type id, category) of one association, or the 400 for its shape."""
    shape = _failure(
        400,
        "VALIDATION_ERROR",
        "Invalid input JSON: each association needs to: {id} and types: [{associationCategory,"
        " associationTypeId}]",
    )
    if not isinstance(association, dict) or not isinstance(association.get("to"), dict):
        return "", [], shape
    raw_id, kinds = association["to"].get("id"), association.get("types")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        return "", [], shape
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, dict) for k in kinds):
        return "", [], shape
    types: list[tuple[int, str]] = []
    for kind in kinds:
        type_id = kind.get("associationTypeId")
        category = kind.get("associationCategory", "HUBSPOT_DEFINED")
        if isinstance(type_id, bool) or not isinstance(type_id, int):
            return "", [], shape
        if not isinstance(category, str):
            return "", [], shape
        types.append((type_id, category))
    return str(raw_id), types, None


async def _create_engagement(object_type: str, request: Request) -> Response:
    operation = f"create_{object_type[:-1]}"
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, operation)
    if (denied := _unauthorized(request)) is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    values, invalid = _check_properties(object_type, body.get("properties"), creating=True)
    if invalid is not None:
        return invalid
    now = datetime.now(UTC)
    with sandbox.state.transaction() as tx:
        targets, invalid = _association_targets(tx, object_type, body.get("associations"))
        if invalid is not None:
            return invalid
        key = values.get(IDEMPOTENCY_PROPERTY)
        if key:
            clash = tx.execute(
                "SELECT id FROM hubspot_objects WHERE object_type = ? AND voice_call_id = ?",
                (object_type, key),
            ).fetchone()
            if clash is not None:
                message = (
                    f'A {object_type[:-1]} with the unique value "{key}" for property '
                    f'"{IDEMPOTENCY_PROPERTY}" already exists. Existing ID: {clash["id"]}'
                )
                return _failure(409, "CONFLICT", message)
        row = _insert(tx, object_type, values, now)
        for to_id, type_id, category in targets:
            tx.execute(
                "INSERT OR IGNORE INTO hubspot_associations VALUES (?, ?, 'contacts', ?, ?, ?)",
                (object_type, row["id"], to_id, type_id, category),
            )
    await sandbox.faults.after_commit(VENDOR, operation)
    return JSONResponse(_object_json(row), status_code=201)


@router.post(f"{OBJECTS}/contacts", openapi_extra=request_body(_create_body("contacts")))
async def create_contact(request: Request) -> Response:
    """Create one contact; an email that exists already is a 409 naming the existing id."""
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, "create_contact")
    if (denied := _unauthorized(request)) is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    values, invalid = _check_properties("contacts", body.get("properties"), creating=True)
    if invalid is not None:
        return invalid
    with sandbox.state.transaction() as tx:
        existing = _contact_by_email(tx, values.get("email", ""))
        if existing is not None:
            message = f"Contact already exists. Existing ID: {existing['id']}"
            return _failure(409, "CONFLICT", message)
        row = _insert(tx, "contacts", values, datetime.now(UTC))
    await sandbox.faults.after_commit(VENDOR, "create_contact")
    return JSONResponse(_object_json(row), status_code=201)


@router.post(f"{OBJECTS}/calls", openapi_extra=request_body(_create_body("calls")))
async def create_call(request: Request) -> Response:
    return await _create_engagement("calls", request)


@router.post(f"{OBJECTS}/notes", openapi_extra=request_body(_create_body("notes")))
async def create_note(request: Request) -> Response:
    return await _create_engagement("notes", request)


@router.post(f"{OBJECTS}/meetings", openapi_extra=request_body(_create_body("meetings")))
async def create_meeting(request: Request) -> Response:
    return await _create_engagement("meetings", request)


# --- search and reads ---------------------------------------------------------------------------


def _matches(stored: dict[str, str], object_id: int, flt: dict[str, Any]) -> bool:
    name = str(flt.get("propertyName", ""))
    actual = str(object_id) if name == "hs_object_id" else stored.get(name)
    operator = flt.get("operator", "EQ")
    expected = str(flt.get("value", ""))
    if operator == "HAS_PROPERTY":
        return bool(actual)
    if operator == "NOT_HAS_PROPERTY":
        return not actual
    if operator == "EQ":
        # Search compares string values case-insensitively.
        return actual is not None and actual.lower() == expected.lower()
    if operator == "NEQ":
        return actual is None or actual.lower() != expected.lower()
    if operator == "IN":
        return actual is not None and actual.lower() in {str(v).lower() for v in flt["values"]}
    return False


SEARCH_OPERATORS = ("EQ", "NEQ", "IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
_SCALAR = str | int | float | bool


def _search_failure(body: dict[str, Any]) -> Response | None:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > SEARCH_MAX_FILTER_GROUPS:
        return _failure(
            400, "VALIDATION_ERROR", f"at most {SEARCH_MAX_FILTER_GROUPS} filterGroups allowed"
        )
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("filters") or [], list):
            return _failure(400, "VALIDATION_ERROR", "each filterGroup needs a filters list")
        filters = group.get("filters") or []
        if len(filters) > SEARCH_MAX_FILTERS:
            message = f"at most {SEARCH_MAX_FILTERS} filters allowed per filterGroup"
            return _failure(400, "VALIDATION_ERROR", message)
        for flt in filters:
            if (problem := _filter_problem(flt)) is not None:
                return _failure(400, "VALIDATION_ERROR", problem)
    limit = body.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= SEARCH_MAX_LIMIT:
        return _failure(400, "VALIDATION_ERROR", f"limit must be 1..{SEARCH_MAX_LIMIT}")
    after = body.get("after")
    if after is not None and not _is_cursor(after):
        return _failure(400, "VALIDATION_ERROR", "after must be the paging cursor of a response")
    names = body.get("properties")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        return _failure(400, "VALIDATION_ERROR", "properties must be a list of property names")
    return None


def _is_cursor(after: Any) -> bool:
    is_number_or_text = isinstance(after, str | int) and not isinstance(after, bool)
    return is_number_or_text and _OBJECT_ID.fullmatch(str(after)) is not None


def _filter_problem(flt: Any) -> str | None:
    """Why one search filter is malformed, or None."""
    if not isinstance(flt, dict) or not isinstance(flt.get("propertyName", ""), str):
        return "each filter needs a propertyName and an operator"
    operator = flt.get("operator")
    if not isinstance(operator, str):
        return "each filter needs a propertyName and an operator"
    if operator not in SEARCH_OPERATORS:
        return f"Unsupported operator: {operator}"
    if "value" in flt and not isinstance(flt["value"], _SCALAR):
        return "a filter value must be a string, number or boolean"
    values = flt.get("values")
    well_formed = isinstance(values, list) and all(isinstance(v, _SCALAR) for v in values)
    if (operator == "IN" or values is not None) and not well_formed:
        return "operator IN needs values" if operator == "IN" else "values must be a list"
    return None


@router.post(f"{OBJECTS}/{{object_type}}/search", openapi_extra=request_body(SearchRequest))
async def search(object_type: str, request: Request) -> Response:
    """CRM search: filter groups are OR-ed, the filters inside a group AND-ed."""
    await sandbox_of(request).faults.before(VENDOR, f"search_{object_type}")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if object_type not in PROPERTIES:
        return _failure(400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}")
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    if (invalid := _search_failure(body)) is not None:
        return invalid
    groups = [(g or {}).get("filters") or [] for g in body.get("filterGroups") or []]
    conn = _conn(request)
    lag = conn.execute("SELECT search_lag_ms FROM hubspot_portal").fetchone()
    indexed_before = datetime.now(UTC) - timedelta(milliseconds=lag[0] if lag else 0)
    rows = conn.execute(
        "SELECT * FROM hubspot_objects WHERE object_type = ? AND created_at <= ? ORDER BY id",
        (object_type, hs_time(indexed_before)),
    )
    found = [
        row
        for row in rows
        if not groups
        or any(
            all(_matches(json.loads(row["properties"]), row["id"], f) for f in filters)
            for filters in groups
        )
    ]
    after = int(body["after"]) if body.get("after") is not None else 0
    limit = int(body.get("limit", 10))
    page = found[after : after + limit]
    requested = body.get("properties") or None
    answer: dict[str, Any] = {
        "total": len(found),
        "results": [_object_json(row, requested) for row in page],
    }
    if after + limit < len(found):
        answer["paging"] = {"next": {"after": str(after + limit)}}
    return JSONResponse(answer)


@router.get(f"{OBJECTS}/{{object_type}}/{{object_id}}")
async def get_object(object_type: str, object_id: str, request: Request) -> Response:
    """Read one object by id (or by email with `idProperty=email`), with its associations."""
    await sandbox_of(request).faults.before(VENDOR, "get_object")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if object_type not in PROPERTIES:
        return _failure(400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}")
    conn = _conn(request)
    if object_type == "contacts" and request.query_params.get("idProperty") == "email":
        row = _contact_by_email(conn, object_id)
    else:
        row = _object(conn, object_type, object_id)
    if row is None:
        return _failure(404, "OBJECT_NOT_FOUND", "resource not found")
    names = request.query_params.get("properties")
    record = _object_json(row, names.split(",") if names else None)
    wanted = request.query_params.get("associations")
    if wanted == "contacts":
        links = conn.execute(
            "SELECT to_id FROM hubspot_associations WHERE from_type = ? AND from_id = ?"
            " AND to_type = 'contacts' ORDER BY to_id",
            (object_type, row["id"]),
        ).fetchall()
        label = f"{object_type[:-1]}_to_contact"
        record["associations"] = {
            "contacts": {"results": [{"id": str(link["to_id"]), "type": label} for link in links]}
        }
    return JSONResponse(record)
