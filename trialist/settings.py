"""The one settings object: every process reads its configuration here, validated at start-up."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Vendor = Literal["salesforce", "hubspot", "chilipiper", "amplitude"]
VENDORS: tuple[Vendor, ...] = ("salesforce", "hubspot", "chilipiper", "amplitude")

# Credentials the sandbox accepts; used only when a vendor points at the sandbox.
SANDBOX_CREDENTIAL = "sandbox-secret"


class VendorMode(StrEnum):
    SANDBOX = "sandbox"
    REAL = "real"


class Settings(BaseSettings):
    """Configuration from the environment and `.env`. Field names map to upper-case variables."""

    # Empty values count as unset: compose passes `${VAR:-}` and .env.example lists blank keys.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )

    # --- local data -------------------------------------------------------------------------
    data_dir: Path = Field(default=Path(".data"), description="Where SQLite files live.")

    # --- Temporal -----------------------------------------------------------------------------
    temporal_address: str | None = Field(
        default=None,
        description="host:port of an existing Temporal server. Unset: `trialist dev` starts one.",
    )
    temporal_namespace: str = "default"
    temporal_task_queue: str = "trialist-follow-ups"
    temporal_dev_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    temporal_ui_url: str | None = Field(
        default=None, description="Base URL of the Temporal UI for links. Unset: local dev UI."
    )
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False

    # --- sandbox ------------------------------------------------------------------------------
    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(default=8900, ge=1, le=65535)
    sandbox_url: str | None = Field(
        default=None, description="Base URL of a sandbox run elsewhere (docker compose)."
    )
    sandbox_seed: int = 7

    # --- vendors: a base URL set means the real API, unset means the sandbox --------------------
    http_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    http_read_timeout_seconds: float = Field(default=5.0, gt=0)

    salesforce_base_url: str | None = Field(
        default=None, description="My Domain URL, e.g. https://acme.my.salesforce.com"
    )
    salesforce_client_id: str | None = None
    salesforce_client_secret: SecretStr | None = None
    salesforce_api_version: str = "v62.0"
    salesforce_lead_external_id_field: str = Field(
        default="Trial_Account_Id__c", description="External-id field that Lead upserts match on."
    )
    salesforce_task_external_id_field: str = Field(
        default="Voice_Call_Id__c", description="External-id field of the call-log Task."
    )
    salesforce_event_external_id_field: str = Field(
        default="Voice_Meeting_Id__c", description="External-id field of the meeting Event."
    )

    hubspot_base_url: str | None = Field(default=None, description="https://api.hubapi.com")
    hubspot_access_token: SecretStr | None = None

    chilipiper_base_url: str | None = Field(default=None, description="https://fire.chilipiper.com")
    chilipiper_api_token: SecretStr | None = None
    chilipiper_scheduling_link: str = Field(
        default="pandadoc-trial-demo", description="Slug of the scheduling link used for booking."
    )

    amplitude_base_url: str | None = Field(default=None, description="https://api2.amplitude.com")
    amplitude_profile_base_url: str | None = Field(
        default=None, description="https://profile-api.amplitude.com"
    )
    amplitude_api_key: SecretStr | None = None
    amplitude_secret_key: SecretStr | None = None

    # --- worker -------------------------------------------------------------------------------
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 disables.")
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface for the metrics endpoint; 0.0.0.0 in a container.",
    )
    worker_shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    worker_connect_attempts: int = Field(default=10, ge=1)

    # --- follow-up workflow (passed into the workflow input; workflows never read settings) ----
    follow_up_call_ended_timeout_seconds: float = Field(default=4 * 3600, gt=0)
    follow_up_step_schedule_to_close_seconds: float = Field(default=3600, gt=0)

    # --- real-time agent ----------------------------------------------------------------------
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    tool_deadline_seconds: float = Field(default=2.5, gt=0)
    filler_after_seconds: float = Field(default=1.0, gt=0)
    booking_wait_seconds: float = Field(default=2.0, gt=0)
    handoff_timeout_seconds: float = Field(default=1.0, gt=0)
    outbox_relay_interval_seconds: float = Field(default=5.0, gt=0)

    livekit_url: str | None = None
    livekit_api_key: SecretStr | None = None
    livekit_api_secret: SecretStr | None = None
    llm_model: str | None = Field(
        default=None, description="e.g. openai/gpt-4.1-mini (LiveKit Inference) or openai:gpt-4.1"
    )
    llm_fallback_model: str | None = None
    stt_model: str = "deepgram/nova-3"
    tts_model: str = "cartesia/sonic-2"
    openai_api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _real_vendors_need_credentials(self) -> Settings:
        required: dict[str, tuple[str, ...]] = {
            "salesforce_base_url": ("salesforce_client_id", "salesforce_client_secret"),
            "hubspot_base_url": ("hubspot_access_token",),
            "chilipiper_base_url": ("chilipiper_api_token",),
            "amplitude_base_url": ("amplitude_api_key",),
            "amplitude_profile_base_url": ("amplitude_secret_key",),
        }
        for url_field, needed in required.items():
            if getattr(self, url_field) is None:
                continue
            missing = [name.upper() for name in needed if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"{url_field.upper()} is set, so the real API is used, but "
                    f"{', '.join(missing)} is missing"
                )
        return self

    # --- derived values -------------------------------------------------------------------------
    @property
    def sandbox_base_url(self) -> str:
        return (self.sandbox_url or f"http://{self.sandbox_host}:{self.sandbox_port}").rstrip("/")

    def vendor_mode(self, vendor: Vendor) -> VendorMode:
        return VendorMode.SANDBOX if self._real_url(vendor) is None else VendorMode.REAL

    def vendor_base_url(self, vendor: Vendor) -> str:
        """The vendor's real base URL, or the sandbox's prefix for it."""
        return (self._real_url(vendor) or f"{self.sandbox_base_url}/{vendor}").rstrip("/")

    def amplitude_profile_url(self) -> str:
        if self.amplitude_profile_base_url:
            return self.amplitude_profile_base_url.rstrip("/")
        return f"{self.sandbox_base_url}/amplitude"

    def secret(self, name: str) -> str:
        """A credential's value, or the sandbox's credential when the field is unset."""
        value = getattr(self, name)
        if value is None:
            return SANDBOX_CREDENTIAL
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return str(value)

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_dev_port}"

    @property
    def temporal_ui_base(self) -> str:
        return (self.temporal_ui_url or f"http://localhost:{self.temporal_ui_port}").rstrip("/")

    def workflow_ui_link(self, workflow_id: str) -> str:
        return (
            f"{self.temporal_ui_base}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"
        )

    @property
    def llm_configured(self) -> bool:
        return self.llm_model is not None

    def _real_url(self, vendor: Vendor) -> str | None:
        url: str | None = getattr(self, f"{vendor}_base_url")
        return url


class SettingsError(SystemExit):
    """Raised at start-up with a message naming each bad variable."""


def describe_validation_error(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        lines.append(f"  {name}: {item['msg']}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process; exits with a readable message when a value is bad."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
