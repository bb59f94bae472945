"""The follow-up's current details for the Temporal UI: markdown of the steps and repair hints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.models import FollowUpStatus, FollowUpStep, StepError, StepProgress, StepState
    from contracts.names import workflow_id_for


def details_markdown(
    *,
    call_id: str,
    status: FollowUpStatus,
    notices: Sequence[str],
    steps: Mapping[FollowUpStep, StepProgress],
    parked: Sequence[FollowUpStep],
) -> str:
    """Markdown for the UI: what failed, the vendor's error, and what an operator can do."""
    lines = [f"**Follow-up of call `{call_id}`: {status}**"]
    for notice in notices:
        lines.append(f"\n{notice}")
    for step in parked:
        lines += _parked_section(call_id, step, steps[step])
    lines += ["", "| step | state | attempts | note |", "|---|---|---|---|"]
    for step, progress in steps.items():
        error = progress.last_error
        failed = error is not None and progress.state is not StepState.SUCCEEDED
        note = progress.skip_reason or (error.kind if error is not None and failed else "")
        lines.append(f"| {step} | {progress.state} | {progress.attempts} | {note} |")
    return "\n".join(lines)


def error_line(error: StepError | None) -> str:
    return "no error recorded" if error is None else f"{error.kind}: {error.message}"


def _vendor_line(error: StepError | None) -> str:
    """The vendor's own identifiers of the failure, for a support ticket."""
    if error is None:
        return "n/a"
    parts = [
        f"vendor **{error.vendor or 'n/a'}**",
        f"HTTP status **{error.status_code if error.status_code is not None else 'n/a'}**",
        f"error code **{error.error_code or 'n/a'}**",
        f"correlation id **{error.correlation_id or 'n/a'}**",
    ]
    return " · ".join(parts)


def _parked_section(call_id: str, step: FollowUpStep, progress: StepProgress) -> list[str]:
    error = progress.last_error
    workflow_id = workflow_id_for(call_id)
    return [
        "",
        f"### Needs attention: `{step}`",
        f"- error: {error_line(error)}",
        f"- {_vendor_line(error)}",
        f"- attempts so far: {progress.attempts}",
        "",
        "What you can do, after fixing the cause (data, credentials, vendor outage):",
        f'- retry: send update `retry_step` with `{{"step": "{step}"}}`, or run '
        f"`trialist followups retry {call_id} {step}`",
        f'- skip: send update `skip_step` with `{{"step": "{step}", "reason": "..."}}`, '
        f'or run `trialist followups skip {call_id} {step} --reason "..."`',
        f"- CLI: `temporal workflow update execute --workflow-id {workflow_id} --name retry_step "
        f'--input \'{{"step": "{step}"}}\'`',
    ]
