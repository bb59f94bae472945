"""The SQLite outbox and its relay: dedupe, per-call order, leases, backoff, durability, speed."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.models import BookingRequest, CallOutcome, EndedReason, Trialist
from handoff.outbox import MAX_HOLD_ATTEMPTS, MessageKind, Outbox, OutboxMessage
from handoff.relay import OutboxRelay, Rejection

NOW = 1_800_000_000.0


def trialist() -> Trialist:
    return Trialist(
        email="casey.morgan@orbitworks.example",
        name="Casey Morgan",
        company="Orbitworks",
        trial_account_id="trial-outbox",
    )


def booking(call_id: str, *, hours_ahead: int = 24) -> BookingRequest:
    slot = datetime(2030, 6, 3, 14, 0, tzinfo=UTC) + timedelta(hours=hours_ahead)
    return BookingRequest(call_id=call_id, slot_start=slot, guest=trialist())


def outcome(call_id: str, *, summary: str = "Wants a demo.") -> CallOutcome:
    ended = datetime(2030, 6, 2, 15, 0, tzinfo=UTC)
    return CallOutcome(
        call_id=call_id,
        trialist=trialist(),
        started_at=ended - timedelta(minutes=5),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        summary=summary,
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox.in_dir(tmp_path / "data")


class ManualClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedDelivery:
    """A scripted stand-in for FollowUpHandoff.deliver (test_handoff covers the real one):
    records each message and fails, refuses or accepts it as the test scripts per kind and call."""

    def __init__(self) -> None:
        self.sent: list[tuple[MessageKind, str]] = []
        self.failing: set[tuple[MessageKind, str]] = set()  # as if Temporal were down
        self.broken: set[tuple[MessageKind, str]] = set()  # trouble with this message only
        self.refusing: dict[tuple[MessageKind, str], str] = {}

    async def __call__(self, message: OutboxMessage) -> Rejection | None:
        key = (message.kind, message.call_id)
        self.sent.append(key)
        if key in self.failing:
            raise ConnectionRefusedError("temporal down")
        if key in self.broken:
            raise ValueError("this message's own trouble")
        if key in self.refusing:
            return Rejection(self.refusing[key])
        return None


def temporal_down(error: BaseException) -> bool:
    return isinstance(error, ConnectionRefusedError)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def delivery() -> ScriptedDelivery:
    return ScriptedDelivery()


def queue_two_calls(outbox: Outbox) -> None:
    """call-1's booking and call_ended, and call-2's call_ended, all due now."""
    outbox.put(booking("call-1"), now=NOW)
    outbox.put(outcome("call-1"), now=NOW)
    outbox.put(outcome("call-2"), now=NOW)


def relay_for(outbox: Outbox, delivery: ScriptedDelivery, clock: ManualClock) -> OutboxRelay:
    return OutboxRelay(
        outbox=outbox,
        deliver=delivery,
        unreachable=temporal_down,
        interval=0.05,
        initial_backoff=2.0,
        max_backoff=60.0,
        delivery_timeout=1.0,
        clock=clock,
        rng=random.Random(3),
    )


# --- the outbox file --------------------------------------------------------------------------


def test_the_file_is_wal_with_full_sync_under_the_data_dir(tmp_path: Path) -> None:
    box = Outbox.in_dir(tmp_path / "data")
    assert box.path == tmp_path / "data" / "outbox.db"
    with sqlite3.connect(box.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: read it from the outbox's own one (2 = FULL).
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert (
        Outbox(tmp_path / "n.db", synchronous="NORMAL")
        ._db.execute("PRAGMA synchronous")
        .fetchone()[0]
        == 1
    )
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        Outbox(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


def test_the_same_message_twice_is_stored_once(outbox: Outbox) -> None:
    first = outbox.put(outcome("call-a"), now=NOW)
    again = outbox.put(outcome("call-a", summary="A later, different summary."), now=NOW + 1)
    assert first.stored and not again.stored and again.id == first.id
    assert outbox.get(first.id).call_outcome().summary == "Wants a demo."  # type: ignore[union-attr]

    slot = outbox.put(booking("call-a"), now=NOW)
    same_slot = outbox.put(booking("call-a"), now=NOW + 1)
    other_slot = outbox.put(booking("call-a", hours_ahead=48), now=NOW + 2)
    assert slot.stored and not same_slot.stored and same_slot.id == slot.id
    assert other_slot.stored
    assert outbox.pending_count() == 3
    assert outbox.pending_count("call-a") == 3 and outbox.pending_count("call-b") == 0


def test_a_message_keeps_every_field_and_its_payload(outbox: Outbox) -> None:
    request = booking("call-f")
    stored = outbox.put(request, now=NOW)
    message = outbox.get(stored.id)
    assert message is not None
    assert (message.kind, message.call_id, message.attempts) == (
        MessageKind.BOOK_MEETING,
        "call-f",
        0,
    )
    assert message.created_at == message.next_attempt_at == NOW
    assert message.delivered_at is None and message.last_error is None
    assert message.booking_request() == request
    with pytest.raises(ValueError, match="not call_ended"):
        message.call_outcome()
    stored = "BookingRequest, CallCheckpoint, CallOutcome or OptOutRequest, not Trialist"
    with pytest.raises(TypeError, match=stored):
        outbox.put(trialist())  # type: ignore[arg-type]


def test_book_meeting_goes_before_call_ended_of_the_same_call(outbox: Outbox) -> None:
    # Stored in the "wrong" order: the outcome first, then a booking of the same call.
    outbox.put(outcome("call-o"), now=NOW)
    outbox.put(booking("call-o"), now=NOW + 1)
    kinds = [message.kind for message in outbox.due(NOW + 2)]
    assert kinds == [MessageKind.BOOK_MEETING, MessageKind.CALL_ENDED]


def test_call_ended_waits_while_its_booking_backs_off_until_the_hold_runs_out(
    outbox: Outbox,
) -> None:
    book = outbox.put(booking("call-h"), now=NOW).id
    outbox.put(outcome("call-h"), now=NOW)
    outbox.put(outcome("call-other"), now=NOW)
    outbox.mark_failed(book, "RPC UNAVAILABLE", next_attempt_at=NOW + 30)
    assert [(m.kind, m.call_id) for m in outbox.due(NOW + 1)] == [
        (MessageKind.CALL_ENDED, "call-other")
    ]
    # A fresh start ignores backoff: the booking is due again, and its call_ended behind it.
    assert [m.kind for m in outbox.due(NOW + 1, ignore_backoff=True) if m.call_id == "call-h"] == [
        MessageKind.BOOK_MEETING,
        MessageKind.CALL_ENDED,
    ]
    for _ in range(MAX_HOLD_ATTEMPTS - 1):
        outbox.mark_failed(book, "RPC UNAVAILABLE", next_attempt_at=NOW + 30)
    # Held no longer: the outcome carries requested_meeting, so the workflow books from it.
    assert ("call-h", MessageKind.CALL_ENDED) in [(m.call_id, m.kind) for m in outbox.due(NOW + 1)]


def test_a_lease_hides_claimed_messages_from_other_relays_until_released(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    mine, theirs = Outbox(path), Outbox(path)  # two processes' connections to one file
    first = mine.put(outcome("call-1"), now=NOW).id
    mine.put(outcome("call-2"), now=NOW)
    claimed = mine.due(NOW, limit=1, lease=60)
    assert [m.id for m in claimed] == [first]
    assert [m.call_id for m in theirs.due(NOW + 1)] == ["call-2"]
    assert [m.call_id for m in theirs.due(NOW + 61)] == ["call-1", "call-2"]  # lease expired
    mine.release([first])
    assert [m.call_id for m in theirs.due(NOW + 1)] == ["call-1", "call-2"]


def test_failed_and_delivered_messages_record_attempts_and_errors(outbox: Outbox) -> None:
    id = outbox.put(outcome("call-m"), now=NOW).id
    outbox.mark_failed(id, "TemporalConnectError: " + "x" * 2000, next_attempt_at=NOW + 5)
    failed = outbox.get(id)
    assert failed is not None and failed.attempts == 1 and failed.next_attempt_at == NOW + 5
    assert failed.last_error is not None and len(failed.last_error) == 500
    assert outbox.due(NOW + 4) == [] and len(outbox.due(NOW + 5)) == 1
    outbox.mark_delivered(id, now=NOW + 6)
    done = outbox.get(id)
    assert done is not None and done.delivered and done.attempts == 2
    assert outbox.pending_count() == 0 and outbox.due(NOW + 100) == []
    assert outbox.purge_delivered(older_than=NOW + 6) == 0
    assert outbox.purge_delivered(older_than=NOW + 7) == 1
    assert outbox.messages() == []


def test_messages_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path).put(outcome("call-r"), now=NOW)
    reopened = Outbox(path)
    assert [m.call_outcome().call_id for m in reopened.due(NOW)] == ["call-r"]


def test_puts_from_many_threads_are_all_stored(outbox: Outbox) -> None:
    def write(worker: int) -> None:
        for n in range(50):
            outbox.put(outcome(f"call-{worker}-{n}"))

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outbox.pending_count() == 200


# --- the relay ----------------------------------------------------------------------------------


async def test_a_pass_delivers_in_order_and_marks_each_message(
    outbox: Outbox, clock: ManualClock, delivery: ScriptedDelivery
) -> None:
    outbox.put(outcome("call-1"), now=NOW)
    outbox.put(booking("call-1"), now=NOW)
    outbox.put(booking("call-2"), now=NOW)
    delivery.refusing[(MessageKind.BOOK_MEETING, "call-2")] = "the call has ended"
    result = await relay_for(outbox, delivery, clock).deliver_due_once()
    assert (result.delivered, result.rejected, result.failed) == (2, 1, 0)
    # Calls go at once; within a call, the booking before its call_ended.
    assert sorted(delivery.sent) == sorted(
        [
            (MessageKind.BOOK_MEETING, "call-1"),
            (MessageKind.BOOK_MEETING, "call-2"),
            (MessageKind.CALL_ENDED, "call-1"),
        ]
    )
    call_1 = [kind for kind, call in delivery.sent if call == "call-1"]
    assert call_1 == [MessageKind.BOOK_MEETING, MessageKind.CALL_ENDED]
    assert outbox.pending_count() == 0
    refused = outbox.messages("call-2")[0]
    assert refused.delivered and refused.last_error == "refused: the call has ended"


async def test_temporal_down_stops_the_pass_without_delaying_any_message(
    outbox: Outbox, clock: ManualClock, delivery: ScriptedDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    queue_two_calls(outbox)
    delivery.failing.add((MessageKind.BOOK_MEETING, "call-1"))
    relay = OutboxRelay(
        outbox=outbox,
        deliver=delivery,
        unreachable=temporal_down,
        concurrency=1,  # one call after the other, so the stop is seen before call-2 goes
        clock=clock,
        rng=random.Random(3),
    )
    with caplog.at_level(logging.WARNING, logger="handoff.relay"):
        result = await relay.deliver_due_once()
    assert result.unreachable and (result.failed, result.deferred) == (1, 2)
    assert delivery.sent == [(MessageKind.BOOK_MEETING, "call-1")]
    failed = outbox.messages("call-1")[0]
    assert failed.attempts == 1 and failed.last_error == "ConnectionRefusedError: temporal down"
    # The relay waits as a whole; the message keeps no delay, so all of it flows when it's back.
    assert failed.next_attempt_at == NOW
    assert 0 < relay.unreachable_wait() <= 4.0
    # Logs say what and which call, never who: no name or email from the payload.
    assert "Casey" not in caplog.text and "@" not in caplog.text

    delivery.failing.clear()
    result = await relay.deliver_due_once()
    assert result.delivered == 3 and outbox.pending_count() == 0
    assert [kind for kind, call in delivery.sent if call == "call-1"] == [
        MessageKind.BOOK_MEETING,
        MessageKind.BOOK_MEETING,
        MessageKind.CALL_ENDED,
    ]


async def test_a_message_that_fails_on_its_own_backs_off_and_holds_only_its_call(
    outbox: Outbox, clock: ManualClock, delivery: ScriptedDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    queue_two_calls(outbox)
    delivery.broken.add((MessageKind.BOOK_MEETING, "call-1"))
    relay = relay_for(outbox, delivery, clock)
    with caplog.at_level(logging.WARNING, logger="handoff.relay"):
        result = await relay.deliver_due_once()
    assert not result.unreachable
    assert (result.delivered, result.failed, result.deferred) == (1, 1, 1)
    failed = outbox.messages("call-1")[0]
    assert failed.attempts == 1 and failed.last_error == "ValueError: this message's own trouble"
    assert NOW + 1.0 <= failed.next_attempt_at <= NOW + 2.0  # 2 s x jitter in [0.5, 1]
    assert "call-1" in caplog.text and "Casey" not in caplog.text and "@" not in caplog.text

    # The next pass skips the backed-off booking and the call_ended held behind it.
    delivery.broken.clear()
    result = await relay.deliver_due_once()
    assert result.attempted == 0
    clock.now = failed.next_attempt_at
    result = await relay.deliver_due_once()
    assert result.delivered == 2 and outbox.pending_count() == 0
    assert delivery.sent[-2:] == [
        (MessageKind.BOOK_MEETING, "call-1"),
        (MessageKind.CALL_ENDED, "call-1"),
    ]


async def test_a_slow_delivery_times_out_and_is_retried(outbox: Outbox) -> None:
    async def hangs(message: OutboxMessage) -> Rejection | None:
        await asyncio.Event().wait()
        return None

    outbox.put(outcome("call-slow"), now=NOW)
    relay = OutboxRelay(
        outbox=outbox,
        deliver=hangs,
        unreachable=temporal_down,
        delivery_timeout=0.05,
        clock=ManualClock(),
    )
    started = time.perf_counter()
    result = await relay.deliver_due_once()
    assert result.failed == 1 and time.perf_counter() - started < 1.0
    assert outbox.messages()[0].last_error is not None
    assert outbox.messages()[0].last_error.startswith("TimeoutError")  # type: ignore[union-attr]


def test_backoff_doubles_with_jitter_up_to_the_cap(outbox: Outbox) -> None:
    relay = relay_for(outbox, ScriptedDelivery(), ManualClock())
    for attempts, base in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (30, 60.0)]:
        delays = [relay.backoff(attempts) for _ in range(50)]
        assert all(base / 2 <= delay <= base for delay in delays)
        assert max(delays) - min(delays) > 0  # jittered, so many messages spread apart
    with pytest.raises(ValueError, match="max_backoff"):
        OutboxRelay(
            outbox=outbox,
            deliver=ScriptedDelivery(),
            unreachable=temporal_down,
            initial_backoff=5,
            max_backoff=1,
        )


async def test_run_delivers_at_start_up_ignoring_backoff_then_stops(
    outbox: Outbox, clock: ManualClock, delivery: ScriptedDelivery
) -> None:
    id = outbox.put(outcome("call-s"), now=NOW).id
    outbox.mark_failed(id, "RPC UNAVAILABLE", next_attempt_at=NOW + 3600)  # a previous process
    stop = asyncio.Event()
    task = asyncio.create_task(relay_for(outbox, delivery, clock).run(stop))
    for _ in range(100):
        if outbox.pending_count() == 0:
            break
        await asyncio.sleep(0.01)
    assert delivery.sent == [(MessageKind.CALL_ENDED, "call-s")]
    outbox.put(outcome("call-t"), now=NOW)  # a later write is picked up by a periodic pass
    for _ in range(100):
        if outbox.pending_count() == 0:
            break
        await asyncio.sleep(0.01)
    assert delivery.sent[-1] == (MessageKind.CALL_ENDED, "call-t")
    stop.set()
    await asyncio.wait_for(task, 1.0)


async def test_the_relay_survives_a_broken_outbox_file(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    relay = relay_for(outbox, ScriptedDelivery(), ManualClock())
    outbox.close()  # every query now raises sqlite3.ProgrammingError
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.15)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert "outbox relay pass failed" in caplog.text
