"""Typed async client for Salesforce REST: client-credentials OAuth and upserts by external id."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import quote

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
    response_body,
    retry_delay,
    send,
)
from integrations.validation import E164Phone, InputModel, Text

logger = logging.getLogger(__name__)

VENDOR: Final = "salesforce"
TOKEN_PATH: Final = "/services/oauth2/token"
DEFAULT_API_VERSION: Final = "v62.0"

# Salesforce sends no Retry-After with 403 REQUEST_LIMIT_EXCEEDED. When Sforce-Limit-Info shows
# the rolling 24-hour allocation used up, capacity comes back slowly; otherwise the limit hit is
# a concurrency one (long-running requests), which frees up within seconds.
REQUEST_LIMIT_RETRY_SECONDS: Final = 60.0
ALLOCATION_EXHAUSTED_RETRY_SECONDS: Final = 900.0
# Web-to-lead's placeholder for Company, which a new Lead requires.
UNKNOWN_COMPANY: Final = "[not provided]"
# Outreach (issue 16): the Lead's custom field for the outreach's final state, and the Lead
# status that means the trial converted.
OUTREACH_STATUS_FIELD: Final = "Outreach_Status__c"
CONVERTED_LEAD_STATUS: Final = "Closed - Converted"

LEAD_EMAIL_MAX: Final = 80
TEXT_AREA_MAX: Final = 32_000
_INVALID_SESSION = "INVALID_SESSION_ID"
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")
_RECORD_ID = re.compile(r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$")
_EXTERNAL_ID = re.compile(r"^[^\s/\\?#%]{1,255}$")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_external_id(value: str) -> str:
    if not _EXTERNAL_ID.match(value):
        raise ValueError("must be 1-255 characters without spaces, '/', '\\', '?', '#' or '%'")
    return value


def _check_record_id(value: str) -> str:
    if not _RECORD_ID.match(value):
        raise ValueError("is not a 15- or 18-character Salesforce record id")
    return value


def _check_email_length(value: str) -> str:
    if len(value) > LEAD_EMAIL_MAX:
        raise ValueError(f"is longer than Salesforce's {LEAD_EMAIL_MAX} characters")
    return value


ExternalIdValue = Annotated[str, AfterValidator(_check_external_id)]
SalesforceId = Annotated[str, AfterValidator(_check_record_id)]
LeadEmail = Annotated[EmailStr, AfterValidator(_check_email_length)]
TextArea = Annotated[str, Field(max_length=TEXT_AREA_MAX)]


def _with_signals(description: str | None, signals: dict[str, str]) -> str | None:
    if not signals:
        return description
    lines = "\n".join(f"- {name}: {value}" for name, value in signals.items())
    block = f"Qualification signals:\n{lines}"
    return f"{description}\n\n{block}" if description else block


class SalesforceLead(InputModel):
    """A trialist as a Lead, keyed by the trial account id (an external-id field)."""

    trial_account_id: ExternalIdValue
    first_name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    last_name: Annotated[str, Field(min_length=1, max_length=80)]
    email: LeadEmail
    company: Text | None = None
    title: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    phone: E164Phone | None = None
    lead_source: Annotated[str, Field(min_length=1, max_length=40)] = "Free Trial"
    description: TextArea | None = None
    qualification_signals: dict[str, str] = Field(default_factory=dict, max_length=50)
    # Outreach (issue 16): None leaves the CRM's value as it is.
    do_not_call: bool | None = None
    email_opt_out: bool | None = None
    outreach_status: Text | None = None

    @model_validator(mode="after")
    def _description_fits(self) -> SalesforceLead:
        text = _with_signals(self.description, self.qualification_signals) or ""
        if len(text) > TEXT_AREA_MAX:
            raise ValueError(f"description with signals exceeds {TEXT_AREA_MAX} characters")
        return self

    def fields(self) -> dict[str, Any]:
        """The Lead's fields; an unknown company is left out so an update keeps the CRM's."""
        values: dict[str, Any] = {
            "FirstName": self.first_name,
            "LastName": self.last_name,
            "Email": str(self.email),
            "Company": self.company,
            "Title": self.title,
            "Phone": self.phone,
            "LeadSource": self.lead_source,
            "Description": _with_signals(self.description, self.qualification_signals),
            "DoNotCall": self.do_not_call,
            "HasOptedOutOfEmail": self.email_opt_out,
            OUTREACH_STATUS_FIELD: self.outreach_status,
        }
        return {name: value for name, value in values.items() if value is not None}


class SalesforceCallTask(InputModel):
    """A completed call Task, keyed by the voice call id (an external-id field)."""

    call_id: ExternalIdValue
    lead_id: SalesforceId | None = None
    subject: Text = "Voice agent call"
    description: TextArea | None = None
    started_at: AwareDatetime
    duration_seconds: int = Field(ge=0, le=86_400)
    disposition: Text | None = None

    def fields(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "Subject": self.subject,
            "Description": self.description,
            "Status": "Completed",
            "Priority": "Normal",
            "TaskSubtype": "Call",
            "Type": "Call",
            "CallType": "Outbound",
            "CallDurationInSeconds": self.duration_seconds,
            "CallDisposition": self.disposition,
            # The date as the caller lived it: the datetime's own offset decides the day.
            "ActivityDate": self.started_at.date().isoformat(),
            "WhoId": self.lead_id,
        }
        return {name: value for name, value in values.items() if value is not None}


class SalesforceReplyTask(InputModel):
    """An open Task for the rep: the caller on this Lead is owed a reply. Keyed per call."""

    call_id: ExternalIdValue
    lead_id: SalesforceId
    subject: Text
    description: TextArea
    due: date

    @property
    def key(self) -> str:
        return f"{self.call_id}:reply"

    def fields(self) -> dict[str, Any]:
        return {
            "Subject": self.subject,
            "Description": self.description,
            "Status": "Not Started",
            "Priority": "High",
            "TaskSubtype": "Task",
            "ActivityDate": self.due.isoformat(),
            "WhoId": self.lead_id,
        }


class SalesforceMeetingEvent(InputModel):
    """A booked meeting as an Event, keyed by the meeting id (an external-id field)."""

    meeting_id: ExternalIdValue
    lead_id: SalesforceId | None = None
    subject: Text = "PandaDoc trial walkthrough"
    start: AwareDatetime
    end: AwareDatetime
    description: TextArea | None = None
    location: Text | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SalesforceMeetingEvent:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def fields(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "Subject": self.subject,
            "StartDateTime": sf_datetime(self.start),
            "EndDateTime": sf_datetime(self.end),
            "Description": self.description,
            "Location": self.location,
            "WhoId": self.lead_id,
        }
        return {name: value for name, value in values.items() if value is not None}


class SalesforceUpsertResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    created: bool
    sobject: str
    external_id: str


class SalesforceLimitInfo(BaseModel):
    """The org's API usage from the last Sforce-Limit-Info header (rolling 24 hours)."""

    model_config = ConfigDict(frozen=True)

    used: int
    max: int

    @property
    def remaining(self) -> int:
        return max(self.max - self.used, 0)


