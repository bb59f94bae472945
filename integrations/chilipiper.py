"""Typed async client for the Chili Piper Edge API: free slots, booking, guest meetings, cancel."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from integrations.errors import (
    AmbiguousOutcomeError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    VendorError,
)
from integrations.http import parse_retry_after, transport_error

logger = logging.getLogger(__name__)

VENDOR = "chilipiper"
INIT_SIMPLE_PATH = "/api/fire-edge/v1/org/schedulingLinks/init-simple"
SCHEDULE_SIMPLE_PATH = "/api/fire-edge/v1/org/schedulingLinks/routing/{route_id}/schedule-simple"
LIST_MEETINGS_PATH = "/api/fire-edge/v2/org/meetings/meetings"
CANCEL_MEETING_PATH = "/api/fire-edge/v1/org/meetings/cancel/{meeting_id}"

# Chili Piper publishes no rate-limit policy: use Retry-After when sent, else this delay.
DEFAULT_RATE_LIMIT_DELAY_SECONDS = 10.0
SLOT_SEARCH_DAYS = 7
DEFAULT_MEETING_MINUTES = 30
MEETINGS_QUERY_WINDOW = timedelta(days=7)  # the meetings query refuses wider windows
MEETINGS_PAGE_SIZE = 50
MAX_MEETING_PAGES = 100
RECONCILE_LOOKBACK = timedelta(days=1)
RECONCILE_LOOKAHEAD = timedelta(days=21)
_ROUTE_CACHE_SIZE = 512
_CORRELATION_HEADERS = ("x-request-id", "x-correlation-id", "x-amzn-trace-id", "cf-ray")

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PATH_SEGMENT = re.compile(r"^[^\s/\\?#]+$")


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA timezone such as 'America/New_York'") from None
    return value


def _check_phone(value: str) -> str:
    if not _E164.match(value):
        raise ValueError("is not an E.164 phone number such as '+14155550123'")
    return value


def _check_path_segment(value: str) -> str:
    if not _PATH_SEGMENT.match(value):
        raise ValueError("must be a non-empty id without spaces, '/', '?' or '#'")
    return value


IanaTimezone = Annotated[str, AfterValidator(_check_timezone)]
E164Phone = Annotated[str, AfterValidator(_check_phone)]
PathId = Annotated[str, AfterValidator(_check_path_segment)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class ChiliPiperGuest(_Input):
    """The person being booked. Validated on construction; never logged."""

    email: EmailStr
    first_name: Name
    last_name: Name
    company: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    phone: E164Phone | None = None
    timezone: IanaTimezone

    def form_data(self) -> dict[str, str]:
        """The scheduling link's form fields, by their Chili Piper references."""
        data = {"firstName": self.first_name, "lastName": self.last_name}
        if self.company:
            data["company"] = self.company
        if self.phone:
            data["phone"] = self.phone
        return data


class FreeSlotsRequest(_Input):
    guest: ChiliPiperGuest
    timezone: IanaTimezone
    days: int = Field(default=SLOT_SEARCH_DAYS, ge=1, le=31)


class BookSlotRequest(_Input):
    route_id: PathId
    slot_start: AwareDatetime
    guest: ChiliPiperGuest


class GuestMeetingsRequest(_Input):
    email: EmailStr
    since: AwareDatetime
    until: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> GuestMeetingsRequest:
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class CancelMeetingRequest(_Input):
    meeting_id: PathId


class FreeSlots(BaseModel):
    """A booking session: book one of `slots` with `route_id` before the session expires."""

    model_config = ConfigDict(frozen=True)

    route_id: str
    slots: list[AwareDatetime]
    meeting_minutes: int = DEFAULT_MEETING_MINUTES


class MeetingStatus(StrEnum):
    ACTIVE = "Active"
    CANCELED = "Canceled"
    NO_SHOW = "NoShow"
    COMPLETED = "Completed"


class ChiliPiperMeeting(BaseModel):
    model_config = ConfigDict(frozen=True)

    meeting_id: str
    start: AwareDatetime
    end: AwareDatetime
    status: MeetingStatus
    guest_email: str


# --- wire models (the vendor's field names) ---------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _MeetingType(_Wire):
    duration: str | None = None


class _InitResponse(_Wire):
    routeId: str = Field(min_length=1)
    startTimes: list[AwareDatetime]
    meetingType: _MeetingType | None = None


class _ScheduleResponse(_Wire):
    type: Literal["Success", "Failure"]
    meetingId: str | None = None
    reason: str | None = None


class _Attendee(_Wire):
    type: str | None = None
    email: str | None = None


class _MeetingItem(_Wire):
    meetingId: str
    status: MeetingStatus
    start: AwareDatetime
    end: AwareDatetime
    attendees: list[_Attendee] = Field(default_factory=list)

    def guest_email(self) -> str:
        return next((a.email for a in self.attendees if a.type == "Guest" and a.email), "")


