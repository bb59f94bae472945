"""When a trialist may be called: calling hours by jurisdiction, attempt caps, the next dial time.

Pure code (no I/O, no clock): the outreach workflow, the agent's callback tool and the importer all
decide with the same functions. Sources of each rule are in docs/outreach.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, Field, model_validator

from contracts.models import IanaTimezone, _Model

FEDERAL: Final = "US"
DAY: Final = timedelta(hours=24)
# How far ahead a window is searched for; a longer gap (holidays, caps) means "none found".
SEARCH_HORIZON_DAYS: Final = 21
MAX_ZONES: Final = 4
MAX_HOLIDAYS: Final = 200
MAX_DIALS_CONSIDERED: Final = 100


@dataclass(frozen=True)
class CallingRule:
    """One jurisdiction's rule: calls may start from `opens` until before `closes`, local time."""

    jurisdiction: str
    opens: time
    closes: time
    max_calls_per_24h: int | None
    source: str


# The policy table. A state's rule applies on top of the federal one: the stricter value wins.
POLICY_TABLE: Final[Mapping[str, CallingRule]] = MappingProxyType(
    {
        FEDERAL: CallingRule(FEDERAL, time(8), time(21), None, "47 CFR 64.1200(c)(1)"),
        "FL": CallingRule("FL", time(8), time(20), 3, "Fla. Stat. § 501.616(6)"),
        "OK": CallingRule("OK", time(8), time(20), 3, "Okla. Stat. tit. 15, § 775C.4"),
        "WA": CallingRule("WA", time(8), time(20), None, "RCW 19.158.040(2), RCW 80.36.390"),
    }
)


class VoicemailAction(StrEnum):
    LEAVE_MESSAGE = "leave_message"  # one short message per outreach, then retries as usual
    RETRY = "retry"  # hang up without a message and retry


class CallingPlace(_Model):
    """Where the called party is taken to be: their zone(s) and US state, and how that is known.

    An inferred place (from the phone's area code) may name several zones; a dial must then be
    allowed in every one of them.
    """

    timezones: tuple[IanaTimezone, ...] = Field(min_length=1, max_length=MAX_ZONES)
    region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    inferred: bool = False
    basis: str = Field(default="contract", max_length=100)

    def describe(self) -> str:
        zones = " / ".join(self.timezones)
        where = f"{zones}, {self.region}" if self.region else zones
        return f"{where} ({'inferred from ' if self.inferred else 'from '}{self.basis})"


class CallingPolicy(_Model):
    """The team's own limits; they can only make the legal rules stricter, never looser."""

    weekdays_only: bool = True
    holidays: tuple[date, ...] = Field(default=(), max_length=MAX_HOLIDAYS)
    max_attempts_per_24h: int = Field(default=3, ge=1, le=10)
    max_attempts_per_trial: int = Field(default=6, ge=1, le=50)
    # Waits after the 1st, 2nd, ... unanswered dial; later ones reuse the last value.
    retry_backoff_minutes: tuple[int, ...] = Field(
        default=(60, 240, 1440), min_length=1, max_length=10
    )
    # No call starts this close to closing time: the dial's max call duration is the same, so
    # every call ends inside the window (a 20:30 start in a 21:00 zone could run past 21:00).
    closing_margin_minutes: int = Field(default=30, ge=0, le=120)
    voicemail: VoicemailAction = VoicemailAction.LEAVE_MESSAGE

    @model_validator(mode="after")
    def _widening(self) -> CallingPolicy:
        steps = self.retry_backoff_minutes
        if any(minutes < 1 for minutes in steps) or list(steps) != sorted(steps):
            raise ValueError("retry_backoff_minutes must be positive and never shrink")
        return self

    def retry_wait(self, unanswered: int) -> timedelta:
        """The wait after the `unanswered`-th unanswered dial in a row (1-based)."""
        steps = self.retry_backoff_minutes
        return timedelta(minutes=steps[min(max(unanswered, 1), len(steps)) - 1])


class Window(_Model):
    """A span in which a dial may start; `start` is inclusive, `end` exclusive."""

    start: AwareDatetime
    end: AwareDatetime


class DialTime(_Model):
    """When the next dial may happen, and why then (in the trialist's own words of time)."""

    at: AwareDatetime
    window_end: AwareDatetime
    reason: str


# --- the rule that applies -------------------------------------------------------------------


def effective_rule(place: CallingPlace) -> CallingRule:
    """The federal rule tightened by the place's state rule, when the table has one."""
    rules = [POLICY_TABLE[FEDERAL]]
    if place.region is not None and place.region in POLICY_TABLE:
        rules.append(POLICY_TABLE[place.region])
    caps = [rule.max_calls_per_24h for rule in rules if rule.max_calls_per_24h is not None]
    return CallingRule(
        jurisdiction="+".join(rule.jurisdiction for rule in rules),
        opens=max(rule.opens for rule in rules),
        closes=min(rule.closes for rule in rules),
        max_calls_per_24h=min(caps) if caps else None,
        source="; ".join(rule.source for rule in rules),
    )


def daily_cap(place: CallingPlace, policy: CallingPolicy) -> int:
    """Dials allowed in any 24 hours: the law's cap or the team's, whichever is lower."""
    legal = effective_rule(place).max_calls_per_24h
    return (
        min(policy.max_attempts_per_24h, legal)
        if legal is not None
        else policy.max_attempts_per_24h
    )


# --- calling hours ---------------------------------------------------------------------------


