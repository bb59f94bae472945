"""The chaos run's printed figures and its last line, the verdict."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.chaos_checks import (
    CallJournal,
    Crm,
    FollowUp,
    OutboxRow,
    Verdict,
    median,
    percentile,
    verdict_for,
)
from bench.chaos_stack import FAULTS
from bench.chaos_temporal import TaskTimings
from devtools.scripted_llm import SCRIPTED_MODEL_LABEL

if TYPE_CHECKING:
    from bench.chaos import Options, Run

BOOKING_WAIT_SECONDS = 2.0  # the setting's default, which the run keeps
HANDOFF_TIMEOUT_SECONDS = 1.0
DETAIL_LINES = 12


@dataclass(frozen=True, kw_only=True)
class Observed:
    journals: dict[str, CallJournal]
    follow_ups: dict[str, FollowUp]
    timings: TaskTimings
    state: dict[str, list[dict[str, Any]]]
    outbox: list[OutboxRow]
    logs: dict[str, str]


def print_header(options: Options) -> None:
    workers = (
        "2 workers on one task queue running the workflows and the in-call booking, 2 more "
        "running the activities"
        if options.split_workers
        else "2 workers on one task queue"
    )
    print(
        f"chaos run: {options.n} calls on {options.agents} agent processes, {workers}, a "
        "Temporal dev server (db file) and the vendor sandbox, real processes on loopback"
    )
    print(f"the LLM: {SCRIPTED_MODEL_LABEL}; the agent session, tools, checkpoints and handoff "
          "are the real code; the agent processes share one outbox file")  # fmt: skip
    settings = ", ".join(f"{k}={v}" for k, v in options.agent_settings().items())
    print(f"short settings for the run: {settings}; workers HTTP_READ_TIMEOUT_SECONDS=3; "
          f"defaults kept: BOOKING_WAIT_SECONDS={BOOKING_WAIT_SECONDS:g}, "
          f"HANDOFF_TIMEOUT_SECONDS={HANDOFF_TIMEOUT_SECONDS:g}, "
          "HANDOFF_CALL_ENDED_TIMEOUT_SECONDS=5")  # fmt: skip
    outage = (
        f"Temporal SIGKILLed for {options.outage_seconds:g} s and restarted on its db file"
        if options.outage_of == "temporal"
        else f"both workers SIGKILLed for {options.outage_seconds:g} s, Temporal up"
    )
    print(f"faults: {outage}; each worker SIGKILLed once; {options.agent_kills} agent processes "
          "SIGKILLed mid-call; vendor faults all run:")  # fmt: skip
    for spec in FAULTS:
        print("  " + ", ".join(f"{k}={v}" for k, v in spec.items()))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} at the start", flush=True)


def report(run: Run, observed: Observed, *, began: float, load_before: tuple[float, ...]) -> int:
    journals = observed.journals
    crm = Crm.of(observed.state)
    verdicts = {
        call_id: verdict_for(journal, crm, observed.follow_ups.get(call_id))
        for call_id, journal in journals.items()
        if journal.started
    }
    not_started = [call_id for call_id, journal in journals.items() if not journal.started]
    _timeline(run)
    _calls(run, journals, verdicts, observed, not_started)
    _bookings(run, journals, observed.timings)
    _workflow_tasks(journals, observed.timings)
    _checkpoints(run, journals)
    _promises(journals, verdicts)
    relayed = _outbox(run, observed, journals)
    _completion(run, journals, observed)
    _kills(run, verdicts)
    _faults_seen(observed)
    _details(verdicts, not_started, observed, journals)
    _cpu_by_part(run)
    _load(began, load_before)
    lost = sum(1 for v in verdicts.values() if v.lost) + len(not_started)
    duplicated = sum(1 for v in verdicts.values() if v.duplicated)
    stuck = sum(1 for v in verdicts.values() if v.stuck)
    broken = sum(1 for v in verdicts.values() if v.broken_promise)
    print(
        f"chaos: {len(journals)} calls, {lost} lost, {duplicated} duplicated, {stuck} stuck, "
        f"{broken} broken promises, {relayed} via outbox, {len(run.kills)} agent kills, "
        f"{run.worker_kills} worker kills, {run.server_restarts} server restart, "
        f"{time.time() - began:.0f} s",
        flush=True,
    )
    return 0


def _timeline(run: Run) -> None:
    print("timeline (seconds from the first call):")
    for at, text in run.events:
        print(f"  {at - run.start:+7.1f}  {text}")


def _calls(
    run: Run,
    journals: dict[str, CallJournal],
    verdicts: dict[str, Verdict],
    observed: Observed,
    not_started: list[str],
) -> None:
    started = [j for j in journals.values() if j.started]
    killed = [j for j in started if j.killed_at is not None]
    errors = sum(len(j.errors) for j in journals.values())
    overran = [c for c, j in journals.items() if j.ended_at is not None and j.ended_handoff is None]
    stored = {row.call_id for row in observed.outbox if row.kind == "call_ended"}
    unheard = sum(
        1 for j in killed if j.killed_unheard and j.call.call_id not in observed.follow_ups
    )
    statuses = Counter(
        (f.status, f.follow_up_status) for c, f in observed.follow_ups.items() if c in journals
    )
    print(
        f"calls: {len(journals)} planned, {len(started)} started, {len(not_started)} never "
        f"started, {len(started) - len(killed)} ended by the caller or end_call, {len(killed)} "
        f"lost their agent ({len(run.kills)} kills; {unheard} of them in their first second, "
        f"before anything was said or checkpointed); {errors} failed in the bench's own code"
    )
    print(
        f"outcome handoffs that overran the session end's budget: {len(overran)}, of which "
        f"{sum(1 for c in overran if c in stored)} were stored in the outbox"
    )
    print("follow-ups: " + ", ".join(f"{n} {s}/{a}" for (s, a), n in statuses.most_common()))
    lost_marked = [c for c, f in observed.follow_ups.items() if f.agent_lost and c in journals]
    alive = [c for c in lost_marked if journals[c].killed_at is None]
    print(
        f"follow-ups that went on from the last checkpoint (agent_lost): {len(lost_marked)}, "
        f"of which {len(alive)} had a live agent"
    )


def _bookings(run: Run, journals: dict[str, CallJournal], timings: TaskTimings) -> None:
    up: list[dict[str, Any]] = []
    down: list[dict[str, Any]] = []
    accepting: list[float] = []
    for call_id, journal in journals.items():
        for entry in journal.handoffs:
            if entry["kind"] != "book_meeting":
                continue
            sent = float(entry["t"]) - float(entry["seconds"])
            (down if _during_outage(run, sent) else up).append(entry)
            later = [at - sent for at in timings.accepted_at.get(call_id, []) if at >= sent - 1]
            if later and not _during_outage(run, sent):
                accepting.append(min(later))
    confirmed = [e for e in up if e["status"] == "confirmed"]
    share = 100.0 * len(confirmed) / len(up) if up else float("nan")
    seconds = [float(e["seconds"]) for e in up]
    statuses = Counter(e["status"] for e in up)
    while_up = f"{run.options.down_name} up"
    print(
        f"in-call bookings confirmed within the booking wait ({BOOKING_WAIT_SECONDS:g} s), "
        f"{while_up}: {len(confirmed)}/{len(up)} ({share:.1f} %); the booking handoff took "
        f"p50 {median(seconds):.2f} s, max {max(seconds, default=float('nan')):.2f} s; "
        + ", ".join(f"{status} {count}" for status, count in statuses.most_common())
    )
    print(
        f"  book_meeting sent to accepted in the workflow's history, {while_up}: p50 "
        f"{median(accepting):.2f} s, p95 {percentile(accepting, 0.95):.2f} s, max "
        f"{max(accepting, default=float('nan')):.2f} s ({len(accepting)}; the handoff waits up "
        f"to the booking wait for it: the workflow books in the task that accepts it)"
    )
    _bookings_by_moment(run, up)
    queued = Counter(e["status"] for e in down)
    print(
        f"  bookings made while {run.options.down_name} {run.options.was} down: {len(down)} ("
        + ", ".join(f"{status} {count}" for status, count in queued.most_common())
        + ")"
    )


# How long after Temporal's return, or after a worker host's kill, a booking counts as made in
# that fault's wake rather than in steady running.
AFTER_RETURN_SECONDS = 30.0
AFTER_WORKER_KILL_SECONDS = 10.0


def _by_moment(run: Run, entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Handoffs sent while Temporal was up, split by when: steady, after its return, after a
    worker kill."""
    kills = [at for at, text in run.events if "SIGKILLed" in text and text.startswith("worker")]
    moments: dict[str, list[dict[str, Any]]] = {
        "steady": [],
        f"<= {AFTER_RETURN_SECONDS:g} s after {run.options.return_name}": [],
        f"<= {AFTER_WORKER_KILL_SECONDS:g} s after a worker kill": [],
    }
    names = list(moments)
    for entry in entries:
        sent = float(entry["t"]) - float(entry["seconds"])
        if run.back_at is not None and 0 <= sent - run.back_at <= AFTER_RETURN_SECONDS:
            moments[names[1]].append(entry)
        elif any(0 <= sent - at <= AFTER_WORKER_KILL_SECONDS for at in kills):
            moments[names[2]].append(entry)
        else:
            moments[names[0]].append(entry)
    return moments


