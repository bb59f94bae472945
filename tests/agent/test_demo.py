"""The demo calls end to end (sandbox, Temporal, a real worker), the agent's CLI and its config."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from livekit.agents import llm
from temporalio.testing import WorkflowEnvironment

from agent.entrypoint import read_dispatch
from agent.providers import NO_LLM_MESSAGE, ModelConfigError, build_llm, build_models
from agent.resilience.fallbacks import FALLBACK_LINES, FallbackKind
from config.settings import Settings
from contracts.models import EndedReason, FollowUpStatus
from contracts.names import workflow_id_for
from devtools.demo_calls import LABEL, run_demo_calls
from devtools.people import CONSOLE_TRIALIST, DANA, MARCO
from tests.agent.call_harness import agent_settings, running_worker, temporal_target
from tests.servers import SandboxServer

ROOT = Path(__file__).resolve().parents[2]


async def test_the_three_demo_calls_play_through_the_real_stack(
    sandbox: SandboxServer, dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    settings = agent_settings(
        sandbox=sandbox,
        data_dir=tmp_path,
        task_queue=task_queue,
        temporal_address=temporal_target(dev_env),
        tool_deadline_seconds=2.5,
        filler_after_seconds=1.0,
        booking_wait_seconds=3.0,
    )
    lines: list[str] = []
    async with running_worker(settings, clock=sandbox.clock):
        happy, chilipiper_down, hubspot_rejects = await run_demo_calls(
            settings, out=lines.append, follow_seconds=30, clock=sandbox.clock
        )
    printed = "\n".join(lines)
    # Every line is labelled as scripted, and each call prints its workflow's UI link.
    assert all(line.strip() == "" or line.lstrip("\n").startswith(LABEL) for line in lines)
    for result in (happy, chilipiper_down, hubspot_rejects):
        assert result.call_id is not None and re.fullmatch(r"demo-\d{14}-[123]", result.call_id)
        assert result.ui_link == settings.workflow_ui_link(workflow_id_for(result.call_id))
        assert f"Temporal UI: {result.ui_link}" in printed
        assert result.handoff == "delivered"
    assert "Agent:  Hi Dana" in printed and "Caller: Sure, what times do you have?" in printed

    # 1. Booked while the caller was on the line; the follow-up completed.
    assert happy.ended_reason is EndedReason.COMPLETED
    assert any(output.startswith("Booked for ") for _, output, _ in happy.tool_outputs)
    assert happy.follow_up_status is FollowUpStatus.COMPLETED

    # 2. ChiliPiper down: fallbacks spoken, the breaker opened, the booking finished afterwards.
    outputs = chilipiper_down.tool_outputs
    searches = [out for name, out, _ in outputs if name == "find_meeting_times"]
    assert len(searches) == 2
    spoken = set(FALLBACK_LINES[FallbackKind.SERVICE_UNAVAILABLE])
    assert all(line in spoken for line in searches)
    assert "chilipiper circuit breaker: open" in printed
    booking = [out for name, out, _ in outputs if name == "book_meeting"]
    assert booking and booking[0].startswith("Requested ")
    assert chilipiper_down.ended_reason is EndedReason.CALLER_HUNG_UP
    assert chilipiper_down.follow_up_status is FollowUpStatus.COMPLETED

    # 3. HubSpot rejected the contact: parked for an operator, with the repair printed.
    assert hubspot_rejects.follow_up_status is FollowUpStatus.NEEDS_ATTENTION
    assert f"trialist followups retry {hubspot_rejects.call_id}" in printed
    async with httpx2.AsyncClient(base_url=sandbox.url, timeout=5) as http:
        faults = (await http.get("/__sandbox/faults")).json()
    assert [f["vendor"] for f in faults] == ["hubspot"]  # left in place; ChiliPiper's cleared

    meetings = sandbox.state()["chilipiper_meetings"]
    booked_for = {m["guest_email"] for m in meetings if m["status"] == "Active"}
    assert {DANA.email, MARCO.email} <= booked_for


def _agent_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _env_without_llm(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "LIVEKIT_", "OPENAI_"))}
    env["DATA_DIR"] = str(tmp_path)
    return env


def test_console_without_an_llm_says_what_to_configure(tmp_path: Path) -> None:
    result = _agent_cli("console", "--text", env=_env_without_llm(tmp_path))
    assert result.returncode == 2
    assert NO_LLM_MESSAGE in result.stderr
    assert "Traceback" not in result.stderr


def test_console_with_an_unusable_llm_names_the_variable(tmp_path: Path) -> None:
    env = _env_without_llm(tmp_path)
    env["LLM_MODEL"] = "openai/gpt-4.1-mini"  # LiveKit Inference, but no LiveKit key
    result = _agent_cli("console", "--text", env=env)
    assert result.returncode == 2
    assert "LLM_MODEL=openai/gpt-4.1-mini" in result.stderr
    assert "LIVEKIT_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_help_says_it_is_scripted(tmp_path: Path) -> None:
    result = _agent_cli("demo", "--help", env=_env_without_llm(tmp_path))
    assert result.returncode == 0
    assert "scripted LLM stand-in, not a real model" in " ".join(result.stdout.split())


# --- configuration the CLI relies on -------------------------------------------------------------


def _bare_settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)


def test_models_come_from_settings_with_a_fallback_adapter(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="No LLM configured"):
        build_llm(_bare_settings(tmp_path))
    with pytest.raises(ModelConfigError, match="pip install livekit-plugins-acme"):
        build_llm(_bare_settings(tmp_path, llm_model="acme:big-model"))
    credentials = {"livekit_api_key": "key", "livekit_api_secret": "s" * 32}
    single = build_llm(_bare_settings(tmp_path, llm_model="openai/gpt-4.1-mini", **credentials))
    assert single.model == "openai/gpt-4.1-mini"
    both = build_llm(
        _bare_settings(
            tmp_path,
            llm_model="openai/gpt-4.1-mini",
            llm_fallback_model="google/gemini-2.5-flash",
            **credentials,
        )
    )
    assert isinstance(both, llm.FallbackAdapter)
    # Speech models that cannot be built leave a text-only session instead of failing the call.
    models = build_models(_bare_settings(tmp_path, llm_model="openai/gpt-4.1-mini", **credentials))
    assert models.stt is not None and models.tts is not None
    text_only = build_models(
        _bare_settings(tmp_path, llm_model="openai/gpt-4.1-mini", stt_model="nope", **credentials)
    )
    assert text_only.stt is None


def test_dispatch_metadata_names_the_call_and_the_trialist() -> None:
    metadata = json.dumps(
        {
            "call_id": "call-42",
            "trialist": {
                "email": "sam@example.com",
                "name": "Sam Lee",
                "trial_account_id": "trial-42",
                "timezone": "Europe/Berlin",
            },
        }
    )
    dispatch = read_dispatch(metadata, fallback_call_id="unused")
    assert dispatch.call_id == "call-42"
    assert dispatch.trialist.first_name == "Sam"
    console = read_dispatch("", fallback_call_id="console-1")
    assert console.call_id == "console-1" and console.trialist == CONSOLE_TRIALIST
    with pytest.raises(ValueError, match=r"trialist\.email") as bad:
        read_dispatch(
            json.dumps({"call_id": "c1", "trialist": {"name": "Sam Lee"}}), fallback_call_id="x"
        )
    assert "Sam" not in str(bad.value)  # field names only, never the personal data
