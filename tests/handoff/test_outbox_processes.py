"""Several agent processes on one host share one outbox file: real processes, one SQLite file.

LiveKit runs each call in its own job process, and every job process has a relay. They open the
file at once on a fresh host, and their relays must never send one message twice at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from tests.payload_keys import SESSION_KEY

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 6
CALLS_PER_PROCESS = 20

CHILD = textwrap.dedent(
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
    """
) % {"calls": CALLS_PER_PROCESS}


def test_many_processes_open_one_fresh_outbox_and_deliver_each_message_once(
    tmp_path: Path,
) -> None:
    log = tmp_path / "deliveries.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PAYLOAD_ENCRYPTION_KEY": SESSION_KEY.to_base64(),
        "PAYLOAD_ENCRYPTION_KEY_ID": SESSION_KEY.id,
    }
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
