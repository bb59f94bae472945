"""Names every process agrees on: task queue, workflow ids, handler names, search attribute keys."""

from __future__ import annotations

from typing import Final

from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE: Final = "trialist-follow-ups"
WORKFLOW_TYPE: Final = "CallFollowUpWorkflow"
WORKFLOW_ID_PREFIX: Final = "call-"

BOOK_MEETING_UPDATE: Final = "book_meeting"
CALL_ENDED_SIGNAL: Final = "call_ended"
CHECKPOINT_SIGNAL: Final = "checkpoint"
RETRY_STEP_UPDATE: Final = "retry_step"
SKIP_STEP_UPDATE: Final = "skip_step"
PROGRESS_QUERY: Final = "progress"

# Task queue priorities (1 is first, 5 last): work a caller is waiting on goes before the
# post-call backlog, which goes before outreach bookkeeping.
IN_CALL_PRIORITY: Final = 1
POST_CALL_PRIORITY: Final = 3
OUTREACH_PRIORITY: Final = 4

# ApplicationError types a book_meeting update fails with (besides validator rejections).
BOOKING_NOT_DONE_ERROR: Final = "booking_not_done"  # parked for an operator, or skipped
BOOKING_CONFLICT_ERROR: Final = "booking_conflict"  # another slot is booked or being booked

FOLLOW_UP_STATUS: Final = SearchAttributeKey.for_keyword("FollowUpStatus")
FOLLOW_UP_FAILED_STEP: Final = SearchAttributeKey.for_keyword("FollowUpFailedStep")
OUTREACH_STATUS: Final = SearchAttributeKey.for_keyword("OutreachStatus")
SEARCH_ATTRIBUTES: Final = (FOLLOW_UP_STATUS, FOLLOW_UP_FAILED_STEP, OUTREACH_STATUS)

# --- outreach (issue 16) -------------------------------------------------------------------------
OUTREACH_TASK_QUEUE: Final = "trialist-outreach"
OUTREACH_WORKFLOW_TYPE: Final = "OutreachWorkflow"
DIAL_SLOTS_WORKFLOW_TYPE: Final = "DialSlotsWorkflow"
DIAL_SLOTS_WORKFLOW_ID_PREFIX: Final = "outreach-dial-slots-"
OPT_OUT_UPDATE: Final = "opt_out"
PAUSE_UPDATE: Final = "pause"
RESUME_UPDATE: Final = "resume"
CANCEL_UPDATE: Final = "cancel"
CALL_REPORT_SIGNAL: Final = "call_report"
OUTREACH_PROGRESS_QUERY: Final = "outreach_progress"
ACQUIRE_SLOT_SIGNAL: Final = "acquire_slot"
RELEASE_SLOT_SIGNAL: Final = "release_slot"
SLOT_GRANTED_SIGNAL: Final = "dial_slot_granted"
# Activity names of the outreach (the workflow refers to them by name, never by import).
CHECK_CONTACT_ACTIVITY: Final = "outreach_check_contact"
PLACE_DIAL_ACTIVITY: Final = "outreach_place_dial"
DISPATCH_AGENT_ACTIVITY: Final = "outreach_dispatch_agent"
UPDATE_CRM_ACTIVITY: Final = "outreach_update_crm"
REQUEST_SLOT_ACTIVITY: Final = "outreach_request_dial_slot"
# workflow.patched id of the follow-up's report to its outreach (histories before it replay).
OUTREACH_REPORT_PATCH: Final = "outreach-call-report"


def dial_slots_workflow_id(task_queue: str) -> str:
    """The one dial-slot holder of an outreach task queue (every outreach worker shares it)."""
    return f"{DIAL_SLOTS_WORKFLOW_ID_PREFIX}{task_queue}"


def workflow_id_for(call_id: str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{call_id}"


def call_id_from_workflow_id(workflow_id: str) -> str:
    if not workflow_id.startswith(WORKFLOW_ID_PREFIX):
        raise ValueError(f"workflow id {workflow_id!r} does not start with {WORKFLOW_ID_PREFIX!r}")
    return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


SUMMARY_MAX_CHARS: Final = 200


def follow_up_summary(trialist_name: str, company: str | None = None) -> str:
    """The one-line static summary the Temporal UI lists for a follow-up: who it is for."""
    who = (
        f"{trialist_name.strip()} ({company.strip()})"
        if company and company.strip()
        else trialist_name.strip()
    )
    text = f"Trial call follow-up for {who}: CRM sync, call log, meeting booking, analytics"
    return text if len(text) <= SUMMARY_MAX_CHARS else text[: SUMMARY_MAX_CHARS - 1] + "…"
