"""One agent host of the chaos run: many scripted calls at once through the real agent session.

`python -m bench.chaos_agent --plan P --journal J --gates G` is started by bench/chaos.py as a
child process, so the bench can SIGKILL it mid-call the way an OOM kill or a lost node ends a
LiveKit job process. It lives in bench/ rather than devtools/ because nothing but the chaos run
starts it; devtools/ holds what a developer runs. Only the model is a stand-in (the scripted LLM,
devtools/scripted_llm.py, labelled as such in every journal line): the agent, its tools,
breakers, checkpoints, the handoff, its outbox (shared with the other agent processes through
DATA_DIR, as job processes on one host share it) and its relay are the production code. Each call
has its own call id and its own AgentSession, as LiveKit would run it.

It writes what happens to a JSON-lines journal (one write per line, so a kill loses nothing
written) and keeps its relay running after its calls until SIGTERM: the outbox it shares may
still hold messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from livekit.agents import ConversationItemAddedEvent, FunctionToolsExecutedEvent, llm

from agent.entrypoint import agent_for, build_runtime, new_call_session
from agent.services import AgentRuntime
from agent.trialist_agent import offered_start_times, spoken_time
from bench.chaos_plan import (
    MAX_GATE_WAIT_SECONDS,
    START_GATE,
    AgentPlan,
    Journal,
    PlannedCall,
)
from config.process_exit import exits_cleanly
from config.settings import Settings, get_settings
from contracts.models import BookingRequest, CallCheckpoint, CallOutcome, EndedReason
from devtools.scripted_llm import (
    SCRIPTED_MODEL_LABEL,
    CallTools,
    Reply,
    ScriptedLLM,
    ScriptedTurn,
    ScriptView,
    ToolCall,
)
from handoff.follow_up import BookingHandoff, FollowUpHandoff, Handed

logger = logging.getLogger(__name__)

GATE_POLL_SECONDS = 0.1
READY_LINE = "chaos agent ready"


class JournaledHandoff(FollowUpHandoff):
    """The production handoff, with each result and its time written to the journal."""

    def __init__(self, *, settings: Settings, outbox: Any, journal: Journal) -> None:
        super().__init__(settings=settings, outbox=outbox)
        self.journal = journal

    def _journal(self, call_id: str, kind: str, began: float, status: str, **extra: Any) -> None:
        self.journal.write(
            call_id, "handoff", kind=kind, status=status, seconds=time.monotonic() - began, **extra
        )

    async def checkpoint(self, checkpoint: CallCheckpoint) -> Handed:
        began = time.monotonic()
        result = await super().checkpoint(checkpoint)
        learned = checkpoint.learned is not None
        self._journal(checkpoint.call_id, "checkpoint", began, result.status.value, learned=learned)
        return result

    async def book_meeting(self, request: BookingRequest, *, wait: float) -> BookingHandoff:
        began = time.monotonic()
        result = await super().book_meeting(request, wait=wait)
        slot = request.slot_start.isoformat()
        status = result.status.value
        self._journal(
            request.call_id, "book_meeting", began, status, slot=slot, meeting_id=result.meeting_id
        )
        return result

    async def call_ended(self, outcome: CallOutcome) -> Handed:
        began = time.monotonic()
        result = await super().call_ended(outcome)
        self._journal(outcome.call_id, "call_ended", began, result.status.value)
        return result


# --- the script (what the scripted LLM stand-in says and does) ------------------------------------


def _signal(name: str, value: str) -> ToolCall:
    return ToolCall("record_qualification_signal", {"name": name, "value": value})


def _note(text: str) -> ToolCall:
    return ToolCall("add_call_note", {"note": text})


def _greeting(view: ScriptView) -> str:
    if view.failed("lookup_trial_activity"):
        return "Hi, this is Sam from PandaDoc. How's your trial going?"
    return "Hi, this is Sam from PandaDoc, checking in on your trial. How is it going so far?"


def _offer(view: ScriptView) -> str:
    if view.failed("find_meeting_times"):
        return f"{view.output('find_meeting_times')} Is there a time that suits you?"
    offered = [spoken for spoken, _ in offered_start_times(view.output("find_meeting_times"))]
    return f"I have {', '.join(offered) or 'a few times'}. Which works best for you?"


def booking_reply(view: ScriptView) -> str:
    """What the agent tells the caller about the booking (the bench reads these words)."""
    answer = view.output("book_meeting")
    if view.failed("book_meeting"):
        return answer
    if answer.startswith("Booked for "):
        return "You're all set. The calendar invite is on its way to your email."
    if answer.startswith("Requested "):
        return "I've put in the request. The rep's calendar invite will follow by email shortly."
    return answer  # taken: the agent offers the other times it was given


def call_script(call: PlannedCall, *, now: Any) -> list[ScriptedTurn]:
    """The turns of one call; the first caller line answers the agent's greeting."""
    by_name = {signal.name: signal.value for signal in call.signals}
    person = call.trialist
    turns = [
        ScriptedTurn(None, CallTools(ToolCall("lookup_trial_activity")), Reply(_greeting)),
        ScriptedTurn(
            f"It's going fine. We're a team of {by_name['team_size']}, mostly "
            f"{by_name['use_case']}.",
            CallTools(
                _signal("team_size", by_name["team_size"]), _signal("use_case", by_name["use_case"])
            ),
            Reply("Good to hear. What do you use for that today?"),
        ),
        ScriptedTurn(
            f"Mostly {by_name['current_tool']}.",
            CallTools(_signal("current_tool", by_name["current_tool"]), _note(call.notes[0])),
            Reply("Thanks. Who decides on tools like this, and by when?"),
        ),
        ScriptedTurn(
            f"I'm the {by_name['decision_role']}, and we'd decide {by_name['timeline']}.",
            CallTools(
                _signal("decision_role", by_name["decision_role"]),
                _signal("timeline", by_name["timeline"]),
            ),
            Reply("That helps. Would a short call with one of our reps be useful?"),
        ),
    ]
    if call.slot is None:
        return [*turns, *_no_meeting(call)]
    zone = ZoneInfo(person.timezone)
    asked = spoken_time(call.slot, now=now, zone=zone)
    turns += [
        ScriptedTurn(
            "Sure, what times do you have?",
            CallTools(ToolCall("find_meeting_times")),
            Reply(_offer),
        ),
        ScriptedTurn(
            f"How about {asked}?",
            CallTools(
                ToolCall(
                    "book_meeting",
                    {"start_time": call.slot.astimezone(zone).isoformat(timespec="seconds")},
                )
            ),
            Reply(booking_reply),
        ),
    ]
    if call.ending == "end_call":
        turns.append(
            ScriptedTurn(
                "Great, thanks. That's all for now.",
                CallTools(_note(call.notes[1]), ToolCall("end_call")),
                Reply(f"Thanks so much, {person.first_name}. Goodbye!"),
            )
        )
    return turns


