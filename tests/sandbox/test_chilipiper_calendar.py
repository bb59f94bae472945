"""The rep's calendar at every pinned instant (tests/pinned_time.py), over the sandbox's wire API.

Each test runs once per instant, in one pass: the first and last slot of the rep's day, Friday
afternoon into Monday, the weekend, both US DST days and the turn of a year.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import httpx2
import pytest

from sandbox.chilipiper import BUSINESS_DAYS_AHEAD, MIN_NOTICE, WORK_DAY_END_HOUR
from tests.pinned_time import CALENDAR_INSTANTS, REP_ZONE, PinnedInstant
from tests.sandbox.test_chilipiper_sandbox import init, instant, schedule
from tests.servers import SandboxServer

MEETING = timedelta(minutes=30)


def business_days_from(today: date, count: int) -> list[date]:
    """The oracle: `count` weekdays starting with `today` (or the next weekday)."""
    days, day = [], today
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def test_the_calendar_is_pinned_to_the_instant(
    pinned_sandbox: SandboxServer, calendar_instant: PinnedInstant
) -> None:
    clock = httpx2.get(f"{pinned_sandbox.url}/__sandbox/clock").json()
    assert clock["mode"] == "frozen"
    assert instant(clock["now"]) == calendar_instant.at


def test_free_slots_are_the_reps_working_hours_after_the_notice(
    pinned_sandbox: SandboxServer, calendar_instant: PinnedInstant
) -> None:
    starts = [instant(value) for value in init(pinned_sandbox)["startTimes"]]
    local = [start.astimezone(REP_ZONE) for start in starts]

    assert starts == sorted(starts)
    assert starts[0] == calendar_instant.first_slot
    assert all(start >= calendar_instant.at + MIN_NOTICE for start in starts)
    # Working hours in the rep's own zone on both sides of a DST change: 9:00 to 17:00.
    assert all(moment.weekday() < 5 and moment.hour >= 9 for moment in local)
    assert all((moment + MEETING).hour <= WORK_DAY_END_HOUR for moment in local)
    assert all(moment.minute in (0, 30) and moment.second == 0 for moment in local)
    offered_days = sorted({moment.date() for moment in local})
    horizon = business_days_from(calendar_instant.today, BUSINESS_DAYS_AHEAD)
    assert set(offered_days) <= set(horizon)
    # Every business day of the horizon after today is offered in full, minus the busy hours.
    assert offered_days[-(BUSINESS_DAYS_AHEAD - 1) :] == horizon[1:]


def test_the_seeded_meetings_are_busy_on_the_next_business_day(
    pinned_sandbox: SandboxServer, calendar_instant: PinnedInstant
) -> None:
    busy = {instant(row["start_at"]) for row in pinned_sandbox.state()["chilipiper_meetings"]}
    next_day = business_days_from(calendar_instant.today + timedelta(days=1), 1)[0]
    assert {moment.astimezone(REP_ZONE).date() for moment in busy} == {next_day}
    offered = {instant(value) for value in init(pinned_sandbox)["startTimes"]}
    assert not busy & offered


def test_the_first_slot_books(
    pinned_sandbox: SandboxServer, calendar_instant: PinnedInstant
) -> None:
    session = init(pinned_sandbox)
    booked = schedule(pinned_sandbox, session["routeId"], calendar_instant.first_slot.isoformat())
    assert booked.status_code == 200, booked.text
    assert calendar_instant.first_slot not in {
        instant(value) for value in init(pinned_sandbox)["startTimes"]
    }


def in_notice_slot(moment: PinnedInstant) -> datetime | None:
    """A working-hours slot that starts after the instant but inside the notice, if there is one."""
    candidate = moment.first_slot - MEETING
    local = candidate.astimezone(REP_ZONE)
    inside = candidate > moment.at and local.date() == moment.first_slot.astimezone(REP_ZONE).date()
    return candidate if inside and local.hour >= 9 else None


@pytest.mark.parametrize(
    "moment",
    [moment for moment in CALENDAR_INSTANTS if in_notice_slot(moment) is not None],
    ids=lambda moment: moment.name,
)
def test_a_working_hours_slot_inside_the_notice_is_refused(
    sandbox_server: SandboxServer, moment: PinnedInstant
) -> None:
    sandbox_server.reset(now=moment.at, frozen=True)
    too_soon = in_notice_slot(moment)
    assert too_soon is not None
    refused = schedule(sandbox_server, init(sandbox_server)["routeId"], too_soon.isoformat())
    assert refused.status_code == 409
    assert refused.json()["errorCode"] == "SlotNotAvailable"
