"""The follow-up activities against the sandbox over loopback HTTP, in Temporal's activity env."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.follow_up import (
    CALL_COMPLETED_EVENT,
    CALL_OUTCOME_MISSING_EVENT,
    MEETING_BOOKED_EVENT,
    FollowUpActivities,
    analytics_events,
)
from contracts import BookingStatus, CallOutcome, FollowUpStep
from contracts.activities import (
    BookMeetingInput,
    BookMeetingOutput,
    LogCallHubSpotInput,
    LogCallSalesforceInput,
    MeetingRecord,
    RecordMeetingHubSpotInput,
    RecordMeetingSalesforceInput,
    TrackAnalyticsInput,
    UpsertPersonInput,
)
from integrations.amplitude import AmplitudeEvent
from integrations.clients import VendorClients
from tests.pinned_time import REP_ZONE, PinnedInstant
from tests.servers import SandboxServer
from tests.workflows.scenario import (
    ScenarioCall,
    book_for_someone_else,
    crm_records,
    open_vendor_clients,
    sandbox_rows,
)

PRODUCTION_READ_TIMEOUT = 5.0  # the default of HTTP_READ_TIMEOUT_SECONDS


@pytest.fixture
def activities(clients: VendorClients) -> FollowUpActivities:
    return FollowUpActivities(clients=clients)


def person_input(call: ScenarioCall, outcome: CallOutcome) -> UpsertPersonInput:
    return UpsertPersonInput(call_id=call.call_id, trialist=call.trialist, signals=outcome.signals)


def meeting_ids(sandbox: SandboxServer, call: ScenarioCall) -> list[object]:
    """The ids of the sandbox's meetings with the call's trialist as the guest."""
    rows = sandbox_rows(sandbox.url, "chilipiper_meetings", guest_email=call.trialist.email)
    return [row["meeting_id"] for row in rows]


def personal_data(call: ScenarioCall) -> tuple[str, ...]:
    """What no log line or analytics event may carry: who the call was with."""
    return (call.trialist.email, call.trialist.name, str(call.trialist.phone))


def test_every_step_has_one_registered_activity(activities: FollowUpActivities) -> None:
    names = [method.__temporal_activity_definition.name for method in activities.activity_methods()]  # type: ignore[attr-defined]
    assert sorted(names) == sorted(step.value for step in FollowUpStep)


async def test_booking_books_once_and_a_second_attempt_reconciles(
    sandbox: SandboxServer,
    clients: VendorClients,
    activities: FollowUpActivities,
    call: ScenarioCall,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arg = BookMeetingInput(call_id=call.call_id, request=await call.first_free_booking(clients))
    env = ActivityEnvironment()
    heartbeats: list[object] = []
    env.on_heartbeat = lambda *details: heartbeats.extend(details)

    with caplog.at_level(logging.DEBUG):
        first = await env.run(activities.book_meeting, arg)
        second = await env.run(activities.book_meeting, arg)

    assert first.result.status is BookingStatus.BOOKED
    assert first.reconciled is False
    assert second.result == first.result
    assert second.reconciled is True
    assert heartbeats  # the long booking attempt reports progress
    assert meeting_ids(sandbox, call) == [first.result.meeting_id]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert call.call_id in logged
    for personal in personal_data(call):
        assert personal not in logged


def nearest(free: list[datetime], taken: datetime, count: int = 3) -> list[datetime]:
    """The oracle: the free slots closest in time to the taken one, ties to the earlier."""
    others = [slot for slot in free if slot != taken]
    return sorted(sorted(others, key=lambda slot: (abs(slot - taken), slot))[:count])


@pytest.mark.parametrize("which", ["first", "sixth", "last_of_first_day"])
async def test_a_taken_slot_is_unavailable_with_the_three_nearest_alternatives(
    pinned_clients: VendorClients, calendar_instant: PinnedInstant, call: ScenarioCall, which: str
) -> None:
    # Nearest means nearest in time, across a day's end or a weekend when that is closer: the
    # earlier "within an hour" expectation held only at some hours (busy meetings, day ends).
    clients = pinned_clients
    activities = FollowUpActivities(clients=clients)
    slots = await call.free_slots(clients)
    first_day = slots[0].astimezone(REP_ZONE).date()
    taken = {
        "first": slots[0],
        "sixth": slots[5],
        "last_of_first_day": [s for s in slots if s.astimezone(REP_ZONE).date() == first_day][-1],
    }[which]
    await book_for_someone_else(clients, taken)

    output = await ActivityEnvironment().run(
        activities.book_meeting,
        BookMeetingInput(call_id=call.call_id, request=call.booking(taken)),
    )

    result = output.result
    assert result.status is BookingStatus.UNAVAILABLE
    assert result.meeting_id is None
    assert result.alternatives == nearest(slots, taken)
    assert all(alternative > calendar_instant.at for alternative in result.alternatives)


async def test_an_ambiguous_booking_is_retryable_and_the_retry_finds_the_meeting(
    sandbox: SandboxServer,
    clients: VendorClients,
    activities: FollowUpActivities,
    call: ScenarioCall,
) -> None:
    arg = BookMeetingInput(call_id=call.call_id, request=await call.first_free_booking(clients))
    # Commits, then holds the reply past the client's 1 s read timeout.
    sandbox.add_fault(
        vendor="chilipiper", operation="schedule_simple", after_commit_latency_ms=2500, times=1
    )

    with pytest.raises(ApplicationError) as ambiguous:
        await ActivityEnvironment().run(activities.book_meeting, arg)
    retried = await ActivityEnvironment().run(activities.book_meeting, arg)

    assert ambiguous.value.type == "ambiguous_outcome"
    assert ambiguous.value.non_retryable is False  # safe: every attempt reconciles first
    assert retried.reconciled is True
    assert meeting_ids(sandbox, call) == [retried.result.meeting_id]


def while_the_caller_waits() -> ActivityEnvironment:
    """The activity as the workflow runs a booking the caller waits on: a local activity."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, is_local=True)
    return env


