"""Typed async client for Amplitude: HTTP V2 event tracking and the User Profile API."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

import httpx2
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    TypeAdapter,
    ValidationError,
)

from integrations.errors import (
    AuthError,
    InvalidEventsError,
    NotFoundError,
    PayloadTooLargeError,
    PermanentError,
    RateLimitedError,
    TransientError,
    VendorError,
)
from integrations.http import first_header, response_body, retry_delay, send
from integrations.validation import InputModel

logger = logging.getLogger(__name__)

VENDOR = "amplitude"
HTTP_API_PATH = "/2/httpapi"
USER_PROFILE_PATH = "/v1/userprofile"

# Documented HTTP V2 limits: fewer than 2000 events and under 1 MB per request (else 413).
MAX_EVENTS_PER_REQUEST = 2000
# Amplitude's documented minimum length for user and device ids (shorter ids are dropped).
MIN_ID_LENGTH = 5
# Amplitude: a throttled user or device should pause for 30 s; it sends no Retry-After.
THROTTLED_RETRY_SECONDS = 30.0
# The profile API's limit is per minute (600 requests per org).
PROFILE_RATE_LIMIT_RETRY_SECONDS = 60.0
# The documented body of a profile lookup for an unknown user (or one from another project).
PROFILE_NOT_SEEN = "User id and device id not seen before"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CORRELATION_HEADERS = ("x-request-id", "x-amzn-requestid", "x-amzn-trace-id", "cf-ray")
_INDEX_FIELDS = (
    "events_with_invalid_fields",
    "events_with_missing_fields",
    "events_with_invalid_id_lengths",
)

AmplitudeId = Annotated[str, Field(min_length=MIN_ID_LENGTH, max_length=1024)]


def insert_id_for(call_id: str, event_type: str, *, index: int | None = None) -> str:
    """The insert id of a call's event: the same call and event always give the same id.

    Amplitude drops a repeat of an insert id, so a retried or replayed track is counted once.
    Pass `index` when one call sends several events of the same type.
    """
    if not call_id.strip() or not event_type.strip():
        raise ValueError("call_id and event_type must be non-empty to derive an insert_id")
    suffix = "" if index is None else f":{index}"
    return f"{call_id}:{event_type}{suffix}"


class AmplitudeEvent(InputModel):
    """One event. `insert_id` is required: derive it with `insert_id_for`."""

    user_id: AmplitudeId
    event_type: Annotated[str, Field(min_length=1, max_length=1024)]
    time: AwareDatetime
    insert_id: Annotated[str, Field(min_length=1, max_length=256)]
    device_id: AmplitudeId | None = None
    event_properties: dict[str, JsonValue] = Field(default_factory=dict)
    user_properties: dict[str, JsonValue] = Field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "user_id": self.user_id,
            "event_type": self.event_type,
            "time": (self.time - _EPOCH) // timedelta(milliseconds=1),
            "insert_id": self.insert_id,
            "event_properties": self.event_properties,
            "user_properties": self.user_properties,
        }
        if self.device_id is not None:
            event["device_id"] = self.device_id
        return event


class TrackRequest(InputModel):
    events: list[AmplitudeEvent]


class UserProfileRequest(InputModel):
    user_id: Annotated[str, Field(min_length=1, max_length=1024)]


class AmplitudeTrackResult(BaseModel):
    """What Amplitude acknowledged, summed over the accepted requests a split batch needed."""

    model_config = ConfigDict(frozen=True)

    events_ingested: int = 0
    payload_size_bytes: int = 0
    server_upload_time: AwareDatetime | None = None
    requests: int = 0

    def combine(self, other: AmplitudeTrackResult) -> AmplitudeTrackResult:
        times = [t for t in (self.server_upload_time, other.server_upload_time) if t is not None]
        return AmplitudeTrackResult(
            events_ingested=self.events_ingested + other.events_ingested,
            payload_size_bytes=self.payload_size_bytes + other.payload_size_bytes,
            server_upload_time=max(times) if times else None,
            requests=self.requests + other.requests,
        )


# User properties PandaDoc's product analytics sets on a trial user (the `amp_props` keys).
PROP_EMAIL = "email"
PROP_PLAN = "plan"
PROP_LAST_ACTIVE = "last_active"
PROP_DOCUMENTS_CREATED = "documents_created"
PROP_DOCUMENTS_SENT = "documents_sent"
PROP_TEMPLATES_USED = "templates_used"
PROP_SIGNATURES_REQUESTED = "signatures_requested"
PROP_TEAM_MEMBERS_INVITED = "team_members_invited"
PROP_FEATURES_USED = "features_used"


class AmplitudeUserProfile(BaseModel):
    """A trial user's profile with typed trial activity; `amp_props` keeps every raw property."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    device_id: str | None = None
    email: str | None = None
    plan: str | None = None
    first_used: date | None = None
    last_used: date | None = None
    last_active: AwareDatetime | None = None
    documents_created: int = 0
    documents_sent: int = 0
    templates_used: int = 0
    signatures_requested: int = 0
    team_members_invited: int = 0
    features_used: list[str] = Field(default_factory=list)
    cohort_ids: list[str] | None = None
    amp_props: dict[str, JsonValue] = Field(default_factory=dict)

    @classmethod
    def from_user_data(cls, data: Mapping[str, Any]) -> AmplitudeUserProfile:
        """Build from `userData`; a malformed property is ignored rather than failing the read."""
        raw_props = data.get("amp_props")
        props: dict[str, Any] = dict(raw_props) if isinstance(raw_props, Mapping) else {}
        features = props.get(PROP_FEATURES_USED)
        cohorts = data.get("cohort_ids")
        return cls(
            user_id=str(data.get("user_id") or ""),
            device_id=_text(data.get("device_id")),
            email=_text(props.get(PROP_EMAIL)),
            plan=_text(props.get(PROP_PLAN)),
            first_used=_lenient(_DATE, props.get("first_used")),
            last_used=_lenient(_DATE, props.get("last_used")),
            last_active=_lenient(_AWARE, props.get(PROP_LAST_ACTIVE)),
            documents_created=_count(props.get(PROP_DOCUMENTS_CREATED)),
            documents_sent=_count(props.get(PROP_DOCUMENTS_SENT)),
            templates_used=_count(props.get(PROP_TEMPLATES_USED)),
            signatures_requested=_count(props.get(PROP_SIGNATURES_REQUESTED)),
            team_members_invited=_count(props.get(PROP_TEAM_MEMBERS_INVITED)),
            features_used=[str(f) for f in features] if isinstance(features, list) else [],
            cohort_ids=[str(c) for c in cohorts] if isinstance(cohorts, list) else None,
            amp_props=_lenient(_JSON_DICT, props) or {},
        )


