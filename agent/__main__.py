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
# drain-outbox stops after this long even if Temporal keeps accepting (a huge backlog): run again.
DRAIN_SECONDS = 600.0


def _settings_or_exit() -> Settings:
    from config.settings import get_settings

    return get_settings()  # raises SettingsError (a SystemExit) naming each bad variable


def _run_demo(argv: list[str]) -> None:
    from devtools.demo_calls import main as demo_main

    demo_main(argv)


def _drain_outbox() -> None:
    """Deliver everything the outbox holds, for an operator, without starting an agent.

    Passes run until the outbox is empty or Temporal cannot be reached; exits 0 only when nothing
    is left, and says what still waits and why.
    """
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
    report = asyncio.run(drain_outbox(settings, within=DRAIN_SECONDS))
    print(
        f"delivered {report.delivered}, refused for good {report.rejected} "
        f"in {report.passes} pass(es); {report.pending} still pending"
    )
    if report.pending:
        why = _still_waiting(settings)
        if report.unreachable:
            why.insert(0, f"Temporal is unreachable ({report.last_error}); run it again later")
        for line in why:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)


def _still_waiting(settings: Settings) -> list[str]:
    """One line per message still in the outbox: which, for which call, and its last error."""
    from handoff.outbox import Outbox

    outbox = Outbox.in_dir(settings.data_dir)
    try:
        waiting = [message for message in outbox.messages() if not message.delivered]
    finally:
        outbox.close()
    return [
        f"{message.kind} of call {message.call_id}: {message.attempts} attempt(s), "
        f"last error: {message.last_error or 'none yet'}"
        for message in waiting[:20]
    ] + ([f"... and {len(waiting) - 20} more"] if len(waiting) > 20 else [])


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
