"""`trialist`: `dev` runs the stack, `followups` repairs follow-ups, `outreach` dials, `codec-*`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from temporalio.service import RPCError

from config.encryption import EncryptionSetupError, dev_secrets_needed, ensure_dev_secrets
from config.log_redaction import install_refused_input_filter
from config.process_exit import exits_cleanly
from config.settings import Settings, get_settings
from config.temporal import TemporalConnectError, TemporalSetupError, check_namespace, connect
from contracts.codec import PayloadKey
from contracts.models import FollowUpProgress, FollowUpStatus, StepProgress, StepState
from contracts.names import workflow_id_for
from contracts.outreach import OutreachStatus
from operators.followups import (
    FollowUpRow,
    FollowUps,
    OperatorError,
    parse_skip,
    parse_status,
    parse_step,
)

if TYPE_CHECKING:
    from operators.outreach import Outreaches

# `dev`, `codec-server` and `outreach` import their modules when they run: the outreach's phone
# and holiday data alone add seconds to every other command's start.

T = TypeVar("T")

# The operator CLI tries twice, so a command fails within a second or two when Temporal is down.
CLI_CONNECT_ATTEMPTS = 2

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Trialist voice agent backend: the dev stack and the operator tools.",
)
followups_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="List and repair call follow-ups on the configured Temporal server (TEMPORAL_ADDRESS).",
)
app.add_typer(followups_app, name="followups")
outreach_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Outreach to trialists: import a CSV, list, show, pause, resume, cancel.",
)
app.add_typer(outreach_app, name="outreach")

# Piped output has no terminal width; rich would squeeze tables into 80 columns and hide ids.
PIPED_WIDTH = 220
_piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
out = Console(highlight=False, soft_wrap=True, width=PIPED_WIDTH if _piped else None)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATE_STYLES = {
    StepState.SUCCEEDED: "green",
    StepState.NEEDS_ATTENTION: "bold red",
    StepState.RUNNING: "yellow",
    StepState.SKIPPED: "magenta",
}


@app.command()
def dev(
    agent: Annotated[
        bool,
        typer.Option(
            "--agent/--no-agent",
            help="Also run the agent: the demo calls, or the text console when an LLM is set.",
        ),
    ] = True,
    demo_call: Annotated[
        list[int] | None,
        typer.Option(
            "--demo-call",
            min=1,
            max=3,
            help="Play only this demo call (1 happy path, 2 ChiliPiper down, 3 HubSpot "
            "rejects the contact); repeatable. Default: all three.",
        ),
    ] = None,
    demo_arg: Annotated[
        list[str] | None,
        typer.Option("--demo-arg", help="Extra argument for `python -m agent demo`."),
    ] = None,
) -> None:
    """Run Temporal (dev server), the sandbox, the worker and the agent until Ctrl-C."""
    from devtools.devstack import DevStackError, run_dev_stack

    settings = get_settings()
    try:
        code = asyncio.run(
            run_dev_stack(
                settings,
                console=out,
                run_agent=agent,
                interactive=sys.stdin.isatty(),
                demo_args=[f"--call={n}" for n in demo_call or ()] + list(demo_arg or ()),
            )
        )
    except DevStackError as error:
        err.print(f"[red]✗[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command("codec-server")
def codec_server() -> None:
    """Serve /encode and /decode for the Temporal UI and CLI (token, one CORS origin)."""
    settings = get_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_refused_input_filter()
    from operators.codec_server import serve_codec_server

    try:
        serve_codec_server(settings)
    except EncryptionSetupError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None


@app.command("codec-key")
def codec_key(
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Instead: create the missing dev key and codec token under DATA_DIR (0600), "
            "as `trialist dev` does, for the by-hand flow.",
        ),
    ] = False,
) -> None:
    """Print a new random AES-256 key for PAYLOAD_ENCRYPTION_KEY (base64)."""
    if not dev:
        out.print(PayloadKey.generate("new").to_base64())
        return
    settings = get_settings()
    if not dev_secrets_needed(settings):
        out.print("PAYLOAD_ENCRYPTION_KEY and CODEC_SERVER_TOKEN are set (or dev keys are off)")
        return
    created = ensure_dev_secrets(settings)
    for path in created:
        out.print(f"created {path} (mode 0600)")
    if not created:
        out.print(f"the dev key and token already exist in {settings.data_dir}")


@followups_app.command("list")
def list_follow_ups(
    status: Annotated[
        str | None,
        typer.Option(
            help="Only this FollowUpStatus: in_call, running, needs_attention, completed."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many rows.")] = 50,
) -> None:
    """Follow-ups, newest first: call id, who, failed step, last error, age, UI link."""
    wanted = _checked(parse_status, status) if status is not None else None
    rows = _operate(lambda ops: ops.list_rows(status=wanted, limit=limit))
    if not rows:
        which = f" with FollowUpStatus={wanted.value}" if wanted else ""
        out.print(f"no follow-ups{which}")
        return
    out.print(_rows_table(rows))


@followups_app.command()
def show(call_id: Annotated[str, typer.Argument(help="The call id (workflow call-<id>).")]) -> None:
    """Each step's state, attempts and last error."""
    settings = get_settings()
    progress = _operate(lambda ops: ops.progress(call_id))
    _print_progress(progress, settings)