_DATE: TypeAdapter[date] = TypeAdapter(date)
_AWARE: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)
_JSON_DICT: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(dict[str, JsonValue])


_T = TypeVar("_T")


def _lenient(adapter: TypeAdapter[_T], value: Any) -> _T | None:
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class AmplitudeClient:
    """Amplitude over the shared pooled httpx2 client: ingestion host and profile host."""

    def __init__(
        self,
        *,
        http: httpx2.AsyncClient,
        base_url: str,
        profile_base_url: str,
        api_key: SecretStr,
        secret_key: SecretStr,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._profile_base_url = profile_base_url.rstrip("/")
        self._api_key = api_key
        self._secret_key = secret_key

    insert_id_for = staticmethod(insert_id_for)

    async def track(self, events: Sequence[AmplitudeEvent]) -> AmplitudeTrackResult:
        """Send events; a 413 splits the batch in halves, recursively, until each half fits.

        Safe to retry as a whole after any failure: insert ids make Amplitude drop repeats.
        """
        request = TrackRequest(events=list(events))
        result = AmplitudeTrackResult()
        for offset in range(0, len(request.events), MAX_EVENTS_PER_REQUEST):
            chunk = request.events[offset : offset + MAX_EVENTS_PER_REQUEST]
            result = result.combine(await self._track_splitting(chunk, offset))
        return result

    async def get_user_profile(self, user_id: str) -> AmplitudeUserProfile:
        """The user's profile with properties. NotFoundError when Amplitude has never seen them."""
        request = UserProfileRequest(user_id=user_id)
        headers = {"Authorization": f"Api-Key {self._secret_key.get_secret_value()}"}
        params = {"user_id": request.user_id, "get_amp_props": "true", "get_cohort_ids": "true"}
        response = await self._send(
            "user_profile",
            "GET",
            f"{self._profile_base_url}{USER_PROFILE_PATH}",
            headers=headers,
            params=params,
        )
        body = response_body(response)
        user_data = body.get("userData") if isinstance(body, dict) else None
        if not isinstance(user_data, dict) or not user_data.get("user_id"):
            raise TransientError(
                "unexpected response shape",
                vendor=VENDOR,
                operation="user_profile",
                status_code=response.status_code,
                correlation_id=_correlation_id(response),
                body=body,
            )
        return AmplitudeUserProfile.from_user_data(user_data)

    # --- internals ------------------------------------------------------------------------

    async def _track_splitting(
        self, events: list[AmplitudeEvent], offset: int
    ) -> AmplitudeTrackResult:
        try:
            return await self._track_once(events, offset)
        except PayloadTooLargeError:
            if len(events) == 1:
                raise
            middle = len(events) // 2
            logger.info("amplitude track: 413 for %d events, sending halves", len(events))
            first = await self._track_splitting(events[:middle], offset)
            second = await self._track_splitting(events[middle:], offset + middle)
            return first.combine(second)

    async def _track_once(self, events: list[AmplitudeEvent], offset: int) -> AmplitudeTrackResult:
        payload = {
            "api_key": self._api_key.get_secret_value(),
            "events": [event.to_wire() for event in events],
        }
        # Insert ids make a resend harmless, so a lost response is a plain transient failure.
        response = await self._send(
            "track", "POST", f"{self._base_url}{HTTP_API_PATH}", json=payload, offset=offset
        )
        body = response_body(response)
        if not isinstance(body, dict) or not isinstance(body.get("events_ingested"), int):
            raise TransientError(
                "unexpected response shape",
                vendor=VENDOR,
                operation="track",
                status_code=response.status_code,
                correlation_id=_correlation_id(response),
                body=body,
            )
        upload_ms = body.get("server_upload_time")
        return AmplitudeTrackResult(
            events_ingested=body["events_ingested"],
            payload_size_bytes=int(body.get("payload_size_bytes") or 0),
            server_upload_time=_EPOCH + timedelta(milliseconds=upload_ms)
            if isinstance(upload_ms, int)
            else None,
            requests=1,
        )

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        offset: int = 0,
    ) -> httpx2.Response:
        def classify(response: httpx2.Response) -> VendorError:
            if operation == "track":
                return classify_track_response(response, offset=offset)
            return classify_profile_response(response)

        # Both a track (insert ids) and a profile read are safe to send again.
        return await send(
            self._http,
            vendor=VENDOR,
            operation=operation,
            method=method,
            url=url,
            headers=headers,
            json=json,
            params=params,
            idempotent=True,
            classify=classify,
            log=logger,
        )


