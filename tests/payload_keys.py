"""The test session's payload key: every Temporal client and every Settings in the tests use it.

Installed into the environment by tests/conftest.py before any Settings is built, so the code
under test (which reads its keys from settings) and the test's own clients share one key.
"""

from __future__ import annotations

import os
from typing import Final

from contracts.codec import EncryptionCodec, PayloadKey, encrypted_data_converter

SESSION_KEY: Final = PayloadKey.generate("test-session")
SESSION_CONVERTER: Final = encrypted_data_converter(SESSION_KEY)

# Fixed and committed on purpose: recorded histories (tests/histories) hold only made-up people,
# and the replay test must open them on any machine. Nothing outside the tests uses it.
HISTORY_KEY: Final = PayloadKey.from_base64(
    "history-fixtures", "06V//+9hxxNL9v2qzPnb3AwH0q0Q5T0CKEUic96R8Pw="
)
HISTORY_CONVERTER: Final = encrypted_data_converter(HISTORY_KEY)


def session_codec() -> EncryptionCodec:
    return EncryptionCodec(current=SESSION_KEY)


def install_session_key() -> None:
    """Point PAYLOAD_ENCRYPTION_KEY at the session key (a developer's own key is set aside)."""
    os.environ["PAYLOAD_ENCRYPTION_KEY"] = SESSION_KEY.to_base64()
    os.environ["PAYLOAD_ENCRYPTION_KEY_ID"] = SESSION_KEY.id
    os.environ.pop("PAYLOAD_ENCRYPTION_PREVIOUS_KEYS", None)
