"""The follow-up activities: thin, idempotent vendor writes that Temporal retries and times out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from temporalio import activity

from activities.errors import current_attempt, vendor_application_error, vendor_failures
from activities.heartbeats import AttemptHeartbeats
from contracts.activities import (
    BookMeetingInput,
    BookMeetingOutput,
    CallRecord,
    LogCallHubSpotInput,
    LogCallHubSpotOutput,
    LogCallSalesforceInput,
    LogCallSalesforceOutput,
    MeetingRecord,
    OwedReply,
    OweReplyHubSpotInput,
    OweReplyOutput,
    OweReplySalesforceInput,
    RecordMeetingHubSpotInput,
    RecordMeetingHubSpotOutput,
    RecordMeetingSalesforceInput,
    RecordMeetingSalesforceOutput,
    TrackAnalyticsInput,
    TrackAnalyticsOutput,
    UpsertHubSpotContactOutput,
    UpsertPersonInput,
    UpsertSalesforceLeadOutput,
)
from contracts.models import (
    BookingRequest,
    BookingResult,
    BookingStatus,
    EndedReason,
    FollowUpStep,
    Trialist,
)
from integrations.amplitude import AmplitudeEvent, insert_id_for
from integrations.chilipiper import ChiliPiperGuest, ChiliPiperMeeting, MeetingStatus
from integrations.errors import AmbiguousOutcomeError, PermanentError, VendorError
from integrations.hubspot import (
    NOTE_BODY_MAX,
    CallStatus,
    HubSpotCall,
    HubSpotContact,
    HubSpotMeeting,
    HubSpotNote,
)
from integrations.salesforce import (
    TEXT_AREA_MAX,
    SalesforceCallTask,
    SalesforceLead,
    SalesforceMeetingEvent,
    SalesforceReplyTask,
)

if TYPE_CHECKING:  # only the type: a worker builds the clients and injects them
    from integrations.clients import VendorClients

logger = logging.getLogger(__name__)

MAX_ALTERNATIVES: Final = 3
SLOT_TAKEN_STATUS: Final = 409  # Chili Piper answers a taken slot with 409 SlotNotAvailable
# Meetings of the guest that start within this window of the slot count as "this booking".
RECONCILE_WINDOW: Final = timedelta(minutes=1)
# A booking the caller waits on (the in-call local attempt): when the booking request has not
# answered this long after it was sent (seconds), look for the meeting while it goes on. A vendor
# that commits and is slow to say so (the classic ambiguous write) is then confirmed inside the
# agent's 2 s booking wait, where the request's own read timeout (5 s) would end after it. The
# request is never cut short for this: one that has not committed yet goes on, so no second
# booking can race it. Two looks bound the extra reads to two.
IN_CALL_LOOKS_AFTER_SECONDS: Final = (0.75, 1.25)

CALL_COMPLETED_EVENT: Final = "trial_call_completed"
CALL_OUTCOME_MISSING_EVENT: Final = "trial_call_outcome_missing"
MEETING_BOOKED_EVENT: Final = "trial_meeting_booked"

CALL_SUBJECT: Final = "Voice agent call: PandaDoc trial"
REPLY_OWED_SUBJECT: Final = "Reply owed: the caller's meeting request could not be booked"
SALESFORCE_TEXT_MAX: Final = TEXT_AREA_MAX
HUBSPOT_NOTE_MAX: Final = NOTE_BODY_MAX
SALESFORCE_FIRST_NAME_MAX: Final = 40  # Lead.FirstName's length
SALESFORCE_LAST_NAME_MAX: Final = 80  # Lead.LastName's length
# HubSpot's call status: the call connected unless the agent itself failed.
HUBSPOT_CALL_STATUS: Final[dict[EndedReason, CallStatus]] = {
    EndedReason.COMPLETED: "COMPLETED",
    EndedReason.CALLER_HUNG_UP: "COMPLETED",
    EndedReason.DROPPED: "COMPLETED",
    EndedReason.AGENT_ERROR: "FAILED",
    EndedReason.AGENT_LOST: "FAILED",
}


# The follow-up's activities by method name: what a worker registers (stand-ins too, in bench/).
FOLLOW_UP_ACTIVITY_METHODS: Final = (
    "upsert_salesforce_lead",
    "upsert_hubspot_contact",
    "log_call_salesforce",
    "log_call_hubspot",
    "book_meeting",
    "record_meeting_salesforce",
    "record_meeting_hubspot",
    "track_analytics",
    "owe_reply_salesforce",
    "owe_reply_hubspot",
)


class FollowUpActivities:
    """Activities of CallFollowUpWorkflow over injected vendor clients; registered bound."""

    def __init__(self, *, clients: VendorClients) -> None:
        self._clients = clients

    def activity_methods(self) -> list[Callable[..., Any]]:
        """Every activity, bound to these clients, for `Worker(activities=...)`."""
        return [getattr(self, name) for name in FOLLOW_UP_ACTIVITY_METHODS]

    # --- CRM --------------------------------------------------------------------------------------

    @activity.defn(name=FollowUpStep.UPSERT_SALESFORCE_LEAD.value)
    async def upsert_salesforce_lead(self, input: UpsertPersonInput) -> UpsertSalesforceLeadOutput:
        """Create or update the Lead, keyed by the trial account id (an external id)."""
        with vendor_failures():
            lead = await self._clients.salesforce.upsert_lead(salesforce_lead(input))
        logger.info("call %s: salesforce lead upserted", input.call_id)
        return UpsertSalesforceLeadOutput(lead_id=lead.id, attempt=current_attempt())

    @activity.defn(name=FollowUpStep.UPSERT_HUBSPOT_CONTACT.value)
    async def upsert_hubspot_contact(self, input: UpsertPersonInput) -> UpsertHubSpotContactOutput:
        """Create or update the contact, keyed by email."""
        with vendor_failures():
            contact = await self._clients.hubspot.upsert_contact(hubspot_contact(input))
        logger.info("call %s: hubspot contact upserted", input.call_id)
        return UpsertHubSpotContactOutput(contact_id=contact.id, attempt=current_attempt())

    @activity.defn(name=FollowUpStep.LOG_CALL_SALESFORCE.value)
    async def log_call_salesforce(self, input: LogCallSalesforceInput) -> LogCallSalesforceOutput:
        """A completed call Task on the Lead, keyed by the call id."""
        call = input.call
        with vendor_failures():
            task = SalesforceCallTask(
                call_id=input.call_id,
                lead_id=input.lead_id,
                subject=CALL_SUBJECT,
                description=call_log_text(input.call_id, call, limit=SALESFORCE_TEXT_MAX),
                started_at=call.started_at,
                duration_seconds=call.duration_seconds,
                disposition=call.ended_reason.value,
            )
            result = await self._clients.salesforce.upsert_call_task(task)
        logger.info("call %s: salesforce call task written", input.call_id)
        return LogCallSalesforceOutput(task_id=result.id, attempt=current_attempt())

    @activity.defn(name=FollowUpStep.LOG_CALL_HUBSPOT.value)
    async def log_call_hubspot(self, input: LogCallHubSpotInput) -> LogCallHubSpotOutput:
        """A call engagement and a note with summary, notes and signals, both keyed by call id."""
        record = input.call
        hubspot = self._clients.hubspot
        heartbeats = AttemptHeartbeats()
        with vendor_failures():
            call = HubSpotCall(
                call_id=input.call_id,
                title=CALL_SUBJECT,
                body=record.summary or None,
                started_at=record.started_at,
                duration_seconds=record.duration_seconds,
                status=HUBSPOT_CALL_STATUS[record.ended_reason],
                to_number=input.to_number,
            )
            note = HubSpotNote(
                call_id=input.call_id,
                body=call_log_text(input.call_id, record, limit=HUBSPOT_NOTE_MAX),
                timestamp=record.ended_at,
            )
            # Only a retry can find its own earlier write; a first attempt skips the searches.
            retry = current_attempt() > 1
            call_ref = await hubspot.create_call(call, contact_id=input.contact_id, may_exist=retry)
            heartbeats.beat("call logged")
            note_ref = await hubspot.create_note(note, contact_id=input.contact_id, may_exist=retry)
        logger.info("call %s: hubspot call and note written", input.call_id)
        return LogCallHubSpotOutput(
            call_engagement_id=call_ref.id, note_id=note_ref.id, attempt=current_attempt()
        )

    @activity.defn(name=FollowUpStep.RECORD_MEETING_SALESFORCE.value)
    async def record_meeting_salesforce(
        self, input: RecordMeetingSalesforceInput
    ) -> RecordMeetingSalesforceOutput:
        """An Event on the Lead for the booked meeting, keyed by the meeting id."""
        meeting = input.meeting
        with vendor_failures():
            event = SalesforceMeetingEvent(
                meeting_id=meeting.meeting_id,
                lead_id=input.lead_id,
                start=meeting.start,
                end=meeting.end,
                description=meeting_text(input.call_id, meeting),
            )
            result = await self._clients.salesforce.upsert_meeting_event(event)
        logger.info("call %s: salesforce meeting event written", input.call_id)
        return RecordMeetingSalesforceOutput(event_id=result.id, attempt=current_attempt())

    @activity.defn(name=FollowUpStep.RECORD_MEETING_HUBSPOT.value)
    async def record_meeting_hubspot(
        self, input: RecordMeetingHubSpotInput
    ) -> RecordMeetingHubSpotOutput:
        """A meeting engagement on the contact, once per call (HubSpot's voice_call_id)."""
        meeting = input.meeting
        with vendor_failures():
            engagement = HubSpotMeeting(
                call_id=input.call_id,
                meeting_id=meeting.meeting_id,
                body=meeting_text(input.call_id, meeting),
                start=meeting.start,
                end=meeting.end,
            )
            ref = await self._clients.hubspot.create_meeting(
                engagement, contact_id=input.contact_id, may_exist=current_attempt() > 1
            )
        logger.info("call %s: hubspot meeting written", input.call_id)
        return RecordMeetingHubSpotOutput(meeting_engagement_id=ref.id, attempt=current_attempt())

    # --- a promise that could not be kept ---------------------------------------------------------

    @activity.defn(name=FollowUpStep.OWE_REPLY_SALESFORCE.value)
    async def owe_reply_salesforce(self, input: OweReplySalesforceInput) -> OweReplyOutput:
        """An open, high-priority Task for the rep on the Lead: reply to the caller."""
        with vendor_failures():
            task = SalesforceReplyTask(
                call_id=input.call_id,
                lead_id=input.lead_id,
                subject=REPLY_OWED_SUBJECT,
                description=reply_owed_text(input.call_id, input.owed),
                due=input.owed.requested_slot.date(),
            )
            result = await self._clients.salesforce.upsert_reply_task(task)
        logger.info("call %s: salesforce reply-owed task written", input.call_id)
        return OweReplyOutput(record_id=result.id, attempt=current_attempt())

    @activity.defn(name=FollowUpStep.OWE_REPLY_HUBSPOT.value)
    async def owe_reply_hubspot(self, input: OweReplyHubSpotInput) -> OweReplyOutput:
        """A note on the contact, once per call: the caller is owed a reply."""
        with vendor_failures():
            note = HubSpotNote(
                call_id=input.call_id,
                body=f"{REPLY_OWED_SUBJECT}. {reply_owed_text(input.call_id, input.owed)}",
                timestamp=input.owed.requested_slot,
                purpose="reply_owed",
            )
            ref = await self._clients.hubspot.create_note(
                note, contact_id=input.contact_id, may_exist=current_attempt() > 1
            )
        logger.info("call %s: hubspot reply-owed note written", input.call_id)
        return OweReplyOutput(record_id=ref.id, attempt=current_attempt())

    # --- booking ----------------------------------------------------------------------------------

    @activity.defn(name=FollowUpStep.BOOK_MEETING.value)
    async def book_meeting(self, input: BookMeetingInput) -> BookMeetingOutput:
        """Book the slot, reconciling first: an earlier attempt may have booked it already.

        Every attempt lists the guest's meetings at the slot before it books, so a retry after
        an ambiguous timeout finds the meeting that attempt made instead of booking twice.
        """
        request = input.request
        attempt = current_attempt()
        chilipiper = self._clients.chilipiper
        heartbeats = AttemptHeartbeats()
        with vendor_failures():
            guest = chilipiper_guest(request.guest)
            existing = await self._meeting_at_slot(request)
            if existing is not None:
                logger.info("call %s: booking reconciled (attempt %d)", input.call_id, attempt)
                return BookMeetingOutput(
                    result=_booked(request, existing), reconciled=True, attempt=attempt
                )
            heartbeats.beat("finding free slots")
            free = await chilipiper.find_free_slots(guest, timezone=guest.timezone)
            if request.slot_start not in free.slots:
                logger.info("call %s: requested slot unavailable", input.call_id)
                return BookMeetingOutput(result=_unavailable(request, free.slots), attempt=attempt)
            heartbeats.beat("booking")
            booking = asyncio.create_task(
                chilipiper.book_slot(
                    route_id=free.route_id, slot_start=request.slot_start, guest=guest
                )
            )
            try:
                # The workflow runs a booking as a local activity only while the caller waits.
                if activity.info().is_local:
                    found = await self._look_while_booking(booking, request)
                    if found is not None:
                        logger.info("call %s: slow booking found committed", input.call_id)
                        return BookMeetingOutput(
                            result=_booked(request, found), reconciled=True, attempt=attempt
                        )
                meeting = await booking
            except AmbiguousOutcomeError as error:
                # Safe to retry only because the next attempt reconciles before booking.
                logger.warning("call %s: booking outcome unknown; will reconcile", input.call_id)
                raise vendor_application_error(error, attempt=attempt, retryable=True) from error
            except PermanentError as error:
                if error.status_code != SLOT_TAKEN_STATUS:
                    raise
                # Taken since the slot list was read, perhaps by our own late-committing attempt.
                existing = await self._meeting_at_slot(request)
                if existing is not None:
                    return BookMeetingOutput(
                        result=_booked(request, existing), reconciled=True, attempt=attempt
                    )
                others = [slot for slot in free.slots if slot != request.slot_start]
                return BookMeetingOutput(result=_unavailable(request, others), attempt=attempt)
            finally:
                booking.cancel()  # a no-op once it answered; else the meeting was found made
        logger.info("call %s: meeting booked (attempt %d)", input.call_id, attempt)
        return BookMeetingOutput(result=_booked(request, meeting), attempt=attempt)

    async def _look_while_booking(
        self, booking: asyncio.Task[ChiliPiperMeeting], request: BookingRequest
    ) -> ChiliPiperMeeting | None:
        """The meeting, if a look at the guest's meetings finds it made before `booking` answers.

        A hand-written hedge (asyncio.wait): no library does "read while a write is in flight".
        A failed look is only a missed chance; the booking's own answer decides then.
        """
        waited = 0.0
        for look_at in IN_CALL_LOOKS_AFTER_SECONDS:
            await asyncio.wait({booking}, timeout=look_at - waited)
            waited = look_at
            if booking.done():
                return None
            with contextlib.suppress(VendorError):
                found = await self._meeting_at_slot(request)
                if found is not None and not booking.done():
                    return found
        return None

    async def _meeting_at_slot(self, request: BookingRequest) -> ChiliPiperMeeting | None:
        meetings = await self._clients.chilipiper.list_guest_meetings(
            str(request.guest.email),
            since=request.slot_start - RECONCILE_WINDOW,
            until=request.slot_start + RECONCILE_WINDOW,
        )
        return next(
            (
                meeting
                for meeting in meetings
                if meeting.status is MeetingStatus.ACTIVE and meeting.start == request.slot_start
            ),
            None,
        )

    # --- analytics --------------------------------------------------------------------------------

    @activity.defn(name=FollowUpStep.TRACK_ANALYTICS.value)
    async def track_analytics(self, input: TrackAnalyticsInput) -> TrackAnalyticsOutput:
        """Send the call's events; insert ids from the call id make every retry a no-op.

        No heartbeat: one request, or a few when a 413 splits the batch. The step's heartbeat
        timeout then bounds how long the attempt may go without finishing.
        """
        with vendor_failures():
            events = analytics_events(input)
            result = await self._clients.amplitude.track(events)
        logger.info("call %s: %d analytics events tracked", input.call_id, len(events))
        return TrackAnalyticsOutput(
            events_sent=len(events),
            events_ingested=result.events_ingested,
            attempt=current_attempt(),
        )


def salesforce_lead(input: UpsertPersonInput) -> SalesforceLead:
    person = input.person
    return SalesforceLead(
        trial_account_id=person.trial_account_id,
        first_name=person.first_name[:SALESFORCE_FIRST_NAME_MAX],
        last_name=person.last_name[:SALESFORCE_LAST_NAME_MAX],
        email=person.email,
        company=person.company,
        phone=person.phone,
        qualification_signals=input.signals.filled(),
    )


def hubspot_contact(input: UpsertPersonInput) -> HubSpotContact:
    person = input.person
    return HubSpotContact(
        email=person.email,
        first_name=person.first_name,
        last_name=person.last_name,
        company=person.company,
        phone=person.phone,
        trial_account_id=person.trial_account_id,
        qualification_signals=input.signals.filled(),
    )


def call_log_text(call_id: str, call: CallRecord, *, limit: int) -> str:
    """What a rep reads about the call: summary, notes and qualification signals.

    Every caller-given value is one line (the contracts fold newlines), so none can pose as a
    line or a section of this record.
    """
    lines = [
        f"Voice agent call {call_id}: {call.ended_reason.value}, "
        f"{call.duration_seconds // 60} min {call.duration_seconds % 60} s."
    ]
    if call.ended_reason is EndedReason.AGENT_LOST:
        lines += [
            "",
            "The voice agent lost this call before it ended. What follows is what it had "
            f"recorded by {call.ended_at.isoformat()}, its last checkpoint.",
        ]
    if call.summary:
        lines += ["", "Summary:", call.summary]
    signals = call.signals.filled()
    if signals:
        lines += ["", "Qualification signals:", *(f"- {k}: {v}" for k, v in signals.items())]
    if call.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in call.notes)]
    if call.requested_slot is not None:
        lines += ["", f"Meeting requested for {call.requested_slot.isoformat()}."]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reply_owed_text(call_id: str, owed: OwedReply) -> str:
    """What the rep reads: what was promised, why it could not be kept, what is free nearby."""
    zone = ZoneInfo(owed.timezone)
    asked = owed.requested_slot.astimezone(zone).strftime("%A %B %d at %H:%M %Z")
    free = ", ".join(slot.astimezone(zone).strftime("%a %b %d %H:%M") for slot in owed.alternatives)
    return (
        f"During voice agent call {call_id} the caller asked for a meeting on {asked} and was "
        f"told a calendar invite would follow by email. It was not booked: {owed.reason}. "
        "Please reply to them with another time"
        + (f"; free times close to it: {free}." if free else ".")
    )


