"""The calling policy: hours by jurisdiction, days off, DST, inferred zones and attempt caps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.calling_place import (
    UnknownPlaceError,
    infer_calling_place,
    public_holidays,
    resolve_calling_place,
)
from contracts.calling_policy import (
    POLICY_TABLE,
    CallingPlace,
    CallingPolicy,
    cap_release,
    daily_cap,
    dials_in_24h,
    effective_rule,
    hours_verdict,
    next_dial_time,
)

LA = CallingPlace(timezones=("America/Los_Angeles",), region="CA")
MIAMI = CallingPlace(timezones=("America/New_York",), region="FL")
ATLANTA = CallingPlace(timezones=("America/New_York",), region="GA")
NEW_YORK = CallingPlace(timezones=("America/New_York",), region="NY")
ANCHORAGE = CallingPlace(timezones=("America/Anchorage", "America/Adak"), region="AK")
POLICY = CallingPolicy()


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))  # type: ignore[misc]


def test_la_at_20_30_is_dialed_at_8_next_weekday() -> None:
    now = local("America/Los_Angeles", 2026, 3, 3, 20, 30)  # a Tuesday
    assert not hours_verdict(now, LA, POLICY)[0]
    decision = next_dial_time(now=now, dials=[], place=LA, policy=POLICY)
    assert decision is not None
    assert decision.at == local("America/Los_Angeles", 2026, 3, 4, 8, 0)
    assert "calling hours open" in decision.reason


def test_friday_evening_waits_for_monday_and_skips_a_holiday() -> None:
    now = local("America/Los_Angeles", 2026, 1, 16, 20, 30)  # Friday; Monday the 19th is MLK day
    holidays = public_holidays(region="CA", first=date(2026, 1, 1), days=60)
    policy = CallingPolicy(holidays=holidays)
    decision = next_dial_time(now=now, dials=[], place=LA, policy=policy)
    assert decision is not None
    assert decision.at == local("America/Los_Angeles", 2026, 1, 20, 8, 0)
    weekend = next_dial_time(now=now, dials=[], place=LA, policy=CallingPolicy(weekdays_only=False))
    assert weekend is not None and weekend.at == local("America/Los_Angeles", 2026, 1, 17, 8, 0)


def test_florida_closes_at_20_with_three_dials_per_24h() -> None:
    # A call may last the 30-minute closing margin: a Florida call starts by 19:30, elsewhere 20:30.
    at = local("America/New_York", 2026, 3, 3, 19, 45)
    assert not hours_verdict(at, MIAMI, POLICY)[0]
    assert hours_verdict(at, ATLANTA, POLICY)[0]  # the same zone under the federal rule alone
    generous = CallingPolicy(max_attempts_per_24h=10)
    assert daily_cap(MIAMI, generous) == 3
    assert daily_cap(ATLANTA, generous) == 10
    decision = next_dial_time(now=at, dials=[], place=MIAMI, policy=generous)
    assert decision is not None and decision.at == local("America/New_York", 2026, 3, 4, 8, 0)


def test_the_policy_table_cites_a_source_for_every_rule() -> None:
    assert set(POLICY_TABLE) == {"US", "FL", "OK", "WA"}
    assert all(rule.source for rule in POLICY_TABLE.values())
    wa = effective_rule(CallingPlace(timezones=("America/Los_Angeles",), region="WA"))
    assert (wa.opens.hour, wa.closes.hour, wa.max_calls_per_24h) == (8, 20, None)


def test_dst_fall_back_day_opens_at_8_local_time() -> None:
    # 2026-11-01: clocks go back at 02:00 in New York; 08:00 EST is 13:00 UTC, not 12:00.
    now = local("America/New_York", 2026, 10, 31, 21, 30)
    policy = CallingPolicy(weekdays_only=False)
    decision = next_dial_time(now=now, dials=[], place=NEW_YORK, policy=policy)
    assert decision is not None
    assert decision.at == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert decision.at.astimezone(ZoneInfo("America/New_York")).hour == 8


def test_dst_spring_forward_day_opens_at_8_local_time() -> None:
    now = local("America/New_York", 2026, 3, 7, 22, 0)
    decision = next_dial_time(
        now=now, dials=[], place=NEW_YORK, policy=CallingPolicy(weekdays_only=False)
    )
    assert decision is not None and decision.at == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def test_a_place_with_two_zones_must_allow_the_dial_in_both() -> None:
    # Anchorage opens an hour before Adak: the dial waits for Adak's 08:00.
    now = local("America/Anchorage", 2026, 3, 3, 7, 0)
    decision = next_dial_time(now=now, dials=[], place=ANCHORAGE, policy=POLICY)
    assert decision is not None
    assert decision.at == local("America/Adak", 2026, 3, 3, 8, 0)


def test_the_daily_cap_rolls_and_the_trial_cap_ends_the_outreach() -> None:
    now = local("America/New_York", 2026, 3, 3, 19, 0)
    dials = [now - timedelta(hours=h) for h in (5, 3, 1)]
    decision = next_dial_time(now=now, dials=dials, place=MIAMI, policy=POLICY)
    assert decision is not None
    assert decision.at == dials[0] + timedelta(hours=24)  # the oldest of the three rolls off
    assert "3 dials in 24 h" in decision.reason
    capped = CallingPolicy(max_attempts_per_trial=3)
    assert next_dial_time(now=now, dials=dials, place=MIAMI, policy=capped) is None


def test_inferred_places_and_refused_numbers() -> None:
    miami = infer_calling_place("+13055550123")
    assert (miami.timezones, miami.region, miami.inferred) == (("America/New_York",), "FL", True)
    assert infer_calling_place("+14055550123").region == "OK"
    assert infer_calling_place("+12065550123").region == "WA"
    given_zone = resolve_calling_place(phone="+13055550123", timezone="America/Chicago")
    assert (given_zone.timezones, given_zone.region, given_zone.inferred) == (
        ("America/Chicago",),
        "FL",
        False,
    )
    for bad in ("+442071234567", "not a number", "+15555550123"):
        with pytest.raises(UnknownPlaceError) as refused:
            infer_calling_place(bad)
        assert bad not in str(refused.value)


# --- properties -------------------------------------------------------------------------------

ZONES = st.sampled_from(
    [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Los_Angeles",
        "America/Anchorage",
        "Pacific/Honolulu",
        "America/Phoenix",
    ]
)
REGIONS = st.sampled_from([None, "FL", "OK", "WA", "TX", "CA"])
MOMENTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
POLICIES = st.builds(
    CallingPolicy,
    weekdays_only=st.booleans(),
    max_attempts_per_24h=st.integers(1, 6),
    max_attempts_per_trial=st.integers(1, 20),
    closing_margin_minutes=st.integers(0, 60),
)


@settings(max_examples=300, deadline=None)
@given(
    zone=ZONES,
    region=REGIONS,
    now=MOMENTS,
    policy=POLICIES,
    gaps=st.lists(st.integers(1, 3000), max_size=8),
)
def test_the_next_dial_time_is_always_lawful(
    zone: str, region: str | None, now: datetime, policy: CallingPolicy, gaps: list[int]
) -> None:
    place = CallingPlace(timezones=(zone,), region=region)
    dials = sorted(now - timedelta(minutes=sum(gaps[: i + 1])) for i in range(len(gaps)))
    decision = next_dial_time(now=now, dials=dials, place=place, policy=policy)
    if decision is None:  # a window always exists within the horizon here: only the trial cap
        assert len(dials) >= policy.max_attempts_per_trial
        return
    rule = effective_rule(place)
    at_local = decision.at.astimezone(ZoneInfo(zone))
    assert decision.at >= now
    assert rule.opens <= at_local.time()
    closing = datetime.combine(at_local.date(), rule.closes, tzinfo=ZoneInfo(zone))
    assert decision.at <= closing - timedelta(minutes=policy.closing_margin_minutes)
    if policy.weekdays_only:
        assert at_local.weekday() < 5
    assert len(dials_in_24h(dials, decision.at)) < daily_cap(place, policy)
    assert hours_verdict(decision.at, place, policy)[0]
    # Nothing earlier would have done: one minute before is refused by the hours or the cap.
    before = decision.at - timedelta(minutes=1)
    if before >= now:
        blocked_by_hours = not hours_verdict(before, place, policy)[0]
        blocked_by_cap = cap_release(dials, before, daily_cap(place, policy)) is not None
        assert blocked_by_hours or blocked_by_cap


@settings(max_examples=100, deadline=None)
@given(policy=POLICIES, unanswered=st.integers(1, 20))
def test_retry_waits_never_shrink(policy: CallingPolicy, unanswered: int) -> None:
    assert policy.retry_wait(unanswered + 1) >= policy.retry_wait(unanswered)
