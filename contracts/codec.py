"""The one data converter: pydantic payloads sealed with AES-256-GCM by a key-rotating codec.

Each payload is serialised (metadata and data), then encrypted with the current key; the result
carries `encoding: binary/encrypted` and the key's id in its metadata, like Temporal's
`encryption` sample. Decoding picks the key by that id, so payloads written under a previous key
still open once that key is listed as previous. Payloads without the encrypted encoding (histories
recorded before the codec, or a plain `temporal` CLI start) pass through as they are.

No I/O here: keys arrive as bytes from config/ (settings, or the dev key file).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCRYPTED_ENCODING: Final = b"binary/encrypted"
ENCODING_KEY: Final = "encoding"
KEY_ID_KEY: Final = "encryption-key-id"
KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # the GCM nonce size AESGCM is built for
TAG_BYTES: Final = 16

# The settings that hold the keys (config/settings.py); errors name them.
KEY_SETTING: Final = "PAYLOAD_ENCRYPTION_KEY"
KEY_ID_SETTING: Final = "PAYLOAD_ENCRYPTION_KEY_ID"
PREVIOUS_KEYS_SETTING: Final = "PAYLOAD_ENCRYPTION_PREVIOUS_KEYS"

_KEY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHOWN_ID_CHARS: Final = 64


class PayloadKeyError(ValueError):
    """A payload can't be opened with the configured keys; the message names the setting.

    It never quotes the payload, only the key id from its metadata.
    """


@dataclasses.dataclass(frozen=True, repr=False)
class PayloadKey:
    """One AES-256 key and the id that payloads sealed with it carry. Its repr hides the key."""

    id: str
    secret: bytes

    def __post_init__(self) -> None:
        check_key_id(self.id)
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a payload key is {KEY_BYTES} bytes, not {len(self.secret)}")

    def __repr__(self) -> str:
        return f"PayloadKey(id={self.id!r}, secret=<{KEY_BYTES} bytes>)"

    @classmethod
    def generate(cls, key_id: str) -> PayloadKey:
        return cls(key_id, AESGCM.generate_key(bit_length=KEY_BYTES * 8))

    @classmethod
    def from_base64(cls, key_id: str, text: str) -> PayloadKey:
        """A key from its base64 text (standard or URL-safe); errors never quote the text."""
        return cls(key_id, decode_key_text(text))

    def to_base64(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")


def check_key_id(key_id: str) -> str:
    if not _KEY_ID.match(key_id):
        raise ValueError(
            "a key id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return key_id


def decode_key_text(text: str) -> bytes:
    """The 32 bytes of a base64 key; a ValueError that does not quote it otherwise."""
    normalised = text.strip().replace("-", "+").replace("_", "/")
    try:
        secret = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"is not base64 (generate a key with `trialist codec-key`: {KEY_BYTES} random bytes)"
        ) from None
    if len(secret) != KEY_BYTES:
        raise ValueError(f"decodes to {len(secret)} bytes; an AES-256 key is {KEY_BYTES} bytes")
    return secret


def parse_previous_keys(text: str) -> list[PayloadKey]:
    """`id:base64key` pairs separated by commas (PAYLOAD_ENCRYPTION_PREVIOUS_KEYS)."""
    keys: list[PayloadKey] = []
    for number, item in enumerate((part.strip() for part in text.split(",")), start=1):
        if not item:
            continue
        key_id, separator, key_text = item.partition(":")
        if not separator:
            raise ValueError(f"entry {number} is not `id:base64key`")
        try:
            keys.append(PayloadKey.from_base64(check_key_id(key_id.strip()), key_text))
        except ValueError as error:
            raise ValueError(f"entry {number}: {error}") from None
    ids = [key.id for key in keys]
    repeated = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    if repeated:
        raise ValueError(f"key id {', '.join(repeated)} is listed twice")
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads: new ones with `current`, old ones by their key id."""

    def __init__(self, *, current: PayloadKey, previous: Sequence[PayloadKey] = ()) -> None:
        super().__init__()
        if any(key.id == current.id for key in previous):
            raise ValueError(f"key id {current.id!r} is both current and previous")
        self.current_id = current.id
        self._current = AESGCM(current.secret)
        self._by_id = {key.id: AESGCM(key.secret) for key in (*previous, current)}

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id this codec opens, the current one first."""
        return (self.current_id, *(key for key in self._by_id if key != self.current_id))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(payload) for payload in payloads]

    def seal(self, payload: Payload) -> Payload:
        """The payload, serialised and encrypted with the current key."""
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.current_id.encode()
        sealed = self._current.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={ENCODING_KEY: ENCRYPTED_ENCODING, KEY_ID_KEY: key_id},
            data=nonce + sealed,
        )

    def open(self, payload: Payload) -> Payload:
        """The original payload; one without the encrypted encoding is returned as it is."""
        if payload.metadata.get(ENCODING_KEY) != ENCRYPTED_ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_KEY, b"")
        key_id = raw_id.decode("utf-8", errors="replace")[:_SHOWN_ID_CHARS]
        key = self._by_id.get(key_id)
        if key is None:
            raise PayloadKeyError(
                f"a payload is encrypted with key id {key_id!r}, which is neither "
                f"{KEY_ID_SETTING} ({self.current_id!r}) nor listed in {PREVIOUS_KEYS_SETTING}: "
                f"add that key as `{key_id}:<base64 key>` to {PREVIOUS_KEYS_SETTING}"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadKeyError(f"a payload with key id {key_id!r} is truncated")
        try:
            plain = key.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw_id)
        except InvalidTag:
            raise PayloadKeyError(
                f"a payload with key id {key_id!r} does not decrypt with the key configured "
                f"under that id in {KEY_SETTING} or {PREVIOUS_KEYS_SETTING} (a wrong key for "
                "that id, or the payload was altered)"
            ) from None
        return Payload.FromString(plain)


def encrypted_data_converter(
    current: PayloadKey, previous: Sequence[PayloadKey] = ()
) -> DataConverter:
    """pydantic_data_converter with the codec, and failure messages encoded (so encrypted) too.

    Failure messages and stack traces otherwise sit in plain text in the history, and a vendor's
    error message may quote what it was sent.
    """
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(current=current, previous=previous),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get(ENCODING_KEY) == ENCRYPTED_ENCODING
