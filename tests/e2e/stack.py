"""`trialist dev` as a child of an end-to-end test, and a client with the stack's own dev key."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from temporalio.client import Client

from config.encryption import DEV_KEY_FILE, DEV_KEY_ID, DEV_TOKEN_FILE
from contracts.codec import EncryptionCodec, PayloadKey, encrypted_data_converter

TRIALIST = str(Path(sys.executable).parent / "trialist")
STOP_SECONDS = 40.0


class DevStackProcess:
    """`trialist dev` as a child of the test, its merged output collected line by line."""

    def __init__(self, *, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [TRIALIST, "dev", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, seconds: float) -> tuple[float, str]:
        """The first output line matching `pattern` and when it came (seconds since start)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + seconds
        with self._changed:
            while True:
                for at, line in self.lines:
                    if regex.search(line):
                        return at, line
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {pattern!r} after {seconds:g}s "
                        f"(exit code {self.process.poll()}); output:\n{self.output}"
                    )
                self._changed.wait(timeout=min(left, 0.5))

    def stop(self, signum: signal.Signals) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=STOP_SECONDS)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """Stop a stack a failed test left running: SIGINT first, so its children stop too.

        A SIGKILL alone would orphan the children, which run in their own sessions.
        """
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start(
    stacks: list[DevStackProcess], env: dict[str, str], cwd: Path, *args: str
) -> DevStackProcess:
    stack = DevStackProcess(args=list(args), env=env, cwd=cwd)
    stacks.append(stack)
    return stack


def dev_key(env: dict[str, str]) -> PayloadKey:
    """The payload key `trialist dev` created in the stack's DATA_DIR."""
    text = (Path(env["DATA_DIR"]) / DEV_KEY_FILE).read_text()
    return PayloadKey.from_base64(DEV_KEY_ID, text)


def dev_token(env: dict[str, str]) -> str:
    return (Path(env["DATA_DIR"]) / DEV_TOKEN_FILE).read_text().strip()


def dev_codec(env: dict[str, str]) -> EncryptionCodec:
    return EncryptionCodec(current=dev_key(env))


async def temporal_client(env: dict[str, str]) -> Client:
    """A client of the stack's dev server with the stack's key, as every client has."""
    return await Client.connect(
        f"127.0.0.1:{env['TEMPORAL_DEV_PORT']}",
        data_converter=encrypted_data_converter(dev_key(env)),
    )
