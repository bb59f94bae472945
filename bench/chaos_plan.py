"""What the chaos run's agent processes are told to play, and the journal they write as they play.

Shared by bench/chaos.py (which plans the calls and reads the journals) and bench/chaos_agent.py
(which plays them). No LiveKit or Temporal here: the bench reads journals without importing them.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from contracts.models import Trialist

Ending = Literal["end_call", "hang_up"]
# The gate a call waits at before it asks for meeting times: the bench opens it once Temporal is
# down, so those calls book (and hang up) during the outage.
OUTAGE_GATE: Final = "temporal-down"
# Holds the run's start (Unix seconds); agent processes start their calls relative to it.
START_GATE: Final = "start"
# A call never waits at a gate longer than this: a bench that failed to open it must not hang.
MAX_GATE_WAIT_SECONDS: Final = 180.0


class Signal(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: str


class PlannedCall(BaseModel):
    """One scripted call: who, when, what the caller says, and how the call ends."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    trialist: Trialist
    start_offset: float  # seconds after the run's start (the bench's START_GATE file holds it)
    pause_seconds: float  # the caller's speaking time before each line
    # Said over three turns: (team_size, use_case), (current_tool), (decision_role, timeline).
    signals: tuple[Signal, ...]
    notes: tuple[str, ...]  # the first in the second turn, the second as the call closes
    slot: datetime | None  # the time the caller asks to book; None: no meeting
    gate: str | None = None
    ending: Ending = "end_call"


class AgentPlan(BaseModel):
    calls: list[PlannedCall]


# --- the journal ----------------------------------------------------------------------------------

Event = Literal[
    "ready",  # the process is up (data: pid)
    "start",  # a call began
    "said",  # a signal or note the agent saved (data: kind, name, value)
    "agent",  # a line the agent spoke (data: text)
    "handoff",  # a handoff returned (data: kind, status, seconds, and more)
    "hangup",  # the caller hung up or end_call closed the call
    "ended",  # the outcome was handed off (data: handoff)
    "error",  # a call failed in the bench's own code (data: error)
    "calls_done",  # every planned call of the process has finished
]


class Journal:
    """An append-only JSON-lines file, one write() per entry, so a SIGKILL loses no written line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, call_id: str | None, event: Event, **data: Any) -> None:
        entry = {"t": time.time(), "call": call_id, "event": event, **data}
        os.write(self._fd, (json.dumps(entry, default=str) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete entry of a journal (a line cut short by a kill is skipped)."""
    entries: list[dict[str, Any]] = []
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries
