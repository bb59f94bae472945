"""Typed async client for HubSpot CRM v3: contact upsert by email and idempotent engagements."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import httpx2
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    model_validator,
)

from integrations.errors import (
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
    parse_reply,
    parse_retry_after,
    response_body,
    send,
)
from integrations.validation import E164Phone, InputModel, Text

logger = logging.getLogger(__name__)

VENDOR: Final = "hubspot"
OBJECTS_PATH: Final = "/crm/v3/objects"
BATCH_UPSERT_MAX: Final = 100  # inputs per batch request
# The custom unique-value property on calls, notes and meetings that makes creation idempotent.
IDEMPOTENCY_PROPERTY: Final = "voice_call_id"
# A create whose unique voice_call_id exists already: the record is there, and the reply names it.
CONFLICT_STATUS: Final = 409
# HUBSPOT_DEFINED association type ids from each engagement to a contact.
ASSOCIATION_TYPE_TO_CONTACT: Final = {"calls": 194, "notes": 202, "meetings": 200}

# Fallback delays when a 429 carries no Retry-After, per HubSpot's policy windows.
TEN_SECONDLY_DELAY_SECONDS: Final = 10.0
SECONDLY_DELAY_SECONDS: Final = 1.0
NOTE_BODY_MAX: Final = 65_536

EngagementType = Literal["calls", "notes", "meetings"]
CallStatus = Literal["COMPLETED", "NO_ANSWER", "BUSY", "FAILED", "CANCELED"]

_EXISTING_ID = re.compile(r"Existing ID: (\d+)")
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def _check_object_id(value: str) -> str:
    if not value.isdigit():
        raise ValueError("must be a HubSpot object id (digits only)")
    return value


def _check_key_part(value: str) -> str:
    if not _KEY_PART.match(value):
        raise ValueError("must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return value


HubSpotId = Annotated[str, AfterValidator(_check_object_id)]
CallKey = Annotated[str, AfterValidator(_check_key_part)]
LongText = Annotated[str, Field(min_length=1, max_length=NOTE_BODY_MAX)]


def hs_time(moment: datetime) -> str:
    """HubSpot's datetime form: UTC ISO-8601 with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _signals_text(signals: dict[str, str]) -> str | None:
    return "; ".join(f"{name}: {value}" for name, value in signals.items()) or None


# Outreach (issue 16): a do-not-call checkbox (a custom contact property portals create for it),
# HubSpot's own "unsubscribed from all email", and the outreach's final state.
DO_NOT_CALL_PROPERTY: Final = "do_not_call"
EMAIL_OPT_OUT_PROPERTY: Final = "hs_email_optout"
OUTREACH_STATUS_PROPERTY: Final = "trial_outreach_status"


