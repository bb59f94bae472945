"""Inputs and outputs of the follow-up activities: one model in and one model out for each.

Each input carries only what its step uses (data minimisation): the CRM upserts get the person
but not their timezone, the call logs get what was said but no contact details (HubSpot's call
also gets the number it was made to), and analytics gets facts with no personal data at all.
Every copy of a person's data in Temporal history is one more place it can leak from.

Activities in flight when this changed were scheduled with the earlier inputs, which carried the
whole CallOutcome or Trialist; each input still accepts that shape and keeps what it needs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import EmailStr, Field, model_validator

from contracts.fields import (
    E164Phone,
    IanaTimezone,
    Instant,
    NoteText,
    PersonName,
    ShortText,
    SummaryText,
)
from contracts.models import (
    MAX_EMAIL_CHARS,
    MAX_NOTES,
    BookingConfirmation,
    BookingRequest,
    BookingResult,
    CallId,
    CallOutcome,
    EndedReason,
    QualificationSignals,
    Trialist,
    _Model,
)


class ActivityOutput(_Model):
    """Every activity result says which attempt produced it, for the step's attempt count."""

    attempt: int = Field(default=1, ge=1)


class MeetingRecord(_Model):
    """A booked meeting as the CRMs record it."""

    meeting_id: ShortText
    start: Instant
    duration_minutes: int = Field(default=30, ge=1, le=480)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration_minutes)

    @classmethod
    def from_confirmation(cls, confirmation: BookingConfirmation) -> MeetingRecord:
        return cls(
            meeting_id=confirmation.meeting_id,
            start=confirmation.slot_start,
            duration_minutes=confirmation.duration_minutes,
        )


class CrmPerson(_Model):
    """Whom a CRM record is about: the trialist without what no CRM step uses."""

    email: Annotated[EmailStr, Field(max_length=MAX_EMAIL_CHARS)]
    name: PersonName
    company: ShortText | None = None
    phone: E164Phone | None = None
    trial_account_id: ShortText

    @property
    def first_name(self) -> str:
        return self.name.split()[0]

    @property
    def last_name(self) -> str:
        parts = self.name.split(maxsplit=1)
        return parts[1] if len(parts) > 1 else parts[0]

    @classmethod
    def of(cls, trialist: Trialist) -> CrmPerson:
        return cls.model_validate(trialist.model_dump(exclude={"timezone"}))


class UpsertPersonInput(_Model):
    """Create or update the trialist in one CRM, keyed by their email / trial account id."""

    call_id: CallId
    person: CrmPerson
    signals: QualificationSignals = Field(default_factory=QualificationSignals)

    @model_validator(mode="before")
    @classmethod
    def _earlier_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "trialist" in data and "person" not in data:
            data = dict(data)
            person = dict(data.pop("trialist"))
            person.pop("timezone", None)
            data["person"] = person
        return data


class CallRecord(_Model):
    """What a rep reads about a call: when, how it ended, what was learned. No contact details."""

    started_at: Instant
    ended_at: Instant
    ended_reason: EndedReason
    signals: QualificationSignals = Field(default_factory=QualificationSignals)
    notes: list[NoteText] = Field(default_factory=list, max_length=MAX_NOTES)
    summary: SummaryText = ""
    requested_slot: Instant | None = None

    @property
    def duration_seconds(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())

    @classmethod
    def of(cls, outcome: CallOutcome) -> CallRecord:
        requested = outcome.requested_meeting
        return cls(
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            ended_reason=outcome.ended_reason,
            signals=outcome.signals,
            notes=outcome.notes,
            summary=outcome.summary,
            requested_slot=requested.slot_start if requested is not None else None,
        )


def _call_from_outcome(data: Any, *, phone_field: str | None = None) -> Any:
    """An earlier input's `outcome`, turned into the `call` (and the phone) it needed."""
    if not (isinstance(data, dict) and "outcome" in data and "call" not in data):
        return data
    data = dict(data)
    outcome = CallOutcome.model_validate(data.pop("outcome"))
    data["call"] = CallRecord.of(outcome)
    if phone_field is not None:
        data.setdefault(phone_field, outcome.trialist.phone)
    return data