def _day_window(
    day: date, zone: ZoneInfo, rule: CallingRule, policy: CallingPolicy
) -> Window | None:
    """The allowed span of one local day in one zone, in UTC; None on a day off."""
    if policy.weekdays_only and day.weekday() >= 5:
        return None
    if day in policy.holidays:
        return None
    # The offset is the zone's on that day, so a DST change moves the UTC times with it.
    start = datetime.combine(day, rule.opens, tzinfo=zone).astimezone(UTC)
    closes = datetime.combine(day, rule.closes, tzinfo=zone).astimezone(UTC)
    end = closes - timedelta(minutes=policy.closing_margin_minutes)
    return Window(start=start, end=end) if end > start else None


def _zone_windows(
    after: datetime, zone: ZoneInfo, rule: CallingRule, policy: CallingPolicy
) -> list[Window]:
    first = after.astimezone(zone).date() - timedelta(days=1)
    days = (first + timedelta(days=offset) for offset in range(SEARCH_HORIZON_DAYS + 2))
    windows = (_day_window(day, zone, rule, policy) for day in days)
    return [window for window in windows if window is not None and window.end > after]


def _intersect(a: Sequence[Window], b: Sequence[Window]) -> list[Window]:
    """The spans inside both sorted lists (a place with several zones must allow all)."""
    found: list[Window] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i].start, b[j].start), min(a[i].end, b[j].end)
        if start < end:
            found.append(Window(start=start, end=end))
        if a[i].end <= b[j].end:
            i += 1
        else:
            j += 1
    return found


def allowed_windows(after: datetime, place: CallingPlace, policy: CallingPolicy) -> list[Window]:
    """Every allowed span that ends after `after`, within the search horizon, in order."""
    rule = effective_rule(place)
    spans: list[Window] | None = None
    for name in place.timezones:
        windows = _zone_windows(after, ZoneInfo(name), rule, policy)
        spans = windows if spans is None else _intersect(spans, windows)
    return spans or []


def next_window(after: datetime, place: CallingPlace, policy: CallingPolicy) -> Window | None:
    """The first allowed span at or after `after`, its start moved up to `after` when inside."""
    for window in allowed_windows(after, place, policy):
        return Window(start=max(window.start, after), end=window.end)
    return None


def hours_verdict(at: datetime, place: CallingPlace, policy: CallingPolicy) -> tuple[bool, str]:
    """Whether a dial may start at `at`, and a reason an operator can read."""
    window = next_window(at, place, policy)
    local = describe_local(at, place)
    rule = effective_rule(place)
    hours = f"{rule.opens:%H:%M}–{rule.closes:%H:%M} ({rule.jurisdiction}: {rule.source})"
    if window is not None and window.start <= at < window.end:
        return True, f"within calling hours: {local}; allowed {hours}"
    day_off = _day_off_reason(at, place, policy)
    return False, f"outside calling hours: {local}{day_off}; allowed {hours}"


def _day_off_reason(at: datetime, place: CallingPlace, policy: CallingPolicy) -> str:
    day = at.astimezone(ZoneInfo(place.timezones[0])).date()
    if day in policy.holidays:
        return " (a holiday)"
    if policy.weekdays_only and day.weekday() >= 5:
        return " (weekend: weekdays only)"
    return ""


def describe_local(at: datetime, place: CallingPlace) -> str:
    """`at` in each of the place's zones: "Tue 20:30 America/Los_Angeles"."""
    return ", ".join(
        f"{at.astimezone(ZoneInfo(name)):%a %Y-%m-%d %H:%M} {name}" for name in place.timezones
    )


# --- attempt caps ----------------------------------------------------------------------------


def dials_in_24h(dials: Iterable[datetime], at: datetime) -> list[datetime]:
    """The dials in the 24 hours up to and including `at`, oldest first."""
    return sorted(dial for dial in dials if at - DAY < dial <= at)


def cap_release(dials: Sequence[datetime], at: datetime, cap: int) -> datetime | None:
    """When another dial becomes allowed under a rolling 24-hour cap; None when it is now."""
    recent = dials_in_24h(dials[-MAX_DIALS_CONSIDERED:], at)
    if len(recent) < cap:
        return None
    return recent[len(recent) - cap] + DAY


def next_dial_time(
    *,
    now: datetime,
    dials: Sequence[datetime],
    place: CallingPlace,
    policy: CallingPolicy,
    not_before: datetime | None = None,
) -> DialTime | None:
    """The earliest time at or after `now` (and `not_before`) inside calling hours and the caps.

    None when the per-trial cap is used up or no window exists within the search horizon.
    """
    if len(dials) >= policy.max_attempts_per_trial:
        return None
    cap = daily_cap(place, policy)
    at = max(now, not_before) if not_before is not None else now
    because: list[str] = []
    if not_before is not None and not_before > now:
        because.append(f"not before {describe_local(not_before, place)}")
    for _ in range(SEARCH_HORIZON_DAYS * 4):  # each pass moves `at` forward; bounded anyway
        window = next_window(at, place, policy)
        if window is None:
            return None
        if window.start > at:
            because.append(f"calling hours open {describe_local(window.start, place)}")
        at = window.start
        release = cap_release(dials, at, cap)
        if release is None:
            reason = (
                "; ".join(because) or f"now is inside calling hours ({describe_local(at, place)})"
            )
            return DialTime(at=at, window_end=window.end, reason=reason)
        because.append(
            f"{cap} dials in 24 h reached; the next is allowed from "
            f"{describe_local(release, place)}"
        )
        at = release
    return None
