"""PandaDocTrialistAgent: the voice agent that checks in on a trial, qualifies and books a rep."""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from livekit.agents import Agent, RunContext, ToolError, function_tool
from pydantic import ValidationError

from agent.call_state import Stage, echo
from agent.resilience.fallbacks import FallbackKind
from agent.services import CallServices
from contracts.models import (
    BOOKING_HORIZON,
    BookingConfirmation,
    BookingRequest,
    CallbackWindow,
    EndedReason,
)
from contracts.outreach import OptOutRequest
from handoff.follow_up import BookingHandoff, BookingHandoffStatus
from integrations.amplitude import AmplitudeUserProfile

logger = logging.getLogger(__name__)

MAX_OFFERED_SLOTS = 3
# An ISO 8601 start time with an offset is 25 characters; anything much longer is not one.
MAX_START_TIME_CHARS = 64
MAX_DAY_CHARS = 40  # "Wednesday" and the like; longer is no day name
# A slot this close to now cannot be prepared for; the caller is offered another.
MIN_BOOKING_NOTICE = timedelta(minutes=15)
# How the tools hand ISO start times to the model next to the spoken form.
SLOT_PATTERN = re.compile(
    r"(?:book_meeting: |; )(?P<spoken>[^=;]+?) = (?P<iso>\d{4}-\d\d-\d\dT[0-9:]+[+-]\d\d:\d\d)"
)
# Hours to aim for on successive days, so the offered times differ in time of day too.
PREFERRED_HOURS = (10, 14, 11)

TimeOfDay = Literal["morning", "afternoon", "any"]

INSTRUCTIONS = """\
You are Sam, an AI assistant calling for PandaDoc, on a phone call with \
{first_name}{company}, who started a PandaDoc free trial. This is a voice conversation. \
Say near the start that you are an AI assistant calling for PandaDoc, and say so again \
whenever you are asked.

How you speak:
- Short, natural sentences. One question at a time, then listen.
- Plain spoken words only: no markdown, lists, bullet points, emojis or links.
- Say times the way people do, like "Tuesday at 10 AM".

What you want to learn, gently and in your own order:
- How the trial is going and what they have tried so far. Call lookup_trial_activity early so you \
know what they have done.
- Team size, main use case, the tool they use today, their timeline, and whether they decide on \
the purchase. Save each answer with record_qualification_signal as soon as you hear it.
- Anything else worth passing to the sales rep: use add_call_note.

Then offer a short meeting with a PandaDoc rep. Use find_meeting_times, offer at most three \
times, and book the one they choose with book_meeting, passing its start_time exactly.

If the caller asks not to be called again ("stop calling me", "take me off your list"), call \
opt_out at once, confirm it, and end the call. If they ask to be called another time ("call me \
back Thursday afternoon"), call schedule_callback. If you reach a voicemail greeting or an \
answering machine instead of a person, call voicemail_reached.

If a tool answers with a sentence for the caller, say it in your own words and carry on; never \
mention tools, systems or errors. When the caller wants to go, or everything is done, thank them \
and call end_call.
"""
# What the agent says on a voicemail when the outreach allows one message (47 CFR 64.1200(b)).
VOICEMAIL_MESSAGE = (
    "Hi {first_name}, this is Sam, an AI assistant calling for PandaDoc about your free trial. "
    "We'll try you again another time. If you'd rather not get these calls, call us back and "
    "say stop. Thanks, bye!"
)
CALLBACK_HOURS: dict[str, tuple[int, int]] = {
    "morning": (9, 12),
    "afternoon": (12, 17),
    "any": (9, 17),
}


@contextlib.contextmanager
def only_tool_errors(services: CallServices, tool: str) -> Iterator[None]:
    """Whatever goes wrong in a tool reaches the model as a ToolError it can speak from.

    Any other exception would reach it only as "An internal error occurred", with no line to say.
    Logged by type and place only: arguments and vendor replies can hold personal data.
    """
    try:
        yield
    except ToolError:
        raise
    except Exception as error:
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
        logger.error(
            "call %s: %s failed (%s%s)", services.call.call_id, tool, type(error).__name__, where
        )
        raise ToolError(services.guard.fallbacks.line(FallbackKind.TOOL_FAILURE)) from None


