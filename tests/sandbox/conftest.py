"""Hypothesis profiles for the sandbox's property tests, and the figures they print at the end.

CI runs the `sandbox-ci` profile (a fixed seed, a bounded count); `HYPOTHESIS_PROFILE=long`
selects `sandbox-long` for a longer search. Neither changes the global default profile.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "sandbox-ci",
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("sandbox-long", settings.get_profile("sandbox-ci"), max_examples=1500)
SANDBOX_PROFILE = settings.get_profile(
    "sandbox-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "sandbox-ci"
)

# (surface, outcome) -> cases; filled by tests/sandbox/test_hostile_bodies.py.
FIGURES: Counter[tuple[str, str]] = Counter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    surfaces = sorted({surface for surface, _ in FIGURES})
    outcomes = ("refused", "accepted", "crashed")
    terminalreporter.section("sandbox hostile-input figures")
    terminalreporter.write_line(
        f"{'surface':<44} {'cases':>6} " + " ".join(f"{o:>8}" for o in outcomes)
    )
    for surface in surfaces:
        counts = [FIGURES[(surface, outcome)] for outcome in outcomes]
        terminalreporter.write_line(
            f"{surface:<44} {sum(counts):>6} " + " ".join(f"{c:>8}" for c in counts)
        )
    totals = [sum(FIGURES[(s, o)] for s in surfaces) for o in outcomes]
    terminalreporter.write_line(
        f"{'total':<44} {sum(totals):>6} " + " ".join(f"{c:>8}" for c in totals)
    )
