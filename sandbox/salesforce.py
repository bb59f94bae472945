"""Salesforce emulator: client-credentials OAuth, sObject upsert by external id, record reads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from config.settings import SANDBOX_CREDENTIAL
from devtools.people import (
    DANA_WHITFIELD,
    DUPLICATE_LEAD_COMPANY,
    DUPLICATE_LEAD_EMAIL,
    DUPLICATE_LEAD_NAMES,
    DUPLICATE_TRIAL_ACCOUNT_ID,
)
from sandbox.faults import ErrorStyle
from sandbox.json_body import BodyRefused, is_json_content, parse_json
from sandbox.openapi_bodies import FORM_MEDIA, request_body
from sandbox.request_log import LoggedRoute, sandbox_of
from sandbox.state import VendorSchema

VENDOR = "salesforce"
DATA_PREFIX = "/services/data"
TOKEN_PATH = "/services/oauth2/token"
REVOKE_PATH = "/services/oauth2/revoke"

API_DAILY_MAX = 15_000  # the org's rolling 24-hour API request allocation
SESSION_LIFETIME = timedelta(hours=2)  # the default session timeout of an org
ORG_ID = "00D5g000004TRIAL"
INTEGRATION_USER_ID = "0055g00000INTEG"
# A seeded data-quality problem: two Leads share this external id, so an upsert answers 300.

NOT_FOUND_MESSAGE = "The requested resource does not exist"
INVALID_SESSION_MESSAGE = "Session expired or invalid"
REQUEST_LIMIT_MESSAGE = "TotalRequests Limit exceeded."
NO_BODY_MESSAGE = "The HTTP entity body is required, but this request has no entity body."
INT_FIELD_RANGE = (-(2**31), 2**31 - 1)  # an `int` field is a 32-bit integer

_VERSION = re.compile(r"^v\d{2,3}\.0$")
_RECORD_ID = re.compile(r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_CHECKSUM_ALPHABET = string.ascii_uppercase + "012345"

_DDL = """
CREATE TABLE IF NOT EXISTS salesforce_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sobject TEXT NOT NULL,
    fields TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS salesforce_tokens (
    access_token TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS salesforce_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL
);
"""


# --- the emulated org's schema ----------------------------------------------------------------

FieldKind = Literal[
    "string", "textarea", "email", "phone", "picklist", "date", "datetime", "int", "boolean"
]


@dataclass(frozen=True)
class FieldSpec:
    kind: FieldKind | Literal["reference"]
    length: int = 255
    restricted: tuple[str, ...] = ()  # a restricted picklist accepts only these values


@dataclass(frozen=True)
class SObjectSpec:
    prefix: str  # the record id's key prefix
    fields: dict[str, FieldSpec]
    external_ids: frozenset[str]
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)


_LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
_TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")

SOBJECTS: dict[str, SObjectSpec] = {
    "Lead": SObjectSpec(
        prefix="00Q",
        fields={
            "FirstName": FieldSpec("string", 40),
            "LastName": FieldSpec("string", 80),
            "Company": FieldSpec("string", 255),
            "Title": FieldSpec("string", 128),
            "Email": FieldSpec("email", 80),
            "Phone": FieldSpec("phone", 40),
            "LeadSource": FieldSpec("picklist", 255),
            "Status": FieldSpec("picklist", 255, _LEAD_STATUSES),
            "Description": FieldSpec("textarea", 32_000),
            "Trial_Account_Id__c": FieldSpec("string", 255),
            # Outreach (issue 16): the standard do-not-call fields and the outreach's final state.
            "DoNotCall": FieldSpec("boolean"),
            "HasOptedOutOfEmail": FieldSpec("boolean"),
            "Outreach_Status__c": FieldSpec("string", 255),
        },
        external_ids=frozenset({"Trial_Account_Id__c"}),
        required=("LastName", "Company"),
        defaults={"Status": "Open - Not Contacted"},
    ),
    "Task": SObjectSpec(
        prefix="00T",
        fields={
            "Subject": FieldSpec("string", 255),
            "Description": FieldSpec("textarea", 32_000),
            "Status": FieldSpec("picklist", 255, _TASK_STATUSES),
            "Priority": FieldSpec("picklist", 255, ("High", "Normal", "Low")),
            "ActivityDate": FieldSpec("date"),
            "WhoId": FieldSpec("reference"),
            "TaskSubtype": FieldSpec(
                "picklist", 255, ("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn")
            ),
            "Type": FieldSpec("picklist", 255),
            "CallType": FieldSpec("picklist", 255, ("Internal", "Inbound", "Outbound")),
            "CallDurationInSeconds": FieldSpec("int"),
            "CallDisposition": FieldSpec("string", 255),
            "Voice_Call_Id__c": FieldSpec("string", 255),
        },
        external_ids=frozenset({"Voice_Call_Id__c"}),
        defaults={"Status": "Not Started", "Priority": "Normal", "TaskSubtype": "Task"},
    ),
    "Event": SObjectSpec(
        prefix="00U",
        fields={
            "Subject": FieldSpec("string", 255),
            "Description": FieldSpec("textarea", 32_000),
            "StartDateTime": FieldSpec("datetime"),
            "EndDateTime": FieldSpec("datetime"),
            "DurationInMinutes": FieldSpec("int"),
            "Location": FieldSpec("string", 255),
            "Type": FieldSpec("picklist", 255),
            "WhoId": FieldSpec("reference"),
            "Voice_Meeting_Id__c": FieldSpec("string", 255),
        },
        external_ids=frozenset({"Voice_Meeting_Id__c"}),
        required=("StartDateTime", "EndDateTime"),
    ),
}
SYSTEM_FIELDS = ("Id", "OwnerId", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
# Fault-spec operation names, per sObject.
UPSERT_OPERATIONS = {"Lead": "upsert_lead", "Task": "upsert_task", "Event": "upsert_event"}


# --- request bodies as Salesforce documents them (OpenAPI only: the routes parse raw bytes) ------


def _field_type(spec: FieldSpec) -> Any:
    kinds: dict[str, Any] = {
        "int": Annotated[int, Field(ge=INT_FIELD_RANGE[0], le=INT_FIELD_RANGE[1])],
        "date": date,
        "datetime": datetime,
        "reference": Annotated[str, Field(pattern=_RECORD_ID.pattern)],
    }
    if spec.restricted:
        return Literal[spec.restricted] | None
    return kinds.get(spec.kind, Annotated[str, Field(max_length=spec.length)]) | None


def _sobject_body(name: str, spec: SObjectSpec) -> type[BaseModel]:
    fields: dict[str, Any] = {field: (_field_type(f), None) for field, f in spec.fields.items()}
    model: type[BaseModel] = create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
    return model


SOBJECT_BODIES = [_sobject_body(f"{name}Fields", spec) for name, spec in SOBJECTS.items()]


class TokenForm(BaseModel):
    grant_type: Literal["client_credentials"]
    client_id: str
    client_secret: str


class RevokeForm(BaseModel):
    token: str


# --- helpers ----------------------------------------------------------------------------------


def sf_datetime(moment: datetime) -> str:
    """Salesforce's dateTime wire form: UTC with milliseconds and a `+0000` offset."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.astimezone(UTC).microsecond // 1000:03d}+0000"
    )


