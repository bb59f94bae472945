"""Outreach end to end: 20 trialists in 5 zones (8 states), a pinned clock, the real workers, the
sandbox's LiveKit emulator spoken to by livekit-api's own client, and answered calls played
through the real agent session (a scripted LLM stand-in) into real follow-ups.

The test server's clock is stepped by hand: only when no call or activity is in flight does it
jump to the next attempt, so a call in progress never sees time fly. The calls, the vendor
clients and the sandbox follow that clock (offered slots and "Thursday afternoon" are the
pinned week's). The test server leaks a time lock when an abandoned follow-up closes after its
outreach; OrphanedChildLocks returns each one, or the clock would stop. Prints the figures.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from agent.entrypoint import build_runtime
from config.clock import AdjustableClock
from config.encryption import data_converter_for
from contracts.calling_policy import hours_verdict
from contracts.names import OPT_OUT_UPDATE, workflow_id_for
from contracts.outreach import (
    FINAL_STATUSES,
    OptOutRequest,
    OptOutResult,
    OutreachInput,
    OutreachProgress,
    OutreachStatus,
    outreach_workflow_id,
)
from devtools.dispatch_runner import DispatchRunner, Persona
from integrations.clients import build_vendor_clients
from integrations.salesforce import SalesforceLead
from operators.outreach import Outreaches, parse_trialists_csv
from tests.agent.call_harness import agent_settings
from tests.servers import SandboxServer
from tests.workflows.outreach_harness import (
    OrphanedChildLocks,
    own_time_skipping_env,
    pin_clock,
    progress,
)
from worker import build_outreach_worker, build_worker, livekit_client

pytestmark = pytest.mark.e2e

# phone, zone column (blank: inferred), SIP script, persona of the person who answers
PEOPLE: list[tuple[str, str, list[str], Persona]] = [
    ("+12125550201", "", ["answered"], "book"),  # New York
    ("+13125550202", "", ["answered"], "book"),  # Chicago
    ("+13035550203", "", ["answered"], "not_interested"),  # Denver
    ("+14155550204", "", ["answered"], "book"),  # Los Angeles (opens 3 h later)
    ("+18085550205", "", ["answered"], "book"),  # Honolulu (opens 6 h later)
    ("+13055550206", "", ["no_answer", "no_answer", "answered"], "book"),  # Miami, FL
    ("+14055550207", "", ["no_answer", "busy", "answered"], "book"),  # Oklahoma City, OK
    ("+12065550208", "", ["busy", "answered"], "not_interested"),  # Seattle, WA
    ("+12125550209", "", ["voicemail", "answered"], "book"),
    ("+13125550210", "", ["voicemail", "answered"], "not_interested"),
    ("+14155550211", "", ["answered"], "opt_out"),
    ("+13055550212", "", ["answered"], "opt_out"),
    ("+13035550213", "", ["answered", "answered"], "callback"),  # called back Thursday: books
    ("+12125550214", "", ["answered"], "book"),  # on the do-not-call list (Salesforce)
    ("+14055550215", "", ["answered"], "book"),  # on the do-not-call list (Salesforce)
    ("+18085550216", "", ["failed"], "book"),  # never connects: attempts run out
    ("+12065550217", "", ["no_answer"], "book"),  # opted out by an operator in a retry wait
    ("+13125550218", "America/Chicago", ["busy", "answered"], "book"),
    ("+12125550219", "", ["garbled", "answered"], "book"),  # an answer nobody can parse
    ("+14155550220", "America/Los_Angeles", ["no_answer", "answered"], "not_interested"),
]
DO_NOT_CALL = {"+12125550214", "+14055550215"}
OPERATOR_OPT_OUT = "+12065550217"
BAD_ROWS = [
    "trial-bad-1,Bad Phone,bad1@example.com,+1555,,signup form",
    "trial-bad-2,Bad Zone,bad2@example.com,+12125550291,Mars/Olympus,signup form",
    "trial-bad-3,No Consent,bad3@example.com,+12125550292,,",
    "trial-e2e-01,Duplicate Row,dup@example.com,+12125550201,,signup form",
]
REAL_SECONDS = 90
LAST_REAL_SECONDS = timedelta(seconds=0.5)


def csv_text() -> str:
    lines = ["trial_account_id,name,email,phone,timezone,consent_source"]
    for index, (phone, zone, _, _) in enumerate(PEOPLE, start=1):
        lines.append(
            f"trial-e2e-{index:02d},Person {index:02d},p{index:02d}@example.com,{phone},{zone},"
            "trial signup form: checkbox 'call me about my trial'"
        )
    return "\n".join([*lines, *BAD_ROWS]) + "\n"


@pytest.fixture(scope="module")
async def outreach_env() -> AsyncIterator[WorkflowEnvironment]:
    async with own_time_skipping_env() as env:
        yield env


async def test_twenty_trialists_lawfully_through_the_livekit_emulator(
    outreach_env: WorkflowEnvironment, sandbox: SandboxServer, tmp_path: Path, task_queue: str
) -> None:
    env = outreach_env
    settings = agent_settings(
        sandbox=sandbox,
        data_dir=tmp_path,
        task_queue=task_queue,
        temporal_address=env.client.service_client.config.target_host,
        outreach_task_queue=f"{task_queue}-outreach",
        outreach_max_attempts_per_trial=4,
        outreach_holidays="none",
    )
    pinned = await pin_clock(env, "America/New_York", weekday=0, hour=9, minute=0)  # a Monday
    # The calls, the vendor clients and the sandbox read one calendar: the test server's clock
    # (seeded at the pinned Monday, moved on after every skip), so offered slots are not past.
    calendar = AdjustableClock()
    calendar.pin(pinned)
    sandbox.reset(now=pinned)
    for phone, _, outcomes, _ in PEOPLE:
        httpx2.put(
            f"{sandbox.url}/livekit/__sandbox/numbers/{phone}",
            json={"outcomes": outcomes},
            timeout=5,
        ).raise_for_status()
    plan = parse_trialists_csv(csv_text(), settings, now=pinned)
    inputs = {input.trialist.phone: input for _, input in plan.inputs}
    clients = build_vendor_clients(settings, clock=calendar)
    for phone in DO_NOT_CALL:  # the internal do-not-call list: the CRM's own flags
        person = inputs[phone].trialist
        await clients.salesforce.upsert_lead(
            SalesforceLead(
                trial_account_id=person.trial_account_id,
                last_name=person.last_name,
                email=person.email,
                company="Seeded",
                do_not_call=True,
            )
        )
    livekit = livekit_client(settings)
    runtime = build_runtime(settings, clock=calendar)
    runner = DispatchRunner(
        runtime=runtime,
        livekit_base_url=f"{sandbox.url}/livekit",
        personas={phone: persona for phone, _, _, persona in PEOPLE},
    )
    stop = asyncio.Event()
    started_real = time.monotonic()
    try:
        # Every call goes through a plain client: the environment's own one would unlock and
        # relock the server's clock around waits, and the test steps the clock itself.
        plain = await Client.connect(
            settings.temporal_target, data_converter=data_converter_for(settings)
        )
        async with (
            build_worker(plain, settings, clients=clients),
            build_outreach_worker(plain, settings, clients=clients, livekit=livekit),
        ):
            serving = asyncio.create_task(runner.serve(stop))
            await runtime.start_background()
            ops = Outreaches(plain, settings)
            started = await ops.start_all(plan.inputs)
            again = await ops.start_all(plan.inputs)  # a re-import starts nothing twice
            handles = {
                phone: plain.get_workflow_handle(
                    outreach_workflow_id(input.trialist.trial_account_id),
                    result_type=OutreachProgress,
                )
                for phone, input in inputs.items()
            }
            orphans = OrphanedChildLocks(env, plain, [h.id for h in handles.values()])
            sweeping = asyncio.create_task(orphans.run(stop))
            aligned = functools.partial(align_calendars, env, calendar, sandbox)
            final = await drive(env, handles, runner, inputs, after_skip=aligned)
            answered = [a for p in final.values() for a in p.attempts if a.result == "answered"]
            completed = await completed_follow_ups(plain, answered)
            stop.set()
            await serving
            await sweeping
    finally:
        stop.set()
        await runtime.aclose()
        await livekit.aclose()
        await clients.aclose()
    calls = httpx2.get(f"{sandbox.url}/livekit/__sandbox/calls", timeout=5).json()
    figures = report(final, inputs, calls, answered, completed, plan, started, again)
    print(json.dumps(figures, indent=2))
    print(f"real seconds: {time.monotonic() - started_real:.1f}")
    print(f"test-server time locks of abandoned follow-ups returned: {orphans.returned}")

    assert [(e.line, e.reason.split(":")[0]) for e in plan.errors] == [
        (22, "phone"),
        (23, "timezone"),
        (24, "consent_source"),
        (25, "duplicate of line 2 (same trial account or phone)"),
    ]
    assert figures["started"] == 20 and figures["restarted_by_reimport"] == 0
    assert figures["dials_outside_allowed_windows"] == 0
    assert figures["dials_after_an_opt_out"] == 0
    assert figures["follow_ups_completed_for_answered_calls"] == figures["answered"]
    assert figures["dials_placed"] == len(calls)  # every dial the emulator saw is recorded
    assert not DO_NOT_CALL & {call["call_to"] for call in calls}
    assert figures["max_concurrent_calls_per_number"] <= settings.outreach_max_calls_per_number
    ends = {phone: final[phone].end for phone in final}
    assert ends["+14155550211"] == "opted_out" and ends["+13055550212"] == "opted_out"
    assert ends["+12125550214"] == "do_not_call" and ends[OPERATOR_OPT_OUT] == "opted_out"
    callback_dials = [a.at for a in final["+13035550213"].attempts]
    assert len(callback_dials) == 2  # called again, on the Thursday afternoon it asked for
    thursday = callback_dials[1].astimezone(ZoneInfo("America/Denver"))
    assert (thursday.strftime("%A"), thursday.hour >= 12) == ("Thursday", True)
    assert ends["+18085550216"] == "attempts_exhausted"
    assert runner.log.refused == 0


async def drive(
    env: WorkflowEnvironment,
    handles: dict[str | None, WorkflowHandle[Any, Any]],
    runner: DispatchRunner,
    inputs: dict[str | None, OutreachInput],
    *,
    after_skip: Callable[[], Awaitable[None]],
) -> dict[str | None, OutreachProgress]:
    """Step the clock to the next attempt whenever nothing is in flight, until all are final.

    Calls run in real time; the clock only moves when no call, dial or gate is in progress.
    """
    deadline = time.monotonic() + REAL_SECONDS
    opted_out = False
    ended: dict[str | None, OutreachProgress] = {}
    while True:
        # An ended outreach changes no more; querying it again would replay its whole history.
        asking = [phone for phone in handles if phone not in ended]
        answers = await asyncio.gather(*(progress(handles[phone]) for phone in asking))
        states = {**ended, **dict(zip(asking, answers, strict=True))}
        ended = {
            phone: state
            for phone, state in states.items()
            if state.status in FINAL_STATUSES and state.end is not None
        }
        open_states = [state for phone, state in states.items() if phone not in ended]
        if not open_states:
            return states
        if time.monotonic() > deadline:
            stuck = {s.trial_account_id: (s.status.value, s.why) for s in open_states}
            raise AssertionError(f"outreach did not finish in time: {stuck}")
        if not opted_out and states[OPERATOR_OPT_OUT].status is OutreachStatus.RETRY_WAIT:
            await operator_opt_out(env, handles[OPERATOR_OPT_OUT], inputs[OPERATOR_OPT_OUT])
            opted_out = True
            continue
        now = await env.get_current_time()
        due = [s.next_attempt_at for s in open_states if s.next_attempt_at is not None]
        busy = runner.active > 0 or any(
            s.status in (OutreachStatus.DIALING, OutreachStatus.IN_CALL) for s in open_states
        )
        if busy or any(at <= now for at in due):
            await asyncio.sleep(0.1)  # work in flight, or a timer that just fired: real time
            continue
        target = min(due) if due else now + timedelta(minutes=30)
        if target - now <= LAST_REAL_SECONDS:
            await asyncio.sleep(0.1)  # the last moments before a dial pass in real time
            continue
        # Skip to just before the next dial, so no call runs inside the server's sleep call.
        await env.sleep(target - now - LAST_REAL_SECONDS + timedelta(milliseconds=200))
        await after_skip()


async def align_calendars(
    env: WorkflowEnvironment, calendar: AdjustableClock, sandbox: SandboxServer
) -> None:
    """Move the calls' and the sandbox's calendar to the test server's clock after a skip.

    Both then run on in real time, as the server's clock does while anything is in flight.
    """
    now = await env.get_current_time()
    calendar.pin(now)
    httpx2.post(
        f"{sandbox.url}/__sandbox/clock", json={"at": now.isoformat()}, timeout=5
    ).raise_for_status()


async def operator_opt_out(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], input: OutreachInput
) -> None:
    await handle.execute_update(
        OPT_OUT_UPDATE,
        OptOutRequest(
            trialist=input.trialist, requested_at=await env.get_current_time(), source="operator"
        ),
        result_type=OptOutResult,
    )


async def completed_follow_ups(client: Client, answered: list[Any]) -> int:
    done = 0
    for attempt in answered:
        handle = client.get_workflow_handle(workflow_id_for(attempt.call_id))
        for _ in range(100):
            description = await handle.describe()
            if description.status is not WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        done += description.status is WorkflowExecutionStatus.COMPLETED
    return done


def report(
    final: dict[str | None, OutreachProgress],
    inputs: dict[str | None, OutreachInput],
    calls: list[dict[str, Any]],
    answered: list[Any],
    completed: int,
    plan: Any,
    started: list[Any],
    again: list[Any],
) -> dict[str, Any]:
    blocked: Counter[str] = Counter()
    outside = after_opt_out = 0
    for phone, state in final.items():
        policy, place = inputs[phone].policy, inputs[phone].place
        for gate in state.gates:
            if not gate.allowed:
                blocked[_reason_kind(gate.reasons[0])] += 1
        for attempt in state.attempts:
            outside += not hours_verdict(attempt.at, place, policy)[0]
            if state.opted_out_at is not None and attempt.at > state.opted_out_at:
                after_opt_out += 1
    return {
        "trialists": len(final),
        "zones": sorted({i.place.timezones[0] for i in inputs.values()}),
        "rows_refused": [f"line {e.line}: {e.reason}" for e in plan.errors],
        "started": sum(1 for r in started if r.started),
        "restarted_by_reimport": sum(1 for r in again if r.started),
        "dials_placed": sum(len(s.attempts) for s in final.values()),
        "retried": sum(max(len(s.attempts) - 1, 0) for s in final.values()),
        "answered": len(answered),
        "blocked_by_reason": dict(blocked),
        "dials_outside_allowed_windows": outside,
        "dials_after_an_opt_out": after_opt_out,
        "follow_ups_completed_for_answered_calls": completed,
        "max_concurrent_calls_per_number": max_overlap(calls),
        "final": dict(
            Counter(f"{s.status.value}: {s.end.value if s.end else '-'}" for s in final.values())
        ),
    }


def _reason_kind(reason: str) -> str:
    for kind in (
        "outside calling hours",
        "do-not-call",
        "dials in 24 h",
        "opted out",
        "no consent",
        "CRMs could not",
    ):
        if kind in reason:
            return kind
    return reason[:40]


def max_overlap(calls: list[dict[str, Any]]) -> int:
    """The most calls in flight at once on one outbound number (the emulator's wall times)."""
    best = 0
    for call in calls:
        start = call["dialed_at"]
        end = call["ended_at"] or start
        overlapping = [
            other
            for other in calls
            if other["from_number"] == call["from_number"]
            and other["dialed_at"] <= start <= (other["ended_at"] or other["dialed_at"])
        ]
        best = max(best, len(overlapping) if end >= start else 1)
    return best