def _no_meeting(call: PlannedCall) -> list[ScriptedTurn]:
    turns = [
        ScriptedTurn(
            "Not right now. Could someone email me next month?",
            CallTools(_note(call.notes[1])),
            Reply("Of course, someone will email you. Anything else?"),
        )
    ]
    if call.ending == "end_call":
        turns.append(
            ScriptedTurn(
                "No, that's it. Bye.",
                CallTools(ToolCall("end_call")),
                Reply("Thanks, have a great day. Goodbye!"),
            )
        )
    return turns


# The caller line before which a gated call waits: "what times do you have?".
GATED_LINE = 4


# --- playing calls ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecorder:
    """The session's events, as journal lines: what the agent saved and what it said."""

    journal: Journal
    call_id: str

    def on_tools(self, event: FunctionToolsExecutedEvent) -> None:
        for fn_call, output in event.zipped():
            if output.is_error:
                continue
            args = json.loads(fn_call.arguments or "{}")
            if fn_call.name == "record_qualification_signal":
                self.journal.write(
                    self.call_id, "said", kind="signal", name=args["name"], value=args["value"]
                )
            elif fn_call.name == "add_call_note":
                self.journal.write(self.call_id, "said", kind="note", value=args["note"])

    def on_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            self.journal.write(self.call_id, "agent", text=item.text_content or "")


