"""Inputs and outputs of the follow-up activities: one model in and one model out for each."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import AwareDatetime, Field

from contracts.models import (
    BookingConfirmation,
    BookingRequest,
    BookingResult,
    CallId,
    CallOutcome,
    QualificationSignals,
    Trialist,
    _Model,
)


class ActivityOutput(_Model):
    """Every activity result says which attempt produced it, for the step's attempt count."""

    attempt: int = Field(default=1, ge=1)


class MeetingRecord(_Model):
    """A booked meeting as the CRMs record it."""

    meeting_id: str = Field(min_length=1)
    start: AwareDatetime
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


class UpsertPersonInput(_Model):
    """Create or update the trialist in one CRM, keyed by their email / trial account id."""

    call_id: CallId
    trialist: Trialist
    signals: QualificationSignals = Field(default_factory=QualificationSignals)


class UpsertSalesforceLeadOutput(ActivityOutput):
    lead_id: str


class UpsertHubSpotContactOutput(ActivityOutput):
    contact_id: str


class LogCallSalesforceInput(_Model):
    call_id: CallId
    lead_id: str = Field(min_length=1)
    outcome: CallOutcome


class LogCallSalesforceOutput(ActivityOutput):
    task_id: str


class LogCallHubSpotInput(_Model):
    call_id: CallId
    contact_id: str = Field(min_length=1)
    outcome: CallOutcome


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
    lead_id: str = Field(min_length=1)
    meeting: MeetingRecord


class RecordMeetingSalesforceOutput(ActivityOutput):
    event_id: str


class RecordMeetingHubSpotInput(_Model):
    call_id: CallId
    contact_id: str = Field(min_length=1)
    meeting: MeetingRecord


class RecordMeetingHubSpotOutput(ActivityOutput):
    meeting_engagement_id: str


class TrackAnalyticsInput(_Model):
    """What to report to Amplitude; the activity derives each event's insert id from call_id."""

    call_id: CallId
    user_id: str = Field(min_length=1)
    outcome: CallOutcome | None = None
    outcome_missing: bool = False
    meeting: MeetingRecord | None = None
    tracked_at: AwareDatetime


class TrackAnalyticsOutput(ActivityOutput):
    events_sent: int = 0
    events_ingested: int = 0