class PandaDocTrialistAgent(Agent):
    """Checks in on a trial, qualifies the caller and books a meeting with a sales rep."""

    def __init__(self, *, first_name: str, company: str | None = None) -> None:
        at = f" from {company}" if company else ""
        super().__init__(instructions=INSTRUCTIONS.format(first_name=first_name, company=at))
        self._first_name = first_name

    async def on_enter(self) -> None:
        self.session.generate_reply(
            instructions=(
                f"Greet {self._first_name} by first name, say you're Sam, an AI assistant calling "
                "for PandaDoc about their free trial, and ask if they have a couple of minutes."
            )
        )

    @function_tool
    async def lookup_trial_activity(self, context: RunContext[CallServices]) -> str:
        """Look up what the caller has done in their PandaDoc trial so far.

        Returns one sentence about their activity, for you to use naturally in the conversation.
        """
        services = context.userdata
        person = services.call.trialist
        with (
            only_tool_errors(services, "lookup_trial_activity"),
            services.state.transaction() as state,
        ):
            async with services.filler(context):
                profile = await services.guard.call(
                    "amplitude",
                    lambda: services.trial_activity.get_user_profile(person.trial_account_id),
                    fallback_kind=FallbackKind.DATA_NOT_FOUND,
                )
            state.set_stage(Stage.DISCOVERY)
            return summarize_activity(profile, now=services.clock(), timezone=person.timezone)

    @function_tool
    async def record_qualification_signal(
        self, context: RunContext[CallServices], name: str, value: str
    ) -> str:
        """Save one thing you learned that qualifies the caller, as soon as you hear it.

        Args:
            name: Which signal. Use team_size (a whole number of people), use_case, current_tool,
                timeline or decision_role when it fits; any other short snake_case name is kept
                as an extra note for the rep.
            value: What the caller said, in a few words, e.g. "12", "sales proposals",
                "Google Docs", "this quarter", "decision maker".
        """
        state = context.userdata.state
        with only_tool_errors(context.userdata, "record_qualification_signal"):
            try:
                with state.transaction():
                    key = state.record_signal(name, value)
                    if state.stage in (Stage.OPENING, Stage.DISCOVERY):
                        state.set_stage(Stage.QUALIFYING)
            except ValueError as error:
                raise ToolError(
                    f"Not saved: {error}. Fix the name or value and try again."
                ) from None
            return f"Saved {key.replace('_', ' ')}: {echo(state.signals[key])}."

    @function_tool
    async def add_call_note(self, context: RunContext[CallServices], note: str) -> str:
        """Save a short note for the sales rep about something the caller said.

        Args:
            note: One or two sentences in plain words, e.g. "Wants Salesforce integration".
        """
        state = context.userdata.state
        with only_tool_errors(context.userdata, "add_call_note"):
            try:
                with state.transaction():
                    state.add_note(note)
            except ValueError as error:
                raise ToolError(f"Not saved: {error}.") from None
            return "Note saved."

    @function_tool
    async def find_meeting_times(
        self,
        context: RunContext[CallServices],
        day: str | None = None,
        time_of_day: TimeOfDay = "any",
    ) -> str:
        """Find open times for a short meeting with a PandaDoc sales rep.

        Args:
            day: A day the caller prefers, such as "Tuesday", "tomorrow" or "today". Leave it
                empty when they have no preference.
            time_of_day: "morning", "afternoon", or "any".
        """
        services = context.userdata
        zone = ZoneInfo(services.call.trialist.timezone)
        with (
            only_tool_errors(services, "find_meeting_times"),
            services.state.transaction() as state,
        ):
            state.set_stage(Stage.SCHEDULING)
            async with services.filler(context):
                free = await services.guard.call(
                    "chilipiper",
                    lambda: services.slots.find_free_slots(
                        services.call.guest(), timezone=services.call.trialist.timezone
                    ),
                    fallback_kind=FallbackKind.SERVICE_UNAVAILABLE,
                )
            now = services.clock()
            chosen = pick_slots(free.slots, now=now, zone=zone, day=day, time_of_day=time_of_day)
            if not chosen and (day or time_of_day != "any"):
                chosen = pick_slots(free.slots, now=now, zone=zone, day=None, time_of_day="any")
                if chosen:
                    return (
                        "Nothing is open then. The nearest open times are "
                        f"{describe_slots(chosen, now=now, zone=zone)}."
                    )
            if not chosen:
                raise ToolError(
                    "There are no open times in the next few days. Offer to have the rep email "
                    "the caller some times instead, and add a call note about it."
                )
            return f"Open times: {describe_slots(chosen, now=now, zone=zone)}."

    @function_tool
    async def book_meeting(self, context: RunContext[CallServices], start_time: str) -> str:
        """Book the meeting with a sales rep at the time the caller chose.

        Args:
            start_time: The chosen start time in ISO 8601, exactly as find_meeting_times gave it,
                e.g. "2025-06-03T10:00:00-04:00".
        """
        services = context.userdata
        with only_tool_errors(services, "book_meeting"):
            return await self._book(context, start_time)

    async def _book(self, context: RunContext[CallServices], start_time: str) -> str:
        services = context.userdata
        person = services.call.trialist
        zone = ZoneInfo(person.timezone)
        now = services.clock()
        start = parse_start_time(start_time, zone=zone)
        if start < now + MIN_BOOKING_NOTICE:
            raise ToolError(
                "That time has passed or is too soon to prepare for. Ask for a later time, or call "
                "find_meeting_times."
            )
        if start > now + BOOKING_HORIZON:
            raise ToolError(
                f"That is more than {BOOKING_HORIZON.days} days away, too far ahead to book. Ask "
                "for a time in the next few weeks, or call find_meeting_times."
            )
        try:
            request = BookingRequest(call_id=services.call.call_id, slot_start=start, guest=person)
        except ValidationError:
            raise ToolError(
                "That time can't be booked. Pass a start_time from find_meeting_times."
            ) from None
        spoken = spoken_time(start, now=now, zone=zone)
        with services.state.transaction() as state:
            state.set_stage(Stage.SCHEDULING)
            state.request_meeting(request)
            try:
                async with services.filler(context):
                    result = await services.handoff.book_meeting(
                        request, wait=services.booking_wait_seconds
                    )
            except Exception as error:  # the handoff queues on Temporal trouble; this is a bug
                logger.exception("call %s: booking handoff failed", services.call.call_id)
                fallback = services.guard.fallbacks.line(FallbackKind.TOOL_FAILURE)
                raise ToolError(fallback) from error
            return self._booking_answer(services, request, result, spoken=spoken, now=now)

    def _booking_answer(
        self,
        services: CallServices,
        request: BookingRequest,
        result: BookingHandoff,
        *,
        spoken: str,
        now: datetime,
    ) -> str:
        state = services.state
        zone = ZoneInfo(request.guest.timezone)
        if result.status is BookingHandoffStatus.CONFIRMED and result.meeting_id:
            state.confirm_booking(
                BookingConfirmation(
                    meeting_id=result.meeting_id,
                    slot_start=request.slot_start,
                    duration_minutes=request.duration_minutes,
                )
            )
            state.set_stage(Stage.WRAP_UP)
            return (
                f"Booked for {spoken}. Tell the caller it's confirmed and the calendar invite is "
                "on its way to their email."
            )
        if result.status is BookingHandoffStatus.UNAVAILABLE:
            state.request_meeting(None)
            alternatives = pick_slots(
                result.alternatives, now=now, zone=zone, day=None, time_of_day="any"
            )
            if alternatives:
                return (
                    f"{spoken} was just taken. Offer these instead: "
                    f"{describe_slots(alternatives, now=now, zone=zone)}."
                )
            raise ToolError(
                f"{spoken} was just taken. Apologize and call find_meeting_times for other times."
            )
        if result.status in (BookingHandoffStatus.PENDING, BookingHandoffStatus.QUEUED):
            state.set_stage(Stage.WRAP_UP)
            return (
                f"Requested {spoken}. Tell the caller the rep's calendar invite will follow by "
                "email shortly; don't promise it is confirmed yet."
            )
        reason = result.reason or "the booking was not accepted"
        raise ToolError(
            f"Could not book {spoken}: {reason}. Apologize briefly and ask for another time."
        )

    # --- outreach (issue 16) ---------------------------------------------------------------

    @function_tool
    async def opt_out(self, context: RunContext[CallServices], also_email: bool = False) -> str:
        """Record at once that the caller does not want to be called again.

        Args:
            also_email: True when they also asked to get no more emails.
        """
        services = context.userdata
        request = OptOutRequest(
            trialist=services.call.trialist,
            requested_at=services.clock(),
            call_id=services.call.call_id,
            also_email=also_email,
        )
        services.state.mark_opted_out()
        try:
            result = await services.handoff.opt_out(request, wait=services.booking_wait_seconds)
        except Exception as error:  # the handoff queues on Temporal trouble; this is a bug
            logger.exception("call %s: opt-out handoff failed", services.call.call_id)
            raise ToolError(services.guard.fallbacks.line(FallbackKind.TOOL_FAILURE)) from error
        logger.info("call %s: opt-out %s", services.call.call_id, result.status.value)
        return (
            "Recorded: they will not be called again. Confirm that in one short sentence, "
            "apologise for the interruption, and call end_call."
        )

    @function_tool
    async def schedule_callback(
        self, context: RunContext[CallServices], day: str, time_of_day: TimeOfDay = "any"
    ) -> str:
        """The caller asked to be called back another time; the next call is placed then.

        Args:
            day: The day they named, such as "Thursday", "tomorrow" or "today".
            time_of_day: "morning", "afternoon", or "any".
        """
        services = context.userdata
        zone = ZoneInfo(services.call.trialist.timezone)
        now = services.clock()
        wanted = _resolve_day(day, now=now, zone=zone)
        if wanted is None:
            raise ToolError("Ask which day suits them, such as Thursday or tomorrow.")
        first, last = CALLBACK_HOURS[time_of_day]
        start = datetime.combine(wanted, time(first), tzinfo=zone)
        end = datetime.combine(wanted, time(last), tzinfo=zone)
        if end <= now:
            raise ToolError("That time has passed. Ask for another day.")
        services.state.request_callback(CallbackWindow(start=max(start, now), end=end))
        spoken = f"{wanted:%A}" + ("" if time_of_day == "any" else f" {time_of_day}")
        return f"Noted: call back {spoken}. Confirm it, thank them and call end_call."

    @function_tool
    async def voicemail_reached(self, context: RunContext[CallServices]) -> str:
        """You reached a voicemail greeting or an answering machine, not a person."""
        services = context.userdata
        outreach = services.call.outreach
        leave = outreach is not None and outreach.leave_message
        services.state.mark_voicemail(message_left=leave)
        if not leave:
            return "Leave no message: call end_call now and say nothing more."
        message = VOICEMAIL_MESSAGE.format(first_name=services.call.trialist.first_name)
        return f'Leave exactly this message, then call end_call: "{message}"'

    @function_tool
    async def end_call(self, context: RunContext[CallServices]) -> str:
        """End the call after the caller is done or says goodbye. Say a short goodbye after it."""
        services = context.userdata
        services.state.set_stage(Stage.WRAP_UP)
        services.mark_ended(EndedReason.COMPLETED)
        # The goodbye reply rides on this speech; the session closes once it has played.
        context.speech_handle.add_done_callback(lambda _: context.session.shutdown())
        return "The call is ending. Thank the caller warmly and say goodbye in one short sentence."