def _checkpoints(run: Run, journals: dict[str, CallJournal]) -> None:
    """How long Temporal took to take a checkpoint (a signal-with-start: no worker involved),
    by moment: the server's and the agents' own share of a booking's wait."""
    sent_up = [
        entry
        for journal in journals.values()
        for entry in journal.handoffs
        if entry["kind"] == "checkpoint"
        and not _during_outage(run, float(entry["t"]) - float(entry["seconds"]))
    ]
    parts = []
    for name, entries in _by_moment(run, sent_up).items():
        seconds = [float(e["seconds"]) for e in entries]
        over = sum(1 for e in entries if e["status"] == "queued")
        parts.append(
            f"{name}: p50 {median(seconds):.2f} s, p95 {percentile(seconds, 0.95):.2f} s, "
            f"{over}/{len(entries)} over the {HANDOFF_TIMEOUT_SECONDS:g} s handoff timeout"
        )
    label = f"checkpoints (signal-with-start, no worker in the path), {run.options.down_name} up: "
    print(label + "; ".join(parts))


def _bookings_by_moment(run: Run, up: list[dict[str, Any]]) -> None:
    """The in-call figure split by when the booking was made: where the misses are."""
    moments = _by_moment(run, up)
    parts = []
    for name, entries in moments.items():
        answered = [e for e in entries if e["status"] in ("confirmed", "unavailable")]
        confirmed = sum(1 for e in entries if e["status"] == "confirmed")
        parts.append(
            f"{name}: {confirmed}/{len(entries)} confirmed, {len(answered)}/{len(entries)} "
            "answered (confirmed or taken)"
        )
    print("  by moment: " + "; ".join(parts))


