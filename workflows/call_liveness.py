"""The liveness rule of a call: its agent checkpoints while it talks, and silence means lost.

A call's follow-up starts when the call does. The agent checkpoints what it learns (coalesced)
and sends a keep-alive when nothing changed; a call with no word for liveness_seconds has lost
its agent (killed, its host gone, an undrained deploy), and the follow-up goes on with the last
checkpoint, marked as such in the CRM call log. Follow-ups that never receive a checkpoint wait
for call_ended as before.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.models import CallCheckpoint, CallLearned, CallOutcome, EndedReason
    from contracts.names import CHECKPOINT_SIGNAL

from workflows.follow_up_state import FollowUpState

# A liveness timer handled this long after it was due fired while Temporal or the workers were
# away (a healthy timer is handled within about a second, p95 under the chaos run's load ~2 s).
LATE_TIMER: Final = timedelta(seconds=5)
LATE_PATCH: Final = "late-liveness-timer-opens-one-more-window"


class CallLiveness(FollowUpState):
    """Checkpoints in, and the outcome of a call whose agent went silent."""

    _grace_from: datetime | None = None

    def _checkpoint(self, checkpoint: CallCheckpoint) -> None:
        """The call is alive; a newer checkpoint's learning replaces the last one's."""
        if checkpoint.call_id != self._input.call_id:
            workflow.logger.warning("signal %s dropped: it is another call's", CHECKPOINT_SIGNAL)
            return
        if self._call_over or self._outcome is not None:
            return  # the call has ended: its outcome says more
        self._last_heard = workflow.now()
        if checkpoint.learned is not None and checkpoint.seq > self._learned_seq:
            self._learned, self._learned_seq = checkpoint.learned, checkpoint.seq

    async def _watch_liveness(self, give_up_at: datetime) -> None:
        """Until call_ended: a call with no word for liveness_seconds has lost its agent.

        One timer per silence window, not per checkpoint: when it fires, a checkpoint heard in
        the meantime opens the next window. A timer that fires late (Temporal or every worker was
        away when it was due) opens one more window first: the agent's checkpoints of that time
        wait in its outbox and arrive seconds after Temporal is back, so silence seen on return
        says nothing about the agent (found by bench/chaos.py: a live call taken for lost after a
        25 s outage with a 20 s window).
        """
        silence = timedelta(seconds=self._input.liveness_seconds)
        graced_after: datetime | None = None  # the last word heard when a late timer was forgiven
        while self._outcome is None:
            assert self._last_heard is not None
            anchor = self._last_heard
            if graced_after == self._last_heard and self._grace_from is not None:
                anchor = max(anchor, self._grace_from)
            until = min(anchor + silence, give_up_at)
            wait = until - workflow.now()
            if wait <= timedelta(0):
                self._lose_agent()
                return
            try:
                await workflow.wait_condition(
                    lambda: self._outcome is not None, timeout=wait, timeout_summary="call liveness"
                )
            except TimeoutError:
                now = workflow.now()
                if now >= give_up_at:
                    self._lose_agent()
                    return
                if self._last_heard + silence > now:
                    continue  # heard from in the meantime
                late = now - until > LATE_TIMER
                if late and graced_after != self._last_heard and workflow.patched(LATE_PATCH):
                    graced_after, self._grace_from = self._last_heard, now
                    workflow.logger.info(
                        "call %s: liveness timer fired %.0f s late; one more window",
                        self._input.call_id,
                        (now - until).total_seconds(),
                    )
                    continue
                if anchor + silence <= now:
                    self._lose_agent()
                    return

    def _lose_agent(self) -> None:
        """The outcome of a call whose agent went silent: its last checkpoint, marked as such."""
        trialist, heard = self._input.trialist, self._last_heard
        if trialist is None or heard is None:  # a starter that sent no identity: nothing to write
            self._outcome_missing = True
            return
        learned = self._learned or CallLearned()
        started = min(self._input.started_at or heard, heard)
        silence = self._input.liveness_seconds
        self._agent_lost = True
        self._outcome = CallOutcome(
            call_id=self._input.call_id,
            trialist=trialist,
            started_at=started,
            ended_at=heard,
            ended_reason=EndedReason.AGENT_LOST,
            signals=learned.signals,
            notes=learned.notes,
            summary=(
                f"The voice agent went silent mid-call (no word for {silence:g} s); this is what "
                "it had recorded by its last checkpoint."
            ),
            requested_meeting=learned.requested_meeting,
            booking=learned.booking,
            callback=learned.callback,
            voicemail=learned.voicemail,
            voicemail_message_left=learned.voicemail_message_left,
        )
        workflow.logger.warning(
            "call %s: the agent went silent; using its last checkpoint", self._input.call_id
        )