@followups_app.command()
def retry(
    call_id: Annotated[str, typer.Argument(help="The call id (workflow call-<id>).")],
    step: Annotated[
        str | None, typer.Argument(help="The parked step to retry; omitted: every parked step.")
    ] = None,
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for the retried steps to settle (0: no wait)."),
    ] = 15.0,
) -> None:
    """Retry a parked step (update retry_step) once its cause is fixed."""
    chosen = _checked(parse_step, step) if step is not None else None
    settings = get_settings()

    async def run(ops: FollowUps) -> tuple[list[str], FollowUpProgress | None, bool]:
        steps = await ops.retry(call_id, chosen)
        names = [s.value for s in steps]
        if not wait:
            return names, None, False
        progress, settled = await ops.wait_settled(call_id, steps, within_seconds=wait)
        return names, progress, settled

    names, progress, settled = _operate(run)
    out.print(f"retrying {', '.join(names)} of call {escape(call_id)}")
    if progress is not None:
        if not settled:
            out.print(f"still running after {wait:g}s; follow it with `trialist followups show`")
        _print_progress(progress, settings)


@followups_app.command()
def skip(
    call_id: Annotated[str, typer.Argument(help="The call id (workflow call-<id>).")],
    step: Annotated[str, typer.Argument(help="The parked step to skip.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is skipped (kept in the workflow history).")
    ],
) -> None:
    """Skip a parked step (update skip_step) with a reason; the follow-up carries on."""
    chosen = _checked(parse_step, step)
    _checked(lambda text: parse_skip(chosen, text), reason)
    settings = get_settings()

    async def run(ops: FollowUps) -> FollowUpProgress:
        await ops.skip(call_id, chosen, reason)
        return await ops.progress(call_id)

    progress = _operate(run)
    out.print(f"skipped {chosen.value} of call {escape(call_id)}")
    _print_progress(progress, settings)


def _checked(parse: Callable[[str], T], value: str) -> T:
    try:
        return parse(value)
    except OperatorError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None


def _operate(work: Callable[[FollowUps], Awaitable[T]]) -> T:
    """Connect to the configured server and run `work`; a clear one-line error exits 1."""
    settings = get_settings()
    # A retried connect would log a warning per attempt; the one-line error below says it all.
    logging.getLogger("config.temporal").setLevel(logging.ERROR)

    async def run() -> T:
        client = await connect(settings, attempts=CLI_CONNECT_ATTEMPTS)
        # A missing namespace would otherwise read as "no such follow-up".
        await check_namespace(client)
        return await work(FollowUps(client, settings))

    try:
        return asyncio.run(run())
    except (OperatorError, TemporalConnectError, TemporalSetupError, EncryptionSetupError) as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    except RPCError as error:  # the server refused something we did not foresee: say what
        err.print(f"[red]error:[/red] Temporal refused the request: {escape(error.message)}")
        raise typer.Exit(1) from None


def _rows_table(rows: list[FollowUpRow]) -> Table:
    table = Table(show_lines=False, expand=False)
    table.add_column("call id", overflow="fold")
    table.add_column("who")
    table.add_column("status", no_wrap=True)
    table.add_column("failed step", overflow="fold")
    table.add_column("last error", overflow="fold")
    table.add_column("age", no_wrap=True, justify="right")
    table.add_column("UI link", no_wrap=True, overflow="fold")
    for row in rows:
        style = "bold red" if row.status == FollowUpStatus.NEEDS_ATTENTION.value else ""
        table.add_row(
            escape(row.call_id),
            escape(row.who),
            f"[{style}]{row.status}[/]" if style else row.status,
            row.failed_step or "-",
            escape(row.last_error or "-"),
            row.age(),
            row.ui_link,
        )
    return table


