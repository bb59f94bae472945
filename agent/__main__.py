"""`python -m agent dev|start|console|download-files` (LiveKit's CLI), `demo` and `drain-outbox`."""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING

from config.process_exit import exits_cleanly

if TYPE_CHECKING:
    from config.settings import Settings

# Subcommands that run calls, so they need a model before anything starts.
NEEDS_LLM = frozenset({"console", "dev", "start", "connect"})
EXIT_CONFIG = 2


def _settings_or_exit() -> Settings:
    from config.settings import get_settings

    return get_settings()  # raises SettingsError (a SystemExit) naming each bad variable


def _run_demo(argv: list[str]) -> None:
    from devtools.demo_calls import main as demo_main

    demo_main(argv)


def _drain_outbox() -> None:
    """Deliver what the outbox holds now, for an operator, without starting an agent."""
    import asyncio

    from handoff.follow_up import drain_outbox
    from handoff.outbox import Outbox

    settings = _settings_or_exit()
    path = settings.data_dir / "outbox.db"
    before = Outbox.in_dir(settings.data_dir)
    pending = before.pending_count()
    before.close()
    print(f"outbox {path}: {pending} pending")
    if pending == 0:
        return
    result = asyncio.run(drain_outbox(settings))
    after = Outbox.in_dir(settings.data_dir)
    left = after.pending_count()
    after.close()
    print(
        f"delivered {result.delivered}, refused for good {result.rejected}, "
        f"failed {result.failed}; {left} still pending"
    )
    if left:
        print("Temporal may still be unreachable: run it again later.", file=sys.stderr)
        raise SystemExit(1)


def _run_livekit(command: str) -> None:
    if command in NEEDS_LLM:
        from agent.providers import llm_problem

        problem = llm_problem(_settings_or_exit())
        if problem is not None:
            print(problem, file=sys.stderr)
            raise SystemExit(EXIT_CONFIG)
    from livekit.agents import cli

    from agent.entrypoint import build_server

    # The bundled CLI warns that `lk agent ...` is the way forward; it still serves these commands.
    warnings.filterwarnings("ignore", message="the built-in Python CLI is deprecated")
    cli.run_app(build_server(_settings_or_exit()))


@exits_cleanly
def main() -> None:
    argv = sys.argv[1:]
    command = argv[0] if argv else ""
    if command == "demo":
        _run_demo(argv[1:])
        return
    if command == "drain-outbox":
        _drain_outbox()
        return
    _run_livekit(command)


if __name__ == "__main__":
    main()