def _checkbox(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


class HubSpotContactFlags(BaseModel):
    contact_id: str
    do_not_call: bool
    email_opt_out: bool


class HubSpotContact(InputModel):
    """A trialist as a contact, keyed by email. Unset fields are left as the CRM has them."""

    email: EmailStr
    first_name: Text | None = None
    last_name: Text | None = None
    company: Text | None = None
    phone: E164Phone | None = None
    trial_account_id: Text | None = None
    qualification_signals: dict[str, str] = Field(default_factory=dict, max_length=50)
    # Outreach (issue 16): None leaves the CRM's value as it is.
    do_not_call: bool | None = None
    email_opt_out: bool | None = None
    outreach_status: Text | None = None

    def properties(self) -> dict[str, str]:
        values = {
            "email": str(self.email).lower(),
            "firstname": self.first_name,
            "lastname": self.last_name,
            "company": self.company,
            "phone": self.phone,
            "trial_account_id": self.trial_account_id,
            "trial_qualification": _signals_text(self.qualification_signals),
            DO_NOT_CALL_PROPERTY: _checkbox(self.do_not_call),
            EMAIL_OPT_OUT_PROPERTY: _checkbox(self.email_opt_out),
            OUTREACH_STATUS_PROPERTY: self.outreach_status,
        }
        return {name: value for name, value in values.items() if value is not None}


class HubSpotCall(InputModel):
    """A call engagement; at most one per call id."""

    call_id: CallKey
    title: Text = "Voice agent call"
    body: LongText | None = None
    started_at: AwareDatetime
    duration_seconds: int = Field(ge=0, le=86_400)
    status: CallStatus = "COMPLETED"
    to_number: E164Phone | None = None

    @property
    def voice_call_id(self) -> str:
        return f"{self.call_id}:call"

    def properties(self) -> dict[str, str]:
        values = {
            "hs_timestamp": hs_time(self.started_at),
            "hs_call_title": self.title,
            "hs_call_body": self.body,
            "hs_call_duration": str(self.duration_seconds * 1000),  # milliseconds
            "hs_call_direction": "OUTBOUND",
            "hs_call_status": self.status,
            "hs_call_to_number": self.to_number,
            IDEMPOTENCY_PROPERTY: self.voice_call_id,
        }
        return {name: value for name, value in values.items() if value is not None}


class HubSpotNote(InputModel):
    """A note on the contact; at most one per call id."""

    call_id: CallKey
    body: LongText
    timestamp: AwareDatetime
    # A call has one note of each purpose: the call log, and a reply owed to the caller.
    purpose: Literal["note", "reply_owed"] = "note"

    @property
    def voice_call_id(self) -> str:
        return f"{self.call_id}:{self.purpose}"

    def properties(self) -> dict[str, str]:
        return {
            "hs_timestamp": hs_time(self.timestamp),
            "hs_note_body": self.body,
            IDEMPOTENCY_PROPERTY: self.voice_call_id,
        }


class HubSpotMeeting(InputModel):
    """A booked meeting on the contact; at most one per call id."""

    call_id: CallKey
    meeting_id: Text
    title: Text = "PandaDoc trial walkthrough"
    body: LongText | None = None
    start: AwareDatetime
    end: AwareDatetime
    location: Text | None = None

    @model_validator(mode="after")
    def _ordered(self) -> HubSpotMeeting:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    @property
    def voice_call_id(self) -> str:
        return f"{self.call_id}:meeting"

    def properties(self) -> dict[str, str]:
        values = {
            "hs_timestamp": hs_time(self.start),
            "hs_meeting_title": self.title,
            "hs_meeting_body": self.body,
            "hs_internal_meeting_notes": f"Booked by the voice agent; meeting id {self.meeting_id}",
            "hs_meeting_start_time": hs_time(self.start),
            "hs_meeting_end_time": hs_time(self.end),
            "hs_meeting_outcome": "SCHEDULED",
            "hs_meeting_location": self.location,
            IDEMPOTENCY_PROPERTY: self.voice_call_id,
        }
        return {name: value for name, value in values.items() if value is not None}


class _ContactBatch(InputModel):
    contacts: list[HubSpotContact] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_emails(self) -> _ContactBatch:
        emails = [str(contact.email).lower() for contact in self.contacts]
        if len(set(emails)) != len(emails):
            raise ValueError("the same email appears twice; HubSpot refuses duplicate ids")
        return self


class _EngagementTarget(InputModel):
    contact_id: HubSpotId


class HubSpotContactRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    email: str
    created: bool


class HubSpotEngagementRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    object_type: EngagementType
    voice_call_id: str
    created: bool = Field(description="False when an earlier attempt had already created it.")


# --- wire models --------------------------------------------------------------------------------


class _Object(WireModel):
    id: str = Field(min_length=1)
    properties: dict[str, str | None] = Field(default_factory=dict)
    new: bool | None = None


class _BatchResponse(WireModel):
    status: str
    results: list[_Object] = Field(default_factory=list)
    numErrors: int = 0
    errors: list[dict[str, Any]] = Field(default_factory=list)


class _SearchResponse(WireModel):
    total: int
    results: list[_Object]


_W = TypeVar("_W", bound=WireModel)


class HubSpotClient:
    """HubSpot CRM v3 over the shared pooled httpx2 client. Private-app Bearer token auth."""

    def __init__(self, *, http: httpx2.AsyncClient, base_url: str, access_token: SecretStr) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._access_token = access_token

    async def upsert_contact(self, contact: HubSpotContact) -> HubSpotContactRef:
        """Create or update one contact by email (through batch upsert)."""
        return (await self.batch_upsert_contacts([contact]))[0]

    async def batch_upsert_contacts(
        self, contacts: list[HubSpotContact]
    ) -> list[HubSpotContactRef]:
        """Create or update contacts by email, 100 per request; refs in input order."""
        batch = _ContactBatch(contacts=contacts)
        refs: list[HubSpotContactRef] = []
        for start in range(0, len(batch.contacts), BATCH_UPSERT_MAX):
            refs.extend(await self._upsert_chunk(batch.contacts[start : start + BATCH_UPSERT_MAX]))
        return refs

    async def create_call(
        self, call: HubSpotCall, *, contact_id: str, may_exist: bool = True
    ) -> HubSpotEngagementRef:
        """The call engagement on the contact, created once per call id."""
        return await self._create_engagement(
            "calls", call.voice_call_id, call.properties(), contact_id, may_exist=may_exist
        )

    async def create_note(
        self, note: HubSpotNote, *, contact_id: str, may_exist: bool = True
    ) -> HubSpotEngagementRef:
        """The note on the contact, created once per call id."""
        return await self._create_engagement(
            "notes", note.voice_call_id, note.properties(), contact_id, may_exist=may_exist
        )

    async def create_meeting(
        self, meeting: HubSpotMeeting, *, contact_id: str, may_exist: bool = True
    ) -> HubSpotEngagementRef:
        """The meeting engagement on the contact, created once per call id."""
        return await self._create_engagement(
            "meetings", meeting.voice_call_id, meeting.properties(), contact_id, may_exist=may_exist
        )

    async def get_contact_flags(self, email: str) -> HubSpotContactFlags | None:
        """The contact's do-not-call and email opt-out checkboxes; None without a contact."""
        operation = "search_contacts"
        payload = {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": email.lower()}]}
            ],
            "properties": [DO_NOT_CALL_PROPERTY, EMAIL_OPT_OUT_PROPERTY],
            "limit": 1,
        }
        response = await self._send(operation, "POST", f"{OBJECTS_PATH}/contacts/search", payload)
        parsed = self._parse(response, _SearchResponse, operation)
        if not parsed.results:
            return None
        found = parsed.results[0].properties
        return HubSpotContactFlags(
            contact_id=parsed.results[0].id,
            do_not_call=found.get(DO_NOT_CALL_PROPERTY) == "true",
            email_opt_out=found.get(EMAIL_OPT_OUT_PROPERTY) == "true",
        )

    async def find_engagement(
        self, object_type: EngagementType, voice_call_id: str
    ) -> HubSpotEngagementRef | None:
        """The engagement carrying this voice_call_id, if one exists."""
        payload = {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": IDEMPOTENCY_PROPERTY,
                            "operator": "EQ",
                            "value": voice_call_id,
                        }
                    ]
                }
            ],
            "properties": [IDEMPOTENCY_PROPERTY],
            "sorts": [{"propertyName": "hs_createdate", "direction": "ASCENDING"}],
            "limit": 1,
        }
        operation = f"search_{object_type}"
        response = await self._send(
            operation, "POST", f"{OBJECTS_PATH}/{object_type}/search", payload
        )
        parsed = self._parse(response, _SearchResponse, operation)
        if not parsed.results:
            return None
        return HubSpotEngagementRef(
            id=parsed.results[0].id,
            object_type=object_type,
            voice_call_id=voice_call_id,
            created=False,
        )

    # --- internals ------------------------------------------------------------------------

    async def _upsert_chunk(self, contacts: list[HubSpotContact]) -> list[HubSpotContactRef]:
        operation = "batch_upsert_contacts"
        inputs = [
            {"idProperty": "email", "id": str(c.email).lower(), "properties": c.properties()}
            for c in contacts
        ]
        response = await self._send(
            operation, "POST", f"{OBJECTS_PATH}/contacts/batch/upsert", {"inputs": inputs}
        )
        parsed = self._parse(response, _BatchResponse, operation)
        if response.status_code == 207 or parsed.numErrors or parsed.errors:
            first = parsed.errors[0] if parsed.errors else {}
            raise PermanentError(
                f"HTTP {response.status_code} {first.get('category') or 'partial failure'}",
                vendor=VENDOR,
                operation=operation,
                status_code=response.status_code,
                error_code=first.get("category"),
                correlation_id=_correlation_id(response, first),
                body=response_body(response),
            )
        by_email = {
            (result.properties.get("email") or "").lower(): result for result in parsed.results
        }
        if len(contacts) == 1 and len(parsed.results) == 1:
            by_email.setdefault(str(contacts[0].email).lower(), parsed.results[0])
        refs = []
        for contact in contacts:
            email = str(contact.email).lower()
            result = by_email.get(email)
            if result is None:
                raise TransientError(
                    "batch upsert answered without one of the contacts",
                    vendor=VENDOR,
                    operation=operation,
                    status_code=response.status_code,
                    correlation_id=_correlation_id(response, None),
                )
            refs.append(HubSpotContactRef(id=result.id, email=email, created=bool(result.new)))
        return refs

    async def _create_engagement(
        self,
        object_type: EngagementType,
        voice_call_id: str,
        properties: dict[str, str],
        contact_id: str,
        *,
        may_exist: bool,
    ) -> HubSpotEngagementRef:
        """Create it once; a 409 on the unique key means it exists, and names it.

        `may_exist`: an earlier attempt may have created it, so search first and spare the create.
        Without it (a first attempt) the search is skipped: the unique property still turns a
        create that finds the record into a 409, so correctness never rests on the search, which
        lags writes anyway.
        """
        target = _EngagementTarget(contact_id=contact_id)
        if may_exist:
            existing = await self.find_engagement(object_type, voice_call_id)
            if existing is not None:
                logger.info("hubspot %s: already created by an earlier attempt", object_type)
                return existing
        operation = f"create_{object_type[:-1]}"
        payload = {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": target.contact_id},
                    "types": [
                        {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": ASSOCIATION_TYPE_TO_CONTACT[object_type],
                        }
                    ],
                }
            ],
        }
        try:
            response = await self._send(
                operation,
                "POST",
                f"{OBJECTS_PATH}/{object_type}",
                payload,
                expected_statuses=(CONFLICT_STATUS,),  # already created: handled below
            )
        except PermanentError as error:
            # Search lags writes by a few seconds: a concurrent or recent create shows up as 409.
            if error.status_code != CONFLICT_STATUS:
                raise
            existing_id = _existing_id(error.body)
            if existing_id is not None:
                return HubSpotEngagementRef(
                    id=existing_id,
                    object_type=object_type,
                    voice_call_id=voice_call_id,
                    created=False,
                )
            found = await self.find_engagement(object_type, voice_call_id)
            if found is None:
                raise
            return found
        created = self._parse(response, _Object, operation)
        return HubSpotEngagementRef(
            id=created.id, object_type=object_type, voice_call_id=voice_call_id, created=True
        )

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        payload: dict[str, Any],
        *,
        expected_statuses: tuple[int, ...] = (),
    ) -> httpx2.Response:
        return await send(
            self._http,
            vendor=VENDOR,
            operation=operation,
            method=method,
            url=f"{self._base_url}{path}",
            headers=bearer_headers(self._access_token),
            json=payload,
            # Upserts by email, searches, and creates guarded by the unique voice_call_id are
            # all safe to send again, so a lost response is transient, not ambiguous.
            idempotent=True,
            classify=lambda response: classify_response(response, operation),
            log=logger,
            expected_statuses=expected_statuses,
        )

    def _parse(self, response: httpx2.Response, model: type[_W], operation: str) -> _W:
        return parse_reply(
            response,
            model,
            vendor=VENDOR,
            operation=operation,
            correlation_id=_correlation_id(response, None),
        )


