"""A job-process stand-in for breaker tests: breakers from settings, calls on command.

Run by tests/agent/breaker_processes.py. The vendor is an asyncio stand-in (labelled): `hang`
waits forever, `fail` raises a lost connection, `slow` answers after 0.3 s, `ok` answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from typing import Any

from agent.resilience.breaker import BreakerRegistry, CircuitOpenError
from agent.resilience.retry import DeadlineExceededError, RetryPolicy, call_with_deadline
from config.settings import get_settings


async def vendor(behavior: str, reached: list[bool]) -> str:
    reached.append(True)
    if behavior == "hang":
        await asyncio.Event().wait()
    if behavior == "slow":
        await asyncio.sleep(0.3)
    if behavior == "fail":
        raise ConnectionResetError("stand-in vendor dropped the connection")
    return "answer"


async def call(registry: BreakerRegistry, command: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    breaker = registry.get(command["service"])
    reached: list[bool] = []
    started = loop.time()
    try:
        await call_with_deadline(
            lambda: vendor(command["behavior"], reached),
            breaker=breaker,
            deadline_at=started + command["deadline"],
            policy=RetryPolicy(max_retries=0),
            rng=random.Random(1),
        )
        outcome = "ok"
    except CircuitOpenError:
        outcome = "cut" if reached else "open"
    except DeadlineExceededError:
        outcome = "deadline"
    except ConnectionResetError:
        outcome = "failed"
    return {"outcome": outcome, "ran": bool(reached), "elapsed": loop.time() - started}


def state(registry: BreakerRegistry, command: dict[str, Any]) -> dict[str, Any]:
    breaker = registry.get(command["service"])
    return {"state": breaker.state.label, "shared": breaker.shared, "at": time.monotonic()}


async def serve() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    registry = BreakerRegistry.from_settings(get_settings())
    await registry.start()
    if registry.link is not None:  # tests start from a shared view, as a warm job process does
        for _ in range(500):
            if registry.link.shared:
                break
            await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(command: dict[str, Any]) -> None:
        if command["op"] == "call":
            result = await call(registry, command)
        elif command["op"] == "state":
            result = state(registry, command)
        else:
            result = {"ready": True, "backend": registry.backend}
        sys.stdout.write(json.dumps({"id": command["id"], **result}) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        task = asyncio.create_task(answer(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await registry.aclose()


if __name__ == "__main__":
    asyncio.run(serve())
