"""`python -m agent demo`: scripted demo calls through the real agent, tools, breakers and handoff.

No model is involved: a scripted LLM stand-in (devtools/scripted_llm.py) plays fixed turns in a text
AgentSession, so every spoken line is labelled "[scripted demo]". Everything behind it is real:
the tools, the circuit breakers, the vendor APIs (the sandbox by default), the Temporal handoff
and the follow-up workflow run by the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
from livekit.agents import ConversationItemAddedEvent, FunctionToolsExecutedEvent, llm
from temporalio.client import Client
from temporalio.service import RPCError

from agent.entrypoint import agent_for, build_runtime, new_call_session
from agent.services import AgentRuntime, CallServices
from agent.trialist_agent import offered_start_times, spoken_time
from config.clock import Clock, system_clock
from config.settings import Settings, Vendor, VendorMode
from config.temporal import TemporalConnectError, connect
from contracts.models import EndedReason, FollowUpProgress, FollowUpStatus, StepState, Trialist
from contracts.names import PROGRESS_QUERY, workflow_id_for
from devtools.people import DANA, MARCO, PRIYA
from devtools.scripted_llm import (
    CallTools,
    Reply,
    ScriptedLLM,
    ScriptedTurn,
    ScriptView,
    ToolCall,
)
from integrations.chilipiper import ChiliPiperGuest

logger = logging.getLogger(__name__)

LABEL = "[scripted demo]"
# How long the demo waits for the shared breaker store's answer before printing a state.
BREAKER_SETTLE_SECONDS = 1.0
DEFAULT_FOLLOW_SECONDS = 45.0
POLL_SECONDS = 0.5
SETTLED = frozenset({FollowUpStatus.COMPLETED, FollowUpStatus.NEEDS_ATTENTION})

Out = Callable[[str], None]

HUBSPOT_VALIDATION_ERROR = {
    "status": "error",
    "message": "Property values were not valid",
    "correlationId": "0f6c9a4e-demo-4c55-9d0e-5b1f2a7c3d21",
    "category": "VALIDATION_ERROR",
    "errors": [
        {
            "message": "Email address is invalid",
            "code": "INVALID_EMAIL",
            "context": {"propertyName": ["email"]},
        }
    ],
}


@dataclass(frozen=True, kw_only=True)
class DemoCallResult:
    """What one demo call did, for the dev stack's summary and the end-to-end test."""

    number: int
    title: str
    call_id: str | None = None
    workflow_id: str | None = None
    ui_link: str | None = None
    ended_reason: EndedReason | None = None
    handoff: str | None = None
    follow_up_status: FollowUpStatus | None = None
    skipped: str | None = None
    transcript: tuple[tuple[str, str], ...] = ()
    tool_outputs: tuple[tuple[str, str, bool], ...] = ()


@dataclass(kw_only=True)
class _CallLog:
    """The call as it happens: printed line by line and kept for the result."""

    out: Out
    services: CallServices
    transcript: list[tuple[str, str]] = field(default_factory=list)
    tools: list[tuple[str, str, bool]] = field(default_factory=list)
    failed_services: list[str] = field(default_factory=list)

    def on_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        speaker = "Caller" if item.role == "user" else "Agent"
        text = item.text_content or ""
        self.transcript.append((speaker, text))
        self.out(f"{LABEL} {speaker + ':':7} {text}")

    def on_tools(self, event: FunctionToolsExecutedEvent) -> None:
        for call, output in event.zipped():
            self.tools.append((call.name, output.output, output.is_error))
            args = _compact_args(call.arguments)
            verdict = "spoken fallback" if output.is_error else "ok"
            self.out(f"{LABEL}          · {call.name}({args}) → {verdict}: {_short(output.output)}")
            service = {"lookup_trial_activity": "amplitude", "find_meeting_times": "chilipiper"}
            if output.is_error and call.name in service:
                self.failed_services.append(service[call.name])

    async def report_breakers(self) -> None:
        """After the turn: the breaker of each service that failed in it, once the shared
        store has answered this process's failures (its answer is what opens the breaker)."""
        for name in dict.fromkeys(self.failed_services):
            breaker = self.services.guard.breakers.get(name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BREAKER_SETTLE_SECONDS):
                    await breaker.settled()
            self.out(f"{LABEL}          · {breaker.service} circuit breaker: {breaker.state.label}")
        self.failed_services.clear()


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """One demo call: who, the scripted turns, and how the call ends."""

    trialist: Trialist
    turns: list[ScriptedTurn]
    hang_up_after: int | None = None  # the caller hangs up after this many caller lines


