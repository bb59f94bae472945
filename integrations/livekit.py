"""Typed client over livekit-api for outbound calls: the SIP leg and the agent dispatch.

A dial is not idempotent (a repeat rings the phone again), so a dial that may have reached the
callee is an AmbiguousOutcomeError and is never retried here; only a request that never left
(no connection) is a TransientError. A SIP refusal is a result, not an error: busy, no answer.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated, Final

import aiohttp
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from livekit import api
from livekit.api.twirp_client import ServerError, SipCallError
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from integrations.errors import (
    AmbiguousOutcomeError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    VendorError,
)
from integrations.validation import E164Phone, InputModel

logger = logging.getLogger(__name__)

VENDOR: Final = "livekit"
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
RINGING_TIMEOUT_SECONDS: Final = 30
MAX_METADATA_CHARS: Final = 8000  # a dispatch's metadata travels in the job; keep it small
# SIP final responses that mean nobody picked up, or that the callee refused the call.
NO_ANSWER_CODES: Final = frozenset({408, 480, 487})
BUSY_CODES: Final = frozenset({486, 600, 603})
RETRY_AFTER_SECONDS: Final = 5.0

RoomName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class DialStatus(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"


class OutboundCall(InputModel):
    """One outbound SIP leg: who to ring, from which number, into which room."""

    room_name: RoomName
    participant_identity: Annotated[str, Field(min_length=1, max_length=128)]
    to_number: E164Phone
    from_number: E164Phone
    trunk_id: Annotated[str, Field(min_length=1, max_length=128)]
    ringing_timeout_seconds: int = Field(default=RINGING_TIMEOUT_SECONDS, ge=5, le=120)
    max_call_duration_seconds: int = Field(default=1800, ge=60, le=4 * 3600)


class DialResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: DialStatus
    sip_status_code: int | None = None
    sip_call_id: str | None = None
    room_name: str


class AgentDispatchRequest(InputModel):
    room_name: RoomName
    agent_name: Annotated[str, Field(min_length=1, max_length=128)]
    metadata: Annotated[str, Field(max_length=MAX_METADATA_CHARS)]


class LiveKitClient:
    """Dials and dispatches through `livekit.api.LiveKitAPI` (its own Twirp client, no failover:
    a failed dial is decided by the outreach workflow, not replayed against another region)."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        api_secret: SecretStr,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout = timeout
        self._api: api.LiveKitAPI | None = None

    def _client(self) -> api.LiveKitAPI:
        # Built on first use: aiohttp wants the running event loop of the caller.
        if self._api is None:
            self._api = api.LiveKitAPI(
                self._url,
                self._key,
                self._secret.get_secret_value(),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                failover=False,
            )
        return self._api

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    async def dial(self, call: OutboundCall) -> DialResult:
        """Ring the number and wait until it answers or the SIP leg ends; never retried."""
        operation = "create_sip_participant"
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=call.trunk_id,
            sip_call_to=call.to_number,
            sip_number=call.from_number,
            room_name=call.room_name,
            participant_identity=call.participant_identity,
            participant_name="Trialist",
            wait_until_answered=True,
            ringing_timeout=Duration(seconds=call.ringing_timeout_seconds),
            max_call_duration=Duration(seconds=call.max_call_duration_seconds),
        )
        try:
            info = await self._client().sip.create_sip_participant(request)
        except SipCallError as refused:
            return _refused(refused, call.room_name)
        except ServerError as error:
            raise _server_error(error, operation, dialing=True) from None
        except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionResetError) as error:
            if isinstance(error, aiohttp.ClientConnectorError):  # never connected: never rang
                raise _transient(operation, type(error).__name__) from None
            raise _ambiguous(operation, type(error).__name__) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _ambiguous(operation, type(error).__name__) from None
        except DecodeError:
            raise _ambiguous(operation, "an answer that could not be parsed") from None
        logger.info("livekit dial answered (room %s)", call.room_name)
        return DialResult(
            status=DialStatus.ANSWERED, sip_call_id=info.sip_call_id, room_name=call.room_name
        )

    async def dispatch_agent(self, request: AgentDispatchRequest) -> str:
        """Send the named agent into the room (explicit dispatch); a repeat finds the first one."""
        operation = "create_dispatch"
        service = self._client().agent_dispatch
        try:
            existing = await service.list_dispatch(room_name=request.room_name)
            for dispatch in existing:
                if dispatch.agent_name == request.agent_name:
                    return str(dispatch.id)
            created = await service.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=request.agent_name,
                    room=request.room_name,
                    metadata=request.metadata,
                )
            )
        except ServerError as error:
            raise _server_error(error, operation, dialing=False) from None
        except (aiohttp.ClientError, TimeoutError, DecodeError) as error:
            # Safe to retry: the listing above finds a dispatch an earlier attempt created.
            raise _transient(operation, type(error).__name__) from None
        return str(created.id)


def _refused(error: SipCallError, room_name: str) -> DialResult:
    code = error.sip_status_code
    if code in NO_ANSWER_CODES:
        status = DialStatus.NO_ANSWER
    elif code in BUSY_CODES:
        status = DialStatus.BUSY
    else:
        status = DialStatus.FAILED
    logger.info("livekit dial ended without an answer: SIP %s (%s)", code, status.value)
    return DialResult(status=status, sip_status_code=code, room_name=room_name)


def _server_error(error: ServerError, operation: str, *, dialing: bool) -> VendorError:
    message = f"{error.code}: {error.message}"[:300]
    status = error.status
    kind: type[VendorError]
    if status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFoundError
    elif status == 429:
        return RateLimitedError(
            message,
            retry_after=RETRY_AFTER_SECONDS,
            vendor=VENDOR,
            operation=operation,
            status_code=status,
            error_code=error.code,
        )
    elif status >= 500:
        # The server may have started ringing before it failed: a dial is not repeated blindly.
        kind = AmbiguousOutcomeError if dialing else TransientError
    else:
        kind = PermanentError
    return kind(
        message, vendor=VENDOR, operation=operation, status_code=status, error_code=error.code
    )


def _transient(operation: str, why: str) -> TransientError:
    return TransientError(f"no response ({why})", vendor=VENDOR, operation=operation)


def _ambiguous(operation: str, why: str) -> AmbiguousOutcomeError:
    return AmbiguousOutcomeError(
        f"{why}; the call may have been placed", vendor=VENDOR, operation=operation
    )
