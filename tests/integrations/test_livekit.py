"""LiveKitClient against the sandbox's LiveKit emulator over real HTTP, livekit-api inside."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from livekit import api
from livekit.api.twirp_client import ServerError
from pydantic import SecretStr

from config.settings import SANDBOX_LIVEKIT_API_KEY, SANDBOX_LIVEKIT_API_SECRET
from integrations.errors import AmbiguousOutcomeError, AuthError, TransientError
from integrations.livekit import (
    AgentDispatchRequest,
    DialStatus,
    LiveKitClient,
    OutboundCall,
)
from tests.servers import SandboxServer, free_port

TO = "+14155550142"


def script(sandbox: SandboxServer, number: str, *outcomes: str) -> None:
    httpx2.put(
        f"{sandbox.url}/livekit/__sandbox/numbers/{number}",
        json={"outcomes": list(outcomes)},
        timeout=5,
    ).raise_for_status()


def call(room: str = "call-lk-1") -> OutboundCall:
    return OutboundCall(
        room_name=room,
        participant_identity="trialist",
        to_number=TO,
        from_number="+14155550100",
        trunk_id="ST_sandbox_outbound",
    )


@pytest.fixture
async def livekit(sandbox: SandboxServer) -> AsyncIterator[LiveKitClient]:
    client = LiveKitClient(
        url=f"{sandbox.url}/livekit",
        api_key=SANDBOX_LIVEKIT_API_KEY,
        api_secret=SecretStr(SANDBOX_LIVEKIT_API_SECRET),
    )
    yield client
    await client.aclose()


@pytest.mark.parametrize(
    ("outcome", "status", "sip"),
    [
        ("answered", DialStatus.ANSWERED, None),
        ("voicemail", DialStatus.ANSWERED, None),  # a machine answers; the agent detects it
        ("no_answer", DialStatus.NO_ANSWER, 480),
        ("busy", DialStatus.BUSY, 486),
        ("failed", DialStatus.FAILED, 503),
    ],
)
async def test_each_scripted_outcome_maps_to_a_dial_result(
    sandbox: SandboxServer,
    livekit: LiveKitClient,
    outcome: str,
    status: DialStatus,
    sip: int | None,
) -> None:
    script(sandbox, TO, outcome)
    result = await livekit.dial(call())
    assert (result.status, result.sip_status_code) == (status, sip)
    calls = httpx2.get(f"{sandbox.url}/livekit/__sandbox/calls", timeout=5).json()
    assert [(c["call_to"], c["outcome"], c["room"]) for c in calls] == [(TO, outcome, "call-lk-1")]


async def test_a_script_plays_in_order_then_its_last_outcome_repeats(
    sandbox: SandboxServer, livekit: LiveKitClient
) -> None:
    script(sandbox, TO, "no_answer", "busy", "answered")
    statuses = [(await livekit.dial(call(f"call-lk-{n}"))).status for n in range(4)]
    assert statuses == [
        DialStatus.NO_ANSWER,
        DialStatus.BUSY,
        DialStatus.ANSWERED,
        DialStatus.ANSWERED,
    ]


async def test_a_dispatch_carries_its_metadata_to_the_job_and_is_not_repeated(
    sandbox: SandboxServer, livekit: LiveKitClient
) -> None:
    script(sandbox, TO, "voicemail")
    await livekit.dial(call())
    request = AgentDispatchRequest(
        room_name="call-lk-1", agent_name="pandadoc-trialist", metadata='{"call_id": "lk-1"}'
    )
    first = await livekit.dispatch_agent(request)
    assert await livekit.dispatch_agent(request) == first  # a retried activity finds the first
    job = httpx2.post(
        f"{sandbox.url}/livekit/__sandbox/jobs/claim",
        params={"agent_name": "pandadoc-trialist"},
        timeout=5,
    ).json()
    assert (job["dispatch_id"], job["metadata"], job["answered_by"]) == (
        first,
        '{"call_id": "lk-1"}',
        "machine",
    )


async def test_a_wrong_secret_or_a_missing_grant_is_refused(sandbox: SandboxServer) -> None:
    wrong = LiveKitClient(
        url=f"{sandbox.url}/livekit",
        api_key=SANDBOX_LIVEKIT_API_KEY,
        api_secret=SecretStr("a-wrong-secret-that-is-long-enough-for-hs256"),
    )
    with pytest.raises(AuthError) as refused:
        await wrong.dial(call())
    assert refused.value.status_code == 401
    await wrong.aclose()
    # livekit-api's own service with a token lacking the SIP grant: 403 from the emulator.
    token = api.AccessToken(SANDBOX_LIVEKIT_API_KEY, SANDBOX_LIVEKIT_API_SECRET).to_jwt()
    async with api.LiveKitAPI.with_token(token, f"{sandbox.url}/livekit", failover=False) as lk:
        with pytest.raises(ServerError) as denied:
            await lk.sip.create_sip_participant(
                api.CreateSIPParticipantRequest(sip_trunk_id="t", sip_call_to=TO, room_name="r")
            )
    assert denied.value.status == 403


async def test_an_unparseable_answer_is_ambiguous_and_a_refused_connection_transient(
    sandbox: SandboxServer, livekit: LiveKitClient
) -> None:
    script(sandbox, TO, "garbled")
    with pytest.raises(AmbiguousOutcomeError):
        await livekit.dial(call())
    sandbox.add_fault(
        vendor="livekit", operation="create_sip_participant", error_rate=1.0, status=503
    )
    with pytest.raises(AmbiguousOutcomeError):
        await livekit.dial(call())
    closed = LiveKitClient(
        url=f"http://127.0.0.1:{free_port()}",
        api_key=SANDBOX_LIVEKIT_API_KEY,
        api_secret=SecretStr(SANDBOX_LIVEKIT_API_SECRET),
    )
    with pytest.raises(TransientError):
        await closed.dial(call())
    await closed.aclose()
