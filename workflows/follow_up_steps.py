"""The follow-up's step graph, declared once: each step's prerequisites, input and activity.

A table of plain declarations read by one runner (CallFollowUpWorkflow._run_steps), rather than
a method per step: adding a vendor step is one row here, its input builder and its activity. The
rows are in the order the runner starts them, which is the order their activities are scheduled;
recorded histories replay only while it stays the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.types import MethodAsyncSingleParam

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE_ERROR_TYPES
    from activities.follow_up import FollowUpActivities
    from contracts.activities import (
        ActivityOutput,
        CallFacts,
        CallRecord,
        CrmPerson,
        LogCallHubSpotInput,
        LogCallSalesforceInput,
        MeetingRecord,
        OwedReply,
        OweReplyHubSpotInput,
        OweReplySalesforceInput,
        RecordMeetingHubSpotInput,
        RecordMeetingSalesforceInput,
        TrackAnalyticsInput,
        UpsertHubSpotContactOutput,
        UpsertPersonInput,
        UpsertSalesforceLeadOutput,
    )
    from contracts.models import CallOutcome, FollowUpStep, QualificationSignals, Trialist

# --- timeouts and retries: every vendor step shares one policy; the input bounds its total time --

RETRY_INITIAL_INTERVAL: Final = timedelta(seconds=1)
RETRY_BACKOFF: Final = 2.0
RETRY_MAX_INTERVAL: Final = timedelta(minutes=5)
# Unlimited attempts: the step's schedule-to-close (FollowUpInput) is what bounds the retrying.
VENDOR_RETRY_POLICY: Final = RetryPolicy(
    initial_interval=RETRY_INITIAL_INTERVAL,
    backoff_coefficient=RETRY_BACKOFF,
    maximum_interval=RETRY_MAX_INTERVAL,
    maximum_attempts=0,
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)
SINGLE_CALL_TIMEOUT: Final = timedelta(seconds=30)  # one attempt of a one-request write
MULTI_CALL_TIMEOUT: Final = timedelta(minutes=2)  # one attempt that makes several requests
# The longest gap between two heartbeats; activities.heartbeats stays quiet for its first quarter.
HEARTBEAT_TIMEOUT: Final = timedelta(seconds=20)


@dataclass(frozen=True)
class AttemptTimeouts:
    start_to_close: timedelta
    heartbeat: timedelta | None = None


ONE_REQUEST: Final = AttemptTimeouts(SINGLE_CALL_TIMEOUT)
SEVERAL_REQUESTS: Final = AttemptTimeouts(MULTI_CALL_TIMEOUT, HEARTBEAT_TIMEOUT)

# --- a booking the caller waits on --------------------------------------------------------------
# It runs first as a local activity (Temporal's "early return" pattern): the result comes back in
# the workflow task that accepts the update, one round trip to the server instead of three
# (accept, the activity's task, its result in a second workflow task), and it never waits for an
# activity slot behind the post-call backlog. Its retries are quick, inside a short budget; a
# booking that does not finish in it goes on as a normal activity at in-call priority. Follow-ups
# started before this replay without it.
IN_CALL_LOCAL_BOOKING_PATCH: Final = "in-call-booking-runs-local-first"
IN_CALL_LOCAL_ATTEMPT_TIMEOUT: Final = timedelta(seconds=8)  # three requests, one may be slow
IN_CALL_LOCAL_BUDGET: Final = timedelta(seconds=10)  # beyond the booking wait: no longer urgent
IN_CALL_LOCAL_RETRY_POLICY: Final = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=RETRY_BACKOFF,
    maximum_interval=timedelta(seconds=1),
    # Attempts start 0, 0.2, 0.6 and 1.4 s in: inside the caller's wait when the vendor is quick.
    # A bound of their own: with unlimited attempts the SDK (1.35) retried a local activity past
    # its schedule-to-close (59 attempts in 60 s, measured by the fallback test).
    maximum_attempts=4,
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)


class Fact(StrEnum):
    """What a step may need before it runs. A missing fact settles the step without running it."""

    PERSON = "person"  # whom the call was with: the outcome's trialist, or the booking's guest
    OUTCOME = "outcome"  # call_ended arrived
    LEAD = "lead"  # the Salesforce Lead's id (upsert_salesforce_lead)
    CONTACT = "contact"  # the HubSpot contact's id (upsert_hubspot_contact)
    MEETING = "meeting"  # a booked meeting (book_meeting)
    BOOKING_SETTLED = "booking_settled"  # the booking is settled, with or without a meeting
    OWED = "owed"  # a booking promised to the caller that could not be kept


@dataclass(frozen=True, kw_only=True)
class Known:
    """What the follow-up knows when a step's prerequisites are met: its input is built from it."""

    call_id: str
    trialist: Trialist | None
    outcome: CallOutcome | None
    outcome_missing: bool
    lead_id: str | None = None
    contact_id: str | None = None
    meeting: MeetingRecord | None = None
    owed: OwedReply | None = None
    now: datetime

    @property
    def signals(self) -> QualificationSignals:
        return self.outcome.signals if self.outcome is not None else QualificationSignals()


