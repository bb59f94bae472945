"""Filler speech: one short line when a tool is slow, so the caller never hears dead air."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import ClassVar

from agent.resilience.fallbacks import VariedLines, technical_words_in

logger = logging.getLogger(__name__)

# Returns None, a coroutine to run, or something already scheduled (a LiveKit SpeechHandle).
SayFiller = Callable[[str], object]

FILLER_LINES: tuple[str, ...] = (
    "One moment while I check that.",
    "Let me take a quick look.",
    "Bear with me a second.",
    "Just a moment, I'm pulling that up.",
    "Give me one second.",
)


class FillerLines(VariedLines):
    """Filler lines without an early repeat; checked for technical words like fallbacks."""

    def __init__(
        self, lines: Sequence[str] = FILLER_LINES, *, rng: random.Random | None = None
    ) -> None:
        for line in lines:
            if found := technical_words_in(line):
                raise ValueError(f"filler line {line!r} uses technical words: {sorted(found)}")
        super().__init__(lines, rng=rng or random.Random())


class FillerTimer:
    """Say one filler line if the guarded block is still running `after` seconds after entry.

    The line is spoken from a timer callback, so the guarded call is never delayed or cancelled
    by it. `say` may return None, a coroutine (run as a task) or an already-scheduled awaitable
    such as a LiveKit SpeechHandle (left alone: awaiting one inside a tool waits for playout).
    """

    # Strong references, so a speaking task is not garbage-collected mid-line.
    _speaking: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, *, after: float, say: SayFiller | None, lines: FillerLines) -> None:
        self._after = after
        self._say = say
        self._lines = lines
        self._handle: asyncio.TimerHandle | None = None
        self.spoken: str | None = None

    def __enter__(self) -> FillerTimer:
        if self._say is not None:
            self._handle = asyncio.get_running_loop().call_later(self._after, self._fire)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._say is None:
            return
        line = self._lines.next()
        self.spoken = line
        try:
            result = self._say(line)
        except Exception as exc:
            logger.warning("filler speech failed to start: %s", type(exc).__name__)
            return
        if inspect.iscoroutine(result):
            task: asyncio.Task[None] = asyncio.ensure_future(result)
            self._speaking.add(task)
            task.add_done_callback(_finished_speaking)


def _finished_speaking(task: asyncio.Task[None]) -> None:
    FillerTimer._speaking.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("filler speech failed: %s", type(exc).__name__)