async def play(
    call: PlannedCall, runtime: AgentRuntime, journal: Journal, gates: Path, *, start: float
) -> None:
    """One call from its start time to its outcome handoff."""
    await asyncio.sleep(max(0.0, start + call.start_offset - time.time()))
    services = runtime.services_for(call_id=call.call_id, trialist=call.trialist)
    scripted = ScriptedLLM(call_script(call, now=services.clock()))
    session, lifecycle = new_call_session(services, llm_model=scripted)
    recorder = CallRecorder(journal, call.call_id)
    session.on("function_tools_executed", recorder.on_tools)
    session.on("conversation_item_added", recorder.on_item)
    journal.write(call.call_id, "start", model=SCRIPTED_MODEL_LABEL, pid=os.getpid())
    lines = scripted.caller_lines()
    async with session:
        await session.start(agent=agent_for(services), capture_run=True)
        for index, line in enumerate(lines, start=1):
            if services.ended_reason is not None:  # end_call closed it
                break
            if call.gate is not None and index == GATED_LINE:
                await _wait_for_gate(gates / call.gate)
            await asyncio.sleep(call.pause_seconds)
            await session.run(user_input=line)
        if services.ended_reason is None and call.ending == "hang_up":
            services.mark_ended(EndedReason.CALLER_HUNG_UP)
        journal.write(call.call_id, "hangup", reason=str(services.ended_reason))
    handed = await lifecycle.finish()
    journal.write(call.call_id, "ended", handoff=None if handed is None else handed.status.value)


async def _wait_for_gate(path: Path) -> None:
    """Until the bench creates `path`: a file, because the bench is another process."""
    deadline = time.monotonic() + MAX_GATE_WAIT_SECONDS
    while not os.path.exists(path) and time.monotonic() < deadline:  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(GATE_POLL_SECONDS)


async def play_safely(
    call: PlannedCall, runtime: AgentRuntime, journal: Journal, gates: Path, *, start: float
) -> None:
    try:
        await play(call, runtime, journal, gates, start=start)
    except Exception as error:  # a bench or script bug: journal it, the other calls go on
        logger.exception("call %s failed in the chaos agent", call.call_id)
        journal.write(call.call_id, "error", error=type(error).__name__)


async def serve(plan: AgentPlan, journal: Journal, gates: Path) -> None:
    """Play every call of the plan at once, then keep the relay running until SIGTERM."""
    settings = get_settings()
    runtime = build_runtime(settings)
    # The same outbox file the runtime opened; the journaling handoff replaces the plain one.
    runtime.handoff = JournaledHandoff(
        settings=settings, outbox=runtime.handoff.outbox, journal=journal
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.start_background()
    journal.write(None, "ready", pid=os.getpid())
    print(READY_LINE, flush=True)
    try:
        await _wait_for_gate(gates / START_GATE)
        start = float((gates / START_GATE).read_text())
        await asyncio.gather(
            *(play_safely(call, runtime, journal, gates, start=start) for call in plan.calls)
        )
        journal.write(None, "calls_done")
        await stop.wait()
    finally:
        await runtime.aclose()
        runtime.handoff.outbox.close()


def run(
    plan: Annotated[Path, typer.Option(help="The calls to play (JSON, bench/chaos_plan.py).")],
    journal: Annotated[Path, typer.Option(help="Where to append what happens (JSON lines).")],
    gates: Annotated[Path, typer.Option(help="The directory of the bench's gate files.")],
) -> None:
    """Play the planned calls (scripted LLM stand-in, not a real model) and keep relaying."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    calls = AgentPlan.model_validate_json(plan.read_text())
    book = Journal(journal)
    try:
        asyncio.run(serve(calls, book, gates))
    finally:
        book.close()


@exits_cleanly
def main() -> None:
    typer.run(run)


if __name__ == "__main__":
    main()
