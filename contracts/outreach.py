"""Models of the outreach: whom to call and how, each dial and block, opt-outs and call reports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, Field, model_validator

from contracts.calling_policy import CallingPlace, CallingPolicy, VoicemailAction, describe_local
from contracts.models import (
    BookingResult,
    BookingStatus,
    CallbackWindow,
    CallId,
    CallOutcome,
    E164Phone,
    EndedReason,
    ShortText,
    Trialist,
    _Model,
)

MAX_ATTEMPTS_KEPT: Final = 50
MAX_GATES_KEPT: Final = 50
MAX_REASONS: Final = 10
Reason = Annotated[str, Field(max_length=400)]
CampaignId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class OutreachStatus(StrEnum):
    """The `OutreachStatus` search attribute: one word an operator can filter on."""

    SCHEDULED = "scheduled"  # waiting for the next allowed window
    DIALING = "dialing"  # the pre-dial gate passed; ringing
    IN_CALL = "in_call"  # answered: the call's follow-up reports back
    RETRY_WAIT = "retry_wait"  # didn't connect; waiting before the next try
    PAUSED = "paused"  # an operator paused it (or a call report never came)
    DONE = "done"  # finished: booked, not interested, converted, expired, exhausted, cancelled
    OPTED_OUT = "opted_out"  # the trialist asked not to be called
    BLOCKED = "blocked"  # the gate refused for good: do-not-call, no consent


FINAL_STATUSES: Final = frozenset(
    {OutreachStatus.DONE, OutreachStatus.OPTED_OUT, OutreachStatus.BLOCKED}
)


class OutreachEnd(StrEnum):
    """Why an outreach finished; the CRM gets this as its final outreach state."""

    BOOKED = "booked"
    NOT_INTERESTED = "not_interested"
    OPTED_OUT = "opted_out"
    DO_NOT_CALL = "do_not_call"
    NO_CONSENT = "no_consent"
    CONVERTED = "converted"
    TRIAL_ENDED = "trial_ended"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    NO_WINDOW = "no_window"
    CANCELLED = "cancelled"


END_STATUS: Final[dict[OutreachEnd, OutreachStatus]] = {
    **{end: OutreachStatus.DONE for end in OutreachEnd},
    OutreachEnd.OPTED_OUT: OutreachStatus.OPTED_OUT,
    OutreachEnd.DO_NOT_CALL: OutreachStatus.BLOCKED,
    OutreachEnd.NO_CONSENT: OutreachStatus.BLOCKED,
}


class ConsentRecord(_Model):
    """The consent the team holds for AI-voice calls to this number (FCC 24-17): its own record."""

    recorded_at: AwareDatetime
    source: ShortText  # e.g. "trial signup form v3, checkbox 'call me'"


class OutreachInput(_Model):
    """Start input of OutreachWorkflow; every limit comes from the starter's settings."""

    trialist: Trialist
    place: CallingPlace
    consent: ConsentRecord | None = None
    trial_ends_at: AwareDatetime | None = None
    campaign: CampaignId = "trial-outreach"
    from_number: E164Phone
    trunk_id: ShortText
    policy: CallingPolicy = Field(default_factory=CallingPolicy)
    max_calls_per_campaign: int = Field(default=5, ge=1, le=1000)
    max_calls_per_number: int = Field(default=2, ge=1, le=1000)
    not_before: AwareDatetime | None = None
    agent_name: ShortText = "pandadoc-trialist"
    follow_up_task_queue: ShortText = "trialist-follow-ups"
    follow_up_call_ended_timeout_seconds: float = Field(default=4 * 3600, gt=0)
    follow_up_step_schedule_to_close_seconds: float = Field(default=3600, gt=0)
    # A call report that never comes pauses the outreach for an operator (never a blind redial).
    report_timeout_seconds: float = Field(default=6 * 3600, gt=0)
    started_by: Literal["import", "operator", "opt_out"] = "operator"

    @model_validator(mode="after")
    def _has_phone(self) -> OutreachInput:
        if self.trialist.phone is None and self.started_by != "opt_out":
            raise ValueError("trialist.phone is required for an outreach")
        return self