async def run_demo_calls(
    settings: Settings,
    *,
    out: Out,
    calls: Sequence[int] = (1, 2, 3),
    follow_seconds: float = DEFAULT_FOLLOW_SECONDS,
    clock: Clock = system_clock,
    outreach: bool = False,
) -> list[DemoCallResult]:
    """Play the demo calls in order and follow each follow-up until it settles (or time runs out).

    Raises TemporalConnectError when Temporal cannot be reached.
    """
    unknown = sorted(set(calls) - {1, 2, 3})
    if unknown:
        raise ValueError(f"unknown demo call(s) {unknown}: choose from 1, 2 and 3")
    client = await connect(settings, attempts=3)
    runtime = build_runtime(settings, clock=clock)
    await runtime.start_background()
    stamp = clock().strftime("%Y%m%d%H%M%S")
    results: list[DemoCallResult] = []
    try:
        async with httpx2.AsyncClient(base_url=settings.sandbox_base_url, timeout=5.0) as sandbox:
            await _clear_demo_faults(settings, sandbox, out)
            if outreach:  # issue 16: first, before call 3 leaves its HubSpot fault in place
                from devtools.outreach_demo import run_outreach_demo

                await run_outreach_demo(settings, runtime, out=out, seconds=follow_seconds)
            for number in calls:
                call_id = f"demo-{stamp}-{number}"
                runner = _DEMO_CALLS[number]
                result = await runner(
                    _DemoContext(
                        settings=settings,
                        runtime=runtime,
                        client=client,
                        sandbox=sandbox,
                        out=out,
                        call_id=call_id,
                        number=number,
                        follow_seconds=follow_seconds,
                    )
                )
                results.append(result)
        _print_summary(results, out)
    finally:
        await runtime.aclose()
    return results


@dataclass(frozen=True, kw_only=True)
class _DemoContext:
    settings: Settings
    runtime: AgentRuntime
    client: Client
    sandbox: httpx2.AsyncClient
    out: Out
    call_id: str
    number: int
    follow_seconds: float

    def sandbox_vendor(self, vendor: Vendor) -> bool:
        return self.settings.vendor_mode(vendor) is VendorMode.SANDBOX


# --- the three calls ------------------------------------------------------------------------------


async def _happy_path(ctx: _DemoContext) -> DemoCallResult:
    title = "happy path: qualified, meeting booked during the call"
    ctx.out(f"\n{LABEL} ── call {ctx.number}: {title} ──")
    plan = _Plan(trialist=DANA, turns=_happy_turns(DANA))
    return await _play(ctx, title=title, plan=plan)


async def _chilipiper_down(ctx: _DemoContext) -> DemoCallResult:
    title = "ChiliPiper down during the call: fallback spoken, booked after the call"
    if not ctx.sandbox_vendor("chilipiper"):
        return _skip(
            ctx, title, "ChiliPiper is the real API here; faults exist only in the sandbox"
        )
    ctx.out(f"\n{LABEL} ── call {ctx.number}: {title} ──")
    slot = await _a_free_slot(ctx, MARCO)
    ctx.out(f"{LABEL} injecting a sandbox fault: every ChiliPiper request answers 503")
    await _add_fault(ctx, vendor="chilipiper", operation="*", error_rate=1.0, status=503)
    plan = _Plan(
        trialist=MARCO,
        turns=_chilipiper_down_turns(MARCO, slot, now=ctx.runtime.clock()),
        hang_up_after=4,
    )
    try:
        return await _play(ctx, title=title, plan=plan, before_follow=_clear_chilipiper)
    finally:
        await _clear_fault(ctx, "chilipiper")


