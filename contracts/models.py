"""Pydantic models exchanged between the agent, the workflow, the worker and operators."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

MAX_NOTES = 50
MAX_NOTE_CHARS = 1000
MAX_SUMMARY_CHARS = 2000
MAX_EXTRA_SIGNALS = 20

_CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA timezone such as 'America/New_York'") from None
    return value


def _check_call_id(value: str) -> str:
    if not _CALL_ID.match(value):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _check_phone(value: str) -> str:
    if not _E164.match(value):
        # The value is personal data: never quote it in an error that may be logged.
        raise ValueError("is not an E.164 phone number such as '+14155550123'")
    return value


IanaTimezone = Annotated[str, AfterValidator(_check_timezone)]
CallId = Annotated[str, AfterValidator(_check_call_id)]
E164Phone = Annotated[str, AfterValidator(_check_phone)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Trialist(_Model):
    """The person on a PandaDoc free trial whom the agent calls."""

    email: EmailStr
    name: ShortText
    company: ShortText | None = None
    phone: E164Phone | None = None
    trial_account_id: ShortText
    timezone: IanaTimezone = "America/New_York"

    @property
    def first_name(self) -> str:
        return self.name.split()[0]

    @property
    def last_name(self) -> str:
        parts = self.name.split(maxsplit=1)
        return parts[1] if len(parts) > 1 else parts[0]


class EndedReason(StrEnum):
    COMPLETED = "completed"
    CALLER_HUNG_UP = "caller_hung_up"
    AGENT_ERROR = "agent_error"
    DROPPED = "dropped"


class QualificationSignals(_Model):
    team_size: int | None = Field(default=None, ge=1, le=1_000_000)
    use_case: ShortText | None = None
    current_tool: ShortText | None = None
    timeline: ShortText | None = None
    decision_role: ShortText | None = None
    extras: dict[str, str] = Field(default_factory=dict, max_length=MAX_EXTRA_SIGNALS)

    def filled(self) -> dict[str, str]:
        """Every signal that has a value, as text, named fields first."""
        named = {
            name: str(value)
            for name, value in self.model_dump(exclude={"extras"}).items()
            if value is not None
        }
        return {**named, **self.extras}


class BookingRequest(_Model):
    """A meeting the caller asked for. `slot_start` must be aware; callers check it is future."""

    call_id: CallId
    slot_start: AwareDatetime
    duration_minutes: int = Field(default=30, ge=15, le=120)
    guest: Trialist

    @property
    def slot_end(self) -> datetime:
        return self.slot_start + timedelta(minutes=self.duration_minutes)

    def same_slot(self, other: BookingRequest) -> bool:
        return (
            self.slot_start == other.slot_start and self.duration_minutes == other.duration_minutes
        )

    def check_future(self, now: datetime) -> None:
        """Raise ValueError when the slot has already started at `now`."""
        if self.slot_start <= now:
            raise ValueError(f"slot_start {self.slot_start.isoformat()} is in the past")


class BookingStatus(StrEnum):
    BOOKED = "booked"
    UNAVAILABLE = "unavailable"


class BookingResult(_Model):
    status: BookingStatus
    meeting_id: str | None = None
    slot_start: AwareDatetime
    alternatives: list[AwareDatetime] = Field(default_factory=list, max_length=3)

    @model_validator(mode="after")
    def _booked_has_meeting(self) -> BookingResult:
        if self.status is BookingStatus.BOOKED and not self.meeting_id:
            raise ValueError("a booked result needs meeting_id")
        return self


class BookingConfirmation(_Model):
    """A booking confirmed while the caller was still on the line."""

    meeting_id: str = Field(min_length=1)
    slot_start: AwareDatetime
    duration_minutes: int = Field(default=30, ge=15, le=120)


class CallbackWindow(_Model):
    """When the caller asked to be called back ("Thursday afternoon"): the next attempt's window."""

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> CallbackWindow:
        if self.end <= self.start:
            raise ValueError("a callback window must end after it starts")
        return self


class CallOutcome(_Model):
    """Everything the call learned, sent once at hang-up with signal `call_ended`."""

    call_id: CallId
    trialist: Trialist
    started_at: AwareDatetime
    ended_at: AwareDatetime
    ended_reason: EndedReason
    signals: QualificationSignals = Field(default_factory=QualificationSignals)
    notes: list[Annotated[str, Field(max_length=MAX_NOTE_CHARS)]] = Field(
        default_factory=list, max_length=MAX_NOTES
    )
    summary: str = Field(default="", max_length=MAX_SUMMARY_CHARS)
    requested_meeting: BookingRequest | None = None
    booking: BookingConfirmation | None = None
    # Outreach (issue 16): what the call decided about the next attempt.
    callback: CallbackWindow | None = None
    voicemail: bool = False
    voicemail_message_left: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> CallOutcome:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if self.requested_meeting is not None and self.requested_meeting.call_id != self.call_id:
            raise ValueError("requested_meeting.call_id differs from call_id")
        return self

    @property
    def duration_seconds(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())


class FollowUpStatus(StrEnum):
    IN_CALL = "in_call"
    RUNNING = "running"
    NEEDS_ATTENTION = "needs_attention"
    COMPLETED = "completed"


class FollowUpStep(StrEnum):
    UPSERT_SALESFORCE_LEAD = "upsert_salesforce_lead"
    UPSERT_HUBSPOT_CONTACT = "upsert_hubspot_contact"
    LOG_CALL_SALESFORCE = "log_call_salesforce"
    LOG_CALL_HUBSPOT = "log_call_hubspot"
    BOOK_MEETING = "book_meeting"
    RECORD_MEETING_SALESFORCE = "record_meeting_salesforce"
    RECORD_MEETING_HUBSPOT = "record_meeting_hubspot"
    TRACK_ANALYTICS = "track_analytics"


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NEEDS_ATTENTION = "needs_attention"
    SKIPPED = "skipped"
    NOT_NEEDED = "not_needed"


class StepError(_Model):
    """Why a step failed, as an operator reads it in the UI."""

    kind: str
    message: str
    vendor: str | None = None
    status_code: int | None = None
    error_code: str | None = None
    correlation_id: str | None = None


class StepProgress(_Model):
    state: StepState = StepState.PENDING
    attempts: int = 0
    last_error: StepError | None = None
    skip_reason: str | None = None


class FollowUpProgress(_Model):
    call_id: str
    status: FollowUpStatus
    outcome_missing: bool = False
    steps: dict[FollowUpStep, StepProgress] = Field(default_factory=dict)
    booking: BookingResult | None = None


class FollowUpInput(_Model):
    """Start input of CallFollowUpWorkflow. Timeouts come from the starter's settings."""

    call_id: CallId
    call_ended_timeout_seconds: float = Field(default=4 * 3600, gt=0)
    step_schedule_to_close_seconds: float = Field(default=3600, gt=0)
    # Set when an outreach placed the call: the follow-up reports its result there at the end.
    outreach_workflow_id: str | None = Field(default=None, max_length=200)


class RetryStepRequest(_Model):
    step: FollowUpStep | None = Field(default=None, description="None retries every parked step.")


class SkipStepRequest(_Model):
    step: FollowUpStep
    reason: str = Field(min_length=1, max_length=500)
