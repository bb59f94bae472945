"""How an activity failure reads as a step error: kind, message, vendor ids and attempts."""

from __future__ import annotations

from typing import Any, Final

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE_ERROR_TYPES
    from contracts.models import StepError

# How the server reports that a retryable error ran out of attempts or of schedule-to-close.
RETRIES_EXHAUSTED: Final = frozenset({RetryState.TIMEOUT, RetryState.MAXIMUM_ATTEMPTS_REACHED})
MESSAGE_MAX_CHARS: Final = 1000


def step_error(failure: ActivityError | ApplicationError) -> tuple[StepError, int]:
    """A StepError from an activity failure, and how many attempts it took (at least 1).

    Retryable errors end in one of two ways: the server stops retrying because the next attempt
    would pass the schedule-to-close (retry_state TIMEOUT, cause = the last error), or the
    schedule-to-close fires during an attempt (cause = a TimeoutError wrapping the last error).
    A local activity that fails for good raises its ApplicationError bare.
    """
    if isinstance(failure, ApplicationError):
        cause: BaseException | None = failure
        retry_state = None
    else:
        cause, retry_state = failure.cause, failure.retry_state
    timeout: TimeoutType | None = None
    if isinstance(cause, ActivityTimeoutError):
        timeout = cause.type or TimeoutType.SCHEDULE_TO_CLOSE
        cause = cause.cause  # the last attempt's failure, when there was one
    app = cause if isinstance(cause, ApplicationError) else None
    details: dict[str, Any] = {}
    if app is not None and app.details and isinstance(app.details[0], dict):
        details = app.details[0]
    last = f"; last error: {app.message}" if app is not None else ""
    if timeout is not None:
        kind = "timeout"
        message = f"{timeout.name.lower().replace('_', '-')} timeout{last}"
    elif app is not None and retry_state in RETRIES_EXHAUSTED:
        kind = "retries_exhausted"
        message = f"retries ran out within the step's time budget{last}"
    elif app is not None:
        kind = app.type or "error"
        message = app.message
    else:
        kind = "error"
        message = str(cause or failure)
    attempt = details.get("attempt")
    error = StepError(
        kind=kind,
        message=message[:MESSAGE_MAX_CHARS],
        vendor=details.get("vendor"),
        status_code=details.get("status_code"),
        error_code=details.get("error_code"),
        correlation_id=details.get("correlation_id"),
    )
    return error, attempt if isinstance(attempt, int) and attempt > 0 else 1


def retryable(failure: ActivityError | ApplicationError | ActivityTimeoutError) -> bool:
    """Whether another attempt could succeed: not an error the retry policy refuses to retry."""
    cause = failure.cause if isinstance(failure, ActivityError) else failure
    if isinstance(cause, ActivityTimeoutError):
        return True
    if isinstance(cause, ApplicationError):
        return not cause.non_retryable and cause.type not in NON_RETRYABLE_ERROR_TYPES
    return True
