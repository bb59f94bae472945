"""Payload keys from settings: validated at start-up, a 0600 dev key, and no start without a key."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.encryption import (
    DEV_KEY_FILE,
    DEV_TOKEN_FILE,
    EncryptionSetupError,
    codec_server_token,
    ensure_dev_secrets,
    payload_keys,
)
from config.settings import Settings, SettingsError, get_settings
from contracts.codec import PayloadKey
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = PayloadKey.generate("k")
OLD = PayloadKey.generate("old")


def settings_without_key(data_dir: Path, **values: object) -> Settings:
    """Settings as a fresh machine has them: no key or token in the environment."""
    defaults: dict[str, object] = {
        "payload_encryption_key": None,
        "payload_encryption_previous_keys": None,
        "codec_server_token": None,
    }
    return Settings(_env_file=None, data_dir=data_dir, **(defaults | values))


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir("/")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()  # the next test's settings come from its own environment


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        ("PAYLOAD_ENCRYPTION_KEY", "hunter2-is-not-a-key", "hunter2"),
        ("PAYLOAD_ENCRYPTION_PREVIOUS_KEYS", "old:nope-nope", "nope-nope"),
    ],
    ids=["key", "previous keys"],
)
def test_a_bad_key_stops_start_up_naming_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None, variable: str, value: str, secret: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert variable in str(raised.value)
    assert secret not in str(raised.value)


def test_a_reused_id_for_a_new_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_KEY", KEY.to_base64())
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_KEY_ID", "old")
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_PREVIOUS_KEYS", f"old:{OLD.to_base64()}")
    with pytest.raises(SettingsError, match="a new key needs a new id"):
        get_settings()


def test_keys_never_appear_in_the_settings_repr(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_KEY", KEY.to_base64())
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_PREVIOUS_KEYS", f"old:{OLD.to_base64()}")
    monkeypatch.setenv("CODEC_SERVER_TOKEN", "codec-token-very-secret-1234")
    settings = get_settings()
    shown = repr(settings) + str(settings.model_dump())
    for secret in (KEY.to_base64(), OLD.to_base64(), "codec-token-very-secret-1234"):
        assert secret not in shown


def test_the_key_from_settings_with_its_previous_keys(tmp_path: Path) -> None:
    settings = settings_without_key(
        tmp_path,
        payload_encryption_key=KEY.to_base64(),
        payload_encryption_key_id="key-2",
        payload_encryption_previous_keys=f"old:{OLD.to_base64()}",
    )
    keys = payload_keys(settings)
    assert keys.current == PayloadKey("key-2", KEY.secret)
    assert keys.previous == (OLD,)
    assert keys.codec().key_ids == ("key-2", "old")


def test_no_key_and_no_dev_key_file_refuses_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(EncryptionSetupError, match="PAYLOAD_ENCRYPTION_KEY is not set"):
        payload_keys(settings_without_key(tmp_path))


def test_with_dev_keys_off_a_dev_key_file_is_never_used(tmp_path: Path) -> None:
    ensure_dev_secrets(settings_without_key(tmp_path))
    production = settings_without_key(tmp_path, payload_encryption_dev_key=False)
    with pytest.raises(EncryptionSetupError, match="PAYLOAD_ENCRYPTION_DEV_KEY=false"):
        payload_keys(production)
    with pytest.raises(EncryptionSetupError, match="CODEC_SERVER_TOKEN is not set"):
        codec_server_token(production)


def test_the_dev_key_and_token_are_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = settings_without_key(tmp_path / ".data")
    created = ensure_dev_secrets(settings)
    key_file, token_file = tmp_path / ".data" / DEV_KEY_FILE, tmp_path / ".data" / DEV_TOKEN_FILE
    assert created == [key_file, token_file]
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = payload_keys(settings)
    token = codec_server_token(settings)
    assert len(token) >= 32
    # A second start keeps them: histories written under the dev key stay readable.
    assert ensure_dev_secrets(settings) == []
    assert payload_keys(settings) == first and codec_server_token(settings) == token


def test_a_key_set_in_the_environment_wins_over_the_dev_key(tmp_path: Path) -> None:
    ensure_dev_secrets(settings_without_key(tmp_path))
    settings = settings_without_key(tmp_path, payload_encryption_key=KEY.to_base64())
    assert payload_keys(settings).current.secret == KEY.secret


def test_the_data_directory_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f".data/{DEV_KEY_FILE}"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, ".data/ must stay out of git: it holds the dev key"


def refused_start(
    command: list[str], data_dir: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run one of our commands with dev keys off: it exits 1 without a traceback."""
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DATA_DIR": str(data_dir),
            "PAYLOAD_ENCRYPTION_DEV_KEY": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done


def test_the_worker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    """Compose and production (PAYLOAD_ENCRYPTION_DEV_KEY=false): no key, no worker."""
    done = refused_start(
        ["worker.py"], tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1", WORKER_METRICS_PORT="0"
    )
    assert "PAYLOAD_ENCRYPTION_KEY is not set" in done.stderr


def test_the_codec_server_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    done = refused_start(
        ["-m", "operators.cli", "codec-server"],
        tmp_path,
        PAYLOAD_ENCRYPTION_KEY=KEY.to_base64(),
        COLUMNS="200",
    )
    assert "CODEC_SERVER_TOKEN is not set" in done.stderr


@pytest.mark.parametrize(
    "command",
    [["-m", "agent", "drain-outbox"], ["-m", "operators.cli", "dev", "--no-agent"]],
    ids=["agent", "trialist dev"],
)
def test_the_agent_and_the_dev_stack_refuse_to_start_without_a_key(
    tmp_path: Path, command: list[str]
) -> None:
    done = refused_start(
        command,
        tmp_path / ".data",
        TEMPORAL_ADDRESS="127.0.0.1:1",
        WORKER_METRICS_PORT="0",
        SANDBOX_PORT=str(free_port()),
        CODEC_SERVER_PORT=str(free_port()),
        COLUMNS="200",
    )
    assert "PAYLOAD_ENCRYPTION_KEY is not set" in done.stdout + done.stderr
    assert not (tmp_path / ".data" / "payload-dev-key").exists()  # no dev key where it's off