def _parse_datetime(value: str) -> datetime | None:
    text = value.strip()
    if re.search(r"[+-]\d{4}$", text):
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # Salesforce reads a dateTime without an offset as UTC; one that leaves UTC's range is bad.
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def record_id(prefix: str, seq: int) -> str:
    """An 18-character record id: key prefix, pod, a base-62 number and the case checksum."""
    digits = ""
    while seq:
        seq, rest = divmod(seq, 62)
        digits = _BASE62[rest] + digits
    id15 = f"{prefix}5g0{digits.rjust(9, '0')}"
    suffix = ""
    for chunk in range(3):
        bits = sum(
            1 << i for i, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if char.isupper()
        )
        suffix += _CHECKSUM_ALPHABET[bits]
    return id15 + suffix


def _errors(status: int, *items: tuple[str, str, list[str] | None]) -> JSONResponse:
    """Salesforce's JSON-array error body: [{message, errorCode, fields?}]."""
    body: list[dict[str, Any]] = []
    for message, code, fields in items:
        entry: dict[str, Any] = {"message": message, "errorCode": code}
        if fields is not None:
            entry["fields"] = fields
        body.append(entry)
    return JSONResponse(body, status_code=status)


def _error(status: int, message: str) -> Response:
    codes = {
        400: "INVALID_FIELD",
        401: "INVALID_SESSION_ID",
        403: "INSUFFICIENT_ACCESS",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        409: "CONFLICT",
        415: "UNSUPPORTED_MEDIA_TYPE",
        503: "SERVER_UNAVAILABLE",
    }
    code = codes.get(status, "UNKNOWN_EXCEPTION" if status >= 500 else "BAD_REQUEST")
    return _errors(status, (message, code, None))