@dataclass(frozen=True)
class NotNeeded:
    """A builder's answer when the step has nothing to do, with the reason an operator reads."""

    reason: str


Activity = MethodAsyncSingleParam[FollowUpActivities, Any, ActivityOutput]
InputBuilder = Callable[[Known], object]  # the activity's input, or NotNeeded


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """One step: its activity, what it waits for (in order), how its input is built."""

    step: FollowUpStep
    activity: Activity
    needs: tuple[Fact, ...]
    # None: the booking rules settle the step (it may have started during the call).
    build: InputBuilder | None
    timeouts: AttemptTimeouts


# --- input builders: each step gets what it needs, built from what is known -------------------


def _person(known: Known) -> UpsertPersonInput:
    assert known.trialist is not None
    return UpsertPersonInput(
        call_id=known.call_id, person=CrmPerson.of(known.trialist), signals=known.signals
    )


def _log_call_salesforce(known: Known) -> LogCallSalesforceInput:
    assert known.outcome is not None and known.lead_id is not None
    return LogCallSalesforceInput(
        call_id=known.call_id, lead_id=known.lead_id, call=CallRecord.of(known.outcome)
    )


def _log_call_hubspot(known: Known) -> LogCallHubSpotInput:
    assert known.outcome is not None and known.contact_id is not None
    return LogCallHubSpotInput(
        call_id=known.call_id,
        contact_id=known.contact_id,
        call=CallRecord.of(known.outcome),
        to_number=known.outcome.trialist.phone,
    )


def _record_meeting_salesforce(known: Known) -> RecordMeetingSalesforceInput:
    assert known.meeting is not None and known.lead_id is not None
    return RecordMeetingSalesforceInput(
        call_id=known.call_id, lead_id=known.lead_id, meeting=known.meeting
    )


def _record_meeting_hubspot(known: Known) -> RecordMeetingHubSpotInput:
    assert known.meeting is not None and known.contact_id is not None
    return RecordMeetingHubSpotInput(
        call_id=known.call_id, contact_id=known.contact_id, meeting=known.meeting
    )


def _track_analytics(known: Known) -> TrackAnalyticsInput | NotNeeded:
    # Waits for the booking to settle, so the events say whether a meeting came of the call.
    if known.outcome is None and known.meeting is None:
        return NotNeeded("no call outcome and no meeting to report")
    assert known.trialist is not None
    return TrackAnalyticsInput(
        call_id=known.call_id,
        user_id=known.trialist.trial_account_id,
        call=CallFacts.of(known.outcome) if known.outcome is not None else None,
        outcome_missing=known.outcome_missing,
        meeting=known.meeting,
        tracked_at=known.outcome.ended_at if known.outcome is not None else known.now,
    )


def _owe_reply_salesforce(known: Known) -> OweReplySalesforceInput:
    assert known.owed is not None and known.lead_id is not None
    return OweReplySalesforceInput(call_id=known.call_id, lead_id=known.lead_id, owed=known.owed)


