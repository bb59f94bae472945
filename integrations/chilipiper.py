"""Typed async client for the Chili Piper Edge API: free slots, booking, guest meetings, cancel."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypeVar

import httpx2
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    model_validator,
)

from config.clock import Clock, system_clock
from integrations.errors import (
    AmbiguousOutcomeError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    VendorError,
)
from integrations.http import (
    WireModel,
    bearer_headers,
    first_header,
    parse_reply,
    response_body,
    retry_delay,
    send,
)
from integrations.validation import E164Phone, IanaTimezone, InputModel, Name, PathId

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


class ChiliPiperGuest(InputModel):
    """The person being booked. Validated on construction; never logged."""

    email: EmailStr
    first_name: Name
    last_name: Name
    company: Name | None = None
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


class FreeSlotsRequest(InputModel):
    guest: ChiliPiperGuest
    timezone: IanaTimezone
    days: int = Field(default=SLOT_SEARCH_DAYS, ge=1, le=31)


class BookSlotRequest(InputModel):
    route_id: PathId
    slot_start: AwareDatetime
    guest: ChiliPiperGuest


class GuestMeetingsRequest(InputModel):
    email: EmailStr
    since: AwareDatetime
    until: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> GuestMeetingsRequest:
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class CancelMeetingRequest(InputModel):
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


class _MeetingType(WireModel):
    duration: str | None = None


class _InitResponse(WireModel):
    routeId: str = Field(min_length=1)
    startTimes: list[AwareDatetime]
    meetingType: _MeetingType | None = None


class _ScheduleResponse(WireModel):
    type: Literal["Success", "Failure"]
    meetingId: str | None = None
    reason: str | None = None


class _Attendee(WireModel):
    type: str | None = None
    email: str | None = None


class _MeetingItem(WireModel):
    meetingId: str
    status: MeetingStatus
    start: AwareDatetime
    end: AwareDatetime
    attendees: list[_Attendee] = Field(default_factory=list)

    def guest_email(self) -> str:
        return next((a.email for a in self.attendees if a.type == "Guest" and a.email), "")


class _MeetingsPage(WireModel):
    data: list[_MeetingItem]
    hasMoreItems: bool = False


class _CancelResponse(WireModel):
    type: Literal["Success", "Failure"]


_W = TypeVar("_W", bound=WireModel)


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
    """Chili Piper Edge API over the shared pooled httpx2 client. Bearer token auth."""

    def __init__(
        self,
        *,
        http: httpx2.AsyncClient,
        base_url: str,
        api_token: SecretStr,
        scheduling_link: str,
        clock: Clock = system_clock,
    ) -> None:
        if not scheduling_link.strip():
            raise ValueError("scheduling_link must be the slug of a Chili Piper scheduling link")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_token = api_token
        self._scheduling_link = scheduling_link.strip()
        # The search window starts now: on a pinned clock in tests, the sandbox's pinned now.
        self._clock = clock
        # Meeting length per booking session, so a booking can report its end time.
        self._route_minutes: OrderedDict[str, int] = OrderedDict()

    async def find_free_slots(self, guest: ChiliPiperGuest, *, timezone: str) -> FreeSlots:
        """Open a booking session on the scheduling link: a route id and free start times."""
        request = FreeSlotsRequest(guest=guest, timezone=timezone)
        now = self._clock()
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
                body=response_body(response),
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
        now = self._clock()
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
                body=response_body(response),
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
    ) -> httpx2.Response:
        return await send(
            self._http,
            vendor=VENDOR,
            operation=operation,
            method=method,
            url=f"{self._base_url}{path}",
            headers=bearer_headers(self._api_token),
            json=payload,
            idempotent=idempotent,
            classify=lambda response: classify_response(response, operation),
            log=logger,
        )

    def _parse(self, response: httpx2.Response, model: type[_W], operation: str) -> _W:
        # A booking answered with an unreadable body may or may not have been made.
        kind = AmbiguousOutcomeError if operation == "schedule_simple" else TransientError
        return parse_reply(
            response,
            model,
            vendor=VENDOR,
            operation=operation,
            correlation_id=_correlation_id(response),
            failure=kind,
        )


def _correlation_id(response: httpx2.Response) -> str | None:
    return first_header(response, _CORRELATION_HEADERS)


def classify_response(response: httpx2.Response, operation: str) -> VendorError:
    """Map an Edge API error response to the taxonomy (bodies: {errorCode, errorMessage})."""
    status = response.status_code
    body = response_body(response)
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
        return RateLimitedError(
            message,
            retry_after=retry_delay(response, default=DEFAULT_RATE_LIMIT_DELAY_SECONDS),
            **kwargs,
        )
    if status == 504 and operation == "schedule_simple":
        # A gateway timeout says nothing about whether the booking behind it committed.
        return AmbiguousOutcomeError(message, **kwargs)
    if status >= 500 or status == 408:
        return TransientError(message, **kwargs)
    return PermanentError(message, **kwargs)