# --- spoken forms -------------------------------------------------------------------------------


def summarize_activity(profile: AmplitudeUserProfile, *, now: datetime, timezone: str) -> str:
    """One spoken sentence about a trial user's activity."""
    zone = ZoneInfo(timezone)
    if profile.documents_created == 0 and profile.documents_sent == 0:
        tried = "they haven't created a document yet"
    else:
        tried = (
            f"they've created {_count(profile.documents_created, 'document')} and sent "
            f"{profile.documents_sent}"
        )
    extras = []
    if profile.templates_used:
        extras.append(f"used {_count(profile.templates_used, 'template')}")
    if profile.signatures_requested:
        extras.append(f"requested {_count(profile.signatures_requested, 'signature')}")
    if profile.team_members_invited:
        extras.append(f"invited {_count(profile.team_members_invited, 'teammate')}")
    detail = f", {_join(extras)}" if extras else ""
    since = ""
    if profile.first_used is not None:
        days = (now.astimezone(zone).date() - profile.first_used).days
        since = f"In the {_count(max(days, 1), 'day')} since signing up, " if days >= 0 else ""
    last = ""
    if profile.last_active is not None:
        last = f", and they were last active {_ago(now - profile.last_active)}"
    sentence = f"{since}{tried}{detail}{last}."
    return sentence[0].upper() + sentence[1:]


