"""docker-compose.yml, .env.example and the Dockerfile agree with the code they deploy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from contracts import SEARCH_ATTRIBUTES
from contracts.names import DEFAULT_TASK_QUEUE

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("sandbox", "worker", "worker-activities", "agent", "codec-server")
SETTINGS_NAMES = {name.upper() for name in Settings.model_fields}
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?")
# Variables compose itself reads from .env (not app settings).
COMPOSE_OWN = {"COMPOSE_PROFILES"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_app_service_environment_names_are_settings_fields(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        environment = services(compose)[name]["environment"]
        unknown = sorted(set(environment) - SETTINGS_NAMES)
        assert not unknown, f"{name}: {unknown} are not fields of config.settings.Settings"


def test_env_example_lists_only_known_names() -> None:
    compose_variables = set(VARIABLE.findall(COMPOSE.read_text()))
    unknown = sorted(set(env_example()) - SETTINGS_NAMES - compose_variables - COMPOSE_OWN)
    assert not unknown, f".env.example sets {unknown}, which neither compose nor Settings reads"


def test_every_required_variable_is_in_env_example() -> None:
    required = set(REQUIRED.findall(COMPOSE.read_text()))
    assert {"POSTGRES_PASSWORD", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"} <= required
    example = env_example()
    missing = sorted(name for name in required if not example.get(name))
    assert not missing, f"required by compose but blank or absent in .env.example: {missing}"


def test_env_example_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied to .env, the example must still load (blank vendor URLs mean the sandbox)."""
    for key in SETTINGS_NAMES:
        monkeypatch.delenv(key, raising=False)
    settings = Settings(_env_file=ENV_EXAMPLE)
    assert settings.vendor_mode("hubspot").value == "sandbox"
    assert settings.temporal_task_queue == DEFAULT_TASK_QUEUE