class DialResultKind(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    VOICEMAIL = "voicemail"


class DialAttempt(_Model):
    """One dial that was placed (ambiguous ones too: they count against the caps)."""

    call_id: CallId
    at: AwareDatetime
    result: DialResultKind | None = None
    sip_status_code: int | None = None
    note: Reason = ""


class GateDecision(_Model):
    """The pre-dial gate's verdict, with every reason it checked."""

    at: AwareDatetime
    allowed: bool
    reasons: list[Reason] = Field(default_factory=list, max_length=MAX_REASONS)


class OutreachProgress(_Model):
    """What the `progress` query of an outreach answers."""

    trial_account_id: str
    status: OutreachStatus
    end: OutreachEnd | None = None
    attempts: list[DialAttempt] = Field(default_factory=list, max_length=MAX_ATTEMPTS_KEPT)
    gates: list[GateDecision] = Field(default_factory=list, max_length=MAX_GATES_KEPT)
    next_attempt_at: AwareDatetime | None = None
    next_attempt_local: str | None = None
    why: Reason = ""
    opted_out_at: AwareDatetime | None = None
    place: CallingPlace


class OptOutRequest(_Model):
    """ "Stop calling me": recorded at once; no dial may follow it."""

    trialist: Trialist
    requested_at: AwareDatetime
    call_id: CallId | None = None
    also_email: bool = False
    source: Literal["call", "operator", "import"] = "call"


class OptOutResult(_Model):
    recorded: bool = True
    crm_updated: bool = False
    reason: Reason = ""


class OperatorRequest(_Model):
    """Pause, resume or cancel by an operator, with a reason kept in the history."""

    reason: Annotated[str, Field(min_length=1, max_length=300)]


class CallResult(StrEnum):
    BOOKED = "booked"
    NOT_INTERESTED = "not_interested"
    CALL_BACK = "call_back"
    VOICEMAIL = "voicemail"
    DROPPED = "dropped"  # the call ended early (drop, agent error) with nothing decided
    NO_OUTCOME = "no_outcome"  # the call's outcome never reached its follow-up


class CallReport(_Model):
    """What a call's follow-up tells its outreach when it finishes."""

    call_id: CallId
    result: CallResult
    callback: CallbackWindow | None = None
    meeting_id: str | None = None
    voicemail_message_left: bool = False


class OutreachDispatch(_Model):
    """The outreach's part of a dispatched call's metadata (beside `call_id` and `trialist`)."""

    workflow_id: Annotated[str, Field(min_length=1, max_length=200)]
    voicemail: VoicemailAction = VoicemailAction.RETRY
    leave_message: bool = False  # true once per outreach, under the leave_message setting


def call_report(
    call_id: str,
    outcome: CallOutcome | None,
    booking: BookingResult | None,
) -> CallReport:
    """The report a finished follow-up sends: booked, a callback, voicemail, or not interested."""
    if booking is not None and booking.status is BookingStatus.BOOKED:
        return CallReport(call_id=call_id, result=CallResult.BOOKED, meeting_id=booking.meeting_id)
    if outcome is None:
        return CallReport(call_id=call_id, result=CallResult.NO_OUTCOME)
    if outcome.booking is not None:
        return CallReport(
            call_id=call_id, result=CallResult.BOOKED, meeting_id=outcome.booking.meeting_id
        )
    if outcome.voicemail:
        return CallReport(
            call_id=call_id,
            result=CallResult.VOICEMAIL,
            voicemail_message_left=outcome.voicemail_message_left,
        )
    if outcome.callback is not None:
        return CallReport(call_id=call_id, result=CallResult.CALL_BACK, callback=outcome.callback)
    if outcome.ended_reason in (EndedReason.DROPPED, EndedReason.AGENT_ERROR):
        return CallReport(call_id=call_id, result=CallResult.DROPPED)
    return CallReport(call_id=call_id, result=CallResult.NOT_INTERESTED)


def outreach_workflow_id(trial_account_id: str) -> str:
    return f"{OUTREACH_WORKFLOW_ID_PREFIX}{trial_account_id}"


OUTREACH_WORKFLOW_ID_PREFIX: Final = "outreach-"


def local_time_text(moment: datetime, place: CallingPlace) -> str:
    """The moment as the trialist reads it: "Wed 2026-03-04 08:00 America/Los_Angeles"."""
    return describe_local(moment, place)


# --- the outreach activities' inputs and outputs ------------------------------------------------


class ContactFlagsInput(_Model):
    trial_account_id: ShortText
    email: Annotated[str, Field(min_length=3, max_length=320)]


class ContactFlags(_Model):
    """What the CRMs say before a dial: their do-not-call flags and whether the trial converted."""

    do_not_call: bool = False
    converted: bool = False
    sources: list[Reason] = Field(default_factory=list, max_length=MAX_REASONS)


class PlaceDialInput(_Model):
    call_id: CallId
    room_name: Annotated[str, Field(min_length=1, max_length=128)]
    to_number: E164Phone
    from_number: E164Phone
    trunk_id: ShortText
    max_call_duration_seconds: int = Field(ge=60, le=4 * 3600)


class PlaceDialOutput(_Model):
    result: DialResultKind
    sip_status_code: int | None = None
    # True when the dial may have rung (no answer could be read): it counts as an attempt.
    ambiguous: bool = False
    note: Reason = ""


class DispatchAgentInput(_Model):
    call_id: CallId
    room_name: Annotated[str, Field(min_length=1, max_length=128)]
    agent_name: ShortText
    metadata: Annotated[str, Field(max_length=8000)]


class DispatchAgentOutput(_Model):
    dispatch_id: str


class CrmOutreachUpdate(_Model):
    """One CRM write of outreach state: the do-not-call flags and/or the final state."""

    trialist: Trialist
    outreach_status: Annotated[str, Field(max_length=255)] | None = None
    do_not_call: bool | None = None
    email_opt_out: bool | None = None


class CrmOutreachUpdateOutput(_Model):
    salesforce_lead_id: str
    hubspot_contact_id: str


class SlotRequest(_Model):
    """An outreach asks the dial-slot holder for a slot for one call."""

    holder: Annotated[str, Field(min_length=1, max_length=200)]
    call_id: CallId
    campaign: CampaignId
    from_number: E164Phone
    max_per_campaign: int = Field(ge=1, le=1000)
    max_per_number: int = Field(ge=1, le=1000)
    lease_seconds: float = Field(gt=0, le=24 * 3600)


class SlotRelease(_Model):
    holder: Annotated[str, Field(min_length=1, max_length=200)]
    call_id: CallId


class SlotGrant(_Model):
    call_id: CallId
    granted_at: AwareDatetime


class SlotHolder(_Model):
    request: SlotRequest
    lease_until: AwareDatetime


class SlotsState(_Model):
    """What DialSlotsWorkflow carries across continue-as-new."""

    holders: list[SlotHolder] = Field(default_factory=list)
    waiting: list[SlotRequest] = Field(default_factory=list, max_length=5000)
