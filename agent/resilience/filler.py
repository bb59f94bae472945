"""Filler lines: what the agent says when a tool is slow, so the caller never hears dead air.

When to say one is LiveKit's `RunContext.with_filler` (CallServices.filler): it waits for the
session to be idle, so a filler never talks over the agent or the caller, then for
FILLER_AFTER_SECONDS of silence, and speaks at most one line per tool (`max_steps=1`). That meets
the old hand-written timer's targets (about 1 s, one line per tool), so the timer is gone.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from agent.resilience.fallbacks import VariedLines, technical_words_in

logger = logging.getLogger(__name__)

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
