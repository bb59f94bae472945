"""The agent side of the sandbox's LiveKit emulator: claim dispatched calls, play each one.

LiveKit hands a dispatch to a registered agent worker; here the runner claims the emulator's jobs
over HTTP and plays each answered call as a scripted conversation (a scripted LLM stand-in,
labelled "[scripted demo]") through the real agent session, tools and handoff. The sandbox never
imports the agent; this runner (in `python -m agent demo --dispatches`, or in a test) does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import httpx2

from agent.entrypoint import AGENT_NAME, CallDispatch, agent_for, new_call_session, read_dispatch
from agent.services import AgentRuntime
from contracts.models import EndedReason, Trialist
from devtools.demo_calls import _first_offered, _offer
from devtools.scripted_llm import CallTools, Reply, ScriptedLLM, ScriptedTurn, ToolCall

logger = logging.getLogger(__name__)

LABEL: Final = "[scripted demo]"
CLAIM_WAIT_SECONDS: Final = 1.0
# "callback" asks to be called back Thursday afternoon; called back, that person books.
Persona = Literal["book", "not_interested", "opt_out", "callback"]


@dataclass(kw_only=True)
class RunnerLog:
    """What the runner played, for the dev stack's output and the end-to-end test."""

    played: list[tuple[str, str]] = field(default_factory=list)  # (call_id, persona or machine)
    refused: int = 0
    busy: int = 0


def greeting(person: Trialist) -> ScriptedTurn:
    return ScriptedTurn(
        None,
        Reply(
            f"Hi {person.first_name}, this is Sam, an AI assistant calling for PandaDoc about "
            "your free trial. Do you have a couple of minutes?"
        ),
    )


def persona_turns(persona: Persona, person: Trialist, *, machine: bool) -> list[ScriptedTurn]:
    """The scripted caller (or voicemail greeting) and the agent's scripted answers."""
    end = ToolCall("end_call")
    if machine:  # the agent greets as it joins; the machine's greeting plays over it
        return [
            greeting(person),
            ScriptedTurn(
                f"Hi, you've reached {person.first_name}. Please leave a message after the tone.",
                CallTools(ToolCall("voicemail_reached")),
                Reply(lambda view: _voicemail_words(view.output("voicemail_reached"))),
            ),
            ScriptedTurn("(beep)", CallTools(end), Reply("Goodbye.")),
        ]
    if persona == "opt_out":
        return [
            greeting(person),
            ScriptedTurn(
                "Please stop calling me.",
                CallTools(ToolCall("opt_out")),
                Reply("Understood, you won't be called again. Sorry to bother you."),
            ),
            ScriptedTurn("Bye.", CallTools(end), Reply("Goodbye!")),
        ]
    if persona == "callback":
        return [
            greeting(person),
            ScriptedTurn(
                "Not now, call me back Thursday afternoon.",
                CallTools(
                    ToolCall("schedule_callback", {"day": "Thursday", "time_of_day": "afternoon"})
                ),
                Reply("Of course, I'll call you back Thursday afternoon."),
            ),
            ScriptedTurn("Thanks, bye.", CallTools(end), Reply("Talk then, goodbye!")),
        ]
    if persona == "not_interested":
        return [
            greeting(person),
            ScriptedTurn(
                "I'm not interested, thanks.", CallTools(end), Reply("No problem. Goodbye!")
            ),
        ]
    return _booking_turns(person)


def _voicemail_words(tool_output: str) -> str:
    """The message the tool asked for (between quotes), or silence when it asked for none."""
    parts = tool_output.split('"')
    return parts[1] if len(parts) >= 3 else "(hangs up without a message)"


def _booking_turns(person: Trialist) -> list[ScriptedTurn]:
    return [
        greeting(person),
        ScriptedTurn(
            "Sure. What times do you have for a call with a rep?",
            CallTools(ToolCall("find_meeting_times")),
            Reply(_offer),
        ),
        ScriptedTurn(
            "The first one works.",
            CallTools(ToolCall("book_meeting", _first_offered)),
            Reply(lambda view: view.output("book_meeting").split(".")[0] + "."),
        ),
        ScriptedTurn("Great, bye.", CallTools(ToolCall("end_call")), Reply("Goodbye!")),
    ]