def _print_progress(progress: FollowUpProgress, settings: Settings) -> None:
    link = settings.workflow_ui_link(workflow_id_for(progress.call_id))
    out.print(f"call {escape(progress.call_id)}: [bold]{progress.status.value}[/bold]  {link}")
    if progress.outcome_missing:
        out.print("the call's outcome never arrived: the follow-up ran with what it had")
    if progress.booking is not None:
        booking = progress.booking
        out.print(f"booking: {booking.status.value} {booking.meeting_id or ''}".rstrip())
    table = Table()
    table.add_column("step", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("last error / note", overflow="fold")
    for step, state in progress.steps.items():
        style = STATE_STYLES.get(state.state, "")
        label = f"[{style}]{state.state.value}[/]" if style else state.state.value
        table.add_row(step.value, label, str(state.attempts), escape(_step_note(state)))
    out.print(table)
    if progress.status is FollowUpStatus.NEEDS_ATTENTION:
        out.print(
            f"repair: trialist followups retry {progress.call_id} [STEP]  |  "
            f"trialist followups skip {progress.call_id} STEP --reason '...'"
        )


def _step_note(state: StepProgress) -> str:
    if state.skip_reason:
        prefix = "skipped: " if state.state is StepState.SKIPPED else ""
        return f"{prefix}{state.skip_reason}"
    error = state.last_error
    if error is None:
        return ""
    note = f"{error.kind}: {error.message}"
    if state.state is StepState.SUCCEEDED:
        note = f"(before the last attempt) {note}"
    # The message usually carries the correlation id already; add it only when it does not.
    if error.correlation_id and error.correlation_id not in note:
        note += f" (correlation id {error.correlation_id})"
    return note


# --- outreach (issue 16) ------------------------------------------------------------------------


@outreach_app.command("import")
def import_trialists(
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV with trial_account_id,name,email,phone,"
            "consent_source[,company,timezone,state,consent_at,"
            "trial_ends_at,campaign]."
        ),
    ],
    dry_run: Annotated[bool, typer.Option(help="Validate only; start nothing.")] = False,
) -> None:
    """Validate every row, report bad rows by line, start an outreach for each good one once."""
    from operators.outreach import parse_trialists_csv, summary_line

    settings = get_settings()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        err.print(f"[red]error:[/red] cannot read {escape(str(path))}: {error.strerror}")
        raise typer.Exit(2) from None
    try:
        plan = parse_trialists_csv(text, settings, now=datetime.now(UTC))
    except OperatorError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    for refused in plan.errors:
        out.print(f"line {refused.line}: refused: {escape(refused.reason)}")
    if dry_run:
        out.print(f"{len(plan.inputs)} rows valid, {len(plan.errors)} refused (dry run)")
        return
    results = _operate_outreach(lambda ops: ops.start_all(plan.inputs))
    for result in results:
        out.print(f"line {result.line}: {result.trial_account_id}: {result.note}")
    out.print(summary_line(results, plan.errors))
    if plan.errors:
        raise typer.Exit(1)


@outreach_app.command("list")
def list_outreach(
    status: Annotated[
        str | None,
        typer.Option(
            help="scheduled, dialing, in_call, retry_wait, paused, done, opted_out or blocked."
        ),
    ] = None,
) -> None:
    """Outreach workflows, newest first, with their OutreachStatus."""
    wanted = _checked(_outreach_status, status) if status else None
    rows = _operate_outreach(lambda ops: ops.list(wanted))
    table = Table("workflow", "status", "started")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@outreach_app.command("show")
def show_outreach(trial_account_id: Annotated[str, typer.Argument()]) -> None:
    """Status, the next attempt in the trialist's zone and why, every dial and gate decision."""
    progress = _operate_outreach(lambda ops: ops.progress(trial_account_id))
    out.print(
        f"outreach-{escape(trial_account_id)}: {progress.status.value}"
        + (f" ({progress.end.value})" if progress.end else "")
    )
    out.print(f"place: {escape(progress.place.describe())}")
    if progress.next_attempt_local:
        out.print(f"next attempt: {escape(progress.next_attempt_local)}")
    out.print(f"why: {escape(progress.why)}")
    for number, attempt in enumerate(progress.attempts, start=1):
        result = attempt.result.value if attempt.result else "?"
        out.print(f"dial {number}: {attempt.at.isoformat()} {result} {escape(attempt.note)}")
    for gate in progress.gates[-5:]:
        verdict = "dial" if gate.allowed else "blocked"
        out.print(f"gate {gate.at.isoformat()}: {verdict}: {escape('; '.join(gate.reasons))}")


def _steer_command(verb: str) -> None:
    def command(
        trial_account_id: Annotated[str, typer.Argument()],
        reason: Annotated[str, typer.Option(help="Why; kept in the workflow's history.")],
    ) -> None:
        progress = _operate_outreach(lambda ops: ops.steer(trial_account_id, verb, reason))
        out.print(f"outreach-{escape(trial_account_id)}: {verb} sent; now {progress.status.value}")

    command.__doc__ = f"{verb.capitalize()} an outreach (a validated update)."
    outreach_app.command(verb)(command)


for _verb in ("pause", "resume", "cancel"):
    _steer_command(_verb)


def _outreach_status(name: str) -> OutreachStatus:
    try:
        return OutreachStatus(name)
    except ValueError:
        choices = ", ".join(status.value for status in OutreachStatus)
        raise OperatorError(f"unknown status; choose one of {choices}") from None


def _operate_outreach(work: Callable[[Outreaches], Awaitable[T]]) -> T:
    from operators.outreach import Outreaches

    return _operate(lambda ops: work(Outreaches(ops.client, ops.settings)))


@exits_cleanly
def main() -> None:
    """Entry point of the `trialist` script; exits without the Temporal teardown abort."""
    app()


if __name__ == "__main__":
    main()
