"""The outbox at rest: sealed with the payload keys, mode 0600, no payload kept once delivered."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.codec import EncryptionCodec, PayloadKey
from contracts.models import (
    BookingRequest,
    CallOutcome,
    EndedReason,
    QualificationSignals,
    Trialist,
)
from handoff.outbox import DELIVERED_RETENTION_SECONDS, MessageKind, Outbox
from handoff.relay import OutboxRelay, Rejection
from handoff.sealing import OutboxSealer, SealedPayloadError

NOW = 1_800_000_000.0
KEY_A = PayloadKey.generate("key-a")
KEY_B = PayloadKey.generate("key-b")

PERSON = Trialist(
    email="rowan.achterberg@quillfeather.example",
    name="Rowan Achterberg",
    company="Quillfeather Analytics",
    phone="+31612345678",
    trial_account_id="trial-at-rest",
)
NOTE = "Mentioned their colleague Imogen Farquharson handles procurement."
SUMMARY = "Quillfeather evaluates PandaDoc for statements of work."
# Everything personal the call carried, as the bytes a reader of the file would look for.
PERSONAL = [
    PERSON.email,
    PERSON.name,
    "Achterberg",
    "Quillfeather",
    PERSON.phone,
    "31612345678",
    "Imogen Farquharson",
    "statements of work",
]


def sealer(current: PayloadKey, *previous: PayloadKey) -> OutboxSealer:
    return OutboxSealer(EncryptionCodec(current=current, previous=previous))


def outcome(call_id: str = "call-rest") -> CallOutcome:
    ended = datetime(2030, 6, 2, 15, 0, tzinfo=UTC)
    return CallOutcome(
        call_id=call_id,
        trialist=PERSON,
        started_at=ended - timedelta(minutes=5),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        signals=QualificationSignals(use_case="statements of work"),
        notes=[NOTE],
        summary=SUMMARY,
        requested_meeting=BookingRequest(
            call_id=call_id, slot_start=ended + timedelta(days=1), guest=PERSON
        ),
    )


def file_bytes(path: Path) -> bytes:
    """The database and its WAL and shared-memory files, as a backup or a reader sees them."""
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def found_in(raw: bytes) -> list[str]:
    lowered = raw.lower()
    return [text for text in PERSONAL if text.lower().encode() in lowered]


def test_the_outbox_file_holds_no_personal_data_in_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, sealer=sealer(KEY_A))
    box.put(outcome(), now=NOW)
    box.put(outcome().requested_meeting, now=NOW)  # type: ignore[arg-type]
    assert found_in(file_bytes(path)) == []
    # The scan can find what is there: the same data, opened with the key, has all of it.
    opened = " ".join(m.payload for m in box.messages()).encode()
    assert sorted(found_in(opened)) == sorted(PERSONAL)
    assert box.messages()[0].call_outcome() == outcome()


def test_the_outbox_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, sealer=sealer(KEY_A)).put(outcome(), now=NOW)
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert part.exists() and stat.S_IMODE(part.stat().st_mode) == 0o600, part


def test_an_older_world_readable_outbox_is_tightened_on_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, sealer=sealer(KEY_A)).close()
    os.chmod(path, 0o644)
    Outbox(path, sealer=sealer(KEY_A)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_delivered_message_keeps_no_payload_and_its_row_goes_later(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", sealer=sealer(KEY_A))
    delivered = box.put(outcome("call-1"), now=NOW).id
    box.mark_delivered(delivered, now=NOW + 1)
    kept = box.get(delivered)
    assert kept is not None and kept.delivered and kept.payload == ""
    raw = box._db.execute("SELECT payload FROM outbox WHERE id = ?", (delivered,)).fetchone()[0]
    assert raw == b""
    # The next delivery after the retention deletes the old row.
    later = box.put(outcome("call-2"), now=NOW + 2).id
    box.mark_delivered(later, now=NOW + 2 + DELIVERED_RETENTION_SECONDS)
    assert box.get(delivered) is None
    assert [m.call_id for m in box.messages()] == ["call-2"]


def test_rows_written_before_sealing_are_still_delivered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, sealer=sealer(KEY_A))
    # What the outbox stored before this change: the JSON text itself.
    box._db.execute(
        "INSERT INTO outbox (dedupe_key, kind, call_id, payload, created_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            "call_ended:call-old",
            "call_ended",
            "call-old",
            outcome("call-old").model_dump_json(),
            NOW,
            NOW,
        ),
    )
    (message,) = box.due(NOW + 1)
    assert message.kind is MessageKind.CALL_ENDED and message.call_outcome() == outcome("call-old")


def test_rotation_rows_sealed_under_a_previous_key_still_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, sealer=sealer(KEY_A)).put(outcome(), now=NOW)
    rotated = Outbox(path, sealer=sealer(KEY_B, KEY_A))
    assert rotated.messages()[0].call_outcome() == outcome()
    rotated.put(outcome("call-new"), now=NOW)
    assert [m.call_id for m in Outbox(path, sealer=sealer(KEY_B, KEY_A)).due(NOW + 1)] == [
        "call-rest",
        "call-new",
    ]


async def test_a_key_removed_too_early_keeps_the_row_and_says_which_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path, sealer=sealer(KEY_A)).put(outcome(), now=NOW)
    too_early = Outbox(path, sealer=sealer(KEY_B))
    with pytest.raises(SealedPayloadError, match="PAYLOAD_ENCRYPTION_PREVIOUS_KEYS") as raised:
        too_early.messages()
    assert isinstance(raised.value, sqlite3.Error)
    assert found_in(str(raised.value).encode()) == []

    async def never(_: object) -> Rejection | None:
        raise AssertionError("an unreadable row must not be delivered")

    caplog.set_level(logging.ERROR, logger="handoff.outbox")
    relay = OutboxRelay(
        outbox=too_early, deliver=never, unreachable=lambda _: False, clock=lambda: NOW + 5
    )
    await relay._safe_pass(startup=True)  # the relay logs and tries again next pass
    assert "'key-a'" in caplog.text and "PAYLOAD_ENCRYPTION_PREVIOUS_KEYS" in caplog.text
    assert found_in(caplog.text.encode()) == []
    # Nothing was lost: with key A back as previous, the row is there and due.
    restored = Outbox(path, sealer=sealer(KEY_B, KEY_A))
    assert [m.call_id for m in restored.due(NOW + 6)] == ["call-rest"]


def test_a_bare_outbox_seals_with_this_process_keys(tmp_path: Path) -> None:
    """`python -m agent drain-outbox` opens Outbox.in_dir(DATA_DIR): its settings' keys seal it."""
    path = tmp_path / "outbox.db"
    Outbox(path).put(outcome(), now=NOW)
    assert found_in(file_bytes(path)) == []
    assert Outbox(path).messages()[0].call_outcome() == outcome()
