"""A checkpoint replaced while a relay delivers the older one is due again at once, not after
the relay's lease (about 15 s, renewed while the relay works).

Found by bench/chaos.py: a live call's newer checkpoint sat in the outbox for the whole lease after
its older one was delivered, while the follow-up's liveness window ran.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from contracts.models import CallCheckpoint, CallLearned
from handoff.outbox import Outbox

NOW = 1_800_000_000.0
LEASE = 71.0  # what a relay pass claims for with the default batch and concurrency


def checkpoint(seq: int, *, notes: list[str]) -> CallCheckpoint:
    return CallCheckpoint(
        call_id="call-lease",
        seq=seq,
        sent_at=datetime(2030, 6, 2, 15, 0, seq, tzinfo=UTC),
        learned=CallLearned(stage="qualifying", notes=notes),
    )


def test_a_checkpoint_replaced_mid_delivery_is_due_again_at_once(tmp_path: Path) -> None:
    outbox = Outbox.in_dir(tmp_path)
    outbox.put(checkpoint(1, notes=["first"]), now=NOW)
    [claimed] = outbox.due(NOW, 10, lease=LEASE)
    # While the relay sends seq 1, the call stores a newer checkpoint in the same row.
    outbox.put(checkpoint(2, notes=["first", "second"]), now=NOW + 0.5)
    outbox.mark_delivered(claimed.id, seq=claimed.seq, now=NOW + 1)

    [again] = outbox.due(NOW + 1.5, 10, lease=LEASE)
    assert again.id == claimed.id and again.checkpoint().seq == 2
    assert again.checkpoint().learned is not None
    assert again.checkpoint().learned.notes == ["first", "second"]


def test_a_delivered_checkpoint_not_replaced_is_done(tmp_path: Path) -> None:
    outbox = Outbox.in_dir(tmp_path)
    outbox.put(checkpoint(1, notes=["first"]), now=NOW)
    [claimed] = outbox.due(NOW, 10, lease=LEASE)
    outbox.mark_delivered(claimed.id, seq=claimed.seq, now=NOW + 1)
    assert outbox.due(NOW + 1.5, 10, lease=LEASE) == []
    assert outbox.pending_count() == 0
