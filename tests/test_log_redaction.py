"""Refused input never reaches a log: pydantic's quoted input values are hidden by the filter."""

from __future__ import annotations

import io
import logging

import pytest
from pydantic import BaseModel, ValidationError

from config.log_redaction import install_refused_input_filter


def logged_with_filter(emit: object) -> str:
    stream = io.StringIO()
    logger = logging.getLogger(f"redaction-test-{id(stream)}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install_refused_input_filter(logger)
    try:
        emit(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


class Contact(BaseModel):
    """A model without hide_input_in_errors (contracts' models set it; a library's may not)."""

    phone: int
    extension: int


# Not written in the call below: a traceback quotes the source line that raised.
REFUSED = {"phone": "ring Wilhelmina on +44 7700 900123", "extension": "Wilhelmina Strathearn"}


def refused() -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        Contact(**REFUSED)  # type: ignore[arg-type]
    return raised.value


def test_a_logged_validation_error_keeps_its_reasons_and_loses_the_input() -> None:
    error = refused()
    assert "Wilhelmina" in str(error)  # what pydantic would print unfiltered

    def emit(logger: logging.Logger) -> None:
        try:
            raise RuntimeError("Failed decoding arguments") from error
        except RuntimeError:
            logger.exception("Failed deserializing signal input for call_ended, dropping it")

    text = logged_with_filter(emit)
    assert "Wilhelmina" not in text and "7700" not in text
    assert "2 validation errors for Contact" in text and "input_value=<hidden>" in text
    assert "dropping it" in text and "Traceback" in text


def test_a_message_that_quotes_an_error_is_redacted_too() -> None:
    error = refused()
    text = logged_with_filter(lambda logger: logger.warning("bad signal: %s", error))
    assert "Wilhelmina" not in text and "bad signal: 2 validation errors" in text
