"""A call's checkpoints: what it has learned, sent to its follow-up while it talks, coalesced.

The first checkpoint goes when the call starts and creates the follow-up, so an agent killed
mid-call (OOM, a lost host, an undrained deploy) loses only what was said since its last
checkpoint: the workflow's liveness rule notices the silence and finishes the call's CRM work
from there. Changes are sent at most every `interval` seconds, and a keep-alive when nothing
changed for `keepalive` seconds: every Temporal message is a billable action on Temporal Cloud.
Sends go through the handoff, so they land in the outbox when Temporal is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from agent.call_state import ConversationState
from config.clock import Clock
from contracts.models import CallCheckpoint, CallLearned

logger = logging.getLogger(__name__)


class CheckpointSink(Protocol):
    """Where checkpoints go: the handoff (Temporal, or the outbox when it is down)."""

    async def checkpoint(self, checkpoint: CallCheckpoint) -> object: ...


class CallCheckpoints:
    """Sends a call's checkpoints from a background task; see the module's docstring."""

    def __init__(
        self,
        *,
        call_id: str,
        state: ConversationState,
        sink: CheckpointSink,
        clock: Clock,
        interval: float,
        keepalive: float,
    ) -> None:
        if not 0 < interval <= keepalive:
            raise ValueError("need 0 < interval <= keepalive")
        self._call_id = call_id
        self._state = state
        self._sink = sink
        self._clock = clock
        self._interval = interval
        self._keepalive = keepalive
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sent_version = -1
        self.sent = 0  # checkpoints sent, for tests and the bench

    def start(self) -> None:
        """Begin: the first checkpoint now (it creates the follow-up), then as the call goes."""
        if self._task is None:
            self._state.on_change(self._changed.set)
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"checkpoints {self._call_id}"
            )

    async def stop(self) -> None:
        """The call is ending: no more checkpoints (call_ended carries the rest)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._send(learned=True)
        while True:
            last = loop.time()
            try:
                async with asyncio.timeout(self._keepalive):
                    await self._changed.wait()
            except TimeoutError:
                await self._send(learned=False)  # nothing new: still alive
                continue
            # Coalesce: whatever else changes until the interval is up goes in the same one.
            await asyncio.sleep(max(0.0, last + self._interval - loop.time()))
            await self._send(learned=True)

    async def _send(self, *, learned: bool) -> None:
        self._changed.clear()
        version = self._state.version
        fresh = learned and version != self._sent_version
        checkpoint = CallCheckpoint(
            call_id=self._call_id,
            seq=version,
            sent_at=self._clock(),
            learned=CallLearned(stage=self._state.stage.value, **self._state.outcome_fields())
            if fresh or self._sent_version < 0
            else None,
        )
        try:
            await self._sink.checkpoint(checkpoint)
        except Exception as error:  # the handoff never raises for Temporal; this is a bug
            logger.error("call %s: checkpoint failed: %s", self._call_id, type(error).__name__)
            return
        self.sent += 1
        if checkpoint.learned is not None:
            self._sent_version = version
