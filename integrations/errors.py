"""The one error taxonomy for vendor calls: layers above map these classes, never messages."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    PERMANENT = "permanent"
    NOT_FOUND = "not_found"
    AUTH = "auth"
    AMBIGUOUS_OUTCOME = "ambiguous_outcome"


class VendorError(Exception):
    """A vendor call failed. `kind` says what the caller may do about it."""

    kind: ClassVar[ErrorKind]
    retryable: ClassVar[bool]

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        operation: str,
        status_code: int | None = None,
        error_code: str | None = None,
        correlation_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.vendor = vendor
        self.operation = operation
        self.status_code = status_code
        self.error_code = error_code
        self.correlation_id = correlation_id
        self.body = body

    def details(self) -> dict[str, Any]:
        """A JSON-safe summary for Temporal failure details and logs (no request data)."""
        return {
            "kind": self.kind.value,
            "vendor": self.vendor,
            "operation": self.operation,
            "status_code": self.status_code,
            "error_code": self.error_code,
            "correlation_id": self.correlation_id,
            "message": self.message,
        }

    def __str__(self) -> str:
        parts = [f"{self.vendor}.{self.operation}: {self.message}"]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.error_code:
            parts.append(f"code={self.error_code}")
        if self.correlation_id:
            parts.append(f"correlation_id={self.correlation_id}")
        return " ".join(parts)


class TransientError(VendorError):
    """A failure that a retry may fix: 5xx, 423, connection errors, timeouts of idempotent calls."""

    kind = ErrorKind.TRANSIENT
    retryable = True


class RateLimitedError(VendorError):
    """The vendor throttled us; retry after `retry_after` seconds."""

    kind = ErrorKind.RATE_LIMITED
    retryable = True

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {**super().details(), "retry_after": self.retry_after}


class PermanentError(VendorError):
    """Retrying the same request cannot succeed: bad data, conflicts, exhausted daily quotas."""

    kind = ErrorKind.PERMANENT
    retryable = False


class PayloadTooLargeError(PermanentError):
    """The batch is too large (Amplitude 413): split it and send the halves."""


class InvalidEventsError(PermanentError):
    """Some events in a batch were rejected (Amplitude 400); `event_indices` names them."""

    def __init__(self, message: str, *, event_indices: list[int], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.event_indices = event_indices

    def details(self) -> dict[str, Any]:
        return {**super().details(), "event_indices": self.event_indices}


class NotFoundError(VendorError):
    """The record does not exist."""

    kind = ErrorKind.NOT_FOUND
    retryable = False


class AuthError(VendorError):
    """Credentials were refused, after one token refresh where the vendor has one."""

    kind = ErrorKind.AUTH
    retryable = False


class AmbiguousOutcomeError(VendorError):
    """A non-idempotent write with an unknown result (a booking that timed out): reconcile."""

    kind = ErrorKind.AMBIGUOUS_OUTCOME
    retryable = False
