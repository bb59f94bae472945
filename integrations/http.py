"""The pooled httpx2 client every vendor client shares, and the mapping of transport failures.

httpx2 is Pydantic's maintained continuation of httpx, with the same API; livekit-agents already
depends on it, so each process runs one HTTP stack. Its pool fixes httpcore 1.0.9's per-request
O(connections x queued requests) assignment pass and its closing of connections already handed to
a queued request (see docs/vendors-salesforce-hubspot.md).
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx2
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from integrations.errors import AmbiguousOutcomeError, TransientError, VendorError

# httpx2 logs every request's full URL at INFO, and ours carry trial account ids, call ids and
# profile user ids in their paths and queries. `send` logs vendor, operation, status and time
# instead, so httpx2 and httpcore2 speak only from WARNING up, in every process that imports this.
for _noisy in ("httpx2", "httpcore2"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

DEFAULT_CONNECT_TIMEOUT_SECONDS = 2.0
DEFAULT_READ_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20


def build_http_client(
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
) -> httpx2.AsyncClient:
    """One pooled client per process. The transport never retries: Temporal and the agent do."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
        limits=httpx2.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS
        ),
        transport=httpx2.AsyncHTTPTransport(retries=0),
        follow_redirects=False,
    )


def transport_error(
    error: httpx2.TransportError, *, vendor: str, operation: str, idempotent: bool
) -> VendorError:
    """Classify a failure that produced no HTTP response.

    A request that never connected was never seen by the vendor, so it is safe to retry. A read
    timeout on a non-idempotent write leaves its effect unknown: that is an ambiguous outcome.
    """
    never_sent = isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout)
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


# --- sending one request and reading its reply, the same way for every vendor -----------------

_logger = logging.getLogger(__name__)
# How much of a non-JSON error body an error keeps (for diagnosis, not for display).
BODY_TEXT_MAX = 2000


def bearer_headers(token: SecretStr) -> dict[str, str]:
    """Bearer-token auth with a JSON Accept header."""
    return {"Authorization": f"Bearer {token.get_secret_value()}", "Accept": "application/json"}


async def send(
    http: httpx2.AsyncClient,
    *,
    vendor: str,
    operation: str,
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    content: bytes | None = None,
    idempotent: bool,
    classify: Callable[[httpx2.Response], VendorError] | None = None,
    log: logging.Logger = _logger,
    expected_statuses: Collection[int] = (),
) -> httpx2.Response:
    """Send one request, once; no response at all raises `transport_error(...)` of it.

    With `classify`, a non-2xx response is mapped by it, logged by kind and raised; without it
    every response is returned. Logs carry vendor, operation, status and time only (no URLs,
    headers or bodies: they hold secrets and personal data). `log` keeps the caller's logger name.
    `expected_statuses` are raised the same way but logged at debug: the caller handles them.
    """
    started = time.perf_counter()
    try:
        response = await http.request(
            method, url, headers=headers, json=json, params=params, data=data, content=content
        )
    except httpx2.TransportError as error:
        log.warning("%s %s: no response (%s)", vendor, operation, type(error).__name__)
        raise transport_error(
            error, vendor=vendor, operation=operation, idempotent=idempotent
        ) from error
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.debug("%s %s: HTTP %s in %.0f ms", vendor, operation, response.status_code, elapsed_ms)
    if classify is None or response.is_success:
        return response
    failure = classify(response)
    level = logging.DEBUG if response.status_code in expected_statuses else logging.WARNING
    log.log(level, "%s %s failed: %s", vendor, operation, failure.kind.value)
    raise failure


def response_body(response: httpx2.Response) -> Any:
    """The decoded JSON body, else the start of the text: what an error keeps as `body`."""
    try:
        return response.json()
    except ValueError:
        return response.text[:BODY_TEXT_MAX]


def retry_delay(response: httpx2.Response, *, default: float) -> float:
    """The response's Retry-After in seconds, or `default` when it sends none (or a bad one)."""
    delay = parse_retry_after(response.headers.get("retry-after"))
    return default if delay is None else delay


def first_header(response: httpx2.Response, names: tuple[str, ...]) -> str | None:
    """The value of the first of `names` the response carries (e.g. a request-id header)."""
    return next((response.headers[name] for name in names if name in response.headers), None)


class WireModel(BaseModel):
    """A vendor's reply as this code reads it; fields it does not read are ignored."""

    model_config = ConfigDict(extra="ignore")


_W = TypeVar("_W", bound=WireModel)


def parse_reply(
    response: httpx2.Response,
    model: type[_W],
    *,
    vendor: str,
    operation: str,
    correlation_id: str | None = None,
    failure: type[VendorError] = TransientError,
) -> _W:
    """The reply as `model`; a body of another shape raises `failure` (transient by default)."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise failure(
            "unexpected response shape",
            vendor=vendor,
            operation=operation,
            status_code=response.status_code,
            correlation_id=correlation_id,
            body=response_body(response),
        ) from None
