"""Screenshot the Temporal UI's needs_attention view from the dev stack with headless Chromium.

    .venv/bin/python scripts/screenshot_ui.py            # uses a running `make dev`
    .venv/bin/python scripts/screenshot_ui.py --start    # starts `trialist dev`, then stops it

Needs Debian's `chromium` (`bash scripts/install-system-packages.sh --with-browser`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.process_exit import exits_cleanly  # noqa: E402
from config.settings import Settings, get_settings  # noqa: E402
from config.temporal import TemporalConnectError, connect  # noqa: E402
from devtools.devstack import NEEDS_ATTENTION_QUERY, needs_attention_link  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "img" / "needs-attention.png"
WINDOW = "1400,900"
# The UI is a single-page app: Chromium lets its scripts and API calls run this long (virtual ms).
RENDER_BUDGET_MS = 15000
STACK_READY_SECONDS = 240.0

cli = typer.Typer(add_completion=False)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(
        "chromium is not installed: run `bash scripts/install-system-packages.sh --with-browser`"
    )


def take_screenshot(url: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW}",
            f"--virtual-time-budget={RENDER_BUDGET_MS}",
            f"--screenshot={out}",
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")


async def wait_for_parked(settings: Settings, seconds: float) -> int:
    """Wait until the visibility query lists at least one parked follow-up; returns the count."""
    client = await connect(settings, attempts=settings.worker_connect_attempts)
    deadline = time.monotonic() + seconds
    while True:
        count = (await client.count_workflows(NEEDS_ATTENTION_QUERY)).count
        if count or time.monotonic() > deadline:
            return count
        await asyncio.sleep(1)


def start_stack() -> subprocess.Popen[str]:
    trialist = Path(sys.executable).parent / "trialist"
    return subprocess.Popen(
        [str(trialist), "dev"],
        cwd=ROOT,
        stdout=sys.stdout,
        stderr=sys.stderr,
        stdin=subprocess.DEVNULL,
        text=True,
    )


@cli.command()
def main(
    out: Annotated[Path, typer.Option(help="Where the PNG goes.")] = DEFAULT_OUT,
    start: Annotated[
        bool, typer.Option(help="Start `trialist dev` (with its demo calls) first.")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a parked call.")
    ] = STACK_READY_SECONDS,
) -> None:
    """Screenshot the workflows list filtered by FollowUpStatus="needs_attention"."""
    settings = get_settings()
    stack = start_stack() if start else None
    try:
        try:
            count = asyncio.run(wait_for_parked(settings, wait))
        except TemporalConnectError as error:
            raise SystemExit(f"{error} (or pass --start)") from None
        if count == 0:
            raise SystemExit(f"no follow-up is parked after {wait:g}s: run the demo calls first")
        url = needs_attention_link(settings)
        take_screenshot(url, out)
        print(f"saved {out} ({count} parked follow-up(s)) from {url}")
    finally:
        if stack is not None:
            os.kill(stack.pid, signal.SIGINT)
            stack.wait(timeout=60)


if __name__ == "__main__":
    exits_cleanly(cli)()
