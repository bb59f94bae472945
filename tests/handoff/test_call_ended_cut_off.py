"""A call_ended whose caller stops waiting (LiveKit's shutdown budget) still lands in the outbox.

Found by bench/chaos.py: the session end gives the outcome 3 s (agent/session_end.py), the
handoff gives Temporal 5 s (HANDOFF_CALL_ENDED_TIMEOUT_SECONDS). With Temporal slow, the outer
budget cancelled the send before it could fall back to the outbox, after the call's queued
checkpoint and booking had been marked superseded: the outcome and what it superseded were gone.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handoff.follow_up import BookingHandoffStatus
from handoff.ordering import MessageKind
from tests.handoff.test_handoff import closed_port, handoff_to, silent_server
from tests.pinned_time import working_week_anchor
from tests.workflows.scenario import booking_request, call_outcome, make_trialist, new_call_id

CALLER_BUDGET = 0.3  # shorter than the handoff's own call_ended budget below
HANDOFF_BUDGET = 2.0


async def test_a_call_ended_cut_off_by_its_caller_is_kept_with_what_it_supersedes(
    tmp_path: Path, task_queue: str
) -> None:
    call_id = new_call_id()
    person = make_trialist(call_id)
    slot = working_week_anchor(datetime.now(UTC))  # a pinned weekday hour; never booked here
    request = booking_request(call_id, person, slot)
    down = handoff_to(tmp_path, target=closed_port(), task_queue=task_queue)
    assert (await down.book_meeting(request, wait=2.0)).status is BookingHandoffStatus.QUEUED
    with silent_server() as target:
        slow = handoff_to(
            tmp_path, target=target, task_queue=task_queue, call_ended_timeout=HANDOFF_BUDGET
        )
        outcome = call_outcome(call_id, person, requested=request)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(CALLER_BUDGET):
                await slow.call_ended(outcome)
    pending = {message.kind for message in slow.outbox.pending_for(call_id)}
    # The outcome is stored for the relay; the booking it carries is superseded by it.
    assert pending == {MessageKind.CALL_ENDED}
    [stored] = [m for m in slow.outbox.messages(call_id) if m.kind is MessageKind.CALL_ENDED]
    assert stored.call_outcome().requested_meeting == request
