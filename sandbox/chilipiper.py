"""Chili Piper Edge API emulator: scheduling-link init/schedule, meeting list and cancel."""

from __future__ import annotations

import math
import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
)

from config.settings import SANDBOX_CREDENTIAL
from sandbox.faults import ErrorStyle
from sandbox.json_body import BodyRefused, is_json_content, parse_json
from sandbox.openapi_bodies import request_body
from sandbox.request_log import sandbox_of
from sandbox.state import VendorSchema

VENDOR = "chilipiper"
EDGE = "/api/fire-edge"

# The seeded scheduling link and its one rep (one host keeps "a booked slot is taken" exact).
LINK_SLUG = "pandadoc-trial-demo"
LINK_ID = "5f0c7d0e-3a53-4c55-9d6b-2f4a0f0c1a01"
WORKSPACE_ID = "ws-pandadoc-sales"
MEETING_TYPE_ID = "8d2e4b7a-6a1c-4f0e-8f6f-5b1d2c3e4f50"
MEETING_TYPE_NAME = "PandaDoc trial walkthrough"
MEETING_MINUTES = 30
REP_USER_ID = "rep-jordan-blake"
REP_TIMEZONE = "America/New_York"
WORK_DAY_START_HOUR = 9
WORK_DAY_END_HOUR = 17

BUSINESS_DAYS_AHEAD = 5  # the calendar offers this many business days, starting today
MIN_NOTICE = timedelta(hours=1)  # no slot starts sooner than this after "now"
ROUTE_TTL = timedelta(minutes=30)  # an init session is short-lived
MAX_INTERVAL = timedelta(days=31)
MAX_MEETINGS_WINDOW = timedelta(days=7)  # the meetings query refuses wider windows
DEFAULT_PAGE_SIZE = 10
MAX_PAGE = 1_000_000  # page * pageSize stays a 64-bit OFFSET
LATEST_YEAR = 9998  # a window of up to MAX_INTERVAL after any accepted instant stays in range

INVALID_BODY = "Invalid value for: body"
MeetingStatus = Literal["Active", "Canceled", "NoShow", "Completed"]

_DDL = """
CREATE TABLE IF NOT EXISTS chilipiper_links (
    link_id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    meeting_type_id TEXT NOT NULL,
    meeting_type_name TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chilipiper_reps (
    user_id TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    timezone TEXT NOT NULL,
    day_start_hour INTEGER NOT NULL,
    day_end_hour INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chilipiper_routes (
    route_id TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    guest_email TEXT,
    guest_timezone TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    meeting_id TEXT
);
CREATE TABLE IF NOT EXISTS chilipiper_meetings (
    meeting_id TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    rep_user_id TEXT NOT NULL,
    route_id TEXT,
    guest_email TEXT NOT NULL,
    guest_first_name TEXT,
    guest_last_name TEXT,
    guest_company TEXT,
    guest_phone TEXT,
    guest_timezone TEXT,
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL,
    status TEXT NOT NULL,
    booked_at TEXT NOT NULL,
    canceled_at TEXT
);
CREATE INDEX IF NOT EXISTS chilipiper_meetings_rep_start
    ON chilipiper_meetings (rep_user_id, start_at);
"""


# --- time helpers ---------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """The fixed-width UTC form stored and returned, so SQL string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def business_days(start: date, count: int) -> list[date]:
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _rep_slots(rep: sqlite3.Row, now: datetime, duration: timedelta) -> Iterator[datetime]:
    """Every slot start in the rep's working hours over the booking horizon, in UTC."""
    zone = ZoneInfo(rep["timezone"])
    for day in business_days(now.astimezone(zone).date(), BUSINESS_DAYS_AHEAD):
        start = datetime.combine(day, time(rep["day_start_hour"]), tzinfo=zone)
        day_end = datetime.combine(day, time(rep["day_end_hour"]), tzinfo=zone)
        while start + duration <= day_end:
            if start >= now + MIN_NOTICE:
                yield start.astimezone(UTC)
            start += duration