def meeting_text(call_id: str, meeting: MeetingRecord) -> str:
    return (
        f"Booked by the voice agent during call {call_id} "
        f"(Chili Piper meeting {meeting.meeting_id})."
    )


def chilipiper_guest(trialist: Trialist) -> ChiliPiperGuest:
    return ChiliPiperGuest(
        email=trialist.email,
        first_name=trialist.first_name,
        last_name=trialist.last_name,
        company=trialist.company,
        phone=trialist.phone,
        timezone=trialist.timezone,
    )


def analytics_events(input: TrackAnalyticsInput) -> list[AmplitudeEvent]:
    """The events of one call, each with an insert id derived from the call id."""
    events: list[AmplitudeEvent] = []
    call = input.call
    if call is not None:
        properties: dict[str, Any] = {
            "call_id": input.call_id,
            "ended_reason": call.ended_reason.value,
            "duration_seconds": call.duration_seconds,
            "meeting_requested": call.meeting_requested,
            "meeting_booked": input.meeting is not None,
            "notes": call.notes_count,
            **{f"signal_{name}": value for name, value in call.signals.filled().items()},
        }
        events.append(_event(input, CALL_COMPLETED_EVENT, call.ended_at, properties))
    elif input.outcome_missing:
        properties = {"call_id": input.call_id, "meeting_booked": input.meeting is not None}
        events.append(_event(input, CALL_OUTCOME_MISSING_EVENT, input.tracked_at, properties))
    if input.meeting is not None:
        events.append(_event(input, MEETING_BOOKED_EVENT, input.tracked_at, _meeting_props(input)))
    return events


