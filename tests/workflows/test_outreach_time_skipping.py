"""OutreachWorkflow's calendar rules on the time-skipping server, with the clock pinned.

Each test pins the server's clock to a local weekday and time (a week or more ahead, so the
result never depends on when the suite runs), runs the real workflow and reads the dials.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.calling_policy import CallingPolicy
from contracts.names import OPT_OUT_UPDATE
from contracts.outreach import (
    CallResult,
    DialResultKind,
    OptOutRequest,
    OptOutResult,
    OutreachEnd,
    OutreachProgress,
    OutreachStatus,
)
from tests.workflows.outreach_harness import (
    CALL_MINUTES,
    OrphanedChildLocks,
    Script,
    outreach_input,
    outreach_worker,
    own_time_skipping_env,
    pin_clock,
    pin_clock_to,
    start_outreach,
    trialist,
    until,
)

LA, NY = "America/Los_Angeles", "America/New_York"


@pytest.fixture(scope="module")
async def outreach_env() -> AsyncIterator[WorkflowEnvironment]:
    async with own_time_skipping_env() as env:
        yield env


TUESDAY, SATURDAY = 1, 5
NO_ANSWER = DialResultKind.NO_ANSWER


def local(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


async def test_la_at_20_30_is_dialed_at_8_next_weekday_never_before(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = outreach_env
    person = trialist("+14155550101")  # San Francisco area code: America/Los_Angeles, CA
    script = Script()
    async with outreach_worker(env.client, task_queue, script):
        started = await pin_clock(env, LA, weekday=TUESDAY, hour=20, minute=30)
        handle = await start_outreach(env.client, outreach_input(person, task_queue), task_queue)
        waiting = await until(handle, lambda p: p.next_attempt_at is not None)
        result: OutreachProgress = await handle.result()

    assert waiting.status is OutreachStatus.SCHEDULED
    assert waiting.next_attempt_local is not None
    assert (
        waiting.next_attempt_local.startswith("Wed")
        and "08:00 America/Los_Angeles" in waiting.next_attempt_local
    )
    assert "outside" in waiting.why or "calling hours open" in waiting.why
    dial = local(result.attempts[0].at, LA)
    assert (dial.date() - started.date(), dial.hour, dial.minute) == (timedelta(days=1), 8, 0)
    assert all(local(at, LA).hour >= 8 for _, at in script.dials)
    assert result.end is OutreachEnd.BOOKED and result.status is OutreachStatus.DONE
    assert result.gates[-1].allowed and any(
        "consent on record" in r for r in result.gates[-1].reasons
    )
    assert script.crm[-1].outreach_status == "done: booked"


async def test_florida_at_19_45_waits_for_8_with_at_most_3_dials_per_24h(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = outreach_env
    person = trialist("+13055550102")  # Miami: Florida's 8-20 and 3 calls per 24 h apply
    script = Script(dial_results={"+13055550102": [NO_ANSWER]})
    # The team's own caps are looser than Florida's on purpose: Florida's must bind.
    policy = CallingPolicy(
        max_attempts_per_24h=10, max_attempts_per_trial=6, retry_backoff_minutes=(60,)
    )
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock(env, NY, weekday=TUESDAY, hour=19, minute=45)
        handle = await start_outreach(
            env.client, outreach_input(person, task_queue, policy=policy), task_queue
        )
        first = await until(handle, lambda p: bool(p.gates) or p.next_attempt_at is not None)
        result: OutreachProgress = await handle.result()

    assert not result.attempts[0].at.astimezone(ZoneInfo(NY)).hour < 8
    assert first.attempts == []  # nothing was dialed at 19:45
    hours = [(local(a.at, NY).strftime("%a"), local(a.at, NY).hour) for a in result.attempts]
    assert hours == [("Wed", 8), ("Wed", 9), ("Wed", 10), ("Thu", 8), ("Thu", 9), ("Thu", 10)]
    times = [a.at for a in result.attempts]
    for at in times:
        assert sum(1 for other in times if at - timedelta(hours=24) < other <= at) <= 3
    assert result.end is OutreachEnd.ATTEMPTS_EXHAUSTED


async def test_an_opt_out_during_a_retry_wait_means_no_further_dial(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = outreach_env
    person = trialist("+12125550103")
    script = Script(dial_results={"+12125550103": [NO_ANSWER]})
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock(env, NY, weekday=TUESDAY, hour=10, minute=0)
        handle = await start_outreach(env.client, outreach_input(person, task_queue), task_queue)
        await until(handle, lambda p: p.status is OutreachStatus.RETRY_WAIT)
        opted: OptOutResult = await handle.execute_update(
            OPT_OUT_UPDATE,
            OptOutRequest(
                trialist=person, requested_at=await env.get_current_time(), source="operator"
            ),
            result_type=OptOutResult,
        )
        result: OutreachProgress = await handle.result()
        await env.sleep(timedelta(days=3))  # days pass: still nothing is dialed

    assert opted.crm_updated
    assert len(script.dials) == 1 and len(result.attempts) == 1
    assert (result.status, result.end) == (OutreachStatus.OPTED_OUT, OutreachEnd.OPTED_OUT)
    assert [u.do_not_call for u in script.crm] == [True]


async def test_a_number_on_the_do_not_call_list_is_never_dialed(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = outreach_env
    person = trialist("+12125550104")
    script = Script(do_not_call={person.trial_account_id})
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock(env, NY, weekday=TUESDAY, hour=10, minute=0)
        handle = await start_outreach(env.client, outreach_input(person, task_queue), task_queue)
        result: OutreachProgress = await handle.result()

    assert script.dials == [] and result.attempts == []
    assert (result.status, result.end) == (OutreachStatus.BLOCKED, OutreachEnd.DO_NOT_CALL)
    assert "do-not-call" in " ".join(result.gates[-1].reasons)
    assert script.crm[-1].do_not_call is True


async def test_no_answers_retry_at_widening_intervals(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = outreach_env
    person = trialist("+12125550105")
    script = Script(dial_results={"+12125550105": [NO_ANSWER]})
    policy = CallingPolicy(max_attempts_per_trial=4, retry_backoff_minutes=(60, 240, 1440))
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock(env, NY, weekday=TUESDAY, hour=9, minute=0)
        handle = await start_outreach(
            env.client, outreach_input(person, task_queue, policy=policy), task_queue
        )
        result: OutreachProgress = await handle.result()

    times = [a.at for a in result.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert [round(g.total_seconds() / 60) for g in gaps] == [60, 240, 1440]
    assert all(a.result is NO_ANSWER for a in result.attempts)
    assert result.end is OutreachEnd.ATTEMPTS_EXHAUSTED


def next_fall_back(after: date) -> date:
    """The next day New York's clocks go back (its offset shrinks overnight)."""
    zone = ZoneInfo(NY)
    day = after
    while True:
        today = datetime(day.year, day.month, day.day, tzinfo=zone).utcoffset()
        tomorrow = datetime(day.year, day.month, day.day, 23, 59, tzinfo=zone).utcoffset()
        if today is not None and tomorrow is not None and tomorrow < today:
            return day
        day += timedelta(days=1)


