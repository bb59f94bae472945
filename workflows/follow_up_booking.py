"""The follow-up's booking rules: one booking at a time, and a promise to the caller kept.

A booking made during the call (update book_meeting) or after it (the outcome's requested
meeting) runs as the book_meeting step. When a booking the caller was promised ("the invite will
follow by email") cannot be made, it is moved to the nearest free slot close to the one they
chose, or, failing that, owed: the rep is asked to reply (steps owe_reply_*). Follow-ups started
before this rule existed replay without it (KEEP_PROMISES_PATCH).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Final

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from zoneinfo import ZoneInfo

    from contracts.activities import BookMeetingInput, BookMeetingOutput, MeetingRecord, OwedReply
    from contracts.models import (
        BookingRequest,
        BookingResult,
        BookingStatus,
        FollowUpStep,
        StepState,
    )

from workflows.follow_up_runner import StepRunner
from workflows.follow_up_steps import SPEC_BY_STEP
from workflows.promises import nearest_acceptable

# Gates what follow-ups started before it did not do: move or hand over a promised booking.
KEEP_PROMISES_PATCH: Final = "keep-promised-bookings"


class BookingRules(StepRunner):
    """Booking, reconciled and kept: see the module's docstring."""

    async def _settle_booking(self) -> MeetingRecord | None:
        """The booked meeting; a promised booking that could not be made is kept, or owed."""
        meeting = await self._settle_booking_as_asked()
        promised = self._promised() if meeting is None else None
        if promised is None or not workflow.patched(KEEP_PROMISES_PATCH):
            return meeting
        result = self._booking_result
        free = list(result.alternatives) if result is not None else []
        zone = ZoneInfo(promised.guest.timezone)
        window = timedelta(minutes=self._input.alternative_window_minutes)
        alternative = nearest_acceptable(
            promised.slot_start, free, window=window, zone=zone, now=workflow.now()
        )
        if alternative is not None:
            self._start_booking(promised.model_copy(update={"slot_start": alternative}))
            assert self._booking_task is not None
            await self._booking_task
            meeting = self._booked_meeting()
            if meeting is not None:
                self._promise_note = (
                    f"The caller's slot {promised.slot_start.isoformat()} was taken after the "
                    f"call: booked the nearest free one, {alternative.isoformat()}."
                )
                return meeting
            free = list(self._booking_result.alternatives) if self._booking_result else free
        reason = self._unbookable or "that time was taken before it could be booked"
        if alternative is None and self._unbookable is None:
            reason += f", and nothing within {window.seconds // 60} minutes of it was free"
        self._owed = OwedReply(
            requested_slot=promised.slot_start,
            timezone=promised.guest.timezone,
            alternatives=free[:3],
            reason=reason,
        )
        return None

    def _promised(self) -> BookingRequest | None:
        """The booking the caller was told would follow by email, when it was not made.

        The outcome's requested_meeting without a confirmation is exactly that: the agent drops
        the request when it offers other times instead. A booking skipped by an operator is
        theirs to answer for.
        """
        outcome = self._outcome
        if outcome is not None:
            promised = outcome.requested_meeting if outcome.booking is None else None
        else:
            promised = self._booking_request
        if promised is None or self._steps[FollowUpStep.BOOK_MEETING].state is StepState.SKIPPED:
            return None
        result = self._booking_result
        if result is not None and result.status is BookingStatus.BOOKED:
            return None
        if result is None and self._unbookable is None:
            return None  # not attempted for another reason (nothing requested)
        return promised

    async def _settle_booking_as_asked(self) -> MeetingRecord | None:
        """The booked meeting: from the call's own booking, the outcome, or a booking made now."""
        step = FollowUpStep.BOOK_MEETING
        outcome = self._outcome
        requested = outcome.requested_meeting if outcome is not None else None
        if self._booking_task is not None:
            await self._booking_task
            meeting = self._booked_meeting()
            if meeting is not None or self._booking_result is None:
                return meeting  # booked, or skipped by an operator
            if requested is None or (
                self._booking_request is not None and requested.same_slot(self._booking_request)
            ):
                return None  # the slot was unavailable and the call asked for nothing else
        elif outcome is not None and outcome.booking is not None:
            self._not_needed(
                step, f"confirmed during the call (meeting {outcome.booking.meeting_id})"
            )
            return MeetingRecord.from_confirmation(outcome.booking)
        if requested is None:
            self._not_needed(step, "no meeting was requested")
            return None
        try:
            requested.check_future(workflow.now())
        except ValueError as error:
            self._not_needed(step, f"not booked: {error}")
            self._unbookable = "the time had passed by the time it could be booked"
            return None
        self._start_booking(requested)
        assert self._booking_task is not None
        await self._booking_task
        return self._booked_meeting()

    def _start_booking(self, request: BookingRequest) -> None:
        self._booking_request = request
        self._booking_result = None
        # Running from now on, so a waiting handler never sees the previous booking's state.
        self._set(FollowUpStep.BOOK_MEETING, state=StepState.RUNNING, skip_reason=None)
        self._booking_task = asyncio.create_task(self._book(request))

    async def _book(self, request: BookingRequest) -> BookingResult | None:
        step = FollowUpStep.BOOK_MEETING
        arg = BookMeetingInput(call_id=self._input.call_id, request=request)
        output = await self._run_step(step, lambda: self._call(SPEC_BY_STEP[step], arg))
        if output is None:
            return None
        assert isinstance(output, BookMeetingOutput)
        self._booking_result = output.result
        if output.reconciled:
            workflow.logger.info("booking reconciled: the meeting already existed")
        return output.result

    def _booked_meeting(self) -> MeetingRecord | None:
        result, request = self._booking_result, self._booking_request
        if result is None or request is None or result.status is not BookingStatus.BOOKED:
            return None
        assert result.meeting_id is not None
        return MeetingRecord(
            meeting_id=result.meeting_id,
            start=result.slot_start,
            duration_minutes=request.duration_minutes,
        )

    def _booking_conflict(self, previous: BookingRequest | None) -> str | None:
        """Why a booking of another slot is refused, or None when one may start."""
        if previous is None:
            return None
        when = previous.slot_start.isoformat()
        state = self._steps[FollowUpStep.BOOK_MEETING].state
        if self._booking_result is None and state is StepState.SKIPPED:
            return None  # an operator gave that booking up
        if self._booking_result is None:
            doing = "waits for an operator" if state is StepState.NEEDS_ATTENTION else "is running"
            return f"a booking for {when} {doing}; a second booking is refused"
        if self._booking_result.status is BookingStatus.BOOKED:
            return (
                f"a meeting is already booked for {when} "
                f"(meeting {self._booking_result.meeting_id}); a second booking is refused"
            )
        return None  # that slot was unavailable: the caller may pick another
