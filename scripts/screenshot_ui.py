"""Screenshots of the Temporal UI from the dev stack, taken with headless Chromium.

    .venv/bin/python scripts/screenshot_ui.py needs-attention          # uses a running `make dev`
    .venv/bin/python scripts/screenshot_ui.py needs-attention --start  # starts `trialist dev`
    .venv/bin/python scripts/screenshot_ui.py decoded [--start]

`needs-attention`: the workflows list filtered by FollowUpStatus="needs_attention"
(docs/img/needs-attention.png). `decoded`: what an operator does (docs/operators.md): sign in at
the codec server with the token, point the UI's codec setting at it with "Include cross-origin
credentials" on, open the newest completed follow-up's event history and expand its `call_ended`
signal (docs/img/decoded-follow-up.png).

Needs Debian's `chromium` (`bash scripts/install-system-packages.sh --with-browser`); `decoded`
also needs the `playwright` package (`.venv/bin/pip install playwright`; it drives that Chromium
and downloads no browser). Neither is a dependency of the project.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.encryption import codec_server_token, dev_key_path  # noqa: E402
from config.process_exit import exits_cleanly  # noqa: E402
from config.settings import Settings, get_settings  # noqa: E402
from config.temporal import TemporalConnectError, connect  # noqa: E402
from devtools.devstack import NEEDS_ATTENTION_QUERY, needs_attention_link  # noqa: E402

IMAGES = ROOT / "docs" / "img"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOW = "1400,900"
VIEWPORT = {"width": 1700, "height": 1000}
# The UI is a single-page app: Chromium lets its scripts and API calls run this long (virtual ms).
RENDER_BUDGET_MS = 15000
RENDER_MS = 4000
READY_SECONDS = 240.0
KEY_WAIT_SECONDS = 60.0
COMPLETED_QUERY = 'WorkflowType="CallFollowUpWorkflow" AND FollowUpStatus="completed"'

T = TypeVar("T")
cli = typer.Typer(add_completion=False, help=__doc__)

Out = Annotated[Path | None, typer.Option(help="Where the PNG goes.")]
Start = Annotated[bool, typer.Option(help="Start `trialist dev` first, stop it after.")]
Wait = Annotated[float, typer.Option(help="Seconds to wait for the follow-up to show.")]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(
        "chromium is not installed: run `bash scripts/install-system-packages.sh --with-browser`"
    )


@contextlib.contextmanager
def dev_stack(settings: Settings, start: bool, *args: str) -> Iterator[None]:
    """`trialist dev` for the screenshot's duration when asked to start it, else nothing.

    On a fresh DATA_DIR the stack creates the dev payload key first: wait for it to exist.
    """
    if not start:
        yield
        return
    trialist = Path(sys.executable).parent / "trialist"
    stack = subprocess.Popen(
        [str(trialist), "dev", *args],
        cwd=ROOT,
        stdout=sys.stdout,
        stderr=sys.stderr,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + KEY_WAIT_SECONDS
        while settings.payload_encryption_key is None and not dev_key_path(settings).is_file():
            if stack.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"trialist dev did not start (exit {stack.poll()}); see above")
            time.sleep(0.2)
        yield
    finally:
        os.kill(stack.pid, signal.SIGINT)
        stack.wait(timeout=60)


def poll(
    settings: Settings, seconds: float, probe: Callable[[Any], Awaitable[T | None]]
) -> T | None:
    """What `probe(client)` finds within `seconds`, asking once a second; None if nothing."""

    async def polling() -> T | None:
        client = await connect(settings, attempts=settings.worker_connect_attempts)
        deadline = time.monotonic() + seconds
        while True:
            found = await probe(client)
            if found or time.monotonic() > deadline:
                return found
            await asyncio.sleep(1)

    try:
        return asyncio.run(polling())
    except TemporalConnectError as error:
        raise SystemExit(f"{error} (or pass --start)") from None


@cli.command("needs-attention")
def needs_attention(out: Out = None, start: Start = False, wait: Wait = READY_SECONDS) -> None:
    """Screenshot the workflows list filtered by FollowUpStatus="needs_attention"."""
    out = out or IMAGES / "needs-attention.png"
    settings = get_settings()

    async def parked(client: Any) -> int:
        return int((await client.count_workflows(NEEDS_ATTENTION_QUERY)).count)

    with dev_stack(settings, start):
        count = poll(settings, wait, parked)
        if not count:
            raise SystemExit(f"no follow-up is parked after {wait:g}s: run the demo calls first")
        url = needs_attention_link(settings)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            command = [
                chromium(),
                "--headless",
                *CHROMIUM_ARGS,
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
        print(f"saved {out} ({count} parked follow-up(s)) from {url}")


def codec_settings_script(endpoint: str) -> str:
    """The UI's own browser setting (what its Codec Server dialog stores), set before it loads."""
    values = {
        "overrideRemoteCodecConfiguration": "true",
        "endpoint": json.dumps(endpoint),
        "includeCredentials": "true",
        "passAccessToken": "false",
    }
    return "".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in values.items())


@cli.command("decoded")
def decoded(out: Out = None, start: Start = False, wait: Wait = READY_SECONDS) -> None:
    """Screenshot the newest completed follow-up's call_ended signal, decoded."""
    out = out or IMAGES / "decoded-follow-up.png"
    settings = get_settings()

    async def newest_completed(client: Any) -> str | None:
        async for execution in client.list_workflows(COMPLETED_QUERY, limit=1):
            return str(execution.id)
        return None

    with dev_stack(settings, start, "--demo-call", "1"):
        workflow_id = poll(settings, wait, newest_completed)
        if workflow_id is None:
            raise SystemExit(f"no completed follow-up after {wait:g}s: run a demo call first")
        from playwright.sync_api import sync_playwright

        ui, codec = settings.temporal_ui_base, settings.codec_server_public_url
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page: Any = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(f"{codec}/login")
            page.fill("input[name=token]", codec_server_token(settings))
            page.click("button[type=submit]")  # sets the session cookie, then opens the UI
            page.wait_for_load_state("networkidle")
            page.evaluate(f"() => {{ {codec_settings_script(codec)} }}")
            page.goto(f"{ui}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}")
            page.get_by_text("Event History").first.click()
            signalled = page.get_by_text("Workflow Execution Signaled").first
            signalled.scroll_into_view_if_needed()
            signalled.click()
            page.wait_for_timeout(RENDER_MS)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
        print(f"saved {out} ({workflow_id}, decoded through {codec})")


if __name__ == "__main__":
    exits_cleanly(cli)()
