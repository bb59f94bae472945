"""Every command answers bad arguments and settings with one line naming them, never a traceback.

The commands run as users run them: `trialist`, `python worker.py` and `python -m agent` as
child processes, and the CLI's argument handling in-process for the property tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from config.settings import Settings, describe_validation_error, get_settings
from contracts.models import FollowUpStep
from operators.cli import app
from tests.commands import clean_env, run_command
from tests.properties import TALLY, cases
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "pat-na1-do-not-print-me"


def one_line_naming(err: str, name: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert name in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "trialist"), "followups", "list"],
        [sys.executable, "worker.py"],
        [sys.executable, "-m", "agent", "drain-outbox"],
    ],
    ids=["trialist", "worker", "drain-outbox"],
)
async def test_a_temporal_address_that_is_not_host_port_is_named(
    tmp_path: Path, command: list[str]
) -> None:
    env = clean_env(tmp_path, TEMPORAL_ADDRESS="not a host port")
    done = await run_command(*command, env=env, cwd=ROOT)
    assert done.code != 0
    one_line_naming(done.err, "TEMPORAL_ADDRESS")


async def test_a_secret_in_a_bad_setting_is_never_printed(tmp_path: Path) -> None:
    env = clean_env(tmp_path, HUBSPOT_BASE_URL="https://api.hubapi.com", TOOL_DEADLINE_SECONDS="x")
    env["HUBSPOT_ACCESS_TOKEN"] = SECRET
    done = await run_command(sys.executable, "worker.py", env=env, cwd=ROOT)
    assert done.code != 0
    one_line_naming(done.err, "TOOL_DEADLINE_SECONDS")
    assert SECRET not in done.out + done.err


async def test_a_skip_reason_that_is_too_long_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    env = clean_env(tmp_path, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    argv = ["followups", "skip", "call-1", "book_meeting", "--reason", "r" * 600]
    done = await run_command(str(BIN / "trialist"), *argv, env=env, cwd=ROOT)
    assert done.code == 2
    one_line_naming(done.err, "--reason")
    assert "r" * 50 not in done.err


async def test_a_namespace_that_does_not_exist_is_named_not_the_follow_up(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    target = dev_env.client.service_client.config.target_host
    env = clean_env(tmp_path, TEMPORAL_ADDRESS=target, TEMPORAL_NAMESPACE="no-such-namespace")
    done = await run_command(
        str(BIN / "trialist"), "followups", "show", "call-1", env=env, cwd=ROOT
    )
    assert done.code == 1
    one_line_naming(done.err, "namespace 'no-such-namespace' does not exist")


# --- properties -----------------------------------------------------------------------------

hostile = (
    st.text(max_size=80)
    | st.text(min_size=500, max_size=700)
    | st.sampled_from(["", "-", "--", "\x00", "call-1\n", "../../etc", "%s%n", "$(reboot)"])
)
steps = st.sampled_from([step.value for step in FollowUpStep]) | hostile


@pytest.fixture
def cli_on_dev_server(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    for name in Settings.model_fields:
        if not name.startswith("payload_encryption"):
            monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / ".data"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    return CliRunner()


def test_any_cli_arguments_get_a_clear_answer_never_a_traceback(
    cli_on_dev_server: CliRunner,
) -> None:
    @settings(max_examples=cases(120))
    @given(
        command=st.sampled_from(["list", "show", "retry", "skip"]),
        call_id=hostile,
        step=steps,
        reason=hostile,
        status=hostile,
        limit=st.integers(-5, 2000).map(str) | hostile,
    )
    def check(command: str, call_id: str, step: str, reason: str, status: str, limit: str) -> None:
        argv = {
            "list": ["followups", "list", "--status", status, "--limit", limit],
            "show": ["followups", "show", call_id],
            "retry": ["followups", "retry", call_id, step, "--wait", "0"],
            "skip": ["followups", "skip", call_id, step, "--reason", reason],
        }[command]
        result = cli_on_dev_server.invoke(app, argv)
        surface = f"cli: followups {command}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            TALLY.crashed(surface)
            raise AssertionError(f"{argv!r} raised {result.exception!r}")
        assert result.exit_code in (0, 1, 2), (argv, result.output)
        assert "Traceback" not in result.output
        if result.exit_code == 0:
            TALLY.accepted(surface)
        else:
            TALLY.refused(surface)
            assert len(reason) < 60 or reason not in result.output

    check()


@settings(max_examples=cases(400))
@given(
    values=st.dictionaries(
        st.sampled_from(
            [
                "TEMPORAL_ADDRESS",
                "TEMPORAL_DEV_PORT",
                "TOOL_DEADLINE_SECONDS",
                "FOLLOW_UP_CALL_ENDED_TIMEOUT_SECONDS",
                "FOLLOW_UP_STEP_SCHEDULE_TO_CLOSE_SECONDS",
                "BREAKER_FAILURE_THRESHOLD",
                "HTTP_READ_TIMEOUT_SECONDS",
                "TEMPORAL_TLS",
                "SANDBOX_PORT",
            ]
        ),
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=40)
        | st.sampled_from(["inf", "nan", "-1", "0", "1e300", "1e-320", "65536", "true"]),
        max_size=4,
    )
)
def test_any_settings_either_load_or_name_each_bad_variable(values: dict[str, str]) -> None:
    env = {name.lower(): value for name, value in values.items()}
    try:
        loaded = Settings(_env_file=None, **env)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = describe_validation_error(error).splitlines()
        assert lines and all(line.startswith("invalid setting ") for line in lines)
        named = {line.split()[2].rstrip(":") for line in lines}
        assert named <= set(values) | {"SETTINGS"}
        for value in values.values():
            if len(value) >= 6:
                assert all(value not in line for line in lines)
        TALLY.refused("settings")
        return
    TALLY.accepted("settings")
    for seconds in (
        loaded.tool_deadline_seconds,
        loaded.follow_up_call_ended_timeout_seconds,
        loaded.http_read_timeout_seconds,
    ):
        assert 0 < seconds < float("inf")
