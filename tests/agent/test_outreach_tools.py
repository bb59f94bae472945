"""Outreach tools in a call: opt-out (CRMs flagged before the call ends), callback, voicemail."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from agent.entrypoint import MAX_DISPATCH_CHARS, read_dispatch
from agent.trialist_agent import PandaDocTrialistAgent
from config.settings import Settings
from contracts.models import Trialist
from contracts.outreach import OptOutRequest, OutreachDispatch, outreach_workflow_id
from devtools.scripted_llm import CallTools, Reply, ScriptedTurn, ToolCall
from handoff.outbox import MessageKind, Outbox
from tests.agent.call_harness import (
    agent_runtime,
    agent_settings,
    call_on,
    new_call_id,
    running_worker,
    spoken,
    temporal_target,
    text_call,
)
from tests.servers import SandboxServer, free_port

GREETING = ScriptedTurn(
    None, Reply("Hi, this is Sam, an AI assistant calling for PandaDoc. Got a minute?")
)


# When an opt-out was asked for: a record, not a calendar decision, so any fixed instant does.
ASKED_AT = datetime(2026, 3, 3, 10, 0, tzinfo=ZoneInfo("UTC"))


def temporal_down_settings(sandbox: SandboxServer, data_dir: Path, task_queue: str) -> Settings:
    """Agent settings whose Temporal address has nothing listening: every handoff queues."""
    return agent_settings(
        sandbox=sandbox,
        data_dir=data_dir,
        task_queue=task_queue,
        temporal_address=f"127.0.0.1:{free_port()}",
    )


def person() -> Trialist:
    account = f"trial-{uuid.uuid4().hex[:8]}"
    return Trialist(
        email=f"{account}@example.com",
        name="Casey Opt",
        company="Optco",
        phone="+14155550177",
        trial_account_id=account,
        timezone="America/Los_Angeles",
    )


def crm_flags(sandbox: SandboxServer, who: Trialist) -> tuple[Any, Any]:
    state = sandbox.state()
    lead = next(
        json.loads(str(row["fields"]))
        for row in state["salesforce_records"]
        if '"' + who.trial_account_id + '"' in str(row["fields"])
    )
    contact = next(
        json.loads(str(row["properties"]))
        for row in state["hubspot_objects"]
        if row["email"] == str(who.email)
    )
    return lead.get("DoNotCall"), contact.get("do_not_call")


async def test_stop_calling_me_flags_both_crms_before_the_call_ends_and_ends_the_outreach(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    settings = agent_settings(
        sandbox=sandbox,
        data_dir=tmp_path,
        task_queue=task_queue,
        temporal_address=temporal_target(dev_env),
        outreach_task_queue=f"{task_queue}-outreach",
    )
    who = person()
    turns = [
        GREETING,
        ScriptedTurn(
            "Please stop calling me, and no more emails either.",
            CallTools(ToolCall("opt_out", {"also_email": True})),
            Reply("Understood, you won't be called again. Sorry for the bother."),
        ),
        ScriptedTurn("Bye.", CallTools(ToolCall("end_call")), Reply("Goodbye!")),
    ]
    async with running_worker(settings), call_on(settings, turns, trialist=who) as call:
        stop = await call.say("Please stop calling me, and no more emails either.")
        flags_during_call = crm_flags(sandbox, who)  # the call is still on
        bye = await call.say("Bye.")
        await call.wait_closed()
        handle = dev_env.client.get_workflow_handle(outreach_workflow_id(who.trial_account_id))
        await handle.result()
        description = await handle.describe()

    assert flags_during_call == (True, "true")
    greeting = call.greeting.expect
    greeting.next_event().is_agent_handoff(new_agent_type=PandaDocTrialistAgent)
    said = spoken(greeting.next_event().is_message(role="assistant"))
    assert "AI assistant calling for PandaDoc" in said
    stop.expect.next_event().is_function_call(name="opt_out", arguments={"also_email": True})
    recorded = stop.expect.next_event().is_function_call_output(is_error=False).event().item
    assert "will not be called again" in recorded.output
    stop.expect.next_event().is_message(role="assistant")
    stop.expect.no_more_events()
    bye.expect.next_event().is_function_call(name="end_call")
    assert description.status is WorkflowExecutionStatus.COMPLETED
    assert description.search_attributes.get("OutreachStatus") == ["opted_out"]


async def test_an_opt_out_with_temporal_down_waits_in_the_outbox_first_in_line(
    sandbox: SandboxServer, tmp_path: Path, task_queue: str
) -> None:
    settings = temporal_down_settings(sandbox, tmp_path, task_queue)
    who = person()
    async with agent_runtime(settings) as runtime:
        handoff = await runtime.handoff.opt_out(
            OptOutRequest(trialist=who, requested_at=ASKED_AT, call_id="c-1"),
            wait=1.0,
        )
    assert handoff.status.value == "queued"
    outbox = Outbox.in_dir(tmp_path)
    kinds = [message.kind for message in outbox.messages()]
    outbox.close()
    assert kinds == [MessageKind.OPT_OUT]


def test_a_version_1_outbox_file_accepts_opt_outs_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, dedupe_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('book_meeting', 'call_ended')),
            call_id TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
            leased_until REAL NOT NULL DEFAULT 0, last_error TEXT, delivered_at REAL);
        INSERT INTO outbox (dedupe_key, kind, call_id, payload, created_at, next_attempt_at)
            VALUES ('call_ended:c-0', 'call_ended', 'c-0', '{}', 1.0, 1.0);
        PRAGMA user_version = 1;
        """
    )
    old.close()
    outbox = Outbox(path)
    stored = outbox.put(OptOutRequest(trialist=person(), requested_at=ASKED_AT))
    messages = outbox.messages()
    outbox.close()
    assert stored.stored
    assert (messages[0].kind, messages[0].call_id) == (MessageKind.CALL_ENDED, "c-0")
    assert messages[1].kind is MessageKind.OPT_OUT


