"""The pooled httpx client every vendor client shares, and the mapping of transport failures."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import httpx

from integrations.errors import AmbiguousOutcomeError, TransientError, VendorError

DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0
DEFAULT_READ_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20


def build_http_client(
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
) -> httpx.AsyncClient:
    """One pooled client per process. The transport never retries: Temporal and the agent do."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS
        ),
        transport=httpx.AsyncHTTPTransport(retries=0),
        follow_redirects=False,
    )


def transport_error(
    error: httpx.TransportError, *, vendor: str, operation: str, idempotent: bool
) -> VendorError:
    """Classify a failure that produced no HTTP response.

    A request that never connected was never seen by the vendor, so it is safe to retry. A read
    timeout on a non-idempotent write leaves its effect unknown: that is an ambiguous outcome.
    """
    never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if not idempotent and not never_sent:
        return AmbiguousOutcomeError(
            f"no response ({type(error).__name__}); the write may have happened",
            vendor=vendor,
            operation=operation,
        )
    return TransientError(
        f"no response ({type(error).__name__})", vendor=vendor, operation=operation
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