def _rate_limited(retry_after: float) -> Response:
    # Salesforce answers an exhausted API allocation with 403, not 429, and no Retry-After.
    return _errors(403, (REQUEST_LIMIT_MESSAGE, "REQUEST_LIMIT_EXCEEDED", None))


ERROR_STYLE = ErrorStyle(error=_error, rate_limited=_rate_limited)


def _conn(request: Request) -> sqlite3.Connection:
    return sandbox_of(request).state.conn


def _api_usage(conn: sqlite3.Connection) -> int:
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    row = conn.execute(
        "SELECT count(*) FROM salesforce_requests WHERE path LIKE ? AND at > ?",
        (f"%{DATA_PREFIX}/%", since),
    ).fetchone()
    return int(row[0])


class _SalesforceRoute(LoggedRoute):
    """Logs each request and stamps REST responses (faults included) with Sforce-Limit-Info."""

    table = "salesforce_requests"

    @staticmethod
    def stamp(conn: sqlite3.Connection, request: Request, response: Response) -> None:
        # An invalid session names no org, so its calls are not counted against one.
        if DATA_PREFIX in request.url.path and response.status_code != 401:
            # A fault may set its own (e.g. an exhausted allocation); keep it then.
            response.headers.setdefault(
                "Sforce-Limit-Info", f"api-usage={_api_usage(conn)}/{API_DAILY_MAX}"
            )


router = APIRouter(tags=["salesforce"], route_class=_SalesforceRoute)


# --- seed ---------------------------------------------------------------------------------------


def _insert(conn: sqlite3.Connection, sobject: str, fields: dict[str, Any], now: datetime) -> str:
    spec = SOBJECTS[sobject]
    stamp = sf_datetime(now)
    cursor = conn.execute(
        "INSERT INTO salesforce_records (id, sobject, fields, created_at, updated_at)"
        " VALUES (?, ?, '{}', ?, ?)",
        (f"pending-{uuid.uuid4()}", sobject, stamp, stamp),
    )
    assert cursor.lastrowid is not None
    new_id = record_id(spec.prefix, cursor.lastrowid)
    stored = {**spec.defaults, **fields, "OwnerId": INTEGRATION_USER_ID, "IsDeleted": False}
    conn.execute(
        "UPDATE salesforce_records SET id = ?, fields = ? WHERE seq = ?",
        (new_id, json.dumps(stored), cursor.lastrowid),
    )
    return new_id


def _seed(conn: sqlite3.Connection, now: datetime) -> None:
    # Dana already has a Lead (an update on first upsert); the duplicate pair answers 300.
    _insert(
        conn,
        "Lead",
        {
            "FirstName": DANA_WHITFIELD.first_name,
            "LastName": DANA_WHITFIELD.last_name,
            "Company": DANA_WHITFIELD.trialist.company,
            "Email": DANA_WHITFIELD.trialist.email,
            "LeadSource": "Free Trial",
            "Trial_Account_Id__c": DANA_WHITFIELD.trialist.trial_account_id,
        },
        now,
    )
    for first, last in DUPLICATE_LEAD_NAMES:
        _insert(
            conn,
            "Lead",
            {
                "FirstName": first,
                "LastName": last,
                "Company": DUPLICATE_LEAD_COMPANY,
                "Email": DUPLICATE_LEAD_EMAIL,
                "LeadSource": "Free Trial",
                "Trial_Account_Id__c": DUPLICATE_TRIAL_ACCOUNT_ID,
            },
            now,
        )


SCHEMA = VendorSchema(vendor=VENDOR, ddl=_DDL, seed=_seed)


# --- OAuth --------------------------------------------------------------------------------------


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _base_url(request: Request, suffix: str) -> str:
    """The emulator's own base (e.g. http://127.0.0.1:8900/salesforce): the instance URL."""
    url = str(request.url.replace(query=""))
    return url[: -len(suffix)] if url.endswith(suffix) else url


