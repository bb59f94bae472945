"""The dev stack's outreach demo: one outreach is scheduled, passes the gate, dials through the
sandbox's LiveKit emulator, and its answered call plays through the real agent session."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from agent.entrypoint import build_runtime
from agent.services import AgentRuntime
from config.settings import Settings
from config.temporal import connect
from contracts.calling_place import resolve_calling_place
from contracts.calling_policy import CallingPolicy, hours_verdict
from contracts.models import Trialist
from contracts.outreach import FINAL_STATUSES, ConsentRecord, OutreachStatus
from devtools.dispatch_runner import LABEL, DispatchRunner
from operators.outreach import Outreaches, build_outreach_input

# One demo number per zone (area code), so the demo can pick a zone inside calling hours now.
DEMO_NUMBERS = (
    ("+12125550150", "America/New_York"),
    ("+13125550150", "America/Chicago"),
    ("+13035550150", "America/Denver"),
    ("+14155550150", "America/Los_Angeles"),
    ("+19075550150", "America/Anchorage"),
    ("+18085550150", "Pacific/Honolulu"),
    ("+16715550150", "Pacific/Guam"),
)
POLL_SECONDS = 0.3


def demo_trialist(now: datetime, policy: CallingPolicy) -> Trialist:
    """A trialist whose local time is inside calling hours now (some US zone always is)."""
    for phone, zone in DEMO_NUMBERS:
        place = resolve_calling_place(phone=phone, timezone=zone)
        if hours_verdict(now, place, policy)[0]:
            break
    account = f"trial-demo-{uuid.uuid4().hex[:6]}"
    return Trialist(
        email=f"{account}@outreach-demo.example",
        name="Robin Outreach",
        company="Demo Co",
        phone=phone,
        trial_account_id=account,
        timezone=zone,
    )


async def run_outreach_demo(
    settings: Settings, runtime: AgentRuntime, *, out: Callable[[str], None], seconds: float
) -> OutreachStatus | None:
    """Start one outreach and follow it (printing each change) until it ends or time runs out."""
    client = await connect(settings, attempts=3)
    now = datetime.now(UTC)
    # The demo calls every day of the week, so a weekend evening still shows a dial.
    policy = CallingPolicy(weekdays_only=False)
    person = demo_trialist(now, policy)
    assert person.phone is not None
    place = resolve_calling_place(phone=person.phone, timezone=person.timezone)
    input = build_outreach_input(
        trialist=person,
        place=place,
        consent=ConsentRecord(recorded_at=now, source="dev stack demo"),
        settings=settings,
        now=now,
    ).model_copy(update={"policy": policy})
    out(f"\n{LABEL} ── outreach: {person.name} at {place.describe()} ──")
    ops = Outreaches(client, settings)
    await ops.start_all([(1, input)])
    # A fresh runtime: the demo calls before left the ChiliPiper breaker open on purpose.
    fresh = build_runtime(settings)
    runner = DispatchRunner(runtime=fresh, livekit_base_url=settings.livekit_api_base_url, out=out)
    stop = asyncio.Event()
    serving = asyncio.create_task(runner.serve(stop))
    last: tuple[OutreachStatus, str] | None = None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            progress = await ops.progress(person.trial_account_id)
            if last != (progress.status, progress.why):
                last = (progress.status, progress.why)
                when = (
                    f" — next {progress.next_attempt_local}" if progress.next_attempt_local else ""
                )
                out(f"{LABEL} outreach {progress.status.value}{when}: {progress.why}")
            if progress.status in FINAL_STATUSES:
                out(f"{LABEL} outreach finished: {progress.end.value if progress.end else '-'}")
                return progress.status
            await asyncio.sleep(POLL_SECONDS)
        return last[0] if last else None
    finally:
        stop.set()
        await serving
        await fresh.aclose()