# --- seed -----------------------------------------------------------------------------------


def _seed(conn: sqlite3.Connection, now: datetime) -> None:
    conn.execute(
        "INSERT INTO chilipiper_links VALUES (?, ?, 'RoundRobin', ?, ?, ?, ?)",
        (LINK_ID, LINK_SLUG, WORKSPACE_ID, MEETING_TYPE_ID, MEETING_TYPE_NAME, MEETING_MINUTES),
    )
    conn.execute(
        "INSERT INTO chilipiper_reps VALUES (?, ?, 'Jordan Blake', 'jordan.blake@pandadoc.example',"
        " ?, ?, ?)",
        (REP_USER_ID, LINK_ID, REP_TIMEZONE, WORK_DAY_START_HOUR, WORK_DAY_END_HOUR),
    )
    # Two existing meetings on the first business day after today make the calendar realistic.
    zone = ZoneInfo(REP_TIMEZONE)
    next_day = business_days(now.astimezone(zone).date() + timedelta(days=1), 1)[0]
    busy = [
        ("Avery", "Lin", "avery.lin@harborworks.example", time(10, 0)),
        ("Noah", "Patel", "noah.patel@kestrel-labs.example", time(14, 30)),
    ]
    for first, last, email, at in busy:
        start = datetime.combine(next_day, at, tzinfo=zone)
        conn.execute(
            "INSERT INTO chilipiper_meetings (meeting_id, link_id, rep_user_id, guest_email,"
            " guest_first_name, guest_last_name, guest_timezone, start_at, end_at, status,"
            " booked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'Active', ?)",
            (
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"chilipiper-seed:{email}")),
                LINK_ID,
                REP_USER_ID,
                email,
                first,
                last,
                REP_TIMEZONE,
                iso(start),
                iso(start + timedelta(minutes=MEETING_MINUTES)),
                iso(now),
            ),
        )


SCHEMA = VendorSchema(vendor=VENDOR, ddl=_DDL, seed=_seed)


# --- wire formats -----------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    """Chili Piper answers 400 in text/plain and everything else as {errorCode, errorMessage}."""
    if status == 400:
        return PlainTextResponse(INVALID_BODY, status_code=400)
    codes = {
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        415: "UnsupportedMediaType",
        429: "TooManyRequests",
    }
    code = codes.get(status, "InternalServerError" if status >= 500 else "BadRequest")
    return _envelope(status, code, message)


def _rate_limited(retry_after: float) -> Response:
    response = _envelope(429, "TooManyRequests", "Rate limit exceeded, retry later")
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _envelope(
    status: int, code: str, message: str, arguments: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errorCode": code, "errorMessage": message, "arguments": arguments or {}},
        status_code=status,
    )


ERROR_STYLE = ErrorStyle(error=_error, rate_limited=_rate_limited)


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class _LinkRef(_Body):
    type: str | None = None
    linkId: str | None = None
    slug: str | None = None


def _in_utc_range(moment: datetime) -> datetime:
    """The instant in UTC; one that UTC cannot hold, or too late to add a window to, is invalid."""
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("instant out of range") from None
    if in_utc.year > LATEST_YEAR:
        raise ValueError("instant out of range")
    return moment


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]


class _Interval(_Body):
    startsAt: Instant
    duration: str = Field(description='"<n> <unit>", e.g. "604800000 milliseconds".')


class _InitBody(_Body):
    link: _LinkRef
    guestEmail: EmailStr | None = None
    guestTimezone: str | None = None
    interval: _Interval | None = None


class _ScheduleBody(_Body):
    startTime: Instant
    guestEmail: EmailStr
    guestTimezone: str | None = None
    formData: dict[str, str] = Field(default_factory=dict)