async def _form(request: Request) -> dict[str, str] | None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """client_id/client_secret from the form, or from HTTP Basic auth as Salesforce allows."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            decoded = base64.b64decode(encoded).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        client_id, _, client_secret = decoded.partition(":")
        return client_id, client_secret
    return form.get("client_id", ""), form.get("client_secret", "")


@router.post(TOKEN_PATH, openapi_extra=request_body(TokenForm, media=FORM_MEDIA))
async def token(request: Request) -> Response:
    """OAuth 2.0 client-credentials flow: a session token and the instance URL to use it on."""
    await sandbox_of(request).faults.before(VENDOR, "token")
    form = await _form(request)
    if form is None or form.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "grant type not supported")
    client_id, client_secret = _client_credentials(request, form)
    if not client_id:
        return _oauth_error("invalid_client_id", "client identifier invalid")
    # Bytes: compare_digest refuses str holding non-ASCII, and a secret may hold anything.
    if not hmac.compare_digest(client_secret.encode(), SANDBOX_CREDENTIAL.encode()):
        return _oauth_error("invalid_client", "invalid client credentials")
    now = datetime.now(UTC)
    access_token = f"{ORG_ID}!{secrets.token_urlsafe(48)}"
    _conn(request).execute(
        "INSERT INTO salesforce_tokens (access_token, client_id, issued_at, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (access_token, client_id, now.isoformat(), (now + SESSION_LIFETIME).isoformat()),
    )
    instance_url = _base_url(request, TOKEN_PATH)
    identity = f"{instance_url}/id/{ORG_ID}/{INTEGRATION_USER_ID}"
    issued_at = str(int(now.timestamp() * 1000))
    # Salesforce signs id + issued_at with the consumer secret (HMAC-SHA256, base64).
    digest = hmac.new(client_secret.encode(), f"{identity}{issued_at}".encode(), hashlib.sha256)
    return JSONResponse(
        {
            "access_token": access_token,
            "signature": base64.b64encode(digest.digest()).decode(),
            "scope": "api",
            "instance_url": instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
    )


@router.post(REVOKE_PATH, openapi_extra=request_body(RevokeForm, media=FORM_MEDIA))
async def revoke(request: Request) -> Response:
    """Revoke a session token: the next API call with it answers 401 INVALID_SESSION_ID."""
    await sandbox_of(request).faults.before(VENDOR, "revoke")
    form = await _form(request) or {}
    cursor = _conn(request).execute(
        "UPDATE salesforce_tokens SET revoked = 1 WHERE access_token = ?", (form.get("token", ""),)
    )
    if cursor.rowcount == 0:
        return _oauth_error("invalid_token", "invalid token")
    return Response(status_code=200)


def _unauthorized(request: Request) -> Response | None:
    scheme, _, access_token = request.headers.get("authorization", "").partition(" ")
    row = None
    if scheme.lower() in ("bearer", "oauth") and access_token:
        row = (
            _conn(request)
            .execute(
                "SELECT 1 FROM salesforce_tokens WHERE access_token = ? AND revoked = 0"
                " AND expires_at > ?",
                (access_token.strip(), datetime.now(UTC).isoformat()),
            )
            .fetchone()
        )
    if row is None:
        return _errors(401, (INVALID_SESSION_MESSAGE, "INVALID_SESSION_ID", None))
    return None


# --- records ------------------------------------------------------------------------------------


def _not_found(message: str = NOT_FOUND_MESSAGE) -> JSONResponse:
    return _errors(404, (message, "NOT_FOUND", None))


def _resource(version: str, sobject: str) -> SObjectSpec | None:
    return SOBJECTS.get(sobject) if _VERSION.match(version) else None


def _record_url(version: str, sobject: str, record: str) -> str:
    return f"{DATA_PREFIX}/{version}/sobjects/{sobject}/{record}"


def _by_external_id(
    conn: sqlite3.Connection, sobject: str, external_field: str, value: str
) -> list[sqlite3.Row]:
    # External ids match case-insensitively unless the field is marked case-sensitive.
    return conn.execute(
        "SELECT * FROM salesforce_records WHERE sobject = ?"
        " AND lower(json_extract(fields, ?)) = lower(?) ORDER BY seq",
        (sobject, f"$.{external_field}", value),
    ).fetchall()


def _record_json(row: sqlite3.Row, version: str) -> dict[str, Any]:
    spec = SOBJECTS[row["sobject"]]
    stored = json.loads(row["fields"])
    record: dict[str, Any] = {
        "attributes": {
            "type": row["sobject"],
            "url": _record_url(version, row["sobject"], row["id"]),
        },
        "Id": row["id"],
    }
    record.update({name: stored.get(name) for name in spec.fields})
    record.update(
        OwnerId=stored.get("OwnerId"),
        IsDeleted=stored.get("IsDeleted", False),
        CreatedDate=row["created_at"],
        LastModifiedDate=row["updated_at"],
        SystemModstamp=row["updated_at"],
    )
    return record


Problem = tuple[str, str, list[str] | None]


def _check_value(
    conn: sqlite3.Connection, name: str, spec: FieldSpec, value: Any
) -> tuple[Any, Problem | None]:
    """The stored form of one field value, or the Salesforce error it causes."""
    if value is None:
        return None, None
    parser_error: Problem = (
        f"Cannot deserialize instance of {spec.kind} from {type(value).__name__} value"
        f" for field {name}",
        "JSON_PARSER_ERROR",
        None,
    )
    if spec.kind == "boolean":
        return (value, None) if isinstance(value, bool) else (None, parser_error)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            return None, parser_error
        if not INT_FIELD_RANGE[0] <= value <= INT_FIELD_RANGE[1]:
            message = f"{name}: number outside the valid range"
            return None, (message, "NUMBER_OUTSIDE_VALID_RANGE", [name])
        return int(value), None
    if not isinstance(value, str):
        return None, parser_error
    if spec.kind == "date":
        try:
            return date.fromisoformat(value).isoformat(), None
        except ValueError:
            return None, parser_error
    if spec.kind == "datetime":
        moment = _parse_datetime(value)
        return (None, parser_error) if moment is None else (sf_datetime(moment), None)
    if spec.kind == "reference":
        return _check_reference(conn, name, value)
    if len(value) > spec.length:
        return None, (
            f"{name}: data value too large (max length={spec.length})",
            "STRING_TOO_LONG",
            [name],
        )
    if spec.kind == "email" and value and not _EMAIL.match(value):
        return None, (f"{name}: invalid email address: {value}", "INVALID_EMAIL_ADDRESS", [name])
    if spec.restricted and value not in spec.restricted:
        return None, (
            f"{name}: bad value for restricted picklist field: {value}",
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            [name],
        )
    return value, None


def _check_reference(conn: sqlite3.Connection, name: str, value: str) -> tuple[Any, Problem | None]:
    if not _RECORD_ID.match(value):
        return None, (f"{name}: id value of incorrect type: {value}", "MALFORMED_ID", [name])
    row = conn.execute(
        "SELECT id FROM salesforce_records WHERE substr(id, 1, 15) = ?", (value[:15],)
    ).fetchone()
    if row is None:
        return None, ("invalid cross reference id", "INVALID_CROSS_REFERENCE_KEY", [name])
    return row["id"], None


def _validate(
    conn: sqlite3.Connection,
    spec: SObjectSpec,
    sobject: str,
    body: dict[str, Any],
    existing: dict[str, Any] | None,
) -> tuple[dict[str, Any], JSONResponse | None]:
    """The field values to store, or a 400 with Salesforce's errors."""
    read_only = [name for name in body if name in SYSTEM_FIELDS]
    if read_only:
        message = f"Unable to create/update fields: {', '.join(read_only)}."
        return {}, _errors(400, (message, "INVALID_FIELD_FOR_INSERT_UPDATE", read_only))
    unknown = next((name for name in body if name not in spec.fields), None)
    if unknown is not None:
        message = f"No such column '{unknown}' on sobject of type {sobject}"
        return {}, _errors(400, (message, "INVALID_FIELD", None))
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, raw in body.items():
        stored, problem = _check_value(conn, name, spec.fields[name], raw)
        if problem is not None:
            problems.append(problem)
        values[name] = stored
    if problems:
        return {}, _errors(400, *problems)
    merged = {**(existing or {}), **values}
    missing = [name for name in spec.required if merged.get(name) in (None, "")]
    if missing:
        message = f"Required fields are missing: [{', '.join(missing)}]"
        return {}, _errors(400, (message, "REQUIRED_FIELD_MISSING", missing))
    if sobject == "Event":
        start = _parse_datetime(merged["StartDateTime"])
        end = _parse_datetime(merged["EndDateTime"])
        assert start is not None and end is not None
        if end < start:
            message = "End Date/Time: End time can't be before start time"
            return {}, _errors(400, (message, "FIELD_INTEGRITY_EXCEPTION", ["EndDateTime"]))
        values["DurationInMinutes"] = int((end - start).total_seconds() // 60)
    return values, None


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    if not is_json_content(request):
        media = request.headers.get("content-type", "").split(";")[0].strip()
        message = f"Content-Type header specified in HTTP request is not supported: {media}"
        return _errors(415, (message, "UNSUPPORTED_MEDIA_TYPE", None))
    raw = await request.body()
    if not raw.strip():
        return _errors(400, (NO_BODY_MESSAGE, "JSON_PARSER_ERROR", None))
    try:
        body = parse_json(raw)
    except BodyRefused as refused:
        return _errors(
            400,
            (f"Unexpected content in request body: {refused.reason}", "JSON_PARSER_ERROR", None),
        )
    if not isinstance(body, dict):
        message = "Cannot deserialize instance of sObject from START_ARRAY"
        return _errors(400, (message, "JSON_PARSER_ERROR", None))
    return body


@router.patch(
    f"{DATA_PREFIX}/{{version}}/sobjects/{{sobject}}/{{external_field}}/{{value}}",
    openapi_extra=request_body(*SOBJECT_BODIES),
)
async def upsert(
    version: str, sobject: str, external_field: str, value: str, request: Request
) -> Response:
    """Upsert by external id: 201 created, 200 updated, 300 when the id matches >1 record."""
    operation = UPSERT_OPERATIONS.get(sobject, "upsert_record")
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, operation)
    if (denied := _unauthorized(request)) is not None:
        return denied
    spec = _resource(version, sobject)
    if spec is None:
        return _not_found()
    if external_field not in spec.external_ids:
        return _not_found(
            f"Provided external ID field does not exist or is not accessible: {external_field}"
        )
    body = await _json_object(request)
    if isinstance(body, JSONResponse):
        return body
    # The URL names the record; a differing external id in the body would move it.
    body.pop(external_field, None)
    now = datetime.now(UTC)
    with sandbox.state.transaction() as tx:
        matches = _by_external_id(tx, sobject, external_field, value)
        if len(matches) > 1:
            urls = [_record_url(version, sobject, row["id"]) for row in matches]
            return JSONResponse(urls, status_code=300)
        existing = json.loads(matches[0]["fields"]) if matches else None
        values, invalid = _validate(tx, spec, sobject, body, existing)
        if invalid is not None:
            return invalid
        if matches:
            new_id = matches[0]["id"]
            tx.execute(
                "UPDATE salesforce_records SET fields = ?, updated_at = ? WHERE id = ?",
                (json.dumps({**(existing or {}), **values}), sf_datetime(now), new_id),
            )
        else:
            new_id = _insert(tx, sobject, {**values, external_field: value}, now)
    await sandbox.faults.after_commit(VENDOR, operation)
    created = not matches
    response = JSONResponse(
        {"id": new_id, "success": True, "errors": [], "created": created},
        status_code=201 if created else 200,
    )
    if created:
        response.headers["Location"] = _record_url(version, sobject, new_id)
    return response


