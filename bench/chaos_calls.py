"""The chaos run's calls: whom each one is with, what the caller says, when, and which slot.

Slots come from the sandbox's live calendar at the start of the run (at least three hours
ahead), so the plan holds at any hour of any day; no start is asked for by more calls than
there are reps. A few calls book during the Temporal outage, and for some of those the bench
takes the slot (or the slot and its neighbours) before Temporal returns: their follow-ups must
move the booking to a free slot nearby, or owe the caller a reply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from bench.chaos_plan import OUTAGE_GATE, PlannedCall, Signal
from contracts.models import Trialist

SLOT_LEAD: Final = timedelta(hours=3)  # no slot this close to now: it must stay bookable all run
SLOT: Final = timedelta(minutes=30)
BOOKING_SHARE: Final = 0.85
GATED_SHARE: Final = 0.08  # calls that book during the outage
CONTENDED_SHARE: Final = 0.015  # of N, each for "moved" and for "owed"
GATED_LEAD_SECONDS: Final = 12.0  # they start this long before the outage and wait at the gate

FIRST: Final = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan")
LAST: Final = ("Nguyen", "Okafor", "Silva", "Kowalski", "Haddad", "Lindqvist", "Moreau")
ZONES: Final = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
USE_CASES: Final = ("sales proposals", "contracts", "quotes", "onboarding forms", "NDAs")
TOOLS: Final = ("Google Docs", "Word", "DocuSign", "Dropbox Sign", "email and PDFs")
ROLES: Final = ("decision maker", "team lead", "evaluator", "operations manager")
TIMELINES: Final = ("this quarter", "next month", "within two weeks", "by year end")
FEATURES: Final = ("a Salesforce integration", "bulk send", "approval workflows", "templates")
CHANNELS: Final = ("email", "a phone call", "a Slack message")

Contention = Literal["moved", "owed"]


@dataclass
class CallPlan:
    """Every call of the run, and the slots the bench takes during the outage."""

    calls: list[PlannedCall]
    gated: set[str]  # call ids that book during the outage
    contended: dict[str, Contention] = field(default_factory=dict)
    take: list[datetime] = field(default_factory=list)  # starts to fill on every rep


def trialist(index: int) -> Trialist:
    first, last = FIRST[index % len(FIRST)], LAST[index % len(LAST)]
    return Trialist(
        email=f"{first.lower()}.{last.lower()}.{index:04d}@chaos-calls.example",
        name=f"{first} {last}",
        company=f"Chaos Co {index:04d}",
        phone=f"+1415555{index:04d}",
        trial_account_id=f"trial-chaos-{index:04d}",
        timezone=ZONES[index % len(ZONES)],
    )


def plan_calls(
    *,
    n: int,
    run_tag: str,
    slots: list[datetime],
    now: datetime,
    reps: int,
    ramp_seconds: float,
    outage_at: float,
    seed: int,
) -> CallPlan:
    rng = random.Random(seed)
    gated_count = max(3, round(GATED_SHARE * n))
    contended_each = max(1, round(CONTENDED_SHARE * n))
    starts = [slot for slot in slots if slot >= now + SLOT_LEAD]
    contended_starts, reserved = _contended_starts(starts, 2 * contended_each)
    regular = _assigner([slot for slot in starts if slot not in reserved], per_start=reps - 1)
    plan = CallPlan(calls=[], gated=set())
    for index in range(n):
        gated = index < gated_count
        contention: Contention | None = None
        if gated and index < len(contended_starts):
            contention = "moved" if index < contended_each else "owed"
        books = gated or rng.random() < BOOKING_SHARE
        slot: datetime | None = regular() if books and contention is None else None
        if contention is not None:
            taken = contended_starts[index]
            slot = taken
            plan.contended[f"chaos-{run_tag}-{index:04d}"] = contention
            plan.take += [taken] if contention == "moved" else [taken - SLOT, taken, taken + SLOT]
        offset = (
            max(0.0, outage_at - GATED_LEAD_SECONDS - rng.uniform(0, 3))
            if gated
            else rng.uniform(0, ramp_seconds)
        )
        call = _call(index, run_tag, slot=slot, offset=offset, gated=gated, rng=rng)
        plan.calls.append(call)
        if gated:
            plan.gated.add(call.call_id)
    return plan


def _call(
    index: int,
    run_tag: str,
    *,
    slot: datetime | None,
    offset: float,
    gated: bool,
    rng: random.Random,
) -> PlannedCall:
    signals = (
        Signal(name="team_size", value=str(rng.randint(2, 250))),
        Signal(name="use_case", value=rng.choice(USE_CASES)),
        Signal(name="current_tool", value=rng.choice(TOOLS)),
        Signal(name="decision_role", value=rng.choice(ROLES)),
        Signal(name="timeline", value=rng.choice(TIMELINES)),
    )
    notes = (
        f"Wants {rng.choice(FEATURES)} before rolling out (call {index}).",
        f"Prefers {rng.choice(CHANNELS)} for follow-ups (call {index}).",
    )
    return PlannedCall(
        call_id=f"chaos-{run_tag}-{index:04d}",
        trialist=trialist(index),
        start_offset=offset,
        pause_seconds=rng.uniform(0.8, 2.0),
        signals=signals,
        notes=notes,
        slot=slot,
        gate=OUTAGE_GATE if gated else None,
        ending="hang_up" if rng.random() < 0.5 else "end_call",
    )


def _contended_starts(starts: list[datetime], count: int) -> tuple[list[datetime], set[datetime]]:
    """Starts whose neighbours are free too, far enough apart that no two share a neighbour."""
    free = set(starts)
    chosen: list[datetime] = []
    reserved: set[datetime] = set()
    for start in reversed(starts):  # the later days: the ordinary calls book the earlier ones
        trio = {start - SLOT, start, start + SLOT}
        near = {start - 2 * SLOT, start + 2 * SLOT}
        if trio <= free and not (trio | near) & reserved:
            chosen.append(start)
            reserved |= trio | near
        if len(chosen) == count:
            break
    if len(chosen) < count:
        raise RuntimeError(f"the sandbox calendar has no {count} free starts for contended calls")
    return chosen, reserved


def _assigner(starts: list[datetime], *, per_start: int) -> _Cycle:
    if not starts:
        raise RuntimeError("the sandbox calendar has no free starts for the run")
    return _Cycle(starts, per_start)


class _Cycle:
    """Hands out starts in turn, each at most `per_start` times (one rep each, one spare)."""

    def __init__(self, starts: list[datetime], per_start: int) -> None:
        self._starts = starts
        self._per_start = per_start
        self._given = 0

    def __call__(self) -> datetime:
        if self._given >= len(self._starts) * self._per_start:
            raise RuntimeError("more bookings than the sandbox calendar can hold")
        start = self._starts[self._given % len(self._starts)]
        self._given += 1
        return start
