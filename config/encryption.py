"""Payload keys and the codec server token: from settings, or the dev files `trialist dev` makes."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from temporalio.converter import DataConverter

from config.settings import Settings
from contracts.codec import (
    KEY_SETTING,
    EncryptionCodec,
    PayloadKey,
    encrypted_data_converter,
    parse_previous_keys,
)

DEV_KEY_FILE: Final = "payload-dev-key"
DEV_TOKEN_FILE: Final = "codec-server-token"
DEV_KEY_ID: Final = "dev"
TOKEN_SETTING: Final = "CODEC_SERVER_TOKEN"
SECRET_FILE_MODE: Final = 0o600


# A SystemExit, like config.settings.SettingsError: a process that does not catch it (the agent)
# still stops at start-up with the one line, never running unencrypted.
class EncryptionSetupError(SystemExit):
    """No key (or token) to start with; the message names the setting and what to do."""


@dataclass(frozen=True)
class PayloadKeys:
    """The current key and the retired ones that still decrypt."""

    current: PayloadKey
    previous: tuple[PayloadKey, ...] = ()

    def codec(self) -> EncryptionCodec:
        return EncryptionCodec(current=self.current, previous=self.previous)

    def data_converter(self) -> DataConverter:
        return encrypted_data_converter(self.current, self.previous)


def payload_keys(settings: Settings) -> PayloadKeys:
    """PAYLOAD_ENCRYPTION_KEY with its previous keys, else the dev key; never plain text.

    Raises EncryptionSetupError when there is no key: compose and production set the variable,
    and `trialist dev` creates the dev key before it starts anything.
    """
    previous_text = settings.payload_encryption_previous_keys
    previous = tuple(parse_previous_keys(previous_text.get_secret_value())) if previous_text else ()
    key = settings.payload_encryption_key
    if key is not None:
        current = PayloadKey.from_base64(settings.payload_encryption_key_id, key.get_secret_value())
        return PayloadKeys(current, previous)
    dev_file = dev_key_path(settings)
    if not settings.payload_encryption_dev_key:
        raise EncryptionSetupError(
            f"{KEY_SETTING} is not set and PAYLOAD_ENCRYPTION_DEV_KEY=false: set {KEY_SETTING} "
            "(a new one: `trialist codec-key`); payloads are never sent unencrypted"
        )
    if not dev_file.is_file():
        raise EncryptionSetupError(
            f"{KEY_SETTING} is not set and there is no dev key at {dev_file}: run `make dev` "
            f"(it creates one) or `trialist codec-key --dev`, or set {KEY_SETTING}"
        )
    text = _read_secret_file(dev_file, setting=KEY_SETTING)
    try:
        current = PayloadKey.from_base64(DEV_KEY_ID, text)
    except ValueError as error:
        raise EncryptionSetupError(f"the dev key {dev_file} {error}") from None
    return PayloadKeys(current, tuple(key for key in previous if key.id != DEV_KEY_ID))


def data_converter_for(settings: Settings) -> DataConverter:
    """The one data converter of every Temporal client: pydantic + the payload codec."""
    return payload_keys(settings).data_converter()


def codec_server_token(settings: Settings) -> str:
    """CODEC_SERVER_TOKEN, else the dev token file (only where the dev key is allowed)."""
    token = settings.codec_server_token
    if token is not None:
        return token.get_secret_value()
    path = dev_token_path(settings)
    if not settings.payload_encryption_dev_key:
        raise EncryptionSetupError(
            f"{TOKEN_SETTING} is not set and PAYLOAD_ENCRYPTION_DEV_KEY=false: set "
            f"{TOKEN_SETTING} to a long random string, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if not path.is_file():
        raise EncryptionSetupError(
            f"{TOKEN_SETTING} is not set and there is no dev token at {path}: run `make dev` "
            f"(it creates one) or `trialist codec-key --dev`, or set {TOKEN_SETTING}"
        )
    return _read_secret_file(path, setting=TOKEN_SETTING)


def dev_key_path(settings: Settings) -> Path:
    return settings.data_dir / DEV_KEY_FILE


def dev_token_path(settings: Settings) -> Path:
    return settings.data_dir / DEV_TOKEN_FILE


def dev_secrets_needed(settings: Settings) -> bool:
    """True when this stack runs on dev secrets (no key or no token set, dev key allowed)."""
    unset = settings.payload_encryption_key is None or settings.codec_server_token is None
    return settings.payload_encryption_dev_key and unset


def ensure_dev_secrets(settings: Settings) -> list[Path]:
    """Create the dev key and token files that are missing (mode 0600); the paths created.

    Only the unset ones: a key or token set in the environment always wins.
    """
    created: list[Path] = []
    if settings.payload_encryption_key is None and _create_secret(
        dev_key_path(settings), PayloadKey.generate(DEV_KEY_ID).to_base64()
    ):
        created.append(dev_key_path(settings))
    if settings.codec_server_token is None and _create_secret(
        dev_token_path(settings), secrets.token_urlsafe(32)
    ):
        created.append(dev_token_path(settings))
    return created


def _create_secret(path: Path, value: str) -> bool:
    """Write `value` to a new file readable by its owner only; False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two stacks starting at once never overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    except FileExistsError:
        os.chmod(path, SECRET_FILE_MODE)
        return False
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(value + "\n")
    return True


def _read_secret_file(path: Path, *, setting: str) -> str:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not ASCII"
        raise EncryptionSetupError(
            f"cannot read {path} ({reason}): fix it or set {setting}"
        ) from None
    if not text:
        raise EncryptionSetupError(
            f"{path} is empty: delete it and run `make dev`, or set {setting}"
        )
    return text
