"""Screenshot a follow-up in the Temporal UI decoded through the codec server (headless Chromium).

    .venv/bin/python scripts/screenshot_decoded_ui.py          # uses a running `make dev`
    .venv/bin/python scripts/screenshot_decoded_ui.py --start  # starts `trialist dev`, stops it

It does what an operator does (docs/operators.md): signs in at the codec server with the token,
points the UI's codec setting at it with "Include cross-origin credentials" on, opens the newest
completed follow-up's event history and expands its `call_ended` signal.
Needs Debian's `chromium` (`bash scripts/install-system-packages.sh --with-browser`) and the
`playwright` package (`.venv/bin/pip install playwright`; it drives that Chromium and downloads no
browser). Neither is a dependency of the project.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.encryption import codec_server_token  # noqa: E402
from config.process_exit import exits_cleanly  # noqa: E402
from config.settings import Settings, get_settings  # noqa: E402
from config.temporal import TemporalConnectError, connect  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "img" / "decoded-follow-up.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1700, "height": 1000}
STACK_READY_SECONDS = 240.0
RENDER_MS = 4000
COMPLETED_QUERY = 'WorkflowType="CallFollowUpWorkflow" AND FollowUpStatus="completed"'

cli = typer.Typer(add_completion=False)


async def newest_completed(settings: Settings, seconds: float) -> str | None:
    """The id of the newest completed follow-up, waiting up to `seconds` for one."""
    client = await connect(settings, attempts=settings.worker_connect_attempts)
    deadline = time.monotonic() + seconds
    while True:
        async for execution in client.list_workflows(COMPLETED_QUERY, limit=1):
            return execution.id
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(1)


def codec_settings_script(endpoint: str) -> str:
    """The UI's own browser setting (what its Codec Server dialog stores), set before it loads."""
    values = {
        "overrideRemoteCodecConfiguration": "true",
        "endpoint": json.dumps(endpoint),
        "includeCredentials": "true",
        "passAccessToken": "false",
    }
    return "".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in values.items())


def take_screenshot(settings: Settings, workflow_id: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    ui = settings.temporal_ui_base
    codec = settings.codec_server_public_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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


def start_stack() -> subprocess.Popen[str]:
    trialist = Path(sys.executable).parent / "trialist"
    return subprocess.Popen(
        [str(trialist), "dev", "--demo-call", "1"],
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
        bool, typer.Option(help="Start `trialist dev` (demo call 1) first, stop it after.")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a completed follow-up.")
    ] = STACK_READY_SECONDS,
) -> None:
    """Screenshot the newest completed follow-up's decoded call_ended signal."""
    settings = get_settings()
    stack = start_stack() if start else None
    try:
        try:
            workflow_id = asyncio.run(newest_completed(settings, wait))
        except TemporalConnectError as error:
            raise SystemExit(f"{error} (or pass --start)") from None
        if workflow_id is None:
            raise SystemExit(f"no completed follow-up after {wait:g}s: run a demo call first")
        take_screenshot(settings, workflow_id, out)
        print(f"saved {out} ({workflow_id}, decoded through {settings.codec_server_public_url})")
    finally:
        if stack is not None:
            os.kill(stack.pid, signal.SIGINT)
            stack.wait(timeout=60)


if __name__ == "__main__":
    exits_cleanly(cli)()