class _MeetingsQuery(_Body):
    start: Instant
    end: Instant
    guestEmail: str | None = None
    status: list[MeetingStatus] | None = Field(default=None, min_length=1)
    page: int = Field(default=0, ge=0, le=MAX_PAGE)
    pageSize: int = Field(default=DEFAULT_PAGE_SIZE, gt=0, le=200)


_DURATION = re.compile(r"\s*([0-9]{1,15})\s*([a-z]+)\s*")
_UNIT_SECONDS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "second", "seconds"), 1.0),
    **dict.fromkeys(("minute", "minutes"), 60.0),
    **dict.fromkeys(("hour", "hours"), 3600.0),
    **dict.fromkeys(("day", "days"), 86400.0),
}


def parse_duration(value: str) -> timedelta | None:
    """Chili Piper writes durations as `<n> <unit>`, e.g. "604800000 milliseconds"."""
    match = _DURATION.fullmatch(value.lower())
    if match is None or match.group(2) not in _UNIT_SECONDS:
        return None
    try:
        return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError:  # more days than timedelta holds
        return None


def _form_field(reference: str, requirement: str, data_type: str) -> dict[str, Any]:
    return {
        "reference": reference,
        "requirement": {"type": requirement},
        "dataType": {"type": data_type},
    }


FORM_FIELDS = [
    _form_field("firstName", "Required", "ShortText"),
    _form_field("lastName", "Required", "ShortText"),
    _form_field("company", "Optional", "ShortText"),
    _form_field("phone", "Optional", "Phone"),
]
REQUIRED_FORM_FIELDS = ("firstName", "lastName")


# --- routes -----------------------------------------------------------------------------------

router = APIRouter(tags=["chilipiper"])


def _unauthorized(request: Request) -> Response | None:
    """Edge API tokens go in `Authorization: Bearer <token>`; without the prefix it is a 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != SANDBOX_CREDENTIAL:
        return _envelope(401, "Unauthorized", "Missing or invalid API token")
    return None


async def _parse(request: Request, model: type[_Body]) -> Any:
    """The body as `model`, or None (Chili Piper's 400): strict JSON first, as its parser is."""
    raw = await request.body()
    try:
        parse_json(raw)
        return model.model_validate_json(raw)
    except (BodyRefused, ValidationError):
        return None


def _unsupported_media(request: Request) -> Response | None:
    if is_json_content(request):
        return None
    return _error(415, "Content-Type must be application/json")


def _link(conn: sqlite3.Connection, ref: _LinkRef) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM chilipiper_links WHERE slug = ? OR link_id = ?",
        (ref.slug or "", ref.linkId or ""),
    ).fetchone()
    return row


def _free_slots(conn: sqlite3.Connection, link: sqlite3.Row, now: datetime) -> dict[datetime, str]:
    """Each free slot start (UTC) mapped to the first rep who is free then."""
    duration = timedelta(minutes=link["duration_minutes"])
    reps = conn.execute(
        "SELECT * FROM chilipiper_reps WHERE link_id = ? ORDER BY user_id", (link["link_id"],)
    ).fetchall()
    free: dict[datetime, str] = {}
    for rep in reps:
        busy = [
            (parse_iso(row["start_at"]), parse_iso(row["end_at"]))
            for row in conn.execute(
                "SELECT start_at, end_at FROM chilipiper_meetings"
                " WHERE rep_user_id = ? AND status = 'Active' AND end_at > ?",
                (rep["user_id"], iso(now)),
            )
        ]
        for start in _rep_slots(rep, now, duration):
            end = start + duration
            if start not in free and not any(
                b_start < end and b_end > start for b_start, b_end in busy
            ):
                free[start] = rep["user_id"]
    return dict(sorted(free.items()))


