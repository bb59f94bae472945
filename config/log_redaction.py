"""A logging filter that keeps refused input out of logs: pydantic errors lose their input values.

Temporal's SDK logs a signal it can't deserialise with the full exception, and pydantic's
ValidationError quotes what it refused (`input_value=...`): a caller's phone or notes would land in
the worker log. The proper fix is `hide_input_in_errors` on the models; this filter is the process's
guard for every model and every logger, installed on the root handlers.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Final

# Within one line: pydantic prints `[type=..., input_value=<repr>, input_type=<type>]`; a repr is
# one line (newlines are escaped), so the greedy match ends at the line's last `, input_type=`.
_INPUT_VALUE: Final = re.compile(r"input_value=.*, input_type=")
HIDDEN: Final = "input_value=<hidden>, input_type="


def redact(text: str) -> str:
    return _INPUT_VALUE.sub(HIDDEN, text)


class RefusedInputFilter(logging.Filter):
    """Rewrites a record's message and traceback without pydantic's quoted input values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)
        message = record.getMessage()
        if "input_value=" in message:
            record.msg, record.args = redact(message), None
        return True


def install_refused_input_filter(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (the root logger by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RefusedInputFilter) for f in handler.filters):
            handler.addFilter(RefusedInputFilter())
