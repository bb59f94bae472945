"""Several agent processes on one host share one outbox file: real processes, one SQLite file.

LiveKit runs each call in its own job process, and every job process has a relay. They open the
file at once on a fresh host, and their relays must never send one message twice at once; and
one that dies mid-pass must not keep what it claimed from the others for long.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from handoff.outbox import Outbox, OutboxMessage
from handoff.relay import OutboxRelay
from tests.payload_keys import SESSION_KEY

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 6
CALLS_PER_PROCESS = 20

# Each child process opens the outbox file and stores its own calls' outcomes, then relays.
CHILD_PROLOGUE = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import UTC, datetime, timedelta

    from contracts.models import CallOutcome, EndedReason, Trialist
    from handoff.outbox import Outbox
    from handoff.relay import OutboxRelay

    data_dir, name, log = sys.argv[1:]
    outbox = Outbox.in_dir(data_dir)  # all at once: a fresh file, switched to WAL by one
    person = Trialist(email="casey@orbitworks.example", name="Casey Morgan", trial_account_id="t1")
    ended = datetime(2030, 6, 2, 15, tzinfo=UTC)
    for n in range(%(calls)d):
        outbox.put(CallOutcome(
            call_id=f"{name}-{n}", trialist=person, started_at=ended - timedelta(minutes=3),
            ended_at=ended, ended_reason=EndedReason.COMPLETED,
        ))
    """
)


def _child_script(calls: int, relaying: str, **values: object) -> str:
    """A child's script: the prologue with `calls` outcomes, then its relay part."""
    return (CHILD_PROLOGUE + textwrap.dedent(relaying)) % {"calls": calls, **values}


CHILD = _child_script(
    CALLS_PER_PROCESS,
    """
    async def deliver(message):
        with open(log, "a") as file:  # O_APPEND: one line per delivery, never torn
            file.write(f"{message.id} {name}\\n")
        await asyncio.sleep(0.01)  # a delivery takes a moment, so the relays overlap
        return None

    async def main():
        relay = OutboxRelay(outbox=outbox, deliver=deliver, unreachable=lambda _: False,
                            batch_size=15, concurrency=4)
        deadline = time.monotonic() + 30
        while outbox.pending_count() and time.monotonic() < deadline:
            await relay.deliver_due_once()
            await asyncio.sleep(0.01)

    asyncio.run(main())
    """,
)


def test_many_processes_open_one_fresh_outbox_and_deliver_each_message_once(
    tmp_path: Path,
) -> None:
    log = tmp_path / "deliveries.log"
    env = _child_env()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "data"), f"proc{n}", str(log)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    errors = [child.communicate(timeout=90)[1] for child in children]
    assert all(child.returncode == 0 for child in children), "\n".join(errors)

    deliveries = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert len(deliveries) == PROCESSES * CALLS_PER_PROCESS  # every message went
    assert set(deliveries.values()) == {1}  # and none went twice
    senders = {line.split()[1] for line in log.read_text().splitlines()}
    assert len(senders) > 1  # the relays really shared the work


# A relay whose pass outlasts its lease, then is SIGKILLed mid-pass (an agent's OOM).
DELIVERY_TIMEOUT = 2.0
RELAY_INTERVAL = 1.0
LEASE = 2 * DELIVERY_TIMEOUT + RELAY_INTERVAL  # OutboxRelay.lease
SLOW_CALLS = 6
SLOW_DELIVERY = 1.5  # the pass takes ~9 s, longer than the lease: it must renew its claims

SLOW_CHILD = _child_script(
    SLOW_CALLS,
    """
    async def deliver(message):
        with open(log, "a") as file:
            file.write(f"{message.id}\\n")
        await asyncio.sleep(%(slow)r)
        return None

    relay = OutboxRelay(outbox=outbox, deliver=deliver, unreachable=lambda _: False,
                        delivery_timeout=%(timeout)r, interval=%(interval)r, concurrency=1)
    asyncio.run(relay.deliver_due_once())
    """,
    slow=SLOW_DELIVERY,
    timeout=DELIVERY_TIMEOUT,
    interval=RELAY_INTERVAL,
)


async def test_a_relay_killed_mid_pass_holds_its_claims_for_one_lease_not_the_whole_batch(
    tmp_path: Path,
) -> None:
    """While a relay works its claims are renewed (no sibling takes them, even past the lease);
    once it is killed they lapse within one lease and a sibling sends what it left. Before, a
    claim covered the longest a whole batch could take (71 s by default, 200 s here)."""
    data, log = tmp_path / "data", tmp_path / "child.log"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SLOW_CHILD, str(data), "slow", str(log),
        cwd=REPO, env=_child_env(), stderr=subprocess.PIPE,
    )  # fmt: skip
    sent_by_sibling: list[int] = []

    async def deliver(message: OutboxMessage) -> None:
        sent_by_sibling.append(message.id)

    try:
        while not (log.exists() and log.read_text()):  # the child has claimed its batch
            assert child.returncode is None, "the child relay exited before claiming"
            await asyncio.sleep(0.05)
        claimed_at = time.monotonic()
        outbox = Outbox.in_dir(data)
        sibling = OutboxRelay(
            outbox=outbox,
            deliver=deliver,
            unreachable=lambda _: False,
            delivery_timeout=DELIVERY_TIMEOUT,
            interval=RELAY_INTERVAL,
        )
        while time.monotonic() - claimed_at < LEASE + 1.5:  # past the lease: renewed, still held
            await sibling.deliver_due_once()
            await asyncio.sleep(0.2)
        assert child.returncode is None, "the child's pass ended early: it must outlast the lease"
        assert sent_by_sibling == [], "a sibling took messages a live relay still held"
        child.kill()
        await child.wait()
        killed_at = time.monotonic()
        finished = {message.id for message in outbox.messages() if message.delivered}
        left = {message.id for message in outbox.messages() if not message.delivered}
        assert left, "the child finished its batch before the kill"
        while outbox.pending_count() and time.monotonic() - killed_at < LEASE + 30:
            await sibling.deliver_due_once()
            await asyncio.sleep(0.2)
        taken_after = time.monotonic() - killed_at
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert set(sent_by_sibling) == left  # every message the dead relay left went, once
    assert len(sent_by_sibling) == len(left)
    assert not finished & set(sent_by_sibling)  # and none it had delivered went again
    # Within one lease of the kill (plus a pass interval and a margin for a busy machine).
    assert taken_after < LEASE + RELAY_INTERVAL + 3.0, f"{taken_after:.1f} s after the kill"


def _child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PAYLOAD_ENCRYPTION_KEY": SESSION_KEY.to_base64(),
        "PAYLOAD_ENCRYPTION_KEY_ID": SESSION_KEY.id,
    }
