"""Benchmark: how many bytes of history one follow-up leaves on the Temporal server.

Run `python bench/history_bytes.py [--n 5]`. It starts its own dev server and the sandbox, runs N
follow-ups end to end (the throughput benchmark's call_ended with a meeting to book) on the
production worker with the payload codec, and N on a client and worker without it, then prints
per follow-up: the history's serialised size, its events, the payloads' share of it and where the
payloads are (start input, signals, activity inputs and results, ...). Run it before and after a
change to what each step carries (data minimisation) and compare.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.follow_up_throughput import (
    SandboxMode,
    bench_settings,
    call_outcome,
    free_slots,
    running_sandbox,
    signal_call_ended,
)
from config.process_exit import exits_cleanly
from contracts import SEARCH_ATTRIBUTES
from contracts.codec import EncryptionCodec, PayloadKey, encrypted_data_converter, is_encrypted
from integrations.clients import build_vendor_clients
from tests.history_scan import payloads_in
from tests.servers import binary
from worker import build_worker

RESULT_SECONDS = 120.0
ZLIB_LEVEL = 6


@dataclass(frozen=True)
class HistoryFigures:
    """Means per follow-up."""

    history_bytes: float
    events: float
    payload_bytes: float
    payloads: float
    zlib_saving: float  # bytes a zlib-before-encryption codec would save (encrypted runs only)
    by_event: dict[str, float]  # payload bytes by event type


def figures(histories: list[list[HistoryEvent]], codec: EncryptionCodec | None) -> HistoryFigures:
    by_event: dict[str, list[int]] = defaultdict(lambda: [0] * len(histories))
    totals, counts, payload_sizes, payload_counts, savings = [], [], [], [], []
    for index, events in enumerate(histories):
        totals.append(sum(event.ByteSize() for event in events))
        counts.append(len(events))
        sizes = saved = number = 0
        for event in events:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
            for payload in payloads_in(event):
                sizes += payload.ByteSize()
                number += 1
                by_event[name][index] += payload.ByteSize()
                if codec is not None and is_encrypted(payload):
                    saved += payload.ByteSize() - _zlib_sealed_size(codec, payload)
        payload_sizes.append(sizes)
        payload_counts.append(number)
        savings.append(saved)
    return HistoryFigures(
        history_bytes=statistics.fmean(totals),
        events=statistics.fmean(counts),
        payload_bytes=statistics.fmean(payload_sizes),
        payloads=statistics.fmean(payload_counts),
        zlib_saving=statistics.fmean(savings),
        by_event={name: statistics.fmean(sizes) for name, sizes in by_event.items()},
    )


def _zlib_sealed_size(codec: EncryptionCodec, sealed: object) -> int:
    from temporalio.api.common.v1 import Payload

    assert isinstance(sealed, Payload)
    inner = codec.open(sealed).SerializeToString()
    return codec.seal(Payload(data=zlib.compress(inner, ZLIB_LEVEL))).ByteSize()


async def run_follow_ups(
    client: Client, settings_queue: str, sandbox_url: str, n: int, label: str
) -> list[list[HistoryEvent]]:
    settings = bench_settings(client, sandbox_url, settings_queue)
    slots = await free_slots(settings, n)
    run = uuid.uuid4().hex[:8]
    handles = []
    for index in range(n):
        outcome = call_outcome(f"bytes-{label}-{run}-{index}", slots[index], index)
        handles.append(await signal_call_ended(client, settings, settings_queue, outcome))
    for handle in handles:
        await asyncio.wait_for(handle.result(), RESULT_SECONDS)
    return [list((await handle.fetch_history()).events) for handle in handles]


async def measure(n: int) -> tuple[HistoryFigures, HistoryFigures]:
    key = PayloadKey.generate("bench")
    env = await WorkflowEnvironment.start_local(
        data_converter=encrypted_data_converter(key),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_existing_path=binary("temporal"),
        dev_server_log_level="error",
    )
    try:
        with running_sandbox(SandboxMode.THREAD) as (sandbox, _, _):
            encrypted = env.client
            plain = Client(
                encrypted.service_client,
                namespace=encrypted.namespace,
                data_converter=pydantic_data_converter,
            )
            queues = {"encrypted": f"bytes-{uuid.uuid4()}", "plain": f"bytes-{uuid.uuid4()}"}
            settings = bench_settings(encrypted, sandbox.url, queues["encrypted"])
            clients = build_vendor_clients(settings)
            try:
                with_codec = build_worker(encrypted, settings, clients=clients)
                without = build_worker(plain, settings, clients=clients, task_queue=queues["plain"])
                async with with_codec, without:
                    sandbox.reset()
                    sealed = await run_follow_ups(
                        encrypted, queues["encrypted"], sandbox.url, n, "e"
                    )
                    sandbox.reset()
                    bare = await run_follow_ups(plain, queues["plain"], sandbox.url, n, "p")
            finally:
                await clients.aclose()
    finally:
        await env.shutdown()
    return figures(sealed, EncryptionCodec(current=key)), figures(bare, None)


def describe(n: int, sealed: HistoryFigures, plain: HistoryFigures) -> list[str]:
    def line(label: str, f: HistoryFigures) -> str:
        return (
            f"  {label:<24} {f.history_bytes:8,.0f} B in {f.events:.0f} events; payloads "
            f"{f.payload_bytes:7,.0f} B ({f.payloads:.0f} payloads, "
            f"{f.payload_bytes / f.history_bytes:.0%} of the history)"
        )

    lines = [
        f"history bytes per follow-up: n={n}, completed follow-ups with a meeting booked "
        "(the throughput benchmark's call_ended), serialised history events",
        line("encrypted (production)", sealed),
        line("without the codec", plain),
        f"  codec overhead: {sealed.history_bytes - plain.history_bytes:+,.0f} B per follow-up "
        f"({sealed.history_bytes / plain.history_bytes - 1:+.1%})",
        f"  zlib before encryption would save {sealed.zlib_saving:,.0f} B per follow-up "
        f"({sealed.zlib_saving / sealed.history_bytes:.0%}); not adopted (docs/operators.md)",
        "  payload bytes by event (encrypted):",
    ]
    for name, size in sorted(sealed.by_event.items(), key=lambda item: -item[1]):
        lines.append(f"    {name:<40} {size:7,.0f} B")
    return lines


cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def run(n: Annotated[int, typer.Option("--n", min=1, help="Follow-ups per variant.")] = 5) -> None:
    """Print history bytes per follow-up."""
    sealed, plain = asyncio.run(measure(n))
    for text in describe(n, sealed, plain):
        print(text)


@exits_cleanly
def main() -> None:
    cli()


if __name__ == "__main__":
    main()
