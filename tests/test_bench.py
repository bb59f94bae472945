"""The throughput benchmark runs end to end and prints its figures (no speed is asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.follow_up_throughput import VendorFreeActivities
from contracts import FollowUpStep

ROOT = Path(__file__).resolve().parent.parent
BATCH_LINE = re.compile(
    r"^\s+(follow-ups|bare workflows|no vendor I/O|no codec)\s+[\d.]+/s\s+p50", re.M
)


def bench_output(script: str, *args: str, timeout: float) -> str:
    """What `python bench/<script> args` prints; it must exit 0."""
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _activity_name(method: object) -> str:
    definition = getattr(method, "__temporal_activity_definition")  # set by @activity.defn
    return str(definition.name)


def test_the_stand_ins_answer_every_follow_up_activity() -> None:
    names = [_activity_name(m) for m in VendorFreeActivities().activity_methods()]
    assert sorted(names) == sorted(step.value for step in FollowUpStep)


def test_follow_up_throughput_prints_every_figure() -> None:
    out = bench_output("follow_up_throughput.py", "--n", "3", "--concurrency", "2", timeout=180)
    assert sorted(BATCH_LINE.findall(out)) == [
        "bare workflows",
        "follow-ups",
        "no codec",
        "no vendor I/O",
    ]
    # The verdict judges the orchestration overhead; end to end is for information only.
    assert re.search(
        r"^verdict: orchestration overhead, ratio no vendor I/O/bare: \d+\.\d\d — "
        r"(meets|is BELOW) the target of 0\.9 ",
        out,
        re.M,
    )
    assert re.search(r"^ratio follow-ups/bare: \d+\.\d\d — end to end .*for information", out, re.M)
    assert "target of 0.8" not in out
    # The vendor I/O's cost per request, measured in the same run.
    assert re.search(
        r"^vendor I/O per request \(\d+\.\d requests per follow-up\): -?\d+\.\d ms of p50 "
        r"latency, -?\d+\.\d\d ms of throughput time, CPU -?\d+\.\d\d ms",
        out,
        re.M,
    )
    assert re.search(
        r"^ratio follow-ups with/without the payload codec: \d+\.\d\d — (meets|is BELOW)", out, re.M
    )
    # Real vendor requests on the follow-up side only (about 11 each; a token refresh adds some).
    requests = dict(
        re.findall(r"^\s+(follow-ups|bare workflows)\s+CPU.*?([\d.]+) HTTP requests", out, re.M)
    )
    assert float(requests["follow-ups"]) >= 10 and float(requests["bare workflows"]) == 0
    # Heartbeat RPCs counted on the server's metrics page, for every batch.
    heartbeats = dict(
        re.findall(
            r"^\s+(follow-ups|bare workflows|no vendor I/O)\s+CPU.*?([\d.]+) heartbeats$", out, re.M
        )
    )
    assert sorted(heartbeats) == ["bare workflows", "follow-ups", "no vendor I/O"]
    assert float(heartbeats["bare workflows"]) == 0


def test_codec_cost_prints_every_payloads_figures() -> None:
    out = bench_output("codec_cost.py", "--rounds", "200", timeout=120)
    sizes = re.findall(r"^(.+?): (\d+) B plain, (\d+) B encrypted .*, (\d+) B zlib", out, re.M)
    assert [name for name, *_ in sizes] == [
        "follow-up input",
        "call_ended outcome",
        "booking request",
        "progress",
    ]
    for _, plain, sealed, _zipped in sizes:
        assert int(sealed) > int(plain)  # nonce, tag and key id: encrypted is never smaller
    timings = re.findall(r"codec encode p50 ([\d.]+) µs  p99 ([\d.]+) µs", out)
    assert len(timings) == 4 and all(float(p50) <= float(p99) for p50, p99 in timings)


def test_history_bytes_prints_the_figure_per_follow_up() -> None:
    out = bench_output("history_bytes.py", "--n", "1", timeout=180)
    sizes = dict(
        re.findall(r"^\s+(encrypted \(production\)|without the codec)\s+([\d,]+) B", out, re.M)
    )
    assert set(sizes) == {"encrypted (production)", "without the codec"}
    sealed, plain = (int(sizes[k].replace(",", "")) for k in sorted(sizes))
    assert sealed > plain > 0  # the same follow-up, so the codec can only add bytes
    assert re.search(r"^\s+activity_task_scheduled\s+[\d,]+ B$", out, re.M)


def test_the_chaos_run_refuses_an_unknown_outage_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", "--outage-of", "the-moon"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--outage-of is 'temporal' or 'workers'" in done.stderr
    assert "Traceback" not in done.stderr
