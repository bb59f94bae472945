"""The taxonomy → ApplicationError mapping that Temporal's retries and the workflow depend on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.errors import (
    INVALID_INPUT_TYPE,
    NON_RETRYABLE_ERROR_TYPES,
    invalid_input_error,
    vendor_application_error,
    vendor_failures,
)
from contracts import Trialist
from integrations.errors import (
    AmbiguousOutcomeError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    VendorError,
)

COMMON: dict[str, Any] = {
    "vendor": "hubspot",
    "operation": "batch_upsert_contacts",
    "status_code": 400,
    "error_code": "VALIDATION_ERROR",
    "correlation_id": "corr-123",
}


@pytest.mark.parametrize(
    ("error", "kind", "non_retryable"),
    [
        (TransientError("HTTP 503", **COMMON), "transient", False),
        (PermanentError("HTTP 400", **COMMON), "permanent", True),
        (NotFoundError("HTTP 404", **COMMON), "not_found", True),
        (AuthError("HTTP 401", **COMMON), "auth", True),
        (AmbiguousOutcomeError("no response", **COMMON), "ambiguous_outcome", True),
    ],
)
def test_type_is_the_taxonomy_name_and_retryability_follows_the_class(
    error: VendorError, kind: str, non_retryable: bool
) -> None:
    mapped = vendor_application_error(error, attempt=3)

    assert mapped.type == kind
    assert mapped.non_retryable is non_retryable
    assert mapped.next_retry_delay is None
    assert mapped.message == str(error)
    details = mapped.details[0]
    assert details["vendor"] == "hubspot"
    assert details["status_code"] == 400
    assert details["error_code"] == "VALIDATION_ERROR"
    assert details["correlation_id"] == "corr-123"
    assert details["attempt"] == 3


def test_rate_limit_sets_next_retry_delay_from_the_vendor() -> None:
    error = RateLimitedError("HTTP 429", retry_after=42.5, **COMMON)

    mapped = vendor_application_error(error, attempt=1)

    assert mapped.type == "rate_limited"
    assert mapped.non_retryable is False
    assert mapped.next_retry_delay == timedelta(seconds=42.5)
    assert mapped.details[0]["retry_after"] == 42.5


def test_mapping_reads_the_class_never_the_message() -> None:
    # A permanent error whose text talks about rate limits and retries is still permanent.
    error = PermanentError("rate limited, please retry later (transient)", **COMMON)

    mapped = vendor_application_error(error, attempt=1)

    assert mapped.type == "permanent"
    assert mapped.non_retryable is True
    assert mapped.next_retry_delay is None


def test_an_activity_may_declare_an_ambiguous_outcome_retryable() -> None:
    mapped = vendor_application_error(
        AmbiguousOutcomeError("no response", **COMMON), attempt=1, retryable=True
    )

    assert mapped.type == "ambiguous_outcome"
    assert mapped.non_retryable is False


def test_non_retryable_types_cover_every_non_retryable_class() -> None:
    for cls in (PermanentError, NotFoundError, AuthError):
        assert cls.kind.value in NON_RETRYABLE_ERROR_TYPES
    for cls in (TransientError, RateLimitedError):
        assert cls.kind.value not in NON_RETRYABLE_ERROR_TYPES
    assert INVALID_INPUT_TYPE in NON_RETRYABLE_ERROR_TYPES


def test_vendor_failures_reraises_taxonomy_errors_as_application_errors() -> None:
    original = RateLimitedError("HTTP 429", retry_after=3, **COMMON)

    with pytest.raises(ApplicationError) as caught, vendor_failures():
        raise original

    assert caught.value.type == "rate_limited"
    assert caught.value.next_retry_delay == timedelta(seconds=3)
    assert caught.value.__cause__ is original


def test_refused_input_is_non_retryable_and_never_quotes_personal_data() -> None:
    with pytest.raises(ValidationError) as invalid:
        Trialist(
            email="casey.morgan-at-orbitworks",
            name="Casey Morgan",
            phone="555 0123 casey",
            trial_account_id="trial-1",
        )

    mapped = invalid_input_error(invalid.value, attempt=2)

    assert mapped.type == INVALID_INPUT_TYPE
    assert mapped.non_retryable is True
    assert "email" in mapped.message and "phone" in mapped.message
    for personal in ("casey.morgan-at-orbitworks", "555 0123", "Casey"):
        assert personal not in mapped.message
        assert personal not in str(mapped.details)


def test_vendor_failures_maps_value_errors_to_invalid_input() -> None:
    with pytest.raises(ApplicationError) as caught, vendor_failures():
        raise ValueError("slot_start is in the past")

    assert caught.value.type == INVALID_INPUT_TYPE
    assert caught.value.non_retryable is True
    assert "slot_start is in the past" in caught.value.message
