"""What the agent offers and says about times, at every pinned instant and in callers' own zones.

The slots come from the sandbox's calendar frozen at the instant, through the real ChiliPiper
client; "today", "tomorrow" and weekdays are the caller's, which across the date line (Tokyo)
differ from the rep's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx2
import pytest

from agent.trialist_agent import MIN_BOOKING_NOTICE, pick_slots, spoken_time
from integrations.chilipiper import ChiliPiperGuest
from tests.integrations.test_chilipiper import make_client
from tests.pinned_time import CALENDAR_INSTANTS, CALLER_ZONES, PinnedInstant
from tests.servers import SandboxServer

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@pytest.fixture(params=CALLER_ZONES)
def caller_zone(request: pytest.FixtureRequest) -> ZoneInfo:
    return ZoneInfo(request.param)


@pytest.fixture
async def slots(
    pinned_sandbox: SandboxServer, caller_zone: ZoneInfo
) -> AsyncIterator[list[datetime]]:
    guest = ChiliPiperGuest(
        email="ren.okada@kitsune-design.example",
        first_name="Ren",
        last_name="Okada",
        timezone=str(caller_zone),
    )
    async with httpx2.AsyncClient() as http:
        free = await make_client(pinned_sandbox, http).find_free_slots(
            guest, timezone=str(caller_zone)
        )
        yield free.slots


def expected_day_words(slot: datetime, *, now: datetime, zone: ZoneInfo) -> str:
    """The oracle for the day part of a spoken time, from the caller's local dates."""
    days = (slot.astimezone(zone).date() - now.astimezone(zone).date()).days
    local = slot.astimezone(zone)
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if days < 7:
        return WEEKDAYS[local.weekday()]
    return f"{WEEKDAYS[local.weekday()]}, {local.strftime('%B')} {local.day}"


async def test_offered_times_are_future_spread_and_said_in_the_callers_day(
    calendar_instant: PinnedInstant, caller_zone: ZoneInfo, slots: list[datetime]
) -> None:
    now = calendar_instant.at
    chosen = pick_slots(slots, now=now, zone=caller_zone, day=None, time_of_day="any")

    assert len(chosen) == 3
    assert chosen == sorted(chosen)
    assert all(slot >= now + MIN_BOOKING_NOTICE for slot in chosen)
    # One per caller-local day first, so the three are a real choice.
    caller_days = {slot.astimezone(caller_zone).date() for slot in slots}
    assert len({slot.astimezone(caller_zone).date() for slot in chosen}) == min(3, len(caller_days))
    for slot in chosen:
        said = spoken_time(slot, now=now, zone=caller_zone)
        local = slot.astimezone(caller_zone)
        hour = local.hour % 12 or 12
        minutes = f":{local.minute:02d}" if local.minute else ""
        suffix = "AM" if local.hour < 12 else "PM"
        day_words = expected_day_words(slot, now=now, zone=caller_zone)
        assert said == f"{day_words} at {hour}{minutes} {suffix}"


async def test_a_day_preference_is_the_callers_local_day(
    calendar_instant: PinnedInstant, caller_zone: ZoneInfo, slots: list[datetime]
) -> None:
    now = calendar_instant.at
    today = now.astimezone(caller_zone).date()
    for word, day in (("today", today), ("tomorrow", today + timedelta(days=1))):
        chosen = pick_slots(slots, now=now, zone=caller_zone, day=word, time_of_day="any")
        on_that_day = [s for s in slots if s.astimezone(caller_zone).date() == day]
        assert all(slot.astimezone(caller_zone).date() == day for slot in chosen), word
        assert bool(chosen) == any(s >= now + MIN_BOOKING_NOTICE for s in on_that_day), word
    mornings = pick_slots(slots, now=now, zone=caller_zone, day=None, time_of_day="morning")
    assert all(slot.astimezone(caller_zone).hour < 12 for slot in mornings)
    afternoons = pick_slots(slots, now=now, zone=caller_zone, day=None, time_of_day="afternoon")
    assert all(slot.astimezone(caller_zone).hour >= 12 for slot in afternoons)


def test_a_tokyo_evening_is_the_new_york_morning_and_midnight_splits_the_reps_day() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    moment = next(m for m in CALENDAR_INSTANTS if m.name == "tue-0600-tokyo-evening")
    assert moment.at.astimezone(tokyo).hour == 20
    nine, ten = moment.first_slot, moment.first_slot + timedelta(hours=1)
    # 9:00 in New York is 23:00 the same Tuesday in Tokyo; 10:00 is already Wednesday there.
    assert spoken_time(nine, now=moment.at, zone=tokyo) == "today at 11 PM"
    assert spoken_time(ten, now=moment.at, zone=tokyo) == "tomorrow at 12 AM"


def test_the_year_turns_and_dst_moves_utc_not_the_local_hour() -> None:
    new_york = ZoneInfo("America/New_York")
    year_end = next(m for m in CALENDAR_INSTANTS if m.name == "thu-1600-year-turn")
    assert spoken_time(year_end.first_slot, now=year_end.at, zone=new_york) == "tomorrow at 9 AM"
    assert year_end.first_slot.astimezone(new_york).year == year_end.local.year + 1
    for name, before, after in (
        ("fri-1500-dst-starts-sun", -5, -4),
        ("fri-1500-dst-ends-sun", -4, -5),
    ):
        friday = next(m for m in CALENDAR_INSTANTS if m.name == name)
        monday_nine = friday.first_slot.replace(hour=9) + timedelta(days=3)
        assert friday.at.astimezone(new_york).utcoffset() == timedelta(hours=before)
        assert monday_nine.astimezone(new_york).utcoffset() == timedelta(hours=after)
        assert monday_nine.astimezone(new_york).hour == 9
        said = spoken_time(monday_nine.astimezone(UTC), now=friday.at, zone=new_york)
        assert said == "Monday at 9 AM"
