"""Maps the integrations error taxonomy to Temporal ApplicationError, by class and never by text."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from integrations.errors import ErrorKind, RateLimitedError, VendorError

logger = logging.getLogger(__name__)

# Bad data from a caller cannot get better by retrying: park the step for an operator.
INVALID_INPUT_TYPE: Final = "invalid_input"
# A bug of ours (an exception no vendor caused) needs a fix, not another attempt.
ACTIVITY_BUG_TYPE: Final = "activity_bug"
NON_RETRYABLE_ERROR_TYPES: Final = (
    ErrorKind.PERMANENT.value,
    ErrorKind.NOT_FOUND.value,
    ErrorKind.AUTH.value,
    INVALID_INPUT_TYPE,
    ACTIVITY_BUG_TYPE,
)


def current_attempt() -> int:
    """The running activity's attempt, or 1 outside an activity (direct calls in tests)."""
    return activity.info().attempt if activity.in_activity() else 1


def vendor_application_error(
    error: VendorError, *, attempt: int | None = None, retryable: bool | None = None
) -> ApplicationError:
    """An ApplicationError whose type is the taxonomy name and whose details the workflow reads.

    `retryable` overrides the class default where an activity makes a retry safe (a booking that
    reconciles before its next attempt).
    """
    details: dict[str, Any] = {**error.details(), "attempt": attempt or current_attempt()}
    delay = (
        timedelta(seconds=max(error.retry_after, 0.0))
        if isinstance(error, RateLimitedError)
        else None
    )
    return ApplicationError(
        str(error),
        details,
        type=error.kind.value,
        non_retryable=not (error.retryable if retryable is None else retryable),
        next_retry_delay=delay,
    )


def invalid_input_error(error: ValueError, *, attempt: int | None = None) -> ApplicationError:
    """A non-retryable error for input the vendor model refused; the text carries no values."""
    if isinstance(error, ValidationError):
        # Field names and reasons only: pydantic's own text would quote the (personal) input.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        )
    else:
        problems = str(error)
    details = {"kind": INVALID_INPUT_TYPE, "message": problems, "attempt": attempt}
    return ApplicationError(
        f"invalid input: {problems}",
        details,
        type=INVALID_INPUT_TYPE,
        non_retryable=True,
    )


def activity_bug_error(error: Exception, *, attempt: int | None = None) -> ApplicationError:
    """A non-retryable error for a bug of ours, by exception type and place, without values."""
    where = ""
    if error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f" at {Path(frame.filename).name}:{frame.lineno}"
    message = f"a bug in the activity: {type(error).__name__}{where}"
    details = {"kind": ACTIVITY_BUG_TYPE, "message": message, "attempt": attempt}
    return ApplicationError(message, details, type=ACTIVITY_BUG_TYPE, non_retryable=True)


@contextmanager
def vendor_failures() -> Iterator[None]:
    """Re-raise taxonomy errors, refused input and our own bugs as ApplicationError.

    Vendor errors keep their retryability; refused input and bugs park the step at once with the
    attempt that saw them, instead of being retried for the whole step budget as a Python
    exception would be and then reported as "retries exhausted" after one counted attempt.
    """
    try:
        yield
    except VendorError as error:
        raise vendor_application_error(error) from error
    except ValueError as error:
        raise invalid_input_error(error, attempt=current_attempt()) from error
    except ApplicationError:
        raise
    except Exception as error:
        # The frames but not the message: an exception's text can quote personal data.
        frames = "".join(traceback.format_tb(error.__traceback__))
        logger.error("activity bug: %s\n%s", type(error).__name__, frames)
        raise activity_bug_error(error, attempt=current_attempt()) from error