async def test_a_dst_change_day_opens_at_8_local_time(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = outreach_env
    person = trialist("+12125550106")
    script = Script(reports={"+12125550106": CallResult.NOT_INTERESTED})
    now = await env.get_current_time()
    change = next_fall_back((now + timedelta(days=2)).date())
    saturday = change - timedelta(days=1)
    policy = CallingPolicy(weekdays_only=False)  # the DST change is on a Sunday
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock_to(
            env, datetime(saturday.year, saturday.month, saturday.day, 21, 30, tzinfo=ZoneInfo(NY))
        )
        handle = await start_outreach(
            env.client, outreach_input(person, task_queue, policy=policy), task_queue
        )
        result: OutreachProgress = await handle.result()

    dial = result.attempts[0].at
    # 08:00 EST after the change is 13:00 UTC; the summer offset would have said 12:00 (07:00).
    opening = datetime(change.year, change.month, change.day, 13, 0, tzinfo=UTC)
    assert timedelta(0) <= dial - opening < timedelta(minutes=1)
    assert local(dial, NY).hour == 8
    assert result.end is OutreachEnd.NOT_INTERESTED
    assert result.status is OutreachStatus.DONE


async def test_a_call_stopped_by_an_opt_out_keeps_its_dial_slot_until_it_ends(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The opt-out ends the outreach, not the call: with one slot per number, the next dial
    waits for the stopped call's report (its follow-up's end), never overlaps it."""
    env = outreach_env
    first, second = trialist("+12125550108"), trialist("+12125550109")
    script = Script()
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock(env, NY, weekday=TUESDAY, hour=10, minute=0)
        one_slot = {"max_calls_per_number": 1}
        calling = await start_outreach(
            env.client, outreach_input(first, task_queue, **one_slot), task_queue
        )
        await until(calling, lambda p: p.status is OutreachStatus.IN_CALL)
        waiting = await start_outreach(
            env.client, outreach_input(second, task_queue, **one_slot), task_queue
        )
        orphans = OrphanedChildLocks(env, env.client, [calling.id, waiting.id])
        await calling.execute_update(
            OPT_OUT_UPDATE,
            OptOutRequest(trialist=first, requested_at=await env.get_current_time(), source="call"),
            result_type=OptOutResult,
        )
        stopped: OutreachProgress = await calling.result()
        await waiting.result()
    await orphans.sweep()  # a follow-up that closed after its outreach: its lock back

    call_ends = script.dial_times(first.phone or "")[0] + timedelta(minutes=CALL_MINUTES)
    assert stopped.end is OutreachEnd.OPTED_OUT and len(stopped.attempts) == 1
    assert script.dial_times(second.phone or "")[0] >= call_ends


async def test_a_callback_window_already_open_is_not_redialed_within_the_hour(
    outreach_env: WorkflowEnvironment, task_queue: str
) -> None:
    """ "Call me back this afternoon", said at 14:00: the next dial is not at once, but an hour
    after the call that asked, inside the window and lawful hours."""
    env = outreach_env
    phone = "+12125550107"
    person = trialist(phone)
    script = Script(
        reports_in_turn={phone: [CallResult.CALL_BACK, CallResult.BOOKED]},
        callback_window=(-timedelta(hours=2), timedelta(hours=3)),  # opened two hours ago
    )
    async with outreach_worker(env.client, task_queue, script):
        await pin_clock(env, NY, weekday=TUESDAY, hour=14, minute=0)
        handle = await start_outreach(env.client, outreach_input(person, task_queue), task_queue)
        result: OutreachProgress = await handle.result()

    first, second = script.dial_times(phone)
    asked_at = first + timedelta(minutes=CALL_MINUTES)  # the stand-in call reports at its end
    assert second - asked_at >= timedelta(hours=1)
    assert second - asked_at < timedelta(hours=1, minutes=5)
    assert local(second, NY).hour < 21
    assert result.end is OutreachEnd.BOOKED