class _MeetingsPage(_Wire):
    data: list[_MeetingItem]
    hasMoreItems: bool = False


class _CancelResponse(_Wire):
    type: Literal["Success", "Failure"]


_W = TypeVar("_W", bound=_Wire)


def wire_time(moment: datetime) -> str:
    """An ISO-8601 instant in UTC, as the Edge API expects."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_MINUTES_PER_UNIT = {
    **dict.fromkeys(("millisecond", "milliseconds"), 1 / 60_000),
    **dict.fromkeys(("second", "seconds"), 1 / 60),
    **dict.fromkeys(("minute", "minutes"), 1.0),
    **dict.fromkeys(("hour", "hours"), 60.0),
}


def _duration_minutes(text: str | None) -> int:
    """Minutes from Chili Piper's `<n> <unit>` durations; the default when absent or odd."""
    match = re.match(r"^\s*(\d+)\s*([a-z]+)\s*$", (text or "").lower())
    factor = _MINUTES_PER_UNIT.get(match.group(2)) if match else None
    minutes = int(int(match.group(1)) * factor) if match and factor else 0
    return minutes if minutes > 0 else DEFAULT_MEETING_MINUTES


class ChiliPiperClient:
    """Chili Piper Edge API over the shared pooled httpx client. Bearer token auth."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        api_token: SecretStr,
        scheduling_link: str,
    ) -> None:
        if not scheduling_link.strip():
            raise ValueError("scheduling_link must be the slug of a Chili Piper scheduling link")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_token = api_token
        self._scheduling_link = scheduling_link.strip()
        # Meeting length per booking session, so a booking can report its end time.
        self._route_minutes: OrderedDict[str, int] = OrderedDict()

    async def find_free_slots(self, guest: ChiliPiperGuest, *, timezone: str) -> FreeSlots:
        """Open a booking session on the scheduling link: a route id and free start times."""
        request = FreeSlotsRequest(guest=guest, timezone=timezone)
        now = datetime.now(UTC)
        payload = {
            "link": {"slug": self._scheduling_link},
            "guestEmail": request.guest.email,
            "guestTimezone": request.timezone,
            "interval": {
                "startsAt": wire_time(now),
                "duration": f"{request.days * 86_400_000} milliseconds",
            },
            "outputs": ["StartTimes"],
        }
        # init-simple only opens a session, so a retry after a lost response is safe.
        response = await self._send("init_simple", "POST", INIT_SIMPLE_PATH, payload, True)
        parsed = self._parse(response, _InitResponse, "init_simple")
        minutes = _duration_minutes(parsed.meetingType.duration if parsed.meetingType else None)
        self._remember_route(parsed.routeId, minutes)
        slots = sorted({slot for slot in parsed.startTimes if slot > now})
        return FreeSlots(route_id=parsed.routeId, slots=slots, meeting_minutes=minutes)

    async def book_slot(
        self, *, route_id: str, slot_start: datetime, guest: ChiliPiperGuest
    ) -> ChiliPiperMeeting:
        """Book `slot_start`. No response (timeout) raises AmbiguousOutcomeError: reconcile."""
        request = BookSlotRequest(route_id=route_id, slot_start=slot_start, guest=guest)
        payload = {
            "startTime": wire_time(request.slot_start),
            "guestEmail": request.guest.email,
            "guestTimezone": request.guest.timezone,
            "formData": request.guest.form_data(),
        }
        path = SCHEDULE_SIMPLE_PATH.format(route_id=request.route_id)
        response = await self._send("schedule_simple", "POST", path, payload, False)
        parsed = self._parse(response, _ScheduleResponse, "schedule_simple")
        if parsed.type != "Success" or not parsed.meetingId:
            raise PermanentError(
                "booking refused",
                vendor=VENDOR,
                operation="schedule_simple",
                status_code=response.status_code,
                error_code=parsed.reason or "Failure",
                body=_body(response),
            )
        minutes = self._route_minutes.get(request.route_id, DEFAULT_MEETING_MINUTES)
        start = request.slot_start.astimezone(UTC)
        return ChiliPiperMeeting(
            meeting_id=parsed.meetingId,
            start=start,
            end=start + timedelta(minutes=minutes),
            status=MeetingStatus.ACTIVE,
            guest_email=request.guest.email,
        )

    async def list_guest_meetings(
        self, email: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[ChiliPiperMeeting]:
        """Every meeting of a guest starting in [since, until), by default -1 day to +21 days."""
        now = datetime.now(UTC)
        request = GuestMeetingsRequest(
            email=email,
            since=since or now - RECONCILE_LOOKBACK,
            until=until or now + RECONCILE_LOOKAHEAD,
        )
        found: dict[str, ChiliPiperMeeting] = {}
        window_start = request.since
        while window_start < request.until:
            window_end = min(window_start + MEETINGS_QUERY_WINDOW, request.until)
            for item in await self._meetings_in_window(request.email, window_start, window_end):
                found[item.meeting_id] = item
            window_start = window_end
        return sorted(found.values(), key=lambda meeting: (meeting.start, meeting.meeting_id))

    async def cancel_meeting(self, meeting_id: str) -> None:
        """Cancel a meeting. Unknown id: NotFoundError. Cancelling twice succeeds."""
        request = CancelMeetingRequest(meeting_id=meeting_id)
        path = CANCEL_MEETING_PATH.format(meeting_id=request.meeting_id)
        response = await self._send("cancel_meeting", "GET", path, None, True)
        parsed = self._parse(response, _CancelResponse, "cancel_meeting")
        if parsed.type != "Success":
            raise PermanentError(
                "cancellation refused",
                vendor=VENDOR,
                operation="cancel_meeting",
                status_code=response.status_code,
                error_code="Failure",
                body=_body(response),
            )

    # --- internals ------------------------------------------------------------------------

    async def _meetings_in_window(
        self, email: str, start: datetime, end: datetime
    ) -> list[ChiliPiperMeeting]:
        meetings: list[ChiliPiperMeeting] = []
        for page in range(MAX_MEETING_PAGES):
            payload = {
                "start": wire_time(start),
                "end": wire_time(end),
                "guestEmail": email,
                "page": page,
                "pageSize": MEETINGS_PAGE_SIZE,
            }
            response = await self._send("list_meetings", "PUT", LIST_MEETINGS_PATH, payload, True)
            parsed = self._parse(response, _MeetingsPage, "list_meetings")
            meetings.extend(
                ChiliPiperMeeting(
                    meeting_id=item.meetingId,
                    start=item.start,
                    end=item.end,
                    status=item.status,
                    guest_email=item.guest_email() or email,
                )
                for item in parsed.data
            )
            if not parsed.hasMoreItems:
                break
        return meetings

    def _remember_route(self, route_id: str, minutes: int) -> None:
        self._route_minutes[route_id] = minutes
        while len(self._route_minutes) > _ROUTE_CACHE_SIZE:
            self._route_minutes.popitem(last=False)

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        idempotent: bool,
    ) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self._api_token.get_secret_value()}",
            "Accept": "application/json",
        }
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, f"{self._base_url}{path}", json=payload, headers=headers
            )
        except httpx.TransportError as error:
            logger.warning("chilipiper %s: no response (%s)", operation, type(error).__name__)
            raise transport_error(
                error, vendor=VENDOR, operation=operation, idempotent=idempotent
            ) from error
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.debug(
            "chilipiper %s: HTTP %s in %.0f ms", operation, response.status_code, elapsed_ms
        )
        if response.is_success:
            return response
        failure = classify_response(response, operation)
        logger.warning("chilipiper %s failed: %s", operation, failure.kind.value)
        raise failure

    def _parse(self, response: httpx.Response, model: type[_W], operation: str) -> _W:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            kind = AmbiguousOutcomeError if operation == "schedule_simple" else TransientError
            raise kind(
                "unexpected response shape",
                vendor=VENDOR,
                operation=operation,
                status_code=response.status_code,
                correlation_id=_correlation_id(response),
                body=_body(response),
            ) from None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


def _correlation_id(response: httpx.Response) -> str | None:
    return next(
        (response.headers[name] for name in _CORRELATION_HEADERS if name in response.headers),
        None,
    )


def classify_response(response: httpx.Response, operation: str) -> VendorError:
    """Map an Edge API error response to the taxonomy (bodies: {errorCode, errorMessage})."""
    status = response.status_code
    body = _body(response)
    error_code = body.get("errorCode") if isinstance(body, dict) else None
    kwargs: dict[str, Any] = {
        "vendor": VENDOR,
        "operation": operation,
        "status_code": status,
        "error_code": error_code,
        "correlation_id": _correlation_id(response),
        "body": body,
    }
    # The message carries no vendor text: it may quote guest data.
    message = f"HTTP {status} {error_code or response.reason_phrase}".strip()
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status == 429:
        delay = parse_retry_after(response.headers.get("retry-after"))
        return RateLimitedError(
            message,
            retry_after=DEFAULT_RATE_LIMIT_DELAY_SECONDS if delay is None else delay,
            **kwargs,
        )
    if status == 504 and operation == "schedule_simple":
        # A gateway timeout says nothing about whether the booking behind it committed.
        return AmbiguousOutcomeError(message, **kwargs)
    if status >= 500 or status == 408:
        return TransientError(message, **kwargs)
    return PermanentError(message, **kwargs)