@router.post(f"{EDGE}/v1/org/schedulingLinks/init-simple", openapi_extra=request_body(_InitBody))
async def init_simple(request: Request) -> Response:
    """Open a short-lived booking session: a route id and the link's free start times."""
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, "init_simple")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if (unsupported := _unsupported_media(request)) is not None:
        return unsupported
    body: _InitBody | None = await _parse(request, _InitBody)
    if body is None or not _known_zone(body.guestTimezone):
        return PlainTextResponse(INVALID_BODY, status_code=400)
    now = sandbox.clock()
    window_start, window = now, timedelta(days=7)
    if body.interval is not None:
        parsed = parse_duration(body.interval.duration)
        if parsed is None or parsed <= timedelta(0) or parsed > MAX_INTERVAL:
            return PlainTextResponse(INVALID_BODY, status_code=400)
        window_start, window = body.interval.startsAt, parsed
    conn = sandbox.state.conn
    link = _link(conn, body.link)
    if link is None:
        return _envelope(404, "SchedulingLinkNotFound", "No scheduling link matches the reference")
    starts = [
        start
        for start in _free_slots(conn, link, now)
        if window_start <= start < window_start + window
    ]
    route_id = str(uuid.uuid4())
    with sandbox.state.transaction() as tx:
        tx.execute(
            "INSERT INTO chilipiper_routes VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (
                route_id,
                link["link_id"],
                str(body.guestEmail) if body.guestEmail else None,
                body.guestTimezone,
                iso(now),
                iso(now + ROUTE_TTL),
            ),
        )
    return JSONResponse(
        {
            "routeId": route_id,
            "startTimes": [iso(start) for start in starts],
            "meetingType": {
                "id": link["meeting_type_id"],
                "name": link["meeting_type_name"],
                "duration": f"{link['duration_minutes']} minutes",
            },
            "formFields": FORM_FIELDS,
            "failures": {},
        }
    )


def _known_zone(name: str | None) -> bool:
    """None (not given) or an IANA zone; ZoneInfo raises OSError for some names (too long)."""
    if name is None:
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@router.post(
    f"{EDGE}/v1/org/schedulingLinks/routing/{{route_id}}/schedule-simple",
    openapi_extra=request_body(_ScheduleBody),
)
async def schedule_simple(route_id: str, request: Request) -> Response:
    """Book one start time of a session; a taken or unknown slot is a 409 SlotNotAvailable."""
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, "schedule_simple")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if (unsupported := _unsupported_media(request)) is not None:
        return unsupported
    body: _ScheduleBody | None = await _parse(request, _ScheduleBody)
    if (
        body is None
        or any(not body.formData.get(name) for name in REQUIRED_FORM_FIELDS)
        or not _known_zone(body.guestTimezone)
    ):
        return PlainTextResponse(INVALID_BODY, status_code=400)
    now = sandbox.clock()
    conn = sandbox.state.conn
    route = conn.execute(
        "SELECT * FROM chilipiper_routes WHERE route_id = ? AND meeting_id IS NULL"
        " AND expires_at > ?",
        (route_id, iso(now)),
    ).fetchone()
    if route is None:
        return _envelope(
            404, "RoutingNotFound", "The routing session is unknown, used or expired; init again"
        )
    link = conn.execute(
        "SELECT * FROM chilipiper_links WHERE link_id = ?", (route["link_id"],)
    ).fetchone()
    start = body.startTime.astimezone(UTC)
    meeting_id = str(uuid.uuid4())
    with sandbox.state.transaction() as tx:
        # Checked inside the write transaction, so two bookings of one slot cannot both succeed.
        rep_id = _free_slots(tx, link, now).get(start)
        if rep_id is None:
            return _envelope(
                409,
                "SlotNotAvailable",
                "The selected start time is not available",
                {"startTime": iso(start)},
            )
        form = body.formData
        tx.execute(
            "INSERT INTO chilipiper_meetings VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'Active', ?, NULL)",
            (
                meeting_id,
                link["link_id"],
                rep_id,
                route_id,
                str(body.guestEmail),
                form.get("firstName"),
                form.get("lastName"),
                form.get("company"),
                form.get("phone"),
                body.guestTimezone,
                iso(start),
                iso(start + timedelta(minutes=link["duration_minutes"])),
                iso(now),
            ),
        )
        tx.execute(
            "UPDATE chilipiper_routes SET meeting_id = ? WHERE route_id = ?", (meeting_id, route_id)
        )
    await sandbox.faults.after_commit(VENDOR, "schedule_simple")
    return JSONResponse({"type": "Success", "meetingId": meeting_id})