def sf_datetime(moment: datetime) -> str:
    """An aware datetime in Salesforce's dateTime form (UTC, milliseconds)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_limit_info(value: str | None) -> SalesforceLimitInfo | None:
    match = _LIMIT_INFO.search(value or "")
    if match is None:
        return None
    return SalesforceLimitInfo(used=int(match.group(1)), max=int(match.group(2)))


# --- wire models --------------------------------------------------------------------------------


class _TokenResponse(WireModel):
    access_token: str = Field(min_length=1)
    instance_url: str = Field(pattern=r"^https?://")
    token_type: str = "Bearer"


class _UpsertResponse(WireModel):
    id: str = Field(min_length=15)
    success: bool
    created: bool = False


class _Record(WireModel):
    Id: str = Field(min_length=15)


class _LeadFlagsRecord(_Record):
    DoNotCall: bool | None = None
    HasOptedOutOfEmail: bool | None = None
    Status: str | None = None


class SalesforceLeadFlags(BaseModel):
    """What outreach reads before a dial: the do-not-call flags and whether the lead converted."""

    lead_id: str
    do_not_call: bool
    email_opt_out: bool
    converted: bool


_W = TypeVar("_W", bound=WireModel)


@dataclass(frozen=True)
class _Session:
    access_token: SecretStr
    instance_url: str


class SalesforceClient:
    """Salesforce REST over the shared pooled httpx2 client, with a client-credentials session."""

    def __init__(
        self,
        *,
        http: httpx2.AsyncClient,
        base_url: str,
        client_id: str,
        client_secret: SecretStr,
        api_version: str = DEFAULT_API_VERSION,
        lead_external_id_field: str = "Trial_Account_Id__c",
        task_external_id_field: str = "Voice_Call_Id__c",
        event_external_id_field: str = "Voice_Meeting_Id__c",
    ) -> None:
        if not re.match(r"^v\d{2,3}\.0$", api_version):
            raise ValueError(f"api_version must look like 'v62.0', not {api_version!r}")
        for name, value in (
            ("lead_external_id_field", lead_external_id_field),
            ("task_external_id_field", task_external_id_field),
            ("event_external_id_field", event_external_id_field),
        ):
            if not _FIELD_NAME.match(value):
                raise ValueError(f"{name} must be a field API name such as 'External_Id__c'")
        if not client_id.strip():
            raise ValueError("client_id must be the connected app's consumer key")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id.strip()
        self._client_secret = client_secret
        self._api_version = api_version
        self._lead_field = lead_external_id_field
        self._task_field = task_external_id_field
        self._event_field = event_external_id_field
        self._session: _Session | None = None
        self._session_lock = asyncio.Lock()
        self._limit_info: SalesforceLimitInfo | None = None

    @property
    def limit_info(self) -> SalesforceLimitInfo | None:
        """The last Sforce-Limit-Info seen (api-usage used/max), or None before any call."""
        return self._limit_info

    async def upsert_lead(self, lead: SalesforceLead) -> SalesforceUpsertResult:
        """Create or update the Lead whose external id is the trial account id."""
        fields = lead.fields()
        try:
            return await self._upsert(
                "upsert_lead", "Lead", self._lead_field, lead.trial_account_id, fields
            )
        except PermanentError as error:
            # A new Lead needs a Company; only then send the placeholder, so updates keep it.
            if "Company" in fields or not _missing_required(error, "Company"):
                raise
        fields["Company"] = UNKNOWN_COMPANY
        return await self._upsert(
            "upsert_lead", "Lead", self._lead_field, lead.trial_account_id, fields
        )

    async def upsert_reply_task(self, task: SalesforceReplyTask) -> SalesforceUpsertResult:
        """Create or update the call's reply-owed Task (external id `<call id>:reply`)."""
        return await self._upsert("upsert_task", "Task", self._task_field, task.key, task.fields())

    async def get_lead_flags(self, trial_account_id: str) -> SalesforceLeadFlags | None:
        """The Lead's DoNotCall, HasOptedOutOfEmail and converted status; None without a Lead."""
        operation = "get_lead"
        path = self._external_id_path("Lead", self._lead_field, trial_account_id)
        try:
            response = await self._data_request(operation, "GET", path, None)
        except NotFoundError:
            return None
        record = self._parse(response, _LeadFlagsRecord, operation)
        return SalesforceLeadFlags(
            lead_id=record.Id,
            do_not_call=bool(record.DoNotCall),
            email_opt_out=bool(record.HasOptedOutOfEmail),
            converted=record.Status == CONVERTED_LEAD_STATUS,
        )

    async def upsert_call_task(self, task: SalesforceCallTask) -> SalesforceUpsertResult:
        """Create or update the call's Task; its external id is the call id."""
        return await self._upsert(
            "upsert_task", "Task", self._task_field, task.call_id, task.fields()
        )

    async def upsert_meeting_event(self, event: SalesforceMeetingEvent) -> SalesforceUpsertResult:
        """Create or update the meeting's Event; its external id is the meeting id."""
        return await self._upsert(
            "upsert_event", "Event", self._event_field, event.meeting_id, event.fields()
        )

    # --- internals ------------------------------------------------------------------------

    async def _upsert(
        self, operation: str, sobject: str, field: str, value: str, fields: dict[str, Any]
    ) -> SalesforceUpsertResult:
        path = self._external_id_path(sobject, field, value)
        response = await self._data_request(operation, "PATCH", path, fields)
        if response.status_code == 204:
            # API versions before 46.0 answer an update with 204 and no body.
            existing = await self._data_request(operation, "GET", path, None)
            record = self._parse(existing, _Record, operation)
            return SalesforceUpsertResult(
                id=record.Id, created=False, sobject=sobject, external_id=value
            )
        parsed = self._parse(response, _UpsertResponse, operation)
        return SalesforceUpsertResult(
            id=parsed.id,
            created=response.status_code == 201 or parsed.created,
            sobject=sobject,
            external_id=value,
        )

    def _external_id_path(self, sobject: str, field: str, value: str) -> str:
        return (
            f"/services/data/{self._api_version}/sobjects/{sobject}/{field}/{quote(value, safe='')}"
        )

    async def _data_request(
        self, operation: str, method: str, path: str, payload: dict[str, Any] | None
    ) -> httpx2.Response:
        """One REST call; a 401 INVALID_SESSION_ID refreshes the session and retries once."""
        session = await self._current_session()
        response = await self._send(operation, method, session, path, payload)
        if response.status_code == 401 and _error_code(response_body(response)) == _INVALID_SESSION:
            logger.info("salesforce %s: session expired or revoked; refreshing once", operation)
            session = await self._refresh_session(stale=session)
            response = await self._send(operation, method, session, path, payload)
        self._limit_info = parse_limit_info(response.headers.get("sforce-limit-info")) or (
            self._limit_info
        )
        if response.status_code in (200, 201, 204):
            return response
        failure = classify_response(response, operation, limit_info=self._limit_info)
        logger.warning("salesforce %s failed: %s", operation, failure.kind.value)
        raise failure

    async def _send(
        self,
        operation: str,
        method: str,
        session: _Session,
        path: str,
        payload: dict[str, Any] | None,
    ) -> httpx2.Response:
        return await send(
            self._http,
            vendor=VENDOR,
            operation=operation,
            method=method,
            url=f"{session.instance_url}{path}",
            headers=bearer_headers(session.access_token),
            json=payload,
            # An upsert by external id converges on one record however often it is sent.
            idempotent=True,
            log=logger,
        )

    async def _current_session(self) -> _Session:
        if self._session is not None:
            return self._session
        async with self._session_lock:
            if self._session is None:
                self._session = await self._fetch_token()
            return self._session

    async def _refresh_session(self, *, stale: _Session) -> _Session:
        async with self._session_lock:
            # Another request may have refreshed while this one waited for the lock.
            if self._session is None or self._session is stale:
                self._session = await self._fetch_token()
            return self._session

    async def _fetch_token(self) -> _Session:
        operation = "token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        response = await send(
            self._http,
            vendor=VENDOR,
            operation=operation,
            method="POST",
            url=f"{self._base_url}{TOKEN_PATH}",
            headers={"Accept": "application/json"},
            data=form,
            idempotent=True,
            log=logger,
        )
        if response.status_code != 200:
            failure = classify_token_response(response)
            logger.warning("salesforce token failed: %s", failure.kind.value)
            raise failure
        parsed = self._parse(response, _TokenResponse, operation)
        logger.info("salesforce: new session issued")
        return _Session(
            access_token=SecretStr(parsed.access_token),
            instance_url=parsed.instance_url.rstrip("/"),
        )

    def _parse(self, response: httpx2.Response, model: type[_W], operation: str) -> _W:
        return parse_reply(response, model, vendor=VENDOR, operation=operation)