async def book_while_the_caller_waits(
    sandbox: SandboxServer, call: ScenarioCall, **fault: Any
) -> tuple[BookMeetingOutput, float]:
    """The in-call booking of the call's first free slot, with production's read timeout and
    one `fault` on Chili Piper's booking request; its output and how long it took (s)."""
    async with open_vendor_clients(sandbox, read_timeout=PRODUCTION_READ_TIMEOUT) as clients:
        activities = FollowUpActivities(clients=clients)
        arg = BookMeetingInput(call_id=call.call_id, request=await call.first_free_booking(clients))
        sandbox.add_fault(vendor="chilipiper", operation="schedule_simple", times=1, **fault)
        started = time.monotonic()
        booked = await while_the_caller_waits().run(activities.book_meeting, arg)
        return booked, time.monotonic() - started


async def test_an_in_call_booking_answered_late_is_found_made_before_the_answer(
    sandbox: SandboxServer, call: ScenarioCall
) -> None:
    # Commits, then holds the reply 4 s, inside production's 5 s read timeout.
    booked, took = await book_while_the_caller_waits(sandbox, call, after_commit_latency_ms=4000)
    assert booked.reconciled is True and booked.attempt == 1
    assert booked.result.status is BookingStatus.BOOKED
    assert took < 4.0  # it did not wait for the vendor's answer
    assert meeting_ids(sandbox, call) == [booked.result.meeting_id]


async def test_an_in_call_booking_slow_before_it_commits_is_waited_for_not_booked_twice(
    sandbox: SandboxServer, call: ScenarioCall
) -> None:
    # The vendor takes 1.6 s before it makes the meeting: both looks find nothing, and the
    # booking's own answer decides. Nothing is booked a second time.
    booked, _ = await book_while_the_caller_waits(sandbox, call, latency_ms=1600)
    assert booked.reconciled is False
    assert booked.result.status is BookingStatus.BOOKED
    assert meeting_ids(sandbox, call) == [booked.result.meeting_id]


async def test_analytics_insert_ids_come_from_the_call_and_a_resend_is_deduplicated(
    sandbox: SandboxServer, activities: FollowUpActivities, call: ScenarioCall
) -> None:
    call_id, trialist = call.call_id, call.trialist
    outcome = call.outcome()
    meeting = MeetingRecord(meeting_id="m-1", start=outcome.ended_at + timedelta(days=1))
    arg = TrackAnalyticsInput(
        call_id=call_id,
        user_id=trialist.trial_account_id,
        outcome=outcome,
        meeting=meeting,
        tracked_at=outcome.ended_at,
    )

    first = await ActivityEnvironment().run(activities.track_analytics, arg)
    second = await ActivityEnvironment().run(activities.track_analytics, arg)

    assert first.events_sent == second.events_sent == 2
    rows = sandbox_rows(sandbox.url, "amplitude_events", user_id=trialist.trial_account_id)
    assert sorted(str(row["insert_id"]) for row in rows) == [
        f"{call_id}:{CALL_COMPLETED_EVENT}",
        f"{call_id}:{MEETING_BOOKED_EVENT}",
    ]


