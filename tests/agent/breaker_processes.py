"""Real processes for breaker tests: Debian's redis-server as a child, and job-process stand-ins.

A `BreakerProcess` is a Python child that builds its breakers from settings exactly as a job
process does (BreakerRegistry.from_settings, started in its event loop) and makes vendor calls
through `call_with_deadline` on command: JSON lines in on stdin, JSON lines out on stdout. The
vendor is an asyncio stand-in (hang, fail or answer), labelled as such: the breaker is the
subject here, and the sandbox's hang is exercised by bench/breaker_fleet.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CHILD = "tests.agent.breaker_child"


class RedisServer:
    """Debian's redis-server as a child process on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        found = shutil.which("redis-server")
        if found is None:
            pytest.skip("redis-server is not installed (make install installs Debian's package)")
        self.binary = found
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port, socket_timeout=2).flushall()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class BreakerProcess:
    """One child process with its own breakers, driven over stdin/stdout."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", CHILD],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._answers: Queue[dict[str, Any]] = Queue()
        self._stderr: list[str] = []
        self._next = 0
        self._pending: dict[int, dict[str, Any]] = {}
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        assert self.result(self.send({"op": "ready"}), timeout=30)["ready"]

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip())

    @property
    def log(self) -> list[str]:
        return list(self._stderr)

    def send(self, command: dict[str, Any]) -> int:
        self._next += 1
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": self._next, **command}) + "\n")
        self.process.stdin.flush()
        return self._next

    def result(self, command_id: int, *, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while command_id not in self._pending:
            try:
                answer = self._answers.get(timeout=max(deadline - time.monotonic(), 0.01))
            except Empty:
                raise AssertionError(f"no answer to command {command_id}: {self.log}") from None
            self._pending[answer["id"]] = answer
        return self._pending.pop(command_id)

    def call(self, behavior: str, *, deadline: float = 1.0, service: str = "amplitude") -> int:
        return self.send(
            {"op": "call", "service": service, "behavior": behavior, "deadline": deadline}
        )

    def call_now(self, behavior: str, **kwargs: Any) -> dict[str, Any]:
        return self.result(self.call(behavior, **kwargs))

    def state(self, service: str = "amplitude") -> dict[str, Any]:
        return self.result(self.send({"op": "state", "service": service}))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def child_env(**settings: object) -> dict[str, str]:
    """The environment of a child: this one, with settings as upper-case variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREAKER_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = str(REPO)
    for name, value in settings.items():
        env[name.upper()] = str(value)
    return env


@contextmanager
def breaker_processes(count: int, **settings: object) -> Iterator[list[BreakerProcess]]:
    children = [BreakerProcess(child_env(**settings)) for _ in range(count)]
    try:
        yield children
    finally:
        for child in children:
            child.close()


def wait_for(condition: Any, *, within: float = 5.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)