def _error_code(body: Any) -> str | None:
    """errorCode of the first entry of Salesforce's JSON-array error body."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code = body[0].get("errorCode")
        return str(code) if code else None
    if isinstance(body, dict):
        code = body.get("errorCode") or body.get("error")
        return str(code) if code else None
    return None


def _missing_required(error: VendorError, field: str) -> bool:
    body = error.body
    return (
        error.status_code == 400
        and error.error_code == "REQUIRED_FIELD_MISSING"
        and isinstance(body, list)
        and any(field in (entry.get("fields") or []) for entry in body if isinstance(entry, dict))
    )


def classify_response(
    response: httpx2.Response, operation: str, *, limit_info: SalesforceLimitInfo | None = None
) -> VendorError:
    """Map a REST API error response to the taxonomy (bodies: [{message, errorCode, fields}])."""
    status = response.status_code
    body = response_body(response)
    error_code = "MULTIPLE_CHOICES" if status == 300 else _error_code(body)
    message, kwargs = _failure_fields(response, operation, error_code, body)
    if status == 300:
        return PermanentError(f"{message}: the external id matches several records", **kwargs)
    if status == 403 and error_code == "REQUEST_LIMIT_EXCEEDED":
        exhausted = limit_info is not None and limit_info.used >= limit_info.max
        default = ALLOCATION_EXHAUSTED_RETRY_SECONDS if exhausted else REQUEST_LIMIT_RETRY_SECONDS
        return RateLimitedError(
            message, retry_after=retry_delay(response, default=default), **kwargs
        )
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    return _throttled_retryable_or_permanent(response, message, kwargs)


def classify_token_response(response: httpx2.Response) -> VendorError:
    """Token endpoint errors ({error, error_description}): refused credentials are AuthError."""
    body = response_body(response)
    message, kwargs = _failure_fields(response, "token", _error_code(body), body)
    if response.status_code in (400, 401, 403):
        return AuthError(message, **kwargs)
    return _throttled_retryable_or_permanent(response, message, kwargs)


def _failure_fields(
    response: httpx2.Response, operation: str, error_code: str | None, body: Any
) -> tuple[str, dict[str, Any]]:
    """An error's message and its VendorError keyword arguments."""
    kwargs: dict[str, Any] = {
        "vendor": VENDOR,
        "operation": operation,
        "status_code": response.status_code,
        "error_code": error_code,
        "body": body,
    }
    # The message carries no vendor text: Salesforce quotes field values (emails) in it.
    message = f"HTTP {response.status_code} {error_code or response.reason_phrase}".strip()
    return message, kwargs


def _throttled_retryable_or_permanent(
    response: httpx2.Response, message: str, kwargs: dict[str, Any]
) -> VendorError:
    """The statuses both endpoints map alike: 429 waits, 408 and 5xx retry, the rest is final."""
    status = response.status_code
    if status == 429:
        return RateLimitedError(
            message,
            retry_after=retry_delay(response, default=REQUEST_LIMIT_RETRY_SECONDS),
            **kwargs,
        )
    if status >= 500 or status == 408:
        return TransientError(message, **kwargs)
    return PermanentError(message, **kwargs)