def _correlation_id(response: httpx2.Response, body: Any) -> str | None:
    if isinstance(body, dict) and body.get("correlationId"):
        return str(body["correlationId"])
    header: str | None = response.headers.get("x-hubspot-correlation-id")
    return header


def _existing_id(body: Any) -> str | None:
    """The id a 409 names ("... Existing ID: 123"), HubSpot's way to point at the duplicate."""
    message = body.get("message") if isinstance(body, dict) else None
    match = _EXISTING_ID.search(message) if isinstance(message, str) else None
    return match.group(1) if match else None


def _rate_limit_delay(response: httpx2.Response, policy: str | None) -> float:
    """Retry-After when sent; else the policy's window (the interval header for 10 s)."""
    delay = parse_retry_after(response.headers.get("retry-after"))
    if delay is not None:
        return delay
    if policy == "SECONDLY":
        return SECONDLY_DELAY_SECONDS
    interval = response.headers.get("x-hubspot-ratelimit-interval-milliseconds", "")
    if interval.isdigit() and int(interval) > 0:
        return int(interval) / 1000
    return TEN_SECONDLY_DELAY_SECONDS


def classify_response(response: httpx2.Response, operation: str) -> VendorError:
    """Map a HubSpot error ({status, message, correlationId, category, policyName?})."""
    status = response.status_code
    body = response_body(response)
    details = body if isinstance(body, dict) else {}
    policy = details.get("policyName")
    error_code = policy or details.get("category")
    kwargs: dict[str, Any] = {
        "vendor": VENDOR,
        "operation": operation,
        "status_code": status,
        "error_code": error_code,
        "correlation_id": _correlation_id(response, details),
        "body": body,
    }
    # The message carries no vendor text: HubSpot quotes property values (emails) in it.
    message = f"HTTP {status} {error_code or response.reason_phrase}".strip()
    if status == 429:
        if policy == "DAILY":
            # The daily allocation resets at midnight in the portal's time zone: not worth retrying.
            return PermanentError(f"{message}: daily API limit reached", **kwargs)
        return RateLimitedError(message, retry_after=_rate_limit_delay(response, policy), **kwargs)
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status in (408, 423) or status >= 500:
        return TransientError(message, **kwargs)
    return PermanentError(message, **kwargs)
