"""DialSlotsWorkflow: holds the dial slots, at most M calls in flight per campaign and per number.

One workflow decides every grant, so the two limits are checked together and atomically; a
grant is a lease (the call's longest duration), so a slot held by an outreach that vanished comes
back on its own. Requests are served first come, first served. The history is kept short by
continue-as-new, carrying the holders and the queue; 50 minutes with nothing to hold end it, and
the next request starts it again (signal-with-start).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Final

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.names import (
        ACQUIRE_SLOT_SIGNAL,
        DIAL_SLOTS_WORKFLOW_TYPE,
        RELEASE_SLOT_SIGNAL,
        SLOT_GRANTED_SIGNAL,
    )
    from contracts.outreach import SlotGrant, SlotHolder, SlotRelease, SlotRequest, SlotsState

# Continue-as-new after this many history events (well below the server's warning limits).
HISTORY_LIMIT: Final = 2000
# Not an hour: a callback's redial comes CALLBACK_MIN_GAP (an hour) after the report, and the
# release that makes this workflow idle comes with that report, so the two timers would fall due
# milliseconds apart. The redial's request then cancels the idle timer, and on the time-skipping
# test server a timer that fired while that task was out strands the run (its CancelTimer is
# refused, "invalid history builder state for action", and the task is never sent again:
# temporalio/sdk-java#3088, fix unreleased in sdk-java#3060). The real server takes the cancel.
IDLE_CHECK: Final = timedelta(minutes=50)
MAX_WAITING: Final = 5000


@workflow.defn(name=DIAL_SLOTS_WORKFLOW_TYPE)
class DialSlotsWorkflow:
    @workflow.init
    def __init__(self, state: SlotsState | None = None) -> None:
        carried = state or SlotsState()
        self._holders = list(carried.holders)
        self._waiting = list(carried.waiting)
        self._changed = True

    @workflow.run
    async def run(self, state: SlotsState | None = None) -> None:
        while True:
            self._expire()
            await self._grant()
            if workflow.info().get_current_history_length() > HISTORY_LIMIT:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(SlotsState(holders=self._holders, waiting=self._waiting))
            if not self._holders and not self._waiting:
                try:
                    await workflow.wait_condition(
                        lambda: bool(self._waiting), timeout=IDLE_CHECK, timeout_summary="idle"
                    )
                except TimeoutError:
                    return  # nothing held for an hour; a request starts a new run
                continue
            self._changed = False
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._changed, timeout=self._next_expiry(), timeout_summary="lease"
                )

    @workflow.signal(name=ACQUIRE_SLOT_SIGNAL)
    def acquire(self, request: SlotRequest) -> None:
        key = (request.holder, request.call_id)
        known = {(h.request.holder, h.request.call_id) for h in self._holders}
        known |= {(w.holder, w.call_id) for w in self._waiting}
        if key in known:
            return  # a retried request activity
        if len(self._waiting) >= MAX_WAITING:
            workflow.logger.warning("dial slot queue full; request dropped")
            return
        self._waiting.append(request)
        self._changed = True

    @workflow.signal(name=RELEASE_SLOT_SIGNAL)
    def release(self, release: SlotRelease) -> None:
        key = (release.holder, release.call_id)
        self._holders = [h for h in self._holders if (h.request.holder, h.request.call_id) != key]
        self._waiting = [w for w in self._waiting if (w.holder, w.call_id) != key]
        self._changed = True

    def _expire(self) -> None:
        now = workflow.now()
        kept = [holder for holder in self._holders if holder.lease_until > now]
        if len(kept) != len(self._holders):
            workflow.logger.info("%d dial slot lease(s) expired", len(self._holders) - len(kept))
        self._holders = kept

    def _fits(self, request: SlotRequest) -> bool:
        campaign = sum(1 for h in self._holders if h.request.campaign == request.campaign)
        number = sum(1 for h in self._holders if h.request.from_number == request.from_number)
        return campaign < request.max_per_campaign and number < request.max_per_number

    async def _grant(self) -> None:
        """Grant waiting requests in order while they fit; a later one may fit another number."""
        for request in list(self._waiting):
            if not self._fits(request):
                continue
            self._waiting.remove(request)
            now = workflow.now()
            lease = now + timedelta(seconds=request.lease_seconds)
            self._holders.append(SlotHolder(request=request, lease_until=lease))
            grant = SlotGrant(call_id=request.call_id, granted_at=now)
            try:
                await workflow.get_external_workflow_handle(request.holder).signal(
                    SLOT_GRANTED_SIGNAL, grant
                )
            except Exception:  # the outreach ended meanwhile: the slot is free again
                workflow.logger.info("a dial slot holder is gone; slot released")
                self.release(SlotRelease(holder=request.holder, call_id=request.call_id))

    def _next_expiry(self) -> timedelta:
        if not self._holders:
            return IDLE_CHECK
        soonest = min(holder.lease_until for holder in self._holders)
        return max(soonest - workflow.now(), timedelta(seconds=1))