def pick_slots(
    slots: Sequence[datetime],
    *,
    now: datetime,
    zone: ZoneInfo,
    day: str | None,
    time_of_day: TimeOfDay,
    limit: int = MAX_OFFERED_SLOTS,
) -> list[datetime]:
    """Up to `limit` future slots that match the preference, spread over different days first."""
    wanted_day = _resolve_day(day, now=now, zone=zone)
    matching = []
    for slot in sorted(slots):
        local = slot.astimezone(zone)
        if slot < now + MIN_BOOKING_NOTICE:
            continue
        if wanted_day is not None and local.date() != wanted_day:
            continue
        if time_of_day == "morning" and local.hour >= 12:
            continue
        if time_of_day == "afternoon" and local.hour < 12:
            continue
        matching.append(slot)
    by_day: dict[date, list[datetime]] = {}
    for slot in matching:
        by_day.setdefault(slot.astimezone(zone).date(), []).append(slot)
    chosen: list[datetime] = []
    for index, day_slots in enumerate(by_day.values()):  # one per day first: a real choice
        target = PREFERRED_HOURS[index % len(PREFERRED_HOURS)]
        chosen.append(min(day_slots, key=lambda s: abs(_hour_of(s, zone) - target)))
        if len(chosen) == limit:
            return sorted(chosen)
    for slot in matching:
        if slot not in chosen:
            chosen.append(slot)
        if len(chosen) == limit:
            break
    return sorted(chosen)