async def _hubspot_rejects(ctx: _DemoContext) -> DemoCallResult:
    title = "HubSpot rejects the contact: the follow-up needs attention"
    if not ctx.sandbox_vendor("hubspot"):
        return _skip(ctx, title, "HubSpot is the real API here; faults exist only in the sandbox")
    ctx.out(f"\n{LABEL} ── call {ctx.number}: {title} ──")
    ctx.out(
        f"{LABEL} injecting a sandbox fault: HubSpot contact upserts answer 400 VALIDATION_ERROR"
    )
    await _add_fault(
        ctx,
        vendor="hubspot",
        operation="batch_upsert_contacts",
        error_rate=1.0,
        status=400,
        body=HUBSPOT_VALIDATION_ERROR,
    )
    plan = _Plan(trialist=PRIYA, turns=_hubspot_turns(PRIYA))
    result = await _play(ctx, title=title, plan=plan)
    if result.follow_up_status is FollowUpStatus.NEEDS_ATTENTION:
        base = ctx.settings.sandbox_base_url
        ctx.out(f"{LABEL} the HubSpot fault stays in place so you can see and repair it:")
        ctx.out(f"{LABEL}   1. curl -X DELETE '{base}/__sandbox/faults?vendor=hubspot'")
        ctx.out(f"{LABEL}   2. trialist followups retry {ctx.call_id}")
    return result


_DEMO_CALLS = {1: _happy_path, 2: _chilipiper_down, 3: _hubspot_rejects}


# --- scripts (what the scripted LLM stand-in says and does) ---------------------------------------


def _greeting(person: Trialist) -> list[ScriptedTurn]:
    def hello(view: ScriptView) -> str:
        if view.failed("lookup_trial_activity"):
            return (
                f"Hi {person.first_name}, this is Sam, an AI assistant calling for PandaDoc. "
                "How's your trial going?"
            )
        activity = view.output("lookup_trial_activity")
        noticed = (
            "I noticed you haven't sent a document yet."
            if "haven't created" in activity or "and sent 0" in activity
            else "I can see you've been putting it to work."
        )
        return (
            f"Hi {person.first_name}, this is Sam, an AI assistant calling for PandaDoc about "
            "your trial. "
            f"{noticed} How is it going so far?"
        )

    return [ScriptedTurn(None, CallTools(ToolCall("lookup_trial_activity")), Reply(hello))]


def _signal(name: str, value: str) -> ToolCall:
    return ToolCall("record_qualification_signal", {"name": name, "value": value})


def _note(text: str) -> ToolCall:
    return ToolCall("add_call_note", {"note": text})


def _offer(view: ScriptView) -> str:
    if view.failed("find_meeting_times"):
        return f"{view.output('find_meeting_times')} Is there a day and time that suits you?"
    offered = [spoken for spoken, _ in offered_start_times(view.output("find_meeting_times"))]
    choices = ", ".join(offered[:-1]) + f" or {offered[-1]}" if len(offered) > 1 else offered[0]
    return f"I have {choices}. Which works best for you?"


def _first_offered(view: ScriptView) -> dict[str, object]:
    offered = offered_start_times(view.output("find_meeting_times"))
    if not offered:
        raise ValueError("find_meeting_times offered no start times")
    return {"start_time": offered[0][1]}


def _booking_reply(view: ScriptView) -> str:
    answer = view.output("book_meeting")
    if view.failed("book_meeting"):
        return answer
    when = answer.split(".", 1)[0]
    if when.startswith("Booked for "):
        return f"You're all set for {when.removeprefix('Booked for ')}. The invite is on its way."
    if when.startswith("Requested "):
        return (
            f"I've put in a request for {when.removeprefix('Requested ')}. "
            "The rep's calendar invite will follow by email shortly."
        )
    return answer