def _correlation_id(response: httpx2.Response) -> str | None:
    return first_header(response, _CORRELATION_HEADERS)


def _common(response: httpx2.Response, operation: str, body: Any) -> dict[str, Any]:
    return {
        "vendor": VENDOR,
        "operation": operation,
        "status_code": response.status_code,
        "correlation_id": _correlation_id(response),
        "body": body,
    }


def _event_indices(body: Mapping[str, Any], offset: int) -> list[int]:
    """Indices named anywhere in a 400 body, shifted back to the caller's whole batch."""
    indices: set[int] = set()
    for field in _INDEX_FIELDS:
        by_field = body.get(field)
        if not isinstance(by_field, Mapping):
            continue
        for values in by_field.values():
            if isinstance(values, list):
                indices.update(offset + v for v in values if isinstance(v, int))
    return sorted(indices)


def _named(body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field)
    return isinstance(value, Mapping) and bool(value)


def classify_track_response(response: httpx2.Response, *, offset: int = 0) -> VendorError:
    """Map an HTTP V2 error to the taxonomy, as Amplitude documents each status."""
    status = response.status_code
    raw = response_body(response)
    body: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    kwargs = _common(response, "track", raw)
    if status == 400:
        indices = _event_indices(body, offset)
        if indices:
            return InvalidEventsError(
                f"HTTP 400: {len(indices)} event(s) rejected",
                event_indices=indices,
                error_code="InvalidRequestError",
                **kwargs,
            )
        error_text = str(body.get("error") or "")
        if body.get("missing_field") == "api_key" or error_text.lower().startswith("invalid api"):
            return AuthError("HTTP 400: API key refused", error_code="InvalidApiKey", **kwargs)
        code = f"missing_{body['missing_field']}" if body.get("missing_field") else None
        return PermanentError("HTTP 400: request refused", error_code=code, **kwargs)
    if status in (401, 403):
        return AuthError(f"HTTP {status}: API key refused", **kwargs)
    if status == 413:
        return PayloadTooLargeError(
            "HTTP 413: batch too large, split it", error_code="PayloadTooLargeError", **kwargs
        )
    if status == 429:
        throttled = _named(body, "throttled_users") or _named(body, "throttled_devices")
        daily = _named(body, "exceeded_daily_quota_users") or _named(
            body, "exceeded_daily_quota_devices"
        )
        if daily and not throttled:
            # A daily per-user quota does not clear within any retry budget.
            return PermanentError(
                "HTTP 429: daily event quota exceeded", error_code="ExceededDailyQuota", **kwargs
            )
        return RateLimitedError(
            "HTTP 429: users or devices throttled",
            retry_after=retry_delay(response, default=THROTTLED_RETRY_SECONDS),
            error_code="TooManyRequestsForDeviceError",
            **kwargs,
        )
    if status >= 500 or status == 408:
        return TransientError(f"HTTP {status}: server error", error_code="ServerError", **kwargs)
    return PermanentError(f"HTTP {status}: request refused", **kwargs)


def classify_profile_response(response: httpx2.Response) -> VendorError:
    """Map a User Profile API error to the taxonomy."""
    status = response.status_code
    raw = response_body(response)
    body: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    kwargs = _common(response, "user_profile", raw)
    if status in (400, 404) and body.get("error") == PROFILE_NOT_SEEN:
        return NotFoundError("no profile for this user", error_code="UserNotSeen", **kwargs)
    if status in (401, 403):
        return AuthError(f"HTTP {status}: secret key refused", **kwargs)
    if status == 429:
        return RateLimitedError(
            "HTTP 429: requests per minute exceeded",
            retry_after=retry_delay(response, default=PROFILE_RATE_LIMIT_RETRY_SECONDS),
            **kwargs,
        )
    if status >= 500 or status == 408:
        return TransientError(f"HTTP {status}: server error", **kwargs)
    # An empty 404 means a wrong host or path: configuration, not a missing user.
    return PermanentError(f"HTTP {status}: request refused", **kwargs)
