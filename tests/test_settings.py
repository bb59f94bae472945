"""Settings: bad values fail at start-up naming the variable; secrets never show; vendors choose."""

from __future__ import annotations

import pytest

from config.settings import (
    AMPLITUDE_PROFILE_API_URL,
    SettingsError,
    VendorMode,
    get_settings,
)


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no stray .env from the working tree
    get_settings.cache_clear()


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_DEV_PORT", "not-a-port")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert "TEMPORAL_DEV_PORT" in str(raised.value)


def test_a_real_vendor_without_its_credential_names_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUBSPOT_BASE_URL", "https://api.hubapi.com")
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert "HUBSPOT_ACCESS_TOKEN is missing" in str(raised.value)


def test_secrets_never_appear_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSPOT_BASE_URL", "https://api.hubapi.com")
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-very-secret")
    settings = get_settings()
    assert "pat-na1-very-secret" not in repr(settings)
    assert "pat-na1-very-secret" not in str(settings.model_dump())
    assert settings.secret("hubspot_access_token") == "pat-na1-very-secret"


def test_each_vendor_is_real_only_when_its_base_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSPOT_BASE_URL", "https://api.hubapi.com/")
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "token")
    monkeypatch.setenv("SANDBOX_PORT", "9911")
    settings = get_settings()
    assert settings.vendor_mode("hubspot") is VendorMode.REAL
    assert settings.vendor_base_url("hubspot") == "https://api.hubapi.com"
    assert settings.vendor_mode("salesforce") is VendorMode.SANDBOX
    assert settings.vendor_base_url("salesforce") == "http://127.0.0.1:9911/salesforce"


def test_real_amplitude_reads_profiles_from_amplitudes_profile_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMPLITUDE_BASE_URL", "https://api2.amplitude.com")
    monkeypatch.setenv("AMPLITUDE_API_KEY", "key")
    with pytest.raises(SettingsError, match="AMPLITUDE_SECRET_KEY is missing"):
        get_settings()
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", "secret")
    get_settings.cache_clear()
    assert get_settings().amplitude_profile_url() == AMPLITUDE_PROFILE_API_URL


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALESFORCE_BASE_URL", "")
    assert get_settings().vendor_mode("salesforce") is VendorMode.SANDBOX