def _owe_reply_hubspot(known: Known) -> OweReplyHubSpotInput:
    assert known.owed is not None and known.contact_id is not None
    return OweReplyHubSpotInput(call_id=known.call_id, contact_id=known.contact_id, owed=known.owed)


def lead_id(output: ActivityOutput) -> str:
    assert isinstance(output, UpsertSalesforceLeadOutput)
    return output.lead_id


def contact_id(output: ActivityOutput) -> str:
    assert isinstance(output, UpsertHubSpotContactOutput)
    return output.contact_id


STEP_GRAPH: Final[tuple[StepSpec, ...]] = (
    StepSpec(
        step=FollowUpStep.UPSERT_SALESFORCE_LEAD,
        activity=FollowUpActivities.upsert_salesforce_lead,
        needs=(Fact.PERSON,),
        build=_person,
        timeouts=ONE_REQUEST,
    ),
    StepSpec(
        step=FollowUpStep.UPSERT_HUBSPOT_CONTACT,
        activity=FollowUpActivities.upsert_hubspot_contact,
        needs=(Fact.PERSON,),
        build=_person,
        timeouts=ONE_REQUEST,
    ),
    StepSpec(
        step=FollowUpStep.BOOK_MEETING,
        activity=FollowUpActivities.book_meeting,
        needs=(),
        build=None,
        timeouts=SEVERAL_REQUESTS,
    ),
    StepSpec(
        step=FollowUpStep.LOG_CALL_SALESFORCE,
        activity=FollowUpActivities.log_call_salesforce,
        needs=(Fact.OUTCOME, Fact.LEAD),
        build=_log_call_salesforce,
        timeouts=ONE_REQUEST,
    ),
    StepSpec(
        step=FollowUpStep.LOG_CALL_HUBSPOT,
        activity=FollowUpActivities.log_call_hubspot,
        needs=(Fact.OUTCOME, Fact.CONTACT),
        build=_log_call_hubspot,
        timeouts=SEVERAL_REQUESTS,
    ),
    StepSpec(
        step=FollowUpStep.RECORD_MEETING_SALESFORCE,
        activity=FollowUpActivities.record_meeting_salesforce,
        needs=(Fact.MEETING, Fact.LEAD),
        build=_record_meeting_salesforce,
        timeouts=ONE_REQUEST,
    ),
    StepSpec(
        step=FollowUpStep.RECORD_MEETING_HUBSPOT,
        activity=FollowUpActivities.record_meeting_hubspot,
        needs=(Fact.MEETING, Fact.CONTACT),
        build=_record_meeting_hubspot,
        timeouts=ONE_REQUEST,
    ),
    StepSpec(
        step=FollowUpStep.TRACK_ANALYTICS,
        activity=FollowUpActivities.track_analytics,
        needs=(Fact.PERSON, Fact.BOOKING_SETTLED),
        build=_track_analytics,
        timeouts=SEVERAL_REQUESTS,
    ),
    # Last, so that follow-ups recorded before these steps existed replay unchanged.
    StepSpec(
        step=FollowUpStep.OWE_REPLY_SALESFORCE,
        activity=FollowUpActivities.owe_reply_salesforce,
        needs=(Fact.OWED, Fact.LEAD),
        build=_owe_reply_salesforce,
        timeouts=ONE_REQUEST,
    ),
    StepSpec(
        step=FollowUpStep.OWE_REPLY_HUBSPOT,
        activity=FollowUpActivities.owe_reply_hubspot,
        needs=(Fact.OWED, Fact.CONTACT),
        build=_owe_reply_hubspot,
        timeouts=ONE_REQUEST,
    ),
)

SPEC_BY_STEP: Final = {spec.step: spec for spec in STEP_GRAPH}
# Which step's output a fact comes from, and how to read it.
FACT_SOURCES: Final[dict[Fact, tuple[FollowUpStep, Callable[[ActivityOutput], str]]]] = {
    Fact.LEAD: (FollowUpStep.UPSERT_SALESFORCE_LEAD, lead_id),
    Fact.CONTACT: (FollowUpStep.UPSERT_HUBSPOT_CONTACT, contact_id),
}
