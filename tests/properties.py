"""Hypothesis settings for the property tests, and the tally of what they tried.

CI runs a fixed seed and a bounded number of cases per surface (about 10,000 in all);
`HYPOTHESIS_PROFILE=long make pytest` runs twenty times as many, with fresh random seeds.
The tally is printed at the end of the run: cases per surface, clean refusals, crashes.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Final

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("long", parent=settings.get_profile("ci"), derandomize=False)
PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE: Final = 20 if PROFILE == "long" else 1


def cases(count: int) -> int:
    """How many examples a property test runs: `count` in CI, more in the long profile."""
    return count * SCALE


class Tally:
    """Cases per surface: accepted, refused cleanly, crashed (a crash also fails its test)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def accepted(self, surface: str) -> None:
        self.counts[(surface, "accepted")] += 1

    def refused(self, surface: str) -> None:
        self.counts[(surface, "refused")] += 1

    def crashed(self, surface: str) -> None:
        self.counts[(surface, "crashed")] += 1

    def dump(self) -> list[tuple[str, str, int]]:
        """The counts as plain data, for a pytest-xdist worker to send to the controller."""
        return [(surface, kind, count) for (surface, kind), count in self.counts.items()]

    def merge(self, dumped: list[tuple[str, str, int]]) -> None:
        for surface, kind, count in dumped:
            self.counts[(surface, kind)] += count

    def lines(self) -> list[str]:
        surfaces = sorted({surface for surface, _ in self.counts})
        rows = []
        for surface in surfaces:
            accepted, refused, crashed = (
                self.counts[(surface, kind)] for kind in ("accepted", "refused", "crashed")
            )
            rows.append(
                f"{surface}: {accepted + refused + crashed} cases, {accepted} accepted, "
                f"{refused} refused cleanly, {crashed} crashes"
            )
        return rows


TALLY: Final = Tally()
