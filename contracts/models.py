"""Pydantic models exchanged between the agent, the workflow, the worker and operators."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from contracts.fields import (
    CallId,
    E164Phone,
    IanaTimezone,
    Instant,
    NoteText,
    OperatorText,
    PersonName,
    ShortText,
    SignalName,
    SignalValue,
    SummaryText,
)

__all__ = ["CallId", "E164Phone", "IanaTimezone", "ShortText"]

MAX_NOTES: Final = 50
MAX_NOTE_CHARS: Final = 1000
MAX_SUMMARY_CHARS: Final = 2000
MAX_EXTRA_SIGNALS: Final = 20
MAX_EMAIL_CHARS: Final = 254  # RFC 5321's limit on a forward path
# What one call may carry through Temporal and into activity inputs. The agent's state keeps a
# call's notes inside NOTES_MAX_BYTES, so a real outcome always fits.
OUTCOME_MAX_BYTES: Final = 64 * 1024
NOTES_MAX_BYTES: Final = 32 * 1024
# A booking further ahead than this is a mistake (or an attack), never a caller's wish.
BOOKING_HORIZON: Final = timedelta(days=60)
MAX_CALL_ENDED_TIMEOUT_SECONDS: Final = 7 * 86400.0
MAX_STEP_SCHEDULE_TO_CLOSE_SECONDS: Final = 7 * 86400.0
MAX_LIVENESS_SECONDS: Final = 3600.0


class _Model(BaseModel):
    # Refused values never reach a log or an error message: they may be personal data.
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, hide_input_in_errors=True
    )


class Trialist(_Model):
    """The person on a PandaDoc free trial whom the agent calls."""

    email: Annotated[EmailStr, Field(max_length=MAX_EMAIL_CHARS)]
    name: PersonName
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
    # The agent went silent mid-call (killed, its host lost): the follow-up used its last
    # checkpoint.
    AGENT_LOST = "agent_lost"


class QualificationSignals(_Model):
    team_size: int | None = Field(default=None, ge=1, le=1_000_000)
    use_case: SignalValue | None = None
    current_tool: SignalValue | None = None
    timeline: SignalValue | None = None
    decision_role: SignalValue | None = None
    extras: dict[SignalName, SignalValue] = Field(
        default_factory=dict, max_length=MAX_EXTRA_SIGNALS
    )

    def filled(self) -> dict[str, str]:
        """Every signal that has a value, as text, named fields first."""
        named = {
            name: str(value)
            for name, value in self.model_dump(exclude={"extras"}).items()
            if value is not None
        }
        return {**named, **self.extras}


class BookingRequest(_Model):
    """A meeting the caller asked for. Callers check it is bookable at their now."""

    call_id: CallId
    slot_start: Instant
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

    def check_bookable(self, now: datetime) -> None:
        """Raise ValueError unless the slot starts after `now` and within BOOKING_HORIZON."""
        self.check_future(now)
        if self.slot_start > now + BOOKING_HORIZON:
            raise ValueError(
                f"slot_start {self.slot_start.isoformat()} is more than "
                f"{BOOKING_HORIZON.days} days ahead"
            )


class BookingStatus(StrEnum):
    BOOKED = "booked"
    UNAVAILABLE = "unavailable"


class BookingResult(_Model):
    status: BookingStatus
    meeting_id: ShortText | None = None
    slot_start: Instant
    alternatives: list[Instant] = Field(default_factory=list, max_length=3)

    @model_validator(mode="after")
    def _booked_has_meeting(self) -> BookingResult:
        if self.status is BookingStatus.BOOKED and not self.meeting_id:
            raise ValueError("a booked result needs meeting_id")
        return self


class BookingConfirmation(_Model):
    """A booking confirmed while the caller was still on the line."""

    meeting_id: ShortText
    slot_start: Instant
    duration_minutes: int = Field(default=30, ge=15, le=120)


class CallbackWindow(_Model):
    """When the caller asked to be called back ("Thursday afternoon"): the next attempt's window."""

    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> CallbackWindow:
        if self.end <= self.start:
            raise ValueError("a callback window must end after it starts")
        return self


def _check_notes_budget(notes: list[str]) -> None:
    notes_bytes = sum(len(note.encode()) for note in notes)
    if notes_bytes > NOTES_MAX_BYTES:
        raise ValueError(f"the notes take {notes_bytes} bytes, over {NOTES_MAX_BYTES}")