class UpsertSalesforceLeadOutput(ActivityOutput):
    lead_id: str


class UpsertHubSpotContactOutput(ActivityOutput):
    contact_id: str


class LogCallSalesforceInput(_Model):
    call_id: CallId
    lead_id: ShortText
    call: CallRecord

    @model_validator(mode="before")
    @classmethod
    def _earlier_shape(cls, data: Any) -> Any:
        return _call_from_outcome(data)


class LogCallSalesforceOutput(ActivityOutput):
    task_id: str


class LogCallHubSpotInput(_Model):
    call_id: CallId
    contact_id: ShortText
    call: CallRecord
    to_number: E164Phone | None = None  # HubSpot's call engagement records the number called

    @model_validator(mode="before")
    @classmethod
    def _earlier_shape(cls, data: Any) -> Any:
        return _call_from_outcome(data, phone_field="to_number")


class LogCallHubSpotOutput(ActivityOutput):
    call_engagement_id: str
    note_id: str | None = None


class BookMeetingInput(_Model):
    call_id: CallId
    request: BookingRequest


class BookMeetingOutput(ActivityOutput):
    result: BookingResult
    reconciled: bool = Field(
        default=False, description="True when an existing meeting was found instead of booking."
    )


class RecordMeetingSalesforceInput(_Model):
    call_id: CallId
    lead_id: ShortText
    meeting: MeetingRecord


class RecordMeetingSalesforceOutput(ActivityOutput):
    event_id: str


class RecordMeetingHubSpotInput(_Model):
    call_id: CallId
    contact_id: ShortText
    meeting: MeetingRecord


class RecordMeetingHubSpotOutput(ActivityOutput):
    meeting_engagement_id: str


class CallFacts(_Model):
    """What analytics learns of a call: facts, no contact details, no notes or summary."""

    ended_at: Instant
    ended_reason: EndedReason
    duration_seconds: int = Field(ge=0)
    meeting_requested: bool = False
    notes_count: int = Field(default=0, ge=0, le=MAX_NOTES)
    signals: QualificationSignals = Field(default_factory=QualificationSignals)

    @classmethod
    def of(cls, outcome: CallOutcome) -> CallFacts:
        return cls(
            ended_at=outcome.ended_at,
            ended_reason=outcome.ended_reason,
            duration_seconds=max(outcome.duration_seconds, 0),
            meeting_requested=outcome.requested_meeting is not None,
            notes_count=len(outcome.notes),
            signals=outcome.signals,
        )


class TrackAnalyticsInput(_Model):
    """What to report to Amplitude; the activity derives each event's insert id from call_id."""

    call_id: CallId
    user_id: ShortText
    call: CallFacts | None = None
    outcome_missing: bool = False
    meeting: MeetingRecord | None = None
    tracked_at: Instant

    @model_validator(mode="before")
    @classmethod
    def _earlier_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "outcome" in data and "call" not in data:
            data = dict(data)
            outcome = data.pop("outcome")
            data["call"] = (
                CallFacts.of(CallOutcome.model_validate(outcome)) if outcome is not None else None
            )
        return data


class OwedReply(_Model):
    """A promise to a caller that could not be kept: the invite they were told would follow."""

    requested_slot: Instant
    timezone: IanaTimezone
    alternatives: list[Instant] = Field(default_factory=list, max_length=3)
    reason: ShortText


class OweReplySalesforceInput(_Model):
    call_id: CallId
    lead_id: ShortText
    owed: OwedReply


class OweReplyHubSpotInput(_Model):
    call_id: CallId
    contact_id: ShortText
    owed: OwedReply


class OweReplyOutput(ActivityOutput):
    record_id: str


class TrackAnalyticsOutput(ActivityOutput):
    events_sent: int = 0
    events_ingested: int = 0