def _happy_turns(person: Trialist) -> list[ScriptedTurn]:
    return [
        *_greeting(person),
        ScriptedTurn(
            "It's going well. We're a team of twelve and we mostly send sales proposals.",
            CallTools(
                _signal("team_size", "12"),
                _signal("use_case", "sales proposals"),
            ),
            Reply("That's great to hear. What do you use for proposals today?"),
        ),
        ScriptedTurn(
            "Mostly Google Docs. I decide on our tools, and we'd like to switch this quarter.",
            CallTools(
                _signal("current_tool", "Google Docs"),
                _signal("decision_role", "decision maker"),
                _signal("timeline", "this quarter"),
            ),
            Reply("Thanks, that helps. Would a short call with one of our reps be useful?"),
        ),
        ScriptedTurn(
            "Sure, what times do you have?",
            CallTools(ToolCall("find_meeting_times")),
            Reply(_offer),
        ),
        ScriptedTurn(
            "The first one works for me.",
            CallTools(ToolCall("book_meeting", _first_offered)),
            Reply(_booking_reply),
        ),
        ScriptedTurn(
            "Perfect, thanks. That's all for now.",
            CallTools(
                _note("Team of 12 moving off Google Docs this quarter."),
                ToolCall("end_call"),
            ),
            Reply(f"Thanks so much, {person.first_name}. Talk soon, goodbye!"),
        ),
    ]


def _chilipiper_down_turns(
    person: Trialist, slot: datetime, *, now: datetime
) -> list[ScriptedTurn]:
    zone = ZoneInfo(person.timezone)
    when = spoken_time(slot, now=now, zone=zone)
    start = slot.astimezone(zone).isoformat(timespec="seconds")
    return [
        *_greeting(person),
        ScriptedTurn(
            "Honestly, I haven't had much time. We're five people and it would be for contracts.",
            CallTools(
                _signal("team_size", "5"),
                _signal("use_case", "contracts"),
            ),
            Reply("Got it. Would a quick session with a rep help you get going?"),
        ),
        ScriptedTurn(
            "Yes, what times are open?", CallTools(ToolCall("find_meeting_times")), Reply(_offer)
        ),
        ScriptedTurn(
            "Could you check again?", CallTools(ToolCall("find_meeting_times")), Reply(_offer)
        ),
        ScriptedTurn(
            f"How about {when}?",
            CallTools(ToolCall("book_meeting", {"start_time": start})),
            Reply(_booking_reply),
        ),
    ]


def _hubspot_turns(person: Trialist) -> list[ScriptedTurn]:
    return [
        *_greeting(person),
        ScriptedTurn(
            "It's fine. I'm exploring it for my design studio, there are three of us.",
            CallTools(
                _signal("team_size", "3"),
                _signal("use_case", "client agreements"),
            ),
            Reply("Nice. Would you like to go over it with a rep sometime?"),
        ),
        ScriptedTurn(
            "Not right now, maybe next month. Could someone just email me?",
            CallTools(
                _signal("timeline", "next month"),
                _note("Prefers email; revisit next month."),
            ),
            Reply("Of course, I'll have someone email you. Anything else I can help with?"),
        ),
        ScriptedTurn(
            "No, that's it. Thanks, bye.",
            CallTools(ToolCall("end_call")),
            Reply(f"Thanks, {person.first_name}. Have a great day, goodbye!"),
        ),
    ]


# --- playing a call -------------------------------------------------------------------------------


