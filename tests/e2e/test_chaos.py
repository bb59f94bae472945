"""The chaos run, small (bench/chaos.py): every fault happens, and nothing is lost, duplicated,
left stuck or promised in vain.

About two minutes on 2 cores: 24 scripted calls on two agent processes, a short Temporal outage
(shorter than the liveness window), both workers and two agent processes SIGKILLed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parents[2]
CALLS = 24
VERDICT = re.compile(
    r"^chaos: (?P<calls>\d+) calls, (?P<lost>\d+) lost, (?P<duplicated>\d+) duplicated, "
    r"(?P<stuck>\d+) stuck, (?P<broken>\d+) broken promises, (?P<outbox>\d+) via outbox, "
    r"(?P<agent_kills>\d+) agent kills, (?P<worker_kills>\d+) worker kills, "
    r"(?P<restarts>\d+) server restart, (?P<seconds>\d+) s$"
)


def figure(pattern: str, text: str) -> tuple[str, ...]:
    found = re.search(pattern, text, re.M)
    assert found is not None, f"no line matches {pattern!r}:\n{text}"
    return found.groups()


def test_a_small_chaos_run_loses_duplicates_strands_and_breaks_nothing() -> None:
    done = subprocess.run(
        [
            sys.executable, "bench/chaos.py", "--n", str(CALLS), "--agents", "2",
            "--agent-kills", "2", "--outage-seconds", "6", "--liveness-seconds", "15",
            "--grace-seconds", "90", "--ramp-seconds", "36",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=450, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    verdict = VERDICT.match(out.strip().splitlines()[-1])
    assert verdict is not None, out
    counts = {name: int(value) for name, value in verdict.groupdict().items()}
    assert counts["calls"] == CALLS
    assert (counts["lost"], counts["duplicated"], counts["stuck"], counts["broken"]) == (
        0,
        0,
        0,
        0,
    ), out
    # Every fault happened: the kills, the restart, and an outage the outbox rode out.
    assert (counts["agent_kills"], counts["worker_kills"], counts["restarts"]) == (2, 2, 1), out
    assert counts["outbox"] > 0, out
    waiting = figure(r"^outbox delivery after the outage \(Temporal down ([\d.]+) s\): (\d+)", out)
    assert float(waiting[0]) > 0 and int(waiting[1]) > 0, out
    in_flight = re.findall(r"^agent kill \d \(\S+, (\d+) calls in flight\)", out, re.M)
    assert len(in_flight) == 2 and all(int(n) > 0 for n in in_flight), out
    # The killed calls reached the CRM through the liveness rule, and no live call was taken
    # for lost.
    went_on = figure(r"^follow-ups that went on .*: (\d+), of which (\d+) had a live agent", out)
    assert int(went_on[0]) >= 1 and int(went_on[1]) == 0, out
    # Promises found taken after the call: one moved to a free slot nearby, one owed a reply.
    moved, owed = figure(r"\((\d+) moved to a free slot nearby\), (\d+) owed a reply", out)
    assert int(moved) >= 1 and int(owed) >= 1, out
    faults = dict(
        re.findall(r"([a-z]+ \d{3}) x(\d+)", figure(r"^vendor faults seen: (.*)$", out)[0])
    )
    assert all(int(faults.get(kind, 0)) > 0 for kind in ("salesforce 503", "hubspot 429")), out
