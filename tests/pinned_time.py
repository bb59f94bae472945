"""Pinned instants for calendar tests, and the working-week anchor every sandbox test starts at.

No test may depend on the hour, weekday or date it runs at. Calendar tests run at each instant of
`CALENDAR_INSTANTS` (a parametrised fixture, so one `make test` covers them all; the instant's name
is the test id). Every other test that touches the sandbox starts at `working_week_anchor`.

Where real Temporal time and the sandbox's pinned time must agree (the dev server runs on the wall
clock, the time-skipping server on its own), the sandbox is pinned to the next Tuesday 10:00 in the
rep's zone, at least `ANCHOR_LEAD` after the server's now. Every free slot then lies one to
twelve days after the server's now: in the future for the workflow's booking checks, inside the
booking horizon, and far enough ahead that the hours a time-skipping test skips never pass it. The
local weekday and hour are the same on every run, so offered days and spoken times are too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

REP_ZONE = ZoneInfo("America/New_York")  # sandbox/chilipiper.py REP_TIMEZONE
ANCHOR_WEEKDAY = 1  # Tuesday
ANCHOR_TIME = time(10, 0)
ANCHOR_LEAD = timedelta(hours=6)


def working_week_anchor(after: datetime) -> datetime:
    """The first Tuesday 10:00 (rep's zone) at least ANCHOR_LEAD after `after`, in UTC."""
    earliest = (after + ANCHOR_LEAD).astimezone(REP_ZONE)
    day = earliest.date()
    while True:
        if day.weekday() == ANCHOR_WEEKDAY:
            candidate = datetime.combine(day, ANCHOR_TIME, tzinfo=REP_ZONE)
            if candidate >= earliest:
                return candidate.astimezone(UTC)
        day += timedelta(days=1)


@dataclass(frozen=True)
class PinnedInstant:
    """A named moment, given in the rep's zone, and what the rep's calendar looks like then."""

    name: str
    local: datetime  # aware, in REP_ZONE
    first_slot: datetime  # the earliest bookable slot then (1 h notice, 9-17 weekdays)

    @property
    def at(self) -> datetime:
        return self.local.astimezone(UTC)

    @property
    def today(self) -> date:
        return self.local.date()


def _ny(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=REP_ZONE)


def _instant(name: str, local: datetime, first_slot: datetime) -> PinnedInstant:
    return PinnedInstant(name=name, local=local, first_slot=first_slot)


# A plain week (Mon 2027-01-11 to Sun 2027-01-17), both US DST days of 2027, and a year's turn.
CALENDAR_INSTANTS: tuple[PinnedInstant, ...] = (
    _instant("mon-0730-before-hours", _ny(2027, 1, 11, 7, 30), _ny(2027, 1, 11, 9)),
    _instant("mon-0800-first-slot", _ny(2027, 1, 11, 8), _ny(2027, 1, 11, 9)),
    _instant("mon-0801-first-missed", _ny(2027, 1, 11, 8, 1), _ny(2027, 1, 11, 9, 30)),
    _instant("tue-1210-midday", _ny(2027, 1, 12, 12, 10), _ny(2027, 1, 12, 13, 30)),
    _instant("wed-1530-last-slot", _ny(2027, 1, 13, 15, 30), _ny(2027, 1, 13, 16, 30)),
    _instant("wed-1531-day-over", _ny(2027, 1, 13, 15, 31), _ny(2027, 1, 14, 9)),
    _instant("thu-1800-evening", _ny(2027, 1, 14, 18), _ny(2027, 1, 15, 9)),
    _instant("fri-1445-into-monday", _ny(2027, 1, 15, 14, 45), _ny(2027, 1, 15, 16)),
    _instant("fri-1645-late", _ny(2027, 1, 15, 16, 45), _ny(2027, 1, 18, 9)),
    _instant("sat-1100-weekend", _ny(2027, 1, 16, 11), _ny(2027, 1, 18, 9)),
    _instant("sun-2330-weekend", _ny(2027, 1, 17, 23, 30), _ny(2027, 1, 18, 9)),
    _instant("tue-0600-tokyo-evening", _ny(2027, 1, 12, 6), _ny(2027, 1, 12, 9)),
    _instant("fri-1500-dst-starts-sun", _ny(2027, 3, 12, 15), _ny(2027, 3, 12, 16)),
    _instant("sun-1200-dst-started", _ny(2027, 3, 14, 12), _ny(2027, 3, 15, 9)),
    _instant("fri-1500-dst-ends-sun", _ny(2027, 11, 5, 15), _ny(2027, 11, 5, 16)),
    _instant("sun-1200-dst-ended", _ny(2027, 11, 7, 12), _ny(2027, 11, 8, 9)),
    _instant("thu-1600-year-turn", _ny(2026, 12, 31, 16), _ny(2027, 1, 1, 9)),
)

# Callers whose local day differs from the rep's: behind, ahead, and across the date line.
CALLER_ZONES: tuple[str, ...] = ("America/Chicago", "America/Los_Angeles", "Asia/Tokyo")
