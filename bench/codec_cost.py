"""Benchmark: what the payload codec costs per payload, in µs and bytes, with and without zlib.

Run `python bench/codec_cost.py [--rounds 20000]`. For the payloads a follow-up carries (its
input, the call_ended outcome, a booking request, its progress), it times the codec's encode and
decode of one payload (p50/p99 over the rounds), the whole converter (pydantic + codec) against
the pydantic converter alone, and prints the stored size: plain, encrypted, and zlib-compressed
before encryption (measured here only: the codec does not compress, see docs/operators.md).
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.process_exit import exits_cleanly
from contracts.codec import EncryptionCodec, PayloadKey, encrypted_data_converter
from contracts.models import (
    BookingRequest,
    CallOutcome,
    EndedReason,
    FollowUpInput,
    FollowUpProgress,
    FollowUpStatus,
    FollowUpStep,
    QualificationSignals,
    StepProgress,
    StepState,
    Trialist,
)

ZLIB_LEVEL = 6


def sample_payloads() -> dict[str, BaseModel]:
    """A follow-up's typical payloads, with realistic field lengths."""
    trialist = Trialist(
        email="dana.whitfield@northwind-legal.example",
        name="Dana Whitfield",
        company="Northwind Legal",
        phone="+14155550123",
        trial_account_id="trial-1001",
        timezone="America/New_York",
    )
    ended = datetime(2026, 11, 29, 15, 6, tzinfo=UTC)
    booking = BookingRequest(
        call_id="demo-20261129150000-1", slot_start=ended + timedelta(days=1), guest=trialist
    )
    outcome = CallOutcome(
        call_id=booking.call_id,
        trialist=trialist,
        started_at=ended - timedelta(minutes=6),
        ended_at=ended,
        ended_reason=EndedReason.COMPLETED,
        signals=QualificationSignals(
            team_size=12,
            use_case="sales proposals",
            current_tool="Google Docs",
            timeline="this quarter",
            decision_role="decision maker",
        ),
        notes=["Team of 12 moving off Google Docs this quarter.", "Asked about CRM sync."],
        summary="Qualified: 12-seat sales team replacing Google Docs this quarter; demo booked.",
        requested_meeting=booking,
    )
    progress = FollowUpProgress(
        call_id=booking.call_id,
        status=FollowUpStatus.COMPLETED,
        steps={step: StepProgress(state=StepState.SUCCEEDED, attempts=1) for step in FollowUpStep},
    )
    return {
        "follow-up input": FollowUpInput(call_id=booking.call_id),
        "call_ended outcome": outcome,
        "booking request": booking,
        "progress": progress,
    }


@dataclass(frozen=True)
class Timing:
    p50_us: float
    p99_us: float


def timed(work: Callable[[], object], rounds: int) -> Timing:
    samples: list[int] = []
    for _ in range(rounds):
        began = time.perf_counter_ns()
        work()
        samples.append(time.perf_counter_ns() - began)
    samples.sort()
    return Timing(samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000)


def compressed_seal(codec: EncryptionCodec, payload: Payload) -> Payload:
    """What a compressing codec would store: zlib over the serialised payload, then AES-GCM."""
    squeezed = Payload(data=zlib.compress(payload.SerializeToString(), ZLIB_LEVEL))
    return codec.seal(squeezed)


def converter_timings(value: BaseModel, rounds: int) -> tuple[Timing, Timing]:
    """to_payloads + encode with pydantic alone, then with the codec (the client's whole path)."""
    encrypted = encrypted_data_converter(PayloadKey.generate("bench"))
    loop = asyncio.new_event_loop()
    try:
        plain = timed(
            lambda: loop.run_until_complete(pydantic_data_converter.encode([value])), rounds
        )
        sealed = timed(lambda: loop.run_until_complete(encrypted.encode([value])), rounds)
    finally:
        loop.close()
    return plain, sealed


def report(rounds: int) -> list[str]:
    codec = EncryptionCodec(current=PayloadKey.generate("bench"))
    lines = [
        f"payload codec cost: AES-256-GCM (cryptography), {rounds} rounds per figure, one payload "
        "per call; sizes are the serialised Payload as the server stores it",
    ]
    for name, value in sample_payloads().items():
        plain = pydantic_data_converter.payload_converter.to_payloads([value])[0]
        sealed = codec.seal(plain)
        squeezed = compressed_seal(codec, plain)
        encode = timed(lambda p=plain: codec.seal(p), rounds)  # type: ignore[misc]
        decode = timed(lambda s=sealed: codec.open(s), rounds)  # type: ignore[misc]
        zipped = timed(lambda p=plain: compressed_seal(codec, p), rounds)  # type: ignore[misc]
        without, with_codec = converter_timings(value, rounds)
        lines += [
            f"{name}: {plain.ByteSize()} B plain, {sealed.ByteSize()} B encrypted "
            f"(+{sealed.ByteSize() - plain.ByteSize()} B), {squeezed.ByteSize()} B zlib+encrypted",
            f"  codec encode p50 {encode.p50_us:.1f} µs  p99 {encode.p99_us:.1f} µs;  "
            f"decode p50 {decode.p50_us:.1f} µs  p99 {decode.p99_us:.1f} µs;  "
            f"zlib+encode p50 {zipped.p50_us:.1f} µs  p99 {zipped.p99_us:.1f} µs",
            f"  converter encode (pydantic → payload): alone p50 {without.p50_us:.1f} µs, "
            f"with the codec p50 {with_codec.p50_us:.1f} µs "
            f"(+{with_codec.p50_us - without.p50_us:.1f} µs)",
        ]
    return lines


cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def run(
    rounds: Annotated[int, typer.Option(min=100, help="Timed calls per figure.")] = 20000,
) -> None:
    """Print the codec's cost per payload."""
    for line in report(rounds):
        print(line)


@exits_cleanly
def main() -> None:
    cli()


if __name__ == "__main__":
    main()