def _workflow_tasks(journals: dict[str, CallJournal], timings: TaskTimings) -> None:
    checkpoints = [
        sum(1 for e in j.handoffs if e["kind"] == "checkpoint") for j in journals.values()
    ]
    print(
        f"workflow tasks: {timings.tasks} for {len(journals)} calls ({timings.signals} signals; "
        f"checkpoints sent per call p50 {median(checkpoints):.0f}); waiting for a worker p50 "
        f"{median(timings.queued):.2f} s, p95 {percentile(timings.queued, 0.95):.2f} s; on the "
        f"worker p50 {median(timings.running):.2f} s, p95 {percentile(timings.running, 0.95):.2f} s"
    )


def _during_outage(run: Run, at: float) -> bool:
    return run.down_at is not None and run.down_at <= at <= (run.back_at or float("inf"))


def _promises(journals: dict[str, CallJournal], verdicts: dict[str, Verdict]) -> None:
    promised = [c for c, j in journals.items() if j.promised_at is not None and c in verdicts]
    booked = [c for c in promised if verdicts[c].booked]
    moved = [c for c in booked if verdicts[c].moved]
    owed = [c for c in promised if not verdicts[c].booked and verdicts[c].owed]
    broken = [c for c in verdicts if verdicts[c].broken_promise]
    confirmed = sum(1 for j in journals.values() if j.confirmed_at is not None)
    print(
        f"promises: {confirmed} bookings confirmed to the caller; {len(promised)} told the "
        f"invite will follow by email: {len(booked)} booked after the call ({len(moved)} moved "
        f"to a free slot nearby), {len(owed)} owed a reply (Salesforce task and HubSpot note); "
        f"{len(broken)} broken"
    )