async def test_call_me_back_thursday_afternoon_becomes_the_outcomes_callback(
    sandbox: SandboxServer, tmp_path: Path, task_queue: str
) -> None:
    settings = temporal_down_settings(sandbox, tmp_path, task_queue)
    who = person()
    tuesday = datetime(2026, 3, 3, 10, 0, tzinfo=ZoneInfo(who.timezone))
    turns = [
        GREETING,
        ScriptedTurn(
            "Not now. Call me back Thursday afternoon.",
            CallTools(
                ToolCall("schedule_callback", {"day": "Thursday", "time_of_day": "afternoon"})
            ),
            Reply("Sure, I'll call you Thursday afternoon."),
        ),
    ]
    async with agent_runtime(settings) as runtime:
        async with text_call(runtime, turns, call_id=new_call_id(), trialist=who) as call:
            call.services.clock = lambda: tuesday
            result = await call.say("Not now. Call me back Thursday afternoon.")
        fields = call.services.state.outcome_fields()
    result.expect.next_event().is_function_call(
        name="schedule_callback", arguments={"day": "Thursday", "time_of_day": "afternoon"}
    )
    noted = result.expect.next_event().is_function_call_output(is_error=False).event().item
    assert noted.output.startswith("Noted: call back Thursday afternoon.")
    window = fields["callback"]
    assert window is not None
    local = window.start.astimezone(ZoneInfo(who.timezone))
    assert (
        local.strftime("%A"),
        local.hour,
        window.end.astimezone(ZoneInfo(who.timezone)).hour,
    ) == (
        "Thursday",
        12,
        17,
    )


async def test_voicemail_leaves_the_one_allowed_message_or_none(
    sandbox: SandboxServer, tmp_path: Path, task_queue: str
) -> None:
    settings = temporal_down_settings(sandbox, tmp_path, task_queue)
    who = person()
    turns = [
        GREETING,
        ScriptedTurn(
            "Hi, you've reached Casey. Leave a message after the tone.",
            CallTools(ToolCall("voicemail_reached")),
            Reply("Hi Casey, this is Sam, an AI assistant calling for PandaDoc."),
        ),
    ]
    answers = []
    for leave in (True, False):
        async with agent_runtime(settings) as runtime:
            services_outreach = OutreachDispatch(workflow_id="outreach-x", leave_message=leave)
            async with text_call(runtime, turns, call_id=new_call_id(), trialist=who) as call:
                call.services.call = type(call.services.call)(
                    call_id=call.services.call.call_id,
                    trialist=who,
                    started_at=call.services.call.started_at,
                    outreach=services_outreach,
                )
                result = await call.say("Hi, you've reached Casey. Leave a message after the tone.")
            result.expect.next_event().is_function_call(name="voicemail_reached")
            answer = result.expect.next_event().is_function_call_output(is_error=False)
            answers.append((answer.event().item.output, call.services.state.outcome_fields()))
    (left, left_fields), (silent, silent_fields) = answers
    assert "AI assistant calling for PandaDoc" in left and "say stop" in left
    assert (left_fields["voicemail"], left_fields["voicemail_message_left"]) == (True, True)
    assert "Leave no message" in silent
    assert (silent_fields["voicemail"], silent_fields["voicemail_message_left"]) == (True, False)


def test_malformed_outreach_metadata_is_refused_with_field_names_only() -> None:
    good_trialist = {"email": "a@b.co", "name": "A B", "trial_account_id": "t1"}
    outreach = {"workflow_id": "", "voicemail": "shout"}
    bad = json.dumps({"call_id": "ob-1", "trialist": good_trialist, "outreach": outreach})
    try:
        read_dispatch(bad, fallback_call_id="x")
    except ValueError as error:
        message = str(error)
    else:
        raise AssertionError("malformed outreach metadata was accepted")
    assert "outreach.workflow_id" in message and "outreach.voicemail" in message
    assert "shout" not in message
    try:
        read_dispatch("x" * (MAX_DISPATCH_CHARS + 1), fallback_call_id="x")
    except ValueError as error:
        assert f"over {MAX_DISPATCH_CHARS} chars" in str(error)
    good = {
        "call_id": "ob-2",
        "trialist": good_trialist,
        "outreach": {"workflow_id": "outreach-t1"},
    }
    ok = read_dispatch(json.dumps(good), fallback_call_id="x")
    assert ok.outreach is not None and ok.outreach.workflow_id == "outreach-t1"