class CallLearned(_Model):
    """What a call has learned so far: the part of its outcome that the conversation fills."""

    stage: ShortText = "opening"
    signals: QualificationSignals = Field(default_factory=QualificationSignals)
    notes: list[NoteText] = Field(default_factory=list, max_length=MAX_NOTES)
    requested_meeting: BookingRequest | None = None
    booking: BookingConfirmation | None = None
    # Outreach: what the call decided about the next attempt.
    callback: CallbackWindow | None = None
    voicemail: bool = False
    voicemail_message_left: bool = False

    @model_validator(mode="after")
    def _within_budget(self) -> CallLearned:
        _check_notes_budget(self.notes)
        return self


class CallCheckpoint(_Model):
    """Signal `checkpoint`: the call is alive, and (when `learned` is set) what it has learned.

    The agent sends one when what it learned changes (coalesced) and a keep-alive without
    `learned` when nothing did; the workflow keeps the highest `seq`, so a late one from the outbox
    never undoes a newer one.
    """

    call_id: CallId
    seq: int = Field(ge=0, le=2**31)
    sent_at: Instant
    learned: CallLearned | None = None


class CallOutcome(_Model):
    """Everything the call learned, sent once at hang-up with signal `call_ended`."""

    call_id: CallId
    trialist: Trialist
    started_at: Instant
    ended_at: Instant
    ended_reason: EndedReason
    signals: QualificationSignals = Field(default_factory=QualificationSignals)
    notes: list[NoteText] = Field(default_factory=list, max_length=MAX_NOTES)
    summary: SummaryText = ""
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
        _check_notes_budget(self.notes)
        size = len(self.model_dump_json().encode())
        if size > OUTCOME_MAX_BYTES:
            raise ValueError(f"the outcome takes {size} bytes, over its {OUTCOME_MAX_BYTES}")
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
    # A promised booking that could not be kept: the rep is asked to reply to the caller.
    OWE_REPLY_SALESFORCE = "owe_reply_salesforce"
    OWE_REPLY_HUBSPOT = "owe_reply_hubspot"


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NEEDS_ATTENTION = "needs_attention"
    SKIPPED = "skipped"
    NOT_NEEDED = "not_needed"


class StepError(_Model):
    """Why a step failed, as an operator reads it in the UI."""

    kind: str = Field(max_length=200)
    message: str = Field(max_length=2000)
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
    agent_lost: bool = False  # the call's outcome came from its last checkpoint
    steps: dict[FollowUpStep, StepProgress] = Field(default_factory=dict)
    booking: BookingResult | None = None


class FollowUpInput(_Model):
    """Start input of CallFollowUpWorkflow. Timeouts come from the starter's settings.

    A follow-up started at the call's start also knows whom the call is with and since when, so
    it can finish the call's CRM work from its last checkpoint if the agent is lost.
    """

    call_id: CallId
    trialist: Trialist | None = None
    started_at: Instant | None = None
    # No checkpoint for this long, once checkpoints have come: the agent is lost.
    liveness_seconds: float = Field(
        default=180, ge=10, le=MAX_LIVENESS_SECONDS, allow_inf_nan=False
    )
    # A promised booking that turns out taken is moved to the nearest free slot within this
    # many minutes of the one asked for; 0: never moved, a person is asked to reply instead.
    alternative_window_minutes: int = Field(default=120, ge=0, le=24 * 60)
    # Finite, at least a second (Temporal reads a zero timeout as none) and capped: the
    # workflow turns them into timers and timeouts.
    call_ended_timeout_seconds: float = Field(
        default=4 * 3600, ge=1, le=MAX_CALL_ENDED_TIMEOUT_SECONDS, allow_inf_nan=False
    )
    step_schedule_to_close_seconds: float = Field(
        default=3600, ge=1, le=MAX_STEP_SCHEDULE_TO_CLOSE_SECONDS, allow_inf_nan=False
    )
    # Set when an outreach placed the call: the follow-up reports its result there at the end.
    outreach_workflow_id: str | None = Field(default=None, max_length=200)


class RetryStepRequest(_Model):
    step: FollowUpStep | None = Field(default=None, description="None retries every parked step.")


class SkipStepRequest(_Model):
    step: FollowUpStep
    reason: OperatorText
