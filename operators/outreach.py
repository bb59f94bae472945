"""Operator operations on outreach: import trialists from CSV, start, list, show, pause, cancel."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from pydantic import ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from config.settings import Settings
from contracts.calling_place import UnknownPlaceError, public_holidays, resolve_calling_place
from contracts.calling_policy import CallingPolicy, VoicemailAction
from contracts.models import Trialist
from contracts.names import (
    CANCEL_UPDATE,
    OUTREACH_PROGRESS_QUERY,
    OUTREACH_WORKFLOW_TYPE,
    PAUSE_UPDATE,
    RESUME_UPDATE,
)
from contracts.outreach import (
    ConsentRecord,
    OperatorRequest,
    OutreachInput,
    OutreachProgress,
    OutreachStatus,
    outreach_workflow_id,
)
from operators.followups import OperatorError

REQUIRED_COLUMNS: Final = ("trial_account_id", "name", "email", "phone", "consent_source")
OPTIONAL_COLUMNS: Final = (
    "company",
    "timezone",
    "state",
    "consent_at",
    "trial_ends_at",
    "campaign",
)
MAX_ROWS: Final = 10_000
HOLIDAY_HORIZON_DAYS: Final = 120
LIST_LIMIT: Final = 100


@dataclass(frozen=True)
class RowError:
    """A refused CSV row: its line number and why (field names only, never the values)."""

    line: int
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    inputs: list[tuple[int, OutreachInput]]
    errors: list[RowError]


def parse_trialists_csv(text: str, settings: Settings, *, now: datetime) -> ImportPlan:
    """Every row validated on its own: good rows become inputs, bad ones a RowError each."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise OperatorError(f"the CSV has no column {', '.join(missing)} (line 1)")
    inputs: list[tuple[int, OutreachInput]] = []
    errors: list[RowError] = []
    seen_accounts: dict[str, int] = {}
    seen_phones: dict[str, int] = {}
    for number, raw in enumerate(reader, start=2):
        if number - 1 > MAX_ROWS:
            errors.append(RowError(number, f"more than {MAX_ROWS} rows; the rest is not read"))
            break
        row = {key.strip(): (value or "").strip() for key, value in raw.items() if key}
        try:
            input = outreach_input_from_row(row, settings, now=now)
        except (ValueError, ValidationError) as error:
            errors.append(RowError(number, _reason(error)))
            continue
        account, phone = input.trialist.trial_account_id, input.trialist.phone or ""
        first = seen_accounts.get(account) or seen_phones.get(phone)
        if first is not None:
            errors.append(
                RowError(number, f"duplicate of line {first} (same trial account or phone)")
            )
            continue
        seen_accounts[account], seen_phones[phone] = number, number
        inputs.append((number, input))
    return ImportPlan(inputs=inputs, errors=errors)


def outreach_input_from_row(
    row: dict[str, str], settings: Settings, *, now: datetime
) -> OutreachInput:
    """One trialist's OutreachInput; raises ValueError naming the bad field."""
    if not row.get("consent_source"):
        raise ValueError("consent_source: missing consent (no AI-voice call without it)")
    trialist = Trialist(
        email=row.get("email", ""),
        name=row.get("name", ""),
        company=row.get("company") or None,
        phone=row.get("phone", ""),
        trial_account_id=row.get("trial_account_id", ""),
        timezone=row.get("timezone") or "America/New_York",
    )
    assert trialist.phone is not None
    try:
        place = resolve_calling_place(
            phone=trialist.phone,
            timezone=row.get("timezone") or None,
            region=(row.get("state") or "").upper() or None,
        )
    except UnknownPlaceError as error:
        raise ValueError(f"phone: {error}") from None
    consent = ConsentRecord(
        recorded_at=_moment(row.get("consent_at"), "consent_at") or now,
        source=row["consent_source"],
    )
    return build_outreach_input(
        trialist=trialist.model_copy(update={"timezone": place.timezones[0]}),
        place=place,
        consent=consent,
        trial_ends_at=_moment(row.get("trial_ends_at"), "trial_ends_at"),
        campaign=row.get("campaign") or None,
        settings=settings,
        now=now,
        started_by="import",
    )


def calling_policy(settings: Settings, *, region: str | None, today: date) -> CallingPolicy:
    """The team's policy from settings, with this region's public holidays for the months ahead."""
    holidays: list[date] = []
    if settings.outreach_holidays.upper() == "US":
        holidays += public_holidays(region=region, first=today, days=HOLIDAY_HORIZON_DAYS)
    extra = [day.strip() for day in settings.outreach_extra_holidays.split(",") if day.strip()]
    holidays += [date.fromisoformat(day) for day in extra]
    return CallingPolicy(
        weekdays_only=settings.outreach_weekdays_only,
        holidays=tuple(sorted(set(holidays))),
        max_attempts_per_24h=settings.outreach_max_attempts_per_24h,
        max_attempts_per_trial=settings.outreach_max_attempts_per_trial,
        voicemail=VoicemailAction(settings.outreach_voicemail),
    )