def test_commands_and_ports_match_the_code(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert found["worker"]["command"] == ["python", "worker.py"]
    assert (ROOT / "worker.py").is_file()
    assert found["sandbox"]["command"][:3] == ["python", "-m", "sandbox"]
    assert (ROOT / "sandbox" / "__main__.py").is_file()
    assert found["agent"]["command"][:3] == ["python", "-m", "agent"]
    assert (ROOT / "agent" / "__main__.py").is_file(), "compose runs `python -m agent`"

    sandbox_port = found["sandbox"]["environment"]["SANDBOX_PORT"]
    assert f":{sandbox_port}/__sandbox/health" in str(found["sandbox"]["healthcheck"]["test"])
    assert any(str(p).endswith(f":{sandbox_port}") for p in found["sandbox"]["ports"])
    assert found["worker"]["environment"]["SANDBOX_URL"].endswith(f"sandbox:{sandbox_port}}}")

    metrics_port = found["worker"]["environment"]["WORKER_METRICS_PORT"]
    assert f":{metrics_port}/metrics" in str(found["worker"]["healthcheck"]["test"])
    assert any(str(p).endswith(f":{metrics_port}") for p in found["worker"]["ports"])
    assert found["worker"]["environment"]["WORKER_METRICS_HOST"] == "0.0.0.0"

    for name in ("worker", "agent"):
        assert found[name]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert any(str(p).endswith(":7233") for p in found["temporal"]["ports"])
    assert found["agent"]["environment"]["LIVEKIT_URL"] == "ws://livekit:7880"
    assert "--dev" in found["livekit"]["command"]


def test_the_follow_up_queue_runs_in_a_workflows_and_an_activities_process(
    compose: dict[str, Any],
) -> None:
    found = services(compose)
    roles = {
        name: found[name]["environment"]["WORKER_ROLE"] for name in ("worker", "worker-activities")
    }
    assert roles == {"worker": "workflows", "worker-activities": "activities"}
    assert found["worker-activities"]["command"] == found["worker"]["command"]
    for name in roles:
        assert found[name]["environment"]["TEMPORAL_TASK_QUEUE"] == (
            f"${{TEMPORAL_TASK_QUEUE:-{DEFAULT_TASK_QUEUE}}}"
        )
    allowed = Settings.model_fields["worker_role"].annotation
    assert set(roles.values()) <= set(getattr(allowed, "__args__", ()))


def test_task_queue_default_matches_contracts(compose: dict[str, Any]) -> None:
    queue = services(compose)["worker"]["environment"]["TEMPORAL_TASK_QUEUE"]
    assert queue == f"${{TEMPORAL_TASK_QUEUE:-{DEFAULT_TASK_QUEUE}}}"
    assert Settings.model_fields["temporal_task_queue"].default == DEFAULT_TASK_QUEUE


def test_setup_registers_the_workflow_search_attributes(compose: dict[str, Any]) -> None:
    script = "\n".join(services(compose)["temporal-setup"]["command"])
    for key in SEARCH_ATTRIBUTES:
        assert key.name in script
    assert "--type Keyword" in script


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    found = services(compose)
    for name in ("worker", "worker-activities", "agent"):
        conditions = found[name]["depends_on"]
        assert conditions["temporal-setup"]["condition"] == "service_completed_successfully"
    assert found["agent"]["depends_on"]["livekit"]["condition"] == "service_healthy"
    assert found["temporal-ui"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    for name in ("postgresql", "temporal", "temporal-ui", "livekit", "redis", *APP_SERVICES):
        assert "healthcheck" in found[name], f"{name} has no health check"
    # A profile-gated service cannot be a dependency, or compose refuses to start without it.
    for name, service in found.items():
        assert "sandbox" not in service.get("depends_on", {}), f"{name} depends on the sandbox"
    assert found["sandbox"]["profiles"] == ["sandbox"]


def test_dockerfile_is_multi_stage_non_root_and_downloads_models() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "python -m agent download-files" in text
    copied = set(re.findall(r"^COPY --chown=\S+ (\S+)", text, flags=re.MULTILINE))
    for package in ("contracts", "integrations", "activities", "workflows", "agent", "sandbox"):
        assert package in copied, f"the image lacks {package}/"
    assert {"config", "operators", "worker.py"} <= copied


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("docker-compose is not installed (make test installs Debian's package)")
    return found


def _clean_env() -> dict[str, str]:
    names = set(env_example()) | set(VARIABLE.findall(COMPOSE.read_text()))
    return {k: v for k, v in os.environ.items() if k not in names}


def run_clean(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """`command` in the repo, without any variable that compose or .env.example names."""
    return subprocess.run(
        command, capture_output=True, text=True, env=_clean_env() | env, cwd=ROOT, timeout=60
    )


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return run_clean(
        [_docker_compose(), "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"]
    )


def help_of(module: str, *command: str) -> subprocess.CompletedProcess[str]:
    """`python -m module command --help`, wide enough that no line wraps."""
    return run_clean([sys.executable, "-m", module, *command, "--help"], COLUMNS="200")


def test_docker_compose_config_validates() -> None:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_names_a_missing_required_variable(tmp_path: Path) -> None:
    env_file = tmp_path / "incomplete.env"
    lines = [
        line
        for line in ENV_EXAMPLE.read_text().splitlines()
        if not line.startswith("POSTGRES_PASSWORD=")
    ]
    env_file.write_text("\n".join(lines) + "\n")
    result = compose_config(env_file)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_the_agent_cli_has_the_commands_compose_and_the_image_run() -> None:
    """`python -m agent start` (compose) and `download-files` (Dockerfile) exist."""
    result = help_of("agent")
    assert result.returncode == 0, result.stderr
    commands = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert {"start", "download-files", "console"} <= commands


def test_compose_encrypts_with_a_key_from_the_environment_and_never_a_dev_key(
    compose: dict[str, Any],
) -> None:
    found = services(compose)
    for name in ("worker", "agent", "codec-server"):
        environment = found[name]["environment"]
        assert environment["PAYLOAD_ENCRYPTION_KEY"] == "${PAYLOAD_ENCRYPTION_KEY:-}", name
        assert environment["PAYLOAD_ENCRYPTION_DEV_KEY"] == "false", name
        assert "PAYLOAD_ENCRYPTION_PREVIOUS_KEYS" in environment, name
    example = env_example()
    assert "PAYLOAD_ENCRYPTION_KEY" in example and "CODEC_SERVER_TOKEN" in example
    assert not example["PAYLOAD_ENCRYPTION_KEY"], ".env.example must not ship a key"


def test_the_codec_server_runs_beside_the_ui_and_the_ui_decodes_through_it(
    compose: dict[str, Any],
) -> None:
    found = services(compose)
    codec = found["codec-server"]
    assert codec["command"] == ["python", "-m", "operators.cli", "codec-server"]
    port = codec["environment"]["CODEC_SERVER_PORT"]
    assert codec["environment"]["CODEC_SERVER_HOST"] == "0.0.0.0"
    assert codec["environment"]["CODEC_SERVER_TOKEN"] == "${CODEC_SERVER_TOKEN:-}"
    assert any(str(p).endswith(f":{port}") for p in codec["ports"])
    assert f":{port}/health" in str(codec["healthcheck"]["test"])
    ui = found["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == codec["environment"]["CODEC_SERVER_URL"]
    assert ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"  # the sign-in cookie
    # CORS answers the UI's origin only: the same variable the app's UI links use.
    assert (
        codec["environment"]["CODEC_SERVER_UI_ORIGIN"]
        == "${TEMPORAL_UI_URL:-http://localhost:8233}"
    )


def test_the_cli_has_the_command_compose_runs_for_the_codec_server() -> None:
    result = help_of("operators.cli", "codec-server")
    assert result.returncode == 0, result.stderr
    assert "/encode and /decode" in result.stdout


def test_the_image_copies_every_package_the_project_ships() -> None:
    """A package missing from the image is an ImportError at the first call, not at build time."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        pattern.removesuffix("*")
        for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    dockerfile = DOCKERFILE.read_text()
    copied = {
        line.split()[-1].removeprefix("./")
        for line in dockerfile.splitlines()
        if line.startswith("COPY --chown")
    }
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    at = dockerfile.index("compileall")
    compiled = dockerfile[at : dockerfile.index("\n", dockerfile.index("\\\n", at) + 2)]
    assert packages <= set(compiled.replace("\\", " ").split())


def test_agent_hosts_share_breakers_through_the_redis_service(compose: dict[str, Any]) -> None:
    found = services(compose)
    agent = found["agent"]
    assert agent["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis-cli" in str(found["redis"]["healthcheck"]["test"])
    environment = agent["environment"]
    assert environment["BREAKER_STORE"] == "redis"
    assert environment["BREAKER_REDIS_URL"].startswith("redis://redis:6379/")
    settings = Settings(
        _env_file=None,
        breaker_store=environment["BREAKER_STORE"],
        breaker_redis_url=environment["BREAKER_REDIS_URL"],
    )
    assert settings.breaker_store == "redis"
    # One scrape point per agent host, published like the worker's.
    metrics_port = environment["AGENT_METRICS_PORT"]
    assert any(str(p).endswith(f":{metrics_port}") for p in agent["ports"])