def _outbox(run: Run, observed: Observed, journals: dict[str, CallJournal]) -> int:
    rows = observed.outbox
    relayed = [row for row in rows if row.relayed]
    refused = sum(1 for row in rows if row.refused)
    closed = sum(1 for row in rows if row.delivered_at is not None and not row.relayed)
    pending = sum(1 for row in rows if row.delivered_at is None)
    kinds = Counter(row.kind for row in relayed)
    print(
        f"outbox: {len(relayed)} messages delivered by the relays ("
        + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
        + f"); {closed - refused} closed by the handoff (superseded or resent), {refused} "
        f"refused by the workflow, {pending} still waiting"
    )
    queued_up = Counter(
        entry["kind"]
        for journal in journals.values()
        for entry in journal.handoffs
        if entry["status"] == "queued"
        and not _during_outage(run, float(entry["t"]) - float(entry["seconds"]))
    )
    print(
        f"  handoffs that went to the outbox while {run.options.down_name} {run.options.was} up: "
        + (", ".join(f"{kind} {n}" for kind, n in queued_up.most_common()) or "none")
    )
    _after_outage(run, rows)
    return len(relayed)


def _after_outage(run: Run, rows: list[OutboxRow]) -> None:
    if run.back_at is None or run.down_at is None:
        print("outbox delivery after the outage: no outage happened")
        return
    waiting = [row for row in rows if row.id in run.waiting_at_return]
    delays = [row.delivered_at - run.back_at for row in waiting if row.delivered_at is not None]
    within = sum(1 for delay in delays if delay <= 10.0)
    print(
        f"outbox delivery after the outage ({run.options.down_name} down "
        f"{run.back_at - run.down_at:.1f} s): "
        f"{len(waiting)} messages waiting at its return, delivered p50 {median(delays):.1f} s, "
        f"max {max(delays, default=float('nan')):.1f} s after it ({within}/{len(waiting)} "
        f"within 10 s; {len(waiting) - len(delays)} never)"
    )


def _completion(run: Run, journals: dict[str, CallJournal], observed: Observed) -> None:
    ended: list[float] = []
    ended_up: list[float] = []
    lost: list[float] = []
    for call_id, journal in journals.items():
        follow_up = observed.follow_ups.get(call_id)
        if follow_up is None or follow_up.close_time is None or not journal.started:
            continue
        closed = follow_up.close_time.timestamp()
        if journal.killed_at is not None:
            lost.append(closed - journal.killed_at)
        elif journal.hangup_at is not None:
            ended.append(closed - journal.hangup_at)
            if not _during_outage(run, journal.hangup_at):
                ended_up.append(closed - journal.hangup_at)
    print(
        f"hang-up to completed: p50 {median(ended):.1f} s, p99 {percentile(ended, 0.99):.1f} s "
        f"({len(ended)} calls); hung up while {run.options.down_name} {run.options.was} up: p50 "
        f"{median(ended_up):.1f} s, "
        f"p99 {percentile(ended_up, 0.99):.1f} s ({len(ended_up)})"
    )
    print(
        f"agent killed to completed: p50 {median(lost):.1f} s, max "
        f"{max(lost, default=float('nan')):.1f} s ({len(lost)} calls; liveness "
        f"{run.options.liveness_seconds:g} s)"
    )