def build_outreach_input(
    *,
    trialist: Trialist,
    place: object,
    consent: ConsentRecord | None,
    settings: Settings,
    now: datetime,
    trial_ends_at: datetime | None = None,
    campaign: str | None = None,
    started_by: str = "operator",
) -> OutreachInput:
    return OutreachInput.model_validate(
        {
            "trialist": trialist,
            "place": place,
            "consent": consent,
            "trial_ends_at": trial_ends_at,
            "campaign": campaign or "trial-outreach",
            "from_number": settings.outreach_from_number,
            "trunk_id": settings.livekit_sip_trunk_id,
            "policy": calling_policy(
                settings, region=getattr(place, "region", None), today=now.date()
            ),
            "max_calls_per_campaign": settings.outreach_max_calls_per_campaign,
            "max_calls_per_number": settings.outreach_max_calls_per_number,
            "follow_up_task_queue": settings.temporal_task_queue,
            "follow_up_call_ended_timeout_seconds": settings.follow_up_call_ended_timeout_seconds,
            "follow_up_step_schedule_to_close_seconds": (
                settings.follow_up_step_schedule_to_close_seconds
            ),
            "started_by": started_by,
        }
    )


@dataclass(frozen=True)
class StartResult:
    line: int
    trial_account_id: str
    started: bool
    note: str


class Outreaches:
    """Outreach workflows on one namespace, as an operator starts, reads and steers them."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    async def start_all(self, inputs: Iterable[tuple[int, OutreachInput]]) -> list[StartResult]:
        """Start each outreach once: an id that ever ran (even finished or opted out) is skipped."""
        return [await self._start(line, input) for line, input in inputs]

    async def _start(self, line: int, input: OutreachInput) -> StartResult:
        account = input.trialist.trial_account_id
        try:
            await self.client.start_workflow(
                OUTREACH_WORKFLOW_TYPE,
                input,
                id=outreach_workflow_id(account),
                task_queue=self.settings.outreach_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"Outreach to {input.trialist.name} ({input.place.describe()})"[
                    :200
                ],
            )
        except WorkflowAlreadyStartedError:
            return StartResult(line, account, False, "already started once: not started again")
        return StartResult(line, account, True, "started")

    async def list(self, status: OutreachStatus | None = None) -> list[tuple[str, str, str]]:
        query = f'WorkflowType = "{OUTREACH_WORKFLOW_TYPE}"'
        if status is not None:
            query += f' AND OutreachStatus = "{status.value}"'
        rows = []
        async for execution in self.client.list_workflows(query, limit=LIST_LIMIT):
            closed = execution.status.name if execution.status is not None else "unknown"
            shown = execution.search_attributes.get("OutreachStatus") or [closed]
            rows.append((execution.id, str(shown[0]).lower(), execution.start_time.isoformat()))
        return rows

    async def progress(self, trial_account_id: str) -> OutreachProgress:
        handle = self.client.get_workflow_handle(outreach_workflow_id(trial_account_id))
        try:
            progress: OutreachProgress = await handle.query(
                OUTREACH_PROGRESS_QUERY, result_type=OutreachProgress
            )
        except RPCError as error:
            raise OperatorError(f"no outreach for {trial_account_id}: {error.message}") from None
        return progress

    async def steer(self, trial_account_id: str, verb: str, reason: str) -> OutreachProgress:
        """pause, resume or cancel (an update the workflow validates and may refuse)."""
        names = {"pause": PAUSE_UPDATE, "resume": RESUME_UPDATE, "cancel": CANCEL_UPDATE}
        handle = self.client.get_workflow_handle(outreach_workflow_id(trial_account_id))
        try:
            result: OutreachProgress = await handle.execute_update(
                names[verb], OperatorRequest(reason=reason), result_type=OutreachProgress
            )
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            raise OperatorError(f"{verb} refused: {getattr(cause, 'message', cause)}") from None
        except RPCError as error:
            raise OperatorError(
                f"no running outreach for {trial_account_id}: {error.message}"
            ) from None
        return result


def _moment(text: str | None, field: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: not an ISO date or date-time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _reason(error: ValueError | ValidationError) -> str:
    """Field names and reasons, never the refused values (they are personal data)."""
    if isinstance(error, ValidationError):
        parts = []
        for item in error.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in item["loc"] if part != "trialist") or "row"
            parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
        return "; ".join(parts)
    return str(error)


def summary_line(results: Sequence[StartResult], errors: Sequence[RowError]) -> str:
    started = sum(1 for result in results if result.started)
    return (
        f"{started} started, {len(results) - started} already started, {len(errors)} rows refused"
    )