def describe_slots(slots: Sequence[datetime], *, now: datetime, zone: ZoneInfo) -> str:
    """The spoken times followed by the exact start_time values to pass to book_meeting."""
    spoken = [spoken_time(slot, now=now, zone=zone) for slot in slots]
    values = "; ".join(
        f"{said} = {slot.astimezone(zone).isoformat(timespec='seconds')}"
        for said, slot in zip(spoken, slots, strict=True)
    )
    return f"{_join(spoken, last='or')} (start_time for book_meeting: {values})"


def spoken_time(moment: datetime, *, now: datetime, zone: ZoneInfo) -> str:
    """A time as a person says it in the caller's timezone: "Tuesday at 10 AM"."""
    local = moment.astimezone(zone)
    today = now.astimezone(zone).date()
    days = (local.date() - today).days
    if days == 0:
        when = "today"
    elif days == 1:
        when = "tomorrow"
    elif 1 < days < 7:
        when = local.strftime("%A")
    else:
        when = f"{local.strftime('%A, %B')} {local.day}"
    hour = local.hour % 12 or 12
    minutes = f":{local.minute:02d}" if local.minute else ""
    return f"{when} at {hour}{minutes} {'AM' if local.hour < 12 else 'PM'}"


def parse_start_time(text: str, *, zone: ZoneInfo) -> datetime:
    """An ISO 8601 start time; one without an offset is read in the caller's timezone."""
    cleaned = text.strip().replace("Z", "+00:00") if len(text) <= MAX_START_TIME_CHARS else ""
    try:
        parsed = datetime.fromisoformat(cleaned)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        parsed.astimezone(UTC)  # an offset that leaves datetime's range raises here, not later
    except (ValueError, OverflowError):
        raise ToolError(
            f"{echo(text)} is not a start time. Pass the start_time from find_meeting_times, "
            "such as 2025-06-03T10:00:00-04:00."
        ) from None
    return parsed


def offered_start_times(tool_output: str) -> list[tuple[str, str]]:
    """The (spoken, start_time) pairs a find_meeting_times answer offered, in order."""
    return [(m["spoken"].strip(), m["iso"]) for m in SLOT_PATTERN.finditer(tool_output)]


def _resolve_day(day: str | None, *, now: datetime, zone: ZoneInfo) -> date | None:
    if not day or not day.strip() or len(day) > MAX_DAY_CHARS:
        return None
    text = day.strip().lower()
    today = now.astimezone(zone).date()
    if text == "today":
        return today
    if text == "tomorrow":
        return today + timedelta(days=1)
    weekdays = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    for index, name in enumerate(weekdays):
        if text.startswith(name[:3]):
            ahead = (index - today.weekday()) % 7
            return today + timedelta(days=ahead)
    return None


def _hour_of(moment: datetime, zone: ZoneInfo) -> float:
    local = moment.astimezone(zone)
    return local.hour + local.minute / 60


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _join(parts: Sequence[str], *, last: str = "and") -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} {last} {parts[-1]}"


def _ago(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours < 1:
        return "within the last hour"
    if hours < 24:
        return f"{_count(hours, 'hour')} ago"
    days = hours // 24
    return "yesterday" if days == 1 else f"{days} days ago"