def _kills(run: Run, verdicts: dict[str, Verdict]) -> None:
    total_lost = 0
    for number, kill in enumerate(run.kills, start=1):
        said = lost = 0
        ages: list[float] = []
        for call_id in kill.in_flight:
            verdict = verdicts.get(call_id)
            if verdict is None:
                continue
            said += verdict.kept_items + len(verdict.lost_items)
            lost += len(verdict.lost_items)
            ages += [kill.at - at for at, _ in verdict.lost_items]
        total_lost += lost
        span = f", said {min(ages):.1f}-{max(ages):.1f} s before the kill" if ages else ""
        print(
            f"agent kill {number} ({kill.host}, {len(kill.in_flight)} calls in flight): {said} "
            f"signals and notes said before the kill, {lost} lost{span} (checkpoint interval "
            f"{run.options.checkpoint_interval:g} s)"
        )
    if run.kills:
        print(f"signals and notes lost per agent kill: {total_lost / len(run.kills):.1f}")


def _faults_seen(observed: Observed) -> None:
    seen: Counter[str] = Counter()
    for vendor in ("salesforce", "hubspot"):
        for request in observed.state.get(f"{vendor}_requests", []):
            status = int(request["status"])
            if status in (429, 503):
                seen[f"{vendor} {status}"] += 1
    workers = "".join(text for name, text in observed.logs.items() if name.startswith("worker"))
    seen["ambiguous bookings (commit, then timeout)"] = workers.count("booking outcome unknown")
    seen["bookings reconciled"] = workers.count("booking reconciled")
    print("vendor faults seen: " + ", ".join(f"{k} x{n}" for k, n in seen.items()))
    errors = {
        name: len(re.findall(r" (ERROR|CRITICAL) ", text)) for name, text in observed.logs.items()
    }
    agent_tracebacks = sum(
        text.count("Traceback") for name, text in observed.logs.items() if name.startswith("agent")
    )
    listed = ", ".join(f"{name} {n}" for name, n in sorted(errors.items()) if n) or "none"
    print(f"log lines at ERROR: {listed}; tracebacks in agent logs: {agent_tracebacks}")


def _details(
    verdicts: dict[str, Verdict],
    not_started: list[str],
    observed: Observed,
    journals: dict[str, CallJournal],
) -> None:
    lines = [f"{call_id}: never started" for call_id in not_started]
    for call_id, verdict in verdicts.items():
        problems = verdict.missing + verdict.duplicated
        follow_up = observed.follow_ups.get(call_id)
        if follow_up is not None and follow_up.agent_lost and journals[call_id].killed_at is None:
            problems.append("taken for lost while its agent was alive")
        if verdict.stuck:
            problems.append(f"stuck ({verdict.stuck})")
        if verdict.broken_promise:
            problems.append(verdict.broken_promise)
        if problems:
            lines.append(f"{call_id}: " + "; ".join(problems))
    for line in lines[:DETAIL_LINES]:
        print(f"  problem: {line}")
    if len(lines) > DETAIL_LINES:
        print(f"  ... and {len(lines) - DETAIL_LINES} more")


def _cpu_by_part(run: Run) -> None:
    parts: dict[str, float] = {}
    for (name, _), used in run.cpu.items():
        part = name.split("-")[0]
        parts[part] = parts.get(part, 0.0) + used
    ordered = sorted(parts.items(), key=lambda item: -item[1])
    print("CPU-s by part: " + ", ".join(f"{part} {used:.0f}" for part, used in ordered))


def _load(began: float, load_before: tuple[float, ...]) -> None:
    times = os.times()
    cpu = times.children_user + times.children_system + times.user + times.system
    wall = time.time() - began
    cores = os.cpu_count() or 1
    print(
        f"load: load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; the "
        f"run's processes used {cpu:.0f} CPU-s in {wall:.0f} s ({100 * cpu / wall / cores:.0f} % "
        f"of {cores} cores)"
    )
