"""Promises a call made to its caller: which booking is owed, and a free slot that keeps it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

# A slot this close to now cannot be prepared for (the agent's own notice for the caller).
MIN_NOTICE: Final = timedelta(minutes=15)


def nearest_acceptable(
    requested: datetime,
    free: Sequence[datetime],
    *,
    window: timedelta,
    zone: ZoneInfo,
    now: datetime,
) -> datetime | None:
    """The free slot nearest the one asked for, within `window`, on the caller's same day.

    An invite for another day, or far from the hour the caller chose, is not the promise they
    heard: then there is none, and a person replies instead.
    """
    day = requested.astimezone(zone).date()
    acceptable = [
        slot
        for slot in free
        if abs(slot - requested) <= window
        and slot.astimezone(zone).date() == day
        and slot >= now + MIN_NOTICE
        and slot != requested
    ]
    if not acceptable:
        return None
    return min(acceptable, key=lambda slot: (abs(slot - requested), slot))