async def _play(
    ctx: _DemoContext,
    *,
    title: str,
    plan: _Plan,
    before_follow: Callable[[_DemoContext], Any] | None = None,
) -> DemoCallResult:
    services = ctx.runtime.services_for(call_id=ctx.call_id, trialist=plan.trialist)
    scripted = ScriptedLLM(plan.turns)
    session, lifecycle = new_call_session(services, llm_model=scripted)
    log = _CallLog(out=ctx.out, services=services)
    session.on("conversation_item_added", log.on_item)
    session.on("function_tools_executed", log.on_tools)
    ended = asyncio.Event()
    session.on("close", lambda _: ended.set())
    async with session:
        await session.start(agent=agent_for(services), capture_run=True)
        for index, line in enumerate(scripted.caller_lines(), start=1):
            if ended.is_set() or services.ended_reason is not None:  # end_call ended it
                break
            await session.run(user_input=line)
            await log.report_breakers()
            if plan.hang_up_after == index:
                ctx.out(f"{LABEL} (the caller hangs up)")
                services.mark_ended(EndedReason.CALLER_HUNG_UP)
                break
    handoff = await lifecycle.finish()
    if before_follow is not None:
        await before_follow(ctx)
    workflow_id = workflow_id_for(ctx.call_id)
    link = ctx.settings.workflow_ui_link(workflow_id)
    ctx.out(f"{LABEL} call ended ({services.ended_reason}); outcome handed off: {_status(handoff)}")
    ctx.out(f"{LABEL} Temporal UI: {link}")
    status = await _follow(ctx, workflow_id)
    return DemoCallResult(
        number=ctx.number,
        title=title,
        call_id=ctx.call_id,
        workflow_id=workflow_id,
        ui_link=link,
        ended_reason=services.ended_reason,
        handoff=_status(handoff),
        follow_up_status=status,
        transcript=tuple(log.transcript),
        tool_outputs=tuple(log.tools),
    )


async def _follow(ctx: _DemoContext, workflow_id: str) -> FollowUpStatus | None:
    """Print the follow-up's status and step changes until it settles or time runs out."""
    handle = ctx.client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + ctx.follow_seconds
    last: FollowUpStatus | None = None
    seen: dict[str, StepState] = {}
    while True:
        progress = await _progress(handle)
        if progress is not None:
            for step, state in progress.steps.items():
                if seen.get(step) != state.state and state.state is not StepState.PENDING:
                    seen[step] = state.state
                    error = f" ({state.last_error.message})" if state.last_error else ""
                    ctx.out(f"{LABEL}   follow-up step {step}: {state.state}{error}")
            if progress.status is not last:
                last = progress.status
                ctx.out(f"{LABEL} follow-up status: {last}")
            if last in SETTLED:
                return last
        if time.monotonic() >= deadline:
            ctx.out(
                f"{LABEL} follow-up still {last or 'starting'} after {ctx.follow_seconds:.0f}s; "
                "it carries on in the worker — watch it in the Temporal UI"
            )
            return last
        await asyncio.sleep(POLL_SECONDS)


async def _progress(handle: Any) -> FollowUpProgress | None:
    try:
        progress: FollowUpProgress = await handle.query(
            PROGRESS_QUERY, result_type=FollowUpProgress, rpc_timeout=_RPC_TIMEOUT
        )
    except RPCError:
        return None  # not started yet, or no worker has picked it up
    return progress


_RPC_TIMEOUT = timedelta(seconds=2)