def _meeting_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "meetingId": row["meeting_id"],
        "status": row["status"],
        "scheduledAt": row["start_at"],
        "start": row["start_at"],
        "end": row["end_at"],
        "bookedAt": row["booked_at"],
        "canceledAt": row["canceled_at"],
        "assignedUserId": row["rep_user_id"],
        "workspaceId": WORKSPACE_ID,
        "meetingTypeId": MEETING_TYPE_ID,
        "attendees": [
            {
                "type": "Guest",
                "email": row["guest_email"],
                "firstName": row["guest_first_name"],
                "lastName": row["guest_last_name"],
            },
            {"type": "Host", "userId": row["rep_user_id"]},
        ],
    }


@router.put(f"{EDGE}/v2/org/meetings/meetings", openapi_extra=request_body(_MeetingsQuery))
async def list_meetings(request: Request) -> Response:
    """Meetings whose start is in [start, end), at most 7 days wide, paginated."""
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, "list_meetings")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if (unsupported := _unsupported_media(request)) is not None:
        return unsupported
    query: _MeetingsQuery | None = await _parse(request, _MeetingsQuery)
    if query is None or not (timedelta(0) < query.end - query.start <= MAX_MEETINGS_WINDOW):
        return PlainTextResponse(INVALID_BODY, status_code=400)
    sql = "SELECT * FROM chilipiper_meetings WHERE start_at >= ? AND start_at < ?"
    params: list[Any] = [iso(query.start), iso(query.end)]
    if query.guestEmail:
        sql += " AND lower(guest_email) = lower(?)"
        params.append(query.guestEmail)
    if query.status:
        sql += f" AND status IN ({', '.join('?' for _ in query.status)})"
        params.extend(query.status)
    sql += " ORDER BY start_at, meeting_id LIMIT ? OFFSET ?"
    params.extend([query.pageSize + 1, query.page * query.pageSize])
    rows = sandbox.state.conn.execute(sql, params).fetchall()
    more = len(rows) > query.pageSize
    return JSONResponse(
        {
            "data": [_meeting_json(row) for row in rows[: query.pageSize]],
            "hasMore": "Yes" if more else "No",
            "hasMoreItems": more,
        }
    )


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@router.get(f"{EDGE}/v1/org/meetings/cancel/{{meeting_id}}")
async def cancel_meeting(meeting_id: str, request: Request) -> Response:
    """Cancel a meeting; its slot becomes free again. Cancelling twice answers Success again."""
    sandbox = sandbox_of(request)
    await sandbox.faults.before(VENDOR, "cancel_meeting")
    if (denied := _unauthorized(request)) is not None:
        return denied
    if not _UUID.fullmatch(meeting_id):
        return PlainTextResponse("Invalid value for: path parameter meetingId", status_code=400)
    with sandbox.state.transaction() as tx:
        row = tx.execute(
            "SELECT status FROM chilipiper_meetings WHERE meeting_id = ?", (meeting_id,)
        ).fetchone()
        if row is None:
            return _envelope(404, "MeetingNotFound", "No meeting with this id")
        if row["status"] == "Active":
            tx.execute(
                "UPDATE chilipiper_meetings SET status = 'Canceled', canceled_at = ?"
                " WHERE meeting_id = ?",
                (iso(sandbox.clock()), meeting_id),
            )
    await sandbox.faults.after_commit(VENDOR, "cancel_meeting")
    return JSONResponse({"type": "Success"})
