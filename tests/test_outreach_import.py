"""The trialist CSV importer and the dial activity's handling of an unreadable LiveKit answer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx2
from pydantic import SecretStr

from activities.outreach import OutreachActivities
from config.settings import SANDBOX_LIVEKIT_API_KEY, SANDBOX_LIVEKIT_API_SECRET, Settings
from contracts.outreach import DialResultKind, PlaceDialInput
from integrations.livekit import LiveKitClient
from operators.outreach import parse_trialists_csv
from tests.servers import SandboxServer

NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
HEADER = "trial_account_id,name,email,phone,timezone,state,consent_source"


def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]


def test_each_bad_row_is_refused_with_its_line_and_reason_and_the_rest_imported(
    tmp_path: Path,
) -> None:
    rows = [
        HEADER,
        "t-1,Ann Good,ann@example.com,+13055550301,,,signup form",
        "t-2,Bad Phone,bad@example.com,+1555,,,signup form",
        "t-3,Bad Zone,zone@example.com,+12125550302,Mars/Olympus,,signup form",
        "t-4,No Consent,nc@example.com,+12125550303,,,",
        "t-1,Dup Account,dup@example.com,+12125550304,,,signup form",
        "t-6,Dup Phone,dp@example.com,+13055550301,,,signup form",
        "t-7,Not US,uk@example.com,+442071234567,,,signup form",
        "t-8,Given Zone,gz@example.com,+12125550305,America/Chicago,TX,signup form",
    ]
    plan = parse_trialists_csv("\n".join(rows) + "\n", settings(tmp_path), now=NOW)
    refused = {error.line: error.reason for error in plan.errors}
    assert sorted(refused) == [3, 4, 5, 6, 7, 8]
    assert refused[3].startswith("phone:") and "+1555" not in refused[3]
    assert refused[4].startswith("timezone:")
    assert refused[5].startswith("consent_source: missing consent")
    assert refused[6] == refused[7] == "duplicate of line 2 (same trial account or phone)"
    assert refused[8] == "phone: is not a valid US phone number"
    imported = {line: input for line, input in plan.inputs}
    assert sorted(imported) == [2, 9]
    miami = imported[2].place
    assert (miami.timezones, miami.region, miami.inferred) == (("America/New_York",), "FL", True)
    given = imported[9].place
    assert (given.timezones, given.region, given.inferred) == (("America/Chicago",), "TX", False)
    assert imported[2].policy.holidays  # US public holidays of the months ahead


def test_a_csv_without_a_required_column_is_refused_whole(tmp_path: Path) -> None:
    try:
        parse_trialists_csv("name,email\nA,a@example.com\n", settings(tmp_path), now=NOW)
    except Exception as error:
        assert "trial_account_id" in str(error) and "line 1" in str(error)
    else:
        raise AssertionError("a CSV without required columns was accepted")


async def test_an_unparseable_livekit_answer_is_a_counted_attempt_not_a_lost_outreach(
    sandbox: SandboxServer,
) -> None:
    httpx2.put(
        f"{sandbox.url}/livekit/__sandbox/numbers/+12125550399",
        json={"outcomes": ["garbled"]},
        timeout=5,
    ).raise_for_status()
    livekit = LiveKitClient(
        url=f"{sandbox.url}/livekit",
        api_key=SANDBOX_LIVEKIT_API_KEY,
        api_secret=SecretStr(SANDBOX_LIVEKIT_API_SECRET),
    )
    activities = OutreachActivities(clients=None, livekit=livekit, task_queue="q")  # type: ignore[arg-type]
    try:
        output = await activities.place_dial(
            PlaceDialInput(
                call_id="ob-garbled",
                room_name="call-ob-garbled",
                to_number="+12125550399",
                from_number="+14155550100",
                trunk_id="ST_test",
                max_call_duration_seconds=1800,
            )
        )
    finally:
        await livekit.aclose()
    # The activity returns (nothing raised for Temporal to retry into a second ring): the
    # workflow records a failed, ambiguous attempt and retries later within the caps.
    assert (output.result, output.ambiguous) == (DialResultKind.FAILED, True)