async def _a_free_slot(ctx: _DemoContext, person: Trialist) -> datetime:
    """A free time the caller will ask for, read before ChiliPiper goes down."""
    guest = ChiliPiperGuest(
        email=person.email,
        first_name=person.first_name,
        last_name=person.last_name,
        company=person.company,
        timezone=person.timezone,
    )
    free = await ctx.runtime.slots.find_free_slots(guest, timezone=person.timezone)
    now = ctx.runtime.clock()
    later = [slot for slot in free.slots if (slot - now).total_seconds() > 86_400]
    candidates = later or list(free.slots)
    if not candidates:
        raise RuntimeError("the ChiliPiper sandbox offers no free slots")
    return candidates[len(candidates) // 2]


async def _add_fault(ctx: _DemoContext, **spec: object) -> None:
    response = await ctx.sandbox.post("/__sandbox/faults", json=spec)
    response.raise_for_status()


async def _clear_fault(ctx: _DemoContext, vendor: Vendor) -> None:
    response = await ctx.sandbox.delete("/__sandbox/faults", params={"vendor": vendor})
    response.raise_for_status()


async def _clear_chilipiper(ctx: _DemoContext) -> None:
    await _clear_fault(ctx, "chilipiper")
    ctx.out(
        f"{LABEL} ChiliPiper is back (sandbox fault cleared): the workflow finishes the booking"
    )


async def _clear_demo_faults(settings: Settings, sandbox: httpx2.AsyncClient, out: Out) -> None:
    """Faults left by an earlier run (call 3 leaves one on purpose) would spoil calls 1 and 2."""
    for vendor in ("chilipiper", "hubspot"):
        if settings.vendor_mode(vendor) is not VendorMode.SANDBOX:
            continue
        listed = await sandbox.get("/__sandbox/faults")
        listed.raise_for_status()
        if any(fault.get("vendor") == vendor for fault in listed.json()):
            await sandbox.delete("/__sandbox/faults", params={"vendor": vendor})
            out(f"{LABEL} cleared a {vendor} sandbox fault left by an earlier demo run")


def _skip(ctx: _DemoContext, title: str, why: str) -> DemoCallResult:
    ctx.out(f"\n{LABEL} ── call {ctx.number} skipped: {title} ({why}) ──")
    return DemoCallResult(number=ctx.number, title=title, skipped=why)


def _print_summary(results: Sequence[DemoCallResult], out: Out) -> None:
    out(f"\n{LABEL} ── summary ──")
    for result in results:
        if result.skipped:
            out(f"{LABEL} call {result.number}: skipped ({result.skipped})")
            continue
        out(
            f"{LABEL} call {result.number}: {result.call_id} ended {result.ended_reason}, "
            f"follow-up {result.follow_up_status or 'not seen yet'} — {result.ui_link}"
        )


def _status(handoff: object) -> str:
    if handoff is None:
        return "failed (see the log)"
    status = getattr(handoff, "status", handoff)
    return str(getattr(status, "value", status))


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact_args(arguments: str) -> str:
    try:
        values = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return "…"
    if not isinstance(values, dict):
        return "…"
    return ", ".join(f"{key}={value!r}" for key, value in values.items())


# --- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
    """`python -m agent demo [--call N ...] [--follow-seconds S]`."""
    from config.settings import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m agent demo",
        description="Scripted demo calls (a scripted LLM stand-in, not a real model) through the "
        "real agent, tools, breakers, handoff and follow-up workflow.",
    )
    parser.add_argument(
        "--call", type=int, action="append", choices=(1, 2, 3), help="Play only this call."
    )
    parser.add_argument(
        "--follow-seconds",
        type=float,
        default=DEFAULT_FOLLOW_SECONDS,
        help="How long to follow each call's follow-up status (default %(default)s).",
    )
    parser.add_argument(
        "--outreach",
        action="store_true",
        help="Then start one outreach: scheduled, gated, dialed through the sandbox's LiveKit "
        "emulator, and the answered call played through the agent.",
    )
    args = parser.parse_args(list(argv))
    # The demo narrates failures itself; the vendor and breaker warnings would only repeat them.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        asyncio.run(
            run_demo_calls(
                settings,
                out=out,
                calls=args.call or (1, 2, 3),
                follow_seconds=args.follow_seconds,
                outreach=args.outreach,
            )
        )
    except TemporalConnectError as error:
        print(f"demo calls need Temporal: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except httpx2.HTTPError as error:
        print(
            f"demo calls need the vendor sandbox at {settings.sandbox_base_url}: {error} — "
            "start the stack with `make dev`",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
