"""The one settings object: every process reads its configuration here, validated at start-up."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.codec import check_key_id, decode_key_text, parse_previous_keys
from contracts.models import (
    MAX_CALL_ENDED_TIMEOUT_SECONDS,
    MAX_LIVENESS_SECONDS,
    MAX_STEP_SCHEDULE_TO_CLOSE_SECONDS,
)

Vendor = Literal["salesforce", "hubspot", "chilipiper", "amplitude"]
VENDORS: tuple[Vendor, ...] = ("salesforce", "hubspot", "chilipiper", "amplitude")

# Amplitude serves profiles from another host than tracking.
AMPLITUDE_PROFILE_API_URL = "https://profile-api.amplitude.com"

# A DNS name, an IPv4 address or a bracketed IPv6 address, as gRPC targets take them.
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]", re.ASCII)

# Credentials the sandbox accepts; used only when a vendor points at the sandbox.
# A duration setting: finite (an "inf" would disable a deadline), and for Seconds above zero.
FiniteSeconds = Annotated[float, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

SANDBOX_CREDENTIAL = "sandbox-secret"
# The API key and secret the sandbox's LiveKit emulator accepts (HS256 wants 32+ bytes).
SANDBOX_LIVEKIT_API_KEY = "sandbox-livekit-key"
SANDBOX_LIVEKIT_API_SECRET = "sandbox-livekit-secret-not-for-production"


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
        # A refused value may be a secret: errors name the variable, never its value.
        hide_input_in_errors=True,
    )

    # --- local data -------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".data"),
        description="Where SQLite files (Temporal dev, sandbox, outbox) and logs live.",
    )

    # --- Temporal -----------------------------------------------------------------------------
    temporal_address: str | None = Field(
        default=None,
        description="host:port of an existing Temporal server. Unset: `trialist dev` starts one.",
    )
    temporal_namespace: str = Field(
        default="default", description="Temporal namespace; must exist."
    )
    temporal_task_queue: str = Field(
        default="trialist-follow-ups",
        description="Task queue of the follow-ups; the worker, agent and CLI must agree.",
    )
    temporal_dev_port: int = Field(
        default=7233,
        ge=1,
        le=65535,
        description="gRPC port of the dev server; the target when TEMPORAL_ADDRESS is unset.",
    )
    temporal_ui_port: int = Field(
        default=8233, ge=1, le=65535, description="Port of the dev server's web UI."
    )
    temporal_ui_url: str | None = Field(
        default=None, description="Base URL of the Temporal UI for links. Unset: local dev UI."
    )
    temporal_api_key: SecretStr | None = Field(
        default=None, description="Temporal Cloud API key; turns TLS on."
    )
    temporal_tls: bool = Field(default=False, description="Use TLS to reach Temporal.")

    # --- payload encryption and the codec server (contracts/codec.py, config/encryption.py) -----
    payload_encryption_key: SecretStr | None = Field(
        default=None,
        description="AES-256 key (base64 of 32 bytes; `trialist codec-key` makes one) that "
        "encrypts every Temporal payload and the outbox. Unset: the dev key in DATA_DIR "
        "(see PAYLOAD_ENCRYPTION_DEV_KEY).",
    )
    payload_encryption_key_id: str = Field(
        default="key-1",
        description="Id stored with each payload sealed by PAYLOAD_ENCRYPTION_KEY; a new key "
        "needs a new id.",
    )
    payload_encryption_previous_keys: SecretStr | None = Field(
        default=None,
        description="Retired keys that still decrypt older payloads: `id:base64key`, "
        "comma-separated. Remove one only once no history or outbox row needs it.",
    )
    payload_encryption_dev_key: bool = Field(
        default=True,
        description="Without PAYLOAD_ENCRYPTION_KEY, use the dev key DATA_DIR/payload-dev-key "
        "(`trialist dev` creates it, mode 0600). false (compose, production): no key, no start.",
    )
    codec_server_host: str = Field(
        default="127.0.0.1", description="Interface the codec server binds; 0.0.0.0 in a container."
    )
    codec_server_port: int = Field(
        default=8234, ge=1, le=65535, description="Port of the codec server (/encode, /decode)."
    )
    codec_server_url: str | None = Field(
        default=None,
        description="The codec server's URL as the UI and CLI reach it. Unset: "
        "http://localhost:CODEC_SERVER_PORT.",
    )
    codec_server_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the codec server requires. Unset: the dev token "
        "DATA_DIR/codec-server-token, under the same rule as PAYLOAD_ENCRYPTION_DEV_KEY.",
    )
    codec_server_ui_origin: str | None = Field(
        default=None,
        description="The one browser origin the codec server allows (CORS). Unset: the "
        "origin of TEMPORAL_UI_URL, or of the local dev UI.",
    )

    # --- sandbox ------------------------------------------------------------------------------
    sandbox_host: str = Field(default="127.0.0.1", description="Interface the sandbox binds.")
    sandbox_port: int = Field(
        default=8900, ge=1, le=65535, description="Port the sandbox listens on."
    )
    sandbox_url: str | None = Field(
        default=None, description="Base URL of a sandbox run elsewhere (docker compose)."
    )
    sandbox_seed: int = Field(default=7, description="Seed of the sandbox's fault draws.")

    # --- vendors: a base URL set means the real API, unset means the sandbox --------------------
    http_connect_timeout_seconds: FiniteSeconds = Field(
        default=2.0, gt=0, allow_inf_nan=False, description="Connect timeout of vendor HTTP calls."
    )
    http_read_timeout_seconds: FiniteSeconds = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="Read timeout of vendor HTTP calls."
    )

    salesforce_base_url: str | None = Field(
        default=None,
        description="Real API: My Domain URL, e.g. https://acme.my.salesforce.com. Unset: sandbox.",
    )
    salesforce_client_id: str | None = Field(
        default=None, description="Connected app consumer key (client-credentials flow)."
    )
    salesforce_client_secret: SecretStr | None = Field(
        default=None, description="Connected app consumer secret."
    )
    salesforce_api_version: str = Field(default="v62.0", description="Salesforce REST API version.")
    salesforce_lead_external_id_field: str = Field(
        default="Trial_Account_Id__c", description="External-id field that Lead upserts match on."
    )
    salesforce_task_external_id_field: str = Field(
        default="Voice_Call_Id__c", description="External-id field of the call-log Task."
    )
    salesforce_event_external_id_field: str = Field(
        default="Voice_Meeting_Id__c", description="External-id field of the meeting Event."
    )

    hubspot_base_url: str | None = Field(
        default=None, description="Real API: https://api.hubapi.com. Unset: sandbox."
    )
    hubspot_access_token: SecretStr | None = Field(
        default=None, description="Private-app access token."
    )

    chilipiper_base_url: str | None = Field(
        default=None, description="Real API: https://fire.chilipiper.com. Unset: sandbox."
    )
    chilipiper_api_token: SecretStr | None = Field(default=None, description="Edge API token.")
    chilipiper_scheduling_link: str = Field(
        default="pandadoc-trial-demo", description="Slug of the scheduling link used for booking."
    )

    amplitude_base_url: str | None = Field(
        default=None, description="Real API: https://api2.amplitude.com. Unset: sandbox."
    )
    amplitude_profile_base_url: str | None = Field(
        default=None,
        description=(
            "User Profile API base. Unset: https://profile-api.amplitude.com when"
            " AMPLITUDE_BASE_URL is set, else the sandbox."
        ),
    )
    amplitude_api_key: SecretStr | None = Field(
        default=None, description="Project API key (HTTP V2 ingestion)."
    )
    amplitude_secret_key: SecretStr | None = Field(
        default=None, description="Project secret key (User Profile API)."
    )

    # --- worker -------------------------------------------------------------------------------
    worker_metrics_port: int = Field(
        default=9464,
        ge=0,
        allow_inf_nan=False,
        le=65535,
        description="Port of the worker's Prometheus metrics; 0 disables.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface for the metrics endpoint; 0.0.0.0 in a container.",
    )
    worker_shutdown_grace_seconds: FiniteSeconds = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM/SIGINT, how long running activities may finish.",
    )
    worker_connect_attempts: int = Field(
        default=10, ge=1, description="Attempts to reach Temporal at start-up."
    )
    worker_role: Literal["all", "workflows", "activities"] = Field(
        default="all",
        description="What this worker process runs of the follow-up queue: everything; the "
        "workflows and the in-call booking (its local activity) only; or the activities only.",
    )

    # --- follow-up workflow (passed into the workflow input; workflows never read settings) ----
    follow_up_call_ended_timeout_seconds: FiniteSeconds = Field(
        default=4 * 3600,
        ge=1,
        le=MAX_CALL_ENDED_TIMEOUT_SECONDS,
        description="How long a follow-up waits for call_ended before going on without it.",
    )
    follow_up_step_schedule_to_close_seconds: FiniteSeconds = Field(
        default=3600,
        ge=1,
        le=MAX_STEP_SCHEDULE_TO_CLOSE_SECONDS,
        description="Total retry time of one step before it parks in needs_attention.",
    )

    follow_up_liveness_seconds: FiniteSeconds = Field(
        default=180.0,
        ge=10,
        le=MAX_LIVENESS_SECONDS,
        description="No checkpoint for this long: the agent is lost and the follow-up goes on "
        "with the last one.",
    )
    follow_up_alternative_window_minutes: int = Field(
        default=120,
        ge=0,
        le=24 * 60,
        description="A promised booking found taken after the call is moved to the nearest free "
        "slot this close to it; 0: a person replies instead.",
    )

    # --- real-time agent ----------------------------------------------------------------------
    breaker_failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive failures that open a service's breaker."
    )
    breaker_reset_seconds: Seconds = Field(
        default=30.0, description="Time before an open breaker admits one probe."
    )
    tool_deadline_seconds: Seconds = Field(
        default=2.5, description="A vendor-calling tool answers or speaks a fallback by then."
    )
    filler_after_seconds: Seconds = Field(
        default=1.0, description="A tool still running after this says one filler line."
    )
    booking_wait_seconds: Seconds = Field(
        default=2.0,
        description="How long book_meeting waits for the confirmation (acceptance included).",
    )
    handoff_timeout_seconds: Seconds = Field(
        default=1.0,
        description="Temporal slower than this to take a checkpoint or an opt-out: it goes to "
        "the outbox.",
    )
    handoff_call_ended_timeout_seconds: Seconds = Field(
        default=5.0,
        le=60,
        description="At the end of a call, Temporal slower than this: call_ended goes to the "
        "outbox.",
    )
    checkpoint_interval_seconds: Seconds = Field(
        default=2.0,
        le=60,
        description="What a call learns is checkpointed to its follow-up at most this often.",
    )
    checkpoint_keepalive_seconds: Seconds = Field(
        default=45.0,
        le=600,
        description="A call with nothing new still tells its follow-up it is alive this often.",
    )
    outbox_relay_interval_seconds: FiniteSeconds = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="Time between outbox relay passes."
    )

    # --- shared breaker state and the agent's metrics (issue 14) -------------------------------
    breaker_store: Literal["process", "sqlite", "redis"] = Field(
        default="sqlite",
        description="Where breaker state lives: sqlite (every job process on the host, a file "
        "under DATA_DIR), redis (every host, BREAKER_REDIS_URL) or process (each job process).",
    )
    breaker_redis_url: SecretStr | None = Field(
        default=None, description="redis://[:password@]host:port/db for BREAKER_STORE=redis."
    )
    breaker_store_timeout_seconds: float = Field(
        default=0.05,
        gt=0,
        le=1.0,
        description="The longest a caller waits on the breaker store (a probe lease); its "
        "background writes get 10x (at least 0.5 s) before each process decides alone.",
    )
    breaker_sync_seconds: float = Field(
        default=0.05, gt=0, le=10.0, description="How often a job process reads shared breakers."
    )
    agent_metrics_port: int = Field(
        default=9465,
        ge=0,
        le=65535,
        description="Port of the agent host's Prometheus metrics (all job processes); 0 disables.",
    )

    @model_validator(mode="after")
    def _redis_store_needs_a_url(self) -> Settings:
        if self.breaker_store == "redis" and self.breaker_redis_url is None:
            raise ValueError("BREAKER_STORE is redis, but BREAKER_REDIS_URL is missing")
        return self

    livekit_url: str | None = Field(
        default=None, description="LiveKit server for `python -m agent dev|start`."
    )
    livekit_api_key: SecretStr | None = Field(
        default=None, description="LiveKit API key (also LiveKit Inference)."
    )
    livekit_api_secret: SecretStr | None = Field(default=None, description="LiveKit API secret.")
    llm_model: str | None = Field(
        default=None,
        description="e.g. openai/gpt-4.1-mini (LiveKit Inference) or openai:gpt-4.1 (plugin). "
        "Set: `make dev` offers the text console instead of the demo calls.",
    )
    llm_fallback_model: str | None = Field(
        default=None, description="Second LLM; with LLM_MODEL, used through a FallbackAdapter."
    )
    stt_model: str = Field(default="deepgram/nova-3", description="Speech-to-text model.")
    tts_model: str = Field(default="cartesia/sonic-2", description="Text-to-speech model.")
    openai_api_key: SecretStr | None = Field(
        default=None, description="For `openai:` plugin models."
    )

    @field_validator("temporal_address")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not _HOST.fullmatch(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("must be host:port, such as localhost:7233 or temporal:7233")
        return value

    # --- outreach (issue 16): dialing through LiveKit and the calling policy --------------------
    outreach_task_queue: str = Field(
        default="trialist-outreach",
        description="Task queue of outreach workflows, apart from the follow-ups' so calls keep "
        "priority over outreach bookkeeping.",
    )
    livekit_api_url: str | None = Field(
        default=None,
        description="LiveKit server API for dialing (http(s) or ws(s)); falls back to LIVEKIT_URL. "
        "Both unset: the sandbox's LiveKit emulator.",
    )
    livekit_sip_trunk_id: str = Field(
        default="ST_sandbox_outbound", description="Outbound SIP trunk that outreach dials through."
    )
    outreach_from_number: str = Field(
        default="+14155550100", description="Caller id (E.164) outreach calls are placed from."
    )
    outreach_max_calls_per_campaign: int = Field(
        default=5, ge=1, le=1000, description="Calls in flight at once per campaign."
    )
    outreach_max_calls_per_number: int = Field(
        default=2, ge=1, le=1000, description="Calls in flight at once per outbound number."
    )
    outreach_max_attempts_per_24h: int = Field(
        default=3, ge=1, le=10, description="The team's cap of dials per trialist in 24 h."
    )
    outreach_max_attempts_per_trial: int = Field(
        default=6, ge=1, le=50, description="The team's cap of dials per trialist per trial."
    )
    outreach_weekdays_only: bool = Field(default=True, description="Dial on weekdays only.")
    outreach_holidays: str = Field(
        default="US",
        description="Public holidays without dials: US (federal and the trialist's state) or none.",
    )
    outreach_extra_holidays: str = Field(
        default="", description="More days without dials: YYYY-MM-DD, comma-separated."
    )
    outreach_voicemail: Literal["leave_message", "retry"] = Field(
        default="leave_message", description="On voicemail: leave one short message, or retry."
    )

    @model_validator(mode="after")
    def _real_vendors_need_credentials(self) -> Settings:
        required: dict[str, tuple[str, ...]] = {
            "salesforce_base_url": ("salesforce_client_id", "salesforce_client_secret"),
            "hubspot_base_url": ("hubspot_access_token",),
            "chilipiper_base_url": ("chilipiper_api_token",),
            "amplitude_base_url": ("amplitude_api_key", "amplitude_secret_key"),
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

    @field_validator("payload_encryption_key")
    @classmethod
    def _key_is_aes_256(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key_text(value.get_secret_value())
        return value

    @field_validator("payload_encryption_key_id")
    @classmethod
    def _key_id_is_a_name(cls, value: str) -> str:
        return check_key_id(value)

    @field_validator("payload_encryption_previous_keys")
    @classmethod
    def _previous_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_previous_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _current_key_id_is_not_retired(self) -> Settings:
        previous = self.payload_encryption_previous_keys
        if previous is not None and self.payload_encryption_key is not None:
            retired = {key.id for key in parse_previous_keys(previous.get_secret_value())}
            if self.payload_encryption_key_id in retired:
                raise ValueError(
                    f"PAYLOAD_ENCRYPTION_KEY_ID {self.payload_encryption_key_id!r} is also in "
                    "PAYLOAD_ENCRYPTION_PREVIOUS_KEYS: a new key needs a new id"
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
        """The User Profile API: its own setting, else Amplitude's host when tracking is real."""
        if self.amplitude_profile_base_url:
            return self.amplitude_profile_base_url.rstrip("/")
        if self.amplitude_base_url:
            return AMPLITUDE_PROFILE_API_URL
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
    def codec_server_public_url(self) -> str:
        return (self.codec_server_url or f"http://localhost:{self.codec_server_port}").rstrip("/")

    @property
    def codec_allowed_origin(self) -> str:
        """scheme://host[:port] of the UI, the one origin the codec server answers."""
        parts = urlsplit(self.codec_server_ui_origin or self.temporal_ui_base)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def livekit_api_base_url(self) -> str:
        """The LiveKit API that outreach dials through: a real server, or the sandbox emulator."""
        url = self.livekit_api_url or self.livekit_url
        return (url or f"{self.sandbox_base_url}/livekit").rstrip("/")

    @property
    def livekit_credentials(self) -> tuple[str, str]:
        """API key and secret for dialing; the sandbox's when no real server is configured."""
        if self.livekit_api_url is None and self.livekit_url is None:
            return SANDBOX_LIVEKIT_API_KEY, SANDBOX_LIVEKIT_API_SECRET
        key = self.livekit_api_key.get_secret_value() if self.livekit_api_key else ""
        return key, self.secret("livekit_api_secret")

    @property
    def llm_configured(self) -> bool:
        return self.llm_model is not None

    def _real_url(self, vendor: Vendor) -> str | None:
        url: str | None = getattr(self, f"{vendor}_base_url")
        return url


class SettingsError(SystemExit):
    """Raised at start-up with a message naming each bad variable."""


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad variable, naming it and the rule; never its value (it may be a secret)."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        lines.append(f"invalid setting {name}: {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process; exits with a readable message when a value is bad."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
