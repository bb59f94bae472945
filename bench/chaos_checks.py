"""What the chaos run verifies, from the sandbox's records, Temporal and the agents' journals.

Per call: exactly one record of each kind it should have (Salesforce Lead and call Task, HubSpot
contact, call and note, the Amplitude events by insert id, and for a booked meeting one Chili
Piper meeting, one Salesforce Event, one HubSpot meeting), nothing twice, the follow-up
completed, and every promise kept: a call whose agent said the invite will follow ends with a
booked meeting or with a reply owed in both CRMs. What a killed agent's call had said is compared
with what reached the CRM.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from activities.follow_up import CALL_COMPLETED_EVENT, MEETING_BOOKED_EVENT
from bench.chaos_plan import PlannedCall
from integrations.amplitude import insert_id_for

PROMISE_WORDS: Final = "invite will follow"  # what the agent says when a booking is queued
CONFIRMED_WORDS: Final = "You're all set"  # what it says when the booking is confirmed
# What the handoff writes on outbox rows it closed itself, not through the relay.
NOT_RELAYED_NOTES: Final = ("superseded by", "sent directly by a later attempt", "refused:")


@dataclass
class CallJournal:
    """One call as its agent process journaled it."""

    call: PlannedCall
    pid: int | None = None
    started_at: float | None = None
    hangup_at: float | None = None
    ended_at: float | None = None
    ended_handoff: str | None = None
    said: list[tuple[float, str]] = field(default_factory=list)  # (when, "name: value" | note)
    promised_at: float | None = None
    confirmed_at: float | None = None
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    killed_at: float | None = None

    @property
    def started(self) -> bool:
        return self.started_at is not None

    @property
    def killed_unheard(self) -> bool:
        """Killed before anything was said and before its first checkpoint came back: the
        target allows losing the last seconds, and that was all of this call."""
        return self.killed_at is not None and not self.said and not self.handoffs


def call_journals(
    calls: Sequence[PlannedCall], entries: Iterable[dict[str, Any]]
) -> dict[str, CallJournal]:
    journals = {call.call_id: CallJournal(call=call) for call in calls}
    for entry in entries:
        journal = journals.get(entry.get("call") or "")
        if journal is not None:
            _add(journal, entry)
    return journals


def _add(journal: CallJournal, entry: dict[str, Any]) -> None:
    event, at = entry["event"], float(entry["t"])
    if event == "start":
        journal.started_at, journal.pid = at, entry.get("pid")
    elif event == "said":
        text = entry["value"] if entry["kind"] == "note" else f"{entry['name']}: {entry['value']}"
        journal.said.append((at, text))
    elif event == "agent":
        if PROMISE_WORDS in entry["text"] and journal.promised_at is None:
            journal.promised_at = at
        if CONFIRMED_WORDS in entry["text"] and journal.confirmed_at is None:
            journal.confirmed_at = at
    elif event == "handoff":
        journal.handoffs.append(entry)
    elif event == "hangup":
        journal.hangup_at = at
    elif event == "ended":
        journal.ended_at, journal.ended_handoff = at, entry.get("handoff")
    elif event == "error":
        journal.errors.append(entry.get("error", "?"))


# --- the CRM as the sandbox holds it --------------------------------------------------------------


@dataclass
class Crm:
    """Counts of every record the run cares about, keyed the way each vendor keys them."""

    leads: Counter[str] = field(default_factory=Counter)  # Trial_Account_Id__c
    tasks: Counter[str] = field(default_factory=Counter)  # Voice_Call_Id__c
    task_text: dict[str, str] = field(default_factory=dict)
    dispositions: dict[str, str] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)  # Voice_Meeting_Id__c
    contacts: Counter[str] = field(default_factory=Counter)  # email
    engagements: Counter[str] = field(default_factory=Counter)  # voice_call_id
    meetings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # guest email
    analytics: Counter[str] = field(default_factory=Counter)  # insert id

    @classmethod
    def of(cls, state: dict[str, list[dict[str, Any]]]) -> Crm:
        crm = cls()
        for record in state.get("salesforce_records", []):
            crm._salesforce(str(record["sobject"]), json.loads(record["fields"]))
        for item in state.get("hubspot_objects", []):
            if item["object_type"] == "contacts" and item["email"]:
                crm.contacts[str(item["email"]).lower()] += 1
            elif item["voice_call_id"]:
                crm.engagements[str(item["voice_call_id"])] += 1
        for meeting in state.get("chilipiper_meetings", []):
            if meeting["status"] == "Active":
                crm.meetings.setdefault(str(meeting["guest_email"]).lower(), []).append(meeting)
        for event in state.get("amplitude_events", []):
            if event["insert_id"]:
                crm.analytics[str(event["insert_id"])] += 1
        return crm

    def _salesforce(self, sobject: str, fields: dict[str, Any]) -> None:
        if sobject == "Lead" and fields.get("Trial_Account_Id__c"):
            self.leads[str(fields["Trial_Account_Id__c"])] += 1
        elif sobject == "Task" and fields.get("Voice_Call_Id__c"):
            key = str(fields["Voice_Call_Id__c"])
            self.tasks[key] += 1
            self.task_text[key] = str(fields.get("Description") or "")
            self.dispositions[key] = str(fields.get("CallDisposition") or "")
        elif sobject == "Event" and fields.get("Voice_Meeting_Id__c"):
            self.events[str(fields["Voice_Meeting_Id__c"])] += 1


# --- verdicts -----------------------------------------------------------------------------------


@dataclass
class Verdict:
    call_id: str
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: str | None = None
    broken_promise: str | None = None
    lost_items: list[tuple[float, str]] = field(default_factory=list)  # (said at, item)
    kept_items: int = 0
    booked: bool = False
    moved: bool = False
    owed: bool = False

    @property
    def lost(self) -> bool:
        return bool(self.missing)


@dataclass(frozen=True)
class FollowUp:
    """One follow-up as Temporal lists it (and its progress query, when it answered)."""

    status: str  # the execution status: COMPLETED, RUNNING, ...
    follow_up_status: str | None  # the FollowUpStatus search attribute
    close_time: datetime | None
    agent_lost: bool | None


def verdict_for(journal: CallJournal, crm: Crm, follow_up: FollowUp | None) -> Verdict:
    call = journal.call
    verdict = Verdict(call_id=call.call_id)
    person = call.trialist
    if follow_up is None and journal.killed_unheard:
        return verdict
    if follow_up is None:
        verdict.missing.append("follow-up workflow")
    elif follow_up.status != "COMPLETED" or follow_up.follow_up_status != "completed":
        verdict.stuck = f"{follow_up.status}/{follow_up.follow_up_status}"
    one = {
        "Salesforce Lead": crm.leads[person.trial_account_id],
        "HubSpot contact": crm.contacts[str(person.email).lower()],
        "Salesforce call Task": crm.tasks[call.call_id],
        "HubSpot call": crm.engagements[f"{call.call_id}:call"],
        "HubSpot note": crm.engagements[f"{call.call_id}:note"],
        "Amplitude call event": crm.analytics[insert_id_for(call.call_id, CALL_COMPLETED_EVENT)],
    }
    _exactly_one(verdict, one)
    _meeting(verdict, journal, crm)
    _said(verdict, journal, crm)
    return verdict


def _exactly_one(verdict: Verdict, counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        if count == 0:
            verdict.missing.append(kind)
        elif count > 1:
            verdict.duplicated.append(f"{kind} x{count}")


def _meeting(verdict: Verdict, journal: CallJournal, crm: Crm) -> None:
    call = journal.call
    meetings = crm.meetings.get(str(call.trialist.email).lower(), [])
    meeting_records = {
        "HubSpot meeting": crm.engagements[f"{call.call_id}:meeting"],
        "Amplitude meeting event": crm.analytics[insert_id_for(call.call_id, MEETING_BOOKED_EVENT)],
    }
    owed = {
        "Salesforce reply-owed Task": crm.tasks[f"{call.call_id}:reply"],
        "HubSpot reply-owed note": crm.engagements[f"{call.call_id}:reply_owed"],
    }
    for kind, count in owed.items():
        if count > 1:
            verdict.duplicated.append(f"{kind} x{count}")
    verdict.owed = all(count >= 1 for count in owed.values())
    if len(meetings) > 1:
        verdict.duplicated.append(f"Chili Piper meeting x{len(meetings)}")
    if meetings:
        verdict.booked = True
        meeting_records["Salesforce Event"] = crm.events[str(meetings[0]["meeting_id"])]
        _exactly_one(verdict, meeting_records)
        verdict.moved = call.slot is not None and _start(meetings[0]) != call.slot
    else:
        extra = [kind for kind, count in meeting_records.items() if count > 0]
        verdict.duplicated += [f"{kind} without a meeting" for kind in extra]
    if journal.confirmed_at is not None and not meetings:
        verdict.broken_promise = "confirmed in the call, no meeting booked"
    elif journal.promised_at is not None and not meetings and not verdict.owed:
        verdict.broken_promise = "invite promised, neither booked nor a reply owed"


def _start(meeting: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(meeting["start_at"]).replace("Z", "+00:00"))


def _said(verdict: Verdict, journal: CallJournal, crm: Crm) -> None:
    """Every signal and note the agent saved must be in the call log the rep reads."""
    text = _folded(crm.task_text.get(journal.call.call_id, ""))
    for at, item in journal.said:
        if f"- {_folded(item)}" in text:
            verdict.kept_items += 1
        else:
            verdict.lost_items.append((at, item))
    if journal.killed_at is None and verdict.lost_items:
        verdict.missing.append(f"{len(verdict.lost_items)} signal(s)/note(s) said in the call")


def _folded(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


# --- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    call_id: str
    created_at: float
    delivered_at: float | None
    note: str | None

    @property
    def relayed(self) -> bool:
        """Delivered by a relay (not closed by the handoff itself as superseded or refused)."""
        if self.delivered_at is None:
            return False
        return not any((self.note or "").startswith(prefix) for prefix in NOT_RELAYED_NOTES)

    @property
    def refused(self) -> bool:
        return (self.note or "").startswith("refused:")
