"""The payload codec: AES-256-GCM round trips, key ids and rotation, clear errors, no plain text."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from contracts.codec import (
    ENCRYPTED_ENCODING,
    KEY_ID_KEY,
    PREVIOUS_KEYS_SETTING,
    EncryptionCodec,
    PayloadKey,
    PayloadKeyError,
    encrypted_data_converter,
    parse_previous_keys,
)
from tests.workflows.scenario import call_outcome, make_trialist, new_call_id

KEY_A = PayloadKey.generate("key-a")
KEY_B = PayloadKey.generate("key-b")

payload_bytes = st.binary(max_size=4096)
metadata = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda k: k not in ("encoding", KEY_ID_KEY)),
    st.binary(max_size=64),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(data=payload_bytes, extra=metadata, encoding=st.sampled_from([b"json/plain", b"x/y"]))
def test_any_payload_comes_back_exactly_and_is_stored_encrypted(
    data: bytes, extra: dict[str, bytes], encoding: bytes
) -> None:
    codec = EncryptionCodec(current=KEY_A)
    original = Payload(metadata={**extra, "encoding": encoding}, data=data)
    sealed = codec.seal(original)
    assert sealed.metadata["encoding"] == ENCRYPTED_ENCODING
    assert sealed.metadata[KEY_ID_KEY] == b"key-a"
    assert set(sealed.metadata) == {"encoding", KEY_ID_KEY}  # the original metadata is inside
    if len(data) >= 8:
        assert data not in sealed.data
    assert codec.open(sealed) == original


def test_the_same_payload_encrypts_differently_each_time() -> None:
    codec = EncryptionCodec(current=KEY_A)
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"Dana Whitfield"')
    assert codec.seal(payload).data != codec.seal(payload).data  # a fresh nonce per payload


def test_a_payload_without_the_encrypted_encoding_passes_through_as_it_is() -> None:
    codec = EncryptionCodec(current=KEY_A)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"call_id": "readme-1"}')
    assert asyncio.run(codec.decode([plain])) == [plain]


def test_rotation_new_payloads_use_the_current_key_and_old_ones_still_open() -> None:
    under_a = EncryptionCodec(current=KEY_A).seal(Payload(data=b"written under A"))
    rotated = EncryptionCodec(current=KEY_B, previous=[KEY_A])
    assert rotated.open(under_a).data == b"written under A"
    assert rotated.seal(Payload(data=b"new")).metadata[KEY_ID_KEY] == b"key-b"
    assert rotated.key_ids == ("key-b", "key-a")


def test_a_key_removed_too_early_names_the_setting_and_not_the_payload() -> None:
    secret_text = b"dana.whitfield@northwind-legal.example"
    under_a = EncryptionCodec(current=KEY_A).seal(Payload(data=secret_text))
    with pytest.raises(PayloadKeyError) as raised:
        EncryptionCodec(current=KEY_B).open(under_a)
    message = str(raised.value)
    assert "'key-a'" in message and PREVIOUS_KEYS_SETTING in message
    assert "dana" not in message and "northwind" not in message


def test_a_wrong_key_under_the_right_id_is_refused_clearly() -> None:
    sealed = EncryptionCodec(current=KEY_A).seal(Payload(data=b"Northwind Legal"))
    impostor = PayloadKey.generate("key-a")  # same id, another key
    with pytest.raises(PayloadKeyError, match="does not decrypt with the key configured"):
        EncryptionCodec(current=impostor).open(sealed)


def test_an_altered_or_truncated_payload_is_refused() -> None:
    codec = EncryptionCodec(current=KEY_A)
    sealed = codec.seal(Payload(data=b"summary of the call"))
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    with pytest.raises(PayloadKeyError):
        codec.open(Payload(metadata=dict(sealed.metadata), data=bytes(flipped)))
    with pytest.raises(PayloadKeyError, match="truncated"):
        codec.open(Payload(metadata=dict(sealed.metadata), data=sealed.data[:10]))
    # The key id is authenticated too: moving a payload under another id fails.
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_KEY: b"key-b"}, data=sealed.data)
    with pytest.raises(PayloadKeyError):
        EncryptionCodec(current=KEY_A, previous=[PayloadKey("key-b", KEY_A.secret)]).open(
            relabelled
        )


def test_a_key_never_shows_in_its_repr() -> None:
    assert KEY_A.to_base64() not in repr(KEY_A)
    assert repr(KEY_A) == "PayloadKey(id='key-a', secret=<32 bytes>)"


def test_bad_key_text_is_refused_without_quoting_it() -> None:
    for text in ("not base64 at all!!", "c2hvcnQ=", ""):
        with pytest.raises(ValueError) as raised:
            PayloadKey.from_base64("k", text)
        assert text not in str(raised.value) or not text


def test_previous_keys_parse_and_refuse_bad_entries() -> None:
    text = f"key-a:{KEY_A.to_base64()}, key-b:{KEY_B.to_base64()}"
    assert [key.id for key in parse_previous_keys(text)] == ["key-a", "key-b"]
    with pytest.raises(ValueError, match="entry 1 is not `id:base64key`"):
        parse_previous_keys(KEY_A.to_base64())
    with pytest.raises(ValueError, match="listed twice"):
        parse_previous_keys(f"key-a:{KEY_A.to_base64()},key-a:{KEY_B.to_base64()}")
    with pytest.raises(ValueError) as raised:
        parse_previous_keys("key-a:definitely-not-a-key")
    assert "definitely-not-a-key" not in str(raised.value)


def test_a_key_cannot_be_current_and_previous() -> None:
    with pytest.raises(ValueError, match="both current and previous"):
        EncryptionCodec(current=KEY_A, previous=[KEY_A])


async def test_the_data_converter_round_trips_models_and_hides_them() -> None:
    converter = encrypted_data_converter(KEY_A)
    call_id = new_call_id()
    outcome = call_outcome(call_id, make_trialist(call_id))
    (payload,) = await converter.encode([outcome])
    assert outcome.trialist.email.encode() not in payload.SerializeToString()
    assert outcome.summary.encode() not in payload.SerializeToString()
    assert await converter.decode([payload], [type(outcome)]) == [outcome]
    # What an old, plain client wrote decodes too.
    (plain,) = await pydantic_data_converter.encode([outcome])
    assert await converter.decode([plain], [type(outcome)]) == [outcome]


async def test_failure_messages_are_encoded_too() -> None:
    converter = encrypted_data_converter(KEY_A)
    failure = Failure()
    await converter.encode_failure(
        ApplicationError("HubSpot refused dana.whitfield@northwind-legal.example"), failure
    )
    raw = failure.SerializeToString()
    assert b"dana.whitfield" not in raw and failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert "dana.whitfield@northwind-legal.example" in str(decoded)