@router.get(f"{DATA_PREFIX}/{{version}}/sobjects/{{sobject}}/{{record}}")
async def get_record(version: str, sobject: str, record: str, request: Request) -> Response:
    """Read one record by its Salesforce id (15 or 18 characters)."""
    await sandbox_of(request).faults.before(VENDOR, "get_record")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if _resource(version, sobject) is None or not _RECORD_ID.match(record):
        return _not_found()
    row = (
        _conn(request)
        .execute(
            "SELECT * FROM salesforce_records WHERE sobject = ? AND substr(id, 1, 15) = ?",
            (sobject, record[:15]),
        )
        .fetchone()
    )
    return _not_found() if row is None else JSONResponse(_record_json(row, version))


@router.get(f"{DATA_PREFIX}/{{version}}/sobjects/{{sobject}}/{{external_field}}/{{value}}")
async def get_by_external_id(
    version: str, sobject: str, external_field: str, value: str, request: Request
) -> Response:
    """Read one record by external id; 300 with the matching record URLs when ambiguous."""
    await sandbox_of(request).faults.before(VENDOR, "get_record")
    if (denied := _unauthorized(request)) is not None:
        return denied
    spec = _resource(version, sobject)
    if spec is None or external_field not in spec.external_ids:
        return _not_found()
    matches = _by_external_id(_conn(request), sobject, external_field, value)
    if len(matches) > 1:
        urls = [_record_url(version, sobject, row["id"]) for row in matches]
        return JSONResponse(urls, status_code=300)
    if not matches:
        return _not_found()
    return JSONResponse(_record_json(matches[0], version))