def test_analytics_events_carry_signals_but_no_personal_data(call: ScenarioCall) -> None:
    call_id, trialist = call.call_id, call.trialist
    outcome = call.outcome()

    def events_for(**tracked: Any) -> list[AmplitudeEvent]:
        return analytics_events(
            TrackAnalyticsInput(
                call_id=call_id,
                user_id=trialist.trial_account_id,
                tracked_at=outcome.ended_at,
                **tracked,
            )
        )

    with_outcome = events_for(outcome=outcome)
    missing = events_for(outcome_missing=True)

    assert [e.event_type for e in with_outcome] == [CALL_COMPLETED_EVENT]
    properties = with_outcome[0].event_properties
    assert properties["signal_use_case"] == "sales proposals"
    assert properties["duration_seconds"] == 360
    assert [e.event_type for e in missing] == [CALL_OUTCOME_MISSING_EVENT]
    text = str([e.model_dump() for e in with_outcome + missing])
    for personal in personal_data(call):
        assert personal not in text


async def test_crm_writes_are_idempotent_by_external_ids(
    sandbox: SandboxServer, activities: FollowUpActivities, call: ScenarioCall
) -> None:
    call_id, outcome = call.call_id, call.outcome()
    person = person_input(call, outcome)
    meeting = MeetingRecord(meeting_id="meeting-0001", start=outcome.ended_at + timedelta(days=2))
    env = ActivityEnvironment()

    for _ in range(2):
        lead = await env.run(activities.upsert_salesforce_lead, person)
        contact = await env.run(activities.upsert_hubspot_contact, person)
        await env.run(
            activities.log_call_salesforce,
            LogCallSalesforceInput(call_id=call_id, lead_id=lead.lead_id, outcome=outcome),
        )
        await env.run(
            activities.log_call_hubspot,
            LogCallHubSpotInput(call_id=call_id, contact_id=contact.contact_id, outcome=outcome),
        )
        await env.run(
            activities.record_meeting_salesforce,
            RecordMeetingSalesforceInput(call_id=call_id, lead_id=lead.lead_id, meeting=meeting),
        )
        await env.run(
            activities.record_meeting_hubspot,
            RecordMeetingHubSpotInput(
                call_id=call_id, contact_id=contact.contact_id, meeting=meeting
            ),
        )

    records = crm_records(sandbox.url, call_id=call_id, trialist=call.trialist)
    assert records.counts() == records.expected_for_one_call(meeting=True)
    assert records.hubspot_note_mentions(outcome.summary)


def _hubspot_paths(sandbox: SandboxServer, since: int) -> list[tuple[str, int]]:
    rows = sandbox_rows(sandbox.url, "hubspot_requests")[since:]
    return [(str(row["path"]).rsplit("/objects/", 1)[-1], int(str(row["status"]))) for row in rows]


async def test_a_first_attempt_creates_engagements_without_searching_and_a_retry_searches(
    sandbox: SandboxServer,
    activities: FollowUpActivities,
    call: ScenarioCall,
    caplog: pytest.LogCaptureFixture,
) -> None:
    call_id, outcome = call.call_id, call.outcome()
    person = person_input(call, outcome)
    contact = await ActivityEnvironment().run(activities.upsert_hubspot_contact, person)
    arg = LogCallHubSpotInput(call_id=call_id, contact_id=contact.contact_id, outcome=outcome)
    before = len(sandbox_rows(sandbox.url, "hubspot_requests"))

    first = await ActivityEnvironment().run(activities.log_call_hubspot, arg)
    after_first = len(sandbox_rows(sandbox.url, "hubspot_requests"))
    # An operator's retry_step schedules the activity afresh: attempt 1 again, record exists.
    with caplog.at_level(logging.INFO):
        again = await ActivityEnvironment().run(activities.log_call_hubspot, arg)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a 409 is expected
    after_again = len(sandbox_rows(sandbox.url, "hubspot_requests"))
    retry_env = ActivityEnvironment()
    retry_env.info = dataclasses.replace(retry_env.info, attempt=2)
    retried = await retry_env.run(activities.log_call_hubspot, arg)

    assert _hubspot_paths(sandbox, before)[: after_first - before] == [
        ("calls", 201),
        ("notes", 201),
    ]
    # The unique voice_call_id answers the repeated create with 409 naming the record: no copy.
    assert _hubspot_paths(sandbox, after_first)[: after_again - after_first] == [
        ("calls", 409),
        ("notes", 409),
    ]
    assert _hubspot_paths(sandbox, after_again) == [("calls/search", 200), ("notes/search", 200)]
    assert {first.call_engagement_id} == {again.call_engagement_id, retried.call_engagement_id}
    assert {first.note_id} == {again.note_id, retried.note_id}
    records = crm_records(sandbox.url, call_id=call_id, trialist=call.trialist)
    counts = records.counts()
    assert counts["hubspot_calls"] == 1 and counts["hubspot_notes"] == 1
