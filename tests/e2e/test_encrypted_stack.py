"""`trialist dev` end to end, encrypted: what Temporal stores, what the codec server shows, logs.

One stack, on its own dev key: demo call 3 (HubSpot rejects the contact, a failed vendor call),
then a follow-up handed off from this test exactly as the agent does, for a person whose details
exist nowhere else. The server's copy of that history is unreadable (the Python client's
fetch_history and `temporal workflow show --output json`), the codec server opens it for the token
and refuses everyone else, and no log the run wrote (worker, agent, CLI, codec server, sandbox,
Temporal) holds that person's details or a secret, refused messages and failures included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from config.settings import Settings
from contracts import (
    CALL_ENDED_SIGNAL,
    DEFAULT_TASK_QUEUE,
    WORKFLOW_TYPE,
    FollowUpInput,
    FollowUpProgress,
    FollowUpStatus,
    workflow_id_for,
)
from contracts.codec import is_encrypted
from contracts.models import (
    BookingRequest,
    CallOutcome,
    EndedReason,
    QualificationSignals,
    Trialist,
)
from handoff.follow_up import BookingHandoffStatus, CallEndedStatus, FollowUpHandoff
from tests.e2e.stack import (
    DevStackProcess,
    dev_codec,
    dev_key,
    dev_token,
    start,
    temporal_client,
)
from tests.history_scan import cli_json_bytes, found, opened_bytes, personal_texts, raw_bytes
from tests.servers import binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

READY_SECONDS = 60.0
DEMO_SECONDS = 90.0
TRIALIST = Path(sys.executable).parent / "trialist"

PERSON = Trialist(
    email="ottoline.vandersloot@hollowmere-freight.example",
    name="Ottoline Vandersloot",
    company="Hollowmere Freight",
    phone="+442079460958",
    trial_account_id="trial-e2e-codec",
    timezone="Europe/London",
)


# Parts of the above that no other text here contains: a partial echo is a leak too.
DISTINCTIVE = {
    "first name": "Ottoline",
    "last name": "Vandersloot",
    "company word": "Hollowmere",
    "email local part": "ottoline.vandersloot",
    "third party": "Perpetua",
    "third party's surname": "Haverford-Lisle",
    "what was said": "rate cards",
}


def the_outcome(call_id: str) -> CallOutcome:
    ended = datetime.now(UTC).replace(microsecond=0)
    return CallOutcome(
        call_id=call_id,
        trialist=PERSON,
        started_at=ended - timedelta(minutes=9),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        signals=QualificationSignals(team_size=40, use_case="freight quotes"),
        notes=["Ottoline's deputy Perpetua Haverford-Lisle approves spend over 10k."],
        summary="Hollowmere quotes freight lanes by hand; wants templated rate cards by March.",
    )


def handoff_for(env: dict[str, str], tmp_path: Path) -> FollowUpHandoff:
    """The agent's handoff, pointed at the stack and using the stack's dev key (no key set)."""
    settings = Settings(
        _env_file=None,
        data_dir=Path(env["DATA_DIR"]),
        temporal_address=f"127.0.0.1:{env['TEMPORAL_DEV_PORT']}",
        payload_encryption_key=None,
        payload_encryption_previous_keys=None,
        codec_server_token=None,
    )
    return FollowUpHandoff.from_settings(settings)


def temporal_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("temporal"), *args, "--address", f"127.0.0.1:{env['TEMPORAL_DEV_PORT']}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def operator_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRIALIST), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def codec_url(env: dict[str, str]) -> str:
    return f"http://localhost:{env['CODEC_SERVER_PORT']}"


def secrets_of(env: dict[str, str]) -> dict[str, str]:
    key = dev_key(env).to_base64()
    url_safe = key.replace("+", "-").replace("/", "_")
    return {"dev key": key, "dev key (url-safe)": url_safe, "codec token": dev_token(env)}


async def follow_up_end_to_end(env: dict[str, str], tmp_path: Path, call_id: str) -> None:
    handoff = handoff_for(env, tmp_path)
    try:
        ended = await handoff.call_ended(the_outcome(call_id))
        assert ended.status is CallEndedStatus.DELIVERED
        client = await temporal_client(env)
        handle = client.get_workflow_handle(workflow_id_for(call_id))
        progress = FollowUpProgress.model_validate(await asyncio.wait_for(handle.result(), 60))
        assert progress.status is FollowUpStatus.COMPLETED
        # A refused message: a booking after the call ended (the workflow's validator says no).
        late = BookingRequest(
            call_id=call_id, slot_start=datetime.now(UTC) + timedelta(days=2), guest=PERSON
        )
        refused = await handoff.book_meeting(late, wait=2.0)
        assert refused.status is BookingHandoffStatus.REJECTED
        # A message the workflow can't use at all: a call_ended that is not a CallOutcome.
        other = f"{call_id}-bad"
        bad = await client.start_workflow(
            WORKFLOW_TYPE,
            FollowUpInput(call_id=other),
            id=workflow_id_for(other),
            task_queue=DEFAULT_TASK_QUEUE,
        )
        refused = the_outcome(other).model_dump(mode="json")
        refused["trialist"]["phone"] = "call Ottoline Vandersloot on her mobile"  # not E.164
        await bad.signal(CALL_ENDED_SIGNAL, refused)
        await asyncio.sleep(1.0)  # the worker drops it, with a log line
        await bad.terminate("test over")
    finally:
        handoff.outbox.close()


def test_an_encrypted_stack_shows_personal_data_only_through_the_codec_server(
    stack_env: dict[str, str],
    tmp_path: Path,
    running: list[DevStackProcess],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stack = start(running, stack_env, tmp_path, "--demo-call", "3")
    stack.wait_for(r"✓ codec server ready", READY_SECONDS)
    stack.wait_for(r"✓ worker ready", READY_SECONDS)
    stack.wait_for(r"follow-up status: needs_attention", DEMO_SECONDS)
    stack.wait_for(r"agent demo finished", DEMO_SECONDS)
    call_id = "e2e-codec-1"
    # Call 3 leaves HubSpot rejecting contacts for the operator to fix; fix it, as the README says.
    sandbox = f"http://127.0.0.1:{stack_env['SANDBOX_PORT']}"
    httpx2.delete(f"{sandbox}/__sandbox/faults?vendor=hubspot", timeout=5).raise_for_status()
    asyncio.run(follow_up_end_to_end(stack_env, tmp_path, call_id))
    workflow_id = workflow_id_for(call_id)
    texts = personal_texts(the_outcome(call_id)) | DISTINCTIVE

    # 1. What the server stores: the Python client's fetch_history and the CLI's JSON.
    async def history_events() -> list:
        client = await temporal_client(stack_env)
        return list((await client.get_workflow_handle(workflow_id).fetch_history()).events)

    events = asyncio.run(history_events())
    assert found(texts, raw_bytes(events)) == []
    shown = temporal_cli(stack_env, "workflow", "show", "-w", workflow_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert found(texts, cli_json_bytes(shown.stdout)) == []
    assert found(texts, opened_bytes(events, dev_codec(stack_env))) == sorted(texts)

    # 2. The same history through the codec server, with the token: everything is there.
    token = dev_token(stack_env)
    decoded = temporal_cli(
        stack_env, "workflow", "show", "-w", workflow_id, "--output", "json",
        "--codec-endpoint", codec_url(stack_env), "--codec-auth", f"Bearer {token}",
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
    assert found(texts, cli_json_bytes(decoded.stdout)) == sorted(texts)

    # 3. The codec server refuses anyone without the token, and any other origin.
    started = json.loads(shown.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]
    (sealed,) = json_format.Parse(json.dumps(started["input"]), Payloads()).payloads
    assert is_encrypted(sealed)
    request = json_format.MessageToJson(Payloads(payloads=[sealed]))
    ui = f"http://localhost:{stack_env['TEMPORAL_UI_PORT']}"
    cases = {
        "no token": ({}, 401),
        "wrong token": ({"Authorization": "Bearer not-the-token-0000000000"}, 401),
        "wrong origin": ({"Authorization": f"Bearer {token}", "Origin": "http://a.example"}, 403),
        "the token": ({"Authorization": f"Bearer {token}", "Origin": ui}, 200),
    }
    for case, (headers, status) in cases.items():
        answer = httpx2.post(
            codec_url(stack_env) + "/decode",
            content=request,
            headers={"Content-Type": "application/json", **headers},
            timeout=10,
        )
        assert answer.status_code == status, case
        if status != 200:
            assert set(answer.json()) == {"error"}, case

    # 4. Operators: the CLI decodes the "who" column; a refused repair is one clear line.
    cli_env = dict(stack_env)
    listing = operator_cli(cli_env, tmp_path, "followups", "list", "--status", "completed")
    assert listing.returncode == 0, listing.stderr
    assert "Ottoline Vandersloot (Hollowmere Freight)" in listing.stdout
    repair = operator_cli(cli_env, tmp_path, "followups", "retry", call_id)
    assert repair.returncode == 1 and "nothing to repair" in repair.stderr

    assert stack.stop(signal.SIGINT) == 0

    # 5. Every log the run wrote, and everything printed: no personal data, no secret.
    log_dir = Path(stack_env["DATA_DIR"]) / "logs"
    logs = {path.name: path.read_bytes() for path in log_dir.iterdir()}
    assert {"worker.log", "codec-server.log", "sandbox.log", "temporal.log"} <= set(logs)
    logs["trialist dev output (agent demo included)"] = stack.output.encode()
    logs["CLI stderr"] = (listing.stderr + repair.stderr).encode()
    logs["this test's handoff (the agent side)"] = caplog.text.encode()
    secrets = secrets_of(stack_env)
    for name, content in logs.items():
        assert found(texts, content) == [], name
        assert found(secrets, content) == [], name
    # The worker did see the refused and failed messages it had to log.
    worker_log = logs["worker.log"].decode()
    assert "needs attention" in worker_log and "call_ended" in worker_log

    # 6. The demo caller's own details stayed out of the service logs too.
    from devtools.people import PRIYA

    for name in ("worker.log", "codec-server.log", "sandbox.log", "temporal.log"):
        assert PRIYA.email.encode() not in logs[name], name
    outbox = Path(stack_env["DATA_DIR"]) / "outbox.db"
    assert not outbox.exists() or oct(outbox.stat().st_mode & 0o777) == "0o600"
