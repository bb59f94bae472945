"""Seals outbox payloads with the payload codec's keys, so the outbox file holds no plain text."""

from __future__ import annotations

import sqlite3
from typing import Final

from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload

from config.encryption import payload_keys
from config.settings import Settings
from contracts.codec import EncryptionCodec, PayloadKeyError, is_encrypted

JSON_ENCODING: Final = b"json/plain"


# A subclass of sqlite3's error on purpose: the relay treats a row it cannot open like an unreadable
# file (logs it and tries again next pass, once the key is configured) and never drops it.
class SealedPayloadError(sqlite3.DatabaseError):
    """A stored payload can't be opened: a missing or wrong key (the message names the setting)."""


class OutboxSealer:
    """seal(text) -> bytes and open(bytes) -> text, as the Temporal codec seals payloads.

    The same AES-256-GCM keys and key ids, so rotating PAYLOAD_ENCRYPTION_KEY rotates the outbox
    too: rows sealed under a previous key open while that key is listed as previous.
    """

    def __init__(self, codec: EncryptionCodec) -> None:
        self.codec = codec

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboxSealer:
        """The sealer of this process's keys; EncryptionSetupError when there is none."""
        return cls(payload_keys(settings).codec())

    def seal(self, text: str) -> bytes:
        plain = Payload(metadata={"encoding": JSON_ENCODING}, data=text.encode("utf-8"))
        return self.codec.seal(plain).SerializeToString()

    def open(self, sealed: bytes) -> str:
        try:
            payload = Payload.FromString(sealed)
        except DecodeError:
            raise SealedPayloadError("an outbox row's payload is not a sealed payload") from None
        if not is_encrypted(payload):
            raise SealedPayloadError("an outbox row's payload is stored without encryption")
        try:
            return self.codec.open(payload).data.decode("utf-8")
        except PayloadKeyError as error:
            raise SealedPayloadError(f"outbox: {error}") from None