def _meeting_props(input: TrackAnalyticsInput) -> dict[str, Any]:
    meeting = input.meeting
    assert meeting is not None
    return {
        "call_id": input.call_id,
        "meeting_id": meeting.meeting_id,
        "meeting_start": meeting.start.isoformat(),
        "duration_minutes": meeting.duration_minutes,
    }


def _event(
    input: TrackAnalyticsInput, event_type: str, time: datetime, properties: dict[str, Any]
) -> AmplitudeEvent:
    return AmplitudeEvent(
        user_id=input.user_id,
        event_type=event_type,
        time=time,
        insert_id=insert_id_for(input.call_id, event_type),
        event_properties=properties,
    )


def _booked(request: BookingRequest, meeting: ChiliPiperMeeting) -> BookingResult:
    return BookingResult(
        status=BookingStatus.BOOKED, meeting_id=meeting.meeting_id, slot_start=request.slot_start
    )


def _unavailable(request: BookingRequest, free: list[datetime]) -> BookingResult:
    """Unavailable, with the free slots nearest the requested one (at most three)."""
    nearest = sorted(
        free, key=lambda slot: (abs((slot - request.slot_start).total_seconds()), slot)
    )[:MAX_ALTERNATIVES]
    return BookingResult(
        status=BookingStatus.UNAVAILABLE,
        slot_start=request.slot_start,
        alternatives=sorted(nearest),
    )
