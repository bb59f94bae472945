"""The state of one follow-up, shared by the workflow and the rules it is split into."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.activities import ActivityOutput, MeetingRecord, OwedReply
    from contracts.models import (
        BookingRequest,
        BookingResult,
        CallLearned,
        CallOutcome,
        FollowUpInput,
        FollowUpStatus,
        FollowUpStep,
        RetryStepRequest,
        SkipStepRequest,
        StepError,
        StepProgress,
    )


class FollowUpState:
    """Every field of a follow-up in one place. Deterministic data only; no I/O."""

    def _init_state(self, input: FollowUpInput) -> None:
        self._input = input
        self._outcome: CallOutcome | None = None
        self._outcome_missing = False
        self._call_over = False
        self._done = False
        self._steps: dict[FollowUpStep, StepProgress] = {
            step: StepProgress() for step in FollowUpStep
        }
        self._parked: dict[FollowUpStep, StepError] = {}
        self._decisions: dict[FollowUpStep, RetryStepRequest | SkipStepRequest] = {}
        self._outputs: dict[FollowUpStep, asyncio.Task[ActivityOutput | None]] = {}
        self._booking_request: BookingRequest | None = None
        self._booking_result: BookingResult | None = None
        self._booking_task: asyncio.Task[BookingResult | None] | None = None
        self._meeting_task: asyncio.Task[MeetingRecord | None] | None = None
        self._published: tuple[FollowUpStatus, FollowUpStep | None] | None = None
        # During the call: the last checkpoint's learning, and when the agent was last heard.
        self._learned: CallLearned | None = None
        self._learned_seq = -1
        self._last_heard: datetime | None = None
        self._agent_lost = False
        # After it: a promised booking that could not be kept, or how it was kept.
        self._unbookable: str | None = None
        self._owed: OwedReply | None = None
        self._promise_note: str | None = None