class DispatchRunner:
    """Claims the emulator's jobs for AGENT_NAME and plays each call to its end."""

    def __init__(
        self,
        *,
        runtime: AgentRuntime,
        livekit_base_url: str,
        personas: Mapping[str, Persona] | None = None,
        out: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._runtime = runtime
        self._base = livekit_base_url.rstrip("/")
        self._personas = dict(personas or {})
        self._out = out
        self.log = RunnerLog()
        self.active = 0
        self._asked_for_callback: set[str] = set()

    async def serve(self, stop: asyncio.Event, *, concurrency: int = 4) -> None:
        """Claim and play jobs until `stop` is set; up to `concurrency` calls at once."""
        async with httpx2.AsyncClient(timeout=CLAIM_WAIT_SECONDS + 5) as http:
            calls: set[asyncio.Task[None]] = set()
            while not stop.is_set():
                if len(calls) >= concurrency:
                    await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
                    calls = {task for task in calls if not task.done()}
                    continue
                job = await self._claim(http)
                if job is None:
                    continue
                self.active += 1
                task = asyncio.create_task(self._play_job(http, job))
                calls.add(task)
                task.add_done_callback(calls.discard)
            if calls:
                await asyncio.gather(*calls, return_exceptions=True)

    async def _claim(self, http: httpx2.AsyncClient) -> dict[str, str] | None:
        try:
            response = await http.post(
                f"{self._base}/__sandbox/jobs/claim",
                params={"agent_name": AGENT_NAME, "wait": CLAIM_WAIT_SECONDS},
            )
        except httpx2.HTTPError:
            await asyncio.sleep(CLAIM_WAIT_SECONDS)
            return None
        if response.status_code != 200:
            return None
        job: dict[str, str] = response.json()
        return job

    async def _play_job(self, http: httpx2.AsyncClient, job: dict[str, str]) -> None:
        try:
            try:
                dispatch = read_dispatch(job["metadata"], fallback_call_id=job["dispatch_id"])
            except ValueError as error:  # refused cleanly: the call ends, nothing is played
                self.log.refused += 1
                logger.warning("dispatch %s refused: %s", job["dispatch_id"], error)
                return
            await self._play(dispatch, machine=job.get("answered_by") == "machine")
        finally:
            self.active -= 1
            await http.post(f"{self._base}/__sandbox/jobs/{job['dispatch_id']}/finish")

    def _persona_of(self, person: Trialist, *, machine: bool) -> Persona:
        phone = person.phone or ""
        persona: Persona = self._personas.get(phone, "book")
        if persona == "callback" and not machine:
            if phone in self._asked_for_callback:
                return "book"  # called back as asked: now there is time to book
            self._asked_for_callback.add(phone)
        return persona

    async def _play(self, dispatch: CallDispatch, *, machine: bool) -> None:
        person = dispatch.trialist
        persona = self._persona_of(person, machine=machine)
        turns = persona_turns(persona, person, machine=machine)
        services = self._runtime.services_for(
            call_id=dispatch.call_id, trialist=person, outreach=dispatch.outreach
        )
        scripted = ScriptedLLM(turns)
        session, lifecycle = new_call_session(services, llm_model=scripted)
        self._out(f"{LABEL} call {dispatch.call_id}: {'voicemail' if machine else persona}")
        async with session:
            await session.start(agent=agent_for(services), capture_run=True)
            for line in scripted.caller_lines():
                if services.ended_reason is not None:
                    break
                await session.run(user_input=line)
        services.mark_ended(EndedReason.COMPLETED)
        await lifecycle.finish()
        self.log.played.append((dispatch.call_id, "machine" if machine else persona))
