"""Read a history as the server stores it: its raw bytes, or every payload opened with a codec."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent

from contracts.codec import KEY_ID_KEY, EncryptionCodec, is_encrypted
from contracts.models import CallOutcome

PAYLOAD_TYPE = Payload.DESCRIPTOR.full_name


def personal_texts(outcome: CallOutcome) -> dict[str, str]:
    """What must never be readable in plain text: who the caller is and what they said."""
    person = outcome.trialist
    texts = {"email": person.email, "name": person.name, "summary": outcome.summary}
    texts |= {f"note {n}": note for n, note in enumerate(outcome.notes, start=1)}
    if person.company:
        texts["company"] = person.company
    if person.phone:
        texts["phone"] = person.phone
        texts["phone digits"] = person.phone.removeprefix("+")
    return texts


def found(texts: dict[str, str], raw: bytes) -> list[str]:
    """Which of `texts` occur in `raw` (case-insensitive), by label."""
    lowered = raw.lower()
    return sorted(label for label, text in texts.items() if text.lower().encode() in lowered)


def raw_bytes(events: Iterable[HistoryEvent]) -> bytes:
    """The history's protobuf bytes: payload data appears here verbatim unless encrypted."""
    return b"".join(event.SerializeToString() for event in events)


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside `message` (fields, repeated fields and map values)."""
    for field, value in message.ListFields():
        kind = field.message_type
        if field.type != FieldDescriptor.TYPE_MESSAGE or kind is None:
            continue
        if kind.GetOptions().map_entry:
            values = value.values()
        elif field.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            if not isinstance(item, Message):
                continue
            if item.DESCRIPTOR.full_name == PAYLOAD_TYPE:
                yield item  # type: ignore[misc]
            else:
                yield from payloads_in(item)


def opened_bytes(events: Iterable[HistoryEvent], codec: EncryptionCodec) -> bytes:
    """The history's bytes with every encrypted payload opened (copies; the events are kept)."""
    chunks: list[bytes] = []
    for event in events:
        copy = HistoryEvent()
        copy.CopyFrom(event)
        for payload in list(payloads_in(copy)):
            payload.CopyFrom(codec.open(payload))
        chunks.append(copy.SerializeToString())
    return b"".join(chunks)


def key_ids(events: Iterable[HistoryEvent]) -> set[str]:
    """Key ids of the encrypted payloads in a history."""
    return {
        payload.metadata[KEY_ID_KEY].decode()
        for event in events
        for payload in payloads_in(event)
        if is_encrypted(payload)
    }


def plain_payloads(events: Iterable[HistoryEvent]) -> int:
    """Payloads stored without encryption (search attributes are meant to be, as indexed)."""
    return sum(
        1
        for event in events
        for payload in payloads_in(event)
        if not is_encrypted(payload) and payload.data
    )


def cli_json_bytes(text: str) -> bytes:
    """`temporal workflow show --output json`, with every base64 string decoded next to it.

    Payload data is base64 in that JSON, so a plain-text search alone would miss plain payloads.
    """
    chunks = [text.encode()]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and len(value) >= 4:
            with contextlib.suppress(binascii.Error, ValueError):
                chunks.append(base64.b64decode(value, validate=True))

    walk(json.loads(text))
    return b"\n".join(chunks)
